//! The worker's metrics and readiness, served by `shardyard-admin` ([`Metrics`] is its
//! [`Status`]). Labels are bounded: the event types the bot handles (known when it is built,
//! anything else counts as `other`) and four outcomes.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use shardyard_admin::Status;
use shardyard_admin::prom::{Counter, Gauge, Histogram, LATENCY_BUCKETS, header};

/// What became of a handled event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Handled and acknowledged.
    Ok,
    /// Failed and handed back (or, in ordering mode, retried in place) for a later attempt.
    Retry,
    /// Published to the dead-letter subject and terminated.
    DeadLetter,
    /// The handler panicked; the event was handed back (or retried in place).
    Panic,
}

impl Outcome {
    const ALL: [Self; 4] = [Self::Ok, Self::Retry, Self::DeadLetter, Self::Panic];

    /// The metric label.
    #[must_use]
    pub const fn label(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Retry => "retry",
            Self::DeadLetter => "dead_letter",
            Self::Panic => "panic",
        }
    }

    const fn index(self) -> usize {
        match self {
            Self::Ok => 0,
            Self::Retry => 1,
            Self::DeadLetter => 2,
            Self::Panic => 3,
        }
    }
}

/// The label of event types the bot has no handler for (a subject token other than the
/// header's type, for instance).
const OTHER: &str = "other";

/// Counters, gauges and histograms of one worker, and whether it is ready.
#[derive(Debug)]
pub struct Metrics {
    handled: HashMap<String, [Counter; 4]>,
    other: [Counter; 4],
    handler_duration: Histogram,
    receive_latency: Histogram,
    in_flight: Gauge,
    panics: Counter,
    dead_letter_failures: Counter,
    ready: AtomicBool,
}

impl Metrics {
    pub(crate) fn new<'a>(event_types: impl IntoIterator<Item = &'a str>) -> Self {
        Self {
            handled: event_types
                .into_iter()
                .map(|t| (t.to_owned(), Default::default()))
                .collect(),
            other: Default::default(),
            handler_duration: Histogram::new(LATENCY_BUCKETS),
            receive_latency: Histogram::new(LATENCY_BUCKETS),
            in_flight: Gauge::new(),
            panics: Counter::new(),
            dead_letter_failures: Counter::new(),
            ready: AtomicBool::new(false),
        }
    }

    fn counters(&self, event_type: &str) -> &[Counter; 4] {
        self.handled.get(event_type).unwrap_or(&self.other)
    }

    pub(crate) fn handled(&self, event_type: &str, outcome: Outcome) {
        self.counters(event_type)[outcome.index()].inc();
    }

    /// Events of `event_type` that ended with `outcome` so far.
    #[must_use]
    pub fn handled_count(&self, event_type: &str, outcome: Outcome) -> u64 {
        self.counters(event_type)[outcome.index()].get()
    }

    pub(crate) fn handler_duration(&self, duration: Duration) {
        self.handler_duration.observe(duration);
    }

    pub(crate) fn receive_latency(&self, latency: Duration) {
        self.receive_latency.observe(latency);
    }

    pub(crate) fn in_flight(&self, delta: i64) {
        self.in_flight.add(delta);
    }

    pub(crate) fn panicked(&self) {
        self.panics.inc();
    }

    pub(crate) fn dead_letter_failed(&self) {
        self.dead_letter_failures.inc();
    }

    pub(crate) fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    /// Whether the worker is consuming (its consumer exists and it is not shutting down).
    #[must_use]
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }
}

impl Status for Metrics {
    fn readiness(&self) -> Result<(), String> {
        if self.is_ready() {
            Ok(())
        } else {
            Err("not consuming: waiting for NATS, the event stream or the consumer, or shutting down".to_owned())
        }
    }

    fn render_metrics(&self, out: &mut String) {
        let name = "shardyard_worker_events_total";
        header(
            out,
            name,
            "counter",
            "Events handled, by type and outcome (ok, retry, dead_letter, panic).",
        );
        let mut types: Vec<(&str, &[Counter; 4])> =
            self.handled.iter().map(|(t, c)| (t.as_str(), c)).collect();
        types.sort_unstable_by_key(|(t, _)| *t);
        types.push((OTHER, &self.other));
        for (event_type, counts) in types {
            for outcome in Outcome::ALL {
                let _ = writeln!(
                    out,
                    "{name}{{type=\"{event_type}\",outcome=\"{}\"}} {}",
                    outcome.label(),
                    counts[outcome.index()].get()
                );
            }
        }
        self.handler_duration.render(
            out,
            "shardyard_worker_handler_duration_seconds",
            "How long handlers took per attempt, failed attempts included.",
        );
        self.receive_latency.render(
            out,
            "shardyard_worker_receive_to_handler_seconds",
            "From the gateway receiving an event (Shardyard-Received-At) to its first handler start.",
        );
        self.in_flight.render(
            out,
            "shardyard_worker_in_flight",
            "Events being handled or waiting in an ordering lane.",
        );
        self.panics.render(
            out,
            "shardyard_worker_handler_panics_total",
            "Handlers that panicked.",
        );
        self.dead_letter_failures.render(
            out,
            "shardyard_worker_dead_letter_failures_total",
            "Events the dead-letter stream would not take (handed back instead).",
        );
        header(
            out,
            "shardyard_worker_ready",
            "gauge",
            "1 while the worker consumes.",
        );
        let _ = writeln!(out, "shardyard_worker_ready {}", u8::from(self.is_ready()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_bounded_labels() {
        let metrics = Metrics::new(["MESSAGE_CREATE"]);
        metrics.handled("MESSAGE_CREATE", Outcome::Ok);
        metrics.handled("MESSAGE_CREATE", Outcome::Ok);
        metrics.handled("SOMETHING_ELSE", Outcome::DeadLetter);
        metrics.handler_duration(Duration::from_millis(3));
        metrics.receive_latency(Duration::from_millis(30));
        let mut out = String::new();
        metrics.render_metrics(&mut out);
        assert!(
            out.contains(
                "shardyard_worker_events_total{type=\"MESSAGE_CREATE\",outcome=\"ok\"} 2\n"
            )
        );
        assert!(
            out.contains(
                "shardyard_worker_events_total{type=\"other\",outcome=\"dead_letter\"} 1\n"
            )
        );
        assert!(!out.contains("SOMETHING_ELSE"));
        assert!(out.contains("shardyard_worker_receive_to_handler_seconds_count 1\n"));
        assert!(out.contains("shardyard_worker_ready 0\n"));
        assert!(metrics.readiness().is_err());
        metrics.set_ready(true);
        assert!(metrics.readiness().is_ok());
    }
}
