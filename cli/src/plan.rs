//! `shardyard plan` and `shardyard crd`: what the operator would apply for a manifest, and the
//! CRD it is checked against, without a cluster.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;
use shardyard_operator::discord::{self, DiscordError, gateway_bot};
use shardyard_operator::manifest::{read_bots, render};
use shardyard_operator::plan::{
    DEFAULT_API_BASE, DEFAULT_IMAGE, DEFAULT_QUEUE_DEPTH_URL, OperatorDefaults, PlanInput, plan,
};
use shardyard_operator::{DiscordBot, ShardCount};
use shardyard_protocol::Token;

/// Flags of `shardyard plan`, an exact interface:
/// `shardyard plan -f FILE [--api-base URL] [--token-file F] [--namespace NS]`.
#[derive(Debug, Args)]
pub(crate) struct PlanArgs {
    /// The DiscordBot manifest (other documents in it are left out).
    #[arg(short = 'f', long = "filename")]
    file: PathBuf,
    /// Discord's API base for a bot that sets no `spec.discord.apiBase`.
    #[arg(long, default_value = DEFAULT_API_BASE)]
    api_base: String,
    /// A file holding the bot token (else `SHARDYARD_TOKEN`), for `shards: auto`.
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// The namespace of a bot whose manifest names none.
    #[arg(long, default_value = "default")]
    namespace: String,
    /// The image of the components a bot gives none for (the operator's `--image`).
    #[arg(long, default_value = DEFAULT_IMAGE)]
    image: String,
    /// Where KEDA's `metrics-api` trigger reaches the operator (the operator's
    /// `--queue-depth-url`).
    #[arg(long, default_value = DEFAULT_QUEUE_DEPTH_URL)]
    queue_depth_url: String,
}

/// Prints every object the operator would apply for each bot in the file, as YAML.
pub(crate) fn run(args: PlanArgs) -> anyhow::Result<()> {
    let PlanArgs {
        file,
        api_base,
        token_file,
        namespace,
        image,
        queue_depth_url,
    } = args;
    let text =
        std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
    let bots = read_bots(&text, &namespace).with_context(|| file.display().to_string())?;
    let defaults = OperatorDefaults {
        api_base,
        image,
        queue_depth_url,
    };
    let runtime = crate::runtime::build(1)?;
    let mut out = String::new();
    for bot in &bots {
        let discord = match bot.spec.shards {
            ShardCount::Fixed(_) => None,
            ShardCount::Auto => {
                Some(runtime.block_on(ask_discord(bot, &defaults, token_file.as_ref()))?)
            }
        };
        let planned = plan(PlanInput {
            bot,
            defaults: &defaults,
            discord,
            running: &[],
        })
        .with_context(|| format!("planning DiscordBot {}", name(bot)))?;
        out.push_str(&render(&planned).context("printing the plan")?);
    }
    print!("{out}");
    Ok(())
}

async fn ask_discord(
    bot: &DiscordBot,
    defaults: &OperatorDefaults,
    token_file: Option<&PathBuf>,
) -> anyhow::Result<shardyard_operator::plan::GatewayBot> {
    let api_base = bot
        .spec
        .discord
        .as_ref()
        .and_then(|d| d.api_base.clone())
        .unwrap_or_else(|| defaults.api_base.clone());
    let token = match token_file {
        Some(path) => Some(Token::new(
            &std::fs::read_to_string(path)
                .with_context(|| format!("reading the token file {}", path.display()))?,
        )),
        None => std::env::var("SHARDYARD_TOKEN")
            .ok()
            .map(|t| Token::new(&t)),
    }
    .filter(|t| !t.is_empty())
    .with_context(|| {
        format!(
            "DiscordBot {} has shards: auto, so its shard count comes from Discord's GET \
             /gateway/bot at {api_base}, which needs the bot token: set SHARDYARD_TOKEN or \
             --token-file, or give spec.shards a number",
            name(bot)
        )
    })?;
    let client = discord::client()?;
    match gateway_bot(&client, &api_base, &token).await {
        Ok(answer) => Ok(answer.gateway),
        Err(error @ DiscordError::InvalidToken) => Err(anyhow::Error::new(error)),
        Err(error) => Err(anyhow::Error::new(error).context(format!(
            "DiscordBot {} has shards: auto, which needs Discord's answer; give spec.shards a \
             number to plan without it",
            name(bot)
        ))),
    }
}

fn name(bot: &DiscordBot) -> String {
    format!(
        "{}/{}",
        bot.metadata.namespace.as_deref().unwrap_or(""),
        bot.metadata.name.as_deref().unwrap_or("")
    )
}

/// `shardyard crd`: the DiscordBot CRD as YAML.
pub(crate) fn crd() -> anyhow::Result<()> {
    print!(
        "{}",
        shardyard_operator::crd::crd_yaml().context("printing the CRD")?
    );
    Ok(())
}
