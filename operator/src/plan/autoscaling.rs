//! The workers' autoscaler (`<name>-worker`, like the Deployment it scales), chosen by
//! `spec.autoscaling.provider`:
//!
//! - `hpa`: an `autoscaling/v2` HorizontalPodAutoscaler on the External metric
//!   [`PENDING_METRIC`], which the operator's external metrics API serves per bot and worker
//!   group;
//! - `keda`: a KEDA ScaledObject whose trigger asks the operator for the same number
//!   (`metrics-api`), or asks NATS itself (`nats-jetstream`);
//! - `none`: nothing; the Deployment has `minReplicas` replicas.
//!
//! With an autoscaler the worker Deployment is planned without `replicas`: they are the
//! autoscaler's.

use serde_json::{Value, json};
use shardyard_protocol::names::worker_consumer;

use super::gateway::typed;
use super::names::Context;
use super::{Child, OperatorDefaults, PlanError};
use crate::resource::{AutoscalingProvider, DiscordBotSpec, KedaTrigger};

/// The External metric: events waiting for a bot's workers (the worker consumer's pending plus
/// unacknowledged messages).
pub const PENDING_METRIC: &str = "shardyard_pending_events";
/// The metric's label naming the DiscordBot.
pub const BOT_METRIC_LABEL: &str = "bot";
/// The metric's label naming the worker group.
pub const GROUP_METRIC_LABEL: &str = "group";
/// The group of the unnamed worker consumer, `workers`: the only one a bot has today.
pub const DEFAULT_GROUP: &str = "default";
/// The path under the operator's admin address where KEDA's `metrics-api` trigger reads a
/// bot's queue depth: `<queue-depth-url>/queue-depth/<namespace>/<name>`.
pub const QUEUE_DEPTH_PATH: &str = "/queue-depth";
/// The JSON field of that answer holding the number.
pub const QUEUE_DEPTH_FIELD: &str = "pending";

/// KEDA's ScaledObject kind.
pub const SCALED_OBJECT_API_VERSION: &str = "keda.sh/v1alpha1";

/// Seconds between the HPA's scale-up steps; one step may add up to `maxReplicas`, so a burst
/// is met at once.
const SCALE_UP_PERIOD: i32 = 15;

/// The autoscaler of the worker Deployment `target`, if the spec asks for one.
pub(super) fn objects(
    context: &Context,
    spec: &DiscordBotSpec,
    defaults: &OperatorDefaults,
    target: &str,
) -> Result<Option<Child>, PlanError> {
    let workers = &spec.workers;
    let autoscaling = &spec.autoscaling;
    let name = context.object_name("worker");
    let labels = context.labels("worker");
    let behavior = json!({
        "scaleUp": {
            "stabilizationWindowSeconds": 0,
            "selectPolicy": "Max",
            "policies": [{"type": "Pods", "value": workers.max_replicas, "periodSeconds": SCALE_UP_PERIOD}],
        },
        "scaleDown": {
            "stabilizationWindowSeconds": autoscaling.scale_down_stabilization_seconds,
            "selectPolicy": "Max",
            "policies": [{"type": "Percent", "value": 100, "periodSeconds": SCALE_UP_PERIOD}],
        },
    });
    match autoscaling.provider {
        AutoscalingProvider::None => Ok(None),
        AutoscalingProvider::Hpa => {
            let hpa = json!({
                "apiVersion": "autoscaling/v2",
                "kind": "HorizontalPodAutoscaler",
                "metadata": context.metadata(name, labels),
                "spec": {
                    "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": target},
                    // The schema refuses 0 with an HPA: it needs an alpha feature gate.
                    "minReplicas": workers.min_replicas.max(1),
                    "maxReplicas": workers.max_replicas,
                    "metrics": [{
                        "type": "External",
                        "external": {
                            "metric": {
                                "name": PENDING_METRIC,
                                "selector": {"matchLabels": {
                                    BOT_METRIC_LABEL: context.name,
                                    GROUP_METRIC_LABEL: DEFAULT_GROUP,
                                }},
                            },
                            "target": {
                                "type": "AverageValue",
                                "averageValue": workers.target_pending_per_replica.to_string(),
                            },
                        },
                    }],
                    "behavior": behavior,
                },
            });
            Ok(Some(Child::HorizontalPodAutoscaler(Box::new(typed(hpa)?))))
        }
        AutoscalingProvider::Keda => {
            let target_value = workers.target_pending_per_replica.to_string();
            let trigger = match autoscaling.keda.trigger {
                KedaTrigger::MetricsApi => json!({
                    "type": "metrics-api",
                    "metricType": "AverageValue",
                    "metadata": {
                        "url": format!(
                            "{}{QUEUE_DEPTH_PATH}/{}/{}",
                            defaults.queue_depth_url.trim_end_matches('/'),
                            context.namespace,
                            context.name
                        ),
                        "format": "json",
                        "valueLocation": QUEUE_DEPTH_FIELD,
                        "targetValue": target_value,
                    },
                }),
                KedaTrigger::NatsJetstream => {
                    let endpoint = autoscaling
                        .keda
                        .nats_monitoring_endpoint
                        .clone()
                        .ok_or_else(|| PlanError::Invalid {
                            field: "spec.autoscaling.keda.natsMonitoringEndpoint",
                            reason: "required with the nats-jetstream trigger".to_owned(),
                        })?;
                    json!({
                        "type": "nats-jetstream",
                        "metricType": "AverageValue",
                        "metadata": {
                            "natsServerMonitoringEndpoint": endpoint,
                            "account": autoscaling.keda.nats_account.clone().unwrap_or_else(|| "$G".to_owned()),
                            "stream": context.key.stream(),
                            "consumer": worker_consumer(None),
                            "lagThreshold": target_value,
                        },
                    })
                }
            };
            let scaled_object = json!({
                "apiVersion": SCALED_OBJECT_API_VERSION,
                "kind": "ScaledObject",
                "metadata": context.metadata(name, labels),
                "spec": {
                    "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": target},
                    "minReplicaCount": workers.min_replicas,
                    "maxReplicaCount": workers.max_replicas,
                    "pollingInterval": SCALE_UP_PERIOD,
                    "cooldownPeriod": autoscaling.scale_down_stabilization_seconds.max(1),
                    "advanced": {"horizontalPodAutoscalerConfig": {"behavior": behavior}},
                    "triggers": [trigger],
                },
            });
            Ok(Some(Child::ScaledObject(Box::new(scaled_object))))
        }
    }
}

/// Whether the worker Deployment's `replicas` belong to an autoscaler.
#[must_use]
pub const fn autoscaled(spec: &DiscordBotSpec) -> bool {
    !matches!(spec.autoscaling.provider, AutoscalingProvider::None)
}

/// A ScaledObject's name, for [`Child::describe`].
pub(super) fn value_name(object: &Value) -> &str {
    object["metadata"]["name"].as_str().unwrap_or("")
}
