//! The operator's `/metrics`: reconciles by outcome, failures by a bounded category, their
//! duration, Discord requests, whether this replica leads, the metrics API's answers, and each
//! bot's queue depth. Only that gauge names bots: one series per DiscordBot that exists and
//! whose depth is known, removed when it is not.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use shardyard_admin::prom::{Counter, Gauge, Histogram, LabeledCounters, escape_label, header};

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

/// Metrics API answer durations, seconds.
const ANSWER_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0,
];

/// The HTTP statuses the metrics API answers with (`code` label).
pub const ANSWER_CODES: [&str; 8] = ["200", "400", "401", "403", "404", "405", "500", "503"];

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
    /// The metrics API's answers by status code.
    pub metrics_api_answers: LabeledCounters,
    /// How long the metrics API took to answer.
    pub metrics_api_duration: Histogram,
    /// The queue depth of each bot last read (`namespace`, `name`).
    pending: Mutex<BTreeMap<(String, String), u64>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            reconciles: LabeledCounters::new(OUTCOMES.len(), "other"),
            duration: Histogram::new(DURATION_BUCKETS),
            discord_requests: Counter::new(),
            leading: AtomicBool::new(false),
            metrics_api_answers: LabeledCounters::new(ANSWER_CODES.len(), "other"),
            metrics_api_duration: Histogram::new(ANSWER_BUCKETS),
            pending: Mutex::new(BTreeMap::new()),
        }
    }
}

impl Metrics {
    /// One reconcile that ended in `outcome` after `took`.
    pub fn reconciled(&self, outcome: &'static str, took: Duration) {
        self.reconciles.inc(outcome);
        self.duration.observe(took);
    }

    /// One answer of the metrics API or the queue-depth endpoint.
    pub fn answered(&self, code: u16, took: Duration) {
        self.metrics_api_answers.inc(&code.to_string());
        self.metrics_api_duration.observe(took);
    }

    /// `namespace/name`'s queue depth, or `None` when it is unknown (or the bot is gone):
    /// its series disappears rather than showing a stale number.
    pub fn set_pending(&self, namespace: &str, name: &str, pending: Option<u64>) {
        let mut all = self
            .pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let key = (namespace.to_owned(), name.to_owned());
        match pending {
            Some(pending) => {
                all.insert(key, pending);
            }
            None => {
                all.remove(&key);
            }
        }
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
        self.metrics_api_answers.render(
            out,
            "shardyard_operator_metrics_api_answers_total",
            "code",
            "Answers of the external metrics API and the queue-depth endpoint by HTTP status.",
        );
        self.metrics_api_duration.render(
            out,
            "shardyard_operator_metrics_api_duration_seconds",
            "Time the external metrics API took to answer.",
        );
        header(
            out,
            "shardyard_operator_pending_events",
            "gauge",
            "Events waiting for a bot's workers (its consumer's pending plus unacknowledged), \
             as last read from the consumer's leader.",
        );
        let all = self
            .pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for ((namespace, bot), pending) in all.iter() {
            out.push_str(&format!(
                "shardyard_operator_pending_events{{namespace=\"{}\",bot=\"{}\"}} {pending}\n",
                escape_label(namespace),
                escape_label(bot)
            ));
        }
    }
}
