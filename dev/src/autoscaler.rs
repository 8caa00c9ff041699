//! The HorizontalPodAutoscaler's documented algorithm, run on the real queue depth: what the
//! HPA controller would do with the planned HPA (or the HPA that KEDA makes of a ScaledObject).
//!
//! Per sync, as `pkg/controller/podautoscaler` computes it for an External metric with an
//! `AverageValue` target:
//!
//! 1. `ratio = metric / (target × current)`; within the tolerance (0.1) of 1 nothing changes,
//!    else `desired = ceil(metric / target)` (that is `ceil(current × ratio)`);
//! 2. stabilization: the recommendation becomes the highest of the scale-down window's
//!    recommendations (no lower than now) and the lowest of the scale-up window's;
//! 3. the behavior's policies limit the change per period, counting the scale events inside it,
//!    and `[minReplicas, maxReplicas]` bounds it.
//!
//! Pure: time comes in as a `Duration` since an arbitrary start.

use std::collections::VecDeque;
use std::time::Duration;

use k8s_openapi::api::autoscaling::v2::{HPAScalingRules, HorizontalPodAutoscalerBehavior};
use shardyard_operator::plan::Child;

/// The HPA controller's default tolerance (`--horizontal-pod-autoscaler-tolerance`).
pub const TOLERANCE: f64 = 0.1;

/// A scaling policy: `Pods` or `Percent` per period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// At most this many pods per period.
    Pods(u32, Duration),
    /// At most this percentage of the replicas at the period's start per period.
    Percent(u32, Duration),
}

impl Policy {
    const fn period(self) -> Duration {
        match self {
            Self::Pods(_, p) | Self::Percent(_, p) => p,
        }
    }
}

/// How one direction is limited.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rules {
    /// The stabilization window.
    pub stabilization: Duration,
    /// The policies.
    pub policies: Vec<Policy>,
    /// `Max` (the policy allowing the biggest change), `Min`, or `Disabled`.
    pub select: Select,
}

/// `selectPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Select {
    /// The policy that allows the biggest change.
    Max,
    /// The one that allows the smallest.
    Min,
    /// No change in this direction.
    Disabled,
}

/// An HPA's spec, as far as the algorithm needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct HpaSpec {
    /// `minReplicas`.
    pub min: u32,
    /// `maxReplicas`.
    pub max: u32,
    /// The metric's `averageValue` target per replica.
    pub target_per_replica: f64,
    /// Scaling up.
    pub up: Rules,
    /// Scaling down.
    pub down: Rules,
}

impl HpaSpec {
    /// The autoscaler of a plan: its HPA, or the HPA KEDA makes of its ScaledObject; `None`
    /// with `provider: none`.
    #[must_use]
    pub fn from_plan(objects: &[Child]) -> Option<Self> {
        objects.iter().find_map(|child| match child {
            Child::HorizontalPodAutoscaler(hpa) => {
                let spec = &hpa.spec;
                let target = spec
                    .metrics
                    .iter()
                    .flatten()
                    .find_map(|m| m.external.as_ref())
                    .and_then(|e| e.target.average_value.as_ref())
                    .and_then(|q| q.0.parse::<f64>().ok())?;
                Some(Self::new(
                    u32::try_from(spec.min_replicas.unwrap_or(1)).unwrap_or(1),
                    u32::try_from(spec.max_replicas).unwrap_or(1),
                    target,
                    spec.behavior.as_ref(),
                ))
            }
            Child::ScaledObject(object) => {
                let spec = &object["spec"];
                let trigger = &spec["triggers"][0]["metadata"];
                let target = trigger["targetValue"]
                    .as_str()
                    .or_else(|| trigger["lagThreshold"].as_str())
                    .and_then(|t| t.parse::<f64>().ok())?;
                let behavior: Option<HorizontalPodAutoscalerBehavior> = serde_json::from_value(
                    spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"].clone(),
                )
                .ok();
                // KEDA's HPA has at least one replica; KEDA itself takes it to zero.
                let min = spec["minReplicaCount"].as_u64().unwrap_or(0).max(1);
                Some(Self::new(
                    u32::try_from(min).unwrap_or(1),
                    u32::try_from(spec["maxReplicaCount"].as_u64().unwrap_or(100)).unwrap_or(100),
                    target,
                    behavior.as_ref(),
                ))
            }
            _ => None,
        })
    }

    /// With the behavior's rules, Kubernetes' defaults where it gives none.
    #[must_use]
    pub fn new(
        min: u32,
        max: u32,
        target_per_replica: f64,
        behavior: Option<&HorizontalPodAutoscalerBehavior>,
    ) -> Self {
        let up = rules(
            behavior.and_then(|b| b.scale_up.as_ref()),
            Rules {
                stabilization: Duration::ZERO,
                policies: vec![
                    Policy::Percent(100, Duration::from_secs(15)),
                    Policy::Pods(4, Duration::from_secs(15)),
                ],
                select: Select::Max,
            },
        );
        let down = rules(
            behavior.and_then(|b| b.scale_down.as_ref()),
            Rules {
                stabilization: Duration::from_secs(300),
                policies: vec![Policy::Percent(100, Duration::from_secs(15))],
                select: Select::Max,
            },
        );
        Self {
            min: min.max(1),
            max: max.max(min.max(1)),
            target_per_replica,
            up,
            down,
        }
    }
}

fn rules(given: Option<&HPAScalingRules>, default: Rules) -> Rules {
    let Some(given) = given else {
        return default;
    };
    let secs = |s: i32| Duration::from_secs(u64::try_from(s).unwrap_or(0));
    Rules {
        stabilization: given
            .stabilization_window_seconds
            .map_or(default.stabilization, secs),
        policies: given
            .policies
            .as_ref()
            .map_or(default.policies, |policies| {
                policies
                    .iter()
                    .map(|p| {
                        let value = u32::try_from(p.value).unwrap_or(0);
                        if p.type_ == "Pods" {
                            Policy::Pods(value, secs(p.period_seconds))
                        } else {
                            Policy::Percent(value, secs(p.period_seconds))
                        }
                    })
                    .collect()
            }),
        select: match given.select_policy.as_deref() {
            Some("Min") => Select::Min,
            Some("Disabled") => Select::Disabled,
            _ => Select::Max,
        },
    }
}

/// One decision, with why.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Decision {
    /// The replicas to run.
    pub replicas: u32,
    /// The metric's value per replica now.
    pub per_replica: f64,
    /// What the metric alone asks for (before stabilization and policies).
    pub recommended: u32,
}

/// The autoscaler's memory: recommendations and scale events, as the HPA controller keeps them.
#[derive(Debug, Clone, Default)]
pub struct Autoscaler {
    recommendations: VecDeque<(Duration, u32)>,
    /// (when, replicas added (+) or removed (−)).
    events: VecDeque<(Duration, i64)>,
}

impl Autoscaler {
    /// A decision at `now` for `current` replicas and the metric's total `metric`; `None` for
    /// the metric means it could not be read: the replicas stay (within the bounds).
    pub fn decide(
        &mut self,
        spec: &HpaSpec,
        now: Duration,
        current: u32,
        metric: Option<u64>,
    ) -> Decision {
        let Some(metric) = metric else {
            let replicas = current.clamp(spec.min, spec.max);
            return Decision {
                replicas,
                per_replica: 0.0,
                recommended: replicas,
            };
        };
        #[allow(clippy::cast_precision_loss)]
        let metric = metric as f64;
        let current_for_ratio = current.max(1);
        let ratio = metric / (spec.target_per_replica * f64::from(current_for_ratio));
        let recommended = if (1.0 - ratio).abs() <= TOLERANCE {
            current
        } else {
            let desired = (metric / spec.target_per_replica).ceil();
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let desired = desired.clamp(0.0, f64::from(u32::MAX)) as u32;
            desired
        };
        let stabilized = self.stabilize(spec, now, current, recommended);
        let replicas = self.limit(spec, now, current, stabilized);
        if replicas != current {
            self.events
                .push_back((now, i64::from(replicas) - i64::from(current)));
        }
        let longest = spec
            .up
            .policies
            .iter()
            .chain(&spec.down.policies)
            .map(|p| p.period())
            .max()
            .unwrap_or_default();
        while self
            .events
            .front()
            .is_some_and(|(at, _)| now.saturating_sub(*at) > longest)
        {
            self.events.pop_front();
        }
        Decision {
            replicas,
            per_replica: metric / f64::from(current_for_ratio),
            recommended,
        }
    }

    fn stabilize(&mut self, spec: &HpaSpec, now: Duration, current: u32, recommended: u32) -> u32 {
        let mut up = recommended;
        let mut down = recommended;
        for (at, value) in &self.recommendations {
            let age = now.saturating_sub(*at);
            if age < spec.up.stabilization {
                up = up.min(*value);
            }
            if age < spec.down.stabilization {
                down = down.max(*value);
            }
        }
        let mut result = current;
        if result < up {
            result = up;
        }
        if result > down {
            result = down;
        }
        self.recommendations.push_back((now, recommended));
        let keep = spec.up.stabilization.max(spec.down.stabilization);
        while self
            .recommendations
            .front()
            .is_some_and(|(at, _)| now.saturating_sub(*at) >= keep)
        {
            self.recommendations.pop_front();
        }
        result
    }

    fn limit(&self, spec: &HpaSpec, now: Duration, current: u32, desired: u32) -> u32 {
        if desired > current {
            let limit = self.up_limit(&spec.up, now, current).max(current);
            desired.min(limit.min(spec.max)).max(spec.min)
        } else if desired < current {
            let limit = self.down_limit(&spec.down, now, current).min(current);
            desired.max(limit.max(spec.min)).min(spec.max)
        } else {
            desired.clamp(spec.min, spec.max)
        }
    }

    /// Replicas added and removed within `period` before `now`.
    fn changes(&self, now: Duration, period: Duration) -> (i64, i64) {
        let (mut added, mut removed) = (0, 0);
        for (at, change) in &self.events {
            if now.saturating_sub(*at) < period {
                if *change > 0 {
                    added += change;
                } else {
                    removed -= change;
                }
            }
        }
        (added, removed)
    }

    fn up_limit(&self, rules: &Rules, now: Duration, current: u32) -> u32 {
        let proposals = rules.policies.iter().map(|policy| {
            let (added, removed) = self.changes(now, policy.period());
            let start = (i64::from(current) - added + removed).max(0);
            match *policy {
                Policy::Pods(n, _) => start + i64::from(n),
                Policy::Percent(p, _) => {
                    #[allow(clippy::cast_possible_truncation, clippy::cast_precision_loss)]
                    let proposed = (start as f64 * (1.0 + f64::from(p) / 100.0)).ceil() as i64;
                    proposed
                }
            }
        });
        let chosen = match rules.select {
            Select::Max => proposals.max(),
            Select::Min => proposals.min(),
            Select::Disabled => return current,
        };
        u32::try_from(chosen.unwrap_or_else(|| i64::from(current)).max(0)).unwrap_or(u32::MAX)
    }

    fn down_limit(&self, rules: &Rules, now: Duration, current: u32) -> u32 {
        let proposals = rules.policies.iter().map(|policy| {
            let (added, removed) = self.changes(now, policy.period());
            let start = (i64::from(current) - added + removed).max(0);
            match *policy {
                Policy::Pods(n, _) => start - i64::from(n),
                Policy::Percent(p, _) => {
                    #[allow(clippy::cast_possible_truncation, clippy::cast_precision_loss)]
                    let proposed = (start as f64 * (1.0 - f64::from(p) / 100.0)) as i64;
                    proposed
                }
            }
        });
        // For scaling down, the biggest change is the fewest replicas.
        let chosen = match rules.select {
            Select::Max => proposals.min(),
            Select::Min => proposals.max(),
            Select::Disabled => return current,
        };
        u32::try_from(chosen.unwrap_or_else(|| i64::from(current)).max(0)).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    /// As the planner makes it: any number of pods up per 15 s, 100 % down per 15 s after a
    /// stabilization window.
    fn planned(min: u32, max: u32, target: f64, down_window: u64) -> HpaSpec {
        HpaSpec {
            min,
            max,
            target_per_replica: target,
            up: Rules {
                stabilization: Duration::ZERO,
                policies: vec![Policy::Pods(max, secs(15))],
                select: Select::Max,
            },
            down: Rules {
                stabilization: secs(down_window),
                policies: vec![Policy::Percent(100, secs(15))],
                select: Select::Max,
            },
        }
    }

    #[test]
    fn desired_is_the_metric_over_the_target_rounded_up() {
        let spec = planned(1, 10, 100.0, 0);
        let mut hpa = Autoscaler::default();
        let d = hpa.decide(&spec, secs(0), 1, Some(450));
        assert_eq!((d.recommended, d.replicas), (5, 5));
        assert!((d.per_replica - 450.0).abs() < f64::EPSILON);
    }

    #[test]
    fn within_the_tolerance_nothing_changes() {
        let spec = planned(1, 10, 100.0, 0);
        let mut hpa = Autoscaler::default();
        // 4 replicas at 105 each: ratio 1.05.
        assert_eq!(hpa.decide(&spec, secs(0), 4, Some(420)).replicas, 4);
        // 4 at 89 each: ratio 0.89, outside.
        assert_eq!(hpa.decide(&spec, secs(15), 4, Some(356)).replicas, 4);
        assert_eq!(hpa.decide(&spec, secs(30), 4, Some(120)).replicas, 2);
    }

    #[test]
    fn bounds_hold() {
        let spec = planned(2, 5, 100.0, 0);
        let mut hpa = Autoscaler::default();
        assert_eq!(hpa.decide(&spec, secs(0), 2, Some(100_000)).replicas, 5);
        assert_eq!(hpa.decide(&spec, secs(60), 5, Some(0)).replicas, 2);
        // An unreadable metric keeps what runs, within the bounds.
        assert_eq!(hpa.decide(&spec, secs(120), 1, None).replicas, 2);
        assert_eq!(hpa.decide(&spec, secs(180), 4, None).replicas, 4);
    }

    #[test]
    fn scale_down_waits_for_the_stabilization_window() {
        let spec = planned(1, 10, 100.0, 60);
        let mut hpa = Autoscaler::default();
        assert_eq!(hpa.decide(&spec, secs(0), 1, Some(800)).replicas, 8);
        // The backlog is gone, but 8 was recommended within the last 60 s.
        assert_eq!(hpa.decide(&spec, secs(15), 8, Some(0)).replicas, 8);
        assert_eq!(hpa.decide(&spec, secs(45), 8, Some(0)).replicas, 8);
        // 61 s after the last high recommendation.
        assert_eq!(hpa.decide(&spec, secs(61), 8, Some(0)).replicas, 1);
    }

    #[test]
    fn scale_up_is_limited_by_its_policies_within_a_period() {
        // Kubernetes' defaults: the more of 100 % and 4 pods per 15 s.
        let spec = HpaSpec::new(1, 50, 10.0, None);
        let mut hpa = Autoscaler::default();
        // 1 → max(2, 5) = 5.
        assert_eq!(hpa.decide(&spec, secs(0), 1, Some(1000)).replicas, 5);
        // Within the same period: the period started at 1, so 5 is still the limit.
        assert_eq!(hpa.decide(&spec, secs(5), 5, Some(1000)).replicas, 5);
        // A new period starts from 5: max(10, 9) = 10.
        assert_eq!(hpa.decide(&spec, secs(16), 5, Some(1000)).replicas, 10);
    }

    #[test]
    fn scale_down_by_percent_truncates_and_respects_the_period() {
        let mut spec = planned(1, 100, 10.0, 0);
        spec.down.policies = vec![Policy::Percent(50, secs(30))];
        let mut hpa = Autoscaler::default();
        assert_eq!(hpa.decide(&spec, secs(0), 9, Some(0)).replicas, 4);
        // Same period: it started at 9, half of which is 4 (truncated): no further.
        assert_eq!(hpa.decide(&spec, secs(10), 4, Some(0)).replicas, 4);
        assert_eq!(hpa.decide(&spec, secs(31), 4, Some(0)).replicas, 2);
    }

    #[test]
    fn disabled_direction_never_moves() {
        let mut spec = planned(1, 10, 100.0, 0);
        spec.down.select = Select::Disabled;
        let mut hpa = Autoscaler::default();
        assert_eq!(hpa.decide(&spec, secs(0), 6, Some(0)).replicas, 6);
    }
}
