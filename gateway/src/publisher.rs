//! Publishing dispatches to JetStream per the contract: subject, headers and `Nats-Msg-Id`, the
//! payload the raw bytes of `d`.

use std::time::Duration;

use async_nats::jetstream::{self, context::PublishAckFuture};
use bytes::Bytes;
use shardyard_protocol::BotKey;
use shardyard_protocol::names::{self, headers};

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
    /// The message was not sent or not acknowledged.
    #[error("publish to JetStream failed")]
    Publish(#[source] async_nats::jetstream::context::PublishError),
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

    /// Sends one dispatch; the returned future resolves when JetStream acknowledged it.
    ///
    /// # Errors
    /// [`PublishError::Publish`] when the message could not be sent.
    pub async fn publish(
        &self,
        shard: u32,
        session_id: &str,
        seq: u64,
        event: &str,
        received_at_us: u64,
        data: Bytes,
    ) -> Result<PublishAckFuture, PublishError> {
        let mut h = async_nats::HeaderMap::new();
        h.insert(headers::MSG_ID, names::msg_id(session_id, seq).as_str());
        h.insert(
            headers::SHARD,
            names::shard_header(shard, self.total).as_str(),
        );
        h.insert(headers::SEQ, itoa_u64(seq).as_str());
        h.insert(headers::EVENT, event);
        h.insert(headers::RECEIVED_AT, itoa_u64(received_at_us).as_str());
        self.js
            .publish_with_headers(self.bot.event_subject(shard, event), h, data)
            .await
            .map_err(PublishError::Publish)
    }
}

fn itoa_u64(n: u64) -> String {
    n.to_string()
}
