//! Answering an interaction, whichever way it came: a handler calls
//! [`Context::respond`](crate::Context::respond) once and the library picks the path.
//!
//! - **Over HTTP** (the event carries `Shardyard-Reply-To`, published by `shardyard
//!   interactions`): the response goes to the endpoint, which holds Discord's request open and
//!   returns it as the HTTP answer. If the endpoint had to defer first (no answer within its
//!   deadline), the response becomes an edit of the original response through the REST proxy.
//! - **Over the gateway**: the response goes to Discord's callback route through the REST proxy.
//!   The same happens when the endpoint is gone (no one listens on the reply subject): Discord
//!   then says whether the interaction was acknowledged already (40060), and if it was, the
//!   response becomes the edit.
//!
//! A response Discord cannot take late is reported, not forced: autocomplete choices after the
//! endpoint answered with none ([`Responded::TooLate`]), a modal after a deferral (an error).

use std::time::Duration;

use shardyard_protocol::InteractionReply;
use shardyard_protocol::names::headers::REPLY_TO;
use twilight_http::api_error::ApiError;
use twilight_http::error::ErrorType;
use twilight_http::request::Request;
use twilight_http::routing::Route;
use twilight_model::application::interaction::Interaction;
use twilight_model::channel::Message;
use twilight_model::http::interaction::{InteractionResponse, InteractionResponseType};

use crate::HandlerError;
use crate::context::Context;

/// How long the endpoint has to say what became of a response. It answers at once; a longer
/// silence means it is gone.
const ENDPOINT_REPLY_TIMEOUT: Duration = Duration::from_secs(5);

/// Discord's "Interaction has already been acknowledged".
const ALREADY_ACKNOWLEDGED: u64 = 40060;
/// Discord's "Unknown Message": an edit of the original response before Discord has taken the
/// deferral the endpoint just sent.
const UNKNOWN_MESSAGE: u64 = 10008;
/// Waits between edits refused with [`UNKNOWN_MESSAGE`]: about 3 s in all, by when Discord has
/// either taken the deferral or given the interaction up.
const EDIT_RETRIES: [Duration; 5] = [
    Duration::from_millis(100),
    Duration::from_millis(200),
    Duration::from_millis(400),
    Duration::from_millis(800),
    Duration::from_millis(1_600),
];

/// How a response reached Discord.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Responded {
    /// As the HTTP answer to Discord's request, through `shardyard interactions`.
    Endpoint,
    /// Through Discord's callback route (`POST /interactions/{id}/{token}/callback`).
    Callback,
    /// As an edit of the original response: the endpoint had deferred before the answer came.
    EditedOriginal,
    /// Nothing to send: the response was itself a deferral, and the endpoint had already
    /// deferred.
    AlreadyDeferred,
    /// Dropped: autocomplete choices after the endpoint had answered with none (Discord takes
    /// them only as the first answer).
    TooLate,
}

/// Why a response could not be delivered (the event is not retried for these).
#[derive(Debug, thiserror::Error)]
pub enum RespondError {
    /// The response does not serialize.
    #[error("the interaction response does not serialize: {0}")]
    Serialize(#[from] serde_json::Error),
    /// The endpoint refused it (already answered, not a response, …).
    #[error("the interactions endpoint refused the response: {0}")]
    Refused(String),
    /// The endpoint's reply was not understood.
    #[error("the interactions endpoint's reply is not understood: {0}")]
    BadReply(String),
    /// A modal (or another type) cannot follow the endpoint's deferral.
    #[error("a response of type {0} cannot follow a deferral")]
    CannotFollowDeferral(u8),
}

/// A REST failure as a handler's error: Discord refusing the request (a 4xx other than 429)
/// will refuse it again, so it is fatal; anything else (the proxy or Discord unreachable, a
/// 5xx, a timeout) is worth another try.
#[must_use]
pub fn rest_error(error: twilight_http::Error) -> HandlerError {
    match error.kind() {
        ErrorType::Response { status, .. } if status.is_client_error() && status.get() != 429 => {
            HandlerError::fatal(error)
        }
        ErrorType::Unauthorized => HandlerError::fatal(error),
        _ => HandlerError::retry(error),
    }
}

fn has_code(error: &twilight_http::Error, code: u64) -> bool {
    matches!(
        error.kind(),
        ErrorType::Response { error: ApiError::General(general), .. } if general.code == code
    )
}

impl Context {
    /// Answers `interaction` with `response`, by HTTP through the interactions endpoint when
    /// the interaction came that way, else through Discord's callback route; late answers
    /// become an edit of the original response (see the module documentation).
    ///
    /// # Errors
    /// A retryable [`HandlerError`] when the REST proxy or Discord could not be reached; a
    /// fatal one when Discord or the endpoint refused the response.
    pub async fn respond(
        &self,
        interaction: &Interaction,
        response: &InteractionResponse,
    ) -> Result<Responded, HandlerError> {
        let reply_to = self
            .headers()
            .and_then(|h| h.get(REPLY_TO))
            .map(|v| v.as_str().to_owned());
        if let Some(reply_to) = reply_to {
            let body = serde_json::to_vec(response).map_err(RespondError::from)?;
            let asked = tokio::time::timeout(
                ENDPOINT_REPLY_TIMEOUT,
                self.nats().request(reply_to, body.into()),
            )
            .await;
            match asked {
                Ok(Ok(reply)) => {
                    return match serde_json::from_slice::<InteractionReply>(&reply.payload) {
                        Ok(InteractionReply::Answered) => Ok(Responded::Endpoint),
                        Ok(InteractionReply::Deferred { .. }) => {
                            self.after_deferral(interaction, response).await
                        }
                        Ok(InteractionReply::Refused { reason }) => {
                            Err(HandlerError::fatal(RespondError::Refused(reason)))
                        }
                        Err(error) => Err(HandlerError::fatal(RespondError::BadReply(
                            error.to_string(),
                        ))),
                    };
                }
                // No endpoint listens any more (it restarted or died): Discord knows whether
                // the interaction was answered, so ask it through the callback.
                Ok(Err(error)) => {
                    tracing::debug!(%error, "the interactions endpoint is gone; answering by callback");
                }
                Err(_) => tracing::debug!(
                    "the interactions endpoint did not reply; answering by callback"
                ),
            }
        }
        let created = self
            .rest()
            .interaction(interaction.application_id)
            .create_response(interaction.id, &interaction.token, response)
            .await;
        match created {
            Ok(_) => Ok(Responded::Callback),
            Err(error) if has_code(&error, ALREADY_ACKNOWLEDGED) => {
                self.after_deferral(interaction, response).await
            }
            Err(error) => Err(rest_error(error)),
        }
    }

    /// The interaction was answered with a deferral already: a message becomes an edit of the
    /// original response.
    async fn after_deferral(
        &self,
        interaction: &Interaction,
        response: &InteractionResponse,
    ) -> Result<Responded, HandlerError> {
        match response.kind {
            InteractionResponseType::ChannelMessageWithSource
            | InteractionResponseType::UpdateMessage => {
                let route = Route::UpdateInteractionOriginal {
                    application_id: interaction.application_id.get(),
                    interaction_token: &interaction.token,
                };
                let empty = serde_json::json!({});
                let mut retries = EDIT_RETRIES.iter();
                loop {
                    let request = match &response.data {
                        Some(data) => Request::builder(&route).json(data),
                        None => Request::builder(&route).json(&empty),
                    }
                    .build()
                    .map_err(HandlerError::fatal)?;
                    match self.rest().request::<Message>(request).await {
                        Ok(_) => break,
                        // The deferral is on its way to Discord: the endpoint told us of it as
                        // it answered. Ask again shortly.
                        Err(error) if has_code(&error, UNKNOWN_MESSAGE) => match retries.next() {
                            Some(wait) => tokio::time::sleep(*wait).await,
                            None => return Err(rest_error(error)),
                        },
                        Err(error) => return Err(rest_error(error)),
                    }
                }
                Ok(Responded::EditedOriginal)
            }
            InteractionResponseType::DeferredChannelMessageWithSource
            | InteractionResponseType::DeferredUpdateMessage => Ok(Responded::AlreadyDeferred),
            InteractionResponseType::ApplicationCommandAutocompleteResult => {
                tracing::debug!(interaction = %interaction.id, "autocomplete choices came after the endpoint answered with none");
                Ok(Responded::TooLate)
            }
            other => Err(HandlerError::fatal(RespondError::CannotFollowDeferral(
                other as u8,
            ))),
        }
    }
}
