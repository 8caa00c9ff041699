//! `shardyard dev`: a DiscordBot manifest run on this machine, as the operator would run it.

use std::io::IsTerminal as _;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;
use shardyard_dev::{DEFAULT_SIM_ADDR, DevOptions};
use shardyard_protocol::Token;

/// Flags of `shardyard dev`, an exact interface:
/// `shardyard dev -f FILE [--sim] [--sim-addr ADDR] [--nats URL] [--token-file F]
/// [--state-dir DIR] [--worker-command CMD]`.
#[derive(Debug, Args)]
pub(crate) struct DevArgs {
    /// The DiscordBot manifest, as `kubectl apply -f` takes it; edits are applied as they are
    /// saved.
    #[arg(short = 'f', long = "filename")]
    file: PathBuf,
    /// Run the Discord simulator in Discord's place even with a token (without one it always
    /// does).
    #[arg(long)]
    sim: bool,
    /// Where the simulator listens (REST, gateway and its `/_sim/` API).
    #[arg(long, default_value = DEFAULT_SIM_ADDR)]
    sim_addr: SocketAddr,
    /// A NATS server with JetStream to use (overrides the manifest's `spec.nats.url`); without
    /// it dev starts its own.
    #[arg(long)]
    nats: Option<String>,
    /// A file holding the bot token (else `SHARDYARD_TOKEN`). The manifest's `tokenSecret`
    /// names a cluster Secret, which means nothing here.
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// Where the NATS store and the logs live.
    #[arg(long, default_value = ".shardyard/dev")]
    state_dir: PathBuf,
    /// The command that runs your worker (built on the worker crate) in place of the example
    /// bot, or of the image your `spec.workers.template` names.
    #[arg(long)]
    worker_command: Option<String>,
    /// dev's own /healthz, /readyz, /metrics and /status (the state as JSON); a free port
    /// unless given. Also written to `<state-dir>/dev.json`.
    #[arg(long, env = "SHARDYARD_DEV_ADMIN_ADDR")]
    admin_addr: Option<SocketAddr>,
    /// The namespace of a bot whose manifest names none.
    #[arg(long, default_value = "default")]
    namespace: String,
    /// Guilds of the simulated bot (`shards: auto` gets one shard per 1,000).
    #[arg(long, env = "SHARDYARD_DEV_GUILDS", default_value_t = 2500)]
    sim_guilds: u32,
    /// The simulator's background events per second (`POST /_sim/traffic` changes it live).
    #[arg(long, env = "SHARDYARD_DEV_EVENTS_PER_SECOND", default_value_t = 50.0)]
    sim_events_per_second: f64,
}

pub(crate) fn run(args: DevArgs) -> anyhow::Result<()> {
    let DevArgs {
        file,
        sim,
        sim_addr,
        nats,
        token_file,
        state_dir,
        worker_command,
        admin_addr,
        namespace,
        sim_guilds,
        sim_events_per_second,
    } = args;
    let token = match &token_file {
        Some(path) => Some(Token::new(&std::fs::read_to_string(path).with_context(
            || format!("reading the token file {} (--token-file)", path.display()),
        )?)),
        None => std::env::var("SHARDYARD_TOKEN")
            .ok()
            .map(|t| Token::new(&t)),
    }
    .filter(|t| !t.is_empty());
    if let Some(path) = &token_file
        && token.is_none()
    {
        anyhow::bail!("the token file {} (--token-file) is empty", path.display());
    }
    let binary = std::env::current_exe().context("finding the shardyard binary")?;
    let options = DevOptions {
        file,
        sim,
        sim_addr,
        nats,
        token,
        state_dir,
        worker_command,
        binary,
        namespace,
        admin_addr: admin_addr.unwrap_or_else(shardyard_dev::any_local_port),
        live: std::io::stdout().is_terminal(),
        sim_guilds,
        sim_events_per_second,
    };
    let state_dir = options.state_dir.clone();
    let runtime = crate::runtime::build(2)?;
    runtime.block_on(async move {
        let shutdown = tokio_util::sync::CancellationToken::new();
        let signal = shutdown.clone();
        tokio::spawn(async move {
            // A closed terminal (SIGHUP) stops dev as Ctrl-C does: nothing is left behind.
            let hangup = async {
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
                    Ok(mut hangup) => {
                        hangup.recv().await;
                    }
                    Err(_) => std::future::pending().await,
                }
            };
            tokio::select! {
                () = crate::signal::shutdown_signal() => {}
                () = hangup => {}
            }
            signal.cancel();
            // A second Ctrl-C while stopping: at once.
            crate::signal::shutdown_signal().await;
            eprintln!("dev: a second Ctrl-C: killing everything now");
            shardyard_dev::supervisor::Supervisor::kill_leftovers(&state_dir);
            std::process::exit(130);
        });
        shardyard_dev::run(options, shutdown)
            .await
            .map_err(anyhow::Error::new)
    })
}
