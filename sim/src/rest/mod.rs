//! The simulated REST API: routes, rate limits, invalid-request accounting, injected faults.
//!
//! [`router`] is served under `/api/v10`, [`control_router`] under `/_sim/rest`, and
//! [`channel_messages`] at `/_sim/channels/{id}/messages`.
//!
//! # Routes
//!
//! Every route needs `Authorization: Bot <token>` (the `Bot ` prefix is required; anything else
//! answers 401 `{"message": "401: Unauthorized", "code": 0}`) except `GET /gateway`, the
//! interaction callback and the interaction webhook (`/webhooks/{application_id}/{token}/…`,
//! where the token in the path authenticates). A channel or guild of another configured bot's world answers 403 50001
//! Missing Access; one nobody has answers 404 (10003 Unknown Channel, 10004 Unknown Guild).
//! Path ids that are not snowflakes answer 400 50035. Unknown paths answer 404
//! `{"message": "404: Not Found", "code": 0}`, known paths with another method 405.
//!
//! | route | answer |
//! |---|---|
//! | `GET /gateway` | `{"url"}` |
//! | `GET /gateway/bot` | `{"url", "shards", "session_start_limit"}` |
//! | `GET /users/@me` | the bot user |
//! | `GET /users/@me/guilds` | partial guilds; `limit` 1–200 (200), `before`, `after`, `with_counts` |
//! | `GET /channels/{channel_id}` | the channel |
//! | `GET /channels/{channel_id}/messages` | stored messages, newest first; `limit` 1–100 (50), `before`, `after`, `around` |
//! | `POST /channels/{channel_id}/messages` | the message; JSON or multipart (`payload_json` + `files[n]`); dispatches MESSAGE_CREATE |
//! | `GET /channels/{channel_id}/messages/{message_id}` | the message, or 10008 |
//! | `PATCH /channels/{channel_id}/messages/{message_id}` | the edited message; dispatches MESSAGE_UPDATE |
//! | `DELETE /channels/{channel_id}/messages/{message_id}` | 204; dispatches MESSAGE_DELETE |
//! | `PUT /channels/{channel_id}/messages/{message_id}/reactions/{emoji}/@me` | 204; dispatches MESSAGE_REACTION_ADD |
//! | `DELETE /channels/{channel_id}/messages/{message_id}/reactions/{emoji}/@me` | 204; dispatches MESSAGE_REACTION_REMOVE |
//! | `GET /guilds/{guild_id}` | the guild; `with_counts` adds approximate counts |
//! | `GET /guilds/{guild_id}/channels` | its channels (no threads) |
//! | `GET /guilds/{guild_id}/members` | members by user id; `limit` 1–1000 (1), `after`; 403 50001 without the GUILD_MEMBERS privileged intent |
//! | `GET /guilds/{guild_id}/members/{user_id}` | the member, or 10007 |
//! | `GET /guilds/{guild_id}/roles` | its roles |
//! | `GET /applications/@me`, `GET /oauth2/applications/@me` | the token's application object (`verify_key`: the hex of the app's Ed25519 public key, stable per application; `interactions_endpoint_url`; `flags` from the approved privileged intents; `bot`, `owner`, `approximate_guild_count`) |
//! | `PATCH /applications/@me` | `interactions_endpoint_url` (string; `null` or `""` clears; other fields ignored): the URL is checked as Discord checks it (a signed PING answered 200 `{"type": 1}`, a badly signed one answered 401, 3 s each) before it is saved, else 400 50035 `APPLICATION_INTERACTIONS_ENDPOINT_URL_INVALID` (`URL_TYPE_INVALID_URL` / `URL_TYPE_INVALID_SCHEME` when not an http(s) URL); the application object |
//! | `GET /applications/{application_id}/commands` | the global commands; `with_localizations` |
//! | `PUT /applications/{application_id}/commands` | bulk overwrite: the new list, ids kept per type and name |
//! | `GET /applications/{application_id}/guilds/{guild_id}/commands` | the guild's commands |
//! | `PUT /applications/{application_id}/guilds/{guild_id}/commands` | bulk overwrite of the guild's commands |
//! | `POST /interactions/{interaction_id}/{interaction_token}/callback` | 204, or 200 with `with_response=true`; a type the interaction's type does not allow: 400 50035 `type` |
//! | `PATCH /webhooks/{application_id}/{interaction_token}/messages/@original` | the edited original response (`content`, `embeds`, `components`; `webhook_id` = the application); 404 10015 unknown token, 404 10008 not acknowledged yet, 401 50027 after 15 minutes |
//! | `GET /webhooks/{application_id}/{interaction_token}/messages/@original` | the original response, same errors |
//!
//! Message bodies: `content` ≤ 2000 characters, ≤ 10 `embeds`, `nonce` ≤ 25 characters, else 400
//! 50035 with an `errors` object; no content, embeds, files, components, stickers or poll: 400
//! 50006; unparsable JSON: 400 50109. Bodies over 25 MiB answer 413 40005. Only messages created
//! through REST are stored; reactions and replies to other ids are accepted as they are. See
//! `interactions.rs` for how interaction ids and tokens are checked, `endpoint.rs` for the
//! interactions endpoint (how the simulator signs, checks a URL and delivers to it), `applications.rs` and
//! `commands.rs` for application commands (another application's id: 403 20012; Discord's
//! naming, length, uniqueness and count rules, answered 50035 or 30032).
//!
//! # Rate limits
//!
//! Buckets are fixed windows that start at the first request, counted per (token, bucket hash,
//! top-level resource): two channels never share a counter even where routes share a hash.
//! Every response of a bucketed route carries `X-RateLimit-Limit`, `-Remaining`, `-Reset` (unix
//! seconds, 3 decimals), `-Reset-After` (seconds, 3 decimals) and `-Bucket` (32 hex digits,
//! stable per group), plus `X-RateLimit-Scope: user` as Discord sends it (twilight learns buckets
//! only from answers that carry it).
//!
//! | bucket group | routes | limit | per |
//! |---|---|---|---|
//! | `gateway_bot` | `GET /gateway/bot` | 5 / 5 s | token |
//! | `current_user` | `GET /users/@me` | 5 / 1 s | token |
//! | `current_user_guilds` | `GET /users/@me/guilds` | 1 / 1 s | token |
//! | `channel` | `GET /channels/{c}` | 5 / 1 s | channel |
//! | `messages_read` | `GET /channels/{c}/messages`, `GET /channels/{c}/messages/{m}` | 5 / 1 s | channel |
//! | `message_create` | `POST /channels/{c}/messages` | 5 / 5 s | channel |
//! | `message_modify` | `PATCH` and `DELETE /channels/{c}/messages/{m}` | 5 / 5 s | channel |
//! | `reactions` | `PUT` and `DELETE …/reactions/{emoji}/@me` | 1 / 0.25 s | channel |
//! | `guild` | `GET /guilds/{g}`, `GET /guilds/{g}/channels` | 5 / 1 s | guild |
//! | `guild_roles` | `GET /guilds/{g}/roles` | 5 / 1 s | guild |
//! | `members_list` | `GET /guilds/{g}/members` | 10 / 10 s | guild |
//! | `member` | `GET /guilds/{g}/members/{u}` | 5 / 1 s | guild |
//! | `current_application` | `GET /applications/@me` | 5 / 1 s | token |
//! | `oauth2_application` | `GET /oauth2/applications/@me` | 5 / 1 s | token |
//! | `commands_read` | `GET …/commands` (global; guild) | 5 / 1 s | token; guild |
//! | `commands_overwrite` | `PUT …/commands` (global; guild) | 5 / 20 s | token; guild |
//! | `current_application_edit` | `PATCH /applications/@me` | 5 / 5 s | token |
//! | `interaction_webhook` | `GET` and `PATCH /webhooks/{a}/{token}/messages/@original` | 5 / 2 s | interaction token (whoever asks) |
//! | — | `GET /gateway`, interaction callbacks | not limited | |
//!
//! Global: `global_rate_limit` (50) requests per token per sliding second: a request is refused
//! when that many were admitted in the preceding 1000 ms (0 disables it). Interaction callbacks,
//! interaction webhooks and unauthenticated requests don't count. A refused request answers 429 with
//! `X-RateLimit-Global: true` and `X-RateLimit-Scope: global`; one over a bucket answers 429 with
//! the bucket headers and `X-RateLimit-Scope: user`. The body is
//! `{"message": "You are being rate limited.", "retry_after": <seconds>, "global": <bool>, "code": 0}`
//! and `Retry-After` holds whole seconds, rounded up. A refused request uses up nothing. Each
//! natural 429 is a violation (`bucket_limit` or `global_limit`).
//!
//! Invalid requests: 401, 403 and 429 answers (except `X-RateLimit-Scope: shared` 429s) count per
//! client IP over a sliding 10 minutes. The request that takes an IP past
//! `invalid_request_limit` gets its normal answer and bans the IP for `ban_secs` (violation
//! `cloudflare_ban`, once per ban): every request from it then gets a Cloudflare-style 429 with
//! an HTML body (error code 1015), `Retry-After` and no rate-limit headers. When the ban ends the
//! IP's count starts afresh.
//!
//! # Faults (`/_sim/rest`)
//!
//! - `POST /_sim/rest/faults` with any combination of `{"clear": true}` (applied first),
//!   `{"latency_ms": N}` (delay before answering every `/api` request; 0 clears),
//!   `{"status": 500|502|503|504, "count": N, "route": "/channels"}` (the next N requests whose
//!   path starts with `route`, relative to `/api/v10`, get that status with a JSON body; `count`
//!   defaults to 1, no `route` matches everything) and
//!   `{"rate_limit": {"scope": "user"|"global"|"shared", "retry_after": 1.5, "count": N, "route": "/channels"}}`
//!   (the next N matching requests get a 429 of that scope; they count as invalid requests
//!   unless shared, but are not violations). Answers the resulting fault state; 400
//!   `{"error"}` for a bad request (nothing changes then).
//! - `GET /_sim/rest/faults`: `{"latency_ms", "status": [{"status", "remaining", "route"}],
//!   "rate_limit": [{"scope", "retry_after", "remaining", "route"}]}`.
//! - `GET /_sim/rest/interactions`: every interaction answer received, oldest first:
//!   `[{"id", "type", "data", "received_at_ms", "response_ms", "status", "via"}]`, `via` being
//!   `callback`, `endpoint` (an interactions endpoint's HTTP answer; `status` is what it
//!   answered, 0 for none within 3 s) or `edit_original`.
//!
//! Injected faults are checked after authentication and before the limits, so they use up no
//! bucket; injected latency applies before everything else.
//!
//! # Stats
//!
//! [`RestState::stats_json`]: `{"requests", "requests_by_bucket": {"<hash>:<resource id|none>": n},
//! "requests_by_route": {"GET /channels/{channel_id}": n}, "responses_by_status": {"200": n},
//! "rate_limited": {"user", "global", "shared"}, "cloudflare_banned", "injected": {"status",
//! "rate_limit"}, "invalid_requests", "banned_ips": [..], "max_requests_in_any_second",
//! "max_requests_in_any_second_by_bot": {"<bot>": n}, "interaction_callbacks" (the length of
//! `GET /_sim/rest/interactions`), "interactions": {"issued": {"gateway", "http"}, "answered":
//! {"callback", "endpoint"}, "unanswered": {"endpoint"}, "edits"}}`.
//! `max_requests_in_any_second` counts every authenticated request toward the global limit
//! (admitted or not) within any sliding second, the highest of any token.

mod applications;
mod commands;
mod counters;
mod endpoint;
mod error;
mod faults;
mod gate;
mod interactions;
mod invalid;
mod messages;
mod ratelimit;
mod routes;
mod table;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::{Path, Query, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;
use tokio::time::Instant;

use self::counters::Counters;
pub(crate) use self::endpoint::{Delivery, deliver};
use self::faults::{FaultRequest, Faults};
use self::gate::gated;
pub use self::interactions::InteractionCallback;
use self::interactions::Interactions;
pub(crate) use self::interactions::NewInteraction;
use self::invalid::InvalidRequests;
use self::ratelimit::RateLimiter;
use self::table::{
    ADD_REACTION, CREATE_MESSAGE, DELETE_MESSAGE, EDIT_CURRENT_APPLICATION, EDIT_MESSAGE,
    EDIT_ORIGINAL_RESPONSE, GET_CHANNEL, GET_CURRENT_APPLICATION, GET_CURRENT_USER,
    GET_CURRENT_USER_GUILDS, GET_GATEWAY, GET_GATEWAY_BOT, GET_GLOBAL_COMMANDS, GET_GUILD,
    GET_GUILD_CHANNELS, GET_GUILD_COMMANDS, GET_GUILD_ROLES, GET_MEMBER, GET_MESSAGE,
    GET_OAUTH2_APPLICATION, GET_ORIGINAL_RESPONSE, INTERACTION_CALLBACK, LIST_MEMBERS,
    LIST_MESSAGES, NOT_FOUND, REMOVE_REACTION, SET_GLOBAL_COMMANDS, SET_GUILD_COMMANDS,
};
use crate::config::SimConfig;
use crate::model::StoredMessage;
use crate::state::SimState;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// REST-side state.
#[derive(Debug)]
pub struct RestState {
    limiter: Mutex<RateLimiter>,
    invalid: Mutex<InvalidRequests>,
    faults: Mutex<Faults>,
    counters: Mutex<Counters>,
    interactions: Mutex<Interactions>,
    /// Verified interactions endpoint URLs, by application id.
    endpoint_urls: Mutex<HashMap<u64, String>>,
    /// The HTTP client for interactions endpoints, built on first use.
    endpoint_client: OnceLock<Result<reqwest::Client, String>>,
    /// When messages were last edited, unix ms, by message id.
    edits: Mutex<HashMap<u64, u64>>,
    bot_names: Vec<String>,
}

impl RestState {
    /// State for `config`.
    #[must_use]
    pub fn new(config: &SimConfig) -> Self {
        Self {
            limiter: Mutex::default(),
            invalid: Mutex::new(InvalidRequests::new(
                config.invalid_request_limit,
                Duration::from_secs(config.ban_secs),
            )),
            faults: Mutex::default(),
            counters: Mutex::default(),
            interactions: Mutex::default(),
            endpoint_urls: Mutex::default(),
            endpoint_client: OnceLock::new(),
            edits: Mutex::default(),
            bot_names: config.bots.iter().map(|b| b.name.clone()).collect(),
        }
    }

    /// Registers an interaction the simulator issued (dispatched as INTERACTION_CREATE) with
    /// its token. Once any interaction is registered, callbacks are checked against the
    /// registry: unknown ids or tokens and responses later than 3 s answer 404 10062, a second
    /// response 400 40060.
    /// Registered this way an interaction is an APPLICATION_COMMAND of any application.
    pub fn register_interaction(&self, id: u64, token: &str) {
        self.register(
            NewInteraction {
                id,
                token: token.to_owned(),
                kind: interactions::interaction_kind::APPLICATION_COMMAND,
                application_id: None,
                guild_id: None,
                channel_id: 0,
                message_id: id,
                user: serde_json::Value::Null,
                over_http: false,
            },
            Instant::now(),
        );
    }

    /// Registers an interaction `/_sim/interactions` issued at `now`.
    pub(crate) fn register(&self, new: NewInteraction, now: Instant) {
        lock(&self.interactions).register(new, now);
    }

    /// The verified interactions endpoint URL of `application_id`, if it has one.
    #[must_use]
    pub fn endpoint_url(&self, application_id: u64) -> Option<String> {
        lock(&self.endpoint_urls).get(&application_id).cloned()
    }

    fn set_endpoint_url(&self, application_id: u64, url: Option<String>) {
        let mut urls = lock(&self.endpoint_urls);
        match url {
            Some(url) => urls.insert(application_id, url),
            None => urls.remove(&application_id),
        };
    }

    /// The HTTP client for interactions endpoints.
    fn endpoint_client(&self) -> Result<reqwest::Client, String> {
        self.endpoint_client
            .get_or_init(endpoint::build_client)
            .clone()
    }

    /// Every interaction answer received (callbacks, endpoint answers, edits of the original
    /// response), oldest first.
    #[must_use]
    pub fn interaction_callbacks(&self) -> Vec<InteractionCallback> {
        lock(&self.interactions).callbacks().to_vec()
    }

    /// The REST part of `/_sim/stats`.
    #[must_use]
    pub fn stats_json(&self) -> serde_json::Value {
        let now = Instant::now();
        let (invalid_requests, banned_ips) = {
            let mut invalid = self.invalid();
            let count = invalid.count(now);
            let banned: Vec<String> = invalid
                .banned(now)
                .iter()
                .map(ToString::to_string)
                .collect();
            (count, banned)
        };
        let by_bot: serde_json::Map<String, serde_json::Value> = {
            let limiter = self.limiter();
            self.bot_names
                .iter()
                .enumerate()
                .map(|(i, name)| (name.clone(), limiter.max_in_any_second(i).into()))
                .collect()
        };
        let max = by_bot
            .values()
            .filter_map(serde_json::Value::as_u64)
            .max()
            .unwrap_or(0);
        let (callbacks, interactions) = {
            let interactions = self.interactions();
            (interactions.callbacks().len(), interactions.stats_json())
        };
        let c = self.counters();
        let by_status: serde_json::Map<String, serde_json::Value> = c
            .by_status
            .iter()
            .map(|(status, n)| (status.to_string(), (*n).into()))
            .collect();
        json!({
            "requests": c.requests,
            "requests_by_bucket": c.by_bucket,
            "requests_by_route": c.by_route,
            "responses_by_status": by_status,
            "rate_limited": { "user": c.user, "global": c.global, "shared": c.shared },
            "cloudflare_banned": c.cloudflare_banned,
            "injected": { "status": c.injected_status, "rate_limit": c.injected_rate_limit },
            "invalid_requests": invalid_requests,
            "banned_ips": banned_ips,
            "max_requests_in_any_second": max,
            "max_requests_in_any_second_by_bot": by_bot,
            "interaction_callbacks": callbacks,
            "interactions": interactions,
        })
    }

    fn limiter(&self) -> MutexGuard<'_, RateLimiter> {
        lock(&self.limiter)
    }

    fn invalid(&self) -> MutexGuard<'_, InvalidRequests> {
        lock(&self.invalid)
    }

    fn faults(&self) -> MutexGuard<'_, Faults> {
        lock(&self.faults)
    }

    fn counters(&self) -> MutexGuard<'_, Counters> {
        lock(&self.counters)
    }

    fn interactions(&self) -> MutexGuard<'_, Interactions> {
        lock(&self.interactions)
    }

    fn update_faults(&self, req: FaultRequest) -> Result<Faults, String> {
        let mut faults = self.faults();
        faults.apply(req)?;
        Ok(faults.clone())
    }

    fn edited_at(&self, message: u64) -> Option<u64> {
        lock(&self.edits).get(&message).copied()
    }

    fn set_edited(&self, message: u64, unix_ms: u64) {
        lock(&self.edits).insert(message, unix_ms);
    }

    fn forget_edit(&self, message: u64) {
        lock(&self.edits).remove(&message);
    }
}

/// Runs a route's handler behind the gate (see [`gate::gated`]).
macro_rules! gate {
    ($spec:expr, $handler:path) => {
        |State(state): State<Arc<SimState>>, req: Request| gated(state, req, &$spec, $handler)
    };
}

/// Routes under `/api/v10`.
pub fn router() -> Router<Arc<SimState>> {
    Router::new()
        .route("/gateway", get(gate!(GET_GATEWAY, routes::gateway)))
        .route(
            "/gateway/bot",
            get(gate!(GET_GATEWAY_BOT, routes::gateway_bot)),
        )
        .route(
            "/users/@me",
            get(gate!(GET_CURRENT_USER, routes::current_user)),
        )
        .route(
            "/users/@me/guilds",
            get(gate!(GET_CURRENT_USER_GUILDS, routes::current_user_guilds)),
        )
        .route(
            "/channels/{channel_id}",
            get(gate!(GET_CHANNEL, routes::get_channel)),
        )
        .route(
            "/channels/{channel_id}/messages",
            get(gate!(LIST_MESSAGES, messages::list_messages))
                .post(gate!(CREATE_MESSAGE, messages::create_message)),
        )
        .route(
            "/channels/{channel_id}/messages/{message_id}",
            get(gate!(GET_MESSAGE, messages::get_message))
                .patch(gate!(EDIT_MESSAGE, messages::edit_message))
                .delete(gate!(DELETE_MESSAGE, messages::delete_message)),
        )
        .route(
            "/channels/{channel_id}/messages/{message_id}/reactions/{emoji}/@me",
            axum::routing::put(gate!(ADD_REACTION, messages::add_reaction))
                .delete(gate!(REMOVE_REACTION, messages::remove_reaction)),
        )
        .route(
            "/guilds/{guild_id}",
            get(gate!(GET_GUILD, routes::get_guild)),
        )
        .route(
            "/guilds/{guild_id}/channels",
            get(gate!(GET_GUILD_CHANNELS, routes::get_guild_channels)),
        )
        .route(
            "/guilds/{guild_id}/members",
            get(gate!(LIST_MEMBERS, routes::list_members)),
        )
        .route(
            "/guilds/{guild_id}/members/{user_id}",
            get(gate!(GET_MEMBER, routes::get_member)),
        )
        .route(
            "/guilds/{guild_id}/roles",
            get(gate!(GET_GUILD_ROLES, routes::get_guild_roles)),
        )
        .route(
            "/applications/@me",
            get(gate!(
                GET_CURRENT_APPLICATION,
                applications::current_application
            ))
            .patch(gate!(
                EDIT_CURRENT_APPLICATION,
                applications::edit_current_application
            )),
        )
        .route(
            "/oauth2/applications/@me",
            get(gate!(
                GET_OAUTH2_APPLICATION,
                applications::current_application
            )),
        )
        .route(
            "/applications/{application_id}/commands",
            get(gate!(
                GET_GLOBAL_COMMANDS,
                applications::get_global_commands
            ))
            .put(gate!(
                SET_GLOBAL_COMMANDS,
                applications::set_global_commands
            )),
        )
        .route(
            "/applications/{application_id}/guilds/{guild_id}/commands",
            get(gate!(GET_GUILD_COMMANDS, applications::get_guild_commands))
                .put(gate!(SET_GUILD_COMMANDS, applications::set_guild_commands)),
        )
        .route(
            "/interactions/{interaction_id}/{interaction_token}/callback",
            axum::routing::post(gate!(INTERACTION_CALLBACK, interactions::callback)),
        )
        .route(
            "/webhooks/{application_id}/{interaction_token}/messages/@original",
            get(gate!(GET_ORIGINAL_RESPONSE, interactions::get_original))
                .patch(gate!(EDIT_ORIGINAL_RESPONSE, interactions::edit_original)),
        )
        .fallback(gate!(NOT_FOUND, routes::not_found))
        .method_not_allowed_fallback(gate!(NOT_FOUND, routes::method_not_allowed))
}

/// Fault-injection routes under `/_sim/rest`.
pub fn control_router() -> Router<Arc<SimState>> {
    Router::new()
        .route("/faults", get(faults::get_faults).post(faults::post_faults))
        .route("/interactions", get(interactions::list))
}

/// `GET /_sim/channels/{id}/messages[?bot=NAME]`: the messages bots created in channel `id`
/// through REST, oldest first, as `[{"id", "channel_id", "author_id", "content", "edited",
/// "embeds", "created_at_ms"}]`. Without `bot`, the bot whose world has the channel. An unknown
/// channel has no messages (`[]`); an unknown bot answers 404.
pub async fn channel_messages(
    State(state): State<Arc<SimState>>,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let Ok(channel) = id.parse::<u64>() else {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({ "error": format!("{id:?} is not a channel id") })),
        )
            .into_response();
    };
    let bot = match query.get("bot") {
        Some(name) => match state.bot_by_name(Some(name)) {
            Some(bot) => Some(bot),
            None => {
                return (
                    StatusCode::NOT_FOUND,
                    Json(json!({ "error": format!("no bot named {name:?}") })),
                )
                    .into_response();
            }
        },
        None => state.bots.iter().find(|b| {
            let world = b.world();
            world.messages.contains_key(&channel) || world.channel_guild.contains_key(&channel)
        }),
    };
    let messages: Vec<StoredMessage> = bot
        .and_then(|b| b.world().messages.get(&channel).cloned())
        .unwrap_or_default();
    Json(messages).into_response()
}
