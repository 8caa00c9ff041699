//! Handlers of the gateway, user, channel and guild routes, and the lookups every handler shares.

use axum::Json;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Value, json};
use shardyard_protocol::Intents;

use super::error::{ApiError, FormErrors};
use super::gate::{Ctx, parse_snowflake};
use crate::bot::BotState;
use crate::model::{Channel, Member};
use crate::state::SimState;
use crate::world::{GuildObject, GuildState, World};

/// Whether a bot other than `bot` knows something (`f` says what): a resource of another bot's
/// world answers 403 Missing Access rather than 404.
fn other_bots_have(state: &SimState, bot: &BotState, f: impl Fn(&World) -> bool) -> bool {
    state
        .bots
        .iter()
        .filter(|b| !std::ptr::eq(b.as_ref(), bot))
        .any(|b| f(&b.world()))
}

/// The guild of `channel` in the bot's world; 403 50001 when it belongs to another bot's world,
/// 404 10003 when nobody has it.
pub(crate) fn channel_guild(
    state: &SimState,
    bot: &BotState,
    channel: u64,
) -> Result<u64, ApiError> {
    let found = bot.world().channel_guild.get(&channel).copied();
    match found {
        Some(guild) => Ok(guild),
        None if other_bots_have(state, bot, |w| w.channel_guild.contains_key(&channel)) => {
            Err(ApiError::missing_access())
        }
        None => Err(ApiError::unknown_channel()),
    }
}

/// Checks `guild` is in the bot's world; 403 50001 when it is another bot's, 404 10004 otherwise.
pub(crate) fn guild_access(state: &SimState, bot: &BotState, guild: u64) -> Result<(), ApiError> {
    if bot.world().guilds.contains_key(&guild) {
        Ok(())
    } else if other_bots_have(state, bot, |w| w.guilds.contains_key(&guild)) {
        Err(ApiError::missing_access())
    } else {
        Err(ApiError::unknown_guild())
    }
}

/// An integer query parameter within `min..=max`, `default` when absent; 50035 otherwise.
pub(crate) fn int_query(
    ctx: &Ctx,
    name: &str,
    default: u64,
    min: u64,
    max: u64,
) -> Result<u64, ApiError> {
    let Some(raw) = ctx.query(name) else {
        return Ok(default);
    };
    let Ok(value) = raw.parse::<i64>() else {
        return Err(FormErrors::single(
            &[name],
            "NUMBER_TYPE_COERCE",
            &format!("Value \"{raw}\" is not int."),
        ));
    };
    if value < 0 || u64::try_from(value).is_ok_and(|v| v < min) {
        return Err(FormErrors::single(
            &[name],
            "NUMBER_TYPE_MIN",
            &format!("int value should be greater than or equal to {min}."),
        ));
    }
    let value = u64::try_from(value).unwrap_or(0);
    if value > max {
        return Err(FormErrors::single(
            &[name],
            "NUMBER_TYPE_MAX",
            &format!("int value should be less than or equal to {max}."),
        ));
    }
    Ok(value)
}

/// An optional snowflake query parameter.
pub(crate) fn snowflake_query(ctx: &Ctx, name: &str) -> Result<Option<u64>, ApiError> {
    ctx.query(name)
        .map(|raw| parse_snowflake(name, raw))
        .transpose()
}

fn flag_query(ctx: &Ctx, name: &str) -> bool {
    matches!(ctx.query(name), Some("true" | "True" | "1"))
}

fn json(value: impl Serialize) -> Result<Response, ApiError> {
    Ok(Json(value).into_response())
}

/// `GET /gateway`.
pub(crate) async fn gateway(ctx: Ctx) -> Result<Response, ApiError> {
    json(json!({ "url": ctx.state.gateway_url() }))
}

/// `GET /gateway/bot`.
pub(crate) async fn gateway_bot(ctx: Ctx) -> Result<Response, ApiError> {
    let bot = ctx.bot()?;
    json(json!({
        "url": ctx.state.gateway_url(),
        "shards": bot.recommended_shards(),
        "session_start_limit": bot.session_start_limit(),
    }))
}

/// `GET /users/@me`.
pub(crate) async fn current_user(ctx: Ctx) -> Result<Response, ApiError> {
    let bot = ctx.bot()?;
    let world = bot.world();
    let user = &world.bot_user;
    json(json!({
        "id": user.id.to_string(),
        "username": user.username,
        "global_name": user.global_name,
        "discriminator": user.discriminator,
        "avatar": user.avatar,
        "avatar_decoration_data": null,
        "banner": null,
        "banner_color": null,
        "accent_color": null,
        "bot": true,
        "public_flags": user.public_flags,
        "flags": user.public_flags,
        "mfa_enabled": false,
        "verified": true,
        "email": null,
        "locale": "en-US",
        "premium_type": 0,
        "clan": null,
        "primary_guild": null,
    }))
}

/// The permissions the bot has in `guild`, as Discord computes them at the guild level.
fn permissions(guild: &GuildState, bot_id: u64) -> u64 {
    const ALL: u64 = (1 << 53) - 1;
    if guild.owner_id == bot_id {
        return ALL;
    }
    let role_bits = |id: &u64| {
        guild
            .roles
            .get(id)
            .and_then(|r| r.permissions.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let mut bits = role_bits(&guild.id);
    if let Some(member) = guild.members.get(&bot_id) {
        for role in &member.roles {
            bits |= role_bits(role);
        }
    }
    if bits & 0x8 != 0 { ALL } else { bits }
}

/// `GET /users/@me/guilds`.
pub(crate) async fn current_user_guilds(ctx: Ctx) -> Result<Response, ApiError> {
    let bot = ctx.bot()?;
    let limit = int_query(&ctx, "limit", 200, 1, 200)?;
    let before = snowflake_query(&ctx, "before")?;
    let after = snowflake_query(&ctx, "after")?;
    let with_counts = flag_query(&ctx, "with_counts");
    let limit = usize::try_from(limit).unwrap_or(200);
    let world = bot.world();
    let bot_id = world.bot_user.id;
    let partial = |g: &GuildState| {
        let mut v = json!({
            "id": g.id.to_string(),
            "name": g.name,
            "icon": null,
            "banner": null,
            "owner": g.owner_id == bot_id,
            "permissions": permissions(g, bot_id).to_string(),
            "features": [],
        });
        if with_counts && let Some(obj) = v.as_object_mut() {
            obj.insert("approximate_member_count".into(), g.members.len().into());
            obj.insert(
                "approximate_presence_count".into(),
                (g.members.len() / 2).into(),
            );
        }
        v
    };
    let guilds: Vec<Value> = if let Some(before) = before {
        let older: Vec<&GuildState> = world.guilds.range(..before).map(|(_, g)| g).collect();
        older[older.len().saturating_sub(limit)..]
            .iter()
            .map(|g| partial(g))
            .collect()
    } else {
        let start = after.map_or(0, |a| a.saturating_add(1));
        world
            .guilds
            .range(start..)
            .take(limit)
            .map(|(_, g)| partial(g))
            .collect()
    };
    json(guilds)
}

/// `GET /channels/{channel_id}`.
pub(crate) async fn get_channel(ctx: Ctx) -> Result<Response, ApiError> {
    let bot = ctx.bot()?;
    let id = ctx.snowflake("channel_id")?;
    channel_guild(&ctx.state, bot, id)?;
    let channel: Option<Channel> = bot.world().channel(id).cloned();
    match channel {
        Some(channel) => json(channel),
        None => Err(ApiError::unknown_channel()),
    }
}

/// The guild object with the counts `with_counts=true` adds.
#[derive(Serialize)]
struct GuildWithCounts<'a> {
    #[serde(flatten)]
    guild: GuildObject<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    approximate_presence_count: Option<usize>,
}

/// `GET /guilds/{guild_id}`.
pub(crate) async fn get_guild(ctx: Ctx) -> Result<Response, ApiError> {
    let bot = ctx.bot()?;
    let id = ctx.snowflake("guild_id")?;
    guild_access(&ctx.state, bot, id)?;
    let with_counts = flag_query(&ctx, "with_counts");
    let world = bot.world();
    let guild = world.guilds.get(&id).ok_or_else(ApiError::unknown_guild)?;
    json(GuildWithCounts {
        guild: guild.object(with_counts),
        approximate_presence_count: with_counts.then_some(guild.members.len() / 2),
    })
}

/// `GET /guilds/{guild_id}/channels` (threads are not included, as on Discord).
pub(crate) async fn get_guild_channels(ctx: Ctx) -> Result<Response, ApiError> {
    let bot = ctx.bot()?;
    let id = ctx.snowflake("guild_id")?;
    guild_access(&ctx.state, bot, id)?;
    let world = bot.world();
    let guild = world.guilds.get(&id).ok_or_else(ApiError::unknown_guild)?;
    let channels: Vec<&Channel> = guild
        .channels
        .values()
        .filter(|c| c.thread_metadata.is_none())
        .collect();
    json(channels)
}

/// `GET /guilds/{guild_id}/roles`.
pub(crate) async fn get_guild_roles(ctx: Ctx) -> Result<Response, ApiError> {
    let bot = ctx.bot()?;
    let id = ctx.snowflake("guild_id")?;
    guild_access(&ctx.state, bot, id)?;
    let world = bot.world();
    let guild = world.guilds.get(&id).ok_or_else(ApiError::unknown_guild)?;
    json(guild.roles.values().collect::<Vec<_>>())
}

/// `GET /guilds/{guild_id}/members`: needs the GUILD_MEMBERS privileged intent to be approved
/// for the application (403 50001 otherwise, as on Discord).
pub(crate) async fn list_members(ctx: Ctx) -> Result<Response, ApiError> {
    let bot = ctx.bot()?;
    let id = ctx.snowflake("guild_id")?;
    guild_access(&ctx.state, bot, id)?;
    if !bot
        .config
        .privileged_intents
        .contains(Intents::GUILD_MEMBERS)
    {
        return Err(ApiError::missing_access());
    }
    let limit = int_query(&ctx, "limit", 1, 1, 1000)?;
    let after = snowflake_query(&ctx, "after")?.unwrap_or(0);
    let world = bot.world();
    let guild = world.guilds.get(&id).ok_or_else(ApiError::unknown_guild)?;
    let members: Vec<&Member> = guild
        .members
        .range(after.saturating_add(1)..)
        .take(usize::try_from(limit).unwrap_or(1000))
        .map(|(_, m)| m)
        .collect();
    json(members)
}

/// `GET /guilds/{guild_id}/members/{user_id}`.
pub(crate) async fn get_member(ctx: Ctx) -> Result<Response, ApiError> {
    let bot = ctx.bot()?;
    let id = ctx.snowflake("guild_id")?;
    let user = ctx.snowflake("user_id")?;
    guild_access(&ctx.state, bot, id)?;
    let world = bot.world();
    let guild = world.guilds.get(&id).ok_or_else(ApiError::unknown_guild)?;
    match guild.members.get(&user) {
        Some(member) => json(member),
        None => Err(ApiError::unknown_member()),
    }
}

/// The 404 of an unknown route.
pub(crate) async fn not_found(_ctx: Ctx) -> Result<Response, ApiError> {
    Err(ApiError::not_found())
}

/// The 405 of a known path with the wrong method.
pub(crate) async fn method_not_allowed(_ctx: Ctx) -> Result<Response, ApiError> {
    Err(ApiError::method_not_allowed())
}
