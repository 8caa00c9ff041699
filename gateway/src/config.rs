//! What a gateway process runs: which bot, which shards, how to reach Discord and NATS.

use std::ops::Range;
use std::time::Duration;

use shardyard_protocol::{BotKey, Intents, Token};

/// How frames come from Discord.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// `compress=zlib-stream`: one inflate context per connection.
    ZlibStream,
    /// `compress=zstd-stream`: one zstd decompression context per connection (more memory per
    /// connection than zlib, fewer bytes and less CPU per event; see `BENCHMARKS.md`).
    ZstdStream,
    /// Plain JSON text frames.
    None,
}

impl std::str::FromStr for Compression {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "zlib-stream" => Ok(Self::ZlibStream),
            "zstd-stream" => Ok(Self::ZstdStream),
            "none" => Ok(Self::None),
            other => Err(format!(
                "unknown compression {other:?}: use zlib-stream, zstd-stream or none"
            )),
        }
    }
}

/// A gateway process's configuration.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// The bot's key, from which every NATS name is built.
    pub bot: BotKey,
    /// Where `GET /gateway/bot` is asked (`…/api/v10`): in a cluster, the bot's REST proxy.
    pub api_base: String,
    /// Where it is asked instead once `api_base` has failed for `api_fallback_after` (Discord
    /// itself, when `api_base` is the proxy): a REST proxy that is down must not keep the
    /// gateways from starting.
    pub api_fallback: Option<String>,
    /// How long `api_base` may fail before `api_fallback` is asked.
    pub api_fallback_after: Duration,
    /// NATS server URL.
    pub nats_url: String,
    /// The bot's shard count.
    pub total: u32,
    /// The shards this process holds.
    pub shards: Range<u32>,
    /// The bot token (never printed).
    pub token: Token,
    /// Intents to identify with.
    pub intents: Intents,
    /// Frame compression.
    pub compression: Compression,
    /// IDENTIFY's `large_threshold` (50–250).
    pub large_threshold: u8,
    /// IDENTIFY's `presence`, as JSON.
    pub presence: Option<serde_json::Value>,
    /// Unacknowledged JetStream publishes allowed per shard before the shard stops reading.
    pub publish_window: usize,
    /// How long the publishing connection gathers publishes before writing them together
    /// ([`crate::nats_link::NatsLink::start`]); zero writes at once.
    pub publish_linger: Duration,
    /// The shard generation this process belongs to; `None` always publishes.
    pub generation: Option<u64>,
    /// The event stream's limits, used when this process creates the stream.
    pub stream_limits: StreamLimits,
}

/// How much of the bot's event stream JetStream keeps: the oldest events go first past either
/// limit (a worker that falls further behind than this loses them, rather than the gateway
/// stopping). Used when the gateway creates the stream; a stream that exists (the operator's)
/// keeps its own limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamLimits {
    /// Events older than this are dropped; zero keeps them whatever their age.
    pub max_age: Duration,
    /// Past this many bytes the oldest events are dropped; zero for no limit.
    pub max_bytes: u64,
}

impl Default for StreamLimits {
    /// A day of events, with no size limit: enough for a worker outage overnight, and no
    /// unbounded growth on a laptop left running.
    ///
    /// No size limit by default because JetStream reserves a stream's `max_bytes` out of the
    /// server's storage when the stream is created: a default that does not fit the NATS
    /// volume (a 10 GiB one on a 10 Gi claim) would stop the bot from starting at all.
    fn default() -> Self {
        Self {
            max_age: Duration::from_secs(24 * 60 * 60),
            max_bytes: 0,
        }
    }
}

/// A `--stream-max-age` or `--stream-max-bytes` value that cannot be read.
#[derive(Debug, thiserror::Error)]
#[error("invalid {what} {value:?}: {hint}")]
pub struct InvalidLimit {
    what: &'static str,
    value: String,
    hint: &'static str,
}

/// Parses a stream age limit: seconds, or a number with `s`, `m`, `h` or `d` (`24h`, `7d`); `0`
/// for no limit.
///
/// # Errors
/// [`InvalidLimit`] for anything else, or an age that does not fit in `u64` seconds.
pub fn parse_max_age(s: &str) -> Result<Duration, InvalidLimit> {
    const UNITS: &[(&str, u64)] = &[
        ("", 1),
        ("s", 1),
        ("m", 60),
        ("h", 60 * 60),
        ("d", 24 * 60 * 60),
    ];
    scaled(s, UNITS)
        .map(Duration::from_secs)
        .ok_or_else(|| InvalidLimit {
            what: "age",
            value: s.to_owned(),
            hint: "use seconds or a number with s, m, h or d (24h, 7d); 0 for no limit",
        })
}

/// Parses a stream size limit: bytes, or a number with `KiB`, `MiB`, `GiB` or `TiB` (also
/// written `Ki`, `Mi`, `Gi`, `Ti`, as Kubernetes quantities are); `0` for no limit.
///
/// # Errors
/// [`InvalidLimit`] for anything else, or a size JetStream cannot take (above `i64::MAX`).
pub fn parse_max_bytes(s: &str) -> Result<u64, InvalidLimit> {
    const UNITS: &[(&str, u64)] = &[
        ("", 1),
        ("KiB", 1 << 10),
        ("Ki", 1 << 10),
        ("MiB", 1 << 20),
        ("Mi", 1 << 20),
        ("GiB", 1 << 30),
        ("Gi", 1 << 30),
        ("TiB", 1 << 40),
        ("Ti", 1 << 40),
    ];
    scaled(s, UNITS)
        .filter(|&n| i64::try_from(n).is_ok())
        .ok_or_else(|| InvalidLimit {
            what: "size",
            value: s.to_owned(),
            hint: "use bytes or a number with KiB, MiB, GiB or TiB (10GiB); 0 for no limit",
        })
}

/// `s`, a whole number followed by one of `units` (`""` for none), times that unit's factor;
/// `None` for anything else or an overflow.
fn scaled(s: &str, units: &[(&str, u64)]) -> Option<u64> {
    let s = s.trim();
    let (number, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let (_, factor) = units.iter().find(|(name, _)| *name == unit)?;
    number.parse::<u64>().ok()?.checked_mul(*factor)
}

/// A `--shards` value that is not `A..B` with `A < B`.
#[derive(Debug, thiserror::Error)]
#[error("invalid shard range {0:?}: use A..B, for example 0..16")]
pub struct InvalidShardRange(pub String);

/// Parses `A..B` (B exclusive).
///
/// # Errors
/// [`InvalidShardRange`] when it is not two numbers with `A < B`.
pub fn parse_shard_range(s: &str) -> Result<Range<u32>, InvalidShardRange> {
    let (a, b) = s
        .split_once("..")
        .ok_or_else(|| InvalidShardRange(s.to_owned()))?;
    let (a, b): (u32, u32) = (
        a.trim()
            .parse()
            .map_err(|_| InvalidShardRange(s.to_owned()))?,
        b.trim()
            .parse()
            .map_err(|_| InvalidShardRange(s.to_owned()))?,
    );
    if a < b {
        Ok(a..b)
    } else {
        Err(InvalidShardRange(s.to_owned()))
    }
}

/// The ordinal of a StatefulSet pod from its name (`mybot-gateway-3` → 3).
#[must_use]
pub fn ordinal_from_pod_name(name: &str) -> Option<u32> {
    name.rsplit_once('-')?.1.parse().ok()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{ordinal_from_pod_name, parse_max_age, parse_max_bytes, parse_shard_range};

    #[test]
    fn stream_limits_read_units_and_zero_as_no_limit() {
        let hours = |h: u64| Duration::from_secs(h * 3600);
        assert_eq!(parse_max_age("3600").unwrap(), hours(1));
        assert_eq!(parse_max_age("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_max_age("15m").unwrap(), Duration::from_secs(900));
        assert_eq!(parse_max_age("24h").unwrap(), hours(24));
        assert_eq!(parse_max_age("7d").unwrap(), hours(7 * 24));
        assert_eq!(parse_max_age("0").unwrap(), Duration::ZERO);
        assert_eq!(parse_max_age("0h").unwrap(), Duration::ZERO);
        for bad in ["", "h", "1.5h", "-1", "1w", "10 h", "99999999999999999999d"] {
            let error = parse_max_age(bad).unwrap_err().to_string();
            assert!(error.contains("use seconds"), "{bad}: {error}");
        }
        assert_eq!(parse_max_bytes("1048576").unwrap(), 1 << 20);
        assert_eq!(parse_max_bytes("512KiB").unwrap(), 512 << 10);
        assert_eq!(parse_max_bytes("1Mi").unwrap(), 1 << 20);
        assert_eq!(parse_max_bytes("10GiB").unwrap(), 10 << 30);
        assert_eq!(parse_max_bytes("2Ti").unwrap(), 2 << 40);
        assert_eq!(parse_max_bytes("0").unwrap(), 0);
        for bad in ["", "B", "1KB", "1G", "1.5GiB", "-1", "8388608TiB", "1iB"] {
            let error = parse_max_bytes(bad).unwrap_err().to_string();
            assert!(error.contains("use bytes"), "{bad}: {error}");
        }
    }

    #[test]
    fn shard_ranges_and_pod_ordinals() {
        assert_eq!(parse_shard_range("0..16").unwrap(), 0..16);
        assert_eq!(parse_shard_range(" 4 .. 8").unwrap(), 4..8);
        for bad in ["8..4", "4..4", "a..b", "4", "..4"] {
            assert!(parse_shard_range(bad).is_err(), "{bad}");
        }
        assert_eq!(ordinal_from_pod_name("mybot-gateway-3"), Some(3));
        assert_eq!(ordinal_from_pod_name("gateway"), None);
        assert_eq!(ordinal_from_pod_name("mybot-gateway-x"), None);
    }
}
