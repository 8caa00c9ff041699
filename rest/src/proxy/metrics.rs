//! The proxy's Prometheus metrics. Labels are bounded: methods, route templates (at most
//! [`MAX_ROUTE_SERIES`] of them, then `other`), statuses, scopes, kinds and the token label
//! (`default`, or a client token's fingerprint, at most `--max-tokens` of them). Never a raw
//! path, never a token.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Duration;

use shardyard_admin::prom::{Counter, Gauge, Histogram, escape_label, header};

use crate::ratelimit::{Snapshot, TokenFingerprint, lock};

/// Distinct `(method, route, status)` series kept before new ones count as `route="other"`.
pub(crate) const MAX_ROUTE_SERIES: usize = 4096;

/// Upstream latency buckets, seconds.
const LATENCY_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Counters the proxy keeps itself; the engine's numbers come from its [`Snapshot`].
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    requests: Mutex<HashMap<(&'static str, String, u16), u64>>,
    upstream: Mutex<HashMap<&'static str, Histogram>>,
    upstream_errors: Mutex<HashMap<&'static str, u64>>,
    retries: Mutex<HashMap<&'static str, u64>>,
    local: Mutex<HashMap<&'static str, u64>>,
    pub(crate) in_flight: Gauge,
    held_refusals: Counter,
    permits: Mutex<HashMap<&'static str, u64>>,
}

impl Metrics {
    /// One answer to a client. `route` is a template (or `invalid`).
    pub(crate) fn request(&self, method: &'static str, route: &str, status: u16) {
        let mut requests = lock(&self.requests);
        let key = (method, route.to_owned(), status);
        if let Some(n) = requests.get_mut(&key) {
            *n += 1;
            return;
        }
        let key = if requests.len() >= MAX_ROUTE_SERIES {
            (method, "other".to_owned(), status)
        } else {
            key
        };
        *requests.entry(key).or_default() += 1;
    }

    /// One upstream answer (headers received) after `latency`, by method.
    pub(crate) fn upstream(&self, method: &'static str, latency: Duration) {
        lock(&self.upstream)
            .entry(method)
            .or_insert_with(|| Histogram::new(LATENCY_BUCKETS))
            .observe(latency);
    }

    /// An upstream failure: `connect` (no answer, or a broken one), `timeout`, `status_5xx`.
    pub(crate) fn upstream_error(&self, kind: &'static str) {
        *lock(&self.upstream_errors).entry(kind).or_default() += 1;
    }

    /// A transparent retry: `rate_limited`, `upstream_5xx`, `connect`.
    pub(crate) fn retry(&self, reason: &'static str) {
        *lock(&self.retries).entry(reason).or_default() += 1;
    }

    /// An answer the proxy made itself, by kind.
    pub(crate) fn local(&self, kind: &'static str) {
        *lock(&self.local).entry(kind).or_default() += 1;
    }

    /// A permit exchange between replicas, by outcome: `lent` (by an owner), `borrowed`,
    /// `refused`, `moved`, `owner_lost` (by the replica that asked).
    pub(crate) fn permit(&self, outcome: &'static str) {
        *lock(&self.permits).entry(outcome).or_default() += 1;
    }

    /// A refusal held before it was answered (a client re-sending at once is paced by it).
    pub(crate) fn held_refusal(&self) {
        self.held_refusals.inc();
    }

    /// The Prometheus text: these counters and the engine's `snapshot`. `default` is the
    /// configured token's fingerprint, labelled `token="default"`.
    pub(crate) fn render(&self, snapshot: &Snapshot, default: Option<TokenFingerprint>) -> String {
        let mut out = String::with_capacity(4096);
        let o = &mut out;

        header(
            o,
            "shardyard_rest_requests_total",
            "counter",
            "Requests by method, route template and the status answered (499: the client left before its answer).",
        );
        let mut requests: Vec<_> = lock(&self.requests)
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        requests.sort();
        for ((method, route, status), n) in requests {
            let _ = writeln!(
                o,
                "shardyard_rest_requests_total{{method=\"{method}\",route=\"{}\",status=\"{status}\"}} {n}",
                escape_label(&route)
            );
        }

        self.in_flight.render(
            o,
            "shardyard_rest_requests_in_flight",
            "Client requests being handled.",
        );

        header(
            o,
            "shardyard_rest_upstream_latency_seconds",
            "histogram",
            "Time from sending a request to Discord to its answer's headers, by method.",
        );
        let mut upstream: Vec<_> = lock(&self.upstream)
            .iter()
            .map(|(method, h)| (*method, h.snapshot()))
            .collect();
        upstream.sort_by_key(|u| u.0);
        for (method, histogram) in upstream {
            histogram.write_series(
                o,
                "shardyard_rest_upstream_latency_seconds",
                &format!("method=\"{method}\""),
            );
        }

        counters(
            o,
            "shardyard_rest_upstream_errors_total",
            "Upstream failures, by kind: connect (no answer, or a broken one), timeout, status_5xx.",
            "kind",
            &lock(&self.upstream_errors),
        );
        counters(
            o,
            "shardyard_rest_retries_total",
            "Requests sent again transparently, by reason.",
            "reason",
            &lock(&self.retries),
        );
        counters(
            o,
            "shardyard_rest_local_answers_total",
            "Answers the proxy made itself, by kind.",
            "kind",
            &lock(&self.local),
        );
        self.held_refusals.render(
            o,
            "shardyard_rest_held_refusals_total",
            "Refusals with a retry-after held (up to --refusal-hold) before they were answered.",
        );
        counters(
            o,
            "shardyard_rest_cluster_permits_total",
            "Permits between replicas, by outcome: lent (by the token's owner), borrowed, refused, moved, owner_lost (by the replica that asked).",
            "outcome",
            &lock(&self.permits),
        );

        header(
            o,
            "shardyard_rest_rate_limited_total",
            "counter",
            "429s Discord answered, by scope.",
        );
        for (scope, n) in &snapshot.rate_limited {
            let _ = writeln!(
                o,
                "shardyard_rest_rate_limited_total{{scope=\"{scope}\"}} {n}"
            );
        }
        header(
            o,
            "shardyard_rest_refused_total",
            "counter",
            "Requests the rate-limit engine refused locally, by kind.",
        );
        for (kind, n) in &snapshot.refused {
            let _ = writeln!(o, "shardyard_rest_refused_total{{kind=\"{kind}\"}} {n}");
        }
        header(
            o,
            "shardyard_rest_invalid_requests",
            "gauge",
            "Invalid requests (401, 403, non-shared 429) in the last 10 minutes.",
        );
        let _ = writeln!(
            o,
            "shardyard_rest_invalid_requests {}",
            snapshot.invalid_requests
        );
        header(
            o,
            "shardyard_rest_invalid_request_line",
            "gauge",
            "Invalid requests at which the proxy refuses everything locally.",
        );
        let _ = writeln!(
            o,
            "shardyard_rest_invalid_request_line {}",
            snapshot.invalid_request_line
        );

        header(
            o,
            "shardyard_rest_queue_wait_seconds",
            "summary",
            "Time requests waited for the rate limit, by route template.",
        );
        for wait in &snapshot.queue_waits {
            let route = escape_label(&wait.route);
            let _ = writeln!(
                o,
                "shardyard_rest_queue_wait_seconds_sum{{route=\"{route}\"}} {}",
                wait.total.as_secs_f64()
            );
            let _ = writeln!(
                o,
                "shardyard_rest_queue_wait_seconds_count{{route=\"{route}\"}} {}",
                wait.count
            );
        }
        header(
            o,
            "shardyard_rest_queue_wait_max_seconds",
            "gauge",
            "The longest wait for the rate limit, by route template.",
        );
        for wait in &snapshot.queue_waits {
            let _ = writeln!(
                o,
                "shardyard_rest_queue_wait_max_seconds{{route=\"{}\"}} {}",
                escape_label(&wait.route),
                wait.max.as_secs_f64()
            );
        }

        let label = |fp: TokenFingerprint| {
            if Some(fp) == default {
                "default".to_owned()
            } else {
                fp.to_string()
            }
        };
        let per_token: [PerToken; 6] = [
            (
                "shardyard_rest_global_available",
                "gauge",
                "Requests a token could send right now under its global limit.",
                |t| t.global_available.to_string(),
            ),
            (
                "shardyard_rest_global_limit",
                "gauge",
                "A token's global limit per second.",
                |t| t.global_limit.to_string(),
            ),
            (
                "shardyard_rest_token_locked",
                "gauge",
                "1 when Discord answered 401 for the token.",
                |t| u8::from(t.locked).to_string(),
            ),
            (
                "shardyard_rest_buckets",
                "gauge",
                "Rate-limit buckets remembered for a token.",
                |t| t.buckets.to_string(),
            ),
            (
                "shardyard_rest_requests_waiting",
                "gauge",
                "Requests waiting for the rate limit.",
                |t| t.waiting.to_string(),
            ),
            (
                "shardyard_rest_requests_queued_total",
                "counter",
                "Requests that joined a rate-limit queue.",
                |t| t.queued.to_string(),
            ),
        ];
        for (name, kind, help, value) in per_token {
            header(o, name, kind, help);
            for token in &snapshot.tokens {
                let _ = writeln!(
                    o,
                    "{name}{{token=\"{}\"}} {}",
                    label(token.fingerprint),
                    value(token)
                );
            }
        }
        out
    }
}

/// A per-token series: name, type, help, and its value from a token's snapshot.
type PerToken = (
    &'static str,
    &'static str,
    &'static str,
    fn(&crate::ratelimit::TokenSnapshot) -> String,
);

fn counters(
    out: &mut String,
    name: &str,
    help: &str,
    label: &str,
    values: &HashMap<&'static str, u64>,
) {
    header(out, name, "counter", help);
    let mut values: Vec<_> = values.iter().collect();
    values.sort();
    for (key, n) in values {
        let _ = writeln!(out, "{name}{{{label}=\"{key}\"}} {n}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_series_are_capped() {
        let metrics = Metrics::default();
        for i in 0..(MAX_ROUTE_SERIES + 10) {
            metrics.request("GET", &format!("/r{i}"), 200);
        }
        metrics.request("GET", "/r0", 200);
        let text = metrics.render(&Snapshot::default(), None);
        assert!(
            text.contains("route=\"other\",status=\"200\"} 10"),
            "other series"
        );
        assert!(text.contains("route=\"/r0\",status=\"200\"} 2"));
        assert_eq!(
            text.matches("shardyard_rest_requests_total{").count(),
            MAX_ROUTE_SERIES + 1
        );
    }

    #[test]
    fn latency_histogram_is_cumulative() {
        let metrics = Metrics::default();
        metrics.upstream("GET", Duration::from_millis(30));
        metrics.upstream("GET", Duration::from_secs(3));
        let text = metrics.render(&Snapshot::default(), None);
        assert!(text.contains("method=\"GET\",le=\"0.025\"} 0"));
        assert!(text.contains("method=\"GET\",le=\"0.05\"} 1"));
        assert!(text.contains("method=\"GET\",le=\"5\"} 2"));
        assert!(text.contains("shardyard_rest_upstream_latency_seconds_count{method=\"GET\"} 2"));
    }
}
