//! The planner: a `DiscordBot`, Discord's answer to `GET /gateway/bot` and the gateway
//! generations to run become every object the operator applies. Pure: no I/O, no clock, so it
//! is tested exhaustively from small inputs (`tests.rs`) and `shardyard plan` prints exactly what
//! the operator would apply.

pub mod autoscaling;
mod gateway;
mod names;
mod pod;
pub mod quantity;
mod services;
#[cfg(test)]
mod tests;
mod workers;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use serde::Serialize;
use shardyard_protocol::shard::{pod_count, round_up_to_concurrency};
use shardyard_protocol::{BotKey, Intents};

use crate::resource::{DiscordBot, ShardCount};
pub use names::{
    BOT_LABEL, COMPONENT_LABEL, GENERATION_LABEL, INSTANCE_LABEL, MANAGED_BY, MANAGED_BY_LABEL,
    NAME_LABEL, gateway_name, rest_url,
};

/// Discord's API by default (`--api-base` of `shardyard operator`).
pub const DEFAULT_API_BASE: &str = "https://discord.com/api/v10";
/// Where KEDA reaches the operator (`--queue-depth-url`): its Service as the chart installs it
/// with the release name `shardyard` in the namespace `shardyard`, at the admin port.
pub const DEFAULT_QUEUE_DEPTH_URL: &str = "http://shardyard-metrics.shardyard.svc:9090";
/// shardyard's published image, at this build's version: every component's by default.
pub const DEFAULT_IMAGE: &str = concat!("ghcr.io/shardyard/shardyard:", env!("CARGO_PKG_VERSION"));

/// What the operator brings to every plan: its flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperatorDefaults {
    /// The API base of bots that set none (`--api-base`).
    pub api_base: String,
    /// The image of every component a bot does not give one for (the operator's own: one image,
    /// every subcommand).
    pub image: String,
    /// The operator's own address as KEDA's `metrics-api` trigger reaches it
    /// (`--queue-depth-url`).
    pub queue_depth_url: String,
}

/// Discord's answer to `GET /gateway/bot`, as far as planning needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GatewayBot {
    /// The recommended shard count.
    pub shards: u32,
    /// Identifies allowed per 5 s.
    pub max_concurrency: u32,
}

/// A gateway generation to run: `<name>-gateway-g<number>` with `total` shards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Generation {
    /// N, from 1.
    pub number: u64,
    /// Its shard total.
    pub total: u32,
}

/// What to plan from.
#[derive(Debug, Clone, Copy)]
pub struct PlanInput<'a> {
    /// The bot, with its namespace, name and uid (owner references need them).
    pub bot: &'a DiscordBot,
    /// The operator's defaults.
    pub defaults: &'a OperatorDefaults,
    /// Discord's answer; needed for `shards: auto` (and for `max_concurrency`, else 1).
    pub discord: Option<GatewayBot>,
    /// The generations that run, besides the planned one. Empty for a new bot: generation 1 is
    /// planned. During a reshard the old generation is here and the new one is planned beside
    /// it.
    pub running: &'a [Generation],
}

/// Everything the operator applies for a bot.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// The bot's key (`<namespace>_<name>`), from which every NATS name is built.
    pub bot_key: BotKey,
    /// The shard total the bot should run with now.
    pub total_shards: u32,
    /// `max_concurrency` used for the rounding.
    pub max_concurrency: u32,
    /// The generation that holds `total_shards`: a running one with that total, else a new one.
    pub target: Generation,
    /// Gateway pods per generation (`ceil(total / shardsPerPod)`).
    pub gateway_replicas: u32,
    /// The objects, in the order they are applied.
    pub objects: Vec<Child>,
}

/// An object the operator applies.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Child {
    /// A generation's gateway pods.
    StatefulSet(Box<StatefulSet>),
    /// The gateway generations' headless Services, the REST proxy's and the cache's.
    Service(Box<Service>),
    /// The REST proxy, the workers and the cache.
    Deployment(Box<Deployment>),
    /// Disruption budgets of the gateway generations and the REST proxy.
    PodDisruptionBudget(Box<PodDisruptionBudget>),
    /// Only the bot's own pods reach its REST proxy.
    NetworkPolicy(Box<NetworkPolicy>),
    /// The workers' autoscaler with `provider: hpa`.
    HorizontalPodAutoscaler(Box<HorizontalPodAutoscaler>),
    /// The workers' KEDA ScaledObject with `provider: keda` (KEDA's own kind: no Rust type).
    ScaledObject(Box<serde_json::Value>),
}

impl Child {
    /// `Kind/name`, for logs and errors.
    #[must_use]
    pub fn describe(&self) -> String {
        let (kind, name) = match self {
            Self::StatefulSet(o) => ("StatefulSet", o.metadata.name.as_deref()),
            Self::Service(o) => ("Service", o.metadata.name.as_deref()),
            Self::Deployment(o) => ("Deployment", o.metadata.name.as_deref()),
            Self::PodDisruptionBudget(o) => ("PodDisruptionBudget", o.metadata.name.as_deref()),
            Self::NetworkPolicy(o) => ("NetworkPolicy", o.metadata.name.as_deref()),
            Self::HorizontalPodAutoscaler(o) => {
                ("HorizontalPodAutoscaler", o.metadata.name.as_deref())
            }
            Self::ScaledObject(o) => ("ScaledObject", Some(autoscaling::value_name(o))),
        };
        format!("{kind}/{}", name.unwrap_or(""))
    }

    /// Its name.
    #[must_use]
    pub fn name(&self) -> String {
        self.describe()
            .split_once('/')
            .map(|(_, name)| name.to_owned())
            .unwrap_or_default()
    }
}

/// Why a bot cannot be planned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// `shards: auto` and no answer from Discord.
    #[error("spec.shards is auto: Discord's GET /gateway/bot must answer first")]
    NeedsDiscord,
    /// The bot has no namespace or name (a manifest outside a cluster gets them from
    /// `shardyard plan`).
    #[error("the DiscordBot has no {0}")]
    Unnamed(&'static str),
    /// The namespace and name do not make a bot key.
    #[error("the DiscordBot's namespace and name do not make a bot key: {0}")]
    BotKey(String),
    /// A field the schema cannot check.
    #[error("{field}: {reason}")]
    Invalid {
        /// The field's path.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
}

/// `nats://host` → `nats://<credentials>@host`, for each comma-separated URL (what the pods'
/// `SHARDYARD_NATS_URL` becomes once Kubernetes expands the credentials into it).
#[must_use]
pub fn with_nats_credentials(urls: &str, credentials: &str) -> String {
    pod::with_credentials(urls, credentials)
}

/// Plans a bot.
///
/// # Errors
/// [`PlanError`] when `shards: auto` has no answer, or a field is invalid in a way the schema
/// cannot see (an unknown intent in a list, a pod template that is not one).
pub fn plan(input: PlanInput<'_>) -> Result<Plan, PlanError> {
    let bot = input.bot;
    let namespace = bot
        .metadata
        .namespace
        .as_deref()
        .ok_or(PlanError::Unnamed("namespace"))?;
    let name = bot
        .metadata
        .name
        .as_deref()
        .ok_or(PlanError::Unnamed("name"))?;
    let bot_key =
        BotKey::namespaced(namespace, name).map_err(|e| PlanError::BotKey(e.to_string()))?;
    let spec = &bot.spec;

    let max_concurrency = input.discord.map_or(1, |d| d.max_concurrency.max(1));
    let wanted = match spec.shards {
        ShardCount::Fixed(n) => n,
        ShardCount::Auto => input.discord.ok_or(PlanError::NeedsDiscord)?.shards.max(1),
    };
    let total_shards = round_up_to_concurrency(wanted, max_concurrency);
    let target = input
        .running
        .iter()
        .copied()
        .find(|g| g.total == total_shards)
        .unwrap_or(Generation {
            number: input.running.iter().map(|g| g.number).max().unwrap_or(0) + 1,
            total: total_shards,
        });

    check_intents(&spec.intents)?;
    let context = names::Context::new(name, namespace, bot_key.clone(), owner(bot)?);
    let common = pod::Common::new(&context, spec, input.defaults)?;

    let mut generations: Vec<Generation> = input.running.to_vec();
    if !generations.contains(&target) {
        generations.push(target);
    }
    generations.sort_by_key(|g| g.number);

    let mut objects = Vec::new();
    for generation in &generations {
        objects.extend(gateway::objects(&context, &common, spec, *generation)?);
    }
    objects.extend(services::rest(&context, &common, spec)?);
    if spec.cache.enabled {
        objects.extend(services::cache(&context, &common, spec)?);
    }
    if let Some(interactions) = &spec.interactions {
        objects.extend(services::interactions(&context, &common, interactions)?);
    }
    let workers = workers::deployment(&context, &common, spec, total_shards)?;
    let scaled = workers.name();
    objects.push(workers);
    objects.extend(autoscaling::objects(
        &context,
        spec,
        input.defaults,
        &scaled,
    )?);

    Ok(Plan {
        bot_key,
        total_shards,
        max_concurrency,
        target,
        gateway_replicas: pod_count(total_shards, spec.shards_per_pod),
        objects,
    })
}

/// The intents, checked by the same parser the gateway uses (the schema's list comes from it
/// too, so only a bot read from a file can fail here).
fn check_intents(names: &[String]) -> Result<Intents, PlanError> {
    if names.is_empty() {
        return Err(PlanError::Invalid {
            field: "spec.intents",
            reason: "at least one intent".to_owned(),
        });
    }
    names
        .join(",")
        .parse::<Intents>()
        .map_err(|e| PlanError::Invalid {
            field: "spec.intents",
            reason: e.to_string(),
        })
}

/// The owner reference every child carries: the bot, as the controller. A bot read from a file
/// (`shardyard plan`) has no uid until the API server gives it one, and an owner reference
/// without one is invalid: its objects then carry none (the operator's always do).
fn owner(bot: &DiscordBot) -> Result<Option<OwnerReference>, PlanError> {
    use kube::Resource as _;
    let name = bot
        .metadata
        .name
        .clone()
        .ok_or(PlanError::Unnamed("name"))?;
    Ok(bot.metadata.uid.clone().map(|uid| OwnerReference {
        api_version: DiscordBot::api_version(&()).into_owned(),
        kind: DiscordBot::kind(&()).into_owned(),
        name,
        uid,
        controller: Some(true),
        block_owner_deletion: Some(true),
    }))
}
