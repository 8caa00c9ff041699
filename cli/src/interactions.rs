//! `shardyard interactions`: the bot's Interactions Endpoint (`POST /interactions`).

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use shardyard_interactions::InteractionsConfig;
use shardyard_protocol::BotKey;

/// Flags of `shardyard interactions`; `--listen`, `--nats`, `--bot`, `--public-key` and
/// `--admin-addr` are an exact interface.
#[derive(Debug, Args)]
pub(crate) struct InteractionsArgs {
    /// Where Discord's requests arrive (`POST /interactions`), behind the HTTPS that Discord
    /// requires (an Ingress, a load balancer).
    #[arg(long, env = "SHARDYARD_INTERACTIONS_LISTEN")]
    listen: SocketAddr,
    /// NATS server URL.
    #[arg(long, env = "SHARDYARD_NATS_URL")]
    nats: String,
    /// The bot's key (`namespace_name` under Kubernetes, the manifest name locally).
    #[arg(long, env = "SHARDYARD_BOT")]
    bot: BotKey,
    /// The application's public key (64 hex digits: "Public Key" in the developer portal,
    /// `verify_key` of `GET /applications/@me`).
    #[arg(long, env = "SHARDYARD_PUBLIC_KEY")]
    public_key: String,
    /// Serve `/healthz`, `/readyz` and `/metrics` here.
    #[arg(long, env = "SHARDYARD_ADMIN_ADDR")]
    admin_addr: Option<SocketAddr>,
    /// Milliseconds Discord's request is held for a worker's answer before the endpoint
    /// defers (under Discord's 3,000).
    #[arg(long, env = "SHARDYARD_INTERACTIONS_ANSWER_WITHIN_MS", default_value_t = 2_500, value_parser = clap::value_parser!(u64).range(1..3_000))]
    answer_within_ms: u64,
    /// Seconds a request's signed timestamp may be from this host's clock.
    #[arg(long, env = "SHARDYARD_INTERACTIONS_TIMESTAMP_WINDOW", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=3_600))]
    timestamp_window: u64,
    /// The largest request body accepted, in bytes (413 above).
    #[arg(long, env = "SHARDYARD_INTERACTIONS_MAX_BODY", default_value_t = 4 << 20)]
    max_body_bytes: usize,
    /// Seconds requests are still taken after SIGTERM, while not ready (a Service's endpoints
    /// take a moment to drop a terminating pod).
    #[arg(long, env = "SHARDYARD_INTERACTIONS_DRAIN", default_value_t = 5)]
    drain_secs: u64,
    /// Threads; 1 (the default) is a current-thread runtime.
    #[arg(long, env = "SHARDYARD_INTERACTIONS_THREADS", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    threads: u16,
}

impl InteractionsArgs {
    fn into_config(self) -> (InteractionsConfig, Option<SocketAddr>, u16) {
        let mut config = InteractionsConfig::new(self.bot, self.nats, self.listen, self.public_key);
        config.answer_within = Duration::from_millis(self.answer_within_ms);
        config.timestamp_window = Duration::from_secs(self.timestamp_window);
        config.max_body_bytes = self.max_body_bytes;
        config.drain = Duration::from_secs(self.drain_secs);
        (config, self.admin_addr, self.threads)
    }
}

pub(crate) fn run(args: InteractionsArgs) -> anyhow::Result<()> {
    let (config, admin_addr, threads) = args.into_config();
    let runtime = crate::runtime::build(threads)?;
    runtime.block_on(async move {
        let shutdown = tokio_util::sync::CancellationToken::new();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            crate::signal::shutdown_signal().await;
            tracing::info!("shutting down: draining, then answering the interactions held");
            stop.cancel();
        });
        shardyard_interactions::run(config, admin_addr, shutdown)
            .await
            .context("running the interactions endpoint")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        interactions: InteractionsArgs,
    }

    const KEY: &str = "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c";

    #[test]
    fn the_exact_flags_and_the_defaults() {
        use clap::Parser as _;
        let args = [
            "interactions",
            "--listen",
            "0.0.0.0:8090",
            "--nats",
            "nats://n:4222",
            "--bot",
            "ns_bot",
            "--public-key",
            KEY,
            "--admin-addr",
            "127.0.0.1:9099",
        ];
        let (config, admin, threads) = Cli::try_parse_from(args)
            .unwrap()
            .interactions
            .into_config();
        assert_eq!(config.listen, "0.0.0.0:8090".parse().unwrap());
        assert_eq!(config.bot.as_str(), "ns_bot");
        assert_eq!(config.public_key, KEY);
        assert_eq!(config.answer_within, Duration::from_millis(2_500));
        assert_eq!(config.timestamp_window, Duration::from_secs(60));
        assert_eq!(admin, Some("127.0.0.1:9099".parse().unwrap()));
        assert_eq!(threads, 1);
        // Discord waits 3 s: a deadline at or past it is refused.
        let mut late = args.to_vec();
        late.extend(["--answer-within-ms", "3000"]);
        assert!(Cli::try_parse_from(late).is_err());
    }
}
