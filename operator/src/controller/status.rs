//! The bot's status from what a reconcile found: conditions with reasons a user can act on
//! (pure, so tests need no cluster), and the counts. Conditions keep their
//! `lastTransitionTime` while their status stays the same, so a second reconcile of an
//! unchanged bot writes the same status and changes nothing.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

use crate::queue_depth::{DepthError, QueueDepth};
use crate::resource::{AutoscalingProvider, DiscordBotSpec};

/// Condition types.
pub mod types {
    /// Everything is applied and running.
    pub const READY: &str = "Ready";
    /// The operator is changing something (a first start, an edit).
    pub const PROGRESSING: &str = "Progressing";
    /// Something stops the bot from running as asked; the reason says what.
    pub const DEGRADED: &str = "Degraded";
    /// A new gateway generation runs beside the old one.
    pub const RESHARDING: &str = "Resharding";
    /// The workers' autoscaler has the number it scales on.
    pub const AUTOSCALING: &str = "Autoscaling";
}

/// Reasons, `PascalCase`, for conditions and Events.
pub mod reasons {
    /// Every object is applied.
    pub const APPLIED: &str = "Applied";
    /// The token Secret or its key does not exist.
    pub const TOKEN_SECRET_MISSING: &str = "TokenSecretMissing";
    /// Discord refused the token.
    pub const INVALID_TOKEN: &str = "InvalidToken";
    /// Discord could not be asked.
    pub const DISCORD_UNREACHABLE: &str = "DiscordUnreachable";
    /// The bot's NATS could not be reached, or JetStream refused.
    pub const NATS_UNREACHABLE: &str = "NatsUnreachable";
    /// The spec cannot be planned.
    pub const INVALID_SPEC: &str = "InvalidSpec";
    /// The API server refused an object.
    pub const APPLY_FAILED: &str = "ApplyFailed";
    /// Nothing wrong.
    pub const AS_EXPECTED: &str = "AsExpected";
    /// Not resharding.
    pub const STABLE: &str = "Stable";
    /// Too few session starts left today for the new shards.
    pub const IDENTIFY_BUDGET_LOW: &str = "IdentifyBudgetLow";
    /// The new generation starts beside the old one.
    pub const STARTING_GENERATION: &str = "StartingGeneration";
    /// Both generations publish, briefly, before the old one stops.
    pub const HANDING_OVER: &str = "HandingOver";
    /// The queue depth was read from the worker consumer's leader.
    pub const QUEUE_DEPTH_READ: &str = "QueueDepthRead";
    /// No worker has created the consumer yet: the autoscaler keeps the replicas it has.
    pub const CONSUMER_MISSING: &str = "ConsumerMissing";
    /// NATS could not say how many events wait.
    pub const QUEUE_DEPTH_UNKNOWN: &str = "QueueDepthUnknown";
    /// `provider: none`.
    pub const DISABLED: &str = "Disabled";
    /// `provider: keda` in a cluster without KEDA's ScaledObject.
    pub const KEDA_MISSING: &str = "KedaMissing";
}

/// What a reconcile came to, for the conditions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Every object applied.
    Applied,
    /// Stopped early: `reason` (from [`reasons`]) and a message saying what to do.
    Blocked {
        /// The reason.
        reason: &'static str,
        /// What happened and what to do.
        message: String,
    },
}

/// The conditions for `outcome`, keeping the transition time of each condition whose status did
/// not change (`previous`).
#[must_use]
pub fn conditions(
    outcome: &Outcome,
    resharding: Option<(&'static str, String)>,
    generation: Option<i64>,
    previous: &[Condition],
    now: Timestamp,
) -> Vec<Condition> {
    let (ready, progressing, degraded) = match outcome {
        Outcome::Applied => (
            (
                "True",
                reasons::APPLIED,
                "every object of the bot is applied".to_owned(),
            ),
            (
                "False",
                reasons::AS_EXPECTED,
                "nothing is changing".to_owned(),
            ),
            ("False", reasons::AS_EXPECTED, "nothing is wrong".to_owned()),
        ),
        Outcome::Blocked { reason, message } => (
            ("False", *reason, message.clone()),
            ("False", *reason, "waiting until this is fixed".to_owned()),
            ("True", *reason, message.clone()),
        ),
    };
    let resharding = resharding.map_or(
        (
            "False",
            reasons::STABLE,
            "one gateway generation runs".to_owned(),
        ),
        |(reason, message)| ("True", reason, message),
    );
    [
        (types::READY, ready),
        (types::PROGRESSING, progressing),
        (types::DEGRADED, degraded),
        (types::RESHARDING, resharding),
    ]
    .into_iter()
    .map(|(type_, (status, reason, message))| {
        condition(type_, status, reason, message, generation, previous, now)
    })
    .collect()
}

/// The `Autoscaling` condition: whether the workers' autoscaler has its number. `unserved`
/// lists what the cluster could not take (a ScaledObject without KEDA).
#[must_use]
pub fn autoscaling_condition(
    spec: &DiscordBotSpec,
    unserved: &[String],
    depth: &Result<QueueDepth, DepthError>,
) -> (&'static str, &'static str, String) {
    let workers = &spec.workers;
    let (provider, how) = match spec.autoscaling.provider {
        AutoscalingProvider::None => {
            return (
                "False",
                reasons::DISABLED,
                format!(
                    "autoscaling.provider is none: {} worker replicas, as written",
                    workers.min_replicas
                ),
            );
        }
        AutoscalingProvider::Hpa => ("hpa", "a HorizontalPodAutoscaler"),
        AutoscalingProvider::Keda => ("keda", "a KEDA ScaledObject"),
    };
    if let Some(missing) = unserved.iter().find(|u| u.starts_with("ScaledObject/")) {
        return (
            "False",
            reasons::KEDA_MISSING,
            format!(
                "{missing} was not created: the cluster does not serve keda.sh/v1alpha1 \
                 ScaledObjects. Install KEDA, or set autoscaling.provider to hpa"
            ),
        );
    }
    match depth {
        Ok(_) => (
            "True",
            reasons::QUEUE_DEPTH_READ,
            format!(
                "{how} scales the workers from {} to {} on the queue depth, {} pending events \
                 per replica",
                workers.min_replicas, workers.max_replicas, workers.target_pending_per_replica
            ),
        ),
        Err(error @ (DepthError::ConsumerMissing { .. } | DepthError::StreamMissing { .. })) => (
            "False",
            reasons::CONSUMER_MISSING,
            format!("{error}; the {provider} autoscaler keeps the replicas it has"),
        ),
        Err(error) => (
            "False",
            reasons::QUEUE_DEPTH_UNKNOWN,
            format!("{error}; the {provider} autoscaler keeps the replicas it has"),
        ),
    }
}

/// One condition, keeping its transition time from `previous` when its status did not change.
#[must_use]
pub fn condition(
    type_: &str,
    status: &str,
    reason: &str,
    message: String,
    generation: Option<i64>,
    previous: &[Condition],
    now: Timestamp,
) -> Condition {
    let kept = previous
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map(|c| c.last_transition_time.clone());
    Condition {
        type_: type_.to_owned(),
        status: status.to_owned(),
        reason: reason.to_owned(),
        message,
        observed_generation: generation,
        last_transition_time: kept.unwrap_or(Time(now)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(seconds).unwrap()
    }

    #[test]
    fn an_applied_bot_is_ready_and_a_blocked_one_says_why() {
        let applied = conditions(&Outcome::Applied, None, Some(3), &[], at(100));
        let status = |c: &[Condition], t: &str| {
            let c = c.iter().find(|c| c.type_ == t).unwrap();
            (c.status.clone(), c.reason.clone())
        };
        assert_eq!(status(&applied, "Ready"), ("True".into(), "Applied".into()));
        assert_eq!(
            status(&applied, "Degraded"),
            ("False".into(), "AsExpected".into())
        );
        assert_eq!(
            status(&applied, "Resharding"),
            ("False".into(), "Stable".into())
        );
        assert!(applied.iter().all(|c| c.observed_generation == Some(3)));

        let missing = Outcome::Blocked {
            reason: reasons::TOKEN_SECRET_MISSING,
            message: "Secret mybot-token not found".to_owned(),
        };
        let blocked = conditions(&missing, None, Some(3), &applied, at(200));
        assert_eq!(
            status(&blocked, "Ready"),
            ("False".into(), "TokenSecretMissing".into())
        );
        assert_eq!(
            status(&blocked, "Degraded"),
            ("True".into(), "TokenSecretMissing".into())
        );
        let ready = blocked.iter().find(|c| c.type_ == "Ready").unwrap();
        assert_eq!(ready.last_transition_time.0, at(200), "it changed");
        assert!(ready.message.contains("mybot-token"));
    }

    #[test]
    fn an_unchanged_condition_keeps_its_transition_time() {
        let first = conditions(&Outcome::Applied, None, Some(1), &[], at(100));
        let again = conditions(&Outcome::Applied, None, Some(2), &first, at(500));
        for (a, b) in first.iter().zip(&again) {
            assert_eq!(
                a.last_transition_time, b.last_transition_time,
                "{}",
                a.type_
            );
        }
        let resharding = conditions(
            &Outcome::Applied,
            Some((reasons::STARTING_GENERATION, "g2 starts".to_owned())),
            Some(2),
            &again,
            at(600),
        );
        let r = resharding.iter().find(|c| c.type_ == "Resharding").unwrap();
        assert_eq!(
            (r.status.as_str(), r.last_transition_time.0),
            ("True", at(600))
        );
    }

    #[test]
    fn the_autoscaling_condition_says_whether_the_number_is_known() {
        use crate::queue_depth::{DepthError, QueueDepth};
        use crate::resource::{AutoscalingProvider, DiscordBotSpec};
        let spec: DiscordBotSpec = serde_json::from_value(serde_json::json!({
            "tokenSecret": {"name": "t"}, "nats": {"url": "nats://n:4222"},
        }))
        .unwrap();
        let read = Ok(QueueDepth {
            num_pending: 7,
            num_ack_pending: 3,
        });
        assert_eq!(read.as_ref().map(|d| d.pending()), Ok(10));
        let (status, reason, message) = autoscaling_condition(&spec, &[], &read);
        assert_eq!((status, reason), ("True", reasons::QUEUE_DEPTH_READ));
        assert!(message.contains("HorizontalPodAutoscaler"), "{message}");

        let missing = Err(DepthError::ConsumerMissing {
            stream: "S".into(),
            consumer: "workers".into(),
        });
        let (status, reason, message) = autoscaling_condition(&spec, &[], &missing);
        assert_eq!((status, reason), ("False", reasons::CONSUMER_MISSING));
        assert!(message.contains("keeps the replicas it has"), "{message}");
        let down = Err(DepthError::Nats("timed out".into()));
        assert_eq!(
            autoscaling_condition(&spec, &[], &down).1,
            reasons::QUEUE_DEPTH_UNKNOWN
        );

        let mut keda = spec.clone();
        keda.autoscaling.provider = AutoscalingProvider::Keda;
        let unserved = ["ScaledObject/mybot-worker".to_owned()];
        assert_eq!(
            autoscaling_condition(&keda, &unserved, &read).1,
            reasons::KEDA_MISSING
        );
        let mut none = spec;
        none.autoscaling.provider = AutoscalingProvider::None;
        assert_eq!(
            autoscaling_condition(&none, &[], &read),
            (
                "False",
                reasons::DISABLED,
                "autoscaling.provider is none: 1 worker replicas, as written".to_owned()
            )
        );
    }
}
