//! "Nothing lost" measured: what the simulator says it dispatched, per shard, against what a
//! JetStream stream holds for that shard — counts, payload checksums (the same XXH3 sum the
//! simulator keeps), event types, order within each session, and duplicates.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream;
use futures_util::StreamExt as _;
use serde_json::Value;
use shardyard_protocol::BotKey;
use shardyard_protocol::names::headers;

/// What the simulator dispatched to one shard (`GET /_sim/stats`, `shards[]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardTruth {
    /// Distinct events written to a socket at least once.
    pub dispatched: u64,
    /// Wrapping sum of XXH3-64 of every distinct event's `d`.
    pub checksum: u64,
    /// Distinct events by type.
    pub by_type: BTreeMap<String, u64>,
}

/// The simulator's record of shard `id` of `total` for bot `bot` (its `name` in the simulator),
/// or `None` when the shard never connected.
///
/// # Errors
/// When the stats are not shaped as documented in `sim/README.md`.
pub fn shard_truth(
    stats: &Value,
    bot: &str,
    id: u32,
    total: u32,
) -> anyhow::Result<Option<ShardTruth>> {
    let shards = stats["shards"].as_array().context("stats without shards")?;
    let Some(shard) = shards
        .iter()
        .find(|s| s["bot"] == bot && s["id"] == id && s["total"] == total)
    else {
        return Ok(None);
    };
    let by_type = shard["by_type"]
        .as_object()
        .context("shard without by_type")?
        .iter()
        .map(|(k, v)| Ok((k.clone(), v.as_u64().context("by_type count")?)))
        .collect::<anyhow::Result<_>>()?;
    Ok(Some(ShardTruth {
        dispatched: shard["dispatched"].as_u64().context("dispatched")?,
        checksum: shard["checksum"]
            .as_str()
            .context("checksum")?
            .parse()
            .context("checksum is a decimal u64")?,
        by_type,
    }))
}

/// What a stream holds for one shard.
#[derive(Debug, Clone, Default)]
pub struct StreamShard {
    /// Messages, duplicates included.
    pub messages: u64,
    /// Wrapping sum of XXH3-64 of every distinct message's payload (by `Nats-Msg-Id`).
    pub checksum: u64,
    /// Distinct messages by `Shardyard-Event`.
    pub by_type: BTreeMap<String, u64>,
    /// Messages whose `Nats-Msg-Id` was seen before.
    pub duplicates: u64,
    /// Places where a session's `Shardyard-Seq` went backwards or skipped, as text.
    pub disorder: Vec<String>,
    /// Messages missing a contract header, as text.
    pub malformed: Vec<String>,
}

impl StreamShard {
    /// The comparable part, to check against [`ShardTruth`].
    #[must_use]
    pub fn truth(&self) -> ShardTruth {
        ShardTruth {
            dispatched: self.messages - self.duplicates,
            checksum: self.checksum,
            by_type: self.by_type.clone(),
        }
    }
}

/// Reads every message of shard `shard` from `bot`'s event stream, in stream order.
///
/// # Errors
/// When the stream cannot be read within 30 s.
pub async fn read_stream_shard(
    js: &jetstream::Context,
    bot: &BotKey,
    shard: u32,
) -> anyhow::Result<StreamShard> {
    let stream = js
        .get_stream(bot.stream())
        .await
        .context("getting the event stream")?;
    let mut consumer = stream
        .create_consumer(jetstream::consumer::pull::OrderedConfig {
            filter_subject: bot.shard_events_filter(shard),
            ..Default::default()
        })
        .await
        .context("creating an ordered consumer")?;
    let pending = consumer.info().await.context("consumer info")?.num_pending;
    let mut out = StreamShard::default();
    if pending == 0 {
        return Ok(out);
    }
    let mut messages = consumer.messages().await.context("reading messages")?;
    let mut seen = HashSet::new();
    let mut last_seq: HashMap<String, u64> = HashMap::new();
    while out.messages < pending {
        // Short: a local stream delivers in milliseconds; a stalled read (seen right after a
        // nats-server restart) fails this attempt so the caller retries with a fresh consumer.
        let message = tokio::time::timeout(Duration::from_secs(5), messages.next())
            .await
            .context("stream read stalled")?
            .context("stream ended")?
            .map_err(|e| anyhow::anyhow!("reading a message: {e}"))?;
        out.messages += 1;
        let header = |name: &str| {
            message
                .headers
                .as_ref()
                .and_then(|h| h.get(name))
                .map(|v| v.as_str().to_owned())
        };
        let (Some(id), Some(event), Some(seq)) = (
            header(headers::MSG_ID),
            header(headers::EVENT),
            header(headers::SEQ),
        ) else {
            out.malformed
                .push(format!("{}: missing headers", message.subject));
            continue;
        };
        if !seen.insert(id.clone()) {
            out.duplicates += 1;
            continue;
        }
        out.checksum = out
            .checksum
            .wrapping_add(shardyard_sim::payload_digest(&message.payload));
        *out.by_type.entry(event).or_default() += 1;
        let session = id
            .rsplit_once(':')
            .map_or(id.as_str(), |(s, _)| s)
            .to_owned();
        let Ok(seq) = seq.parse::<u64>() else {
            out.malformed.push(format!("{id}: Shardyard-Seq {seq:?}"));
            continue;
        };
        let previous = last_seq.insert(session.clone(), seq);
        if let Some(previous) = previous
            && seq != previous + 1
        {
            out.disorder
                .push(format!("session {session}: seq {previous} then {seq}"));
        }
    }
    Ok(out)
}

/// Waits (up to `timeout` per shard) until, for every shard `0..total`, the stream holds exactly
/// what the simulator says it dispatched to `sim_bot`'s shard: same distinct events, same
/// payload checksum, same types, in order within each session, and no duplicate message ids.
///
/// # Errors
/// The last difference seen, when a shard does not match in time.
pub async fn wait_until_stream_matches(
    js: &jetstream::Context,
    sim: &crate::SimProcess,
    sim_bot: &str,
    bot: &BotKey,
    total: u32,
    timeout: Duration,
) -> anyhow::Result<()> {
    for shard in 0..total {
        crate::eventually(
            timeout,
            "stream equals the simulator's record",
            || async move {
                let truth = shard_truth(&sim.stats().await?, sim_bot, shard, total)?
                    .with_context(|| format!("shard {shard} never connected"))?;
                let stream = read_stream_shard(js, bot, shard).await?;
                anyhow::ensure!(
                    stream.malformed.is_empty(),
                    "malformed: {:?}",
                    stream.malformed
                );
                anyhow::ensure!(
                    stream.disorder.is_empty(),
                    "out of order: {:?}",
                    stream.disorder
                );
                anyhow::ensure!(
                    stream.duplicates == 0,
                    "{} duplicates in the stream",
                    stream.duplicates
                );
                anyhow::ensure!(
                    stream.truth() == truth,
                    "shard {shard}: stream {:?} != simulator {truth:?}",
                    stream.truth()
                );
                Ok(())
            },
        )
        .await?;
    }
    Ok(())
}
