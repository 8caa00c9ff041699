//! A receiver of gateway traffic measured over a window of simulator traffic: its CPU per event,
//! for the gateway benches (`gateway_receive`, `gateway_compression`).

use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde_json::json;

use super::{cpu_secs, env_or};
use crate::{GatewayProcess, SimProcess};

/// Dispatches the simulator has sent, over all its shards.
///
/// # Errors
/// When the simulator's stats cannot be read.
pub async fn sim_dispatched(sim: &SimProcess) -> anyhow::Result<u64> {
    let stats = sim.stats().await?;
    Ok(stats["shards"]
        .as_array()
        .context("no shards in stats")?
        .iter()
        .filter_map(|s| s["dispatched"].as_u64())
        .sum())
}

/// A per-shard counter of the gateway's, summed over its shards.
///
/// # Errors
/// When its `/metrics` cannot be read.
pub async fn gateway_counter(gateway: &GatewayProcess, name: &str) -> anyhow::Result<u64> {
    let metrics = gateway.admin_get("/metrics").await?;
    let prefix = format!("{name}{{");
    Ok(metrics
        .lines()
        .filter(|l| l.starts_with(&prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64)
}

/// `shardyard_gateway_published_total`, over the gateway's shards.
///
/// # Errors
/// When its `/metrics` cannot be read.
pub async fn gateway_published(gateway: &GatewayProcess) -> anyhow::Result<u64> {
    gateway_counter(gateway, "shardyard_gateway_published_total").await
}

/// One receiver's measured window.
pub struct Window {
    /// Its length.
    pub secs: f64,
    /// The receiver's CPU over it.
    pub cpu_secs: f64,
    /// Events the receiver counted.
    pub events: u64,
    /// Dispatches the simulator sent.
    pub sim_events: u64,
}

impl Window {
    /// CPU µs per event.
    #[must_use]
    pub fn us_per_event(&self) -> f64 {
        self.cpu_secs * 1e6 / self.events as f64
    }

    /// One line for the bench's output.
    #[must_use]
    pub fn describe(&self) -> String {
        format!(
            "{:.1} s, {} events ({:.0}/s; simulator dispatched {}), CPU {:.2} s = {:.1} % of a core, {:.2} µs/event",
            self.secs,
            self.events,
            self.events as f64 / self.secs,
            self.sim_events,
            self.cpu_secs,
            self.cpu_secs / self.secs * 100.0,
            self.us_per_event()
        )
    }
}

/// Turns traffic on, warms up, and measures `pid` over the window with `events` counting what
/// the receiver got; also returns nats-server's CPU seconds over the window.
///
/// # Errors
/// When a process's `/proc` files or the simulator cannot be read.
pub async fn measure<F, Fut>(
    sim: &SimProcess,
    pid: u32,
    nats_pid: u32,
    events: F,
) -> anyhow::Result<(Window, f64)>
where
    F: Fn() -> Fut,
    Fut: Future<Output = anyhow::Result<u64>>,
{
    let rate: f64 = env_or("BENCH_RATE", 10_000.0);
    let window = Duration::from_secs(env_or("BENCH_WINDOW_SECS", 10));
    sim.post_json("/_sim/traffic", &json!({ "events_per_second": rate }))
        .await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (c0, n0, e0, s0, t0) = (
        cpu_secs(pid)?,
        cpu_secs(nats_pid)?,
        events().await?,
        sim_dispatched(sim).await?,
        Instant::now(),
    );
    tokio::time::sleep(window).await;
    let (c1, n1, e1, s1, t1) = (
        cpu_secs(pid)?,
        cpu_secs(nats_pid)?,
        events().await?,
        sim_dispatched(sim).await?,
        Instant::now(),
    );
    sim.post_json("/_sim/traffic", &json!({ "events_per_second": 0 }))
        .await?;
    // Let the last events drain before the next receiver starts.
    tokio::time::sleep(Duration::from_secs(1)).await;
    Ok((
        Window {
            secs: (t1 - t0).as_secs_f64(),
            cpu_secs: c1 - c0,
            events: e1 - e0,
            sim_events: s1 - s0,
        },
        n1 - n0,
    ))
}

/// The stream's last sequence number.
///
/// # Errors
/// When the stream cannot be read.
pub async fn stream_last_seq(
    js: &async_nats::jetstream::Context,
    stream: &str,
) -> anyhow::Result<u64> {
    Ok(js
        .get_stream(stream)
        .await?
        .info()
        .await?
        .state
        .last_sequence)
}

/// Receive → stored latency in µs of every message in `from..=to` of `stream`: the stream's own
/// timestamp minus the message's `Shardyard-Received-At`.
///
/// # Errors
/// When the stream cannot be read or a message has no such header.
pub async fn latencies_us(
    js: &async_nats::jetstream::Context,
    stream: &str,
    from: u64,
    to: u64,
) -> anyhow::Result<Vec<i64>> {
    use async_nats::jetstream::consumer::{self, DeliverPolicy};
    use futures_util::StreamExt as _;
    let consumer = js
        .get_stream(stream)
        .await?
        .create_consumer(consumer::pull::Config {
            deliver_policy: DeliverPolicy::ByStartSequence {
                start_sequence: from,
            },
            ack_policy: consumer::AckPolicy::None,
            ..Default::default()
        })
        .await?;
    let mut messages = consumer.messages().await?;
    let mut out = Vec::new();
    while let Some(message) = tokio::time::timeout(Duration::from_secs(10), messages.next())
        .await
        .context("the stream stopped delivering")?
    {
        let message = message.map_err(|e| anyhow::anyhow!("{e}"))?;
        let info = message.info().map_err(|e| anyhow::anyhow!("{e}"))?;
        if info.stream_sequence > to {
            break;
        }
        let received: i64 = message
            .headers
            .as_ref()
            .and_then(|h| h.get(shardyard_protocol::names::headers::RECEIVED_AT))
            .context("no received-at header")?
            .as_str()
            .parse()?;
        let stored = i64::try_from(info.published.unix_timestamp_nanos() / 1000)?;
        out.push(stored - received);
        if info.stream_sequence == to {
            break;
        }
    }
    Ok(out)
}

pub fn percentile(sorted: &[i64], p: f64) -> i64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(i).copied().unwrap_or_default()
}
