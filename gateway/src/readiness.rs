//! A generation's shards report READY in the bot's control bucket
//! (`ready.g<generation>.<shard>`, `{"total", "at_ms"}`), so the operator can tell when every
//! shard of a new generation is ready to take over before it lets that generation publish. Only
//! with `--generation`. A key is written when its shard becomes READY and deleted when it stops
//! being READY (a dropped connection, a fatal close, shutdown) or once a newer generation has
//! taken over; while the generation does not publish yet it is rewritten every [`REFRESH`], so a
//! key left by a process that was killed grows old and the operator does not count it.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::kv;
use serde_json::json;
use shardyard_protocol::names::keys;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::generation::GenerationGate;
use crate::status::{ShardState, ShardStatus};

/// How often the shards' states are looked at.
const POLL: Duration = Duration::from_secs(1);
/// How often a key is rewritten while the generation waits to publish (the operator counts
/// keys younger than three of these).
pub const REFRESH: Duration = Duration::from_secs(20);
/// How long the keys' removal at shutdown may take.
const CLEANUP_TIMEOUT: Duration = Duration::from_secs(3);

/// Reports the shards of `generation` (of `total`) until `shutdown`, then removes their keys.
pub async fn report(
    store: kv::Store,
    generation: u64,
    total: u32,
    shards: Vec<Arc<ShardStatus>>,
    gate: GenerationGate,
    shutdown: CancellationToken,
) {
    // Per shard: when its key was written, while it is.
    let mut written: Vec<Option<Instant>> = vec![None; shards.len()];
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = tokio::time::sleep(POLL) => {}
        }
        for (shard, at) in shards.iter().zip(written.iter_mut()) {
            let key = keys::generation_ready(generation, shard.id);
            // A generation a newer one took over from will not take over again: its keys go,
            // and are not rewritten after the operator has forgotten them.
            let ready = shard.state() == ShardState::Ready && !gate.is_superseded();
            let stale = at.is_none_or(|at| !gate.is_active() && at.elapsed() >= REFRESH);
            if ready && stale {
                let value = json!({"total": total, "at_ms": unix_ms()}).to_string();
                match store.put(&key, value.into()).await {
                    Ok(_) => *at = Some(Instant::now()),
                    Err(error) => tracing::debug!(%error, %key, "reporting a ready shard"),
                }
            } else if !ready && at.is_some() {
                match store.delete(&key).await {
                    Ok(()) => *at = None,
                    Err(error) => tracing::debug!(%error, %key, "withdrawing a shard's readiness"),
                }
            }
        }
    }
    let cleanup = async {
        for (shard, at) in shards.iter().zip(&written) {
            if at.is_some() {
                let _ = store
                    .delete(keys::generation_ready(generation, shard.id))
                    .await;
            }
        }
    };
    let _ = tokio::time::timeout(CLEANUP_TIMEOUT, cleanup).await;
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
