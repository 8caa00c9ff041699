//! `shardyard`: one binary, every service a subcommand.

mod cache;
mod dev;
mod gateway;
mod interactions;
mod operator;
mod pause;
mod plan;
mod rest;
mod runtime;
mod signal;
mod sim;
mod worker;

use clap::{Parser, Subcommand};

/// Run a large Discord bot as microservices.
#[derive(Debug, Parser)]
#[command(name = "shardyard", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the Discord simulator (gateway + REST) for tests and local development.
    Sim(sim::SimArgs),
    /// Hold a bot's Discord shards and publish every event to JetStream.
    Gateway(gateway::GatewayArgs),
    /// Proxy Discord's REST API, sharing its rate limits between every client.
    Rest(rest::RestArgs),
    /// Apply the bot's cache-relevant events, in order, to its cache in NATS KV.
    Cache(cache::CacheArgs),
    /// Take Discord's interactions over HTTP (an Interactions Endpoint): verify, publish to the
    /// bot's stream, answer with the worker's response within 3 s.
    Interactions(interactions::InteractionsArgs),
    /// Run the example bot on the worker library: consume the bot's events, answer `!ping` and
    /// `/ping` through the REST proxy.
    Worker(worker::WorkerArgs),
    /// Reconcile DiscordBots into gateways, workers, a REST proxy and a cache (Kubernetes).
    Operator(operator::OperatorArgs),
    /// Print every object the operator would apply for a DiscordBot manifest, as YAML.
    Plan(plan::PlanArgs),
    /// Print the DiscordBot CustomResourceDefinition as YAML.
    Crd,
    /// Run a DiscordBot manifest on this machine as the operator would run it: the simulator
    /// (or Discord), NATS, and the bot's processes, with a live view.
    Dev(dev::DevArgs),
    /// Hold a pod sandbox's namespaces until SIGTERM (the pause image's entrypoint).
    Pause,
}

/// The log filter without `RUST_LOG`. twilight-http logs every 429 it re-sends at info, one line
/// per attempt; the REST proxy counts those refusals in its metrics instead
/// (`shardyard_rest_local_answers_total`, `shardyard_rest_held_refusals_total`).
const DEFAULT_LOG_FILTER: &str = "info,twilight_http::response=warn";

/// `shardyard dev`'s own filter: its view is the output, and each process logs to its own file.
const DEV_LOG_FILTER: &str = "warn";

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let default_filter = if matches!(cli.command, Command::Dev(_)) {
        DEV_LOG_FILTER
    } else {
        DEFAULT_LOG_FILTER
    };
    // TLS (Discord's gateway and API are wss:// and https://) uses ring, installed once here.
    let _ = rustls::crypto::ring::default_provider().install_default();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| default_filter.into()),
        )
        .with_writer(|| LogWriter)
        // Colours for a person at a terminal only: a pod's log, a file or a pipe gets plain
        // text that log collectors and grep read.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match cli.command {
        Command::Sim(args) => sim::run(args),
        Command::Gateway(args) => gateway::run(args),
        Command::Rest(args) => rest::run(args),
        Command::Cache(args) => cache::run(args),
        Command::Interactions(args) => interactions::run(args),
        Command::Worker(args) => worker::run(args),
        Command::Operator(args) => operator::run(args),
        Command::Plan(args) => plan::run(args),
        Command::Crd => plan::crd(),
        Command::Dev(args) => dev::run(args),
        Command::Pause => pause::run(),
    }
}

/// Standard error for the logs, where a line that cannot be written (its reader went away) is
/// dropped: tracing-subscriber reports a failed write with `eprintln!`, which panics on that
/// same broken pipe, in whatever task was logging (a service's shutdown, say).
struct LogWriter;

impl std::io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let _ = std::io::stderr().write_all(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let _ = std::io::stderr().flush();
        Ok(())
    }
}
