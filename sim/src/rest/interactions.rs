//! Interaction callbacks: `POST /interactions/{id}/{token}/callback`, which needs no
//! Authorization and is exempt from the global limit, and the list of callbacks received.
//!
//! Registry: until the first interaction is registered with [`super::RestState::register_interaction`]
//! every id/token pair is accepted (so clients can be tested before anything issues
//! interactions). From then on the simulator is strict, like Discord: an unknown id or a wrong
//! token answers 404 10062 Unknown interaction, so does an initial response later than 3 s
//! after the interaction was issued, and a second response answers 400 40060.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::error::{ApiError, FormErrors};
use super::gate::{Ctx, parse_snowflake};
use crate::snowflake::now_ms;
use crate::state::SimState;

/// How long after an interaction its initial response is accepted.
pub(crate) const INITIAL_RESPONSE_DEADLINE: Duration = Duration::from_secs(3);

/// Interaction callback types Discord accepts.
const CALLBACK_TYPES: &[u64] = &[1, 4, 5, 6, 7, 8, 9, 10, 12];

/// An interaction callback the simulator received, as `GET /_sim/rest/interactions` lists it.
#[derive(Debug, Clone, Serialize)]
pub struct InteractionCallback {
    /// The interaction id from the path.
    pub id: String,
    /// The callback `type` (4 = channel message with source, 5 = deferred, …), when given.
    #[serde(rename = "type")]
    pub kind: Option<u64>,
    /// The callback `data`, as sent.
    pub data: Value,
    /// When it arrived, unix milliseconds.
    pub received_at_ms: u64,
    /// Milliseconds between the interaction being registered and this callback; `None` for
    /// interactions the simulator did not register.
    pub response_ms: Option<u64>,
    /// The status the simulator answered.
    pub status: u16,
}

#[derive(Debug)]
struct Issued {
    token: String,
    at: Instant,
    acknowledged: bool,
}

/// Issued interactions and callbacks received.
#[derive(Debug, Default)]
pub(crate) struct Interactions {
    issued: HashMap<u64, Issued>,
    callbacks: Vec<InteractionCallback>,
}

impl Interactions {
    pub(crate) fn register(&mut self, id: u64, token: &str, now: Instant) {
        self.issued.insert(
            id,
            Issued {
                token: token.to_owned(),
                at: now,
                acknowledged: false,
            },
        );
    }

    pub(crate) fn callbacks(&self) -> &[InteractionCallback] {
        &self.callbacks
    }

    /// Checks a callback against the registry; returns the response time.
    fn accept(&mut self, id: u64, token: &str, now: Instant) -> Result<Option<Duration>, ApiError> {
        if self.issued.is_empty() {
            return Ok(None);
        }
        let issued = self
            .issued
            .get_mut(&id)
            .filter(|i| i.token == token)
            .ok_or_else(ApiError::unknown_interaction)?;
        if issued.acknowledged {
            return Err(ApiError::already_acknowledged());
        }
        let elapsed = now.saturating_duration_since(issued.at);
        if elapsed > INITIAL_RESPONSE_DEADLINE {
            return Err(ApiError::unknown_interaction());
        }
        issued.acknowledged = true;
        Ok(Some(elapsed))
    }
}

/// `POST /interactions/{interaction_id}/{interaction_token}/callback`.
pub(crate) async fn callback(ctx: Ctx) -> Result<Response, ApiError> {
    let received_at_ms = now_ms();
    let now = Instant::now();
    let raw_id = ctx.param("interaction_id").to_owned();
    let body: Option<Value> = serde_json::from_slice(&ctx.body).ok();
    let kind = body
        .as_ref()
        .and_then(|b| b.get("type"))
        .and_then(Value::as_u64);
    let data = body
        .as_ref()
        .and_then(|b| b.get("data"))
        .cloned()
        .unwrap_or(Value::Null);
    let result = answer(&ctx, &raw_id, body.as_ref(), kind, now);
    let (status, response_ms) = match &result {
        Ok((resp, elapsed)) => (
            resp.status().as_u16(),
            elapsed.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        ),
        Err(e) => (e.status().as_u16(), None),
    };
    ctx.state
        .rest
        .interactions()
        .callbacks
        .push(InteractionCallback {
            id: raw_id,
            kind,
            data,
            received_at_ms,
            response_ms,
            status,
        });
    result.map(|(resp, _)| resp)
}

fn answer(
    ctx: &Ctx,
    raw_id: &str,
    body: Option<&Value>,
    kind: Option<u64>,
    now: Instant,
) -> Result<(Response, Option<Duration>), ApiError> {
    let id = parse_snowflake("interaction_id", raw_id)?;
    let Some(body) = body else {
        return Err(ApiError::invalid_json());
    };
    if !body.is_object() {
        return Err(FormErrors::single(
            &[],
            "DICT_TYPE_CONVERT",
            "Only dictionaries may be used in a DictType",
        ));
    }
    let Some(kind) = kind.filter(|k| CALLBACK_TYPES.contains(k)) else {
        return Err(FormErrors::single(
            &["type"],
            "BASE_TYPE_CHOICES",
            "Value must be one of {1, 4, 5, 6, 7, 8, 9, 10, 12}.",
        ));
    };
    let elapsed = ctx
        .state
        .rest
        .interactions()
        .accept(id, ctx.param("interaction_token"), now)?;
    let resp = if matches!(ctx.query("with_response"), Some("true" | "True" | "1")) {
        Json(json!({
            "interaction": {
                "id": id.to_string(),
                "type": 2,
                "activity_instance_id": null,
                "response_message_id": null,
                "response_message_loading": kind == 5,
                "response_message_ephemeral": false,
            },
            "resource": { "type": kind },
        }))
        .into_response()
    } else {
        StatusCode::NO_CONTENT.into_response()
    };
    Ok((resp, elapsed))
}

/// `GET /_sim/rest/interactions`: every callback received, oldest first.
pub(crate) async fn list(State(state): State<Arc<SimState>>) -> Response {
    Json(state.rest.interaction_callbacks()).into_response()
}
