//! What a gateway process runs: which bot, which shards, how to reach Discord and NATS.

use std::ops::Range;

use shardyard_protocol::{BotKey, Intents, Token};

/// How frames come from Discord.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// `compress=zlib-stream`: one inflate context per connection.
    ZlibStream,
    /// Plain JSON text frames.
    None,
}

impl std::str::FromStr for Compression {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "zlib-stream" => Ok(Self::ZlibStream),
            "none" => Ok(Self::None),
            other => Err(format!(
                "unknown compression {other:?}: use zlib-stream or none"
            )),
        }
    }
}

/// A gateway process's configuration.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// The bot's key, from which every NATS name is built.
    pub bot: BotKey,
    /// Where `GET /gateway/bot` is asked (`…/api/v10`).
    pub api_base: String,
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
    /// The shard generation this process belongs to; `None` always publishes.
    pub generation: Option<u64>,
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
    use super::{ordinal_from_pod_name, parse_shard_range};

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
