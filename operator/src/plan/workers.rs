//! The worker Deployment (`<name>-worker`): the user's pod template, or the example bot
//! (`shardyard worker`) without one, with the `SHARDYARD_*` environment that connects every
//! container to the bot's NATS and REST proxy. Never the token: workers call Discord through the
//! proxy, which adds it. The worker library creates its consumer from its handlers; the operator
//! never writes consumers.

use serde_json::{Value, json};

use super::gateway::typed;
use super::names::Context;
use super::pod::Common;
use super::{Child, PlanError, names};
use crate::resource::DiscordBotSpec;

/// Seconds in-flight events have to finish (`SHARDYARD_WORKER_SHUTDOWN_GRACE` is 20).
const GRACE_SECONDS: i64 = 30;

pub(super) fn deployment(
    context: &Context,
    common: &Common,
    spec: &DiscordBotSpec,
    total_shards: u32,
) -> Result<Child, PlanError> {
    let name = context.object_name("worker");
    let selector = context.selector("worker");
    let labels = context.labels("worker");
    let mut injected = common.env.clone();
    injected.push(json!({
        "name": "SHARDYARD_REST_URL",
        "value": names::rest_url(&context.name, &context.namespace),
    }));
    injected.push(json!({"name": "SHARDYARD_SHARDS", "value": total_shards.to_string()}));

    let template = match &spec.workers.template {
        Some(template) => user_template(template, &labels, &injected, common)?,
        None => {
            let container = common.container(
                "worker",
                None,
                vec!["worker".to_owned()],
                vec![
                    json!({"name": "SHARDYARD_REST_URL", "value": names::rest_url(&context.name, &context.namespace)}),
                    json!({"name": "SHARDYARD_SHARDS", "value": total_shards.to_string()}),
                ],
                &[],
                None,
            );
            json!({
                "metadata": {"labels": labels},
                "spec": common.pod_spec(container, GRACE_SECONDS),
            })
        }
    };
    let mut deployment = json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": context.metadata(name, labels.clone()),
        "spec": {
            "selector": {"matchLabels": selector},
            "template": template,
        },
    });
    // With an autoscaler the replicas are its own: applying them would undo its every decision.
    if !super::autoscaling::autoscaled(spec) {
        deployment["spec"]["replicas"] = json!(spec.workers.min_replicas);
    }
    Ok(Child::Deployment(Box::new(typed(deployment)?)))
}

/// The user's template with the bot's labels and the injected environment (replacing a variable
/// of the same name the user set: these are the operator's to give).
fn user_template(
    template: &Value,
    labels: &std::collections::BTreeMap<String, String>,
    injected: &[Value],
    common: &Common,
) -> Result<Value, PlanError> {
    let invalid = |reason: String| PlanError::Invalid {
        field: "spec.workers.template",
        reason,
    };
    // Checked as a pod template first, so a mistake names the field.
    let _: k8s_openapi::api::core::v1::PodTemplateSpec =
        serde_json::from_value(template.clone())
            .map_err(|e| invalid(format!("not a pod template: {e}")))?;
    let mut template = template.clone();
    let meta_labels = &mut template["metadata"]["labels"];
    if !meta_labels.is_object() {
        *meta_labels = json!({});
    }
    for (key, value) in labels {
        meta_labels[key] = json!(value);
    }
    let containers = template["spec"]["containers"]
        .as_array_mut()
        .filter(|c| !c.is_empty())
        .ok_or_else(|| invalid("spec.containers must list at least one container".to_owned()))?;
    let injected_names: Vec<&str> = injected.iter().filter_map(|e| e["name"].as_str()).collect();
    for container in containers {
        let mut env: Vec<Value> = container["env"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|e| {
                !e["name"]
                    .as_str()
                    .is_some_and(|n| injected_names.contains(&n))
            })
            .collect();
        // The operator's variables first: the user's may refer to them as $(NAME).
        let mut all = injected.to_vec();
        all.append(&mut env);
        container["env"] = json!(all);
        if !common.mounts.is_empty() {
            let mounts = container["volumeMounts"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            container["volumeMounts"] = json!(
                mounts
                    .into_iter()
                    .chain(common.mounts.clone())
                    .collect::<Vec<_>>()
            );
        }
    }
    if !common.volumes.is_empty() {
        let volumes = template["spec"]["volumes"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        template["spec"]["volumes"] = json!(
            volumes
                .into_iter()
                .chain(common.volumes.clone())
                .collect::<Vec<_>>()
        );
    }
    Ok(template)
}
