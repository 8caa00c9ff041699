//! Discord's REST rate limits, independent of HTTP and of the clock: per-route buckets with fixed
//! windows, counted per (token, bucket, top-level resource), and the per-token global limit.
//!
//! Every method takes `now`, so tests drive time by hand.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use tokio::time::Instant;

use crate::stats::payload_digest;

/// The global limit's window.
pub(crate) const GLOBAL_WINDOW: Duration = Duration::from_secs(1);

/// A group of routes that share one bucket (one `X-RateLimit-Bucket` hash).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct BucketGroup {
    /// Internal name; the hash is derived from it.
    pub(crate) name: &'static str,
    /// Requests per window.
    pub(crate) limit: u32,
    /// The window, which starts at the first request after the previous one ended.
    pub(crate) window: Duration,
}

impl BucketGroup {
    /// The opaque `X-RateLimit-Bucket` value: 32 hex digits, stable across runs.
    pub(crate) fn hash(&self) -> String {
        let a = payload_digest(self.name.as_bytes());
        let b = payload_digest(format!("shardyard-sim/{}", self.name).as_bytes());
        format!("{a:016x}{b:016x}")
    }
}

/// A bucket's state after a request was counted (or refused).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BucketOutcome {
    /// Whether the request may proceed.
    pub(crate) allowed: bool,
    /// `X-RateLimit-Limit`.
    pub(crate) limit: u32,
    /// `X-RateLimit-Remaining`, after this request.
    pub(crate) remaining: u32,
    /// `X-RateLimit-Reset-After`; also the `retry_after` of a refused request.
    pub(crate) reset_after: Duration,
}

#[derive(Debug)]
struct Window {
    remaining: u32,
    reset_at: Instant,
}

#[derive(Debug, Default)]
struct GlobalBook {
    /// Requests admitted in the last second.
    admitted: VecDeque<Instant>,
    /// Every request counted toward the global limit in the last second, admitted or not.
    seen: VecDeque<Instant>,
    max_seen: usize,
}

fn expire(log: &mut VecDeque<Instant>, now: Instant) {
    while let Some(front) = log.front() {
        if now.saturating_duration_since(*front) >= GLOBAL_WINDOW {
            log.pop_front();
        } else {
            break;
        }
    }
}

/// Every bucket and global counter, keyed by bot (its index in the configuration).
#[derive(Debug, Default)]
pub(crate) struct RateLimiter {
    buckets: HashMap<(usize, &'static str, u64), Window>,
    globals: HashMap<usize, GlobalBook>,
    acquisitions: u64,
}

impl RateLimiter {
    /// Counts a request of `bot` against `group` for top-level resource `resource` (0 for none).
    /// A window starts at the first request and lasts `group.window`; a refused request does
    /// not use up anything.
    pub(crate) fn acquire(
        &mut self,
        bot: usize,
        group: &'static BucketGroup,
        resource: u64,
        now: Instant,
    ) -> BucketOutcome {
        self.acquisitions += 1;
        if self.acquisitions.is_multiple_of(4096) {
            self.buckets.retain(|_, w| w.reset_at > now);
        }
        let window = self
            .buckets
            .entry((bot, group.name, resource))
            .or_insert_with(|| Window {
                remaining: group.limit,
                reset_at: now + group.window,
            });
        if now >= window.reset_at {
            window.remaining = group.limit;
            window.reset_at = now + group.window;
        }
        let reset_after = window.reset_at.saturating_duration_since(now);
        if window.remaining == 0 {
            return BucketOutcome {
                allowed: false,
                limit: group.limit,
                remaining: 0,
                reset_after,
            };
        }
        window.remaining -= 1;
        BucketOutcome {
            allowed: true,
            limit: group.limit,
            remaining: window.remaining,
            reset_after,
        }
    }

    /// Notes that `bot` sent a request that counts toward the global limit, for
    /// [`RateLimiter::max_in_any_second`] (whether or not it is then admitted).
    pub(crate) fn note(&mut self, bot: usize, now: Instant) {
        let book = self.globals.entry(bot).or_default();
        expire(&mut book.seen, now);
        book.seen.push_back(now);
        book.max_seen = book.max_seen.max(book.seen.len());
    }

    /// Admits a request of `bot` under a global limit of `limit` per second (a sliding window:
    /// refused when `limit` requests were admitted in the preceding second; 0 means no limit).
    ///
    /// # Errors
    /// The `retry_after` of the global 429 when refused.
    pub(crate) fn global(&mut self, bot: usize, limit: u32, now: Instant) -> Result<(), Duration> {
        if limit == 0 {
            return Ok(());
        }
        let book = self.globals.entry(bot).or_default();
        expire(&mut book.admitted, now);
        if book.admitted.len() >= limit as usize {
            let oldest = book.admitted.front().copied().unwrap_or(now);
            let retry = (oldest + GLOBAL_WINDOW).saturating_duration_since(now);
            return Err(retry.max(Duration::from_millis(1)));
        }
        book.admitted.push_back(now);
        Ok(())
    }

    /// The most requests `bot` sent toward the global limit within any one second.
    pub(crate) fn max_in_any_second(&self, bot: usize) -> usize {
        self.globals.get(&bot).map_or(0, |b| b.max_seen)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::time::Instant;

    use super::{BucketGroup, RateLimiter};

    static FIVE_PER_FIVE: BucketGroup = BucketGroup {
        name: "test_create",
        limit: 5,
        window: Duration::from_secs(5),
    };
    static OTHER: BucketGroup = BucketGroup {
        name: "test_other",
        limit: 1,
        window: Duration::from_millis(250),
    };

    #[test]
    fn fixed_window_starts_at_first_request() {
        let mut rl = RateLimiter::default();
        let t0 = Instant::now();
        for i in 0..5 {
            let at = t0 + Duration::from_millis(100 * i);
            let out = rl.acquire(0, &FIVE_PER_FIVE, 1, at);
            assert!(out.allowed);
            assert_eq!(out.remaining, 4 - u32::try_from(i).unwrap());
            assert_eq!(
                out.reset_after,
                Duration::from_secs(5) - Duration::from_millis(100 * i)
            );
        }
        let refused = rl.acquire(0, &FIVE_PER_FIVE, 1, t0 + Duration::from_secs(1));
        assert!(!refused.allowed);
        assert_eq!(refused.remaining, 0);
        assert_eq!(refused.reset_after, Duration::from_secs(4));
        // Still refused just before the window ends, fresh right at its end.
        assert!(
            !rl.acquire(0, &FIVE_PER_FIVE, 1, t0 + Duration::from_millis(4999))
                .allowed
        );
        let fresh = rl.acquire(0, &FIVE_PER_FIVE, 1, t0 + Duration::from_secs(5));
        assert!(fresh.allowed);
        assert_eq!(fresh.remaining, 4);
        assert_eq!(fresh.reset_after, Duration::from_secs(5));
    }

    #[test]
    fn resources_bots_and_groups_count_separately() {
        let mut rl = RateLimiter::default();
        let now = Instant::now();
        for _ in 0..5 {
            assert!(rl.acquire(0, &FIVE_PER_FIVE, 1, now).allowed);
        }
        assert!(!rl.acquire(0, &FIVE_PER_FIVE, 1, now).allowed);
        // Another channel, another bot, another group: untouched.
        assert_eq!(rl.acquire(0, &FIVE_PER_FIVE, 2, now).remaining, 4);
        assert_eq!(rl.acquire(1, &FIVE_PER_FIVE, 1, now).remaining, 4);
        assert!(rl.acquire(0, &OTHER, 1, now).allowed);
        assert!(!rl.acquire(0, &OTHER, 1, now).allowed);
        assert!(
            rl.acquire(0, &OTHER, 1, now + Duration::from_millis(250))
                .allowed
        );
    }

    #[test]
    fn bucket_hashes_are_opaque_and_stable() {
        let hash = FIVE_PER_FIVE.hash();
        assert_eq!(hash.len(), 32);
        assert!(hash.chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(hash, FIVE_PER_FIVE.hash());
        assert_ne!(hash, OTHER.hash());
    }

    #[test]
    fn global_limit_is_a_sliding_second() {
        let mut rl = RateLimiter::default();
        let t0 = Instant::now();
        for i in 0..50 {
            let at = t0 + Duration::from_millis(10 * i);
            rl.note(0, at);
            assert!(rl.global(0, 50, at).is_ok());
        }
        let at = t0 + Duration::from_millis(600);
        rl.note(0, at);
        let retry = rl.global(0, 50, at).unwrap_err();
        assert_eq!(retry, Duration::from_millis(400));
        // Another bot has its own limit.
        assert!(rl.global(1, 50, at).is_ok());
        // Once the first request is a second old, one more fits.
        assert!(rl.global(0, 50, t0 + Duration::from_secs(1)).is_ok());
        assert!(rl.global(0, 50, t0 + Duration::from_secs(1)).is_err());
        assert_eq!(rl.max_in_any_second(0), 51);
        assert_eq!(rl.max_in_any_second(1), 0);
        // 0 disables the limit.
        for _ in 0..1000 {
            assert!(rl.global(2, 0, at).is_ok());
        }
    }

    #[test]
    fn max_in_any_second_slides() {
        let mut rl = RateLimiter::default();
        let t0 = Instant::now();
        // 30 at the end of one second and 30 at the start of the next: 60 within one second.
        for i in 0..30 {
            rl.note(0, t0 + Duration::from_millis(700 + i));
        }
        for i in 0..30 {
            rl.note(0, t0 + Duration::from_millis(1100 + i));
        }
        assert_eq!(rl.max_in_any_second(0), 60);
        for i in 0..10 {
            rl.note(0, t0 + Duration::from_secs(5) + Duration::from_millis(i));
        }
        assert_eq!(rl.max_in_any_second(0), 60);
    }
}
