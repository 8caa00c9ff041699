//! `shardyard worker`: the example bot (`shardyard_worker::example`) on the worker library.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use shardyard_protocol::names::BotKey;
use shardyard_worker::config::env;
use shardyard_worker::{Backoff, DeliverFrom, WorkerConfig};

/// Flags of `shardyard worker`; `--bot`, `--nats`, `--rest` and `--admin-addr` are an exact
/// interface. Every flag also reads the environment the operator injects.
#[derive(Debug, Args)]
pub(crate) struct WorkerArgs {
    /// The bot's key (`namespace_name` under Kubernetes, the manifest name locally).
    #[arg(long, env = env::BOT)]
    bot: BotKey,
    /// NATS server URL.
    #[arg(long, env = env::NATS_URL)]
    nats: String,
    /// The REST proxy (`http://host:port`).
    #[arg(long, env = env::REST_URL)]
    rest: String,
    /// The worker group: its own durable consumer `workers-<group>`.
    #[arg(long, env = env::GROUP)]
    group: Option<String>,
    /// Serve `/healthz`, `/readyz` and `/metrics` here.
    #[arg(long, env = "SHARDYARD_ADMIN_ADDR")]
    admin_addr: Option<SocketAddr>,
    /// Events handled at once.
    #[arg(long, env = env::CONCURRENCY, default_value_t = 64)]
    concurrency: usize,
    /// Deliveries of an event before it goes to the dead-letter subject.
    #[arg(long, env = env::MAX_DELIVER, default_value_t = 5)]
    max_deliver: u32,
    /// Seconds a delivery may go unacknowledged before JetStream redelivers it.
    #[arg(long, env = env::ACK_WAIT, default_value_t = 30)]
    ack_wait: u64,
    /// Milliseconds before the first retry of a failed event (doubling up to --retry-max-ms).
    #[arg(long, env = env::RETRY_BASE_MS, default_value_t = 1000)]
    retry_base_ms: u64,
    /// The longest wait before a retry, in milliseconds.
    #[arg(long, env = env::RETRY_MAX_MS, default_value_t = 60_000)]
    retry_max_ms: u64,
    /// Seconds in-flight events may take to finish on shutdown.
    #[arg(long, env = env::SHUTDOWN_GRACE, default_value_t = 20)]
    shutdown_grace: u64,
    /// Where a new consumer starts: `all` (the stream's first event) or `new`.
    #[arg(long, env = env::DELIVER, default_value = "all", value_parser = ["all", "new"])]
    deliver: String,
    /// Ordering mode: events of one guild one at a time, in stream order.
    #[arg(long, env = env::ORDERED)]
    ordered: bool,
    /// The shard total for gateway commands until an event says it.
    #[arg(long, env = env::SHARDS)]
    shards: Option<u32>,
    /// Seconds a handler's REST request may wait for its turn at the proxy's rate limits
    /// (`X-Shardyard-Max-Wait`); the handler's event is kept meanwhile.
    #[arg(long, env = env::REST_MAX_WAIT, default_value_t = shardyard_worker::config::DEFAULT_REST_MAX_WAIT.as_secs())]
    rest_max_wait: u64,
    /// Threads running handlers; 1 (the default) is a current-thread runtime.
    #[arg(long, env = "SHARDYARD_WORKER_THREADS", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    threads: u16,
}

impl WorkerArgs {
    fn into_config(self) -> (WorkerConfig, Option<SocketAddr>) {
        let Self {
            bot,
            nats,
            rest,
            group,
            admin_addr,
            concurrency,
            max_deliver,
            ack_wait,
            retry_base_ms,
            retry_max_ms,
            shutdown_grace,
            deliver,
            ordered,
            shards,
            rest_max_wait,
            threads: _,
        } = self;
        let mut config = WorkerConfig::new(bot, nats, rest);
        config.group = group.filter(|g| !g.is_empty());
        config.concurrency = concurrency;
        config.max_deliver = max_deliver;
        config.ack_wait = Duration::from_secs(ack_wait);
        config.retry = Backoff {
            base: Duration::from_millis(retry_base_ms),
            max: Duration::from_millis(retry_max_ms),
        };
        config.shutdown_grace = Duration::from_secs(shutdown_grace);
        config.deliver = if deliver == "new" {
            DeliverFrom::New
        } else {
            DeliverFrom::All
        };
        config.ordered = ordered;
        config.shards = shards;
        config.rest_max_wait = Duration::from_secs(rest_max_wait);
        (config, admin_addr)
    }
}

pub(crate) fn run(args: WorkerArgs) -> anyhow::Result<()> {
    let runtime = crate::runtime::build(args.threads)?;
    let (config, admin_addr) = args.into_config();
    let bot = shardyard_worker::example::bot(config).context("building the example bot")?;
    runtime.block_on(async move {
        let shutdown = tokio_util::sync::CancellationToken::new();
        if let Some(addr) = admin_addr {
            let bound = shardyard_admin::spawn(addr, bot.metrics(), shutdown.clone())
                .await
                .with_context(|| format!("serving /healthz, /readyz and /metrics on {addr}"))?;
            tracing::info!(%bound, "admin endpoints");
        }
        let stop = shutdown.clone();
        tokio::spawn(async move {
            crate::signal::shutdown_signal().await;
            tracing::info!("shutting down: no more pulls; in-flight events finish or go back");
            stop.cancel();
        });
        bot.run(shutdown).await.context("running the worker")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        worker: WorkerArgs,
    }

    #[test]
    fn flags_become_the_worker_config() {
        use clap::Parser as _;
        let cli = Cli::try_parse_from([
            "worker",
            "--bot",
            "mybot",
            "--nats",
            "nats://127.0.0.1:4222",
            "--rest",
            "http://127.0.0.1:8080",
            "--max-deliver",
            "3",
            "--ordered",
            "--rest-max-wait",
            "45",
        ])
        .unwrap();
        let (config, admin) = cli.worker.into_config();
        assert_eq!(config.rest_max_wait, Duration::from_secs(45));
        assert_eq!(config.bot.as_str(), "mybot");
        assert_eq!(config.rest_url, "http://127.0.0.1:8080");
        assert_eq!(config.max_deliver, 3);
        assert!(config.ordered);
        assert_eq!(admin, None);
        assert!(
            Cli::try_parse_from(["worker", "--bot", "Bad Bot", "--nats", "x", "--rest", "y"])
                .is_err()
        );
        let defaults = Cli::try_parse_from(["worker", "--bot", "b", "--nats", "x", "--rest", "y"])
            .unwrap()
            .worker
            .into_config()
            .0;
        assert_eq!(
            defaults.rest_max_wait,
            shardyard_worker::config::DEFAULT_REST_MAX_WAIT
        );
    }
}
