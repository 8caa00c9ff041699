//! A gateway generation: its StatefulSet (`<name>-gateway-g<N>`), the headless Service of the
//! same name, and its PodDisruptionBudget. Each pod takes its shard range from its ordinal
//! (`apps.kubernetes.io/pod-index`, `--shards-per-pod`), identifies under `--generation N`, and
//! publishes only while the control bucket names its generation.

use serde_json::json;
use shardyard_protocol::shard::pod_count;

use super::names::{Context, GENERATION_LABEL, gateway_name, rest_url};
use super::pod::{ADMIN_PORT, Common, api_version};
use super::{Child, Generation, PlanError, quantity};
use crate::resource::DiscordBotSpec;

/// Seconds a gateway pod has to close its shards resumably and save their sessions.
pub(super) const GRACE_SECONDS: i64 = 30;

pub(super) fn objects(
    context: &Context,
    common: &Common,
    spec: &DiscordBotSpec,
    generation: Generation,
) -> Result<Vec<Child>, PlanError> {
    let name = gateway_name(&context.name, generation.number);
    let mut selector = context.selector("gateway");
    selector.insert(GENERATION_LABEL.to_owned(), generation.number.to_string());
    let mut labels = context.labels("gateway");
    labels.insert(GENERATION_LABEL.to_owned(), generation.number.to_string());

    let stream_bytes =
        quantity::bytes(&spec.stream.max_bytes).map_err(|reason| PlanError::Invalid {
            field: "spec.stream.maxBytes",
            reason,
        })?;
    // `GET /gateway/bot` goes through the bot's REST proxy: a generation's pods start together,
    // and the route's bucket (5 per 5 s) is shared with every other process of the bot. Discord
    // itself is the fallback, so that a proxy that is down does not keep the gateways down.
    let api_base = format!(
        "{}/api/{}",
        rest_url(&context.name, &context.namespace),
        api_version(&common.api_base)
    );
    let mut args = vec![
        "gateway".to_owned(),
        "--api-base".to_owned(),
        api_base,
        "--api-fallback".to_owned(),
        common.api_base.clone(),
        "--total".to_owned(),
        generation.total.to_string(),
        "--shards-per-pod".to_owned(),
        spec.shards_per_pod.to_string(),
        "--intents".to_owned(),
        spec.intents.join(","),
        "--compression".to_owned(),
        spec.gateway.compression.as_flag().to_owned(),
        "--generation".to_owned(),
        generation.number.to_string(),
        "--stream-max-age".to_owned(),
        spec.stream.max_age.clone(),
        "--stream-max-bytes".to_owned(),
        stream_bytes.to_string(),
    ];
    if let Some(presence) = &spec.gateway.presence {
        args.extend(["--presence".to_owned(), presence.to_string()]);
    }
    if let Some(threshold) = spec.gateway.large_threshold {
        args.extend(["--large-threshold".to_owned(), threshold.to_string()]);
    }
    let env = vec![
        json!({
            "name": "SHARDYARD_ORDINAL",
            "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['apps.kubernetes.io/pod-index']"}},
        }),
        common.token_env.clone(),
    ];
    let resources = spec
        .gateway
        .resources
        .as_ref()
        .map(|r| serde_json::to_value(r).unwrap_or_default());
    let container = common.container(
        "gateway",
        spec.gateway.image.as_deref(),
        args,
        env,
        &[],
        resources,
    );
    let replicas = pod_count(generation.total, spec.shards_per_pod);

    let stateful_set = json!({
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": context.metadata(name.clone(), labels.clone()),
        "spec": {
            "replicas": replicas,
            "serviceName": name,
            // Every pod identifies at once; the identify queue in NATS paces them.
            "podManagementPolicy": "Parallel",
            "selector": {"matchLabels": selector},
            "template": {
                "metadata": {"labels": labels},
                "spec": common.pod_spec(container, GRACE_SECONDS),
            },
        },
    });
    let service = json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": context.metadata(name.clone(), labels.clone()),
        "spec": {
            "clusterIP": "None",
            "selector": selector,
            "ports": [{"name": "admin", "port": ADMIN_PORT, "targetPort": "admin"}],
        },
    });
    // One pod at a time may be evicted: its shards resume elsewhere within seconds.
    let budget = json!({
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": context.metadata(name, labels),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": selector}},
    });
    Ok(vec![
        Child::StatefulSet(Box::new(typed(stateful_set)?)),
        Child::Service(Box::new(typed(service)?)),
        Child::PodDisruptionBudget(Box::new(typed(budget)?)),
    ])
}

/// A JSON object as its k8s-openapi type; the JSON is built here, so only a bug fails this.
pub(super) fn typed<T: serde::de::DeserializeOwned>(
    value: serde_json::Value,
) -> Result<T, PlanError> {
    serde_json::from_value(value).map_err(|e| PlanError::Invalid {
        field: "(planned object)",
        reason: e.to_string(),
    })
}
