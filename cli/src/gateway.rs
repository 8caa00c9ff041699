//! `shardyard gateway`: a bot's Discord shards, published to JetStream.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;
use shardyard_gateway::config::{
    ordinal_from_pod_name, parse_max_age, parse_max_bytes, parse_shard_range,
};
use shardyard_gateway::{Compression, GatewayConfig, StreamLimits};
use shardyard_protocol::{BotKey, Intents, Token, pod_shard_range};

/// Flags of `shardyard gateway`; the documented ones are an exact interface.
#[derive(Debug, Args)]
pub(crate) struct GatewayArgs {
    /// The bot's key (`namespace_name` under Kubernetes, the manifest name locally).
    #[arg(long, env = "SHARDYARD_BOT")]
    bot: BotKey,
    /// Discord's REST API base, where `/gateway/bot` is asked (the simulator's `…/api/v10` in tests).
    #[arg(
        long,
        env = "SHARDYARD_API_BASE",
        default_value = "https://discord.com/api/v10"
    )]
    api_base: String,
    /// NATS server URL.
    #[arg(long, env = "SHARDYARD_NATS_URL")]
    nats: String,
    /// The bot's shard count.
    #[arg(long, env = "SHARDYARD_TOTAL_SHARDS")]
    total: u32,
    /// The shards to hold, `A..B` (B exclusive).
    #[arg(long, value_parser = parse_shard_range, conflicts_with_all = ["ordinal", "shards_per_pod"])]
    shards: Option<std::ops::Range<u32>>,
    /// This pod's StatefulSet ordinal (default: from the pod name, `NAME-gateway-3` → 3).
    #[arg(long, env = "SHARDYARD_ORDINAL")]
    ordinal: Option<u32>,
    /// Shards per gateway pod, with `--ordinal`.
    #[arg(long, env = "SHARDYARD_SHARDS_PER_POD")]
    shards_per_pod: Option<u32>,
    /// A file holding the bot token (else `SHARDYARD_TOKEN`).
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// Intents, as names (`GUILDS,GUILD_MESSAGES`) or a number.
    #[arg(long, env = "SHARDYARD_INTENTS", default_value = "NON_PRIVILEGED")]
    intents: Intents,
    /// `zlib-stream` or `none`.
    #[arg(long, default_value = "zlib-stream")]
    compression: Compression,
    /// IDENTIFY's `large_threshold` (50–250).
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u8).range(50..=250))]
    large_threshold: u8,
    /// IDENTIFY's presence, as JSON (`{"status":"online","activities":[],"since":null,"afk":false}`).
    #[arg(long)]
    presence: Option<String>,
    /// The shard generation this process belongs to (blue/green resharding).
    #[arg(long, env = "SHARDYARD_GENERATION")]
    generation: Option<u64>,
    /// Serve `/healthz`, `/readyz` and `/metrics` here.
    #[arg(long, env = "SHARDYARD_ADMIN_ADDR")]
    admin_addr: Option<SocketAddr>,
    /// Unacknowledged publishes per shard before it stops reading its socket.
    #[arg(long, default_value_t = 1024)]
    publish_window: usize,
    /// When this process creates the event stream (no operator made it): drop events older
    /// than this. Seconds, or with s, m, h or d (`24h`); 0 keeps events whatever their age.
    #[arg(long, env = "SHARDYARD_STREAM_MAX_AGE", default_value = "24h", value_parser = parse_max_age)]
    stream_max_age: std::time::Duration,
    /// When this process creates the event stream: past this size the oldest events go. Bytes,
    /// or with KiB, MiB, GiB or TiB (`10GiB`); 0 for no limit.
    #[arg(long, env = "SHARDYARD_STREAM_MAX_BYTES", default_value = "10GiB", value_parser = parse_max_bytes)]
    stream_max_bytes: u64,
    /// Threads running the shards. 1 (the default) runs everything on one thread, which costs
    /// about a third less CPU per event than handing work between threads; one thread carries
    /// tens of thousands of events/s, so scale with more pods (or raise this for one big pod).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    threads: u16,
}

impl GatewayArgs {
    fn into_config(self) -> anyhow::Result<(GatewayConfig, Option<SocketAddr>)> {
        let Self {
            bot,
            api_base,
            nats,
            total,
            shards,
            ordinal,
            shards_per_pod,
            token_file,
            intents,
            compression,
            large_threshold,
            presence,
            generation,
            admin_addr,
            publish_window,
            stream_max_age,
            stream_max_bytes,
            threads: _,
        } = self;
        let shards = match (shards, shards_per_pod) {
            (Some(range), _) => range,
            (None, Some(per_pod)) => {
                let ordinal = match ordinal {
                    Some(ordinal) => ordinal,
                    None => {
                        let pod = std::env::var("POD_NAME")
                            .or_else(|_| std::env::var("HOSTNAME"))
                            .unwrap_or_default();
                        ordinal_from_pod_name(&pod).with_context(|| {
                            format!("no --ordinal and the pod name {pod:?} does not end in one")
                        })?
                    }
                };
                pod_shard_range(ordinal, per_pod, total)
            }
            (None, None) => anyhow::bail!(
                "give --shards A..B, or --shards-per-pod P with --ordinal I (or a pod name ending in -I)"
            ),
        };
        let token = match token_file {
            Some(path) => Token::new(
                &std::fs::read_to_string(&path)
                    .with_context(|| format!("reading the token file {}", path.display()))?,
            ),
            None => Token::new(
                &std::env::var("SHARDYARD_TOKEN")
                    .context("no bot token: set SHARDYARD_TOKEN or --token-file")?,
            ),
        };
        anyhow::ensure!(!token.is_empty(), "the bot token is empty");
        let presence = presence
            .map(|p| {
                let presence = serde_json::from_str(&p).context("--presence is not JSON")?;
                shardyard_gateway::commands::validate_presence(presence)
                    .map_err(|e| anyhow::anyhow!("--presence: {e}"))
            })
            .transpose()?;
        let config = GatewayConfig {
            bot,
            api_base,
            nats_url: nats,
            total,
            shards,
            token,
            intents,
            compression,
            large_threshold,
            presence,
            publish_window,
            generation,
            stream_limits: StreamLimits {
                max_age: stream_max_age,
                max_bytes: stream_max_bytes,
            },
        };
        Ok((config, admin_addr))
    }
}

pub(crate) fn run(args: GatewayArgs) -> anyhow::Result<()> {
    let runtime = crate::runtime::build(args.threads)?;
    let (config, admin_addr) = args.into_config()?;
    runtime.block_on(async move {
        let shutdown = tokio_util::sync::CancellationToken::new();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            crate::signal::shutdown_signal().await;
            tracing::info!("shutting down: closing shards resumably");
            stop.cancel();
        });
        tracing::info!(bot = %config.bot, shards = ?config.shards, total = config.total, "starting gateway");
        shardyard_gateway::run(config, admin_addr, shutdown).await.context("running the gateway")
    })
}
