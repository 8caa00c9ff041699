//! The bot's event stream, and a [`PublishWindow`] per shard that publishes to it over the
//! process's [`NatsLink`].

use std::time::Duration;

use async_nats::jetstream;
use shardyard_protocol::BotKey;

use crate::nats_link::NatsLink;
use crate::window::PublishWindow;

/// Publishes one bot's events.
#[derive(Debug, Clone)]
pub struct Publisher {
    js: jetstream::Context,
    link: NatsLink,
    bot: BotKey,
    total: u32,
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
        }
    }

    /// The publishing connection.
    #[must_use]
    pub fn link(&self) -> &NatsLink {
        &self.link
    }

    /// Creates the event stream when it does not exist yet (the operator normally has).
    ///
    /// # Errors
    /// [`PublishError::Stream`] when JetStream refuses.
    pub async fn ensure_stream(&self) -> Result<(), PublishError> {
        let stream = self.bot.stream();
        self.js
            .get_or_create_stream(jetstream::stream::Config {
                name: stream.clone(),
                subjects: vec![self.bot.events_filter()],
                storage: jetstream::stream::StorageType::File,
                duplicate_window: DUPLICATE_WINDOW,
                ..Default::default()
            })
            .await
            .map(|_| ())
            .map_err(|source| PublishError::Stream { stream, source })
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
