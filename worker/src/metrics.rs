//! The worker's metrics, rendered in Prometheus' text format. Labels are bounded: the event
//! types the bot handles (known when it is built) and four outcomes.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

/// What became of a handled event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Handled and acknowledged.
    Ok,
    /// Failed (or the handler panicked) and handed back for a later attempt.
    Retry,
    /// Published to the dead-letter subject and terminated.
    DeadLetter,
    /// The handler panicked; the event was handed back.
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

/// Handler durations: 100 µs to 30 s.
const DURATION_BUCKETS: &[f64] = &[
    0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    30.0,
];
/// Gateway receive to handler start: 250 µs to 10 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

/// A Prometheus histogram with fixed buckets, lock-free.
#[derive(Debug)]
struct Histogram {
    bounds: &'static [f64],
    counts: Vec<AtomicU64>,
    sum_micros: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            counts: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            sum_micros: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    fn observe(&self, value: Duration) {
        let seconds = value.as_secs_f64();
        if let Some(i) = self.bounds.iter().position(|&b| seconds <= b) {
            self.counts[i].fetch_add(1, Ordering::Relaxed);
        }
        let micros = u64::try_from(value.as_micros()).unwrap_or(u64::MAX);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (bound, count) in self.bounds.iter().zip(&self.counts) {
            cumulative += count.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        let count = self.count.load(Ordering::Relaxed);
        #[allow(clippy::cast_precision_loss)] // sums of microseconds stay far below 2^53
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {count}");
    }
}

/// Counters, gauges and histograms of one worker.
#[derive(Debug)]
pub struct Metrics {
    handled: HashMap<String, [AtomicU64; 4]>,
    other: [AtomicU64; 4],
    handler_duration: Histogram,
    receive_latency: Histogram,
    in_flight: AtomicI64,
    panics: AtomicU64,
    dead_letter_failures: AtomicU64,
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
            handler_duration: Histogram::new(DURATION_BUCKETS),
            receive_latency: Histogram::new(LATENCY_BUCKETS),
            in_flight: AtomicI64::new(0),
            panics: AtomicU64::new(0),
            dead_letter_failures: AtomicU64::new(0),
            ready: AtomicBool::new(false),
        }
    }

    pub(crate) fn handled(&self, event_type: &str, outcome: Outcome) {
        self.handled.get(event_type).unwrap_or(&self.other)[outcome.index()]
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Events of `event_type` that ended with `outcome` so far.
    #[must_use]
    pub fn handled_count(&self, event_type: &str, outcome: Outcome) -> u64 {
        self.handled.get(event_type).unwrap_or(&self.other)[outcome.index()].load(Ordering::Relaxed)
    }

    pub(crate) fn handler_duration(&self, duration: Duration) {
        self.handler_duration.observe(duration);
    }

    pub(crate) fn receive_latency(&self, latency: Duration) {
        self.receive_latency.observe(latency);
    }

    pub(crate) fn in_flight(&self, delta: i64) {
        self.in_flight.fetch_add(delta, Ordering::Relaxed);
    }

    pub(crate) fn panicked(&self) {
        self.panics.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn dead_letter_failed(&self) {
        self.dead_letter_failures.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    /// Whether the worker is consuming (its consumer exists and it is not shutting down).
    #[must_use]
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    /// Every metric in Prometheus' text format.
    pub fn render(&self, out: &mut String) {
        let name = "shardyard_worker_events_total";
        let _ = writeln!(
            out,
            "# HELP {name} Events handled, by type and outcome (ok, retry, dead_letter, panic).\n# TYPE {name} counter"
        );
        let mut types: Vec<(&str, &[AtomicU64; 4])> =
            self.handled.iter().map(|(t, c)| (t.as_str(), c)).collect();
        types.sort_unstable_by_key(|(t, _)| *t);
        types.push((OTHER, &self.other));
        for (event_type, counts) in types {
            for outcome in Outcome::ALL {
                let n = counts[outcome.index()].load(Ordering::Relaxed);
                let _ = writeln!(
                    out,
                    "{name}{{type=\"{event_type}\",outcome=\"{}\"}} {n}",
                    outcome.label()
                );
            }
        }
        self.handler_duration.render(
            out,
            "shardyard_worker_handler_duration_seconds",
            "How long handlers took, attempts that failed included.",
        );
        self.receive_latency.render(
            out,
            "shardyard_worker_receive_to_handler_seconds",
            "From the gateway receiving an event (Shardyard-Received-At) to its handler starting.",
        );
        let gauges = [
            (
                "shardyard_worker_in_flight",
                "gauge",
                "Events being handled or waiting in an ordering lane.",
                self.in_flight.load(Ordering::Relaxed),
            ),
            (
                "shardyard_worker_handler_panics_total",
                "counter",
                "Handlers that panicked.",
                i64::try_from(self.panics.load(Ordering::Relaxed)).unwrap_or(i64::MAX),
            ),
            (
                "shardyard_worker_dead_letter_failures_total",
                "counter",
                "Events that could not be published to the dead-letter stream.",
                i64::try_from(self.dead_letter_failures.load(Ordering::Relaxed))
                    .unwrap_or(i64::MAX),
            ),
            (
                "shardyard_worker_ready",
                "gauge",
                "1 while the worker consumes.",
                i64::from(self.is_ready()),
            ),
        ];
        for (name, kind, help, value) in gauges {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        }
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
        metrics.render(&mut out);
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
        assert!(
            out.contains("shardyard_worker_handler_duration_seconds_bucket{le=\"0.0025\"} 0\n")
        );
        assert!(out.contains("shardyard_worker_handler_duration_seconds_bucket{le=\"0.005\"} 1\n"));
        assert!(out.contains("shardyard_worker_receive_to_handler_seconds_count 1\n"));
        assert!(out.contains("shardyard_worker_ready 0\n"));
    }
}
