//! The `DiscordBot` custom resource (`shardyard.dev/v1alpha1`): what a user writes, and the
//! status the operator reports. The CRD's schema is generated from these types (`shardyard
//! crd`), defaults and validation included, so the API server fills in what a first manifest
//! leaves out and refuses a bad one with a message that says what to fix.
//!
//! The fields `tokenSecret` (`{name, key}`), `shards`, `shardsPerPod`, `intents`, `nats.url` and
//! `discord.apiBase` are an exact interface: tools script against them.

// kube's `KubeSchema` derive declares a copy of each struct in a private module to derive its schema
// from; that copy's `pub` is what the lint sees.
#![allow(unreachable_pub)]

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use shardyard_protocol::Intents;

/// The API group.
pub const GROUP: &str = "shardyard.dev";
/// The API version.
pub const VERSION: &str = "v1alpha1";

/// A Discord bot run as microservices: its gateway shards, event stream, workers, REST proxy
/// and cache.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "shardyard.dev",
    version = "v1alpha1",
    kind = "DiscordBot",
    namespaced,
    shortname = "dbot",
    category = "shardyard",
    status = "DiscordBotStatus",
    derive = "PartialEq",
    doc = "A Discord bot run as microservices: gateway shards publishing every event to NATS \
           JetStream, workers consuming them, a REST proxy sharing Discord's rate limits, and a \
           central cache.",
    printcolumn = r#"{"name":"Shards","type":"integer","jsonPath":".status.shards","description":"Shards of the active gateway generation"}"#,
    printcolumn = r#"{"name":"Ready","type":"integer","jsonPath":".status.readyShards","description":"Shards whose session is READY"}"#,
    printcolumn = r#"{"name":"Workers","type":"integer","jsonPath":".status.workers","description":"Worker replicas"}"#,
    printcolumn = r#"{"name":"Pending","type":"integer","jsonPath":".status.pending","description":"Events waiting for the workers"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    validation = Rule::new("self.spec.workers.minReplicas >= 1 || self.spec.autoscaling.provider != 'hpa'").message("spec.workers.minReplicas may be 0 only with autoscaling.provider keda (or none): an HPA cannot scale to zero, and a bot without workers answers no interaction"),
    validation = Rule::new("self.metadata.name.size() <= 40").message("metadata.name must be at most 40 characters: the gateway StatefulSets are named <name>-gateway-g<N>, and their pods' names must fit a DNS label"),
)]
#[serde(rename_all = "camelCase")]
pub struct DiscordBotSpec {
    /// The Secret holding the bot token.
    pub token_secret: SecretKeyRef,
    /// `auto` (Discord's recommendation from `GET /gateway/bot`) or a fixed number of shards.
    /// Either is rounded up to a multiple of the bot's `max_concurrency`.
    #[serde(default)]
    pub shards: ShardCount,
    /// Shards each gateway pod holds.
    #[serde(default = "default_shards_per_pod")]
    #[schemars(range(min = 1, max = 2500))]
    pub shards_per_pod: u32,
    /// Gateway intents by name (`GUILDS`, `GUILD_MESSAGES`, `MESSAGE_CONTENT`, …), or the sets
    /// `NON_PRIVILEGED`, `PRIVILEGED`, `ALL`.
    #[serde(default = "default_intents")]
    #[schemars(schema_with = "intent_names")]
    pub intents: Vec<String>,
    /// The NATS server the bot's events, KV buckets and commands go through.
    pub nats: NatsSpec,
    /// Where Discord is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discord: Option<DiscordSpec>,
    /// The gateway pods.
    #[serde(default)]
    pub gateway: GatewaySpec,
    /// The worker Deployment, which runs the bot's own code.
    #[serde(default)]
    pub workers: WorkersSpec,
    /// The REST proxy.
    #[serde(default)]
    pub rest: RestSpec,
    /// The central cache.
    #[serde(default)]
    pub cache: CacheSpec,
    /// Interactions over HTTP: `shardyard interactions` behind a Service of its own
    /// (`<name>-interactions`), to be set as the application's Interactions Endpoint URL
    /// (behind HTTPS). Without it, interactions arrive over the gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interactions: Option<InteractionsSpec>,
    /// The event stream's and the dead-letter stream's limits.
    #[serde(default)]
    pub stream: StreamSpec,
    /// How the workers scale.
    #[serde(default)]
    pub autoscaling: AutoscalingSpec,
}

fn default_shards_per_pod() -> u32 {
    16
}

fn default_intents() -> Vec<String> {
    vec!["NON_PRIVILEGED".to_owned()]
}

/// The sets `shardyard gateway --intents` names besides Discord's own intents.
pub const INTENT_SETS: [&str; 3] = ["NON_PRIVILEGED", "PRIVILEGED", "ALL"];

/// A list of intent names: the schema lists every name the gateway knows, so the API server
/// refuses an unknown one with the names it supports.
fn intent_names(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let names: Vec<&str> = Intents::NAMED
        .iter()
        .map(|(name, _)| *name)
        .chain(INTENT_SETS)
        .collect();
    schemars::json_schema!({
        "description": "Gateway intents by name (GUILDS, GUILD_MESSAGES, MESSAGE_CONTENT, …), or the sets NON_PRIVILEGED, PRIVILEGED, ALL.",
        "type": "array",
        "minItems": 1,
        "items": {"type": "string", "enum": names},
        "default": default_intents(),
    })
}

/// A key of a Secret in the bot's namespace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct SecretKeyRef {
    /// The Secret's name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// The key in the Secret.
    #[serde(default = "default_token_key")]
    #[schemars(length(min = 1))]
    pub key: String,
}

fn default_token_key() -> String {
    "token".to_owned()
}

/// A key of a Secret, with no default key.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct SecretRef {
    /// The Secret's name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// The key in the Secret.
    #[schemars(length(min = 1))]
    pub key: String,
}

/// `auto`, or a fixed number of shards.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ShardCount {
    /// Discord's recommendation.
    #[default]
    Auto,
    /// This many.
    Fixed(u32),
}

impl Serialize for ShardCount {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Auto => serializer.serialize_str("auto"),
            Self::Fixed(n) => serializer.serialize_u32(*n),
        }
    }
}

impl<'de> Deserialize<'de> for ShardCount {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(u32),
            Text(String),
        }
        match Raw::deserialize(deserializer)? {
            Raw::Number(0) => Err(serde::de::Error::custom("shards must be at least 1")),
            Raw::Number(n) => Ok(Self::Fixed(n)),
            Raw::Text(text) if text == "auto" => Ok(Self::Auto),
            Raw::Text(text) => match text.parse::<u32>() {
                Ok(n) if n > 0 => Ok(Self::Fixed(n)),
                _ => Err(serde::de::Error::custom(format!(
                    "shards must be \"auto\" or a whole number of at least 1, not {text:?}"
                ))),
            },
        }
    }
}

impl JsonSchema for ShardCount {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "ShardCount".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "`auto` (Discord's recommendation) or a fixed number of shards.",
            "x-kubernetes-int-or-string": true,
            "default": "auto",
            "x-kubernetes-validations": [{
                "rule": "string(self) == 'auto' || (string(self).matches('^[0-9]+$') && int(self) >= 1)",
                "message": "shards must be \"auto\" or a whole number of at least 1",
            }],
        })
    }
}

/// The NATS connection.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NatsSpec {
    /// NATS server URL(s), comma separated: `nats://host:4222` (TLS when the server asks for
    /// it) or `tls://host:4222` (TLS required).
    #[x_kube(validation = Rule::new("self.matches('^(nats|tls)://[^\\\\s,]+( *, *(nats|tls)://[^\\\\s,]+)*$')").message("nats.url must be nats://host:port or tls://host:port, several separated by commas"))]
    #[schemars(length(min = 1, max = 2048))]
    pub url: String,
    /// A Secret key holding NATS credentials (a `.creds` file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret: Option<SecretRef>,
    /// A Secret key holding the CA bundle that NATS' certificate is checked against.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_secret: Option<SecretRef>,
    /// What deleting the bot does to its streams and KV buckets: `Delete` them, or `Retain`
    /// them.
    #[serde(default)]
    pub on_delete: NatsDeletionPolicy,
}

/// What happens to a deleted bot's NATS resources.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum NatsDeletionPolicy {
    /// The streams and buckets are deleted with the bot.
    #[default]
    Delete,
    /// They stay, for a bot that will come back or data that must be kept.
    Retain,
}

/// Where Discord is.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct DiscordSpec {
    /// Discord's API base with its version (`https://discord.com/api/v10`, or a simulator's).
    /// Without it the operator's `--api-base` applies. The REST proxy gets its unversioned form
    /// as `--upstream`; the gateway asks through the proxy, in this version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('^https?://[^/]+(/[^?#]*)?/v[0-9]+/?$')").message("discord.apiBase must be an http(s) URL ending in the API version, like https://discord.com/api/v10"))]
    #[schemars(length(max = 2048))]
    pub api_base: Option<String>,
}

/// The gateway pods.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct GatewaySpec {
    /// The image (the operator's own by default: one image, every subcommand).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// The gateway container's resources.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "resources")]
    pub resources: Option<ResourceRequirements>,
    /// The transport compression Discord uses: `zlib-stream` or `none`.
    #[serde(default)]
    pub compression: Compression,
    /// The presence the shards identify with (Discord's presence update object).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "any_object")]
    pub presence: Option<serde_json::Value>,
    /// Members of a guild at which Discord stops sending offline members (50 to 250).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 50, max = 250))]
    pub large_threshold: Option<u8>,
}

/// Gateway transport compression.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Compression {
    /// `compress=zlib-stream`.
    #[default]
    #[serde(rename = "zlib-stream")]
    ZlibStream,
    /// `compress=zstd-stream`: fewer bytes and less CPU per event than zlib, more memory per
    /// shard.
    #[serde(rename = "zstd-stream")]
    ZstdStream,
    /// No transport compression.
    #[serde(rename = "none")]
    None,
}

impl Compression {
    /// The gateway's `--compression` value.
    #[must_use]
    pub const fn as_flag(self) -> &'static str {
        match self {
            Self::ZlibStream => "zlib-stream",
            Self::ZstdStream => "zstd-stream",
            Self::None => "none",
        }
    }
}

/// The worker Deployment.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.minReplicas <= self.maxReplicas").message("workers.minReplicas must not exceed workers.maxReplicas"))]
pub struct WorkersSpec {
    /// The pod template of the bot's own worker image; the example bot (`shardyard worker`)
    /// when absent. The operator adds the `SHARDYARD_*` environment (bot key, NATS, REST proxy)
    /// to every container; never the token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "any_object")]
    pub template: Option<serde_json::Value>,
    /// The fewest worker replicas (the replicas, with `autoscaling.provider: none`). 0 only with
    /// KEDA, which can scale to zero and back; an HPA cannot.
    #[serde(default = "default_min_replicas")]
    #[schemars(range(min = 0))]
    pub min_replicas: i32,
    /// The most worker replicas.
    #[serde(default = "default_max_replicas")]
    #[schemars(range(min = 1))]
    pub max_replicas: i32,
    /// Events waiting per replica that the autoscaler aims for.
    #[serde(default = "default_target_pending")]
    #[schemars(range(min = 1))]
    pub target_pending_per_replica: i64,
}

impl Default for WorkersSpec {
    fn default() -> Self {
        Self {
            template: None,
            min_replicas: default_min_replicas(),
            max_replicas: default_max_replicas(),
            target_pending_per_replica: default_target_pending(),
        }
    }
}

fn default_min_replicas() -> i32 {
    1
}

fn default_max_replicas() -> i32 {
    10
}

fn default_target_pending() -> i64 {
    100
}

/// The REST proxy.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RestSpec {
    /// Replicas; they share the bot's rate limits over NATS.
    #[serde(default = "default_rest_replicas")]
    #[schemars(range(min = 1, max = 20))]
    pub replicas: i32,
    /// The proxy container's resources.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "resources")]
    pub resources: Option<ResourceRequirements>,
}

impl Default for RestSpec {
    fn default() -> Self {
        Self {
            replicas: default_rest_replicas(),
            resources: None,
        }
    }
}

fn default_rest_replicas() -> i32 {
    2
}

/// The Interactions Endpoint.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct InteractionsSpec {
    /// The Secret key holding the application's public key (64 hex digits: "Public Key" in
    /// Discord's developer portal).
    pub public_key_secret: SecretRef,
    /// Replicas behind the Service; each answers the requests it holds.
    #[serde(default = "default_interactions_replicas")]
    #[schemars(range(min = 1, max = 20))]
    pub replicas: i32,
    /// Milliseconds Discord's request waits for a worker's answer before the endpoint defers
    /// (Discord allows 3,000).
    #[serde(default = "default_answer_within_ms")]
    #[schemars(range(min = 1, max = 2999))]
    pub answer_within_ms: u32,
    /// The Service's type: `ClusterIP` behind an Ingress (the default), `LoadBalancer` or
    /// `NodePort`.
    #[serde(default)]
    pub service_type: InteractionsServiceType,
    /// The endpoint container's resources.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "resources")]
    pub resources: Option<ResourceRequirements>,
}

fn default_interactions_replicas() -> i32 {
    2
}

fn default_answer_within_ms() -> u32 {
    2_500
}

/// How the Interactions Endpoint's Service is exposed.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum InteractionsServiceType {
    /// Inside the cluster, for an Ingress (which gives Discord the HTTPS it requires).
    #[default]
    ClusterIP,
    /// A cloud load balancer.
    LoadBalancer,
    /// A port on every node.
    NodePort,
}

impl InteractionsServiceType {
    /// The Service's `spec.type`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::ClusterIP => "ClusterIP",
            Self::LoadBalancer => "LoadBalancer",
            Self::NodePort => "NodePort",
        }
    }
}

/// The central cache.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CacheSpec {
    /// Whether the cache runs.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// The cache container's resources.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "resources")]
    pub resources: Option<ResourceRequirements>,
}

impl Default for CacheSpec {
    fn default() -> Self {
        Self {
            enabled: true,
            resources: None,
        }
    }
}

fn default_true() -> bool {
    true
}

/// The event stream's limits, and the dead-letter stream's beside them.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct StreamSpec {
    /// How long events are kept (`24h`, `90m`, `7d`; `0` for no limit). Past it the oldest go.
    #[serde(default = "default_max_age")]
    #[x_kube(validation = Rule::new("self.matches('^(0|[0-9]+[smhd])$')").message("stream.maxAge must be 0 or a whole number with s, m, h or d, like 24h"))]
    #[schemars(length(max = 32))]
    pub max_age: String,
    /// The most bytes kept (`10Gi`; `0` for no limit). JetStream reserves it from the server's
    /// storage when the stream is created.
    #[serde(default = "default_zero")]
    #[schemars(schema_with = "byte_size")]
    pub max_bytes: Quantity,
    /// `File` or `Memory`.
    #[serde(default)]
    pub storage: StreamStorage,
    /// Copies of the stream in a NATS cluster (1 to 5).
    #[serde(default = "default_stream_replicas")]
    #[schemars(range(min = 1, max = 5))]
    pub replicas: u8,
    /// The dead-letter stream's limits.
    #[serde(default)]
    pub dead_letter: DeadLetterSpec,
}

impl Default for StreamSpec {
    fn default() -> Self {
        Self {
            max_age: default_max_age(),
            max_bytes: default_zero(),
            storage: StreamStorage::default(),
            replicas: default_stream_replicas(),
            dead_letter: DeadLetterSpec::default(),
        }
    }
}

fn default_max_age() -> String {
    "24h".to_owned()
}

fn default_zero() -> Quantity {
    Quantity("0".to_owned())
}

fn default_stream_replicas() -> u8 {
    1
}

/// Where JetStream keeps a stream.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum StreamStorage {
    /// On disk.
    #[default]
    File,
    /// In memory.
    Memory,
}

/// The dead-letter stream's limits.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetterSpec {
    /// How long dead letters are kept (`336h` is 14 days).
    #[serde(default = "default_dead_letter_age")]
    #[x_kube(validation = Rule::new("self.matches('^(0|[0-9]+[smhd])$')").message("stream.deadLetter.maxAge must be 0 or a whole number with s, m, h or d, like 14d"))]
    #[schemars(length(max = 32))]
    pub max_age: String,
    /// The most bytes of dead letters kept.
    #[serde(default = "default_dead_letter_bytes")]
    #[schemars(schema_with = "byte_size")]
    pub max_bytes: Quantity,
}

impl Default for DeadLetterSpec {
    fn default() -> Self {
        Self {
            max_age: default_dead_letter_age(),
            max_bytes: default_dead_letter_bytes(),
        }
    }
}

fn default_dead_letter_age() -> String {
    "14d".to_owned()
}

fn default_dead_letter_bytes() -> Quantity {
    Quantity("1Gi".to_owned())
}

/// How the workers scale.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.provider != 'keda' || self.keda.trigger != 'nats-jetstream' || has(self.keda.natsMonitoringEndpoint)").message("autoscaling.keda.natsMonitoringEndpoint is required with the nats-jetstream trigger: KEDA reads the consumer from a NATS server's monitoring port (host:8222)"))]
pub struct AutoscalingSpec {
    /// `hpa` (an HPA on the queue depth, through the operator's external metrics API), `keda`
    /// (a KEDA ScaledObject) or `none` (`workers.minReplicas` replicas).
    #[serde(default)]
    pub provider: AutoscalingProvider,
    /// Seconds the backlog must stay low before workers are removed (the HPA's scale-down
    /// stabilization window): a burst scales up at once, and a lull does not flap replicas
    /// down and up again.
    #[serde(default = "default_scale_down_stabilization")]
    #[schemars(range(min = 0, max = 3600))]
    pub scale_down_stabilization_seconds: i32,
    /// KEDA's settings (with `provider: keda`).
    #[serde(default)]
    pub keda: KedaSpec,
}

impl Default for AutoscalingSpec {
    fn default() -> Self {
        Self {
            provider: AutoscalingProvider::default(),
            scale_down_stabilization_seconds: default_scale_down_stabilization(),
            keda: KedaSpec::default(),
        }
    }
}

fn default_scale_down_stabilization() -> i32 {
    300
}

/// The autoscaler.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum AutoscalingProvider {
    /// A HorizontalPodAutoscaler on an External metric.
    #[default]
    Hpa,
    /// A KEDA ScaledObject.
    Keda,
    /// No autoscaling: `minReplicas` workers.
    None,
}

/// How KEDA reads the queue depth.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct KedaSpec {
    /// `metrics-api` (the operator's number, read from the consumer's leader) or
    /// `nats-jetstream` (KEDA's own NATS scaler, which reads a server's monitoring endpoint).
    #[serde(default)]
    pub trigger: KedaTrigger,
    /// `host:port` of a NATS server's monitoring endpoint, for the `nats-jetstream` trigger.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub nats_monitoring_endpoint: Option<String>,
    /// The NATS account of the bot's stream, for the `nats-jetstream` trigger (`$G` when the
    /// server has no accounts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub nats_account: Option<String>,
}

/// KEDA's trigger.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum KedaTrigger {
    /// KEDA's `metrics-api` scaler, asking the operator.
    #[default]
    MetricsApi,
    /// KEDA's `nats-jetstream` scaler.
    NatsJetstream,
}

/// A container's `resources` (`requests` and `limits` of quantities), described briefly: the
/// upstream schema repeats a page about quantities under every key. The quantities themselves
/// are checked when the operator applies the pods (a rule per map value costs more than the API
/// server allows a CRD); a bad one shows in the bot's status.
fn resources(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let amounts = schemars::json_schema!({
        "type": "object",
        "additionalProperties": {"x-kubernetes-int-or-string": true},
    });
    schemars::json_schema!({
        "description": "The container's resources, as in a pod: requests and limits (cpu, memory).",
        "type": "object",
        "properties": {"requests": amounts, "limits": amounts},
    })
}

/// A size in bytes: a number or a quantity. (A structural schema cannot type the branches of an
/// `anyOf`, so a pattern there would also pass any string: the rule checks it.)
fn byte_size(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "description": "Bytes: a number or a quantity like 10Gi (0 for no limit).",
        "x-kubernetes-int-or-string": true,
        "x-kubernetes-validations": [{
            "rule": "string(self).matches('^[0-9]+(\\\\.[0-9]+)?([KMGTPE]i|[kMGTPE])?$')",
            "message": "must be a number of bytes or a quantity like 512Mi or 10Gi",
        }],
    })
}

/// An object of any shape (a pod template, a presence), kept as the user wrote it.
fn any_object(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true,
    })
}

/// What the operator reports.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct DiscordBotStatus {
    /// `Ready`, `Progressing`, `Degraded`, `Resharding`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The spec generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Discord's recommended shard count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recommended_shards: Option<u32>,
    /// Shards of the active gateway generation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shards: Option<u32>,
    /// Identifies allowed per 5 s (Discord's `max_concurrency`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrency: Option<u32>,
    /// Shards whose session is READY.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_shards: Option<u32>,
    /// Session starts left today (`session_start_limit.remaining`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_starts_remaining: Option<u32>,
    /// Events waiting for the workers (the consumer's pending + unacknowledged).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<u64>,
    /// Worker replicas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workers: Option<i32>,
    /// The gateway generation that publishes (`<name>-gateway-g<N>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway_generation: Option<u64>,
    /// A reshard in progress: the new generation beside the one that publishes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reshard: Option<ReshardStatus>,
}

/// A blue/green reshard in progress. The operator carries on from it after a restart.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ReshardStatus {
    /// The new generation's number.
    pub generation: u64,
    /// Its shard total.
    pub shards: u32,
    /// `Starting` (its shards identify and receive, but do not publish) or `HandingOver` (it
    /// publishes beside the old generation, briefly, before the old one stops).
    pub phase: ReshardPhase,
    /// Its shards that reported READY.
    #[serde(default)]
    pub ready_shards: u32,
    /// When the hand-over began (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handover_since: Option<String>,
}

/// Where a reshard is.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReshardPhase {
    /// The new generation starts and waits for every shard to be READY.
    Starting,
    /// Both generations publish; then the old one stops.
    HandingOver,
}
