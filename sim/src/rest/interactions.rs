//! Interactions the simulator issued and every answer to them: callbacks
//! (`POST /interactions/{id}/{token}/callback`, which needs no Authorization and is exempt from
//! the global limit), the answers of an app's interactions endpoint (see `endpoint.rs`), edits
//! of the original response (`PATCH /webhooks/{application_id}/{interaction_token}/messages/@original`),
//! and the list `GET /_sim/rest/interactions` serves.
//!
//! Registry: until the first interaction is registered with [`super::RestState::register_interaction`]
//! (or issued by `/_sim/interactions`) every id/token pair is accepted (so clients can be tested
//! before anything issues interactions). From then on the simulator is strict, like Discord: an
//! unknown id or a wrong token answers 404 10062 Unknown interaction, so does an initial response
//! later than 3 s after the interaction was issued, a second response answers 400 40060, and a
//! response type the interaction's type does not allow answers 400 50035 with `errors.type`
//! (`BASE_TYPE_CHOICES`, "Value must be one of {8}." for an autocomplete). Allowed, as Discord's
//! table has it: APPLICATION_COMMAND (2) 4, 5, 9, 12; MESSAGE_COMPONENT (3) 4, 5, 6, 7, 9;
//! APPLICATION_COMMAND_AUTOCOMPLETE (4) 8; MODAL_SUBMIT (5) 4, 5, 6, 7.
//!
//! The original response: once an interaction is acknowledged (by a callback or its endpoint's
//! answer) its token edits the response message for 15 minutes from issue. Unknown tokens (or
//! another application's) answer 404 10015 Unknown Webhook, an interaction not yet acknowledged
//! (or answered with an autocomplete result, which has no message) 404 10008 Unknown Message,
//! a token older than 15 minutes 401 50027 Invalid Webhook Token.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Map, Value, json};
use tokio::time::Instant;

use super::error::{ApiError, FormErrors};
use super::gate::{Ctx, parse_snowflake};
use super::messages::{read_body, validate};
use crate::snowflake::{iso8601, now_ms, timestamp_ms};
use crate::state::SimState;

/// How long after an interaction its initial response is accepted.
pub(crate) const INITIAL_RESPONSE_DEADLINE: Duration = Duration::from_secs(3);

/// How long an interaction token edits its original response.
pub(crate) const TOKEN_LIFETIME: Duration = Duration::from_secs(15 * 60);

/// How long the registry remembers an interaction (after that its token is unknown).
const FORGET_AFTER: Duration = Duration::from_secs(60 * 60);

/// Interaction callback types Discord accepts.
pub(crate) const CALLBACK_TYPES: &[u64] = &[1, 4, 5, 6, 7, 8, 9, 10, 12];

/// Interaction types.
pub(crate) mod interaction_kind {
    /// PING (the endpoint URL check).
    pub(crate) const PING: u8 = 1;
    /// A slash command.
    pub(crate) const APPLICATION_COMMAND: u8 = 2;
    /// A button or select menu.
    pub(crate) const MESSAGE_COMPONENT: u8 = 3;
    /// An autocomplete request.
    pub(crate) const APPLICATION_COMMAND_AUTOCOMPLETE: u8 = 4;
    /// A modal submitted.
    pub(crate) const MODAL_SUBMIT: u8 = 5;
}

/// Message flag of a deferred response still "thinking".
const LOADING: u64 = 1 << 7;

/// The response types Discord allows for an interaction of type `kind`.
#[must_use]
pub(crate) fn allowed_responses(kind: u8) -> &'static [u64] {
    match kind {
        interaction_kind::PING => &[1],
        interaction_kind::APPLICATION_COMMAND => &[4, 5, 9, 12],
        interaction_kind::MESSAGE_COMPONENT => &[4, 5, 6, 7, 9],
        interaction_kind::APPLICATION_COMMAND_AUTOCOMPLETE => &[8],
        interaction_kind::MODAL_SUBMIT => &[4, 5, 6, 7],
        _ => &[],
    }
}

/// `{4, 5, 9, 12}`, as Discord's `BASE_TYPE_CHOICES` message lists them.
pub(crate) fn choices(list: &[u64]) -> String {
    let inner: Vec<String> = list.iter().map(ToString::to_string).collect();
    format!("{{{}}}", inner.join(", "))
}

/// An interaction answer the simulator received, as `GET /_sim/rest/interactions` lists it.
#[derive(Debug, Clone, Serialize)]
pub struct InteractionCallback {
    /// The interaction id (from the path, for a callback).
    pub id: String,
    /// The response `type` (4 = channel message with source, 5 = deferred, …), when given;
    /// `None` for an edit of the original response.
    #[serde(rename = "type")]
    pub kind: Option<u64>,
    /// The response `data` as sent (for an edit: the whole body).
    pub data: Value,
    /// When it arrived, unix milliseconds.
    pub received_at_ms: u64,
    /// Milliseconds between the interaction being issued and this answer; `None` for
    /// interactions the simulator did not register and for endpoint deliveries that got no
    /// answer.
    pub response_ms: Option<u64>,
    /// The status the simulator answered (`callback`, `edit_original`), or the status the
    /// endpoint answered (`endpoint`; 0 when no answer came within 3 s or the connection
    /// failed).
    pub status: u16,
    /// How it came: `"callback"` (`POST /interactions/{id}/{token}/callback`), `"endpoint"`
    /// (the HTTP answer of the app's interactions endpoint) or `"edit_original"`
    /// (`PATCH /webhooks/{application_id}/{token}/messages/@original`).
    pub via: &'static str,
}

/// An interaction the simulator issued, for [`Interactions::register`].
#[derive(Debug, Clone)]
pub(crate) struct NewInteraction {
    pub(crate) id: u64,
    pub(crate) token: String,
    /// Its type (2 application command, …).
    pub(crate) kind: u8,
    /// The application it is for; `None` matches any (interactions registered by hand).
    pub(crate) application_id: Option<u64>,
    pub(crate) guild_id: Option<u64>,
    pub(crate) channel_id: u64,
    /// The id the original response message gets.
    pub(crate) message_id: u64,
    /// The user who started it.
    pub(crate) user: Value,
    /// Delivered to the interactions endpoint (else over the gateway).
    pub(crate) over_http: bool,
}

/// The original response message, as far as the simulator tracks it.
#[derive(Debug, Clone, Default)]
struct Original {
    content: String,
    embeds: Vec<Value>,
    components: Vec<Value>,
    flags: u64,
    edited_ms: Option<u64>,
}

impl Original {
    /// The message a response of type `kind` with `data` creates.
    fn from_response(kind: u64, data: &Value) -> Self {
        let list = |key: &str| {
            data.get(key)
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
        };
        let mut original = Self {
            content: data
                .get("content")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            embeds: list("embeds"),
            components: list("components"),
            flags: data.get("flags").and_then(Value::as_u64).unwrap_or(0),
            edited_ms: None,
        };
        if kind == 5 {
            original.flags |= LOADING;
        }
        original
    }
}

#[derive(Debug)]
struct Issued {
    id: u64,
    token: String,
    at: Instant,
    kind: u8,
    application_id: Option<u64>,
    guild_id: Option<u64>,
    channel_id: u64,
    message_id: u64,
    user: Value,
    /// The type of the initial response, once acknowledged.
    response: Option<u64>,
    original: Original,
}

impl Issued {
    fn acknowledge(&mut self, response: u64, data: &Value) {
        self.response = Some(response);
        self.original = Original::from_response(response, data);
    }
}

/// Counts for the `interactions` part of the REST stats.
#[derive(Debug, Default, Clone, Copy, Serialize)]
struct Counts {
    issued_gateway: u64,
    issued_http: u64,
    answered_callback: u64,
    answered_endpoint: u64,
    unanswered_endpoint: u64,
    edits: u64,
}

/// Issued interactions and the answers received.
#[derive(Debug, Default)]
pub(crate) struct Interactions {
    issued: HashMap<u64, Issued>,
    by_token: HashMap<String, u64>,
    /// Set by the first registration: from then on unknown ids and tokens are refused.
    strict: bool,
    registrations: u64,
    callbacks: Vec<InteractionCallback>,
    counts: Counts,
}

/// The original response message and what it answers, for its JSON.
#[derive(Debug, Clone)]
pub(crate) struct OriginalMessage {
    interaction_id: u64,
    interaction_kind: u8,
    guild_id: Option<u64>,
    channel_id: u64,
    message_id: u64,
    user: Value,
    original: Original,
}

impl OriginalMessage {
    /// The message object Discord answers, `author` being the bot user and `application_id`
    /// the webhook's id.
    pub(crate) fn to_json(&self, author: Value, application_id: u64) -> Value {
        let kind = if self.interaction_kind == interaction_kind::APPLICATION_COMMAND {
            20
        } else {
            0
        };
        let mut owners = Map::new();
        if let Some(guild) = self.guild_id {
            owners.insert("0".into(), guild.to_string().into());
        }
        json!({
            "id": self.message_id.to_string(),
            "type": kind,
            "channel_id": self.channel_id.to_string(),
            "content": self.original.content,
            "embeds": self.original.embeds,
            "components": self.original.components,
            "attachments": [],
            "mentions": [],
            "mention_roles": [],
            "mention_everyone": false,
            "pinned": false,
            "tts": false,
            "timestamp": iso8601(timestamp_ms(self.message_id)),
            "edited_timestamp": self.original.edited_ms.map(iso8601),
            "flags": self.original.flags,
            "author": author,
            "application_id": application_id.to_string(),
            "webhook_id": application_id.to_string(),
            "interaction_metadata": {
                "id": self.interaction_id.to_string(),
                "type": self.interaction_kind,
                "user": self.user,
                "authorizing_integration_owners": owners,
            },
        })
    }
}

/// Why an edit of the original response was refused, and the interaction when known.
pub(crate) struct EditRefused {
    pub(crate) error: ApiError,
    pub(crate) interaction: Option<(u64, Duration)>,
}

impl Interactions {
    pub(crate) fn register(&mut self, new: NewInteraction, now: Instant) {
        self.strict = true;
        self.registrations += 1;
        if self.registrations.is_multiple_of(1024) {
            let by_token = &mut self.by_token;
            self.issued.retain(|_, i| {
                let keep = now.saturating_duration_since(i.at) < FORGET_AFTER;
                if !keep {
                    by_token.remove(&i.token);
                }
                keep
            });
        }
        if new.over_http {
            self.counts.issued_http += 1;
        } else {
            self.counts.issued_gateway += 1;
        }
        self.by_token.insert(new.token.clone(), new.id);
        self.issued.insert(
            new.id,
            Issued {
                id: new.id,
                token: new.token,
                at: now,
                kind: new.kind,
                application_id: new.application_id,
                guild_id: new.guild_id,
                channel_id: new.channel_id,
                message_id: new.message_id,
                user: new.user,
                response: None,
                original: Original::default(),
            },
        );
    }

    pub(crate) fn callbacks(&self) -> &[InteractionCallback] {
        &self.callbacks
    }

    pub(crate) fn push(&mut self, entry: InteractionCallback) {
        self.callbacks.push(entry);
    }

    /// The `interactions` part of the REST stats.
    pub(crate) fn stats_json(&self) -> Value {
        let c = self.counts;
        json!({
            "issued": { "gateway": c.issued_gateway, "http": c.issued_http },
            "answered": { "callback": c.answered_callback, "endpoint": c.answered_endpoint },
            "unanswered": { "endpoint": c.unanswered_endpoint },
            "edits": c.edits,
        })
    }

    /// Checks a callback of type `response` against the registry and acknowledges the
    /// interaction; returns the response time and the interaction's type.
    fn accept(
        &mut self,
        id: u64,
        token: &str,
        response: u64,
        data: &Value,
        now: Instant,
    ) -> Result<(Option<Duration>, u8), ApiError> {
        if !self.strict {
            return Ok((None, interaction_kind::APPLICATION_COMMAND));
        }
        let issued = self
            .issued
            .get_mut(&id)
            .filter(|i| i.token == token)
            .ok_or_else(ApiError::unknown_interaction)?;
        if issued.response.is_some() {
            return Err(ApiError::already_acknowledged());
        }
        let elapsed = now.saturating_duration_since(issued.at);
        if elapsed > INITIAL_RESPONSE_DEADLINE {
            return Err(ApiError::unknown_interaction());
        }
        let allowed = allowed_responses(issued.kind);
        if !allowed.contains(&response) {
            return Err(FormErrors::single(
                &["type"],
                "BASE_TYPE_CHOICES",
                &format!("Value must be one of {}.", choices(allowed)),
            ));
        }
        issued.acknowledge(response, data);
        self.counts.answered_callback += 1;
        Ok((Some(elapsed), issued.kind))
    }

    /// Acknowledges interaction `id` with its endpoint's answer (type `response`, already
    /// checked); `false` when something else acknowledged it first.
    pub(crate) fn acknowledge_endpoint(&mut self, id: u64, response: u64, data: &Value) -> bool {
        let Some(issued) = self.issued.get_mut(&id) else {
            return false;
        };
        if issued.response.is_some() {
            return false;
        }
        issued.acknowledge(response, data);
        self.counts.answered_endpoint += 1;
        true
    }

    /// Counts an endpoint delivery that got no valid answer.
    pub(crate) fn endpoint_missed(&mut self) {
        self.counts.unanswered_endpoint += 1;
    }

    /// The acknowledged interaction whose token is `token`, for its original response.
    fn find_original(
        &mut self,
        application_id: u64,
        token: &str,
        now: Instant,
    ) -> Result<&mut Issued, EditRefused> {
        let refused = |error, interaction| EditRefused { error, interaction };
        let issued = self
            .by_token
            .get(token)
            .and_then(|id| self.issued.get_mut(id))
            .filter(|i| i.application_id.is_none_or(|a| a == application_id))
            .ok_or_else(|| refused(ApiError::unknown_webhook(), None))?;
        let elapsed = now.saturating_duration_since(issued.at);
        let id = issued.id;
        if elapsed > TOKEN_LIFETIME {
            return Err(refused(
                ApiError::invalid_webhook_token(),
                Some((id, elapsed)),
            ));
        }
        match issued.response {
            // An autocomplete result creates no message.
            None | Some(8) => Err(refused(ApiError::unknown_message(), Some((id, elapsed)))),
            Some(_) => Ok(issued),
        }
    }

    /// The original response of the interaction whose token is `token`.
    pub(crate) fn original(
        &mut self,
        application_id: u64,
        token: &str,
        now: Instant,
    ) -> Result<OriginalMessage, EditRefused> {
        let issued = self.find_original(application_id, token, now)?;
        Ok(snapshot(issued))
    }

    /// Edits the original response with the fields given (`content`, `embeds`, `components`,
    /// `flags`); returns it and the interaction's id and age.
    pub(crate) fn edit_original(
        &mut self,
        application_id: u64,
        token: &str,
        content: Option<String>,
        embeds: Option<Vec<Value>>,
        components: Option<Vec<Value>>,
        now: Instant,
    ) -> Result<(OriginalMessage, Duration), EditRefused> {
        let issued = self.find_original(application_id, token, now)?;
        let elapsed = now.saturating_duration_since(issued.at);
        let original = &mut issued.original;
        if let Some(content) = content {
            original.content = content;
        }
        if let Some(embeds) = embeds {
            original.embeds = embeds;
        }
        if let Some(components) = components {
            original.components = components;
        }
        original.flags &= !LOADING;
        original.edited_ms = Some(now_ms());
        let message = snapshot(issued);
        self.counts.edits += 1;
        Ok((message, elapsed))
    }
}

fn snapshot(issued: &Issued) -> OriginalMessage {
    OriginalMessage {
        interaction_id: issued.id,
        interaction_kind: issued.kind,
        guild_id: issued.guild_id,
        channel_id: issued.channel_id,
        message_id: issued.message_id,
        user: issued.user.clone(),
        original: issued.original.clone(),
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
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
    let result = answer(&ctx, &raw_id, body.as_ref(), kind, &data, now);
    let (status, response_ms) = match &result {
        Ok((resp, elapsed)) => (resp.status().as_u16(), elapsed.map(millis)),
        Err(e) => (e.status().as_u16(), None),
    };
    ctx.state.rest.interactions().push(InteractionCallback {
        id: raw_id,
        kind,
        data,
        received_at_ms,
        response_ms,
        status,
        via: "callback",
    });
    result.map(|(resp, _)| resp)
}

fn answer(
    ctx: &Ctx,
    raw_id: &str,
    body: Option<&Value>,
    kind: Option<u64>,
    data: &Value,
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
            &format!("Value must be one of {}.", choices(CALLBACK_TYPES)),
        ));
    };
    let (elapsed, interaction_kind) = ctx.state.rest.interactions().accept(
        id,
        ctx.param("interaction_token"),
        kind,
        data,
        now,
    )?;
    let resp = if matches!(ctx.query("with_response"), Some("true" | "True" | "1")) {
        Json(json!({
            "interaction": {
                "id": id.to_string(),
                "type": interaction_kind,
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

/// The bot user of `application_id` as a message author, when a bot has that application.
fn author(state: &SimState, application_id: u64) -> Option<Value> {
    state.bots.iter().find_map(|b| {
        let world = b.world();
        (world.application_id == application_id)
            .then(|| serde_json::to_value(&world.bot_user).unwrap_or(Value::Null))
    })
}

/// `GET /webhooks/{application_id}/{interaction_token}/messages/@original`.
pub(crate) async fn get_original(ctx: Ctx) -> Result<Response, ApiError> {
    let application_id = ctx.snowflake("application_id")?;
    let author = author(&ctx.state, application_id).ok_or_else(ApiError::unknown_webhook)?;
    let message = ctx
        .state
        .rest
        .interactions()
        .original(
            application_id,
            ctx.param("interaction_token"),
            Instant::now(),
        )
        .map_err(|r| r.error)?;
    Ok(Json(message.to_json(author, application_id)).into_response())
}

/// `PATCH /webhooks/{application_id}/{interaction_token}/messages/@original`: JSON (or
/// multipart with `payload_json`), `content` ≤ 2000 characters, ≤ 10 `embeds`, `components`.
pub(crate) async fn edit_original(ctx: Ctx) -> Result<Response, ApiError> {
    let received_at_ms = now_ms();
    let now = Instant::now();
    let application_id = ctx.snowflake("application_id")?;
    let author = author(&ctx.state, application_id).ok_or_else(ApiError::unknown_webhook)?;
    let (body, _files) = read_body(&ctx).await?;
    let input = validate(&body)?;
    let content = match body.get("content") {
        Some(Value::Null) => Some(String::new()),
        _ => input.content,
    };
    let components = match body.get("components") {
        Some(Value::Array(list)) => Some(list.clone()),
        Some(Value::Null) => Some(Vec::new()),
        _ => None,
    };
    let result = ctx.state.rest.interactions().edit_original(
        application_id,
        ctx.param("interaction_token"),
        content,
        input.embeds,
        components,
        now,
    );
    let (interaction, status, answer) = match result {
        Ok((message, elapsed)) => (
            Some((message.interaction_id, elapsed)),
            StatusCode::OK,
            Ok(Json(message.to_json(author, application_id)).into_response()),
        ),
        Err(refused) => (
            refused.interaction,
            refused.error.status(),
            Err(refused.error),
        ),
    };
    if let Some((id, elapsed)) = interaction {
        ctx.state.rest.interactions().push(InteractionCallback {
            id: id.to_string(),
            kind: None,
            data: Value::Object(body),
            received_at_ms,
            response_ms: Some(millis(elapsed)),
            status: status.as_u16(),
            via: "edit_original",
        });
    }
    answer
}

/// `GET /_sim/rest/interactions`: every answer received, oldest first.
pub(crate) async fn list(State(state): State<Arc<SimState>>) -> Response {
    Json(state.rest.interaction_callbacks()).into_response()
}
