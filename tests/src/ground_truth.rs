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
    /// Distinct events handed to a client's socket at least once.
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

/// A per-shard counter of the simulator's `bot` (`identifies`, `resumes`, …) for shards
/// `0..total`, 0 where a shard never connected.
#[must_use]
pub fn per_shard(stats: &Value, bot: &str, total: u32, counter: &str) -> Vec<u64> {
    (0..total)
        .map(|id| {
            stats["shards"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|s| s["bot"] == bot && s["id"] == id && s["total"] == total)
                .map(|s| s[counter].as_u64().unwrap_or(0))
                .sum()
        })
        .collect()
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
    sim: &impl crate::SimApi,
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

/// One live session's events as the simulator dispatched them, in order: `(seq, digest)`.
#[derive(Debug, Clone)]
pub struct SessionLog {
    /// The session id.
    pub id: String,
    /// Its shard.
    pub shard: u32,
    /// Its shard total.
    pub total: u32,
    /// `(seq, XXH3 of d)`, in order.
    pub events: Vec<(u64, u64)>,
}

/// Every live session of the simulator's first bot with its events
/// (`GET /_sim/sessions`, then `GET /_sim/sessions/{id}/events`).
///
/// # Errors
/// When the simulator does not answer.
pub async fn session_logs(sim: &impl crate::SimApi) -> anyhow::Result<Vec<SessionLog>> {
    let sessions = sim.get_json("/_sim/sessions").await?;
    let mut logs = Vec::new();
    for session in sessions.as_array().context("sessions")? {
        let id = session["session_id"]
            .as_str()
            .context("session_id")?
            .to_owned();
        let mut events = Vec::new();
        let mut from = 1u64;
        loop {
            let page = sim
                .get_json(&format!(
                    "/_sim/sessions/{id}/events?from={from}&limit=10000"
                ))
                .await?;
            let list = page["events"].as_array().context("events")?;
            for event in list {
                let seq = event["seq"].as_u64().context("seq")?;
                let digest: u64 = event["digest"].as_str().context("digest")?.parse()?;
                events.push((seq, digest));
                from = seq + 1;
            }
            if list.len() < 10_000 {
                break;
            }
        }
        logs.push(SessionLog {
            id,
            shard: u32::try_from(session["shard"].as_u64().context("shard")?)?,
            total: u32::try_from(session["total"].as_u64().context("total")?)?,
            events,
        });
    }
    Ok(logs)
}

/// One stored event: its session and seq (from `Nats-Msg-Id`) and the XXH3 of its payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    /// The session id.
    pub session: String,
    /// The gateway sequence.
    pub seq: u64,
    /// XXH3-64 of the payload.
    pub digest: u64,
}

/// Every message of `bot`'s event stream.
///
/// # Errors
/// When the stream cannot be read.
pub async fn read_stream_events(
    js: &jetstream::Context,
    bot: &BotKey,
) -> anyhow::Result<Vec<StoredEvent>> {
    let stream = js
        .get_stream(bot.stream())
        .await
        .context("the event stream")?;
    let mut consumer = stream
        .create_consumer(jetstream::consumer::pull::OrderedConfig {
            filter_subject: bot.events_filter(),
            ..Default::default()
        })
        .await?;
    let pending = consumer.info().await?.num_pending;
    let mut out = Vec::new();
    if pending == 0 {
        return Ok(out);
    }
    let mut messages = consumer.messages().await?;
    while (out.len() as u64) < pending {
        let message = tokio::time::timeout(Duration::from_secs(5), messages.next())
            .await
            .context("stream read stalled")?
            .context("stream ended")?
            .map_err(|e| anyhow::anyhow!("reading a message: {e}"))?;
        let id = message
            .headers
            .as_ref()
            .and_then(|h| h.get(headers::MSG_ID))
            .map(|v| v.as_str().to_owned())
            .context("a message without Nats-Msg-Id")?;
        let (session, seq) = id.rsplit_once(':').context("a Nats-Msg-Id without a seq")?;
        out.push(StoredEvent {
            session: session.to_owned(),
            seq: seq.parse()?,
            digest: shardyard_sim::payload_digest(&message.payload),
        });
    }
    Ok(out)
}

/// What a blue/green hand-over from shard total `old` to `new` left in the stream.
#[derive(Debug, Clone, Default)]
pub struct HandoverReport {
    /// Events stored twice, once from each generation (the overlap).
    pub duplicates: usize,
    /// Events both generations received (while both were live).
    pub shared: usize,
    /// Everything that breaks "nothing lost, order kept", as text.
    pub problems: Vec<String>,
}

/// Checks a hand-over against the simulator's ground truth:
/// - each old session's stored events are one unbroken run from its first event (it published
///   until the hand-over, then stopped);
/// - each new session's are one unbroken run to its last event (it published from the
///   hand-over on);
/// - every event both generations received (the same payload) is stored at least once: no gap
///   between them.
#[must_use]
pub fn check_handover(
    logs: &[SessionLog],
    stored: &[StoredEvent],
    old: u32,
    new: u32,
) -> HandoverReport {
    let mut report = HandoverReport::default();
    let mut by_session: HashMap<&str, Vec<u64>> = HashMap::new();
    for event in stored {
        by_session
            .entry(&event.session)
            .or_default()
            .push(event.seq);
    }
    let stored_digests: HashSet<u64> = stored.iter().map(|e| e.digest).collect();
    let digests_of = |total: u32| -> HashSet<u64> {
        logs.iter()
            .filter(|l| l.total == total)
            .flat_map(|l| l.events.iter().map(|(_, d)| *d))
            .collect()
    };
    let (old_digests, new_digests) = (digests_of(old), digests_of(new));
    for log in logs.iter().filter(|l| l.total == old || l.total == new) {
        let mut seqs = by_session.get(log.id.as_str()).cloned().unwrap_or_default();
        seqs.sort_unstable();
        seqs.dedup();
        let all: Vec<u64> = log.events.iter().map(|(seq, _)| *seq).collect();
        let Some(first) = seqs.first().and_then(|s| all.iter().position(|a| a == s)) else {
            report.problems.push(format!(
                "session {} ({}/{}) stored nothing",
                log.id, log.shard, log.total
            ));
            continue;
        };
        if seqs.as_slice() != &all[first..first + seqs.len().min(all.len() - first)] {
            report.problems.push(format!(
                "session {} ({}/{}): stored seqs are not one unbroken run",
                log.id, log.shard, log.total
            ));
        } else if log.total == old && first != 0 {
            report.problems.push(format!(
                "old session {} ({}/{}): its first {first} events are missing",
                log.id, log.shard, log.total
            ));
        } else if log.total == new && first + seqs.len() != all.len() {
            report.problems.push(format!(
                "new session {} ({}/{}): its last {} events are missing",
                log.id,
                log.shard,
                log.total,
                all.len() - first - seqs.len()
            ));
        }
    }
    let shared: Vec<u64> = old_digests.intersection(&new_digests).copied().collect();
    report.shared = shared.len();
    let missing = shared
        .iter()
        .filter(|d| !stored_digests.contains(d))
        .count();
    if missing > 0 {
        report.problems.push(format!(
            "{missing} of the {} events both generations received are in the stream from \
             neither: a gap in the hand-over",
            shared.len()
        ));
    }
    let old_sessions: HashSet<&str> = logs
        .iter()
        .filter(|l| l.total == old)
        .map(|l| l.id.as_str())
        .collect();
    let new_sessions: HashSet<&str> = logs
        .iter()
        .filter(|l| l.total == new)
        .map(|l| l.id.as_str())
        .collect();
    let from_old: HashSet<u64> = stored
        .iter()
        .filter(|e| old_sessions.contains(e.session.as_str()))
        .map(|e| e.digest)
        .collect();
    report.duplicates = stored
        .iter()
        .filter(|e| new_sessions.contains(e.session.as_str()) && from_old.contains(&e.digest))
        .count();
    report
}

#[cfg(test)]
mod handover_tests {
    use super::{SessionLog, StoredEvent, check_handover};

    fn log(id: &str, total: u32, digests: &[u64]) -> SessionLog {
        SessionLog {
            id: id.to_owned(),
            shard: 0,
            total,
            events: digests
                .iter()
                .enumerate()
                .map(|(i, d)| (i as u64 + 1, *d))
                .collect(),
        }
    }

    fn stored(id: &str, seqs: std::ops::RangeInclusive<u64>, log: &SessionLog) -> Vec<StoredEvent> {
        seqs.map(|seq| StoredEvent {
            session: id.to_owned(),
            seq,
            digest: log.events[seq as usize - 1].1,
        })
        .collect()
    }

    #[test]
    fn an_overlapping_hand_over_passes_and_a_gap_does_not() {
        // Old saw world events 1..=6; new identified (its own event 100) and saw 4..=8.
        let old = log("old", 1, &[1, 2, 3, 4, 5, 6]);
        let new = log("new", 2, &[100, 4, 5, 6, 7, 8]);
        let logs = [old.clone(), new.clone()];
        // Old published 1..=5, new from its 5th event (digest 6) on: 5 and 6 overlap? No: old
        // stopped after digest 5, new began at digest 6: touching, no gap.
        let mut events = stored("old", 1..=5, &old);
        events.extend(stored("new", 4..=6, &new));
        let report = check_handover(&logs, &events, 1, 2);
        assert!(report.problems.is_empty(), "{:?}", report.problems);
        assert_eq!(report.shared, 3);
        assert_eq!(report.duplicates, 0);
        // An overlap: new from digest 5 on: one duplicate.
        let mut events = stored("old", 1..=5, &old);
        events.extend(stored("new", 3..=6, &new));
        assert_eq!(check_handover(&logs, &events, 1, 2).duplicates, 1);
        // A gap: old stopped after 4, new began at 6: digest 5 is lost.
        let mut events = stored("old", 1..=4, &old);
        events.extend(stored("new", 4..=6, &new));
        let report = check_handover(&logs, &events, 1, 2);
        assert_eq!(report.problems.len(), 1, "{:?}", report.problems);
        assert!(report.problems[0].contains("a gap"));
        // A hole inside a run.
        let mut events = stored("old", 1..=2, &old);
        events.extend(stored("old", 4..=6, &old));
        events.extend(stored("new", 4..=6, &new));
        let report = check_handover(&logs, &events, 1, 2);
        assert!(
            report.problems.iter().any(|p| p.contains("unbroken")),
            "{:?}",
            report.problems
        );
    }
}
