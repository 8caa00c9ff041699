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
    /// A newer generation publishes instead of this one: it will not publish again.
    superseded: Arc<AtomicBool>,
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

/// Whether a control value names only generations newer than `generation`: the hand-over away
/// from it is done.
fn supersedes(value: &[u8], generation: u64) -> bool {
    std::str::from_utf8(value).is_ok_and(|v| {
        let active = shardyard_protocol::names::active_generations(v);
        !active.is_empty() && active.iter().all(|g| *g > generation)
    })
}

impl GenerationGate {
    /// No `--generation`: always publish.
    #[must_use]
    pub fn always() -> Self {
        Self {
            active: Arc::new(AtomicBool::new(true)),
            superseded: Arc::new(AtomicBool::new(false)),
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

    /// Whether a newer generation has taken over from this one (which then only waits to be
    /// stopped): as opposed to a generation that does not publish *yet*.
    #[must_use]
    pub fn is_superseded(&self) -> bool {
        self.superseded.load(Ordering::Relaxed)
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
        let superseded = Arc::new(AtomicBool::new(
            initial
                .as_deref()
                .is_some_and(|v| supersedes(v, generation)),
        ));
        tracing::info!(
            generation,
            active = active.load(Ordering::Relaxed),
            "generation gate"
        );
        let flag = active.clone();
        let superseded_flag = superseded.clone();
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
                            let (now, newer) = match entry.operation {
                                kv::Operation::Put => (
                                    is_ours(&entry.value, generation),
                                    supersedes(&entry.value, generation),
                                ),
                                kv::Operation::Delete | kv::Operation::Purge => (true, false),
                            };
                            superseded_flag.store(newer, Ordering::Relaxed);
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
            superseded,
            store: Some(store),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::{is_ours, supersedes};

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

    #[test]
    fn only_newer_generations_alone_supersede_one() {
        assert!(supersedes(b"3", 2));
        assert!(!supersedes(b"2,3", 2), "during the hand-over both publish");
        assert!(!supersedes(b"2", 2));
        assert!(
            !supersedes(b"2", 3),
            "an older one: this one has not started yet"
        );
        assert!(!supersedes(b"", 2));
        assert!(!supersedes(b"three", 2));
    }
}
