//! The operator's `/metrics`: reconciles by outcome, failures by a bounded category, their
//! duration, Discord requests, and whether this replica leads. No bot name in a label.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use shardyard_admin::prom::{Counter, Gauge, Histogram, LabeledCounters};

/// Reconcile durations, seconds.
const DURATION_BUCKETS: &[f64] = &[0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// The categories a reconcile ends in (`outcome` label).
pub const OUTCOMES: [&str; 8] = [
    "applied",
    "token_secret_missing",
    "invalid_token",
    "discord_unreachable",
    "nats_unreachable",
    "invalid_spec",
    "apply_failed",
    "api_error",
];

/// The operator's counters.
#[derive(Debug)]
pub struct Metrics {
    /// Reconciles by outcome.
    pub reconciles: LabeledCounters,
    /// Reconcile durations.
    pub duration: Histogram,
    /// Requests to Discord's `GET /gateway/bot` (not those answered from the cache).
    pub discord_requests: Counter,
    /// 1 while this replica leads.
    pub leading: AtomicBool,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            reconciles: LabeledCounters::new(OUTCOMES.len(), "other"),
            duration: Histogram::new(DURATION_BUCKETS),
            discord_requests: Counter::new(),
            leading: AtomicBool::new(false),
        }
    }
}

impl Metrics {
    /// One reconcile that ended in `outcome` after `took`.
    pub fn reconciled(&self, outcome: &'static str, took: Duration) {
        self.reconciles.inc(outcome);
        self.duration.observe(took);
    }

    /// The Prometheus text.
    pub fn render(&self, out: &mut String) {
        self.reconciles.render(
            out,
            "shardyard_operator_reconciles_total",
            "outcome",
            "Reconciles of DiscordBots by outcome (applied, or what stopped them).",
        );
        self.duration.render(
            out,
            "shardyard_operator_reconcile_duration_seconds",
            "Time one reconcile took.",
        );
        self.discord_requests.render(
            out,
            "shardyard_operator_discord_requests_total",
            "Requests to Discord's GET /gateway/bot (answers are cached for a minute).",
        );
        let leading = Gauge::new();
        leading.set(i64::from(self.leading.load(Ordering::Relaxed)));
        leading.render(
            out,
            "shardyard_operator_leader",
            "1 while this replica holds the leader Lease.",
        );
    }
}
