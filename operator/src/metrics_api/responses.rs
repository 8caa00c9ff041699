//! The external metrics API's documents (`external.metrics.k8s.io/v1beta1`), pure: discovery,
//! a metric's values, and the `Status` of a refusal, shaped as the Kubernetes API shapes them.

use k8s_openapi::jiff::{Timestamp, Unit};
use serde_json::{Value, json};

use crate::plan::autoscaling::{BOT_METRIC_LABEL, GROUP_METRIC_LABEL, PENDING_METRIC};

/// The API group.
pub const GROUP: &str = "external.metrics.k8s.io";
/// Its version.
pub const VERSION: &str = "v1beta1";

/// What `/apis/external.metrics.k8s.io/v1beta1` lists: the one metric, namespaced.
#[must_use]
pub fn resource_list() -> Value {
    json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": format!("{GROUP}/{VERSION}"),
        "resources": [{
            "name": PENDING_METRIC,
            "singularName": "",
            "namespaced": true,
            "kind": "ExternalMetricValueList",
            "verbs": ["get"],
        }],
    })
}

/// What `/apis/external.metrics.k8s.io` says of its versions.
#[must_use]
pub fn api_group() -> Value {
    let version = json!({"groupVersion": format!("{GROUP}/{VERSION}"), "version": VERSION});
    json!({
        "kind": "APIGroup",
        "apiVersion": "v1",
        "name": GROUP,
        "versions": [version],
        "preferredVersion": version,
    })
}

/// One bot's value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// The DiscordBot's name.
    pub bot: String,
    /// The worker group.
    pub group: String,
    /// Its pending events.
    pub pending: u64,
}

/// The `ExternalMetricValueList` of `items`, stamped `now`.
#[must_use]
pub fn values(items: &[Item], now: Timestamp) -> Value {
    let timestamp = now
        .round(Unit::Second)
        .map(|t| t.to_string())
        .unwrap_or_default();
    let items: Vec<Value> = items
        .iter()
        .map(|item| {
            json!({
                "metricName": PENDING_METRIC,
                "metricLabels": {BOT_METRIC_LABEL: item.bot, GROUP_METRIC_LABEL: item.group},
                "timestamp": timestamp,
                "value": item.pending.to_string(),
            })
        })
        .collect();
    json!({
        "kind": "ExternalMetricValueList",
        "apiVersion": format!("{GROUP}/{VERSION}"),
        "metadata": {},
        "items": items,
    })
}

/// A refusal: the HTTP status code, Kubernetes' reason (`NotFound`, `BadRequest`, …) and what
/// happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The HTTP status.
    pub code: u16,
    /// `metav1.StatusReason`.
    pub reason: &'static str,
    /// For whoever reads the HPA's conditions.
    pub message: String,
}

impl Refusal {
    /// `404 NotFound`.
    #[must_use]
    pub fn not_found(message: String) -> Self {
        Self {
            code: 404,
            reason: "NotFound",
            message,
        }
    }

    /// `400 BadRequest`.
    #[must_use]
    pub fn bad_request(message: String) -> Self {
        Self {
            code: 400,
            reason: "BadRequest",
            message,
        }
    }

    /// `503 ServiceUnavailable`: the number is unknown for now.
    #[must_use]
    pub fn unavailable(message: String) -> Self {
        Self {
            code: 503,
            reason: "ServiceUnavailable",
            message,
        }
    }

    /// `401 Unauthorized`.
    #[must_use]
    pub fn unauthorized(message: String) -> Self {
        Self {
            code: 401,
            reason: "Unauthorized",
            message,
        }
    }

    /// `403 Forbidden`.
    #[must_use]
    pub fn forbidden(message: String) -> Self {
        Self {
            code: 403,
            reason: "Forbidden",
            message,
        }
    }

    /// Its `Status` document.
    #[must_use]
    pub fn status(&self) -> Value {
        json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_carry_the_bot_and_group_labels_and_a_whole_second_timestamp() {
        let now = Timestamp::from_millisecond(1_765_000_000_400).unwrap();
        let list = values(
            &[Item {
                bot: "mybot".into(),
                group: "default".into(),
                pending: 35,
            }],
            now,
        );
        assert_eq!(list["kind"], "ExternalMetricValueList");
        assert_eq!(list["apiVersion"], "external.metrics.k8s.io/v1beta1");
        let item = &list["items"][0];
        assert_eq!(item["metricName"], "shardyard_pending_events");
        assert_eq!(
            item["metricLabels"],
            json!({"bot": "mybot", "group": "default"})
        );
        assert_eq!(item["value"], "35");
        assert_eq!(item["timestamp"], "2025-12-06T05:46:40Z");
        assert_eq!(
            resource_list()["resources"][0]["name"],
            "shardyard_pending_events"
        );
        let refusal = Refusal::not_found("no DiscordBot".into()).status();
        assert_eq!(
            (&refusal["code"], &refusal["reason"]),
            (&json!(404), &json!("NotFound"))
        );
    }
}
