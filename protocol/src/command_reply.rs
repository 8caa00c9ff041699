//! The gateway's answer to a command a worker sent on `shardyard.<bot>.commands.<shard>`: one
//! JSON object tagged by `status`. The gateway writes it and the worker library reads it, so it
//! lives here, in the contract. The requests and what each answer means are documented in
//! `gateway/src/commands.rs`.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The answer to a command request, serialized as `{"status": …}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum CommandReply {
    /// Written to Discord's websocket.
    Sent,
    /// Invalid: never sent.
    Rejected {
        /// What is wrong with the request.
        reason: String,
    },
    /// Not sent: the send budget or the queue is full.
    RetryAfter {
        /// How long to wait before retrying, in milliseconds.
        retry_after_ms: u64,
    },
    /// Not sent (or, as the reason says, maybe sent): the shard is not connected.
    Unavailable {
        /// Why.
        reason: String,
    },
}

impl CommandReply {
    /// A `rejected` reply.
    #[must_use]
    pub fn rejected(reason: impl Into<String>) -> Self {
        Self::Rejected {
            reason: reason.into(),
        }
    }

    /// An `unavailable` reply.
    #[must_use]
    pub fn unavailable(reason: impl Into<String>) -> Self {
        Self::Unavailable {
            reason: reason.into(),
        }
    }

    /// A `retry_after` reply, rounded up to whole milliseconds (at least 1), so that retrying
    /// when told is never early.
    #[must_use]
    pub fn retry_after(wait: Duration) -> Self {
        let ms = wait.as_micros().div_ceil(1000).max(1);
        Self::RetryAfter {
            retry_after_ms: u64::try_from(ms).unwrap_or(u64::MAX),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_have_the_documented_json() {
        let json = |reply: &CommandReply| serde_json::to_string(reply).unwrap();
        assert_eq!(json(&CommandReply::Sent), r#"{"status":"sent"}"#);
        assert_eq!(
            json(&CommandReply::rejected("bad guild")),
            r#"{"status":"rejected","reason":"bad guild"}"#
        );
        assert_eq!(
            json(&CommandReply::retry_after(Duration::from_micros(1_500_001))),
            r#"{"status":"retry_after","retry_after_ms":1501}"#
        );
        // Never "retry after 0 ms": at least 1, so retrying when told is never early.
        assert_eq!(
            CommandReply::retry_after(Duration::ZERO),
            CommandReply::RetryAfter { retry_after_ms: 1 }
        );
        assert_eq!(
            json(&CommandReply::unavailable("reconnecting")),
            r#"{"status":"unavailable","reason":"reconnecting"}"#
        );
        let back: CommandReply =
            serde_json::from_str(r#"{"status":"retry_after","retry_after_ms":7}"#).unwrap();
        assert_eq!(back, CommandReply::RetryAfter { retry_after_ms: 7 });
    }
}
