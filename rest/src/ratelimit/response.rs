//! What the engine needs from Discord's answer: status, rate-limit headers and, for errors, the
//! JSON body's `retry_after`, `global` and `code`. Parsed without an HTTP crate, so the proxy can
//! hand over whatever header map it has.

use std::time::Duration;

use serde::Deserialize;

/// The longest wait any header can impose. Bounds arithmetic on instants; a day is far beyond
/// anything Discord (or a Cloudflare ban) answers.
pub(crate) const MAX_HEADER_WAIT: Duration = Duration::from_secs(24 * 60 * 60);

/// Header names, lower case (the closure given to [`ResponseMeta::from_parts`] is asked with
/// these).
pub mod header {
    /// The bucket's opaque hash.
    pub const BUCKET: &str = "x-ratelimit-bucket";
    /// Requests per window.
    pub const LIMIT: &str = "x-ratelimit-limit";
    /// Requests left in the window.
    pub const REMAINING: &str = "x-ratelimit-remaining";
    /// Seconds (float) until the window resets.
    pub const RESET_AFTER: &str = "x-ratelimit-reset-after";
    /// Unix time (float seconds) at which the window resets.
    pub const RESET: &str = "x-ratelimit-reset";
    /// `true` on a 429 of the global limit.
    pub const GLOBAL: &str = "x-ratelimit-global";
    /// `user`, `global` or `shared`, on a 429.
    pub const SCOPE: &str = "x-ratelimit-scope";
    /// Seconds to wait after a 429.
    pub const RETRY_AFTER: &str = "retry-after";
    /// The server's clock, an HTTP-date.
    pub const DATE: &str = "date";
}

/// Whose limit a 429 is about (`X-RateLimit-Scope`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// This token's limit on this bucket (counts as an invalid request).
    User,
    /// This token's global limit (counts as an invalid request).
    Global,
    /// A limit of the resource shared with everyone (does not count as invalid).
    Shared,
}

impl Scope {
    /// `user`, `global` or `shared`: a bounded metric label.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Global => "global",
            Self::Shared => "shared",
        }
    }

    fn parse(value: &str) -> Option<Self> {
        match value.trim() {
            v if v.eq_ignore_ascii_case("user") => Some(Self::User),
            v if v.eq_ignore_ascii_case("global") => Some(Self::Global),
            v if v.eq_ignore_ascii_case("shared") => Some(Self::Shared),
            _ => None,
        }
    }
}

/// The parts of a response the engine learns from. Build it with [`ResponseMeta::from_parts`],
/// or directly (every field is public, and `Default` is a bare 200).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ResponseMeta {
    /// HTTP status.
    pub status: u16,
    /// `X-RateLimit-Bucket`.
    pub bucket: Option<String>,
    /// `X-RateLimit-Limit`.
    pub limit: Option<u32>,
    /// `X-RateLimit-Remaining`.
    pub remaining: Option<u32>,
    /// Time until the window resets: `X-RateLimit-Reset-After`, or else `X-RateLimit-Reset`
    /// minus the response's `Date` (or, without one, minus the local clock).
    pub reset_after: Option<Duration>,
    /// `X-RateLimit-Scope`.
    pub scope: Option<Scope>,
    /// `X-RateLimit-Global: true`, or `"global": true` in a 429 body.
    pub global: bool,
    /// A 429's wait: the body's `retry_after`, or else the `Retry-After` header.
    pub retry_after: Option<Duration>,
    /// The JSON error body's `code` (e.g. 10015 Unknown Webhook).
    pub error_code: Option<u64>,
    /// Whether the body was a JSON object (a Cloudflare ban answers 429 with HTML).
    pub json_body: bool,
}

#[derive(Deserialize)]
struct ErrorBody {
    retry_after: Option<f64>,
    global: Option<bool>,
    code: Option<u64>,
}

/// Seconds as a duration, if finite and not negative; capped at [`MAX_HEADER_WAIT`].
fn seconds(value: f64) -> Option<Duration> {
    if !value.is_finite() || value < 0.0 {
        return None;
    }
    Some(Duration::try_from_secs_f64(value).map_or(MAX_HEADER_WAIT, |d| d.min(MAX_HEADER_WAIT)))
}

fn float(value: Option<&str>) -> Option<f64> {
    value?.trim().parse::<f64>().ok().filter(|v| v.is_finite())
}

impl ResponseMeta {
    /// Parses a response. `header` looks a header up by its lower-case name (case-insensitively,
    /// as HTTP names are); `body` is read only for statuses ≥ 400; `now_unix` is the local
    /// clock in unix seconds, used only when `X-RateLimit-Reset` comes without
    /// `X-RateLimit-Reset-After` and without a `Date` header.
    ///
    /// Malformed values are ignored, never an error: the engine then falls back to waiting for
    /// the next response, or to its configured fallback wait after a 429.
    pub fn from_parts<'a>(
        status: u16,
        header: impl Fn(&str) -> Option<&'a str>,
        body: &[u8],
        now_unix: f64,
    ) -> Self {
        let reset_after = float(header(header::RESET_AFTER))
            .and_then(seconds)
            .or_else(|| {
                let reset = float(header(header::RESET))?;
                let server_now = header(header::DATE)
                    .and_then(parse_http_date)
                    .unwrap_or(now_unix);
                // Past resets (skew, or a stale header) mean "now".
                seconds((reset - server_now).max(0.0))
            });
        let parsed: Option<ErrorBody> = if status >= 400 {
            serde_json::from_slice(body).ok()
        } else {
            None
        };
        let body_retry = parsed
            .as_ref()
            .and_then(|b| b.retry_after)
            .and_then(seconds);
        let header_retry = float(header(header::RETRY_AFTER)).and_then(seconds);
        let global_header =
            header(header::GLOBAL).is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
        Self {
            status,
            bucket: header(header::BUCKET)
                .map(str::trim)
                .filter(|b| !b.is_empty() && b.len() <= 128)
                .map(str::to_owned),
            limit: header(header::LIMIT).and_then(|v| v.trim().parse().ok()),
            remaining: header(header::REMAINING).and_then(|v| v.trim().parse().ok()),
            reset_after,
            scope: header(header::SCOPE).and_then(Scope::parse),
            global: global_header || parsed.as_ref().and_then(|b| b.global) == Some(true),
            retry_after: body_retry.or(header_retry),
            error_code: parsed.as_ref().and_then(|b| b.code),
            json_body: parsed.is_some(),
        }
    }

    /// A response with status `status` and nothing else.
    #[must_use]
    pub fn status(status: u16) -> Self {
        Self {
            status,
            ..Self::default()
        }
    }

    /// Whether any `X-RateLimit-*` header came with it.
    #[must_use]
    pub fn has_rate_limit_headers(&self) -> bool {
        self.bucket.is_some()
            || self.limit.is_some()
            || self.remaining.is_some()
            || self.reset_after.is_some()
            || self.scope.is_some()
    }
}

/// Parses an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`) to unix seconds.
pub(crate) fn parse_http_date(value: &str) -> Option<f64> {
    let mut parts = value.split_ascii_whitespace();
    let _weekday = parts.next()?.strip_suffix(',')?;
    let day: u32 = parts.next()?.parse().ok()?;
    let month = match parts.next()? {
        "Jan" => 1,
        "Feb" => 2,
        "Mar" => 3,
        "Apr" => 4,
        "May" => 5,
        "Jun" => 6,
        "Jul" => 7,
        "Aug" => 8,
        "Sep" => 9,
        "Oct" => 10,
        "Nov" => 11,
        "Dec" => 12,
        _ => return None,
    };
    let year: i64 = parts.next()?.parse().ok()?;
    let mut clock = parts.next()?.split(':');
    let hour: u32 = clock.next()?.parse().ok()?;
    let minute: u32 = clock.next()?.parse().ok()?;
    let second: u32 = clock.next()?.parse().ok()?;
    if parts.next()? != "GMT" || parts.next().is_some() || clock.next().is_some() {
        return None;
    }
    if !(1..=31).contains(&day)
        || !(1970..=9999).contains(&year)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + i64::from(hour * 3600 + minute * 60 + second);
    // Exact: |secs| < 2^53.
    #[allow(clippy::cast_precision_loss)]
    Some(secs as f64)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month = i64::from(month);
    let shifted_month = if month > 2 { month - 3 } else { month + 9 };
    let day_of_year = (153 * shifted_month + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use proptest::prelude::*;

    use super::{ResponseMeta, Scope, parse_http_date};

    fn meta(status: u16, headers: &[(&str, &str)], body: &str, now_unix: f64) -> ResponseMeta {
        ResponseMeta::from_parts(
            status,
            |name| {
                headers
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(name))
                    .map(|(_, v)| *v)
            },
            body.as_bytes(),
            now_unix,
        )
    }

    #[test]
    fn reads_bucket_headers() {
        let m = meta(
            200,
            &[
                ("X-RateLimit-Bucket", "abcd1234"),
                ("X-RateLimit-Limit", "5"),
                ("X-RateLimit-Remaining", "4"),
                ("X-RateLimit-Reset-After", "1.250"),
                ("X-RateLimit-Reset", "1000.0"),
            ],
            "",
            0.0,
        );
        assert_eq!(m.bucket.as_deref(), Some("abcd1234"));
        assert_eq!(m.limit, Some(5));
        assert_eq!(m.remaining, Some(4));
        assert_eq!(
            m.reset_after,
            Some(Duration::from_millis(1250)),
            "relative wins"
        );
        assert!(m.has_rate_limit_headers());
        assert!(!m.global);
    }

    #[test]
    fn absolute_reset_is_corrected_by_the_date_header() {
        // The local clock runs 100 s ahead of Discord's; the Date header tells.
        let date = "Sun, 06 Nov 1994 08:49:37 GMT";
        let server_now = parse_http_date(date).unwrap();
        assert!((server_now - 784_111_777.0).abs() < f64::EPSILON);
        let m = meta(
            200,
            &[("X-RateLimit-Reset", "784111779.5"), ("Date", date)],
            "",
            server_now + 100.0,
        );
        assert_eq!(m.reset_after, Some(Duration::from_millis(2500)));
        // Without a Date header, the local clock is all there is.
        let m = meta(200, &[("X-RateLimit-Reset", "1003.0")], "", 1000.0);
        assert_eq!(m.reset_after, Some(Duration::from_secs(3)));
        // A reset in the past is "now", not negative.
        let m = meta(200, &[("X-RateLimit-Reset", "10")], "", 1000.0);
        assert_eq!(m.reset_after, Some(Duration::ZERO));
    }

    #[test]
    fn reads_429_bodies_and_scopes() {
        let m = meta(
            429,
            &[("X-RateLimit-Scope", "shared"), ("Retry-After", "3")],
            r#"{"message": "You are being rate limited.", "retry_after": 1.5, "global": false}"#,
            0.0,
        );
        assert_eq!(m.scope, Some(Scope::Shared));
        assert_eq!(
            m.retry_after,
            Some(Duration::from_millis(1500)),
            "body wins"
        );
        assert!(!m.global);
        assert!(m.json_body);

        let m = meta(
            429,
            &[("X-RateLimit-Global", "true"), ("Retry-After", "2")],
            "<html>",
            0.0,
        );
        assert!(m.global);
        assert_eq!(m.retry_after, Some(Duration::from_secs(2)));
        assert!(!m.json_body);

        let m = meta(429, &[], r#"{"retry_after": 0.3, "global": true}"#, 0.0);
        assert!(m.global, "the body's global flag counts");

        let m = meta(
            404,
            &[],
            r#"{"message": "Unknown Webhook", "code": 10015}"#,
            0.0,
        );
        assert_eq!(m.error_code, Some(10015));
    }

    #[test]
    fn garbage_is_ignored() {
        let m = meta(
            429,
            &[
                ("X-RateLimit-Remaining", "-1"),
                ("X-RateLimit-Reset-After", "NaN"),
                ("Retry-After", "-4"),
                ("X-RateLimit-Scope", "everyone"),
                ("X-RateLimit-Bucket", "  "),
            ],
            r#"{"retry_after": 1e308}"#,
            0.0,
        );
        assert_eq!(m.remaining, None);
        assert_eq!(m.reset_after, None);
        assert_eq!(m.scope, None);
        assert_eq!(m.bucket, None);
        assert_eq!(m.retry_after, Some(super::MAX_HEADER_WAIT), "capped");
    }

    #[test]
    fn http_dates() {
        assert_eq!(parse_http_date("Thu, 01 Jan 1970 00:00:00 GMT"), Some(0.0));
        assert_eq!(
            parse_http_date("Tue, 29 Feb 2000 12:00:00 GMT"),
            Some(951_825_600.0)
        );
        assert_eq!(parse_http_date("Thu, 01 Jan 1970 00:00:00 UTC"), None);
        assert_eq!(parse_http_date("yesterday"), None);
        assert_eq!(parse_http_date("Thu, 41 Jan 1970 00:00:00 GMT"), None);
    }

    proptest! {
        #[test]
        fn any_header_values_parse(
            status in 0u16..1000,
            value in ".{0,40}",
            body in prop::collection::vec(any::<u8>(), 0..64),
            now in any::<f64>(),
        ) {
            let m = ResponseMeta::from_parts(status, |_| Some(value.as_str()), &body, now);
            if let Some(d) = m.reset_after {
                prop_assert!(d <= super::MAX_HEADER_WAIT);
            }
            if let Some(d) = m.retry_after {
                prop_assert!(d <= super::MAX_HEADER_WAIT);
            }
        }
    }
}
