//! How a worker answers an interaction that came over HTTP. `shardyard interactions` holds
//! Discord's request open and publishes the interaction with [`REPLY_TO`] naming a subject it
//! listens on; the worker sends its interaction response (Discord's JSON, `{"type", "data"}`)
//! there as a NATS request, and the endpoint's reply, one JSON object tagged by `outcome`,
//! says what became of it. The endpoint writes it and the worker library reads it, so it lives
//! here, in the contract.
//!
//! [`REPLY_TO`]: crate::names::headers::REPLY_TO

use serde::{Deserialize, Serialize};

/// The endpoint's reply to a worker's interaction response, serialized as `{"outcome": …}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum InteractionReply {
    /// The response went to Discord as the answer to its request.
    Answered,
    /// Too late: the endpoint had already answered Discord with this deferral type (5 for
    /// commands and modal submits, 6 for components, 8 with no choices for autocomplete). The
    /// worker delivers its response as an edit of the original response instead, where one
    /// exists.
    Deferred {
        /// The interaction response type the endpoint answered with.
        deferred_with: u8,
    },
    /// The response was refused (not a JSON object with a `type`): nothing went to Discord.
    Refused {
        /// Why.
        reason: String,
    },
}

#[cfg(test)]
mod tests {
    use super::InteractionReply;

    #[test]
    fn replies_are_tagged_by_outcome() {
        let deferred = InteractionReply::Deferred { deferred_with: 5 };
        let json = serde_json::to_string(&deferred).unwrap();
        assert_eq!(json, r#"{"outcome":"deferred","deferred_with":5}"#);
        assert_eq!(
            serde_json::from_str::<InteractionReply>(r#"{"outcome":"answered"}"#).unwrap(),
            InteractionReply::Answered
        );
    }
}
