//! A network namespace of a test's own, joined to the test process by a veth pair: a host with
//! its own loopback and ports (so servers inside take their usual, fixed ports without colliding
//! with another test's) and one non-loopback address, which Kubernetes accepts where it refuses
//! 127.0.0.0/8. Made with iproute2's `ip`, as root; removed when dropped.
//!
//! Addresses come from `10.213.0.0/16`, one `/30` per namespace: `.1` on the test's side,
//! `.2` inside. Which `/30` is chosen by taking a lock file (`flock`) in
//! `/run/shardyard-netns/`, so concurrent test processes never share one, and a process that was
//! killed releases its lock with it; its namespace is then removed by the next taker.

use std::fs::File;
use std::net::Ipv4Addr;
use std::process::Command;

use anyhow::Context as _;
use rustix::fs::{FlockOperation, flock};

/// The folder of the lock files.
const LOCK_DIR: &str = "/run/shardyard-netns";
/// How many `/30`s of `10.213.0.0/16` are handed out.
const SLOTS: u16 = 16_384;

/// A network namespace with a veth pair to the root namespace.
#[derive(Debug)]
pub struct TestNetns {
    name: String,
    slot: u16,
    _lock: File,
}

impl TestNetns {
    /// Makes a namespace, its veth pair and their addresses, with loopback up inside.
    ///
    /// # Errors
    /// When `ip` fails (not root, no iproute2) or every slot is taken.
    pub fn create() -> anyhow::Result<Self> {
        std::fs::create_dir_all(LOCK_DIR).with_context(|| format!("creating {LOCK_DIR}"))?;
        // Start where this process's id points, so concurrent tests rarely try the same slot.
        let start = u16::try_from(std::process::id() % u32::from(SLOTS)).unwrap_or(0);
        for offset in 0..SLOTS {
            let slot = (start + offset) % SLOTS;
            let path = format!("{LOCK_DIR}/{slot}.lock");
            let lock = File::create(&path).with_context(|| format!("creating {path}"))?;
            if flock(&lock, FlockOperation::NonBlockingLockExclusive).is_err() {
                continue;
            }
            let netns = Self {
                name: format!("shardyard-{slot}"),
                slot,
                _lock: lock,
            };
            netns.remove_leftovers();
            netns.set_up()?;
            return Ok(netns);
        }
        anyhow::bail!("every one of {SLOTS} network namespace slots is taken")
    }

    /// The namespace's name (`ip netns exec NAME …`).
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The address inside the namespace.
    #[must_use]
    pub fn inside(&self) -> Ipv4Addr {
        self.address(2)
    }

    /// The address on the test process's side of the veth, reachable from inside.
    #[must_use]
    pub fn outside(&self) -> Ipv4Addr {
        self.address(1)
    }

    /// `program ARGS` to be run inside the namespace.
    #[must_use]
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.name]).arg(program);
        command
    }

    /// `program ARGS` to be run in the namespace's network only (`nsenter --net`), sharing
    /// the caller's mount namespace: what a node's daemons need, where `ip netns exec` would
    /// also give each its own view of `/sys` and of the mounts.
    #[must_use]
    pub fn nsenter(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        self.nsenter_joining(None, program)
    }

    /// As [`nsenter`](Self::nsenter), in the mount namespace of process `pid` too (one that
    /// made its own: a node's kubelet joins containerd's).
    #[must_use]
    pub fn nsenter_with_mounts_of(
        &self,
        pid: u32,
        program: impl AsRef<std::ffi::OsStr>,
    ) -> Command {
        self.nsenter_joining(Some(pid), program)
    }

    fn nsenter_joining(
        &self,
        mounts_of: Option<u32>,
        program: impl AsRef<std::ffi::OsStr>,
    ) -> Command {
        let mut command = Command::new("nsenter");
        command.arg(format!("--net=/var/run/netns/{}", self.name));
        if let Some(pid) = mounts_of {
            command.arg(format!("--mount=/proc/{pid}/ns/mnt"));
        }
        command.arg("--").arg(program);
        command
    }

    /// Runs `ip ARGS` in the namespace (`ip -n NAME ARGS`).
    ///
    /// # Errors
    /// When it fails, with what it said.
    pub fn ip(&self, args: &[&str]) -> anyhow::Result<()> {
        let output = Command::new("ip")
            .arg("-n")
            .arg(&self.name)
            .args(args)
            .output()
            .context("running ip (iproute2)")?;
        anyhow::ensure!(
            output.status.success(),
            "ip -n {} {} failed: {}",
            self.name,
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
        Ok(())
    }

    /// Sets a sysctl of the namespace's network stack (`net.*` ones are per namespace).
    ///
    /// # Errors
    /// When the key does not exist here or cannot be written.
    pub fn sysctl(&self, key: &str, value: &str) -> anyhow::Result<()> {
        let output = self
            .command("sysctl")
            .arg("-w")
            .arg(format!("{key}={value}"))
            .output()
            .context("running sysctl")?;
        anyhow::ensure!(
            output.status.success(),
            "sysctl {key}={value} in {}: {}",
            self.name,
            String::from_utf8_lossy(&output.stderr).trim()
        );
        Ok(())
    }

    /// Runs `f` while holding the lock of the slot named `name` (`shardyard-<slot>`), when no
    /// live test process holds it: to clean up after a test process that was killed. Whether
    /// it ran.
    pub(crate) fn if_abandoned(name: &str, f: impl FnOnce()) -> bool {
        let Some(slot) = name
            .strip_prefix("shardyard-")
            .and_then(|s| s.parse::<u16>().ok())
        else {
            return false;
        };
        let Ok(lock) = File::create(format!("{LOCK_DIR}/{slot}.lock")) else {
            return false;
        };
        if flock(&lock, FlockOperation::NonBlockingLockExclusive).is_err() {
            return false;
        }
        f();
        true
    }

    fn address(&self, host: u8) -> Ipv4Addr {
        let [hi, lo] = (self.slot * 4).to_be_bytes();
        Ipv4Addr::new(10, 213, hi, lo + host)
    }

    fn outside_link(&self) -> String {
        format!("sy{}h", self.slot)
    }

    fn inside_link(&self) -> String {
        format!("sy{}n", self.slot)
    }

    /// A namespace and link of this slot left by a process that was killed.
    fn remove_leftovers(&self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
        let _ = Command::new("ip")
            .args(["link", "del", &self.outside_link()])
            .output();
    }

    fn set_up(&self) -> anyhow::Result<()> {
        let (outside, inside) = (self.outside_link(), self.inside_link());
        let ns = self.name.as_str();
        let outside_cidr = format!("{}/30", self.outside());
        let inside_cidr = format!("{}/30", self.inside());
        let steps: [&[&str]; 8] = [
            &["netns", "add", ns],
            &[
                "link", "add", &outside, "type", "veth", "peer", "name", &inside,
            ],
            &["link", "set", &inside, "netns", ns],
            &["addr", "add", &outside_cidr, "dev", &outside],
            &["link", "set", &outside, "up"],
            &["-n", ns, "addr", "add", &inside_cidr, "dev", &inside],
            &["-n", ns, "link", "set", &inside, "up"],
            &["-n", ns, "link", "set", "lo", "up"],
        ];
        for args in steps {
            let output = Command::new("ip")
                .args(args)
                .output()
                .context("running ip (iproute2)")?;
            anyhow::ensure!(
                output.status.success(),
                "ip {} failed (the test bed needs root and iproute2): {}",
                args.join(" "),
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(())
    }
}

impl Drop for TestNetns {
    fn drop(&mut self) {
        // Deleting the namespace deletes the veth pair with it.
        self.remove_leftovers();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_slot_has_its_own_slash_30() {
        let netns = |slot| TestNetns {
            name: String::new(),
            slot,
            _lock: File::open("/dev/null").unwrap(),
        };
        assert_eq!(netns(0).outside(), Ipv4Addr::new(10, 213, 0, 1));
        assert_eq!(netns(0).inside(), Ipv4Addr::new(10, 213, 0, 2));
        assert_eq!(netns(64).inside(), Ipv4Addr::new(10, 213, 1, 2));
        assert_eq!(netns(SLOTS - 1).inside(), Ipv4Addr::new(10, 213, 255, 254));
        assert_eq!(netns(SLOTS - 1).outside_link(), "sy16383h");
    }
}
