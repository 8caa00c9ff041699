//! Prometheus primitives, updated without locks on the hot path (the labelled counters take a
//! short mutex only to find their label), rendered in text format version 0.0.4.
//!
//! Label values must stay bounded: [`LabeledCounters`] caps the number of distinct values and
//! counts the rest under one overflow value, so nothing from the network can grow a series set.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

/// Upper bounds, in seconds, for latencies from sub-millisecond publishes and handler starts up
/// to waits of minutes (longer ones land in `+Inf`).
pub const LATENCY_BUCKETS: &[f64] = &[
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
    15.0, 60.0, 300.0,
];

/// Writes the `# HELP` and `# TYPE` lines of a metric.
pub fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// Escapes a label value (`\`, `"` and newlines) for the text format.
#[must_use]
pub fn escape_label(value: &str) -> String {
    let mut escaped = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => escaped.push_str("\\\\"),
            '"' => escaped.push_str("\\\""),
            '\n' => escaped.push_str("\\n"),
            c => escaped.push(c),
        }
    }
    escaped
}

/// A monotonically increasing count.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// A counter at zero.
    #[must_use]
    pub const fn new() -> Self {
        Self(AtomicU64::new(0))
    }

    /// Adds one.
    pub fn inc(&self) {
        self.add(1);
    }

    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    /// The current count.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    /// Writes this counter as one metric with its header.
    pub fn render(&self, out: &mut String, name: &str, help: &str) {
        header(out, name, "counter", help);
        let _ = writeln!(out, "{name} {}", self.get());
    }
}

/// A value that goes up and down.
#[derive(Debug, Default)]
pub struct Gauge(AtomicI64);

impl Gauge {
    /// A gauge at zero.
    #[must_use]
    pub const fn new() -> Self {
        Self(AtomicI64::new(0))
    }

    /// Sets the value.
    pub fn set(&self, value: i64) {
        self.0.store(value, Ordering::Relaxed);
    }

    /// Adds `delta` (negative to subtract).
    pub fn add(&self, delta: i64) {
        self.0.fetch_add(delta, Ordering::Relaxed);
    }

    /// The current value.
    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }

    /// Writes this gauge as one metric with its header.
    pub fn render(&self, out: &mut String, name: &str, help: &str) {
        header(out, name, "gauge", help);
        let _ = writeln!(out, "{name} {}", self.get());
    }
}

/// Counts by one label whose values are capped at `max` distinct ones; later new values count
/// under `overflow`.
#[derive(Debug)]
pub struct LabeledCounters {
    max: usize,
    overflow: &'static str,
    counts: Mutex<BTreeMap<String, u64>>,
}

impl LabeledCounters {
    /// At most `max` distinct label values, then `overflow`.
    #[must_use]
    pub const fn new(max: usize, overflow: &'static str) -> Self {
        Self {
            max,
            overflow,
            counts: Mutex::new(BTreeMap::new()),
        }
    }

    /// Adds one under `label`.
    pub fn inc(&self, label: &str) {
        self.add(label, 1);
    }

    /// Adds `n` under `label`.
    pub fn add(&self, label: &str, n: u64) {
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = counts.get_mut(label) {
            *count += n;
        } else if counts.len() < self.max {
            counts.insert(label.to_owned(), n);
        } else {
            *counts.entry(self.overflow.to_owned()).or_default() += n;
        }
    }

    /// The count under `label`.
    pub fn get(&self, label: &str) -> u64 {
        self.counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(label)
            .copied()
            .unwrap_or(0)
    }

    /// Every label and its count, sorted by label.
    pub fn snapshot(&self) -> Vec<(String, u64)> {
        self.counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(label, count)| (label.clone(), *count))
            .collect()
    }

    /// Writes the counters as one metric `name{label_name="…"}` with its header.
    pub fn render(&self, out: &mut String, name: &str, label_name: &str, help: &str) {
        header(out, name, "counter", help);
        for (label, count) in self.snapshot() {
            let _ = writeln!(
                out,
                "{name}{{{label_name}=\"{}\"}} {count}",
                escape_label(&label)
            );
        }
    }
}

/// A histogram with fixed bucket bounds (seconds), updated without locks.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    /// Observations at or below each bound and above the previous one (summed when rendered).
    counts: Box<[AtomicU64]>,
    count: AtomicU64,
    sum_ns: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self::new(LATENCY_BUCKETS)
    }
}

impl Histogram {
    /// An empty histogram over `bounds` (ascending upper bounds in seconds; `+Inf` is implied).
    #[must_use]
    pub fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            counts: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum_ns: AtomicU64::new(0),
        }
    }

    /// Records one duration.
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = self.bounds.iter().position(|&b| secs <= b) {
            self.counts[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_ns.fetch_add(
            u64::try_from(d.as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    /// How many durations were recorded.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// The current counts, to render or to merge with other histograms over the same bounds.
    pub fn snapshot(&self) -> HistogramSnapshot {
        HistogramSnapshot {
            bounds: self.bounds,
            counts: self
                .counts
                .iter()
                .map(|c| c.load(Ordering::Relaxed))
                .collect(),
            count: self.count(),
            sum_ns: self.sum_ns.load(Ordering::Relaxed),
        }
    }

    /// Writes this histogram as one metric with its header.
    pub fn render(&self, out: &mut String, name: &str, help: &str) {
        header(out, name, "histogram", help);
        self.snapshot().write_series(out, name, "");
    }

    /// Writes the sum of `histograms` (all over the same bounds) as one metric with its header:
    /// a process's view of per-shard or per-route histograms.
    pub fn render_sum<'a>(
        out: &mut String,
        name: &str,
        help: &str,
        histograms: impl IntoIterator<Item = &'a Self>,
    ) {
        let mut total: Option<HistogramSnapshot> = None;
        for h in histograms {
            match &mut total {
                Some(total) => total.merge(&h.snapshot()),
                None => total = Some(h.snapshot()),
            }
        }
        header(out, name, "histogram", help);
        if let Some(total) = total {
            total.write_series(out, name, "");
        }
    }
}

/// A histogram's counts at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSnapshot {
    bounds: &'static [f64],
    counts: Vec<u64>,
    count: u64,
    sum_ns: u64,
}

impl HistogramSnapshot {
    /// Adds `other`'s counts. Bucket counts are only added where the bounds are the same.
    pub fn merge(&mut self, other: &Self) {
        if self.bounds == other.bounds {
            for (total, c) in self.counts.iter_mut().zip(&other.counts) {
                *total += c;
            }
        }
        self.count += other.count;
        self.sum_ns = self.sum_ns.saturating_add(other.sum_ns);
    }

    /// How many observations.
    #[must_use]
    pub const fn count(&self) -> u64 {
        self.count
    }

    /// Writes the `_bucket`, `_sum` and `_count` series (no header). `labels` is empty or a
    /// comma-separated `name="value"` list (already escaped) added to every series.
    pub fn write_series(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let mut cumulative = 0;
        for (bound, c) in self.bounds.iter().zip(&self.counts) {
            cumulative += c;
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {cumulative}"
            );
        }
        let count = self.count;
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {count}");
        #[allow(clippy::cast_precision_loss)]
        let sum = self.sum_ns as f64 / 1e9;
        let _ = writeln!(
            out,
            "{name}_sum{braces} {sum}\n{name}_count{braces} {count}"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOUNDS: &[f64] = &[0.001, 0.01, 0.1];

    #[test]
    fn histogram_buckets_are_cumulative_and_sum_in_seconds() {
        let h = Histogram::new(BOUNDS);
        h.observe(Duration::from_micros(500));
        h.observe(Duration::from_millis(5));
        h.observe(Duration::from_millis(5));
        h.observe(Duration::from_secs(2));
        let mut out = String::new();
        h.render(&mut out, "x_seconds", "A test.");
        assert_eq!(
            out,
            "# HELP x_seconds A test.\n# TYPE x_seconds histogram\n\
             x_seconds_bucket{le=\"0.001\"} 1\n\
             x_seconds_bucket{le=\"0.01\"} 3\n\
             x_seconds_bucket{le=\"0.1\"} 3\n\
             x_seconds_bucket{le=\"+Inf\"} 4\n\
             x_seconds_sum 2.0105\n\
             x_seconds_count 4\n"
        );
    }

    #[test]
    fn histograms_sum_across_instances_and_take_labels() {
        let a = Histogram::new(BOUNDS);
        let b = Histogram::new(BOUNDS);
        a.observe(Duration::from_millis(2));
        b.observe(Duration::from_millis(50));
        let mut out = String::new();
        Histogram::render_sum(&mut out, "y", "Help.", [&a, &b]);
        assert!(out.contains("y_bucket{le=\"0.01\"} 1\n"), "{out}");
        assert!(out.contains("y_bucket{le=\"0.1\"} 2\n"), "{out}");
        assert!(out.contains("y_count 2\n"), "{out}");

        let mut labelled = String::new();
        a.snapshot()
            .write_series(&mut labelled, "z", "route=\"/a\"");
        assert!(labelled.contains("z_bucket{route=\"/a\",le=\"0.01\"} 1\n"));
        assert!(labelled.contains("z_count{route=\"/a\"} 1\n"));
    }

    #[test]
    fn labeled_counters_cap_their_values() {
        let c = LabeledCounters::new(2, "other");
        c.inc("A");
        c.inc("B");
        c.inc("C\"\n");
        c.add("A", 2);
        assert_eq!(c.get("A"), 3);
        assert_eq!(c.get("other"), 1);
        let mut out = String::new();
        c.render(&mut out, "events_total", "type", "Events.");
        assert!(out.contains("events_total{type=\"A\"} 3\n"));
        assert!(out.contains("events_total{type=\"other\"} 1\n"));
        assert!(!out.contains('C'));
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape_label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    #[test]
    fn counters_and_gauges_render() {
        let c = Counter::new();
        c.add(3);
        let g = Gauge::new();
        g.set(5);
        g.add(-2);
        let mut out = String::new();
        c.render(&mut out, "c_total", "C.");
        g.render(&mut out, "g", "G.");
        assert!(out.contains("# TYPE c_total counter\nc_total 3\n"));
        assert!(out.contains("# TYPE g gauge\ng 3\n"));
    }
}
