//! The example bot `shardyard worker` runs, and an author's starting point: it answers `!ping`
//! with `pong` through the REST proxy, `!guild` with what the central cache knows of the guild,
//! and the `/ping` slash command within Discord's 3-second window. What it handles is counted in `/metrics`
//! (`shardyard_worker_events_total{type=…,outcome=…}`).

use twilight_model::application::interaction::InteractionData;
use twilight_model::gateway::payload::incoming::{InteractionCreate, MessageCreate};
use twilight_model::http::interaction::{
    InteractionResponse, InteractionResponseData, InteractionResponseType,
};

use crate::{Bot, BuildError, Context, HandlerError, WorkerConfig};

/// The message the bot answers.
pub const PING: &str = "!ping";
/// Its answer, to `!ping` and to the `/ping` command.
pub const PONG: &str = "pong";
/// The message answered from the central cache with [`guild_summary`].
pub const GUILD: &str = "!guild";

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
        .on(on_message)
        .on(on_interaction)
        .build()
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

/// A slash command: `/ping` → `pong`, any other command → that it is unknown. Interaction
/// callbacks go to an endpoint without a global rate limit, and must arrive within 3 s.
async fn on_interaction(ctx: Context, interaction: InteractionCreate) -> Result<(), HandlerError> {
    let Some(InteractionData::ApplicationCommand(command)) = &interaction.data else {
        return Ok(());
    };
    let content = if command.name == "ping" {
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
    ctx.rest()
        .interaction(interaction.application_id)
        .create_response(interaction.id, &interaction.token, &response)
        .await?;
    Ok(())
}
