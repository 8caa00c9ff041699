//! Blue/green resharding, decided purely from the bot's status, the planned shard total, the
//! identify budget and how many shards of the new generation reported READY:
//!
//! 1. **Starting**: generation N+1 runs beside N; its gateways identify and receive but do not
//!    publish (the control bucket names N alone). Only when the identify budget covers its shards;
//!    otherwise `IdentifyBudgetLow`, and N runs alone.
//! 2. **HandingOver**: once every shard of N+1 is READY, the control bucket names both (`N,N+1`):
//!    N+1 publishes before N stops, so no event falls between them.
//! 3. **Done** after [`OVERLAP`]: N+1 alone; N's objects are pruned.
//!
//! The state lives in the bot's status, so an operator restarted mid-way carries on from it.

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;

use crate::plan::Generation;
use crate::resource::{ReshardPhase, ReshardStatus};

/// How long both generations publish during a hand-over: long enough for every gateway of N+1
/// to see that it publishes (a KV watch, milliseconds) before N stops.
pub const OVERLAP: Duration = Duration::from_secs(5);

/// What the decision is made from.
#[derive(Debug, Clone)]
pub struct ReshardInput {
    /// The generation that publishes now (`status.gatewayGeneration` and `status.shards`).
    pub active: Option<Generation>,
    /// The shard total the planner wants now.
    pub wanted: u32,
    /// The reshard in progress (`status.reshard`).
    pub reshard: Option<ReshardStatus>,
    /// Session starts left today, when known.
    pub budget_remaining: Option<u32>,
    /// Shards of the reshard's generation that reported READY (fresh keys).
    pub new_ready: u32,
    /// Now.
    pub now: Timestamp,
}

/// What to run, and what to name active.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// A new bot: generation 1 with the wanted total, active at once.
    First(Generation),
    /// One generation, active.
    Steady(Generation),
    /// A reshard is wanted but the day's session starts do not cover its shards: the active
    /// generation alone.
    BudgetLow {
        /// The generation that keeps running.
        active: Generation,
        /// Session starts the new generation needs.
        needed: u32,
        /// Session starts left.
        remaining: u32,
    },
    /// Both run; the new one does not publish yet.
    Starting {
        /// The generation that publishes.
        active: Generation,
        /// The one that starts.
        new: Generation,
        /// Its shards that are READY.
        ready: u32,
    },
    /// Both publish, since `since`.
    HandingOver {
        /// The old generation.
        active: Generation,
        /// The new one.
        new: Generation,
        /// When the hand-over began.
        since: Timestamp,
    },
    /// The overlap is over: the new generation alone, active.
    Done {
        /// The new generation.
        new: Generation,
        /// The one that stops.
        old: Generation,
    },
}

impl Step {
    /// The generations to run (the planner's `running`, besides its target).
    #[must_use]
    pub fn running(&self) -> Vec<Generation> {
        match self {
            Self::First(_) => Vec::new(),
            Self::Steady(g) | Self::BudgetLow { active: g, .. } | Self::Done { new: g, .. } => {
                vec![*g]
            }
            Self::Starting { active, new, .. } | Self::HandingOver { active, new, .. } => {
                vec![*active, *new]
            }
        }
    }

    /// The generations the control bucket names (those that publish).
    #[must_use]
    pub fn publishing(&self) -> Vec<u64> {
        match self {
            Self::First(g) | Self::Steady(g) | Self::BudgetLow { active: g, .. } => vec![g.number],
            Self::Starting { active, .. } => vec![active.number],
            Self::HandingOver { active, new, .. } => vec![active.number, new.number],
            Self::Done { new, .. } => vec![new.number],
        }
    }

    /// The generation the status reports as publishing.
    #[must_use]
    pub const fn active(&self) -> Generation {
        match self {
            Self::First(g)
            | Self::Steady(g)
            | Self::BudgetLow { active: g, .. }
            | Self::Starting { active: g, .. }
            | Self::HandingOver { active: g, .. }
            | Self::Done { new: g, .. } => *g,
        }
    }

    /// The reshard status to keep.
    #[must_use]
    pub fn reshard_status(&self) -> Option<ReshardStatus> {
        match self {
            Self::Starting { new, ready, .. } => Some(ReshardStatus {
                generation: new.number,
                shards: new.total,
                phase: ReshardPhase::Starting,
                ready_shards: *ready,
                handover_since: None,
            }),
            Self::HandingOver { new, since, .. } => Some(ReshardStatus {
                generation: new.number,
                shards: new.total,
                phase: ReshardPhase::HandingOver,
                ready_shards: new.total,
                handover_since: Some(since.to_string()),
            }),
            _ => None,
        }
    }

    /// Whether the operator should look again soon (a reshard moves on its own).
    #[must_use]
    pub const fn in_progress(&self) -> bool {
        matches!(self, Self::Starting { .. } | Self::HandingOver { .. })
    }
}

/// The next step.
#[must_use]
pub fn decide(input: &ReshardInput) -> Step {
    let Some(active) = input.active else {
        return Step::First(Generation {
            number: 1,
            total: input.wanted,
        });
    };
    if let Some(reshard) = &input.reshard {
        let new = Generation {
            number: reshard.generation,
            total: reshard.shards,
        };
        match reshard.phase {
            // Begun: it is finished whatever the wanted total became (the new generation
            // already publishes); a further change is a reshard of its own afterwards.
            ReshardPhase::HandingOver => {
                let since = reshard
                    .handover_since
                    .as_deref()
                    .and_then(|s| s.parse::<Timestamp>().ok())
                    .unwrap_or(input.now);
                let overlapped = input.now.duration_since(since).unsigned_abs() >= OVERLAP;
                return if overlapped {
                    Step::Done { new, old: active }
                } else {
                    Step::HandingOver { active, new, since }
                };
            }
            ReshardPhase::Starting if new.total == input.wanted => {
                return if input.new_ready >= new.total {
                    Step::HandingOver {
                        active,
                        new,
                        since: input.now,
                    }
                } else {
                    Step::Starting {
                        active,
                        new,
                        ready: input.new_ready,
                    }
                };
            }
            // Starting toward a total that is no longer wanted: dropped (below).
            ReshardPhase::Starting => {}
        }
    }
    if input.wanted == active.total {
        return Step::Steady(active);
    }
    let remaining = input.budget_remaining.unwrap_or(u32::MAX);
    if remaining < input.wanted {
        return Step::BudgetLow {
            active,
            needed: input.wanted,
            remaining,
        };
    }
    let number = active
        .number
        .max(input.reshard.as_ref().map_or(0, |r| r.generation))
        + 1;
    Step::Starting {
        active,
        new: Generation {
            number,
            total: input.wanted,
        },
        ready: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(seconds).unwrap()
    }

    fn g(number: u64, total: u32) -> Generation {
        Generation { number, total }
    }

    fn input(active: Option<Generation>, wanted: u32) -> ReshardInput {
        ReshardInput {
            active,
            wanted,
            reshard: None,
            budget_remaining: Some(1000),
            new_ready: 0,
            now: at(1_000),
        }
    }

    #[test]
    fn a_new_bot_starts_generation_one_active() {
        let step = decide(&input(None, 4));
        assert_eq!(step, Step::First(g(1, 4)));
        assert_eq!(step.publishing(), [1]);
        assert!(step.running().is_empty());
        assert_eq!(decide(&input(Some(g(1, 4)), 4)), Step::Steady(g(1, 4)));
    }

    #[test]
    fn a_reshard_starts_beside_waits_hands_over_then_retires_the_old() {
        // 4 → 8 shards.
        let start = decide(&input(Some(g(1, 4)), 8));
        assert_eq!(
            start,
            Step::Starting {
                active: g(1, 4),
                new: g(2, 8),
                ready: 0
            }
        );
        assert_eq!(start.running(), [g(1, 4), g(2, 8)]);
        assert_eq!(
            start.publishing(),
            [1],
            "the new one receives but does not publish"
        );
        let status = start.reshard_status().unwrap();

        // Carrying on (an operator restarted here reads the same status).
        let mut waiting = input(Some(g(1, 4)), 8);
        waiting.reshard = Some(status.clone());
        waiting.new_ready = 7;
        let step = decide(&waiting);
        assert_eq!(
            step,
            Step::Starting {
                active: g(1, 4),
                new: g(2, 8),
                ready: 7
            }
        );

        waiting.new_ready = 8;
        let handing = decide(&waiting);
        assert_eq!(
            handing,
            Step::HandingOver {
                active: g(1, 4),
                new: g(2, 8),
                since: at(1_000)
            }
        );
        assert_eq!(
            handing.publishing(),
            [1, 2],
            "both publish: an overlap, never a gap"
        );
        let status = handing.reshard_status().unwrap();
        assert_eq!(status.phase, ReshardPhase::HandingOver);

        let mut overlapping = input(Some(g(1, 4)), 8);
        overlapping.reshard = Some(status);
        overlapping.now = at(1_003);
        assert!(matches!(decide(&overlapping), Step::HandingOver { .. }));
        overlapping.now = at(1_005);
        let done = decide(&overlapping);
        assert_eq!(
            done,
            Step::Done {
                new: g(2, 8),
                old: g(1, 4)
            }
        );
        assert_eq!(done.publishing(), [2]);
        assert_eq!(
            done.running(),
            [g(2, 8)],
            "the old generation is no longer planned"
        );
        assert_eq!(done.reshard_status(), None);
    }

    #[test]
    fn a_low_identify_budget_holds_the_reshard() {
        let mut low = input(Some(g(1, 4)), 16);
        low.budget_remaining = Some(10);
        let step = decide(&low);
        assert_eq!(
            step,
            Step::BudgetLow {
                active: g(1, 4),
                needed: 16,
                remaining: 10
            }
        );
        assert_eq!(step.running(), [g(1, 4)]);
        assert_eq!(step.publishing(), [1]);
        low.budget_remaining = Some(16);
        assert!(
            matches!(decide(&low), Step::Starting { .. }),
            "exactly enough will do"
        );
    }

    #[test]
    fn a_changed_mind_drops_a_starting_generation_but_not_a_handover() {
        let mut input = input(Some(g(1, 4)), 4);
        input.reshard = Some(ReshardStatus {
            generation: 2,
            shards: 8,
            phase: ReshardPhase::Starting,
            ready_shards: 3,
            handover_since: None,
        });
        assert_eq!(
            decide(&input),
            Step::Steady(g(1, 4)),
            "back to 4: g2 is dropped"
        );
        input.wanted = 12;
        assert_eq!(
            decide(&input),
            Step::Starting {
                active: g(1, 4),
                new: g(3, 12),
                ready: 0
            },
            "a new number: g2's objects and keys are not reused"
        );
        input.reshard = Some(ReshardStatus {
            generation: 2,
            shards: 8,
            phase: ReshardPhase::HandingOver,
            ready_shards: 8,
            handover_since: Some(at(990).to_string()),
        });
        assert_eq!(
            decide(&input),
            Step::Done {
                new: g(2, 8),
                old: g(1, 4)
            },
            "a hand-over that began is finished first"
        );
    }
}
