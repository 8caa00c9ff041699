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
    /// Where `/gateway/bot` is asked when `--api-base` has failed for
    /// `--api-fallback-after-secs` (the operator points `--api-base` at the bot's REST proxy and
    /// this at Discord, so that a proxy that is down does not keep the gateways from starting).
    #[arg(long, env = "SHARDYARD_API_FALLBACK")]
    api_fallback: Option<String>,
    /// Seconds `--api-base` may fail before `--api-fallback` is asked.
    #[arg(long, default_value_t = 15)]
    api_fallback_after_secs: u64,
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
    /// `zlib-stream`, `zstd-stream` or `none`.
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
    /// Milliseconds the publishing connection gathers events before writing them to NATS in
    /// one write: nats-server's CPU per stored event is mostly per write, so this roughly
    /// halves it at a few thousand events/s, for at most this much more receive → stored
    /// latency. 0 writes each event at once.
    #[arg(long, default_value_t = 2)]
    publish_linger_ms: u64,
    /// When this process creates the event stream (no operator made it): drop events older
    /// than this. Seconds, or with s, m, h or d (`24h`); 0 keeps events whatever their age.
    #[arg(long, env = "SHARDYARD_STREAM_MAX_AGE", default_value = "24h", value_parser = parse_max_age)]
    stream_max_age: std::time::Duration,
    /// When this process creates the event stream: past this size the oldest events go. Bytes,
    /// or with KiB, MiB, GiB or TiB (`10GiB`); 0 (the default) for no limit. JetStream reserves
    /// this much of the server's storage for the stream, so it must fit the NATS volume.
    #[arg(long, env = "SHARDYARD_STREAM_MAX_BYTES", default_value = "0", value_parser = parse_max_bytes)]
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
            api_fallback,
            api_fallback_after_secs,
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
            publish_linger_ms,
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
            api_fallback,
            api_fallback_after: std::time::Duration::from_secs(api_fallback_after_secs),
            nats_url: nats,
            total,
            shards,
            token,
            intents,
            compression,
            large_threshold,
            presence,
            publish_window,
            publish_linger: std::time::Duration::from_millis(publish_linger_ms),
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

/// The documented interface of `shardyard gateway`, which other tools script against: every
/// flag as the gateway issue spells it, parsed the way `main` parses it.
#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use clap::Parser as _;
    use shardyard_gateway::{Compression, GatewayConfig, StreamLimits};
    use shardyard_protocol::Intents;

    use crate::{Cli, Command};

    /// `shardyard gateway <args>` with a token file, into the process's configuration.
    fn config(args: &[&str]) -> anyhow::Result<(GatewayConfig, Option<std::net::SocketAddr>)> {
        static FILES: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "shardyard-cli-token-{}-{}",
            std::process::id(),
            FILES.fetch_add(1, Ordering::Relaxed)
        ));
        // As Kubernetes mounts a secret someone wrote with `echo`: a trailing newline.
        std::fs::write(&path, "Bot s3cret.t0ken\n")?;
        let token_file = path.to_string_lossy().into_owned();
        let mut argv = vec!["shardyard", "gateway", "--token-file", &token_file];
        argv.extend_from_slice(args);
        let parsed = Cli::try_parse_from(argv).map_err(anyhow::Error::from);
        let config = parsed.and_then(|cli| match cli.command {
            Command::Gateway(args) => args.into_config(),
            _ => anyhow::bail!("not the gateway subcommand"),
        });
        std::fs::remove_file(&path)?;
        config
    }

    const REQUIRED: [&str; 8] = [
        "--bot",
        "mybot",
        "--api-base",
        "http://127.0.0.1:8450/api/v10",
        "--nats",
        "nats://127.0.0.1:4222",
        "--total",
        "16",
    ];

    #[test]
    fn every_documented_flag_reaches_the_configuration() -> anyhow::Result<()> {
        let mut args = REQUIRED.to_vec();
        args.extend([
            "--ordinal",
            "3",
            "--shards-per-pod",
            "4",
            "--intents",
            "GUILDS,GUILD_MESSAGES",
            "--compression",
            "none",
            "--large-threshold",
            "250",
            "--presence",
            r#"{"status":"idle","activities":[],"since":null,"afk":false}"#,
            "--generation",
            "2",
            "--admin-addr",
            "127.0.0.1:9100",
            "--stream-max-age",
            "7d",
            "--stream-max-bytes",
            "512MiB",
        ]);
        let (config, admin) = config(&args)?;
        assert_eq!(config.bot.to_string(), "mybot");
        assert_eq!(config.api_base, "http://127.0.0.1:8450/api/v10");
        assert_eq!(config.nats_url, "nats://127.0.0.1:4222");
        assert_eq!((config.total, config.shards.clone()), (16, 12..16));
        assert_eq!(config.token.expose(), "s3cret.t0ken");
        assert_eq!(
            config.intents,
            "GUILDS".parse::<Intents>()? | "GUILD_MESSAGES".parse::<Intents>()?
        );
        assert_eq!(config.compression, Compression::None);
        assert_eq!(config.large_threshold, 250);
        assert_eq!(
            config.presence.as_ref().map(|p| p["status"].clone()),
            Some("idle".into())
        );
        assert_eq!(config.generation, Some(2));
        assert_eq!(admin, Some("127.0.0.1:9100".parse()?));
        assert_eq!(
            config.stream_limits,
            StreamLimits {
                max_age: Duration::from_secs(7 * 24 * 60 * 60),
                max_bytes: 512 << 20,
            }
        );
        // The token is in the configuration, and never in its `Debug`.
        assert!(!format!("{config:?}").contains("s3cret"));
        Ok(())
    }

    #[test]
    fn defaults_and_the_shard_range_form() -> anyhow::Result<()> {
        let mut zstd = REQUIRED.to_vec();
        zstd.extend(["--shards", "0..1", "--compression", "zstd-stream"]);
        assert_eq!(config(&zstd)?.0.compression, Compression::ZstdStream);
        let mut args = REQUIRED.to_vec();
        args.extend(["--shards", "4..8"]);
        let (config, admin) = config(&args)?;
        assert_eq!(config.shards, 4..8);
        assert_eq!(config.compression, Compression::ZlibStream);
        assert_eq!(config.large_threshold, 50);
        assert_eq!(config.intents, "NON_PRIVILEGED".parse::<Intents>()?);
        assert_eq!(
            (config.presence, config.generation, admin),
            (None, None, None)
        );
        assert_eq!(config.stream_limits, StreamLimits::default());
        Ok(())
    }

    #[test]
    fn shard_choices_that_cannot_work_are_refused_with_the_way_out() {
        let error = |extra: &[&str]| {
            let mut args = REQUIRED.to_vec();
            args.extend_from_slice(extra);
            config(&args).expect_err("refused").to_string()
        };
        assert!(error(&[]).contains("give --shards A..B, or --shards-per-pod P"));
        assert!(error(&["--shards", "0..4", "--ordinal", "1"]).contains("cannot be used with"));
        assert!(error(&["--shards", "8..4"]).contains("use A..B"));
        assert!(error(&["--shards", "0..4", "--large-threshold", "49"]).contains("49"));
        assert!(
            error(&["--shards", "0..4", "--compression", "gzip"])
                .contains("zlib-stream, zstd-stream or none")
        );
        assert!(error(&["--shards", "0..4", "--presence", "{"]).contains("--presence is not JSON"));
    }
}
