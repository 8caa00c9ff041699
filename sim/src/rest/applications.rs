//! The current application (`GET /applications/@me`, `GET /oauth2/applications/@me`) and its
//! application commands: bulk overwrite (`PUT`) and list (`GET`), global and per guild.
//!
//! `{application_id}` must be the id of the token's application: another snowflake answers 403
//! 20012 "You are not authorized to perform this action on this application", as Discord answers
//! a bot token naming someone else's application; a path id that is not a snowflake answers 400
//! 50035. The guild form needs the bot in the guild (404 10004 Unknown Guild, 403 50001 for a
//! guild of another bot's world). `GET` lists leave out the `*_localizations` dictionaries
//! unless `with_localizations=true`.

use axum::Json;
use axum::response::{IntoResponse, Response};
use ed25519_dalek::SigningKey;
use serde_json::{Value, json};
use shardyard_protocol::Intents;
use xxhash_rust::xxh3::xxh3_64_with_seed;

use super::commands::parse_overwrite;
use super::endpoint;
use super::error::{ApiError, FormErrors};
use super::gate::Ctx;
use super::messages::json_object;
use super::routes::guild_access;
use crate::bot::BotState;
use crate::commands::ApplicationCommand;
use crate::model::User;

/// Application flags Discord sets from what the app is approved for.
mod flag {
    pub(super) const GATEWAY_PRESENCE: u64 = 1 << 12;
    pub(super) const GATEWAY_PRESENCE_LIMITED: u64 = 1 << 13;
    pub(super) const GATEWAY_GUILD_MEMBERS: u64 = 1 << 14;
    pub(super) const GATEWAY_GUILD_MEMBERS_LIMITED: u64 = 1 << 15;
    pub(super) const GATEWAY_MESSAGE_CONTENT: u64 = 1 << 18;
    pub(super) const GATEWAY_MESSAGE_CONTENT_LIMITED: u64 = 1 << 19;
    pub(super) const APPLICATION_COMMAND_BADGE: u64 = 1 << 23;
}

/// Below this many guilds Discord grants privileged intents as the `_LIMITED` flags.
const VERIFIED_GUILDS: usize = 100;

/// The app's public flags: one per approved privileged intent (the `_LIMITED` form under 100
/// guilds), and `APPLICATION_COMMAND_BADGE` once it has global commands.
#[must_use]
pub(crate) fn application_flags(privileged: Intents, guilds: usize, global_commands: bool) -> u64 {
    let verified = guilds >= VERIFIED_GUILDS;
    let mut flags = 0;
    for (intent, full, limited) in [
        (
            Intents::GUILD_PRESENCES,
            flag::GATEWAY_PRESENCE,
            flag::GATEWAY_PRESENCE_LIMITED,
        ),
        (
            Intents::GUILD_MEMBERS,
            flag::GATEWAY_GUILD_MEMBERS,
            flag::GATEWAY_GUILD_MEMBERS_LIMITED,
        ),
        (
            Intents::MESSAGE_CONTENT,
            flag::GATEWAY_MESSAGE_CONTENT,
            flag::GATEWAY_MESSAGE_CONTENT_LIMITED,
        ),
    ] {
        if privileged.contains(intent) {
            flags |= if verified { full } else { limited };
        }
    }
    if global_commands {
        flags |= flag::APPLICATION_COMMAND_BADGE;
    }
    flags
}

/// The application's Ed25519 signing key: its 32-byte seed is XXH3-64 of the application id
/// (little-endian bytes) with seeds 0 to 3, each as little-endian bytes, so the key pair is
/// stable per application and the same in every run. The simulator signs what it sends the
/// app's interactions endpoint with it, as Discord does.
#[must_use]
pub(crate) fn signing_key(application_id: u64) -> SigningKey {
    let bytes = application_id.to_le_bytes();
    let mut seed = [0u8; 32];
    for (seed_index, chunk) in (0u64..).zip(seed.chunks_exact_mut(8)) {
        chunk.copy_from_slice(&xxh3_64_with_seed(&bytes, seed_index).to_le_bytes());
    }
    SigningKey::from_bytes(&seed)
}

/// The application's Ed25519 public key as `verify_key` carries it: 64 lowercase hex digits.
#[must_use]
pub(crate) fn verify_key(application_id: u64) -> String {
    hex(signing_key(application_id).verifying_key().as_bytes())
}

/// Lowercase hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    out
}

/// A partial user as the application object carries its `bot` and `owner`.
fn partial_user(user: &User) -> Value {
    let mut value = json!({
        "id": user.id.to_string(),
        "username": user.username,
        "avatar": user.avatar,
        "discriminator": user.discriminator,
        "public_flags": user.public_flags,
        "flags": user.public_flags,
        "banner": null,
        "accent_color": null,
        "global_name": user.global_name,
        "avatar_decoration_data": null,
        "banner_color": null,
        "clan": null,
        "primary_guild": null,
    });
    if user.bot
        && let Some(obj) = value.as_object_mut()
    {
        obj.insert("bot".into(), true.into());
    }
    value
}

/// The application object of `bot`, with its interactions endpoint URL.
fn application(bot: &BotState, endpoint_url: Option<&str>) -> Value {
    let world = bot.world();
    let id = world.application_id;
    let owner = User {
        id: id.wrapping_sub(1),
        username: format!("{}-owner", bot.config.name),
        global_name: None,
        discriminator: "0",
        avatar: None,
        bot: false,
        public_flags: 0,
        avatar_decoration_data: None,
    };
    let flags = application_flags(
        bot.config.privileged_intents,
        world.guilds.len(),
        !world.commands.global().is_empty(),
    );
    json!({
        "id": id.to_string(),
        "name": world.bot_user.username,
        "icon": null,
        "description": "",
        "summary": "",
        "type": null,
        "bot": partial_user(&world.bot_user),
        "is_monetized": false,
        "is_verified": world.guilds.len() >= VERIFIED_GUILDS,
        "is_discoverable": false,
        "bot_public": true,
        "bot_require_code_grant": false,
        "owner": partial_user(&owner),
        "team": null,
        "flags": flags,
        "hook": true,
        "verify_key": verify_key(id),
        "redirect_uris": [],
        "interactions_endpoint_url": endpoint_url,
        "role_connections_verification_url": null,
        "event_webhooks_url": null,
        "event_webhooks_status": 1,
        "approximate_guild_count": world.guilds.len(),
        "approximate_user_install_count": 0,
        "approximate_user_authorization_count": 0,
        "integration_types_config": { "0": {} },
    })
}

/// `GET /applications/@me` and `GET /oauth2/applications/@me`.
pub(crate) async fn current_application(ctx: Ctx) -> Result<Response, ApiError> {
    let bot = ctx.bot()?;
    let url = ctx.state.rest.endpoint_url(bot.world().application_id);
    Ok(Json(application(bot, url.as_deref())).into_response())
}

const ENDPOINT_URL: &str = "interactions_endpoint_url";

/// An `interactions_endpoint_url` that is a well-formed http(s) URL; 50035 otherwise.
fn endpoint_url(raw: &str) -> Result<(), ApiError> {
    let Ok(url) = reqwest::Url::parse(raw) else {
        return Err(FormErrors::single(
            &[ENDPOINT_URL],
            "URL_TYPE_INVALID_URL",
            "Not a well formed URL.",
        ));
    };
    if !matches!(url.scheme(), "http" | "https") {
        return Err(FormErrors::single(
            &[ENDPOINT_URL],
            "URL_TYPE_INVALID_SCHEME",
            &format!(
                "Scheme \"{}\" is not supported. Scheme must be one of ('http', 'https').",
                url.scheme()
            ),
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(FormErrors::single(
            &[ENDPOINT_URL],
            "URL_TYPE_INVALID_URL",
            "Not a well formed URL.",
        ));
    }
    Ok(())
}

/// `PATCH /applications/@me`: of the fields Discord takes, `interactions_endpoint_url` (others
/// are ignored). A URL is checked as Discord checks it (see `endpoint.rs`) before it is saved:
/// 400 50035 `APPLICATION_INTERACTIONS_ENDPOINT_URL_INVALID` and no change when the check fails;
/// `null` or `""` clears it. Answers the application object.
pub(crate) async fn edit_current_application(ctx: Ctx) -> Result<Response, ApiError> {
    let bot = ctx.bot()?.clone();
    let body = json_object(&ctx.body)?;
    let (application_id, ping_id) = {
        let world = bot.world();
        (world.application_id, world.ids.next())
    };
    match body.get(ENDPOINT_URL) {
        None => {}
        Some(Value::Null) => ctx.state.rest.set_endpoint_url(application_id, None),
        Some(Value::String(url)) if url.is_empty() => {
            ctx.state.rest.set_endpoint_url(application_id, None);
        }
        Some(Value::String(url)) => {
            endpoint_url(url)?;
            let name = bot.config.name.as_str();
            if let Err(why) = endpoint::verify(&ctx.state, application_id, ping_id, url).await {
                tracing::info!(bot = name, url, %why, "interactions endpoint URL not verified");
                return Err(FormErrors::single(
                    &[ENDPOINT_URL],
                    "APPLICATION_INTERACTIONS_ENDPOINT_URL_INVALID",
                    "The specified interactions endpoint url could not be verified.",
                ));
            }
            tracing::info!(bot = name, url, "interactions endpoint URL verified");
            ctx.state
                .rest
                .set_endpoint_url(application_id, Some(url.clone()));
        }
        Some(_) => {
            return Err(FormErrors::single(
                &[ENDPOINT_URL],
                "BASE_TYPE_STRING",
                "Must be a string.",
            ));
        }
    }
    let url = ctx.state.rest.endpoint_url(application_id);
    Ok(Json(application(&bot, url.as_deref())).into_response())
}

/// Checks `{application_id}` is the token's application.
fn own_application(ctx: &Ctx, bot: &BotState) -> Result<u64, ApiError> {
    let id = ctx.snowflake("application_id")?;
    if id == bot.world().application_id {
        Ok(id)
    } else {
        Err(ApiError::not_application_owner())
    }
}

/// The commands as a `GET` answers them.
fn list(ctx: &Ctx, commands: &[ApplicationCommand]) -> Response {
    let localizations = matches!(ctx.query("with_localizations"), Some("true" | "True" | "1"));
    let list: Vec<Value> = commands.iter().map(|c| c.to_json(localizations)).collect();
    Json(list).into_response()
}

/// The commands as a `PUT` answers them (with the localization dictionaries, `null` or not).
fn overwritten(commands: &[ApplicationCommand]) -> Response {
    let list: Vec<Value> = commands.iter().map(|c| c.to_json(true)).collect();
    Json(list).into_response()
}

/// `GET /applications/{application_id}/commands`.
pub(crate) async fn get_global_commands(ctx: Ctx) -> Result<Response, ApiError> {
    let bot = ctx.bot()?;
    own_application(&ctx, bot)?;
    let world = bot.world();
    Ok(list(&ctx, world.commands.global()))
}

/// `PUT /applications/{application_id}/commands`.
pub(crate) async fn set_global_commands(ctx: Ctx) -> Result<Response, ApiError> {
    let bot = ctx.bot()?;
    let application_id = own_application(&ctx, bot)?;
    let wanted = parse_overwrite(&ctx.body, true)?;
    let mut world = bot.world();
    let world = &mut *world;
    let commands = world
        .commands
        .overwrite(application_id, None, wanted, &world.ids);
    Ok(overwritten(commands))
}

/// `GET /applications/{application_id}/guilds/{guild_id}/commands`.
pub(crate) async fn get_guild_commands(ctx: Ctx) -> Result<Response, ApiError> {
    let bot = ctx.bot()?;
    own_application(&ctx, bot)?;
    let guild = ctx.snowflake("guild_id")?;
    guild_access(&ctx.state, bot, guild)?;
    let world = bot.world();
    Ok(list(&ctx, world.commands.guild(guild)))
}

/// `PUT /applications/{application_id}/guilds/{guild_id}/commands`.
pub(crate) async fn set_guild_commands(ctx: Ctx) -> Result<Response, ApiError> {
    let bot = ctx.bot()?;
    let application_id = own_application(&ctx, bot)?;
    let guild = ctx.snowflake("guild_id")?;
    guild_access(&ctx.state, bot, guild)?;
    let wanted = parse_overwrite(&ctx.body, false)?;
    let mut world = bot.world();
    let world = &mut *world;
    if !world.guilds.contains_key(&guild) {
        return Err(ApiError::unknown_guild());
    }
    let commands = world
        .commands
        .overwrite(application_id, Some(guild), wanted, &world.ids);
    Ok(overwritten(commands))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_follow_the_approved_intents_and_the_guild_count() {
        assert_eq!(application_flags(Intents::EMPTY, 5, false), 0);
        assert_eq!(
            application_flags(Intents::PRIVILEGED, 5, false),
            flag::GATEWAY_PRESENCE_LIMITED
                | flag::GATEWAY_GUILD_MEMBERS_LIMITED
                | flag::GATEWAY_MESSAGE_CONTENT_LIMITED
        );
        assert_eq!(
            application_flags(Intents::MESSAGE_CONTENT, 2500, true),
            flag::GATEWAY_MESSAGE_CONTENT | flag::APPLICATION_COMMAND_BADGE
        );
    }

    #[test]
    fn the_verify_key_is_64_hex_digits_and_stable_per_application() {
        let key = verify_key(1_100_000_000_000_000_000);
        assert_eq!(key.len(), 64);
        assert!(key.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(key, verify_key(1_100_000_000_000_000_000));
        assert_ne!(key, verify_key(1_100_000_000_001_000_003));
        assert_eq!(key, key.to_ascii_lowercase());
    }

    #[test]
    fn a_signature_by_the_apps_key_verifies_against_its_verify_key() {
        use ed25519_dalek::{Signer, VerifyingKey};
        let app = 1_100_000_000_000_000_000;
        let key = verify_key(app);
        let public: Vec<u8> = (0..32)
            .map(|i| u8::from_str_radix(&key[2 * i..2 * i + 2], 16).unwrap())
            .collect();
        let public = VerifyingKey::from_bytes(&public.try_into().unwrap()).unwrap();
        let message = b"1764233400{\"type\":1}";
        let signature = signing_key(app).sign(message);
        assert!(public.verify_strict(message, &signature).is_ok());
        let other = signing_key(app + 1).sign(message);
        assert!(public.verify_strict(message, &other).is_err());
        assert_eq!(hex(&[0x00, 0xab, 0x7f]), "00ab7f");
    }
}
