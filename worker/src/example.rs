//! The example bot `shardyard worker` runs, and an author's starting point: at start-up it
//! registers the `/ping` slash command (a bulk overwrite of its global commands, through the
//! REST proxy, as real bots do); it answers `!ping` with `pong` through the REST proxy, `!guild`
//! with what the central cache knows of the guild, and the `/ping` slash command within
//! Discord's 3-second window. What it handles is counted in `/metrics`
//! (`shardyard_worker_events_total{type=…,outcome=…}`).

use twilight_model::application::command::{Command, CommandType};
use twilight_model::application::interaction::InteractionData;
use twilight_model::gateway::payload::incoming::{InteractionCreate, MessageCreate};
use twilight_model::http::interaction::{
    InteractionResponse, InteractionResponseData, InteractionResponseType,
};
use twilight_model::id::Id;

use crate::{Bot, BuildError, Context, HandlerError, StartContext, WorkerConfig, rest_error};

/// The message the bot answers.
pub const PING: &str = "!ping";
/// Its answer, to `!ping` and to the `/ping` command.
pub const PONG: &str = "pong";
/// The message answered from the central cache with [`guild_summary`].
pub const GUILD: &str = "!guild";
/// The slash command the bot registers at start-up and answers with [`PONG`].
pub const PING_COMMAND: &str = "ping";
/// Its description.
pub const PING_DESCRIPTION: &str = "Replies with pong";

/// The application commands the bot registers: `/ping`, a `CHAT_INPUT` command.
#[must_use]
pub fn commands() -> Vec<Command> {
    #[allow(deprecated)] // `dm_permission`: left to Discord's default, as `contexts` is.
    let ping = Command {
        application_id: None,
        contexts: None,
        default_member_permissions: None,
        description: PING_DESCRIPTION.to_owned(),
        description_localizations: None,
        dm_permission: None,
        guild_id: None,
        id: None,
        integration_types: None,
        kind: CommandType::ChatInput,
        name: PING_COMMAND.to_owned(),
        name_localizations: None,
        nsfw: None,
        options: Vec::new(),
        // Ignored by Discord in a request; twilight's type requires one.
        version: Id::new(1),
    };
    vec![ping]
}

/// The answer to `!guild`: `<name>: <members> members, <channels> channels, <roles> roles`.
#[must_use]
pub fn guild_summary(guild: &shardyard_cache::schema::Guild) -> String {
    format!(
        "{}: {} members, {} channels, {} roles",
        guild.name.as_deref().unwrap_or("?"),
        guild.member_count,
        guild.channel_ids.len(),
        guild.role_ids.len()
    )
}

/// The example bot with `config`.
///
/// # Errors
/// [`BuildError`] for an invalid configuration.
pub fn bot(config: WorkerConfig) -> Result<Bot, BuildError> {
    Bot::builder(config)
        .on_start(register_commands)
        .on(on_message)
        .on(on_interaction)
        .build()
}

/// At start-up: the application's id from `GET /applications/@me`, then a bulk overwrite of its
/// global commands with [`commands`]. Every replica does it at every start; the overwrite is
/// idempotent (the same list keeps its ids). A failure is logged by the worker and does not
/// stop it (see [`crate::BotBuilder::on_start`]).
async fn register_commands(ctx: StartContext) -> Result<(), HandlerError> {
    let application = ctx
        .rest()
        .current_user_application()
        .await
        .map_err(rest_error)?
        .model()
        .await?;
    let registered = ctx
        .rest()
        .interaction(application.id)
        .set_global_commands(&commands())
        .await
        .map_err(rest_error)?
        .models()
        .await?;
    let names: Vec<&str> = registered.iter().map(|c| c.name.as_str()).collect();
    tracing::info!(application = %application.id, commands = ?names, "registered the application commands");
    Ok(())
}

/// `!ping` → `pong` in the same channel; `!guild` → the guild as the central cache has it.
/// Other messages, and bots' messages, are ignored.
async fn on_message(ctx: Context, message: MessageCreate) -> Result<(), HandlerError> {
    if message.author.bot {
        return Ok(());
    }
    let answer = match message.content.trim() {
        PING => PONG.to_owned(),
        GUILD => {
            let Some(guild_id) = message.guild_id else {
                return Ok(());
            };
            // An error (the cache's bucket is not there yet) is retried with backoff.
            match ctx.cache().await?.guild(guild_id.get()).await? {
                Some(guild) => guild_summary(&guild),
                None => "this guild is not cached yet".to_owned(),
            }
        }
        _ => return Ok(()),
    };
    ctx.rest()
        .create_message(message.channel_id)
        .content(&answer)
        .await?;
    Ok(())
}

/// A slash command: `/ping` → `pong`, any other command → that it is unknown, within Discord's
/// 3 s, whether the interaction came over the gateway or to the interactions endpoint
/// ([`Context::respond`] picks the path).
async fn on_interaction(ctx: Context, interaction: InteractionCreate) -> Result<(), HandlerError> {
    let Some(InteractionData::ApplicationCommand(command)) = &interaction.data else {
        return Ok(());
    };
    let content = if command.name == PING_COMMAND {
        PONG.to_owned()
    } else {
        format!("unknown command /{}", command.name)
    };
    let response = InteractionResponse {
        kind: InteractionResponseType::ChannelMessageWithSource,
        data: Some(InteractionResponseData {
            content: Some(content),
            ..InteractionResponseData::default()
        }),
    };
    ctx.respond(&interaction, &response).await?;
    Ok(())
}
