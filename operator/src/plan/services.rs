//! The REST proxy (`<name>-rest`: Deployment, Service, PodDisruptionBudget, and a NetworkPolicy
//! that admits only the bot's own pods to it) and the cache (`<name>-cache`: Deployment and the
//! Service of its read-only HTTP API).

use serde_json::json;

use super::gateway::typed;
use super::names::{BOT_LABEL, Context};
use super::pod::{
    ADMIN_PORT, CACHE_PORT, Common, INTERACTIONS_PORT, REST_PORT, secret_env, unversioned,
};
use super::{Child, PlanError};
use crate::resource::{DiscordBotSpec, InteractionsSpec};

/// Seconds the proxy has to finish the requests it holds.
const REST_GRACE_SECONDS: i64 = 40;
/// Seconds the cache has to finish the event it applies.
const CACHE_GRACE_SECONDS: i64 = 15;
/// Seconds the endpoint has to answer the requests it holds (each within 3 s).
const INTERACTIONS_GRACE_SECONDS: i64 = 10;

/// The names one Deployment-backed component's objects share, and the objects they have in
/// common.
struct Component<'a> {
    context: &'a Context,
    name: String,
    selector: std::collections::BTreeMap<String, String>,
    labels: std::collections::BTreeMap<String, String>,
}

impl<'a> Component<'a> {
    fn new(context: &'a Context, component: &str) -> Self {
        Self {
            context,
            name: context.object_name(component),
            selector: context.selector(component),
            labels: context.labels(component),
        }
    }

    fn metadata(&self) -> serde_json::Value {
        json!(
            self.context
                .metadata(self.name.clone(), self.labels.clone())
        )
    }

    /// Its Deployment of `replicas` pods running `pod_spec`.
    fn deployment(&self, replicas: i32, pod_spec: serde_json::Value) -> serde_json::Value {
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": self.metadata(),
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": self.selector},
                "template": {
                    "metadata": {"labels": self.labels},
                    "spec": pod_spec,
                },
            },
        })
    }

    /// Its Service: `port` to the pods' `http` port, with `extra` fields in its spec.
    fn service(&self, port: u16, extra: serde_json::Value) -> serde_json::Value {
        let mut spec = json!({
            "selector": self.selector,
            "ports": [{"name": "http", "port": port, "targetPort": "http"}],
        });
        if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
            spec.extend(extra.clone());
        }
        json!({"apiVersion": "v1", "kind": "Service", "metadata": self.metadata(), "spec": spec})
    }

    /// Its PodDisruptionBudget: one pod at a time.
    fn budget(&self) -> serde_json::Value {
        json!({
            "apiVersion": "policy/v1",
            "kind": "PodDisruptionBudget",
            "metadata": self.metadata(),
            "spec": {"maxUnavailable": 1, "selector": {"matchLabels": self.selector}},
        })
    }
}

pub(super) fn rest(
    context: &Context,
    common: &Common,
    spec: &DiscordBotSpec,
) -> Result<Vec<Child>, PlanError> {
    let parts = Component::new(context, "rest");
    let args = vec![
        "rest".to_owned(),
        "--listen".to_owned(),
        format!("0.0.0.0:{REST_PORT}"),
        "--upstream".to_owned(),
        unversioned(&common.api_base),
        // Replicas find each other over NATS (SHARDYARD_NATS_URL, SHARDYARD_BOT) and reach each
        // other at their pod's address.
        "--advertise".to_owned(),
        format!("http://$(POD_IP):{REST_PORT}"),
    ];
    let env = vec![
        json!({"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}),
        common.token_env.clone(),
    ];
    let resources = spec
        .rest
        .resources
        .as_ref()
        .map(|r| serde_json::to_value(r).unwrap_or_default());
    let container = common.container("rest", None, args, env, &[("http", REST_PORT)], resources);
    let deployment = parts.deployment(
        spec.rest.replicas,
        common.pod_spec(container, REST_GRACE_SECONDS),
    );
    let service = parts.service(REST_PORT, json!({}));
    let budget = parts.budget();
    // The proxy adds the bot token to what it forwards: only the bot's own pods may call it.
    // Its admin port (metrics) stays open to the cluster.
    let policy = json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": parts.metadata(),
        "spec": {
            "podSelector": {"matchLabels": parts.selector},
            "policyTypes": ["Ingress"],
            "ingress": [
                {
                    "from": [{"podSelector": {"matchLabels": {BOT_LABEL: context.name}}}],
                    "ports": [{"protocol": "TCP", "port": REST_PORT}],
                },
                {"ports": [{"protocol": "TCP", "port": ADMIN_PORT}]},
            ],
        },
    });
    [deployment, service, budget, policy]
        .into_iter()
        .map(child)
        .collect()
}

pub(super) fn cache(
    context: &Context,
    common: &Common,
    spec: &DiscordBotSpec,
) -> Result<Vec<Child>, PlanError> {
    let parts = Component::new(context, "cache");
    let args = vec![
        "cache".to_owned(),
        "--listen".to_owned(),
        format!("0.0.0.0:{CACHE_PORT}"),
    ];
    let resources = spec
        .cache
        .resources
        .as_ref()
        .map(|r| serde_json::to_value(r).unwrap_or_default());
    let container = common.container(
        "cache",
        None,
        args,
        Vec::new(),
        &[("http", CACHE_PORT)],
        resources,
    );
    let mut deployment = parts.deployment(1, common.pod_spec(container, CACHE_GRACE_SECONDS));
    // One applier: events are applied in stream order by one consumer.
    deployment["spec"]["strategy"] = json!({"type": "Recreate"});
    let service = parts.service(CACHE_PORT, json!({}));
    [deployment, service].into_iter().map(child).collect()
}

/// The Interactions Endpoint (`<name>-interactions`: Deployment, Service on port 80,
/// PodDisruptionBudget). Discord must reach it, so no NetworkPolicy narrows who may.
pub(super) fn interactions(
    context: &Context,
    common: &Common,
    spec: &InteractionsSpec,
) -> Result<Vec<Child>, PlanError> {
    let parts = Component::new(context, "interactions");
    let args = vec![
        "interactions".to_owned(),
        "--listen".to_owned(),
        format!("0.0.0.0:{INTERACTIONS_PORT}"),
        "--answer-within-ms".to_owned(),
        spec.answer_within_ms.to_string(),
    ];
    let env = vec![secret_env("SHARDYARD_PUBLIC_KEY", &spec.public_key_secret)];
    let resources = spec
        .resources
        .as_ref()
        .map(|r| serde_json::to_value(r).unwrap_or_default());
    let container = common.container(
        "interactions",
        None,
        args,
        env,
        &[("http", INTERACTIONS_PORT)],
        resources,
    );
    let deployment = parts.deployment(
        spec.replicas,
        common.pod_spec(container, INTERACTIONS_GRACE_SECONDS),
    );
    let service = parts.service(80, json!({"type": spec.service_type.as_str()}));
    let budget = parts.budget();
    [deployment, service, budget]
        .into_iter()
        .map(child)
        .collect()
}

/// A planned object by its `kind` (the JSON is built in this module, so its kinds are known).
fn child(value: serde_json::Value) -> Result<Child, PlanError> {
    let kind = value["kind"].as_str().unwrap_or_default().to_owned();
    Ok(match kind.as_str() {
        "Deployment" => Child::Deployment(Box::new(typed(value)?)),
        "Service" => Child::Service(Box::new(typed(value)?)),
        "PodDisruptionBudget" => Child::PodDisruptionBudget(Box::new(typed(value)?)),
        _ => Child::NetworkPolicy(Box::new(typed(value)?)),
    })
}
