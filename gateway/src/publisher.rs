//! The bot's event stream, and a [`PublishWindow`] per shard that publishes to it.

use std::time::Duration;

use async_nats::jetstream;
use shardyard_protocol::BotKey;

use crate::window::{PublishWindow, SubscribeError};

/// Publishes one bot's events.
#[derive(Debug, Clone)]
pub struct Publisher {
    js: jetstream::Context,
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

impl Publisher {
    /// A publisher for `bot`'s shards out of `total`.
    #[must_use]
    pub fn new(js: jetstream::Context, bot: BotKey, total: u32) -> Self {
        Self { js, bot, total }
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

    /// A publish window for one of the bot's shards.
    ///
    /// # Errors
    /// [`SubscribeError`] when NATS refuses the window's reply subscription.
    pub async fn window(&self, shard: u32) -> Result<PublishWindow, SubscribeError> {
        PublishWindow::open(self.js.client(), &self.bot, shard, self.total).await
    }
}
