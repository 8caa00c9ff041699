//! What the live view and `/status` show, gathered once a second: the shards' states from each
//! gateway's `/metrics`, events/s from the stream's sequence, the queue depth, the workers, and
//! the REST proxies' requests and 429s from theirs.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::local::Component;
use crate::runner::{BotState, Runner};
use crate::supervisor::Supervisor;

/// How long a scrape may take.
const SCRAPE_TIMEOUT: Duration = Duration::from_millis(800);

/// Shards of one generation by state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ShardCounts {
    /// Its shard total.
    pub total: u32,
    /// READY or RESUMED.
    pub ready: u32,
    /// Connected, waiting for READY.
    pub connecting: u32,
    /// Between connections, or not started (their process not up yet).
    pub waiting: u32,
    /// Stopped for good after a fatal close code.
    pub failed: u32,
}

/// A process, as `/status` lists it.
#[derive(Debug, Clone, Serialize)]
pub struct ProcessRow {
    /// Its name.
    pub name: String,
    /// What it is (`sim`, `nats` have none).
    pub component: Option<Component>,
    /// A gateway's generation.
    pub generation: Option<u64>,
    /// Its pid while it runs.
    pub pid: Option<u32>,
    /// Whether `/readyz` says so.
    pub ready: bool,
    /// Restarts after it died.
    pub restarts: u32,
    /// Its admin address.
    pub admin: Option<String>,
    /// Its other ports.
    pub ports: BTreeMap<String, String>,
}

/// Everything shown.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Snapshot {
    /// The bot.
    pub bot: String,
    /// Its state after the last reconcile.
    #[serde(flatten)]
    pub state: BotState,
    /// Shards by generation.
    pub shards: BTreeMap<u64, ShardCounts>,
    /// Events stored in the stream.
    pub stream_messages: u64,
    /// Events per second into the stream.
    pub events_per_second: f64,
    /// Worker processes running.
    pub workers_running: u32,
    /// Of them, ready.
    pub workers_ready: u32,
    /// Requests the REST proxies answered.
    pub rest_requests: u64,
    /// Per second.
    pub rest_per_second: f64,
    /// Of them, answered 429 to the client.
    pub rest_429s: u64,
    /// 429s Discord answered the proxies.
    pub upstream_429s: u64,
    /// Every process.
    pub processes: Vec<ProcessRow>,
    /// Each Service's local address.
    pub services: BTreeMap<String, String>,
}

/// Keeps the previous sample for rates.
#[derive(Debug, Default)]
pub struct Observer {
    last: Option<(Instant, u64, u64)>,
    http: reqwest::Client,
}

impl Observer {
    /// A new snapshot.
    pub async fn observe(&mut self, runner: &Runner, supervisor: &Supervisor) -> Snapshot {
        let mut snapshot = Snapshot {
            bot: format!(
                "{}/{}",
                crate::runner::namespace(&runner.bot),
                crate::runner::name(&runner.bot)
            ),
            state: runner.state.clone(),
            ..Snapshot::default()
        };
        for ((service, port), (addr, _)) in &runner.services {
            snapshot
                .services
                .insert(format!("{service}:{port}"), format!("http://{addr}"));
        }
        // Every generation that runs, with its total from the plan's arguments.
        for spec in runner.desired.values() {
            if let (Component::Gateway, Some(generation)) = (spec.component, spec.generation) {
                let total = spec
                    .args
                    .iter()
                    .position(|a| a == "--total")
                    .and_then(|i| spec.args.get(i + 1))
                    .and_then(|t| t.parse().ok())
                    .unwrap_or(0);
                snapshot.shards.entry(generation).or_default().total = total;
            }
        }
        let scrapes = runner
            .desired
            .values()
            .filter(|s| matches!(s.component, Component::Gateway | Component::Rest))
            .filter_map(|s| s.admin.map(|a| (s.component, s.generation, a)))
            .map(|(component, generation, admin)| {
                let http = self.http.clone();
                async move {
                    let text = match http
                        .get(format!("http://{admin}/metrics"))
                        .timeout(SCRAPE_TIMEOUT)
                        .send()
                        .await
                    {
                        Ok(response) => response.text().await.unwrap_or_default(),
                        Err(_) => String::new(),
                    };
                    (component, generation, text)
                }
            });
        let scraped = futures_util::future::join_all(scrapes).await;
        for (component, generation, text) in scraped {
            match component {
                Component::Gateway => {
                    let counts = snapshot.shards.entry(generation.unwrap_or(0)).or_default();
                    for (name, labels, value) in series(&text) {
                        if name == "shardyard_gateway_shard_state" && value >= 1.0 {
                            match label(labels, "state") {
                                Some("ready") => counts.ready += 1,
                                Some("connecting") => counts.connecting += 1,
                                Some("failed") => counts.failed += 1,
                                _ => {}
                            }
                        }
                    }
                }
                Component::Rest => {
                    for (name, labels, value) in series(&text) {
                        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                        let value = value as u64;
                        if name == "shardyard_rest_requests_total" {
                            snapshot.rest_requests += value;
                            if label(labels, "status") == Some("429") {
                                snapshot.rest_429s += value;
                            }
                        } else if name == "shardyard_rest_rate_limited_total" {
                            snapshot.upstream_429s += value;
                        }
                    }
                }
                _ => {}
            }
        }
        for counts in snapshot.shards.values_mut() {
            counts.waiting = counts
                .total
                .saturating_sub(counts.ready + counts.connecting + counts.failed);
        }
        if let Ok(mut stream) = runner.js_stream().await
            && let Ok(info) = stream.info().await
        {
            snapshot.stream_messages = info.state.last_sequence;
        }
        let now = Instant::now();
        if let Some((at, messages, requests)) = self.last {
            let seconds = now.duration_since(at).as_secs_f64().max(0.001);
            #[allow(clippy::cast_precision_loss)]
            {
                snapshot.events_per_second =
                    snapshot.stream_messages.saturating_sub(messages) as f64 / seconds;
                snapshot.rest_per_second =
                    snapshot.rest_requests.saturating_sub(requests) as f64 / seconds;
            }
        }
        self.last = Some((now, snapshot.stream_messages, snapshot.rest_requests));

        for name in supervisor.names() {
            let Some(health) = supervisor.health(&name) else {
                continue;
            };
            let spec = runner.desired.get(&name);
            if spec.is_some_and(|s| s.component == Component::Worker) {
                snapshot.workers_running += u32::from(health.running());
                snapshot.workers_ready += u32::from(health.ready());
            }
            snapshot.processes.push(ProcessRow {
                name: name.clone(),
                component: spec.map(|s| s.component),
                generation: spec.and_then(|s| s.generation),
                pid: health.pid(),
                ready: health.ready(),
                restarts: health.restarts(),
                admin: spec.and_then(|s| s.admin).map(|a| a.to_string()),
                ports: spec
                    .map(|s| {
                        s.ports
                            .iter()
                            .map(|(k, v)| (k.clone(), v.to_string()))
                            .collect()
                    })
                    .unwrap_or_default(),
            });
        }
        snapshot
    }
}

/// The samples of Prometheus text: (name, labels inside the braces, value).
pub fn series(text: &str) -> impl Iterator<Item = (&str, &str, f64)> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|line| {
            let (head, value) = line.rsplit_once(' ')?;
            let value = value.trim().parse::<f64>().ok()?;
            match head.split_once('{') {
                Some((name, labels)) => Some((name, labels.trim_end_matches('}'), value)),
                None => Some((head, "", value)),
            }
        })
}

/// A label's value in `a="x",b="y"`.
pub fn label<'a>(labels: &'a str, key: &str) -> Option<&'a str> {
    labels.split(',').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k.trim() == key).then(|| v.trim().trim_matches('"'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_text_reads_as_series() {
        let text = "# HELP x y\n# TYPE x counter\n\
                    shardyard_gateway_shard_state{shard=\"0\",state=\"ready\"} 1\n\
                    shardyard_rest_requests_total{method=\"POST\",route=\"/channels/:id/messages\",status=\"429\"} 3\n\
                    plain 2.5\n";
        let all: Vec<_> = series(text).collect();
        assert_eq!(all.len(), 3);
        assert_eq!(all[0].0, "shardyard_gateway_shard_state");
        assert_eq!(label(all[0].1, "state"), Some("ready"));
        assert_eq!(label(all[1].1, "status"), Some("429"));
        assert!((all[1].2 - 3.0).abs() < f64::EPSILON);
        assert_eq!(all[2], ("plain", "", 2.5));
    }
}
