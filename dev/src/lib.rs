//! `shardyard dev -f bot.yaml`: the manifest a user would `kubectl apply`, run on one machine
//! the way the operator would run it. The same manifest reader and schema check, the same
//! planner, the same blue/green steps and NATS resources as the operator; local processes in
//! place of pods ([`local`]), a TCP balancer in place of each Service ([`service`]), a
//! supervisor in place of the kubelet ([`supervisor`]), and the HPA's algorithm on the real
//! queue depth ([`autoscaler`]).
//!
//! Without `--nats` it starts its own nats-server; without a token (or with `--sim`) it starts
//! the simulator in Discord's place. Its state (the NATS store, the logs) lives in
//! `--state-dir`.
//!
//! With `spec.interactions` it runs the Interactions Endpoint too. With the simulator, the
//! simulated application stands for the bot's ([`interactions`]): its public key is the value
//! of `spec.interactions.publicKeySecret`, and its Interactions Endpoint URL is pointed at the
//! endpoint's local Service once a process is ready behind it (cleared when the manifest drops
//! `spec.interactions`), so `POST /_sim/interactions` reaches the bot over HTTP as Discord's
//! interactions would. With real Discord the key comes from dev's environment
//! (`SHARDYARD_PUBLIC_KEY`), as every Secret other than the token's does; a process whose
//! Secret or ConfigMap value is missing is not started, and dev says which variable to set.

pub mod autoscaler;
pub mod interactions;
pub mod local;
pub mod nats_server;
pub mod observe;
pub mod ports;
pub mod runner;
pub mod service;
pub mod supervisor;
pub mod view;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::get;
use serde_json::json;
use shardyard_operator::DiscordBot;
use shardyard_operator::manifest::read_bots;
use shardyard_protocol::Token;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::local::Component;
use crate::observe::{Observer, Snapshot};
use crate::runner::{AUTOSCALER_SYNC, Runner, RunnerConfig};
use crate::supervisor::{Launch, Notice, Supervisor};
use crate::view::View;

pub use nats_server::NatsServerError;

/// Where the simulator listens unless `--sim-addr` says otherwise.
pub const DEFAULT_SIM_ADDR: &str = "127.0.0.1:8450";
/// The token the simulator is given when the user gives none.
const SIM_TOKEN: &str = "shardyard-dev-token";
/// How often the manifest is looked at.
const WATCH_PERIOD: Duration = Duration::from_millis(500);
/// How long the simulator and nats-server have to come up.
const INFRA_TIMEOUT: Duration = Duration::from_secs(30);

/// What dev is asked to do.
#[derive(Debug, Clone)]
pub struct DevOptions {
    /// The manifest.
    pub file: PathBuf,
    /// `--sim`: the simulator even with a token.
    pub sim: bool,
    /// `--sim-addr`.
    pub sim_addr: SocketAddr,
    /// `--nats`: a NATS server to use instead of starting one.
    pub nats: Option<String>,
    /// The token (`SHARDYARD_TOKEN` or `--token-file`).
    pub token: Option<Token>,
    /// `--state-dir`.
    pub state_dir: PathBuf,
    /// `--worker-command`.
    pub worker_command: Option<String>,
    /// The `shardyard` binary every component runs.
    pub binary: PathBuf,
    /// The namespace of a bot whose manifest names none.
    pub namespace: String,
    /// dev's own `/healthz`, `/readyz`, `/metrics` and `/status`.
    pub admin_addr: SocketAddr,
    /// A terminal view redrawn in place, or plain lines.
    pub live: bool,
    /// The simulator's guilds.
    pub sim_guilds: u32,
    /// The simulator's background events per second.
    pub sim_events_per_second: f64,
}

/// Why dev could not start.
#[derive(Debug, thiserror::Error)]
pub enum DevError {
    /// The manifest cannot be read or is invalid.
    #[error("{file}: {reason}")]
    Manifest {
        /// The file.
        file: PathBuf,
        /// Why, as the API server would say.
        reason: String,
    },
    /// An address cannot be listened on.
    #[error("{what} {addr} is in use or cannot be listened on ({reason}): {hint}")]
    Address {
        /// What it is for.
        what: &'static str,
        /// It.
        addr: SocketAddr,
        /// The error.
        reason: String,
        /// What to do.
        hint: &'static str,
    },
    /// The state directory.
    #[error("the state directory {dir}: {source}")]
    StateDir {
        /// It.
        dir: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// No nats-server.
    #[error(transparent)]
    NatsServer(#[from] NatsServerError),
    /// NATS cannot be reached.
    #[error("cannot reach NATS at {url}{}: {reason}", if *.given { " (--nats)" } else { "" })]
    Nats {
        /// The URL, without credentials.
        url: String,
        /// Whether it was `--nats`.
        given: bool,
        /// Why.
        reason: String,
    },
    /// The simulator or nats-server did not come up.
    #[error("{name} did not become ready within {timeout:?}; its log {log}:\n{tail}")]
    NotReady {
        /// Which.
        name: String,
        /// How long it had.
        timeout: Duration,
        /// Its log file.
        log: String,
        /// The log's end.
        tail: String,
    },
}

/// Reads `file` and returns its one DiscordBot, checked as the API server checks it.
///
/// # Errors
/// [`DevError::Manifest`].
pub fn read_manifest(file: &Path, namespace: &str) -> Result<DiscordBot, DevError> {
    let refused = |reason: String| DevError::Manifest {
        file: file.to_path_buf(),
        reason,
    };
    let text = std::fs::read_to_string(file).map_err(|e| refused(e.to_string()))?;
    let mut bots = read_bots(&text, namespace).map_err(|e| refused(e.to_string()))?;
    if bots.len() > 1 {
        return Err(refused(format!(
            "it holds {} DiscordBots; dev runs one: give it a file with one",
            bots.len()
        )));
    }
    bots.pop()
        .ok_or_else(|| refused("no DiscordBot".to_owned()))
}

/// Runs the bot until `shutdown`, then stops everything in order: workers (they finish what
/// they hold), gateways (they save their sessions), the REST proxies and the cache, then the
/// simulator and nats-server.
///
/// # Errors
/// [`DevError`] when it cannot start; nothing is left running then.
#[allow(clippy::too_many_lines)]
pub async fn run(options: DevOptions, shutdown: CancellationToken) -> Result<(), DevError> {
    let bot = read_manifest(&options.file, &options.namespace)?;
    let state_dir = options.state_dir.clone();
    std::fs::create_dir_all(&state_dir).map_err(|source| DevError::StateDir {
        dir: state_dir.clone(),
        source,
    })?;
    let mut view = View::new(options.live);
    let leftovers = Supervisor::kill_leftovers(&state_dir);
    if !leftovers.is_empty() {
        view.notice(&format!(
            "stopped what a previous dev left running: {}",
            leftovers.join(", ")
        ));
    }
    // dev's own admin server first: a taken address stops dev before anything starts.
    let status: Arc<RwLock<Snapshot>> = Arc::default();
    let admin_shutdown = CancellationToken::new();
    let routes = {
        let status = Arc::clone(&status);
        Router::new().route(
            "/status",
            get(move || {
                let status = Arc::clone(&status);
                async move {
                    let snapshot = status.read().map(|s| s.clone()).unwrap_or_default();
                    axum::Json(snapshot)
                }
            }),
        )
    };
    let admin_status = Arc::new(DevStatus(Arc::clone(&status)));
    let admin_addr = shardyard_admin::spawn_with(
        options.admin_addr,
        admin_status,
        routes,
        admin_shutdown.clone(),
    )
    .await
    .map_err(|e| DevError::Address {
        what: "dev's admin address",
        addr: options.admin_addr,
        reason: e.to_string(),
        hint: "give another with --admin-addr",
    })?;

    let use_sim = options.sim || options.token.is_none();
    // Found before anything starts: without it nothing can.
    let own_nats = match &options.nats {
        Some(_) => None,
        None => Some(nats_server::prepare(&state_dir)?),
    };
    let (notice_tx, mut notice_rx) = mpsc::unbounded_channel::<Notice>();
    let mut supervisor =
        Supervisor::new(&state_dir, notice_tx).map_err(|source| DevError::StateDir {
            dir: state_dir.clone(),
            source,
        })?;
    let token;
    let api_base;
    if use_sim {
        token = options
            .token
            .clone()
            .unwrap_or_else(|| Token::new(SIM_TOKEN));
        std::net::TcpListener::bind(options.sim_addr).map_err(|e| DevError::Address {
            what: "the simulator's address",
            addr: options.sim_addr,
            reason: e.to_string(),
            hint: "is another `shardyard dev` running? Stop it, or choose another with --sim-addr",
        })?;
        // Each run with the simulator is a new world: yesterday's events and sessions belong
        // to another one.
        let _ = std::fs::remove_dir_all(state_dir.join("nats"));
        let _ = std::fs::remove_file(runner::state_file(&state_dir));
        view.notice(&format!(
            "{}: the simulator stands in for Discord at http://{} (its /_sim/ API is there too)",
            if options.token.is_none() {
                "no token (SHARDYARD_TOKEN or --token-file)"
            } else {
                "--sim"
            },
            options.sim_addr
        ));
        supervisor.start(Launch {
            name: "sim".to_owned(),
            program: options.binary.clone(),
            args: vec![
                "sim".to_owned(),
                "--addr".to_owned(),
                options.sim_addr.to_string(),
                "--guilds".to_owned(),
                options.sim_guilds.to_string(),
                "--events-per-second".to_owned(),
                options.sim_events_per_second.to_string(),
            ],
            env: vec![(
                "SHARDYARD_SIM_TOKEN".to_owned(),
                local::EnvValue::Secret(token.expose().to_owned()),
            )],
            ready_url: Some(format!("http://{}/readyz", options.sim_addr)),
            grace: Duration::from_secs(5),
        });
        api_base = format!("http://{}/api/v10", options.sim_addr);
    } else {
        token = options.token.clone().unwrap_or_else(|| Token::new(""));
        api_base = bot
            .spec
            .discord
            .as_ref()
            .and_then(|d| d.api_base.clone())
            .unwrap_or_else(|| shardyard_operator::plan::DEFAULT_API_BASE.to_owned());
        view.notice(&format!("Discord: {api_base}"));
    }

    if let Some(server) = &own_nats {
        supervisor.start(server.launch.clone());
    }
    let nats_url = own_nats.as_ref().map_or_else(
        || options.nats.clone().unwrap_or_default(),
        |s| s.url.clone(),
    );
    let own_nats = own_nats.is_some();
    let started = async {
        if use_sim {
            wait_ready(&mut supervisor, "sim", &mut notice_rx, &mut view).await?;
        }
        if own_nats {
            wait_ready(&mut supervisor, "nats", &mut notice_rx, &mut view).await?;
        }
        Ok::<(), DevError>(())
    };
    if let Err(error) = started.await {
        supervisor.stop(&supervisor.names()).await;
        return Err(error);
    }
    let client = match shardyard_operator::controller::nats::connect(&nats_url).await {
        Ok(client) => client,
        Err(error) => {
            supervisor.stop(&supervisor.names()).await;
            return Err(DevError::Nats {
                url: shardyard_operator::controller::nats::without_credentials(&nats_url),
                given: options.nats.is_some(),
                reason: shardyard_protocol::error_chain(&error),
            });
        }
    };
    let js = async_nats::jetstream::new(client.clone());

    let (say_tx, mut say_rx) = mpsc::unbounded_channel::<String>();
    let services_shutdown = CancellationToken::new();
    let mut runner = match Runner::new(RunnerConfig {
        bot,
        token,
        api_base: api_base.clone(),
        nats_url: nats_url.clone(),
        js,
        binary: options.binary.clone(),
        worker_command: options.worker_command.clone(),
        state_file: (!use_sim).then(|| runner::state_file(&state_dir)),
        notices: say_tx,
        shutdown: services_shutdown.clone(),
        simulator: use_sim,
    }) {
        Ok(runner) => runner,
        Err(reason) => {
            supervisor.stop(&supervisor.names()).await;
            return Err(DevError::Manifest {
                file: options.file.clone(),
                reason,
            });
        }
    };

    let addresses = json!({
        "pid": std::process::id(),
        "admin": format!("http://{admin_addr}"),
        "nats": shardyard_operator::controller::nats::without_credentials(&nats_url),
        "sim": use_sim.then(|| format!("http://{}", options.sim_addr)),
        "api_base": api_base,
        "logs": state_dir.join("logs"),
    });
    let _ = std::fs::write(
        state_dir.join("dev.json"),
        serde_json::to_vec_pretty(&addresses).unwrap_or_default(),
    );
    view.notice(&format!(
        "bot {}/{} (key {}) · NATS {} · dev's status http://{admin_addr}/status · logs {}",
        runner::namespace(&runner.bot),
        runner::name(&runner.bot),
        runner.key.as_str(),
        shardyard_operator::controller::nats::without_credentials(&nats_url),
        state_dir.join("logs").display()
    ));

    let mut observer = Observer::default();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut watch = tokio::time::interval(WATCH_PERIOD);
    watch.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut manifest = std::fs::read(&options.file).unwrap_or_default();
    let mut last_autoscale: Option<Instant> = None;
    let mut announced = false;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            Some(notice) = notice_rx.recv() => {
                if let Notice::Started { name, restarts, .. } = &notice
                    && name == "sim"
                    && *restarts > 0
                {
                    runner.simulator_restarted();
                }
                view.notice(&describe(&notice));
            }
            Some(text) = say_rx.recv() => view.notice(&text),
            _ = watch.tick() => {
                let now = std::fs::read(&options.file).unwrap_or_default();
                if now != manifest {
                    manifest = now;
                    match read_manifest(&options.file, &options.namespace) {
                        Ok(bot) => match runner.set_bot(bot) {
                            Ok(()) => {
                                view.notice("the manifest changed: applying it");
                                runner.reconcile(&mut supervisor).await;
                            }
                            Err(reason) => view.notice(&format!("{reason}; the bot keeps running as it was")),
                        },
                        Err(error) => view.notice(&format!(
                            "the edited manifest is refused, so the bot keeps running as it was: {error}"
                        )),
                    }
                }
            }
            _ = tick.tick() => {
                runner.reconcile(&mut supervisor).await;
                if last_autoscale.is_none_or(|at| at.elapsed() >= AUTOSCALER_SYNC) {
                    runner.autoscale().await;
                    last_autoscale = Some(Instant::now());
                }
                let snapshot = observer.observe(&runner, &supervisor).await;
                if !announced && !snapshot.services.is_empty() {
                    announced = true;
                    for (service, addr) in &snapshot.services {
                        view.notice(&format!("Service {service}: {addr}"));
                    }
                    if use_sim {
                        view.notice(&format!(
                            "try: curl -s -XPOST -H 'content-type: application/json' http://{0}/_sim/say -d '{{\"content\":\"!ping\"}}' \
                             (it answers the channel_id), then the bot's pong: curl -s http://{0}/_sim/channels/<channel_id>/messages",
                            options.sim_addr
                        ));
                    }
                }
                if let Ok(mut shared) = status.write() {
                    *shared = snapshot.clone();
                }
                view.update(snapshot);
            }
        }
    }

    // Stopping, in order.
    view.notice("stopping: workers first, then gateways (they save their sessions), then the rest");
    supervisor.wait_stopping().await;
    for component in [Component::Worker, Component::Gateway] {
        let names = runner.names_of(&supervisor, component);
        supervisor.stop(&names).await;
    }
    let rest: Vec<String> = supervisor
        .names()
        .into_iter()
        .filter(|n| !runner::INFRASTRUCTURE.contains(&n.as_str()))
        .collect();
    supervisor.stop(&rest).await;
    services_shutdown.cancel();
    let _ = client.drain().await;
    supervisor.stop(&["sim".to_owned()]).await;
    supervisor.stop(&["nats".to_owned()]).await;
    admin_shutdown.cancel();
    while let Ok(notice) = notice_rx.try_recv() {
        view.notice(&describe(&notice));
    }
    view.finish();
    println!(
        "dev: stopped; the logs are in {}",
        state_dir.join("logs").display()
    );
    Ok(())
}

async fn wait_ready(
    supervisor: &mut Supervisor,
    name: &str,
    notices: &mut mpsc::UnboundedReceiver<Notice>,
    view: &mut View,
) -> Result<(), DevError> {
    let deadline = Instant::now() + INFRA_TIMEOUT;
    loop {
        while let Ok(notice) = notices.try_recv() {
            view.notice(&describe(&notice));
        }
        if supervisor.health(name).is_some_and(|h| h.ready()) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            let log = supervisor.log_path(name);
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = lines[lines.len().saturating_sub(20)..].join("\n");
            return Err(DevError::NotReady {
                name: name.to_owned(),
                timeout: INFRA_TIMEOUT,
                log: log.display().to_string(),
                tail,
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn describe(notice: &Notice) -> String {
    match notice {
        Notice::Started {
            name,
            pid,
            restarts,
            at,
        } => {
            let at = at
                .as_ref()
                .map_or_else(String::new, |at| format!(", health and metrics at {at}"));
            if *restarts == 0 {
                format!("{name} started (pid {pid}{at})")
            } else {
                format!("{name} started again (pid {pid}, restart {restarts}{at})")
            }
        }
        Notice::Died {
            name,
            status,
            backoff,
        } => format!(
            "{name} died ({status}); restarting in {} s (its log: logs/{name}.log)",
            backoff.as_secs()
        ),
        Notice::SpawnFailed { name, reason } => format!("{name} could not be started: {reason}"),
        Notice::Stopped { name, status } => format!("{name} stopped ({status})"),
    }
}

/// dev's own readiness and metrics.
struct DevStatus(Arc<RwLock<Snapshot>>);

impl shardyard_admin::Status for DevStatus {
    fn readiness(&self) -> Result<(), String> {
        let snapshot = self.0.read().map_err(|_| "poisoned".to_owned())?;
        if let Some(blocked) = &snapshot.state.blocked {
            return Err(blocked.clone());
        }
        if !snapshot.state.held.is_empty() {
            let held: Vec<&str> = snapshot.state.held.keys().map(String::as_str).collect();
            return Err(format!(
                "not started for want of a value: {}",
                held.join(", ")
            ));
        }
        let waiting: Vec<&str> = snapshot
            .processes
            .iter()
            .filter(|p| !p.ready)
            .map(|p| p.name.as_str())
            .collect();
        if snapshot.processes.is_empty() {
            Err("starting".to_owned())
        } else if waiting.is_empty() {
            Ok(())
        } else {
            Err(format!("not ready: {}", waiting.join(", ")))
        }
    }

    fn render_metrics(&self, out: &mut String) {
        use std::fmt::Write as _;

        use shardyard_admin::prom::header;
        let Ok(s) = self.0.read() else {
            return;
        };
        header(
            out,
            "shardyard_dev_processes",
            "gauge",
            "Processes dev runs, by component and readiness.",
        );
        for component in [
            Some(Component::Gateway),
            Some(Component::Rest),
            Some(Component::Cache),
            Some(Component::Worker),
            Some(Component::Interactions),
            None,
        ] {
            for ready in [true, false] {
                let n = s
                    .processes
                    .iter()
                    .filter(|p| p.component == component && p.ready == ready)
                    .count();
                let _ = writeln!(
                    out,
                    "shardyard_dev_processes{{component=\"{}\",ready=\"{ready}\"}} {n}",
                    component.map_or("infrastructure", Component::label)
                );
            }
        }
        header(
            out,
            "shardyard_dev_restarts",
            "gauge",
            "Restarts of the processes that run now, after they died.",
        );
        let restarts: u32 = s.processes.iter().map(|p| p.restarts).sum();
        let _ = writeln!(out, "shardyard_dev_restarts {restarts}");
        header(
            out,
            "shardyard_dev_workers_desired",
            "gauge",
            "Workers the plan (or the autoscaler) wants.",
        );
        let _ = writeln!(
            out,
            "shardyard_dev_workers_desired {}",
            s.state.workers_desired
        );
        header(
            out,
            "shardyard_dev_pending_events",
            "gauge",
            "Events waiting for the workers, at the autoscaler's last look.",
        );
        let _ = writeln!(
            out,
            "shardyard_dev_pending_events {}",
            s.state.pending.unwrap_or(0)
        );
        header(
            out,
            "shardyard_dev_active_generation",
            "gauge",
            "The gateway generation that publishes.",
        );
        let _ = writeln!(
            out,
            "shardyard_dev_active_generation {}",
            s.state.active.map_or(0, |a| a.number)
        );
    }
}

/// `127.0.0.1:0`: dev's admin address unless one is given.
#[must_use]
pub fn any_local_port() -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, 0))
}
