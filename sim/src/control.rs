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
    name: String,
    options: Option<Value>,
    channel_id: Option<String>,
    guild_id: Option<String>,
    user_id: Option<String>,
    bot: Option<String>,
}

/// A user runs a slash command: INTERACTION_CREATE on the owning shard, with a token the
/// simulator registers so the callback is checked (known token, once, within 3 s).
async fn interact(State(state): State<Arc<SimState>>, Json(body): Json<Interact>) -> Answer {
    let bot = find_bot(&state, body.bot.as_deref())?;
    let channel = parse_id(body.channel_id.as_deref(), "channel_id")?;
    let guild = parse_id(body.guild_id.as_deref(), "guild_id")?;
    let user = parse_id(body.user_id.as_deref(), "user_id")?;
    let (dispatch, id, token, channel) = {
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
        // The command the user ran: its registered id when the bot registered one by that name
        // (the guild's own first, then the global one), else a fresh id.
        let command_id = world
            .commands
            .find(
                Some(guild_id),
                crate::commands::command_kind::CHAT_INPUT,
                &body.name,
            )
            .map_or_else(|| world.ids.next(), |c| c.id);
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
        let payload = crate::payload::InteractionCreate {
            id,
            application_id,
            kind: 2,
            data: crate::payload::CommandData {
                id: command_id,
                name: &body.name,
                kind: 1,
                options: body.options.as_ref(),
            },
            guild_id,
            channel: crate::payload::PartialChannel {
                id: channel.id,
                kind: channel.kind,
                name: &channel.name,
                guild_id,
                permissions: "2248473465835073",
            },
            channel_id: channel.id,
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
        let dispatch = Dispatch {
            guild: Some(guild_id),
            intents: Intents::EMPTY,
            event: Event::json("INTERACTION_CREATE", &payload),
            without_content: None,
        };
        (dispatch, id, token, channel.id)
    };
    state.rest.register_interaction(id, &token);
    let sessions = bot.dispatch(&dispatch);
    Ok(Json(json!({
        "id": id.to_string(),
        "token": token,
        "channel_id": channel.to_string(),
        "guild_id": dispatch.guild.map(|g| g.to_string()),
        "sessions": sessions,
    })))
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
