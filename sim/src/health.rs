//! `/healthz`, `/readyz` and `/metrics`, as every long-running shardyard process serves them.
//! Labels are bounded: bot names come from the configuration, violation kinds and 429 scopes
//! from fixed sets.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

use crate::state::SimState;

/// The three routes.
pub fn router() -> Router<Arc<SimState>> {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        // The world is generated before the listener serves anything, so serving means ready.
        .route("/readyz", get(|| async { "ready\n" }))
        .route("/metrics", get(metrics))
}

async fn metrics(State(state): State<Arc<SimState>>) -> impl IntoResponse {
    let mut out = String::new();
    let mut family = |name: &str, kind: &str, help: &str, samples: Vec<(String, f64)>| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, value) in samples {
            let _ = writeln!(out, "{name}{labels} {value}");
        }
    };
    let per_bot = |f: &dyn Fn(&crate::stats::ShardCounters) -> u64| -> Vec<(String, f64)> {
        state
            .bots
            .iter()
            .map(|bot| {
                let total: u64 = bot.all_shard_stats().iter().map(|s| f(&s.snapshot())).sum();
                #[allow(clippy::cast_precision_loss)]
                (format!("{{bot=\"{}\"}}", bot.config.name), total as f64)
            })
            .collect()
    };
    family(
        "shardyard_sim_events_dispatched_total",
        "counter",
        "Distinct dispatches written to a socket.",
        per_bot(&|c| c.dispatched),
    );
    family(
        "shardyard_sim_events_replayed_total",
        "counter",
        "Dispatches sent again on resume.",
        per_bot(&|c| c.replayed),
    );
    family(
        "shardyard_sim_identifies_total",
        "counter",
        "Successful IDENTIFYs.",
        per_bot(&|c| c.identifies),
    );
    family(
        "shardyard_sim_resumes_total",
        "counter",
        "Successful RESUMEs.",
        per_bot(&|c| c.resumes),
    );
    #[allow(clippy::cast_precision_loss)]
    let sessions = state
        .bots
        .iter()
        .map(|b| {
            (
                format!("{{bot=\"{}\"}}", b.config.name),
                b.sessions().len() as f64,
            )
        })
        .collect();
    family(
        "shardyard_sim_sessions",
        "gauge",
        "Live (connected or resumable) sessions.",
        sessions,
    );
    let rate = state
        .bots
        .iter()
        .map(|b| {
            (
                format!("{{bot=\"{}\"}}", b.config.name),
                *b.traffic.borrow(),
            )
        })
        .collect();
    family(
        "shardyard_sim_traffic_events_per_second",
        "gauge",
        "Background traffic rate asked for.",
        rate,
    );
    let mut violations: BTreeMap<&'static str, u64> = BTreeMap::new();
    for violation in state.violations.all() {
        *violations.entry(violation.kind).or_default() += 1;
    }
    #[allow(clippy::cast_precision_loss)]
    let violations = violations
        .into_iter()
        .map(|(kind, n)| (format!("{{kind=\"{kind}\"}}"), n as f64))
        .collect();
    family(
        "shardyard_sim_violations_total",
        "counter",
        "Discord rules clients broke.",
        violations,
    );
    let rest = state.rest.stats_json();
    let requests = rest["requests"].as_f64().unwrap_or(0.0);
    family(
        "shardyard_sim_rest_requests_total",
        "counter",
        "REST requests answered.",
        vec![(String::new(), requests)],
    );
    let limited = ["user", "global", "shared"]
        .iter()
        .map(|scope| {
            (
                format!("{{scope=\"{scope}\"}}"),
                rest["rate_limited"][scope].as_f64().unwrap_or(0.0),
            )
        })
        .collect();
    family(
        "shardyard_sim_rest_rate_limited_total",
        "counter",
        "429s sent, by scope.",
        limited,
    );
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out)
}
