//! Ground truth: what the simulator dispatched, replayed and answered, and every rule a client
//! broke. Tests compare this with what reached JetStream and the workers.

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde::Serialize;

use crate::snowflake::now_ms;

/// XXH3-64 (seed 0) of a dispatch's `d` bytes. A shard's `checksum` is the wrapping sum of this
/// over its distinct dispatched events, so a consumer can prove byte-identical delivery of a whole
/// shard without the simulator keeping every payload. XXH3 has a library in every language and
/// runs at memory speed, which matters at 100k events/s.
#[must_use]
pub fn payload_digest(data: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(data)
}

/// Counters of one shard (`id` of `total`) of one bot.
#[derive(Debug)]
pub struct ShardStats {
    /// The bot's name.
    pub bot: String,
    /// Shard id.
    pub id: u32,
    /// Shard count of the sessions counted here.
    pub total: u32,
    counters: Mutex<ShardCounters>,
}

/// The counters themselves, as served by `/_sim/stats`.
#[derive(Debug, Default, Clone, Serialize)]
pub struct ShardCounters {
    /// Distinct events handed to a client's socket at least once (counted as the socket takes
    /// them, so a client that dies mid-batch finds every event it received counted).
    pub dispatched: u64,
    /// Sends of events that had been written before (resume replays).
    pub replayed: u64,
    /// Distinct events first written as part of a resume's replay (missed while disconnected).
    pub first_sent_in_replay: u64,
    /// The highest sequence number sent, in the newest session.
    pub last_seq: u64,
    /// Successful IDENTIFYs.
    pub identifies: u64,
    /// Successful RESUMEs.
    pub resumes: u64,
    /// Sessions created.
    pub sessions: u64,
    /// Wrapping sum of [`payload_digest`] over distinct dispatched events, as a decimal string.
    #[serde(serialize_with = "as_decimal_string")]
    pub checksum: u64,
    /// Distinct dispatched events by type.
    pub by_type: BTreeMap<&'static str, u64>,
    /// Commands received by opcode name (heartbeat, presence_update, …).
    pub commands: BTreeMap<&'static str, u64>,
    /// Connections closed by the simulator, by close code.
    pub closes: BTreeMap<u16, u64>,
    /// The status of the last presence update received.
    pub last_presence_status: Option<String>,
}

fn as_decimal_string<S: serde::Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

impl ShardStats {
    /// Empty counters for a shard.
    #[must_use]
    pub fn new(bot: &str, id: u32, total: u32) -> Self {
        Self {
            bot: bot.to_owned(),
            id,
            total,
            counters: Mutex::new(ShardCounters::default()),
        }
    }

    /// Runs `f` on the counters.
    pub fn update<R>(&self, f: impl FnOnce(&mut ShardCounters) -> R) -> R {
        let mut counters = self
            .counters
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut counters)
    }

    /// A copy of the counters.
    #[must_use]
    pub fn snapshot(&self) -> ShardCounters {
        self.update(|c| c.clone())
    }
}

/// A rule a client broke, which real Discord would have punished.
#[derive(Debug, Clone, Serialize)]
pub struct Violation {
    /// What kind (`identify_too_fast`, `gateway_send_rate`, `bucket_limit`, `global_limit`, …).
    pub kind: &'static str,
    /// The bot it concerns, if known.
    pub bot: Option<String>,
    /// The shard it concerns, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shard: Option<u32>,
    /// Unix milliseconds.
    pub at_ms: u64,
    /// Details for a human.
    pub detail: String,
}

/// Every violation since start.
#[derive(Debug, Default)]
pub struct Violations(Mutex<Vec<Violation>>);

impl Violations {
    /// Records a violation (and logs it).
    pub fn record(
        &self,
        kind: &'static str,
        bot: Option<&str>,
        shard: Option<u32>,
        detail: String,
    ) {
        tracing::warn!(kind, bot, shard, %detail, "client broke a Discord rule");
        let violation = Violation {
            kind,
            bot: bot.map(str::to_owned),
            shard,
            at_ms: now_ms(),
            detail,
        };
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(violation);
    }

    /// A copy of every violation.
    #[must_use]
    pub fn all(&self) -> Vec<Violation> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::payload_digest;

    #[test]
    fn digest_is_xxh3_64() {
        // Reference values from the XXH3 specification's test vectors.
        assert_eq!(payload_digest(b""), 0x2d06_8005_38d3_94c2);
        assert_ne!(payload_digest(b"a"), payload_digest(b"b"));
    }
}
