//! Invalid-request accounting per client IP, as Cloudflare does in front of Discord: 401, 403 and
//! 429 responses (except `X-RateLimit-Scope: shared` 429s) count over a sliding 10 minutes; past
//! the limit the IP is banned for a while.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::time::Duration;

use tokio::time::Instant;

/// The window invalid requests are counted over.
pub(crate) const INVALID_WINDOW: Duration = Duration::from_secs(600);

#[derive(Debug, Default)]
struct IpBook {
    log: VecDeque<Instant>,
    banned_until: Option<Instant>,
}

impl IpBook {
    fn expire(&mut self, now: Instant) {
        while let Some(front) = self.log.front() {
            if now.saturating_duration_since(*front) >= INVALID_WINDOW {
                self.log.pop_front();
            } else {
                break;
            }
        }
    }

    /// Lifts an expired ban (clearing the count, so the IP starts afresh).
    fn lift(&mut self, now: Instant) {
        if self.banned_until.is_some_and(|until| now >= until) {
            self.banned_until = None;
            self.log.clear();
        }
    }
}

/// Invalid requests and bans of every IP.
#[derive(Debug)]
pub(crate) struct InvalidRequests {
    limit: u32,
    ban: Duration,
    ips: HashMap<IpAddr, IpBook>,
}

impl InvalidRequests {
    /// Bans an IP once it made more than `limit` invalid requests in 10 minutes, for `ban`.
    pub(crate) fn new(limit: u32, ban: Duration) -> Self {
        Self {
            limit,
            ban,
            ips: HashMap::new(),
        }
    }

    /// How long `ip` stays banned, if it is.
    pub(crate) fn ban_remaining(&mut self, ip: IpAddr, now: Instant) -> Option<Duration> {
        let book = self.ips.get_mut(&ip)?;
        book.lift(now);
        book.banned_until
            .map(|until| until.saturating_duration_since(now))
    }

    /// Counts an invalid request of `ip`; returns whether it started a ban.
    pub(crate) fn record(&mut self, ip: IpAddr, now: Instant) -> bool {
        let book = self.ips.entry(ip).or_default();
        book.lift(now);
        book.expire(now);
        book.log.push_back(now);
        if book.banned_until.is_none() && book.log.len() > self.limit as usize {
            book.banned_until = Some(now + self.ban);
            return true;
        }
        false
    }

    /// Invalid requests in the current 10-minute window, summed over IPs.
    pub(crate) fn count(&mut self, now: Instant) -> usize {
        self.ips.retain(|_, book| {
            book.lift(now);
            book.expire(now);
            !book.log.is_empty() || book.banned_until.is_some()
        });
        self.ips.values().map(|b| b.log.len()).sum()
    }

    /// IPs banned now.
    pub(crate) fn banned(&self, now: Instant) -> Vec<IpAddr> {
        let mut ips: Vec<IpAddr> = self
            .ips
            .iter()
            .filter(|(_, b)| b.banned_until.is_some_and(|until| until > now))
            .map(|(ip, _)| *ip)
            .collect();
        ips.sort_unstable();
        ips
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};
    use std::time::Duration;

    use tokio::time::Instant;

    use super::InvalidRequests;

    const A: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
    const B: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2));

    #[test]
    fn ban_past_the_limit_then_lifted() {
        let mut book = InvalidRequests::new(3, Duration::from_secs(60));
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(!book.record(A, t0));
        }
        assert_eq!(book.ban_remaining(A, t0), None, "at the limit, not past it");
        assert!(book.record(A, t0), "the 4th starts the ban");
        assert!(!book.record(A, t0), "one ban, reported once");
        assert_eq!(book.ban_remaining(A, t0), Some(Duration::from_secs(60)));
        assert_eq!(book.ban_remaining(B, t0), None, "other IPs are unaffected");
        assert_eq!(book.banned(t0), vec![A]);
        assert_eq!(book.count(t0), 5);
        let later = t0 + Duration::from_secs(60);
        assert_eq!(book.ban_remaining(A, later), None);
        assert!(book.banned(later).is_empty());
        assert_eq!(book.count(later), 0, "a lifted ban starts afresh");
    }

    #[test]
    fn window_slides_over_ten_minutes() {
        let mut book = InvalidRequests::new(3, Duration::from_secs(60));
        let t0 = Instant::now();
        for i in 0..3 {
            assert!(!book.record(A, t0 + Duration::from_secs(i * 100)));
        }
        // The first one is exactly 10 minutes old: it no longer counts.
        assert!(!book.record(A, t0 + Duration::from_secs(600)));
        assert_eq!(book.count(t0 + Duration::from_secs(600)), 3);
        assert!(book.record(A, t0 + Duration::from_secs(601)));
        assert_eq!(book.count(t0 + Duration::from_secs(2000)), 0);
    }
}
