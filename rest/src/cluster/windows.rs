//! What the replicas heard from Discord about each token's bucket windows, so that a replica
//! that becomes a token's owner knows what the previous owner had spent.
//!
//! Every replica that sends a request upstream reports the answer's window (limit, remaining,
//! reset) on `shardyard.<bot>.rest.windows`, and every replica keeps the latest of each in
//! [`Windows`]. A new owner hands them to its engine
//! ([`crate::ratelimit::RateLimiter::take_over_with`]): a bucket the old owner emptied is waited
//! out, instead of being probed with a request Discord answers 429.

use std::collections::HashMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::ratelimit::{KnownWindow, Major, ResponseMeta, Route};

/// The longest window taken from a report (Discord's are seconds to minutes).
const MAX_WINDOW: Duration = Duration::from_secs(24 * 60 * 60);
/// Windows kept before expired ones are swept.
const FIRST_SWEEP_AT: usize = 4096;
/// Windows kept at most: past it, reports of new buckets are dropped until windows expire.
const MAX_WINDOWS: usize = 262_144;
/// The longest route key and bucket hash taken from a report.
const MAX_FIELD: usize = 256;

/// One answer's window, as it crosses NATS. No token, and no path: the token is named by its
/// stable key ([`super::Cluster::token_key`]), the route by its template.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowReport {
    /// The token's stable key.
    pub token: u64,
    /// [`Route::bucket_key`]: method and template.
    pub route: String,
    /// The top-level resource ([`major_to_wire`]).
    pub major: String,
    /// `X-RateLimit-Bucket`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash: Option<String>,
    /// `X-RateLimit-Limit`.
    pub limit: u32,
    /// `X-RateLimit-Remaining`.
    pub remaining: u32,
    /// `X-RateLimit-Reset-After`, in milliseconds, rounded up.
    pub reset_after_ms: u64,
}

impl WindowReport {
    /// The report of an answer to a request of `route`, if it told a window and the route's
    /// resource can be named without a secret (a webhook's token is in its major).
    #[must_use]
    pub fn of(token: u64, route: &Route, meta: &ResponseMeta) -> Option<Self> {
        let (Some(limit), Some(remaining), Some(reset_after)) =
            (meta.limit, meta.remaining, meta.reset_after)
        else {
            return None;
        };
        Some(Self {
            token,
            route: route.bucket_key(),
            major: major_to_wire(route.major())?,
            hash: meta.bucket.clone(),
            limit,
            remaining,
            reset_after_ms: u64::try_from(reset_after.as_micros().div_ceil(1000))
                .unwrap_or(u64::MAX),
        })
    }
}

/// A major parameter as text: `-`, `c:ID`, `g:ID`, `w:ID`, `i:ID`. `None` for a webhook
/// addressed with its token, whose fingerprint is keyed per process.
#[must_use]
pub fn major_to_wire(major: Major) -> Option<String> {
    Some(match major {
        Major::None => "-".to_owned(),
        Major::Channel(id) => format!("c:{id}"),
        Major::Guild(id) => format!("g:{id}"),
        Major::Webhook { id, token: None } => format!("w:{id}"),
        Major::Webhook { token: Some(_), .. } => return None,
        Major::Interaction(id) => format!("i:{id}"),
    })
}

/// The inverse of [`major_to_wire`].
#[must_use]
pub fn major_from_wire(wire: &str) -> Option<Major> {
    if wire == "-" {
        return Some(Major::None);
    }
    let (kind, id) = wire.split_once(':')?;
    let id: u64 = id.parse().ok()?;
    Some(match kind {
        "c" => Major::Channel(id),
        "g" => Major::Guild(id),
        "w" => Major::Webhook { id, token: None },
        "i" => Major::Interaction(id),
        _ => return None,
    })
}

#[derive(Debug, Clone)]
struct Heard {
    hash: Option<String>,
    limit: u32,
    remaining: u32,
    reset_at: Instant,
}

/// The latest window heard of each bucket of each token.
#[derive(Debug, Default)]
pub struct Windows {
    tokens: HashMap<u64, HashMap<(String, Major), Heard>>,
    len: usize,
    sweep_at: usize,
}

impl Windows {
    /// Takes in a report heard at `now`. Reports of one window arrive in any order (answers
    /// of concurrent requests), so within a window the fewest remaining and the latest reset
    /// win; a report of a later window replaces one that is over. Returns whether it was kept.
    pub fn hear(&mut self, report: WindowReport, now: Instant) -> bool {
        if report.route.len() > MAX_FIELD
            || report.hash.as_ref().is_some_and(|h| h.len() > MAX_FIELD)
            || report.limit == 0
        {
            return false;
        }
        let Some(major) = major_from_wire(&report.major) else {
            return false;
        };
        if self.len >= self.sweep_at.max(FIRST_SWEEP_AT) {
            self.sweep(now);
        }
        let reset_after = Duration::from_millis(report.reset_after_ms).min(MAX_WINDOW);
        let heard = Heard {
            hash: report.hash,
            limit: report.limit,
            remaining: report.remaining.min(report.limit),
            reset_at: now + reset_after,
        };
        let buckets = self.tokens.entry(report.token).or_default();
        match buckets.get_mut(&(report.route.clone(), major)) {
            Some(known) if known.reset_at > now => {
                known.remaining = known.remaining.min(heard.remaining);
                known.reset_at = known.reset_at.max(heard.reset_at);
                known.limit = heard.limit;
                known.hash = heard.hash;
            }
            Some(known) => *known = heard,
            None => {
                if self.len >= MAX_WINDOWS {
                    return false;
                }
                buckets.insert((report.route, major), heard);
                self.len += 1;
            }
        }
        true
    }

    /// The windows of `token` that have not reset by `now`.
    #[must_use]
    pub fn known(&self, token: u64, now: Instant) -> Vec<KnownWindow> {
        self.tokens
            .get(&token)
            .into_iter()
            .flatten()
            .filter(|(_, heard)| heard.reset_at > now)
            .map(|((route, major), heard)| KnownWindow {
                route: route.clone(),
                major: *major,
                hash: heard.hash.clone(),
                limit: heard.limit,
                remaining: heard.remaining,
                reset_at: heard.reset_at,
            })
            .collect()
    }

    /// Every window that has not reset by `now`, as reports (for a replica that joins).
    #[must_use]
    pub fn export(&self, now: Instant) -> Vec<WindowReport> {
        let mut reports = Vec::new();
        for (token, buckets) in &self.tokens {
            for ((route, major), heard) in buckets {
                let Some(major) = major_to_wire(*major) else {
                    continue;
                };
                if heard.reset_at <= now {
                    continue;
                }
                let left = heard.reset_at - now;
                reports.push(WindowReport {
                    token: *token,
                    route: route.clone(),
                    major,
                    hash: heard.hash.clone(),
                    limit: heard.limit,
                    remaining: heard.remaining,
                    reset_after_ms: u64::try_from(left.as_micros().div_ceil(1000))
                        .unwrap_or(u64::MAX),
                });
            }
        }
        reports
    }

    /// Windows kept.
    #[must_use]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether none is kept.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn sweep(&mut self, now: Instant) {
        for buckets in self.tokens.values_mut() {
            buckets.retain(|_, heard| heard.reset_at > now);
        }
        self.tokens.retain(|_, buckets| !buckets.is_empty());
        self.len = self.tokens.values().map(HashMap::len).sum();
        self.sweep_at = self.len.saturating_mul(2);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(route: &str, major: &str, remaining: u32, reset_after_ms: u64) -> WindowReport {
        WindowReport {
            token: 7,
            route: route.to_owned(),
            major: major.to_owned(),
            hash: Some("abc".to_owned()),
            limit: 5,
            remaining,
            reset_after_ms,
        }
    }

    #[test]
    fn majors_cross_the_wire_unless_they_hold_a_secret() {
        for major in [
            Major::None,
            Major::Channel(1),
            Major::Guild(2),
            Major::Webhook { id: 3, token: None },
            Major::Interaction(4),
        ] {
            let wire = major_to_wire(major).expect("nameable");
            assert_eq!(major_from_wire(&wire), Some(major), "{wire}");
        }
        let route = Route::parse("POST", "/webhooks/3/secret-token-value").expect("route");
        assert!(matches!(
            route.major(),
            Major::Webhook { token: Some(_), .. }
        ));
        assert_eq!(major_to_wire(route.major()), None);
        for bad in ["", "c:", "c:x", "x:1", "c:1:2", "-1"] {
            assert_eq!(major_from_wire(bad), None, "{bad}");
        }
    }

    #[test]
    fn an_answer_becomes_a_report_without_its_path() {
        let route = Route::parse("POST", "/channels/42/messages").expect("route");
        let meta = ResponseMeta {
            status: 200,
            bucket: Some("abc".to_owned()),
            limit: Some(5),
            remaining: Some(0),
            reset_after: Some(Duration::from_micros(4_000_001)),
            ..ResponseMeta::default()
        };
        let report = WindowReport::of(9, &route, &meta).expect("a window");
        assert_eq!(report.route, route.bucket_key());
        assert_eq!(report.major, "c:42");
        assert_eq!(report.reset_after_ms, 4_001, "rounded up");
        assert_eq!(
            WindowReport::of(9, &route, &ResponseMeta::status(200)),
            None,
            "no headers, no window"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn reports_of_one_window_keep_the_fewest_remaining_and_a_later_window_replaces_it() {
        let mut windows = Windows::default();
        let now = Instant::now();
        assert!(windows.hear(report("POST /channels/{c}/messages", "c:1", 2, 5_000), now));
        // An older answer of the same window, arriving late.
        assert!(windows.hear(report("POST /channels/{c}/messages", "c:1", 4, 4_900), now));
        let known = windows.known(7, now);
        assert_eq!(known.len(), 1);
        assert_eq!(known[0].remaining, 2);
        assert_eq!(known[0].reset_at, now + Duration::from_secs(5));
        assert_eq!(known[0].major, Major::Channel(1));

        // A replica that joins gets the same window, counted from when it hears it.
        let exported = windows.export(now + Duration::from_secs(1));
        assert_eq!(exported.len(), 1);
        assert_eq!(exported[0].reset_after_ms, 4_000);
        assert_eq!(exported[0].remaining, 2);
        let mut joiner = Windows::default();
        assert!(joiner.hear(exported[0].clone(), now + Duration::from_secs(1)));
        assert_eq!(joiner.known(7, now), windows.known(7, now));

        let later = now + Duration::from_secs(6);
        assert!(windows.known(7, later).is_empty(), "the window is over");
        assert!(windows.export(later).is_empty());
        assert!(windows.hear(
            report("POST /channels/{c}/messages", "c:1", 4, 5_000),
            later
        ));
        assert_eq!(windows.known(7, later)[0].remaining, 4, "a new window");
        assert!(windows.known(8, later).is_empty(), "another token");
    }

    #[tokio::test(start_paused = true)]
    async fn bad_reports_are_dropped_and_expired_windows_are_swept() {
        let mut windows = Windows::default();
        let now = Instant::now();
        assert!(!windows.hear(report("GET /x", "nope", 1, 1_000), now));
        assert!(!windows.hear(report(&"x".repeat(300), "-", 1, 1_000), now));
        let mut zero = report("GET /x", "-", 1, 1_000);
        zero.limit = 0;
        assert!(!windows.hear(zero, now));
        assert!(windows.is_empty());

        for channel in 0..FIRST_SWEEP_AT {
            windows.hear(report("GET /c", &format!("c:{channel}"), 1, 1_000), now);
        }
        assert_eq!(windows.len(), FIRST_SWEEP_AT);
        let later = now + Duration::from_secs(2);
        windows.hear(report("GET /c", "c:999999", 1, 1_000), later);
        assert_eq!(windows.len(), 1, "the expired ones went at the sweep");
    }
}
