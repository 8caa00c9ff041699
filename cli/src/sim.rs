//! `shardyard sim`: the Discord simulator as a process.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;
use shardyard_protocol::{Intents, Token};
use shardyard_sim::{SimConfig, Simulator};

/// Flags of `shardyard sim`. The first five are an exact interface other tools script against.
#[derive(Debug, Args)]
pub(crate) struct SimArgs {
    /// Address to serve REST, the gateway and `/_sim/` on.
    #[arg(long, env = "SHARDYARD_SIM_ADDR", default_value = "127.0.0.1:8450")]
    addr: SocketAddr,
    /// The bot token clients must present (first bot).
    #[arg(long, env = "SHARDYARD_SIM_TOKEN", hide_env_values = true, value_parser = parse_token)]
    token: Option<Token>,
    /// Guilds the bot is in; `/gateway/bot` recommends one shard per 1,000.
    #[arg(long)]
    guilds: Option<u32>,
    /// Identifies allowed per 5 s (`session_start_limit.max_concurrency`).
    #[arg(long)]
    max_concurrency: Option<u32>,
    /// Background dispatches per second (0: none; change it live with `POST /_sim/traffic`).
    #[arg(long)]
    events_per_second: Option<f64>,
    /// A JSON file describing several bots and the simulator's knobs (see sim/README.md).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Average members per guild.
    #[arg(long)]
    members_per_guild: Option<u32>,
    /// Session starts per day (`session_start_limit.total`).
    #[arg(long)]
    session_start_limit: Option<u32>,
    /// Privileged intents the application is approved for (names or bits; `0` for none).
    #[arg(long)]
    privileged_intents: Option<Intents>,
    /// REST requests per second per token before a global 429.
    #[arg(long)]
    global_rate_limit: Option<u32>,
    /// HELLO's heartbeat interval in milliseconds.
    #[arg(long)]
    heartbeat_interval_ms: Option<u64>,
    /// How long a disconnected session stays resumable, in seconds.
    #[arg(long)]
    resume_window_secs: Option<u64>,
    /// Invalid REST requests per IP per 10 minutes before the Cloudflare-style ban.
    #[arg(long)]
    invalid_request_limit: Option<u32>,
    /// Seed of the generated world and traffic.
    #[arg(long)]
    seed: Option<u64>,
    /// The URL clients reach the simulator at, when not its bind address (a Service's, in a
    /// cluster): the gateway URLs it hands out name it.
    #[arg(long, env = "SHARDYARD_SIM_ADVERTISE_URL")]
    advertise_url: Option<String>,
}

impl SimArgs {
    fn into_config(self) -> anyhow::Result<(SocketAddr, SimConfig)> {
        let Self {
            addr,
            token,
            guilds,
            max_concurrency,
            events_per_second,
            config,
            members_per_guild,
            session_start_limit,
            privileged_intents,
            global_rate_limit,
            heartbeat_interval_ms,
            resume_window_secs,
            invalid_request_limit,
            seed,
            advertise_url,
        } = self;
        let mut sim = match &config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading simulator config {}", path.display()))?;
                SimConfig::from_json(&text).with_context(|| format!("in {}", path.display()))?
            }
            None => SimConfig::default(),
        };
        // Flags override the file for the first bot and the simulator's knobs.
        let first = sim
            .bots
            .first_mut()
            .context("the simulator needs at least one bot")?;
        if let Some(token) = token {
            first.token = token;
        }
        set(&mut first.guilds, guilds);
        set(&mut first.max_concurrency, max_concurrency);
        set(&mut first.events_per_second, events_per_second);
        set(&mut first.members_per_guild, members_per_guild);
        set(&mut first.session_start_total, session_start_limit);
        set(&mut first.privileged_intents, privileged_intents);
        set(&mut first.global_rate_limit, global_rate_limit);
        set(&mut sim.heartbeat_interval_ms, heartbeat_interval_ms);
        set(&mut sim.resume_window_secs, resume_window_secs);
        set(&mut sim.invalid_request_limit, invalid_request_limit);
        set(&mut sim.seed, seed);
        if advertise_url.is_some() {
            sim.advertise_url = advertise_url;
        }
        if first.events_per_second < 0.0 || !first.events_per_second.is_finite() {
            anyhow::bail!("--events-per-second must be a number ≥ 0");
        }
        sim.fill_defaults()
            .context("invalid simulator configuration")?;
        Ok((addr, sim))
    }
}

/// Wraps the flag in [`Token`] at once, so no `Debug` of the arguments can print it.
fn parse_token(raw: &str) -> Result<Token, std::convert::Infallible> {
    Ok(Token::new(raw))
}

fn set<T>(slot: &mut T, value: Option<T>) {
    if let Some(value) = value {
        *slot = value;
    }
}

pub(crate) fn run(args: SimArgs) -> anyhow::Result<()> {
    let (addr, config) = args.into_config()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let bots: Vec<(String, u32, u32)> = config.bots.iter().map(|b| (b.name.clone(), b.guilds, b.max_concurrency)).collect();
        let sim = Simulator::bind(addr, config).await.with_context(|| format!("binding {addr}"))?;
        let addr = sim.addr();
        for (name, guilds, max_concurrency) in bots {
            tracing::info!(bot = %name, guilds, max_concurrency, "simulated bot");
        }
        // The one line people and scripts read to find the simulator. Not `println!`: a reader
        // that went away (`| head -1`) must not panic the simulator, which then never exits.
        let _ = writeln!(
            std::io::stdout(),
            "shardyard sim listening on http://{addr}  (REST http://{addr}/api/v10, gateway ws://{addr}/gateway, stats http://{addr}/_sim/stats)"
        );
        let shutdown = sim.state().shutdown.clone();
        tokio::spawn(async move {
            crate::signal::shutdown_signal().await;
            shutdown.cancel();
        });
        sim.wait().await.context("serving the simulator")
    })
}
