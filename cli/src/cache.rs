//! `shardyard cache`: applies the bot's cache-relevant events, in stream order, to its cache
//! bucket in NATS KV, and serves a read-only HTTP API over it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use shardyard_cache::{CacheConfig, CacheStatus, Resource, Resources};
use shardyard_protocol::BotKey;

/// Flags of `shardyard cache`; `--bot`, `--nats`, `--listen` and `--admin-addr` are an exact
/// interface.
#[derive(Debug, Args)]
pub(crate) struct CacheArgs {
    /// The bot's key (`namespace_name` under Kubernetes, the manifest name locally).
    #[arg(long, env = "SHARDYARD_BOT")]
    bot: BotKey,
    /// NATS server URL.
    #[arg(long, env = "SHARDYARD_NATS_URL")]
    nats: String,
    /// Where the read-only HTTP API (`/guilds/{id}`, `/counts`, …) listens.
    #[arg(long, env = "SHARDYARD_CACHE_LISTEN")]
    listen: SocketAddr,
    /// Serve `/healthz`, `/readyz` and `/metrics` here.
    #[arg(long, env = "SHARDYARD_ADMIN_ADDR")]
    admin_addr: Option<SocketAddr>,
    /// What to cache, comma-separated: guilds (always), channels, roles, members, users,
    /// emojis, voice, presences.
    #[arg(
        long,
        env = "SHARDYARD_CACHE_RESOURCES",
        default_value = "guilds,channels,roles,members,users,emojis,voice"
    )]
    resources: Resources,
    /// Cache presences too (the same as adding `presences` to `--resources`).
    #[arg(long, env = "SHARDYARD_CACHE_PRESENCES")]
    presences: bool,
    /// Seconds NATS waits for the ack of an event before redelivering it (also how long a
    /// crashed instance's last event blocks the next instance).
    #[arg(long, env = "SHARDYARD_CACHE_ACK_WAIT", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    ack_wait: u64,
    /// Threads; 1 (the default) is a current-thread runtime.
    #[arg(long, env = "SHARDYARD_CACHE_THREADS", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    threads: u16,
}

impl CacheArgs {
    fn into_config(self) -> (CacheConfig, Option<SocketAddr>, u16) {
        let Self {
            bot,
            nats,
            listen,
            admin_addr,
            resources,
            presences,
            ack_wait,
            threads,
        } = self;
        let mut config = CacheConfig::new(bot, nats);
        config.listen = Some(listen);
        config.resources = if presences {
            resources.with(Resource::Presences)
        } else {
            resources
        };
        config.ack_wait = Duration::from_secs(ack_wait);
        (config, admin_addr, threads)
    }
}

pub(crate) fn run(args: CacheArgs) -> anyhow::Result<()> {
    let (config, admin_addr, threads) = args.into_config();
    let runtime = crate::runtime::build(threads)?;
    runtime.block_on(async move {
        let shutdown = tokio_util::sync::CancellationToken::new();
        let status = Arc::new(CacheStatus::default());
        if let Some(addr) = admin_addr {
            let bound = shardyard_admin::spawn(addr, status.clone(), shutdown.clone())
                .await
                .with_context(|| format!("binding the admin address {addr}"))?;
            tracing::info!(%bound, "serving /healthz, /readyz and /metrics");
        }
        let stop = shutdown.clone();
        tokio::spawn(async move {
            crate::signal::shutdown_signal().await;
            tracing::info!("shutting down: finishing the event in flight");
            stop.cancel();
        });
        tracing::info!(bot = %config.bot, resources = ?config.resources, "starting the cache");
        shardyard_cache::run(config, status, shutdown)
            .await
            .context("running the cache")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        cache: CacheArgs,
    }

    #[test]
    fn presences_are_off_unless_asked_for() {
        use clap::Parser as _;
        let base = [
            "cache",
            "--bot",
            "b",
            "--nats",
            "nats://x:1",
            "--listen",
            "127.0.0.1:1",
        ];
        let (config, admin, _) = Cli::try_parse_from(base).unwrap().cache.into_config();
        assert!(!config.resources.contains(Resource::Presences));
        assert!(config.resources.contains(Resource::Members));
        assert_eq!(admin, None);
        let mut with = base.to_vec();
        with.push("--presences");
        let (config, _, _) = Cli::try_parse_from(with).unwrap().cache.into_config();
        assert!(config.resources.contains(Resource::Presences));
        let mut only = base.to_vec();
        only.extend(["--resources", "roles"]);
        let (config, _, _) = Cli::try_parse_from(only).unwrap().cache.into_config();
        assert!(config.resources.contains(Resource::Roles));
        assert!(!config.resources.contains(Resource::Channels));
        let mut bad = base.to_vec();
        bad.extend(["--resources", "bogus"]);
        assert!(Cli::try_parse_from(bad).is_err());
    }
}
