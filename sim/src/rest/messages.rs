//! Message and reaction routes: bodies in JSON or `multipart/form-data`, Discord's validation, the
//! stored messages, and the gateway events Discord sends back for what a bot did.
//!
//! The simulator stores only messages created through REST. Reactions to (and replies to) other
//! message ids — such as the messages of simulated users a bot saw on the gateway — are accepted
//! without a lookup; reading, editing or deleting them answers 10008 Unknown Message.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};
use shardyard_protocol::Intents;

use super::error::{ApiError, FormErrors};
use super::gate::Ctx;
use super::routes::{channel_guild, int_query, snowflake_query};
use crate::bot::{BotState, Dispatch};
use crate::model::{PartialMember, StoredMessage, User, channel_kind};
use crate::payload::{MessageDelete, MessageParts, MessagePayload};
use crate::session::Event;
use crate::snowflake::{now_ms, timestamp_ms};
use crate::world::World;

const MAX_CONTENT: usize = 2000;
const MAX_EMBEDS: usize = 10;
const MAX_NONCE: usize = 25;

/// A file part of a multipart body.
#[derive(Debug)]
pub(super) struct FilePart {
    index: u64,
    filename: String,
    size: usize,
    content_type: Option<String>,
}

fn form_error() -> ApiError {
    FormErrors::single(&[], "MULTIPART_INVALID", "Invalid multipart form body.")
}

pub(super) fn json_object(bytes: &[u8]) -> Result<Map<String, Value>, ApiError> {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(FormErrors::single(
            &[],
            "DICT_TYPE_CONVERT",
            "Only dictionaries may be used in a DictType",
        )),
        Err(_) => Err(ApiError::invalid_json()),
    }
}

/// The body as a JSON object, from JSON or from `multipart/form-data` (`payload_json` plus
/// `files[n]` parts; other text parts are taken as fields).
pub(super) async fn read_body(ctx: &Ctx) -> Result<(Map<String, Value>, Vec<FilePart>), ApiError> {
    let content_type = ctx
        .headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !content_type
        .to_ascii_lowercase()
        .starts_with("multipart/form-data")
    {
        if ctx.body.iter().all(u8::is_ascii_whitespace) {
            return Ok((Map::new(), Vec::new()));
        }
        return Ok((json_object(&ctx.body)?, Vec::new()));
    }
    let boundary = multer::parse_boundary(content_type).map_err(|_| form_error())?;
    let body: Bytes = ctx.body.clone();
    let stream = futures_util::stream::once(async move { Ok::<Bytes, std::io::Error>(body) });
    let mut multipart = multer::Multipart::new(stream, boundary);
    let mut payload = Map::new();
    let mut fields = Map::new();
    let mut files = Vec::new();
    while let Some(field) = multipart.next_field().await.map_err(|_| form_error())? {
        let name = field.name().unwrap_or_default().to_owned();
        let filename = field.file_name().map(str::to_owned);
        let content_type = field.content_type().map(ToString::to_string);
        let data = field.bytes().await.map_err(|_| form_error())?;
        if name == "payload_json" {
            payload = json_object(&data)?;
        } else if filename.is_some() || name.starts_with("files[") {
            let index = name
                .strip_prefix("files[")
                .and_then(|rest| rest.strip_suffix(']'))
                .and_then(|n| n.parse().ok())
                .unwrap_or(files.len() as u64);
            files.push(FilePart {
                index,
                filename: filename.unwrap_or_else(|| format!("file{index}")),
                size: data.len(),
                content_type,
            });
        } else {
            let text = String::from_utf8_lossy(&data).into_owned();
            fields.insert(name, Value::String(text));
        }
    }
    for (key, value) in fields {
        payload.entry(key).or_insert(value);
    }
    Ok((payload, files))
}

/// The validated parts of a message body.
#[derive(Debug, Default)]
pub(super) struct MessageInput {
    pub(super) content: Option<String>,
    pub(super) embeds: Option<Vec<Value>>,
    nonce: Option<String>,
    reference: Option<Map<String, Value>>,
    tts: bool,
    /// Components, stickers or a poll: a message without content or embeds is not empty then.
    other: bool,
}

fn max_length(errors: &mut FormErrors, path: &[&str], text: &str, max: usize) {
    if text.chars().count() > max {
        errors.add(
            path,
            "BASE_TYPE_MAX_LENGTH",
            &format!("Must be {max} or fewer in length."),
        );
    }
}

pub(super) fn validate(body: &Map<String, Value>) -> Result<MessageInput, ApiError> {
    let mut errors = FormErrors::default();
    let mut input = MessageInput::default();
    match body.get("content") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => {
            max_length(&mut errors, &["content"], s, MAX_CONTENT);
            input.content = Some(s.clone());
        }
        Some(Value::Number(n)) => input.content = Some(n.to_string()),
        Some(_) => errors.add(&["content"], "BASE_TYPE_STRING", "Must be a string."),
    }
    match body.get("embeds") {
        None | Some(Value::Null) => {}
        Some(Value::Array(embeds)) => {
            if embeds.len() > MAX_EMBEDS {
                errors.add(
                    &["embeds"],
                    "BASE_TYPE_MAX_LENGTH",
                    &format!("Must be {MAX_EMBEDS} or fewer in length."),
                );
            }
            for (i, embed) in embeds.iter().enumerate() {
                let i = i.to_string();
                let Some(embed) = embed.as_object() else {
                    errors.add(
                        &["embeds", &i],
                        "DICT_TYPE_CONVERT",
                        "Only dictionaries may be used in a DictType",
                    );
                    continue;
                };
                for (field, max) in [("title", 256), ("description", 4096)] {
                    if let Some(text) = embed.get(field).and_then(Value::as_str) {
                        max_length(&mut errors, &["embeds", &i, field], text, max);
                    }
                }
            }
            input.embeds = Some(embeds.clone());
        }
        Some(_) => errors.add(&["embeds"], "BASE_TYPE_LIST", "Must be an array."),
    }
    match body.get("nonce") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => {
            max_length(&mut errors, &["nonce"], s, MAX_NONCE);
            input.nonce = Some(s.clone());
        }
        Some(Value::Number(n)) => input.nonce = Some(n.to_string()),
        Some(_) => errors.add(
            &["nonce"],
            "BASE_TYPE_STRING",
            "Must be a string or an integer.",
        ),
    }
    match body.get("message_reference") {
        None | Some(Value::Null) => {}
        Some(Value::Object(reference)) => input.reference = Some(reference.clone()),
        Some(_) => errors.add(
            &["message_reference"],
            "DICT_TYPE_CONVERT",
            "Only dictionaries may be used in a DictType",
        ),
    }
    input.tts = body.get("tts").and_then(Value::as_bool).unwrap_or(false);
    input.other = ["components", "sticker_ids", "poll"]
        .iter()
        .any(|k| match body.get(*k) {
            Some(Value::Array(a)) => !a.is_empty(),
            Some(Value::Object(_)) => true,
            _ => false,
        });
    errors.into_result()?;
    Ok(input)
}

/// What a response or event carries beyond the stored message.
#[derive(Debug, Default)]
struct Extras {
    nonce: Option<String>,
    attachments: Vec<Value>,
    reference: Option<Value>,
    referenced: Option<Value>,
    tts: bool,
}

fn author(world: &World, guild: u64, id: u64) -> User {
    if id == world.bot_user.id {
        return world.bot_user.clone();
    }
    world
        .guilds
        .get(&guild)
        .and_then(|g| g.members.get(&id))
        .map_or_else(|| world.bot_user.clone(), |m| m.user.clone())
}

/// A stored message as Discord's message object: the REST shape, or with `gateway` the
/// MESSAGE_CREATE / MESSAGE_UPDATE shape (with `guild_id` and `member`).
fn message_json(
    world: &World,
    guild: u64,
    msg: &StoredMessage,
    gateway: bool,
    edited_ms: Option<u64>,
    extras: &Extras,
) -> Value {
    let author = author(world, guild, msg.author_id);
    let member = if gateway {
        world
            .guilds
            .get(&guild)
            .and_then(|g| g.members.get(&msg.author_id))
            .map(PartialMember::from)
    } else {
        None
    };
    let payload = MessagePayload::new(MessageParts {
        id: msg.id,
        channel_id: msg.channel_id,
        guild_id: gateway.then_some(guild),
        author: &author,
        member,
        content: &msg.content,
        embeds: &msg.embeds,
        edited_ms: edited_ms.or_else(|| msg.edited.then(|| timestamp_ms(msg.id))),
        nonce: extras.nonce.clone().map(crate::payload::Nonce::Text),
    });
    let mut value = serde_json::to_value(&payload).unwrap_or(Value::Null);
    if let Some(obj) = value.as_object_mut() {
        obj.insert(
            "attachments".into(),
            Value::Array(extras.attachments.clone()),
        );
        obj.insert("tts".into(), Value::Bool(extras.tts));
        if let Some(reference) = &extras.reference {
            obj.insert("type".into(), 19.into());
            obj.insert("message_reference".into(), reference.clone());
            obj.insert(
                "referenced_message".into(),
                extras.referenced.clone().unwrap_or(Value::Null),
            );
        }
    }
    value
}

fn stored(world: &World, channel: u64, id: u64) -> Option<&StoredMessage> {
    world.messages.get(&channel)?.iter().find(|m| m.id == id)
}

fn dispatch(bot: &BotState, guild: u64, intents: Intents, event: Arc<Event>) {
    bot.dispatch(&Dispatch {
        guild: Some(guild),
        intents,
        event,
        // Discord sends an app the content of its own messages even without MESSAGE_CONTENT.
        without_content: None,
    });
}

/// Checks the channel can hold messages; returns its guild.
fn text_channel(ctx: &Ctx, bot: &BotState, channel: u64) -> Result<u64, ApiError> {
    let guild = channel_guild(&ctx.state, bot, channel)?;
    let kind = bot.world().channel(channel).map(|c| c.kind);
    match kind {
        None => Err(ApiError::unknown_channel()),
        Some(channel_kind::CATEGORY) => Err(ApiError::non_text_channel()),
        Some(_) => Ok(guild),
    }
}

/// `POST /channels/{channel_id}/messages`.
pub(crate) async fn create_message(ctx: Ctx) -> Result<Response, ApiError> {
    let bot = ctx.bot()?.clone();
    let channel = ctx.snowflake("channel_id")?;
    let guild = text_channel(&ctx, &bot, channel)?;
    let (body, files) = read_body(&ctx).await?;
    let input = validate(&body)?;
    let content = input.content.unwrap_or_default();
    let embeds = input.embeds.unwrap_or_default();
    if content.is_empty() && embeds.is_empty() && files.is_empty() && !input.other {
        return Err(ApiError::empty_message());
    }
    let (response, event) = {
        let mut world = bot.world();
        if world.channel(channel).is_none() {
            return Err(ApiError::unknown_channel());
        }
        let id = world.ids.next();
        let attachments = files
            .iter()
            .map(|f| {
                let attachment_id = world.ids.next();
                json!({
                    "id": attachment_id.to_string(),
                    "filename": f.filename,
                    "size": f.size,
                    "url": format!("https://cdn.discordapp.com/attachments/{channel}/{attachment_id}/{}", f.filename),
                    "proxy_url": format!("https://media.discordapp.net/attachments/{channel}/{attachment_id}/{}", f.filename),
                    "content_type": f.content_type,
                    "index": f.index,
                })
            })
            .collect();
        let reference = input.reference.map(|mut r| {
            r.entry("channel_id")
                .or_insert_with(|| channel.to_string().into());
            r.entry("guild_id")
                .or_insert_with(|| guild.to_string().into());
            r.insert("type".into(), 0.into());
            r
        });
        let referenced = reference
            .as_ref()
            .and_then(|r| r.get("message_id"))
            .and_then(|v| match v {
                Value::String(s) => s.parse::<u64>().ok(),
                Value::Number(n) => n.as_u64(),
                _ => None,
            })
            .and_then(|m| stored(&world, channel, m))
            .map(|m| message_json(&world, guild, m, false, None, &Extras::default()));
        let msg = StoredMessage {
            id,
            channel_id: channel,
            author_id: world.bot_user.id,
            content,
            edited: false,
            embeds,
            created_at_ms: timestamp_ms(id),
        };
        let extras = Extras {
            nonce: input.nonce,
            attachments,
            reference: reference.map(Value::Object),
            referenced,
            tts: input.tts,
        };
        let response = message_json(&world, guild, &msg, false, None, &extras);
        let event = message_json(&world, guild, &msg, true, None, &extras);
        if let Some(c) = world
            .guilds
            .get_mut(&guild)
            .and_then(|g| g.channels.get_mut(&channel))
        {
            c.last_message_id = Some(id);
        }
        world.messages.entry(channel).or_default().push(msg);
        (response, Event::json("MESSAGE_CREATE", &event))
    };
    dispatch(&bot, guild, Intents::GUILD_MESSAGES, event);
    Ok(Json(response).into_response())
}

/// `GET /channels/{channel_id}/messages`: newest first; `limit` 1–100 (50), `before`, `after`,
/// `around`.
pub(crate) async fn list_messages(ctx: Ctx) -> Result<Response, ApiError> {
    let bot = ctx.bot()?;
    let channel = ctx.snowflake("channel_id")?;
    let guild = channel_guild(&ctx.state, bot, channel)?;
    let limit = usize::try_from(int_query(&ctx, "limit", 50, 1, 100)?).unwrap_or(100);
    let before = snowflake_query(&ctx, "before")?;
    let after = snowflake_query(&ctx, "after")?;
    let around = snowflake_query(&ctx, "around")?;
    let world = bot.world();
    let all: &[StoredMessage] = world.messages.get(&channel).map_or(&[], Vec::as_slice);
    let page: &[StoredMessage] = if let Some(around) = around {
        let pos = all.partition_point(|m| m.id < around);
        let start = pos.saturating_sub(limit / 2);
        &all[start..(start + limit).min(all.len())]
    } else if let Some(before) = before {
        let end = all.partition_point(|m| m.id < before);
        &all[end.saturating_sub(limit)..end]
    } else if let Some(after) = after {
        let start = all.partition_point(|m| m.id <= after);
        &all[start..(start + limit).min(all.len())]
    } else {
        &all[all.len().saturating_sub(limit)..]
    };
    let rest = &ctx.state.rest;
    let messages: Vec<Value> = page
        .iter()
        .rev()
        .map(|m| {
            let edited = rest.edited_at(m.id);
            message_json(&world, guild, m, false, edited, &Extras::default())
        })
        .collect();
    Ok(Json(messages).into_response())
}

/// `GET /channels/{channel_id}/messages/{message_id}`.
pub(crate) async fn get_message(ctx: Ctx) -> Result<Response, ApiError> {
    let bot = ctx.bot()?;
    let channel = ctx.snowflake("channel_id")?;
    let id = ctx.snowflake("message_id")?;
    let guild = channel_guild(&ctx.state, bot, channel)?;
    let world = bot.world();
    let msg = stored(&world, channel, id).ok_or_else(ApiError::unknown_message)?;
    let edited = ctx.state.rest.edited_at(id);
    Ok(Json(message_json(
        &world,
        guild,
        msg,
        false,
        edited,
        &Extras::default(),
    ))
    .into_response())
}

/// `PATCH /channels/{channel_id}/messages/{message_id}`: only the bot's own messages.
pub(crate) async fn edit_message(ctx: Ctx) -> Result<Response, ApiError> {
    let bot = ctx.bot()?.clone();
    let channel = ctx.snowflake("channel_id")?;
    let id = ctx.snowflake("message_id")?;
    let guild = channel_guild(&ctx.state, &bot, channel)?;
    let (body, files) = read_body(&ctx).await?;
    let input = validate(&body)?;
    let edited_ms = now_ms();
    let (response, event) = {
        let mut world = bot.world();
        let bot_id = world.bot_user.id;
        let msg = world
            .messages
            .get_mut(&channel)
            .and_then(|list| list.iter_mut().find(|m| m.id == id))
            .ok_or_else(ApiError::unknown_message)?;
        if msg.author_id != bot_id {
            return Err(ApiError::not_author());
        }
        let content = input.content.unwrap_or_else(|| msg.content.clone());
        let embeds = input.embeds.unwrap_or_else(|| msg.embeds.clone());
        let content_given = body.contains_key("content");
        let content = if content_given && body.get("content") == Some(&Value::Null) {
            String::new()
        } else {
            content
        };
        if content.is_empty() && embeds.is_empty() && files.is_empty() && !input.other {
            return Err(ApiError::empty_message());
        }
        msg.content = content;
        msg.embeds = embeds;
        msg.edited = true;
        let msg = msg.clone();
        ctx.state.rest.set_edited(id, edited_ms);
        let extras = Extras::default();
        (
            message_json(&world, guild, &msg, false, Some(edited_ms), &extras),
            Event::json(
                "MESSAGE_UPDATE",
                &message_json(&world, guild, &msg, true, Some(edited_ms), &extras),
            ),
        )
    };
    dispatch(&bot, guild, Intents::GUILD_MESSAGES, event);
    Ok(Json(response).into_response())
}

/// `DELETE /channels/{channel_id}/messages/{message_id}`: 204. The bot's role lacks
/// MANAGE_MESSAGES, so other authors' messages answer 403 50013.
pub(crate) async fn delete_message(ctx: Ctx) -> Result<Response, ApiError> {
    let bot = ctx.bot()?.clone();
    let channel = ctx.snowflake("channel_id")?;
    let id = ctx.snowflake("message_id")?;
    let guild = channel_guild(&ctx.state, &bot, channel)?;
    {
        let mut world = bot.world();
        let bot_id = world.bot_user.id;
        let list = world
            .messages
            .get_mut(&channel)
            .ok_or_else(ApiError::unknown_message)?;
        let pos = list
            .iter()
            .position(|m| m.id == id)
            .ok_or_else(ApiError::unknown_message)?;
        if list[pos].author_id != bot_id {
            return Err(ApiError::missing_permissions());
        }
        list.remove(pos);
    }
    ctx.state.rest.forget_edit(id);
    let event = Event::json(
        "MESSAGE_DELETE",
        &MessageDelete {
            id,
            channel_id: channel,
            guild_id: guild,
        },
    );
    dispatch(&bot, guild, Intents::GUILD_MESSAGES, event);
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// The emoji of a reaction route: a unicode emoji, or `name:id` of a custom emoji the bot can
/// see.
fn parse_emoji(world: &World, raw: &str) -> Result<Value, ApiError> {
    if let Some((name, id)) = raw.rsplit_once(':') {
        let name = name.trim_start_matches("a:");
        let id: u64 = id.parse().map_err(|_| ApiError::unknown_emoji())?;
        let emoji = world
            .guilds
            .values()
            .flat_map(|g| g.emojis.iter())
            .find(|e| e.id == id)
            .ok_or_else(ApiError::unknown_emoji)?;
        return Ok(json!({ "id": id.to_string(), "name": name, "animated": emoji.animated }));
    }
    if raw.is_empty() || raw.is_ascii() {
        return Err(ApiError::unknown_emoji());
    }
    Ok(json!({ "id": null, "name": raw }))
}

async fn reaction(ctx: Ctx, add: bool) -> Result<Response, ApiError> {
    let bot = ctx.bot()?.clone();
    let channel = ctx.snowflake("channel_id")?;
    let message = ctx.snowflake("message_id")?;
    let guild = channel_guild(&ctx.state, &bot, channel)?;
    let event = {
        let world = bot.world();
        let emoji = parse_emoji(&world, ctx.param("emoji"))?;
        let bot_id = world.bot_user.id;
        let mut data = json!({
            "user_id": bot_id.to_string(),
            "type": 0,
            "message_id": message.to_string(),
            "emoji": emoji,
            "channel_id": channel.to_string(),
            "burst": false,
            "guild_id": guild.to_string(),
        });
        if add && let Some(obj) = data.as_object_mut() {
            if let Some(member) = world
                .guilds
                .get(&guild)
                .and_then(|g| g.members.get(&bot_id))
            {
                obj.insert(
                    "member".into(),
                    serde_json::to_value(member).unwrap_or(Value::Null),
                );
            }
            if let Some(author) = stored(&world, channel, message).map(|m| m.author_id) {
                obj.insert("message_author_id".into(), author.to_string().into());
            }
        }
        let kind = if add {
            "MESSAGE_REACTION_ADD"
        } else {
            "MESSAGE_REACTION_REMOVE"
        };
        Event::json(kind, &data)
    };
    dispatch(&bot, guild, Intents::GUILD_MESSAGE_REACTIONS, event);
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `PUT /channels/{channel_id}/messages/{message_id}/reactions/{emoji}/@me`.
pub(crate) async fn add_reaction(ctx: Ctx) -> Result<Response, ApiError> {
    reaction(ctx, true).await
}

/// `DELETE /channels/{channel_id}/messages/{message_id}/reactions/{emoji}/@me`.
pub(crate) async fn remove_reaction(ctx: Ctx) -> Result<Response, ApiError> {
    reaction(ctx, false).await
}
