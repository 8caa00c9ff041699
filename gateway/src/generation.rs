//! Publishing gated on the shard generation, for blue/green resharding: a gateway started with
//! `--generation G` publishes only while the bot's control bucket names `G` among the active
//! generations (no key means active). The operator names the new generation beside the old one
//! once every shard of the new one is READY, then the new one alone: an overlap, never a gap.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_nats::jetstream::{self, kv};
use futures_util::StreamExt as _;
use shardyard_protocol::BotKey;
use shardyard_protocol::names::ACTIVE_GENERATION_KEY;
use tokio_util::sync::CancellationToken;

/// Whether this process's generation may publish now.
#[derive(Debug, Clone)]
pub struct GenerationGate {
    active: Arc<AtomicBool>,
    /// The control bucket, with `--generation`.
    store: Option<kv::Store>,
}

/// The control bucket could not be opened or read.
#[derive(Debug, thiserror::Error)]
#[error("reading the active generation from {bucket}")]
pub struct GenerationError {
    bucket: String,
    #[source]
    source: Box<dyn std::error::Error + Send + Sync>,
}

/// What a control value says for `generation`: ours when it names it (alone, or beside another
/// generation during a hand-over); a value naming others, or unreadable, is "not ours".
fn is_ours(value: &[u8], generation: u64) -> bool {
    std::str::from_utf8(value)
        .is_ok_and(|v| shardyard_protocol::names::active_generations(v).contains(&generation))
}

impl GenerationGate {
    /// No `--generation`: always publish.
    #[must_use]
    pub fn always() -> Self {
        Self {
            active: Arc::new(AtomicBool::new(true)),
            store: None,
        }
    }

    /// The bot's control bucket, when this gate watches it.
    #[must_use]
    pub fn control_store(&self) -> Option<kv::Store> {
        self.store.clone()
    }

    /// Whether to publish now.
    #[must_use]
    pub fn is_active(&self) -> bool {
        self.active.load(Ordering::Relaxed)
    }

    /// Reads the active generation now and follows its changes until `shutdown`.
    ///
    /// # Errors
    /// [`GenerationError`] when the control bucket cannot be opened or read at start.
    pub async fn watch(
        js: &jetstream::Context,
        bot: &BotKey,
        generation: u64,
        shutdown: CancellationToken,
    ) -> Result<Self, GenerationError> {
        let bucket = bot.control_bucket();
        let err = |source: Box<dyn std::error::Error + Send + Sync>| GenerationError {
            bucket: bucket.clone(),
            source,
        };
        let store = match js.get_key_value(&bucket).await {
            Ok(store) => store,
            Err(_) => js
                .create_key_value(kv::Config {
                    bucket: bucket.clone(),
                    history: 1,
                    ..Default::default()
                })
                .await
                .map_err(|e| err(Box::new(e)))?,
        };
        let initial = store
            .get(ACTIVE_GENERATION_KEY)
            .await
            .map_err(|e| err(Box::new(e)))?;
        let active = Arc::new(AtomicBool::new(
            initial.as_deref().is_none_or(|v| is_ours(v, generation)),
        ));
        tracing::info!(
            generation,
            active = active.load(Ordering::Relaxed),
            "generation gate"
        );
        let flag = active.clone();
        let watched = store.clone();
        tokio::spawn(async move {
            let store = watched;
            loop {
                // With history: the current value first, so no change between `get` and here is missed.
                let mut watch = match store.watch_with_history(ACTIVE_GENERATION_KEY).await {
                    Ok(watch) => watch,
                    Err(e) => {
                        tracing::warn!(error = %e, "watching the active generation failed; retrying");
                        tokio::select! {
                            () = shutdown.cancelled() => return,
                            () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                        }
                    }
                };
                loop {
                    let entry = tokio::select! {
                        () = shutdown.cancelled() => return,
                        entry = watch.next() => entry,
                    };
                    match entry {
                        Some(Ok(entry)) => {
                            let now = match entry.operation {
                                kv::Operation::Put => is_ours(&entry.value, generation),
                                kv::Operation::Delete | kv::Operation::Purge => true,
                            };
                            if flag.swap(now, Ordering::Relaxed) != now {
                                tracing::info!(
                                    generation,
                                    active = now,
                                    "active generation changed"
                                );
                            }
                        }
                        // The watch broke (NATS restart): keep the last state and watch again.
                        Some(Err(_)) | None => break,
                    }
                }
            }
        });
        Ok(Self {
            active,
            store: Some(store),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::is_ours;

    #[test]
    fn values_name_the_active_generation() {
        assert!(is_ours(b"3", 3));
        assert!(is_ours(b" 3\n", 3));
        assert!(!is_ours(b"4", 3));
        assert!(!is_ours(b"three", 3));
        // A hand-over: both publish.
        assert!(is_ours(b"2,3", 3));
        assert!(is_ours(b"2,3", 2));
        assert!(!is_ours(b"2,3", 1));
    }
}
