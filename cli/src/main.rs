//! `shardyard`: one binary, every service a subcommand.

mod sim;

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
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match cli.command {
        Command::Sim(args) => sim::run(args),
    }
}
