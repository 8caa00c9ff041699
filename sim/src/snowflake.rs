//! Discord snowflakes: ids that carry their creation time, serialized as strings.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Discord's epoch, the first millisecond of 2015, in unix milliseconds.
pub const DISCORD_EPOCH_MS: u64 = 1_420_070_400_000;

/// Hands out unique snowflakes whose timestamps follow the clock; `worker` distinguishes
/// generators so two never collide.
#[derive(Debug)]
pub struct SnowflakeGenerator {
    worker: u64,
    increment: AtomicU64,
}

impl SnowflakeGenerator {
    /// A generator for worker `worker` (0–31).
    #[must_use]
    pub fn new(worker: u8) -> Self {
        Self {
            worker: u64::from(worker & 0x1f),
            increment: AtomicU64::new(0),
        }
    }

    /// A new snowflake dated now.
    pub fn next(&self) -> u64 {
        self.at(now_ms())
    }

    /// A new snowflake dated `unix_ms`.
    pub fn at(&self, unix_ms: u64) -> u64 {
        let inc = self.increment.fetch_add(1, Ordering::Relaxed);
        compose(unix_ms, self.worker, inc)
    }
}

/// Builds a snowflake from its parts: 42 bits of milliseconds since [`DISCORD_EPOCH_MS`], 5 bits
/// of worker, 5 of process (the upper bits of `increment` beyond 12) and 12 of increment.
#[must_use]
pub fn compose(unix_ms: u64, worker: u64, increment: u64) -> u64 {
    let ts = unix_ms.saturating_sub(DISCORD_EPOCH_MS) & ((1 << 42) - 1);
    (ts << 22) | ((worker & 0x1f) << 17) | (((increment >> 12) & 0x1f) << 12) | (increment & 0xfff)
}

/// The unix millisecond a snowflake was made at.
#[must_use]
pub fn timestamp_ms(id: u64) -> u64 {
    (id >> 22) + DISCORD_EPOCH_MS
}

/// Milliseconds since the unix epoch.
#[must_use]
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// An ISO 8601 timestamp in Discord's format (`2026-11-27T08:50:00.123000+00:00`). Written digit
/// by digit: every generated message carries one, so it is on the simulator's hot path.
#[must_use]
pub fn iso8601(unix_ms: u64) -> String {
    let secs = unix_ms / 1000;
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(i64::try_from(days).unwrap_or(0));
    let mut out = String::with_capacity(32);
    push_digits(&mut out, u64::try_from(y).unwrap_or(0), 4);
    out.push('-');
    push_digits(&mut out, u64::from(m), 2);
    out.push('-');
    push_digits(&mut out, u64::from(d), 2);
    out.push('T');
    push_digits(&mut out, rem / 3600, 2);
    out.push(':');
    push_digits(&mut out, (rem % 3600) / 60, 2);
    out.push(':');
    push_digits(&mut out, rem % 60, 2);
    out.push('.');
    push_digits(&mut out, unix_ms % 1000, 3);
    out.push_str("000+00:00");
    out
}

fn push_digits(out: &mut String, value: u64, width: u32) {
    for i in (0..width).rev() {
        let digit = (value / 10u64.pow(i)) % 10;
        out.push(char::from(b'0' + u8::try_from(digit).unwrap_or(0)));
    }
}

// Howard Hinnant's days-to-civil algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    (y, m as u32, d as u32)
}

/// Serializes a `u64` id as a JSON string, as Discord does.
pub mod as_string {
    use serde::{Deserialize, Deserializer, Serializer};

    /// Serializes the id as a string.
    ///
    /// # Errors
    /// Whatever the serializer returns.
    pub fn serialize<S: Serializer>(id: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(itoa::Buffer::new().format(*id))
    }

    /// Reads an id from a string or a number.
    ///
    /// # Errors
    /// When the value is neither a numeric string nor a number.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Id<'a> {
            Num(u64),
            Str(&'a str),
            Owned(String),
        }
        match Id::deserialize(d)? {
            Id::Num(n) => Ok(n),
            Id::Str(s) => s.parse().map_err(serde::de::Error::custom),
            Id::Owned(s) => s.parse().map_err(serde::de::Error::custom),
        }
    }
}

/// Serializes an optional id as a string or `null`.
pub mod opt_string {
    use serde::Serializer;

    /// Serializes the id as a string, or `null`.
    ///
    /// # Errors
    /// Whatever the serializer returns.
    pub fn serialize<S: Serializer>(id: &Option<u64>, s: S) -> Result<S::Ok, S::Error> {
        match id {
            Some(id) => s.serialize_str(itoa::Buffer::new().format(*id)),
            None => s.serialize_none(),
        }
    }
}

/// Serializes a list of ids as strings.
pub mod vec_string {
    use serde::Serializer;
    use serde::ser::SerializeSeq;

    /// Serializes every id as a string.
    ///
    /// # Errors
    /// Whatever the serializer returns.
    pub fn serialize<S: Serializer>(ids: &[u64], s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(ids.len()))?;
        let mut buffer = itoa::Buffer::new();
        for id in ids {
            seq.serialize_element(buffer.format(*id))?;
        }
        seq.end()
    }
}

#[cfg(test)]
mod tests {
    use super::{SnowflakeGenerator, compose, iso8601, timestamp_ms};

    #[test]
    fn snowflakes_carry_their_time_and_are_unique() {
        let generator = SnowflakeGenerator::new(1);
        let a = generator.at(1_700_000_000_000);
        let b = generator.at(1_700_000_000_000);
        assert_ne!(a, b);
        assert_eq!(timestamp_ms(a), 1_700_000_000_000);
        assert_eq!(compose(1_420_070_400_000, 0, 0), 0);
    }

    #[test]
    fn timestamps_look_like_discords() {
        assert_eq!(iso8601(0), "1970-01-01T00:00:00.000000+00:00");
        assert_eq!(
            iso8601(1_764_233_400_123),
            "2025-11-27T08:50:00.123000+00:00"
        );
    }
}
