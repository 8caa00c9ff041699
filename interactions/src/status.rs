//! What `/readyz` and `/metrics` of `shardyard interactions` report. Every label value comes
//! from a fixed set.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use shardyard_admin::Status;
use shardyard_admin::prom::{self, Counter, Histogram, LabeledCounters};

use crate::pending::Pending;

/// Answer times: Discord waits 3 s.
const ANSWER_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 5.0,
];

/// The endpoint's counters and state.
#[derive(Debug)]
pub struct EndpointStatus {
    /// Requests by interaction type (`ping`, `command`, `component`, `autocomplete`,
    /// `modal_submit`, `other`, or `refused` before the type was read).
    pub requests: LabeledCounters,
    /// Requests refused, by reason.
    pub refused: LabeledCounters,
    /// Interactions deferred because no answer came in time, by interaction type.
    pub deferred: LabeledCounters,
    /// Workers' answers that came after the deferral.
    pub late_answers: Counter,
    /// From Discord's request to our answer, for every answered interaction (PINGs excluded).
    pub answer_latency: Histogram,
    /// From Discord's request to the interaction stored in the stream.
    pub publish_latency: Histogram,
    /// Whether NATS is connected.
    pub nats_connected: AtomicBool,
    /// Whether the bot's stream exists (checked at start and after publish failures).
    pub stream_exists: AtomicBool,
    /// Set on shutdown: not ready any more.
    pub stopping: AtomicBool,
    pub(crate) pending: Arc<Pending>,
}

impl EndpointStatus {
    pub(crate) fn new(pending: Arc<Pending>) -> Self {
        Self {
            requests: LabeledCounters::new(8, "other"),
            refused: LabeledCounters::new(16, "other"),
            deferred: LabeledCounters::new(8, "other"),
            late_answers: Counter::default(),
            answer_latency: Histogram::new(ANSWER_BUCKETS),
            publish_latency: Histogram::new(ANSWER_BUCKETS),
            nats_connected: AtomicBool::new(false),
            stream_exists: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
            pending,
        }
    }
}

impl Status for EndpointStatus {
    fn readiness(&self) -> Result<(), String> {
        if self.stopping.load(Ordering::Relaxed) {
            return Err("shutting down".into());
        }
        if !self.nats_connected.load(Ordering::Relaxed) {
            return Err("NATS is not connected".into());
        }
        if !self.stream_exists.load(Ordering::Relaxed) {
            return Err("the bot's event stream does not exist yet".into());
        }
        Ok(())
    }

    fn render_metrics(&self, out: &mut String) {
        self.requests.render(
            out,
            "shardyard_interactions_requests_total",
            "type",
            "Signed requests from Discord, by interaction type.",
        );
        self.refused.render(
            out,
            "shardyard_interactions_refused_total",
            "reason",
            "Requests refused (unsigned, bad_signature, stale_timestamp, too_large, malformed, replayed, nats_unavailable).",
        );
        self.deferred.render(
            out,
            "shardyard_interactions_deferred_total",
            "type",
            "Interactions answered with a deferral because no worker answered in time.",
        );
        self.late_answers.render(
            out,
            "shardyard_interactions_late_answers_total",
            "Workers' answers that came after the deferral (delivered as an edit by the worker).",
        );
        self.answer_latency.render(
            out,
            "shardyard_interactions_answer_seconds",
            "From Discord's request to the endpoint's answer (the worker's, or the deferral).",
        );
        self.publish_latency.render(
            out,
            "shardyard_interactions_publish_seconds",
            "From Discord's request to the interaction stored in the stream (signature check included).",
        );
        prom::header(
            out,
            "shardyard_interactions_waiting",
            "gauge",
            "Discord's requests held open for a worker's answer.",
        );
        let _ = writeln!(
            out,
            "shardyard_interactions_waiting {}",
            self.pending.waiting()
        );
    }
}
