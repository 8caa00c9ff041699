//! The Kubernetes names and labels of a bot's objects. Object names use the DiscordBot's own
//! name (`<name>-gateway-g<N>`, `<name>-rest`, `<name>-worker`, `<name>-cache`); NATS names use
//! the bot key and live in `shardyard-protocol`.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use shardyard_protocol::BotKey;

/// `app.kubernetes.io/name`: always `shardyard`.
pub const NAME_LABEL: &str = "app.kubernetes.io/name";
/// `app.kubernetes.io/instance`: the DiscordBot's name.
pub const INSTANCE_LABEL: &str = "app.kubernetes.io/instance";
/// `app.kubernetes.io/component`: `gateway`, `rest`, `worker`, `cache`.
pub const COMPONENT_LABEL: &str = "app.kubernetes.io/component";
/// `app.kubernetes.io/managed-by`.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// Its value: the operator's field manager too.
pub const MANAGED_BY: &str = "shardyard-operator";
/// `shardyard.dev/bot`: the DiscordBot's name, on every object and pod of the bot (the REST
/// proxy's NetworkPolicy admits pods with it).
pub const BOT_LABEL: &str = "shardyard.dev/bot";
/// `shardyard.dev/generation`: a gateway generation's number.
pub const GENERATION_LABEL: &str = "shardyard.dev/generation";

/// The gateway StatefulSet (and its headless Service) of generation `number`.
#[must_use]
pub fn gateway_name(bot: &str, number: u64) -> String {
    format!("{bot}-gateway-g{number}")
}

/// The REST proxy's URL inside the cluster, as workers are given it.
#[must_use]
pub fn rest_url(bot: &str, namespace: &str) -> String {
    format!(
        "http://{bot}-rest.{namespace}.svc:{}",
        super::pod::REST_PORT
    )
}

/// What every object of a bot shares.
#[derive(Debug, Clone)]
pub(super) struct Context {
    pub(super) name: String,
    pub(super) namespace: String,
    pub(super) key: BotKey,
    pub(super) owner: Option<OwnerReference>,
}

impl Context {
    pub(super) fn new(
        name: &str,
        namespace: &str,
        key: BotKey,
        owner: Option<OwnerReference>,
    ) -> Self {
        Self {
            name: name.to_owned(),
            namespace: namespace.to_owned(),
            key,
            owner,
        }
    }

    /// `<name>-<suffix>`.
    pub(super) fn object_name(&self, suffix: &str) -> String {
        format!("{}-{suffix}", self.name)
    }

    /// The labels that select a component's pods.
    pub(super) fn selector(&self, component: &str) -> BTreeMap<String, String> {
        BTreeMap::from([
            (NAME_LABEL.to_owned(), "shardyard".to_owned()),
            (INSTANCE_LABEL.to_owned(), self.name.clone()),
            (COMPONENT_LABEL.to_owned(), component.to_owned()),
        ])
    }

    /// Every label of a component's objects and pods.
    pub(super) fn labels(&self, component: &str) -> BTreeMap<String, String> {
        let mut labels = self.selector(component);
        labels.insert(MANAGED_BY_LABEL.to_owned(), MANAGED_BY.to_owned());
        labels.insert(BOT_LABEL.to_owned(), self.name.clone());
        labels
    }

    /// An object's metadata: name, namespace, labels, the bot as its controller (when it has a
    /// uid).
    pub(super) fn metadata(&self, name: String, labels: BTreeMap<String, String>) -> ObjectMeta {
        ObjectMeta {
            name: Some(name),
            namespace: Some(self.namespace.clone()),
            labels: Some(labels),
            owner_references: self.owner.clone().map(|owner| vec![owner]),
            ..ObjectMeta::default()
        }
    }
}
