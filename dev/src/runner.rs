//! The operator's reconcile, with local processes for pods: every second the manifest's bot is
//! planned by the operator's planner, the blue/green step decided by the operator's
//! [`decide`], the NATS resources ensured by the operator's [`nats::ensure`], and the processes
//! brought to the plan:
//!
//! - a process the plan has and dev does not run is started (a StatefulSet's pods all at once,
//!   as `podManagementPolicy: Parallel`);
//! - one the plan no longer has (an old generation after its hand-over, a worker scaled away)
//!   is stopped;
//! - one whose command or environment changed is restarted, one at a time per workload and only
//!   while all the others are ready, highest ordinal first (a rolling update).
//!
//! The workers' count is the autoscaler's ([`crate::autoscaler`]) with `provider: hpa` or
//! `keda`, else `minReplicas`.

use std::collections::{BTreeMap, HashMap};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use k8s_openapi::jiff::Timestamp;
use serde::{Deserialize, Serialize};
use shardyard_operator::controller::nats;
use shardyard_operator::controller::reshard::{ReshardInput, Step, decide};
use shardyard_operator::discord::{self, DiscordError, gateway_bot};
use shardyard_operator::plan::{GatewayBot, Generation, OperatorDefaults, PlanInput, plan};
use shardyard_operator::resource::ReshardStatus;
use shardyard_operator::{DiscordBot, ShardCount};
use shardyard_protocol::{BotKey, Token};

use crate::autoscaler::{Autoscaler, HpaSpec};
use crate::interactions::{SimApplication, Wanted, endpoint_url};
use crate::local::{
    Component, Locals, MissingValue, PortBook, ProcessSpec, ServiceSpec, local_plan, process,
};
use crate::service::Endpoints;
use crate::supervisor::{Launch, Supervisor};

/// How often Discord's recommendation is asked again.
const DISCORD_REFRESH: Duration = Duration::from_secs(300);
/// How often the autoscaler looks at the queue depth (the HPA controller's default is 15 s; a
/// laptop's inner loop wants to see it sooner, and the algorithm is the same).
pub const AUTOSCALER_SYNC: Duration = Duration::from_secs(5);

/// What the runner reports after each reconcile, for the view and `/status`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct BotState {
    /// The generation that publishes.
    pub active: Option<GenerationState>,
    /// A reshard in progress.
    pub reshard: Option<ReshardState>,
    /// Workers: wanted.
    pub workers_desired: u32,
    /// Why not, when the bot cannot be planned or run.
    pub blocked: Option<String>,
    /// The autoscaler's last look: the queue depth.
    pub pending: Option<u64>,
    /// Processes held back, as the kubelet holds a pod whose Secret key is missing: why.
    pub held: BTreeMap<String, String>,
}

/// A gateway generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct GenerationState {
    /// Its number.
    pub number: u64,
    /// Its shard total.
    pub total: u32,
}

/// A reshard in progress.
#[derive(Debug, Clone, Serialize)]
pub struct ReshardState {
    /// The new generation.
    pub generation: u64,
    /// Its shards.
    pub shards: u32,
    /// `Starting` or `HandingOver`.
    pub phase: String,
    /// Its READY shards.
    pub ready_shards: u32,
}

/// What survives a dev restart with real Discord (with the simulator, every run is new).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Saved {
    active: Option<GenerationState>,
}

/// The bot, run locally.
pub struct Runner {
    /// The bot as the manifest says, before it is made local.
    pub bot: DiscordBot,
    /// Its key.
    pub key: BotKey,
    /// The token.
    token: Token,
    /// Discord's API base (the simulator's with it).
    pub api_base: String,
    /// The NATS URL every process gets.
    pub nats_url: String,
    binary: PathBuf,
    worker_command: Option<String>,
    state_file: Option<PathBuf>,
    js: jetstream::Context,
    http: reqwest::Client,
    discord: Option<(GatewayBot, Instant)>,
    discord_stale: bool,
    active: Option<Generation>,
    reshard: Option<ReshardStatus>,
    ports: PortBook,
    /// The local Services: (name, port) → (address, endpoints), made when the plan first has them.
    pub services: BTreeMap<(String, u16), (SocketAddr, Endpoints)>,
    service_targets: HashMap<(String, u16), (Component, String)>,
    service_shutdown: tokio_util::sync::CancellationToken,
    /// Every process the plan wants, by name.
    pub desired: BTreeMap<String, ProcessSpec>,
    autoscaler: Autoscaler,
    hpa: Option<HpaSpec>,
    workers: Option<u32>,
    started: Instant,
    /// The last reconcile's outcome.
    pub state: BotState,
    notices: tokio::sync::mpsc::UnboundedSender<String>,
    /// With the simulator: the application it plays, kept in step with `spec.interactions`.
    sim_application: Option<SimApplication>,
    /// What was said about each held-back workload.
    held_said: BTreeMap<String, String>,
    /// With real Discord: the endpoint URL last said.
    endpoint_said: Option<String>,
}

impl std::fmt::Debug for Runner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runner")
            .field("bot", &self.key)
            .field("api_base", &self.api_base)
            .finish_non_exhaustive()
    }
}

/// What a runner is made from.
#[derive(Debug)]
pub struct RunnerConfig {
    /// The bot (validated).
    pub bot: DiscordBot,
    /// The token.
    pub token: Token,
    /// Discord's API base with its version.
    pub api_base: String,
    /// The NATS URL.
    pub nats_url: String,
    /// JetStream on it.
    pub js: jetstream::Context,
    /// The `shardyard` binary.
    pub binary: PathBuf,
    /// `--worker-command`.
    pub worker_command: Option<String>,
    /// Where the active generation is kept between runs (with real Discord).
    pub state_file: Option<PathBuf>,
    /// Where the runner says what it does.
    pub notices: tokio::sync::mpsc::UnboundedSender<String>,
    /// Stops the local Services.
    pub shutdown: tokio_util::sync::CancellationToken,
    /// Whether Discord is dev's simulator (`api_base` is its, `token` its token).
    pub simulator: bool,
}

impl Runner {
    /// A runner for `config.bot`.
    ///
    /// # Errors
    /// When the bot has no name (the manifest reader gives it its namespace).
    pub fn new(config: RunnerConfig) -> Result<Self, String> {
        let RunnerConfig {
            bot,
            token,
            api_base,
            nats_url,
            js,
            binary,
            worker_command,
            state_file,
            notices,
            shutdown,
            simulator,
        } = config;
        let key = BotKey::namespaced(namespace(&bot), &name(&bot)).map_err(|e| e.to_string())?;
        let saved: Saved = state_file
            .as_ref()
            .and_then(|f| std::fs::read(f).ok())
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        let http = discord::client().map_err(|e| shardyard_protocol::error_chain(&e))?;
        let sim_application =
            simulator.then(|| SimApplication::new(http.clone(), &api_base, token.clone()));
        Ok(Self {
            bot,
            key,
            token,
            api_base,
            nats_url,
            binary,
            worker_command,
            state_file,
            js,
            http,
            discord: None,
            discord_stale: true,
            active: saved.active.map(|g| Generation {
                number: g.number,
                total: g.total,
            }),
            reshard: None,
            ports: PortBook::free_ports(),
            services: BTreeMap::new(),
            service_targets: HashMap::new(),
            service_shutdown: shutdown,
            desired: BTreeMap::new(),
            autoscaler: Autoscaler::default(),
            hpa: None,
            workers: None,
            started: Instant::now(),
            state: BotState::default(),
            notices,
            sim_application,
            held_said: BTreeMap::new(),
            endpoint_said: None,
        })
    }

    /// The simulator was started again: a new world, without the interactions endpoint URL
    /// dev set.
    pub fn simulator_restarted(&mut self) {
        if let Some(application) = &mut self.sim_application {
            application.forget();
        }
    }

    fn say(&self, text: impl Into<String>) {
        let _ = self.notices.send(text.into());
    }

    /// A new manifest's bot: Discord is asked again.
    ///
    /// # Errors
    /// When it names another bot (dev runs the one it started with).
    pub fn set_bot(&mut self, bot: DiscordBot) -> Result<(), String> {
        if namespace(&bot) != namespace(&self.bot) || name(&bot) != name(&self.bot) {
            return Err(format!(
                "the manifest now names DiscordBot {}/{}; dev runs {}/{}: stop it and start it \
                 again to run another bot",
                namespace(&bot),
                name(&bot),
                namespace(&self.bot),
                name(&self.bot)
            ));
        }
        self.bot = bot;
        self.discord_stale = true;
        Ok(())
    }

    /// The bot as it runs here: NATS and Discord are the local ones, NATS credentials and CA
    /// are in the URL and the environment (`SSL_CERT_FILE`) instead of Secrets.
    fn local_bot(&self) -> DiscordBot {
        let mut bot = self.bot.clone();
        bot.spec.nats.url.clone_from(&self.nats_url);
        bot.spec.nats.credentials_secret = None;
        bot.spec.nats.ca_secret = None;
        bot.spec.discord = Some(shardyard_operator::resource::DiscordSpec {
            api_base: Some(self.api_base.clone()),
        });
        bot
    }

    fn defaults(&self) -> OperatorDefaults {
        OperatorDefaults {
            api_base: self.api_base.clone(),
            image: shardyard_operator::plan::DEFAULT_IMAGE.to_owned(),
            queue_depth_url: String::new(),
        }
    }

    async fn ask_discord(&mut self) -> Result<Option<GatewayBot>, String> {
        let fresh = self
            .discord
            .as_ref()
            .is_some_and(|(_, at)| at.elapsed() < DISCORD_REFRESH);
        if fresh && !self.discord_stale {
            return Ok(self.discord.map(|(g, _)| g));
        }
        match gateway_bot(&self.http, &self.api_base, &self.token).await {
            Ok(answer) => {
                self.discord = Some((answer.gateway, Instant::now()));
                self.discord_stale = false;
                Ok(Some(answer.gateway))
            }
            Err(DiscordError::InvalidToken) => Err(
                "Discord refused the token (SHARDYARD_TOKEN or --token-file): give the bot's \
                 token"
                    .to_owned(),
            ),
            Err(error) => match self.bot.spec.shards {
                ShardCount::Fixed(_) => Ok(self.discord.map(|(g, _)| g)),
                ShardCount::Auto => Err(format!(
                    "{error}; spec.shards is auto, so the bot waits for Discord's answer"
                )),
            },
        }
    }

    /// One reconcile: plan, NATS, processes. Problems are reported in [`BotState::blocked`]
    /// and tried again on the next one.
    pub async fn reconcile(&mut self, supervisor: &mut Supervisor) {
        match self.reconcile_inner(supervisor).await {
            Ok(()) => {
                if self.state.blocked.take().is_some() {
                    self.say("the bot runs again");
                }
            }
            Err(reason) => {
                if self.state.blocked.as_deref() != Some(reason.as_str()) {
                    self.say(format!("blocked: {reason}"));
                }
                self.state.blocked = Some(reason);
            }
        }
    }

    async fn reconcile_inner(&mut self, supervisor: &mut Supervisor) -> Result<(), String> {
        let discord = self.ask_discord().await?;
        let bot = self.local_bot();
        let defaults = self.defaults();
        let wanted = plan(PlanInput {
            bot: &bot,
            defaults: &defaults,
            discord,
            running: &[],
        })
        .map_err(|e| e.to_string())?;
        let now = Timestamp::now();
        let now_ms = u64::try_from(now.as_millisecond()).unwrap_or(0);
        let new_ready = match &self.reshard {
            Some(r) => {
                nats::ready_shards(&self.js, &self.key, r.generation, r.shards, Some(now_ms))
                    .await
                    .unwrap_or(0)
            }
            None => 0,
        };
        let budget = nats::identify_budget(&self.js, &self.key).await;
        let step = decide(&ReshardInput {
            active: self.active,
            wanted: wanted.total_shards,
            reshard: self.reshard.clone(),
            budget_remaining: budget,
            new_ready,
            now,
        });
        let mut planned_bot = bot;
        if let Step::BudgetLow { active, .. } = &step {
            planned_bot.spec.shards = ShardCount::Fixed(active.total);
        }
        let planned = plan(PlanInput {
            bot: &planned_bot,
            defaults: &defaults,
            discord,
            running: &step.running(),
        })
        .map_err(|e| e.to_string())?;
        nats::ensure(&self.js, &self.key, &planned_bot.spec, &step.publishing())
            .await
            .map_err(|e| shardyard_protocol::error_chain(&e))?;
        self.report_step(&step);
        if let Step::Done { old, .. } = &step {
            nats::forget_ready(&self.js, &self.key, old.number, old.total).await;
        }
        self.active = Some(step.active());
        self.reshard = step.reshard_status();
        self.save();

        let local = local_plan(&planned).map_err(|e| e.to_string())?;
        self.ensure_services(&local.services)?;
        self.hpa = HpaSpec::from_plan(&planned.objects);
        let token_secret = (
            self.bot.spec.token_secret.name.clone(),
            self.bot.spec.token_secret.key.clone(),
        );
        let service_addrs: BTreeMap<(String, u16), SocketAddr> = self
            .services
            .iter()
            .map(|(k, (addr, _))| (k.clone(), *addr))
            .collect();
        // With the simulator, the public key Secret is the simulated application's key.
        let mut secrets = BTreeMap::new();
        let mut key_problem = None;
        if let (Some(interactions), Some(application)) =
            (&self.bot.spec.interactions, &mut self.sim_application)
        {
            let reference = &interactions.public_key_secret;
            match application.public_key().await {
                Ok(key) => {
                    secrets.insert((reference.name.clone(), reference.key.clone()), key);
                }
                Err(reason) => key_problem = Some(reason),
            }
        }
        let environment = |name: &str| std::env::var(name).ok();
        let namespace = namespace(&self.bot).to_owned();
        let locals = Locals {
            namespace: &namespace,
            binary: &self.binary,
            token: &self.token,
            token_secret: (&token_secret.0, &token_secret.1),
            secrets: &secrets,
            worker_command: self.worker_command.as_deref(),
            services: &service_addrs,
            environment: &environment,
        };
        let mut desired = BTreeMap::new();
        for workload in &local.workloads {
            let replicas = if workload.component == Component::Worker {
                let fixed = workload.replicas.unwrap_or(1);
                match (&self.hpa, workload.replicas) {
                    (Some(hpa), None) => *self.workers.get_or_insert(hpa.min),
                    _ => {
                        self.workers = Some(fixed);
                        fixed
                    }
                }
            } else {
                workload.replicas.unwrap_or(1)
            };
            if workload.component == Component::Worker {
                self.state.workers_desired = replicas;
            }
            for ordinal in 0..replicas {
                let spec = process(workload, ordinal, &locals, &mut self.ports)
                    .map_err(|e| e.to_string())?;
                desired.insert(spec.name.clone(), spec);
            }
        }
        self.ports.retain(|name| desired.contains_key(name));
        self.desired = desired;
        self.hold_back(key_problem.as_deref());
        // Before the processes change: a URL is cleared before its endpoint stops.
        self.sync_interactions(&local.services).await;
        self.converge(supervisor).await;
        self.update_endpoints(supervisor);
        self.state.active = self.active.map(|g| GenerationState {
            number: g.number,
            total: g.total,
        });
        self.state.reshard = self.reshard.as_ref().map(|r| ReshardState {
            generation: r.generation,
            shards: r.shards,
            phase: format!("{:?}", r.phase),
            ready_shards: r.ready_shards,
        });
        Ok(())
    }

    /// Records the processes that cannot start for want of a value, and says so once per
    /// workload (again only when the reason changes).
    fn hold_back(&mut self, key_problem: Option<&str>) {
        let mut held = BTreeMap::new();
        let mut by_workload: BTreeMap<String, String> = BTreeMap::new();
        for spec in self.desired.values().filter(|s| !s.missing.is_empty()) {
            let why = self.why_held(&spec.missing, key_problem);
            held.insert(spec.name.clone(), why.clone());
            by_workload.insert(spec.workload.clone(), why);
        }
        for (workload, why) in &by_workload {
            if self.held_said.get(workload) != Some(why) {
                self.say(format!("{workload} is not started: {why}"));
            }
        }
        self.held_said = by_workload;
        self.state.held = held;
    }

    fn why_held(&self, missing: &[MissingValue], key_problem: Option<&str>) -> String {
        let public_key = self
            .bot
            .spec
            .interactions
            .as_ref()
            .map(|i| &i.public_key_secret);
        if let (Some(reason), Some(secret)) = (key_problem, public_key)
            && missing
                .iter()
                .any(|m| m.kind == "Secret" && m.name == secret.name && m.key == secret.key)
        {
            return format!(
                "it waits for the simulated application's public key, which stands for Secret \
                 {} (key {}): {reason}; asked again each second",
                secret.name, secret.key
            );
        }
        let values: Vec<String> = missing.iter().map(ToString::to_string).collect();
        let variables: Vec<&str> = missing.iter().map(|m| m.variable.as_str()).collect();
        format!(
            "{} has no value here (dev reads Secrets and ConfigMaps other than the token's from \
             its own environment, by the variable's name): set {} in dev's environment and start \
             it again",
            values.join(", "),
            variables.join(", ")
        )
    }

    /// What the simulator should do with interactions: the plan's Interactions Service, once a
    /// ready process is behind it.
    fn interactions_wanted(&self, services: &[ServiceSpec]) -> Wanted {
        if self.bot.spec.interactions.is_none() {
            return Wanted::Gateway;
        }
        services
            .iter()
            .filter(|s| s.component == Component::Interactions)
            .flat_map(|s| s.ports.iter().map(|(port, _)| (s.name.clone(), *port)))
            .find_map(|key| self.services.get(&key))
            .filter(|(_, endpoints)| !endpoints.get().is_empty())
            .map_or(Wanted::NotReady, |(addr, _)| {
                Wanted::Endpoint(endpoint_url(*addr))
            })
    }

    /// Points the simulated application at the endpoint, or clears it; with real Discord says
    /// once where the endpoint answers.
    async fn sync_interactions(&mut self, services: &[ServiceSpec]) {
        let wanted = self.interactions_wanted(services);
        if let Some(application) = &mut self.sim_application {
            for text in application.sync(&wanted).await {
                self.say(text);
            }
        } else if let Wanted::Endpoint(url) = wanted
            && self.endpoint_said.as_ref() != Some(&url)
        {
            self.say(format!(
                "interactions: the endpoint answers at {url}; Discord sends interactions only to \
                 an HTTPS URL it can reach: put a tunnel in front of it and set that URL as the \
                 Interactions Endpoint URL in the developer portal"
            ));
            self.endpoint_said = Some(url);
        }
    }

    fn report_step(&self, step: &Step) {
        let before = self.reshard.as_ref().map(|r| (r.generation, r.phase));
        match step {
            Step::First(g) if self.active.is_none() => self.say(format!(
                "generation {} starts with {} shards",
                g.number, g.total
            )),
            Step::Starting { active, new, .. } if before.is_none() => self.say(format!(
                "reshard: generation {} ({} shards) starts beside generation {} ({} shards); it \
                 publishes once all its shards are READY",
                new.number, new.total, active.number, active.total
            )),
            Step::HandingOver { active, new, .. }
                if before.is_some_and(|(_, p)| {
                    p != shardyard_operator::resource::ReshardPhase::HandingOver
                }) =>
            {
                self.say(format!(
                    "reshard: every shard of generation {} is READY; both publish until generation \
                     {} stops",
                    new.number, active.number
                ));
            }
            Step::Done { new, old } => self.say(format!(
                "reshard done: generation {} ({} shards) publishes alone; generation {} stops",
                new.number, new.total, old.number
            )),
            Step::BudgetLow {
                needed, remaining, ..
            } if self.state.blocked.is_none() => self.say(format!(
                "a reshard needs {needed} session starts and {remaining} are left today: it waits"
            )),
            _ => {}
        }
    }

    fn save(&self) {
        if let Some(file) = &self.state_file {
            let saved = Saved {
                active: self.active.map(|g| GenerationState {
                    number: g.number,
                    total: g.total,
                }),
            };
            if let Ok(text) = serde_json::to_vec(&saved) {
                let _ = std::fs::write(file, text);
            }
        }
    }

    fn ensure_services(&mut self, services: &[crate::local::ServiceSpec]) -> Result<(), String> {
        for service in services {
            for (port, target) in &service.ports {
                let key = (service.name.clone(), *port);
                if self.services.contains_key(&key) {
                    continue;
                }
                let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
                    .and_then(|l| l.set_nonblocking(true).map(|()| l))
                    .and_then(tokio::net::TcpListener::from_std)
                    .map_err(|e| format!("no free port for Service {}: {e}", service.name))?;
                let addr = listener
                    .local_addr()
                    .map_err(|e| format!("Service {}: {e}", service.name))?;
                let endpoints = Endpoints::default();
                crate::service::spawn(listener, endpoints.clone(), self.service_shutdown.clone());
                self.services.insert(key.clone(), (addr, endpoints));
                self.service_targets
                    .insert(key, (service.component, target.clone()));
            }
        }
        Ok(())
    }

    fn update_endpoints(&self, supervisor: &Supervisor) {
        for (key, (_, endpoints)) in &self.services {
            let Some((component, target)) = self.service_targets.get(key) else {
                continue;
            };
            let ready = self
                .desired
                .values()
                .filter(|p| p.component == *component)
                .filter(|p| supervisor.health(&p.name).is_some_and(|h| h.ready()))
                .filter_map(|p| p.ports.get(target).copied())
                .collect();
            endpoints.set(ready);
        }
    }

    /// Brings the processes to [`Self::desired`].
    async fn converge(&self, supervisor: &mut Supervisor) {
        let running: Vec<String> = supervisor
            .names()
            .into_iter()
            .filter(|n| is_bot_process(n))
            .collect();
        // Gone from the plan: stopped (in the background: a worker has 30 s to finish).
        let gone: Vec<String> = running
            .iter()
            .filter(|n| !self.desired.contains_key(*n))
            .cloned()
            .collect();
        if !gone.is_empty() {
            supervisor.stop_in_background(&gone);
        }
        // A process short of a value is not started (it is in `state.held`).
        for spec in self.desired.values().filter(|s| s.missing.is_empty()) {
            if supervisor.launch(&spec.name).is_none() && !supervisor.stopping(&spec.name) {
                supervisor.start(launch(spec));
            }
        }
        // Changed: one process per workload at a time, while the rest of it is ready.
        let mut by_workload: BTreeMap<&str, Vec<&ProcessSpec>> = BTreeMap::new();
        for spec in self.desired.values() {
            by_workload.entry(&spec.workload).or_default().push(spec);
        }
        // A workload with a held-back process waits, as a rollout does whose new pod cannot
        // start: the ones that run keep running.
        by_workload.retain(|_, specs| specs.iter().all(|s| s.missing.is_empty()));
        for (workload, mut specs) in by_workload {
            let settled = specs.iter().all(|s| {
                !supervisor.stopping(&s.name)
                    && supervisor.health(&s.name).is_some_and(|h| h.ready())
            });
            if !settled {
                continue;
            }
            specs.sort_by_key(|s| std::cmp::Reverse(s.ordinal));
            if let Some(changed) = specs
                .iter()
                .find(|s| supervisor.launch(&s.name).is_some_and(|l| *l != launch(s)))
            {
                self.say(format!(
                    "{workload}: {} restarts with the new spec (rolling, one at a time)",
                    changed.name
                ));
                supervisor.stop_in_background(std::slice::from_ref(&changed.name));
            }
        }
    }

    /// One autoscaler sync: the queue depth, and the workers it asks for.
    pub async fn autoscale(&mut self) {
        let depth = shardyard_operator::queue_depth::read(&self.js, &self.key, None).await;
        self.state.pending = depth.as_ref().ok().map(|d| d.pending());
        let (Some(hpa), Some(current)) = (self.hpa.clone(), self.workers) else {
            return;
        };
        let decision =
            self.autoscaler
                .decide(&hpa, self.started.elapsed(), current, self.state.pending);
        if decision.replicas != current {
            self.say(format!(
                "autoscaler: workers {current} → {} (queue depth {}: {:.0} per worker, target \
                 {})",
                decision.replicas,
                self.state.pending.unwrap_or(0),
                decision.per_replica,
                hpa.target_per_replica
            ));
            self.workers = Some(decision.replicas);
        }
    }

    /// The bot's event stream.
    ///
    /// # Errors
    /// When JetStream does not know it.
    pub async fn js_stream(
        &self,
    ) -> Result<jetstream::stream::Stream, jetstream::context::GetStreamError> {
        self.js.get_stream(self.key.stream()).await
    }

    /// The processes of each component, for stopping them in order. Every bot process dev
    /// runs is in the plan: one the plan dropped was told to stop at once.
    #[must_use]
    pub fn names_of(&self, supervisor: &Supervisor, component: Component) -> Vec<String> {
        supervisor
            .names()
            .into_iter()
            .filter(|n| self.desired.get(n).map(|s| s.component) == Some(component))
            .collect()
    }
}

/// The processes dev starts besides the bot's.
pub const INFRASTRUCTURE: [&str; 2] = ["sim", "nats"];

fn is_bot_process(name: &str) -> bool {
    !INFRASTRUCTURE.contains(&name)
}

/// A process spec as the supervisor runs it.
#[must_use]
pub fn launch(spec: &ProcessSpec) -> Launch {
    Launch {
        name: spec.name.clone(),
        program: spec.program.clone(),
        args: spec.args.clone(),
        env: spec.env.clone(),
        ready_url: spec.admin.map(|a| format!("http://{a}/readyz")),
        grace: spec.grace,
    }
}

/// The bot's namespace.
#[must_use]
pub fn namespace(bot: &DiscordBot) -> &str {
    bot.metadata.namespace.as_deref().unwrap_or("default")
}

/// The bot's name.
#[must_use]
pub fn name(bot: &DiscordBot) -> String {
    bot.metadata.name.clone().unwrap_or_default()
}

/// The state file of a run with real Discord.
#[must_use]
pub fn state_file(state_dir: &Path) -> PathBuf {
    state_dir.join("bot-state.json")
}
