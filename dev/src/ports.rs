//! Ports of 127.0.0.1 for servers dev (and the tests) start as separate processes.
//!
//! The usual trick, binding port 0 and handing the kernel's choice to the child, picks from the
//! ephemeral range: the same range every outgoing connection takes its source port from. Between
//! the choice and the child's `bind`, or while a process is down between restarts (dev restarts
//! it on the same port, because its Service points there), any connection on the machine can
//! take that port as its source, and the server then fails with `EADDRINUSE` until that
//! connection closes. A NATS client's connection lives for minutes: dev's cache crash-looped on
//! exactly that in CI. Outside the ephemeral range only listeners take ports, so a port chosen
//! there stays free unless another server takes it, which the bind check here sees.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::net::{Ipv4Addr, TcpListener};
use std::ops::RangeInclusive;

/// Where the search starts: under it lie the ports other software is configured to use.
const LOWEST: u16 = 10_000;

/// Linux's default ephemeral range, when `/proc` does not say.
const LINUX_DEFAULT_EPHEMERAL: RangeInclusive<u16> = 32_768..=60_999;

/// A port of 127.0.0.1 that was free a moment ago and that no outgoing connection will take:
/// chosen at random outside the kernel's ephemeral range, and checked by binding it. Falls back
/// to the kernel's choice when no range is left outside (a machine whose ephemeral range is
/// nearly everything).
///
/// # Errors
/// When not even the kernel can give a port (loopback unusable).
pub fn unclaimed_port() -> std::io::Result<u16> {
    let ephemeral = ephemeral_range();
    // Below the range: [LOWEST, start). Above it: (end, 65535].
    let below_len = u32::from(ephemeral.start().saturating_sub(LOWEST));
    let above_start = u32::from(*ephemeral.end()) + 1;
    let above_len = (u32::from(u16::MAX) + 1).saturating_sub(above_start.max(u32::from(LOWEST)));
    let candidates = below_len + above_len;
    if candidates > 0 {
        let random = RandomState::new();
        for attempt in 0u32..64 {
            let pick =
                u32::try_from(random.hash_one(attempt) % u64::from(candidates)).unwrap_or_default();
            let port = if pick < below_len {
                u32::from(LOWEST) + pick
            } else {
                above_start.max(u32::from(LOWEST)) + (pick - below_len)
            };
            let Ok(port) = u16::try_from(port) else {
                continue;
            };
            if TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
                return Ok(port);
            }
        }
    }
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok(listener.local_addr()?.port())
}

/// The kernel's ephemeral port range.
fn ephemeral_range() -> RangeInclusive<u16> {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|text| parse_range(&text))
        .unwrap_or(LINUX_DEFAULT_EPHEMERAL)
}

fn parse_range(text: &str) -> Option<RangeInclusive<u16>> {
    let mut bounds = text.split_whitespace().map(str::parse::<u16>);
    let (low, high) = (bounds.next()?.ok()?, bounds.next()?.ok()?);
    (low <= high).then_some(low..=high)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kernels_range_is_read_as_written() {
        assert_eq!(parse_range("32768\t60999\n"), Some(32_768..=60_999));
        assert_eq!(parse_range("1024 65535"), Some(1024..=65_535));
        assert_eq!(parse_range("60999 32768"), None);
        assert_eq!(parse_range("garbage"), None);
    }

    #[test]
    fn a_port_is_outside_the_ephemeral_range_and_free() {
        let ephemeral = ephemeral_range();
        for _ in 0..20 {
            let port = unclaimed_port().unwrap();
            assert!(
                !ephemeral.contains(&port),
                "{port} is in the ephemeral range {ephemeral:?}"
            );
            assert!(port >= LOWEST);
            TcpListener::bind((Ipv4Addr::LOCALHOST, port)).expect("the port is free");
        }
    }

    #[test]
    fn two_ports_in_a_row_differ() {
        // Random picks, not a counter that two dev instances would walk in step.
        let ports: std::collections::HashSet<u16> =
            (0..10).map(|_| unclaimed_port().unwrap()).collect();
        assert!(ports.len() > 1, "{ports:?}");
    }
}
