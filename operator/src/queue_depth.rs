//! A bot's queue depth: the events waiting for its workers, `num_pending + num_ack_pending` of
//! the worker consumer. It is what the workers scale on, so it must be right or an error, never
//! a guess:
//!
//! - it is read with one JetStream API request (`CONSUMER.INFO`), which the consumer's leader
//!   answers, not from a server's `/jsz` page, where a follower may lag or leave out the
//!   unacknowledged messages (KEDA's NATS scaler had both bugs: keda#3860, keda#6042);
//! - a missing stream or consumer, and NATS out of reach, are errors, so an autoscaler keeps
//!   the replicas it has instead of scaling on a stale zero or on "infinitely many".

use async_nats::jetstream;
use async_nats::jetstream::context::ConsumerInfoErrorKind;
use serde::Serialize;
use shardyard_protocol::BotKey;
use shardyard_protocol::names::worker_consumer;

/// The worker consumer's backlog.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct QueueDepth {
    /// Waiting: not yet delivered to any worker.
    pub num_pending: u64,
    /// Delivered and not yet acknowledged: being handled, or to be redelivered.
    pub num_ack_pending: u64,
}

impl QueueDepth {
    /// What the autoscaler scales on: both.
    #[must_use]
    pub const fn pending(self) -> u64 {
        self.num_pending.saturating_add(self.num_ack_pending)
    }
}

/// Why the depth is unknown.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DepthError {
    /// The bot's stream does not exist (the operator has not created it yet).
    #[error("stream {stream} does not exist")]
    StreamMissing {
        /// The stream.
        stream: String,
    },
    /// No worker has created the consumer yet.
    #[error("consumer {consumer} of stream {stream} does not exist: no worker has started yet")]
    ConsumerMissing {
        /// The stream.
        stream: String,
        /// The consumer.
        consumer: String,
    },
    /// NATS did not answer, or JetStream refused.
    #[error("NATS could not say: {0}")]
    Nats(String),
}

/// Reads the depth of `bot`'s worker consumer (`group`: `None` for the unnamed one).
///
/// # Errors
/// [`DepthError`].
pub async fn read(
    js: &jetstream::Context,
    bot: &BotKey,
    group: Option<&str>,
) -> Result<QueueDepth, DepthError> {
    let stream = bot.stream();
    let consumer = worker_consumer(group);
    // No request: the one below is the only round trip.
    let handle = js
        .get_stream_no_info(&stream)
        .await
        .map_err(|e| DepthError::Nats(e.to_string()))?;
    match handle.consumer_info(&consumer).await {
        Ok(info) => Ok(QueueDepth {
            num_pending: info.num_pending,
            num_ack_pending: u64::try_from(info.num_ack_pending).unwrap_or(0),
        }),
        Err(error) => Err(match error.kind() {
            ConsumerInfoErrorKind::StreamNotFound => DepthError::StreamMissing { stream },
            ConsumerInfoErrorKind::NotFound => DepthError::ConsumerMissing { stream, consumer },
            _ => DepthError::Nats(shardyard_protocol::error_chain(&error)),
        }),
    }
}
