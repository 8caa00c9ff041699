//! `/_sim/`: ground truth and fault injection for tests, load runs and people. These routes are
//! an interface outside tools script against: extend them, never rename them.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use shardyard_protocol::Intents;

use crate::bot::{BotState, Dispatch};
use crate::session::{ConnControl, Event};
use crate::state::SimState;
use crate::traffic;

/// Every `/_sim/` route except `/_sim/rest/…`.
pub fn router() -> Router<Arc<SimState>> {
    Router::new()
        .route("/stats", get(stats))
        .route("/traffic", post(set_traffic))
        .route("/say", post(say))
        .route("/interactions", post(interact))
        .route("/commands", get(commands))
        .route("/guilds", post(set_guild_count))
        .route("/guilds/{id}", get(guild))
        .route("/sessions", get(sessions))
        .route("/sessions/{id}/events", get(session_events))
        .route("/shards/{id}/{action}", post(shard_fault))
}

#[derive(Debug, Deserialize, Default)]
struct BotQuery {
    bot: Option<String>,
}

/// A control call that cannot be done: its status and a JSON `{"error": …}` body.
#[derive(Debug)]
struct ControlError(StatusCode, String);

impl IntoResponse for ControlError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

fn error(status: StatusCode, message: impl Into<String>) -> ControlError {
    ControlError(status, message.into())
}

type Answer = Result<Json<Value>, ControlError>;

fn find_bot<'a>(
    state: &'a SimState,
    name: Option<&str>,
) -> Result<&'a Arc<BotState>, ControlError> {
    state.bot_by_name(name).ok_or_else(|| {
        error(
            StatusCode::NOT_FOUND,
            format!("no bot named {:?}", name.unwrap_or("")),
        )
    })
}

fn parse_id(raw: Option<&str>, what: &str) -> Result<Option<u64>, ControlError> {
    raw.map(|s| {
        s.parse::<u64>().map_err(|_| {
            error(
                StatusCode::BAD_REQUEST,
                format!("{what} must be a snowflake string"),
            )
        })
    })
    .transpose()
}

async fn stats(State(state): State<Arc<SimState>>) -> Answer {
    let mut shards = Vec::new();
    let mut bots = Vec::new();
    for bot in &state.bots {
        for shard in bot.all_shard_stats() {
            let mut entry = serde_json::to_value(shard.snapshot()).unwrap_or_default();
            if let Some(map) = entry.as_object_mut() {
                map.insert("bot".into(), json!(shard.bot));
                map.insert("id".into(), json!(shard.id));
                map.insert("total".into(), json!(shard.total));
            }
            shards.push(entry);
        }
        let guilds = bot.world().guilds.len();
        bots.push(json!({
            "name": bot.config.name,
            "application_id": bot.config.application_id.to_string(),
            "guilds": guilds,
            "recommended_shards": bot.recommended_shards(),
            "session_start_limit": bot.session_start_limit(),
            "identify_timestamps": bot.identify_timestamps(),
            "events_per_second": *bot.traffic.borrow(),
            "live_sessions": bot.sessions().len(),
        }));
    }
    Ok(Json(json!({
        "shards": shards,
        "bots": bots,
        "rest": state.rest.stats_json(),
        "violations": state.violations.all(),
    })))
}

#[derive(Deserialize)]
struct Traffic {
    events_per_second: f64,
    bot: Option<String>,
}

async fn set_traffic(State(state): State<Arc<SimState>>, Json(body): Json<Traffic>) -> Answer {
    if !body.events_per_second.is_finite() || body.events_per_second < 0.0 {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "events_per_second must be a number ≥ 0",
        ));
    }
    let bot = find_bot(&state, body.bot.as_deref())?;
    bot.traffic.send_replace(body.events_per_second);
    Ok(Json(
        json!({ "bot": bot.config.name, "events_per_second": body.events_per_second }),
    ))
}

#[derive(Deserialize)]
struct Say {
    content: String,
    channel_id: Option<String>,
    guild_id: Option<String>,
    author_id: Option<String>,
    bot: Option<String>,
}

async fn say(State(state): State<Arc<SimState>>, Json(body): Json<Say>) -> Answer {
    let bot = find_bot(&state, body.bot.as_deref())?;
    let channel = parse_id(body.channel_id.as_deref(), "channel_id")?;
    let guild = parse_id(body.guild_id.as_deref(), "guild_id")?;
    let author = parse_id(body.author_id.as_deref(), "author_id")?;
    let strip = bot.needs_content_stripped();
    let made = {
        let mut world = bot.world();
        let channel = match channel {
            Some(channel) => channel,
            None => {
                let guild = match guild {
                    Some(guild) => world.guilds.get(&guild),
                    None => world.guild_ids().first().and_then(|g| world.guilds.get(g)),
                };
                match guild.and_then(|g| g.text_channels().next()) {
                    Some(channel) => channel.id,
                    None => {
                        return Err(error(
                            StatusCode::NOT_FOUND,
                            "no such guild, or it has no text channel",
                        ));
                    }
                }
            }
        };
        if world
            .channel(channel)
            .is_none_or(|c| c.kind != crate::model::channel_kind::TEXT)
        {
            return Err(error(
                StatusCode::NOT_FOUND,
                format!("no text channel {channel}"),
            ));
        }
        traffic::user_message(&mut world, channel, &body.content, author, strip)
            .map(|(dispatch, id)| (dispatch, id, channel))
    };
    let Some((dispatch, message_id, channel)) = made else {
        return Err(error(
            StatusCode::NOT_FOUND,
            "no member to post as (author_id not in the guild?)",
        ));
    };
    let sessions = bot.dispatch(&dispatch);
    Ok(Json(json!({
        "channel_id": channel.to_string(),
        "guild_id": dispatch.guild.map(|g| g.to_string()),
        "message_id": message_id.to_string(),
        "sessions": sessions,
    })))
}

#[derive(Deserialize)]
struct Interact {
    /// The command's name (APPLICATION_COMMAND and autocomplete).
    name: Option<String>,
    /// The interaction type: 2 (default), 3, 4 or 5.
    #[serde(rename = "type")]
    kind: Option<u8>,
    /// The component's or modal's `custom_id`.
    custom_id: Option<String>,
    options: Option<Value>,
    channel_id: Option<String>,
    guild_id: Option<String>,
    user_id: Option<String>,
    bot: Option<String>,
}

/// Interaction types `/_sim/interactions` issues.
const APPLICATION_COMMAND: u8 = 2;
const MESSAGE_COMPONENT: u8 = 3;
const AUTOCOMPLETE: u8 = 4;
const MODAL_SUBMIT: u8 = 5;

/// The options of an autocomplete interaction: the caller's, with the first leaf option (inside
/// subcommands) marked `focused` unless one already is.
fn focused(options: &Value) -> Value {
    fn has_focus(options: &Value) -> bool {
        options.as_array().is_some_and(|list| {
            list.iter()
                .any(|o| o.get("focused") == Some(&Value::Bool(true)) || has_focus(&o["options"]))
        })
    }
    fn focus_first(options: &mut Value) {
        let Some(first) = options.as_array_mut().and_then(|l| l.first_mut()) else {
            return;
        };
        if first
            .get("options")
            .and_then(Value::as_array)
            .is_some_and(|l| !l.is_empty())
        {
            if let Some(inner) = first.get_mut("options") {
                focus_first(inner);
            }
        } else if let Some(obj) = first.as_object_mut() {
            obj.insert("focused".into(), Value::Bool(true));
        }
    }
    let mut options = options.clone();
    if !has_focus(&options) {
        focus_first(&mut options);
    }
    options
}

/// The message a component is attached to: the newest message the bot created in the channel
/// through REST, or one made up (with a fresh id) when there is none.
fn component_message(world: &crate::world::World, channel: u64) -> Value {
    let bot = &world.bot_user;
    let stored = world
        .messages
        .get(&channel)
        .and_then(|list| list.iter().rev().find(|m| m.author_id == bot.id));
    let (id, content) = match stored {
        Some(m) => (m.id, m.content.clone()),
        None => (world.ids.next(), String::new()),
    };
    json!({
        "id": id.to_string(),
        "type": 0,
        "channel_id": channel.to_string(),
        "author": bot,
        "content": content,
        "embeds": [],
        "attachments": [],
        "mentions": [],
        "mention_roles": [],
        "mention_everyone": false,
        "pinned": false,
        "tts": false,
        "timestamp": crate::snowflake::iso8601(crate::snowflake::timestamp_ms(id)),
        "edited_timestamp": null,
        "flags": 0,
        "components": [],
    })
}

/// A user starts an interaction: a slash command (`type` 2, the default), a button click (3),
/// an autocomplete request (4) or a modal submitted (5), with a token the simulator registers
/// so the answer is checked (known token, once, within 3 s, a type the interaction allows).
/// Without an interactions endpoint URL it is INTERACTION_CREATE on the owning shard; with one
/// (as on Discord) it is POSTed, signed, to the URL instead, and this answers at once.
async fn interact(State(state): State<Arc<SimState>>, Json(body): Json<Interact>) -> Answer {
    let bot = find_bot(&state, body.bot.as_deref())?;
    let channel = parse_id(body.channel_id.as_deref(), "channel_id")?;
    let guild = parse_id(body.guild_id.as_deref(), "guild_id")?;
    let user = parse_id(body.user_id.as_deref(), "user_id")?;
    let kind = body.kind.unwrap_or(APPLICATION_COMMAND);
    if !(APPLICATION_COMMAND..=MODAL_SUBMIT).contains(&kind) {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "type must be 2 (APPLICATION_COMMAND), 3 (MESSAGE_COMPONENT), 4 \
             (APPLICATION_COMMAND_AUTOCOMPLETE) or 5 (MODAL_SUBMIT)",
        ));
    }
    let command = matches!(kind, APPLICATION_COMMAND | AUTOCOMPLETE);
    let name = match (&body.name, command) {
        (Some(name), _) => name.as_str(),
        (None, false) => "",
        (None, true) => {
            return Err(error(
                StatusCode::BAD_REQUEST,
                "name is required for a command or autocomplete",
            ));
        }
    };
    let custom_id = body.custom_id.as_deref().unwrap_or(match kind {
        MODAL_SUBMIT => "modal",
        _ => "button",
    });
    let options = match (&body.options, kind) {
        (Some(options), AUTOCOMPLETE) => Some(focused(options)),
        (options, _) => options.clone(),
    };
    let issued_at = tokio::time::Instant::now();
    let (bytes, id, token, channel, guild_id, new) = {
        let world = bot.world();
        let guild_id = match (channel, guild) {
            (Some(channel), _) => *world
                .channel_guild
                .get(&channel)
                .ok_or_else(|| error(StatusCode::NOT_FOUND, format!("no channel {channel}")))?,
            (None, Some(guild)) => guild,
            (None, None) => *world
                .guild_ids()
                .first()
                .ok_or_else(|| error(StatusCode::NOT_FOUND, "the bot has no guild"))?,
        };
        let id = world.ids.next();
        let token = format!("aW50ZXJhY3Rpb24{:032x}", rand::random::<u128>());
        let application_id = world.application_id;
        let bot_id = world.bot_user.id;
        let g = world
            .guilds
            .get(&guild_id)
            .ok_or_else(|| error(StatusCode::NOT_FOUND, format!("no guild {guild_id}")))?;
        let channel = match channel {
            Some(c) => g.channels.get(&c),
            None => g.text_channels().next(),
        }
        .ok_or_else(|| error(StatusCode::NOT_FOUND, "no text channel"))?;
        let member = match user {
            Some(u) => g.members.get(&u),
            None => g.members.values().find(|m| m.user.id != bot_id),
        }
        .ok_or_else(|| error(StatusCode::NOT_FOUND, "no member to run the command"))?;
        let data = if command {
            // The command the user ran: its registered id when the bot registered one by that
            // name (the guild's own first, then the global one), else a fresh id.
            let command_id = world
                .commands
                .find(
                    Some(guild_id),
                    crate::commands::command_kind::CHAT_INPUT,
                    name,
                )
                .map_or_else(|| world.ids.next(), |c| c.id);
            crate::payload::InteractionData::Command(crate::payload::CommandData {
                id: command_id,
                name,
                kind: 1,
                options: options.as_ref(),
            })
        } else if kind == MESSAGE_COMPONENT {
            crate::payload::InteractionData::Component(crate::payload::ComponentData {
                custom_id,
                component_type: 2,
            })
        } else {
            crate::payload::InteractionData::ModalSubmit(crate::payload::ModalSubmitData {
                custom_id,
                components: [],
            })
        };
        let message = (kind == MESSAGE_COMPONENT).then(|| component_message(&world, channel.id));
        let payload = crate::payload::InteractionCreate {
            id,
            application_id,
            kind,
            data,
            guild_id,
            channel: crate::payload::PartialChannel {
                id: channel.id,
                kind: channel.kind,
                name: &channel.name,
                guild_id,
                permissions: "2248473465835073",
            },
            channel_id: channel.id,
            message,
            member: crate::payload::InteractionMember {
                member,
                permissions: "2248473465835073",
            },
            token: &token,
            version: 1,
            app_permissions: "2248473465835073",
            locale: "en-US",
            guild_locale: "en-US",
            entitlements: [],
            authorizing_integration_owners: [("0", guild_id.to_string())].into_iter().collect(),
            context: 0,
            attachment_size_limit: 10_485_760,
        };
        let bytes = serde_json::to_vec(&payload).map_err(|e| {
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot serialize the interaction: {e}"),
            )
        })?;
        let new = crate::rest::NewInteraction {
            id,
            token: token.clone(),
            kind,
            application_id: Some(application_id),
            guild_id: Some(guild_id),
            channel_id: channel.id,
            message_id: world.ids.next(),
            user: serde_json::to_value(&member.user).unwrap_or(Value::Null),
            over_http: false,
        };
        (bytes, id, token, channel.id, guild_id, new)
    };
    let application_id = new.application_id.unwrap_or_default();
    let endpoint = state.rest.endpoint_url(application_id);
    let over_http = endpoint.is_some();
    state
        .rest
        .register(crate::rest::NewInteraction { over_http, ..new }, issued_at);
    let mut answer = json!({
        "id": id.to_string(),
        "token": token,
        "channel_id": channel.to_string(),
        "guild_id": guild_id.to_string(),
        "type": kind,
    });
    match endpoint {
        Some(url) => {
            tokio::spawn(crate::rest::deliver(
                state.clone(),
                crate::rest::Delivery {
                    bot: bot.config.name.clone(),
                    application_id,
                    interaction_id: id,
                    kind,
                    url,
                    body: bytes,
                    issued_at,
                },
            ));
            answer["via"] = "http".into();
        }
        None => {
            let dispatch = Dispatch {
                guild: Some(guild_id),
                intents: Intents::EMPTY,
                event: Event::new("INTERACTION_CREATE", bytes),
                without_content: None,
            };
            answer["sessions"] = bot.dispatch(&dispatch).into();
            answer["via"] = "gateway".into();
        }
    }
    Ok(Json(answer))
}

/// `GET /_sim/commands[?bot=NAME]`: the application commands the bot registered through REST,
/// as Discord stores them: `{"bot", "application_id", "overwrites", "global": [...], "guilds":
/// {"<guild id>": [...]}}` (`overwrites` counts successful bulk overwrites, global and guild).
async fn commands(State(state): State<Arc<SimState>>, Query(query): Query<BotQuery>) -> Answer {
    let bot = find_bot(&state, query.bot.as_deref())?;
    let world = bot.world();
    let registry = &world.commands;
    let global: Vec<Value> = registry.global().iter().map(|c| c.to_json(true)).collect();
    let guilds: serde_json::Map<String, Value> = registry
        .guilds()
        .map(|(id, list)| {
            let list: Vec<Value> = list.iter().map(|c| c.to_json(true)).collect();
            (id.to_string(), Value::Array(list))
        })
        .collect();
    Ok(Json(json!({
        "bot": bot.config.name,
        "application_id": world.application_id.to_string(),
        "overwrites": registry.overwrites(),
        "global": global,
        "guilds": guilds,
    })))
}

#[derive(Deserialize)]
struct GuildCount {
    count: u32,
    bot: Option<String>,
}

async fn set_guild_count(
    State(state): State<Arc<SimState>>,
    Json(body): Json<GuildCount>,
) -> Answer {
    let bot = find_bot(&state, body.bot.as_deref())?;
    let mut dispatches = Vec::new();
    {
        let mut world = bot.world();
        let target = body.count as usize;
        while world.guilds.len() < target {
            let id = world.add_guild(bot.config.members_per_guild);
            let bot_id = world.bot_user.id;
            if let Some(guild) = world.guilds.get(&id) {
                let event = Event::json("GUILD_CREATE", &guild.create_payload(50, bot_id));
                dispatches.push(Dispatch {
                    guild: Some(id),
                    intents: Intents::GUILDS,
                    event,
                    without_content: None,
                });
            }
        }
        while world.guilds.len() > target {
            let Some(&id) = world.guild_ids().last() else {
                break;
            };
            world.remove_guild(id);
            dispatches.push(traffic::guild_removed(id));
        }
    }
    for dispatch in &dispatches {
        bot.dispatch(dispatch);
    }
    Ok(Json(
        json!({ "bot": bot.config.name, "guilds": body.count, "recommended_shards": bot.recommended_shards() }),
    ))
}

async fn guild(
    State(state): State<Arc<SimState>>,
    Path(id): Path<String>,
    Query(query): Query<BotQuery>,
) -> Answer {
    let bot = find_bot(&state, query.bot.as_deref())?;
    let Ok(id) = id.parse::<u64>() else {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "guild id must be a snowflake",
        ));
    };
    let world = bot.world();
    let Some(guild) = world.guilds.get(&id) else {
        return Err(error(StatusCode::NOT_FOUND, format!("no guild {id}")));
    };
    // The whole truth, every member included, in the GUILD_CREATE shape.
    let body = serde_json::to_value(guild.create_payload(usize::MAX, world.bot_user.id))
        .unwrap_or_default();
    Ok(Json(body))
}

async fn sessions(State(state): State<Arc<SimState>>, Query(query): Query<BotQuery>) -> Answer {
    let bot = find_bot(&state, query.bot.as_deref())?;
    let window = state.resume_window();
    let list: Vec<Value> = bot
        .sessions()
        .iter()
        .filter(|s| s.is_alive(window))
        .map(|s| {
            let log = s.log();
            let link = s.link();
            json!({
                "session_id": s.id,
                "shard": s.shard,
                "total": s.total,
                "intents": s.intents.bits(),
                "connected": link.conn.is_some(),
                "first_seq": log.first_seq,
                "last_seq": log.last_seq(),
                "max_sent": log.max_sent,
            })
        })
        .collect();
    Ok(Json(json!(list)))
}

#[derive(Deserialize)]
struct EventsQuery {
    bot: Option<String>,
    from: Option<u64>,
    limit: Option<usize>,
}

async fn session_events(
    State(state): State<Arc<SimState>>,
    Path(id): Path<String>,
    Query(query): Query<EventsQuery>,
) -> Answer {
    let bot = find_bot(&state, query.bot.as_deref())?;
    let Some(session) = bot.session(&id) else {
        return Err(error(StatusCode::NOT_FOUND, "no such live session"));
    };
    let log = session.log();
    let from = query.from.unwrap_or(1);
    let events: Vec<Value> = log
        .after(from.saturating_sub(1), query.limit.unwrap_or(10_000))
        .filter(|(seq, _)| *seq <= log.max_sent)
        .map(|(seq, e)| json!({ "seq": seq, "t": e.kind, "digest": e.digest.to_string(), "len": e.data.len() }))
        .collect();
    Ok(Json(
        json!({ "session_id": session.id, "shard": session.shard, "total": session.total, "first_seq": log.first_seq, "events": events }),
    ))
}

#[derive(Deserialize, Default)]
struct FaultBody {
    code: Option<u16>,
    reason: Option<String>,
    resumable: Option<bool>,
    enabled: Option<bool>,
}

async fn shard_fault(
    State(state): State<Arc<SimState>>,
    Path((id, action)): Path<(u32, String)>,
    Query(query): Query<BotQuery>,
    body: Option<Json<FaultBody>>,
) -> Answer {
    let bot = find_bot(&state, query.bot.as_deref())?;
    let body = body.map(|Json(b)| b).unwrap_or_default();
    let control = match action.as_str() {
        "drop" => ConnControl::Drop,
        "close" => ConnControl::Close(
            body.code.unwrap_or(4000),
            body.reason
                .unwrap_or_else(|| "closed by the simulator".into()),
        ),
        "reconnect" => ConnControl::Reconnect,
        "invalidate" => ConnControl::InvalidateSession(body.resumable.unwrap_or(false)),
        "heartbeat-acks" => ConnControl::AckHeartbeats(body.enabled.unwrap_or(true)),
        "request-heartbeat" => ConnControl::RequestHeartbeat,
        "corrupt" => ConnControl::CorruptNextFrame,
        other => {
            return Err(error(
                StatusCode::NOT_FOUND,
                format!("unknown shard action {other:?}"),
            ));
        }
    };
    let reached = bot
        .sessions_of_shard(id)
        .iter()
        .filter(|s| s.control(control.clone()))
        .count();
    if reached == 0 {
        return Err(error(
            StatusCode::NOT_FOUND,
            format!(
                "shard {id} of bot {:?} has no connected session",
                bot.config.name
            ),
        ));
    }
    Ok(Json(
        json!({ "shard": id, "action": action, "connections": reached }),
    ))
}
