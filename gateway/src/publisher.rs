//! The bot's event stream, and a [`PublishWindow`] per shard that publishes to it over the
//! process's [`NatsLink`].

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_nats::jetstream;
use shardyard_protocol::BotKey;

use crate::config::StreamLimits;
use crate::nats_link::NatsLink;
use crate::window::PublishWindow;

/// Publishes one bot's events.
#[derive(Debug, Clone)]
pub struct Publisher {
    js: jetstream::Context,
    link: NatsLink,
    bot: BotKey,
    total: u32,
    limits: StreamLimits,
    /// Whether an existing stream's differing limits were logged: once per process, not once
    /// per shard each time JetStream comes back.
    limits_reported: Arc<AtomicBool>,
}

/// JetStream refused or lost a publish.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The stream could not be created or read.
    #[error("cannot ensure stream {stream}")]
    Stream {
        /// Its name.
        stream: String,
        /// Why.
        #[source]
        source: async_nats::jetstream::context::CreateStreamError,
    },
}

/// How long a replayed message id is recognized as a duplicate: longer than any resume.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(300);

/// How long one probe of [`Publisher::wait_until_available`] may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// The longest pause between two probes.
const MAX_PROBE_PAUSE: Duration = Duration::from_secs(2);

impl Publisher {
    /// A publisher for `bot`'s shards out of `total`: publishes go over `link`, the stream is
    /// managed through `js`.
    #[must_use]
    pub fn new(js: jetstream::Context, link: NatsLink, bot: BotKey, total: u32) -> Self {
        Self {
            js,
            link,
            bot,
            total,
            limits: StreamLimits::default(),
            limits_reported: Arc::default(),
        }
    }

    /// The same publisher, creating the stream (when it is missing) with `limits` rather than
    /// the default ones.
    #[must_use]
    pub fn with_stream_limits(self, limits: StreamLimits) -> Self {
        Self { limits, ..self }
    }

    /// The publishing connection.
    #[must_use]
    pub fn link(&self) -> &NatsLink {
        &self.link
    }

    /// Creates the event stream with this publisher's limits when it does not exist yet (the
    /// operator normally has). A stream that exists keeps its configuration, limits included:
    /// whoever created it owns them, and two gateways given different limits must not take
    /// turns rewriting them.
    ///
    /// # Errors
    /// [`PublishError::Stream`] when JetStream refuses.
    pub async fn ensure_stream(&self) -> Result<(), PublishError> {
        let stream = self.bot.stream();
        // JetStream's spelling of the limits: zero age and -1 bytes for none.
        let max_age = self.limits.max_age;
        let max_bytes = match self.limits.max_bytes {
            0 => -1,
            n => i64::try_from(n).unwrap_or(i64::MAX),
        };
        let created = self
            .js
            .get_or_create_stream(jetstream::stream::Config {
                name: stream.clone(),
                subjects: vec![self.bot.events_filter()],
                storage: jetstream::stream::StorageType::File,
                duplicate_window: DUPLICATE_WINDOW,
                // Past either limit the oldest events go: a worker that falls that far behind
                // loses them, rather than the gateway stopping every shard.
                discard: jetstream::stream::DiscardPolicy::Old,
                max_age,
                max_bytes,
                ..Default::default()
            })
            .await
            .map_err(|source| PublishError::Stream {
                stream: stream.clone(),
                source,
            })?;
        let config = &created.cached_info().config;
        if (config.max_age, config.max_bytes) != (max_age, max_bytes)
            && !self.limits_reported.swap(true, Ordering::Relaxed)
        {
            tracing::info!(
                %stream,
                max_age = ?config.max_age,
                max_bytes = config.max_bytes,
                "the event stream exists with limits of its own; they are kept"
            );
        }
        Ok(())
    }

    /// Waits until the publishing connection is up and JetStream answers for the bot's stream
    /// again (after publishes failed because NATS went away or JetStream was recovering),
    /// probing with a short backoff. `false` when `shutdown` came first.
    ///
    /// The probe creates the stream when it is missing, as at start: a JetStream that lost its
    /// storage (or a stream deleted by hand) would otherwise leave every shard waiting forever.
    pub async fn wait_until_available(
        &self,
        shutdown: &tokio_util::sync::CancellationToken,
    ) -> bool {
        if !self.link.wait_up(shutdown).await {
            return false;
        }
        let stream = self.bot.stream();
        let mut pause = Duration::from_millis(100);
        loop {
            let probe = tokio::time::timeout(PROBE_TIMEOUT, self.ensure_stream());
            tokio::select! {
                () = shutdown.cancelled() => return false,
                answer = probe => match answer {
                    Ok(Ok(())) => return true,
                    Ok(Err(e)) => tracing::debug!(%stream, error = %e, "JetStream not available yet"),
                    Err(_) => tracing::debug!(%stream, "JetStream did not answer in time"),
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => return false,
                () = tokio::time::sleep(pause) => {}
            }
            pause = (pause * 2).min(MAX_PROBE_PAUSE);
        }
    }

    /// A publish window for one of the bot's shards, which keeps up to `capacity` publishes
    /// in flight.
    #[must_use]
    pub fn window(&self, shard: u32, capacity: usize) -> PublishWindow {
        PublishWindow::open(&self.link, &self.bot, shard, self.total, capacity)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use async_nats::jetstream::stream::{Config, DiscardPolicy};
    use shardyard_protocol::BotKey;

    use crate::config::StreamLimits;
    use crate::window::tests::publisher;

    #[tokio::test]
    async fn a_created_stream_has_the_limits_and_an_existing_one_keeps_its_own()
    -> anyhow::Result<()> {
        let server = shardyard_tests::NatsServer::start().await?;
        let config_of = |js: async_nats::jetstream::Context, bot: &str| {
            let stream = BotKey::local(bot).map(|b| b.stream());
            async move { anyhow::Ok(js.get_stream(stream?).await?.info().await?.config.clone()) }
        };

        // The defaults: a day and no size limit (nothing reserved), the oldest events first.
        let (defaults, js) = publisher(&server, "defaultbot", 1).await?;
        defaults.ensure_stream().await?;
        let config = config_of(js.clone(), "defaultbot").await?;
        assert_eq!(config.max_age, Duration::from_secs(24 * 60 * 60));
        assert_eq!(config.max_bytes, -1);
        assert_eq!(config.discard, DiscardPolicy::Old);
        assert_eq!(config.duplicate_window, super::DUPLICATE_WINDOW);

        // Limits given are set; zero age is no limit, in JetStream's spelling.
        let (limited, _) = publisher(&server, "limitedbot", 1).await?;
        let limited = limited.with_stream_limits(StreamLimits {
            max_age: Duration::ZERO,
            max_bytes: 64 << 20,
        });
        limited.ensure_stream().await?;
        let config = config_of(js.clone(), "limitedbot").await?;
        assert_eq!(
            (config.max_age, config.max_bytes),
            (Duration::ZERO, 64 << 20)
        );

        // A stream someone else made (the operator) is not rewritten.
        let bot = BotKey::local("ownedbot")?;
        js.create_stream(Config {
            name: bot.stream(),
            subjects: vec![bot.events_filter()],
            max_age: Duration::from_secs(60),
            max_bytes: 1 << 20,
            ..Default::default()
        })
        .await?;
        let (late, _) = publisher(&server, "ownedbot", 1).await?;
        let late = late.with_stream_limits(StreamLimits {
            max_age: Duration::from_secs(3600),
            max_bytes: 1 << 30,
        });
        late.ensure_stream().await?;
        let config = config_of(js, "ownedbot").await?;
        assert_eq!(
            (config.max_age, config.max_bytes),
            (Duration::from_secs(60), 1 << 20)
        );
        Ok(())
    }
}
