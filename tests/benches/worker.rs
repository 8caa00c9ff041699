//! The worker library, release builds (see `BENCHMARKS.md`, "Worker").
//!
//! 1. Consume throughput: `BENCH_EVENTS` (200,000) MESSAGE_CREATE events of ~700 bytes with
//!    the gateway's headers are published straight into a bot's stream; then `test-worker`
//!    with a no-op handler (`--types MESSAGE_CREATE`, one current-thread runtime) pinned to
//!    core 1 (`taskset -c 1`), nats-server pinned to core 0, consumes them from a fresh
//!    durable consumer per concurrency in `BENCH_CONCURRENCY` (`64,512`): events/s from the
//!    worker ready to the consumer having nothing pending or unacknowledged, and the worker's
//!    CPU (utime + stime) in that window, so events per second per core.
//! 2. Latency: the simulator dispatching `BENCH_RATE` (5,000) events/s (asked for more, to make
//!    up for the types the gateway's intents leave out) over `BENCH_SHARDS` (4) shards,
//!    `shardyard gateway` publishing to JetStream, `test-worker --types all --latencies FILE`
//!    handling every type: the time from the gateway's receive (`Shardyard-Received-At`) to the
//!    handler's start for each event the gateway received in a `BENCH_WINDOW_SECS` (10) window
//!    after a 5 s warm-up,
//!    p50 / p99 / p99.9 / max, the part from JetStream storing it (the message's stream
//!    timestamp) to the handler's start, and the worker's CPU.
//!
//! ```sh
//! cargo bench -p shardyard-tests --bench worker
//! ```
//!
//! It builds the release binaries itself (`cargo build --release -p shardyard -p
//! shardyard-tests --bins`) and runs again with `SHARDYARD_BIN` pointing at them. Knobs:
//! `BENCH_SKIP_THROUGHPUT`, `BENCH_SKIP_LATENCY`.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde_json::json;
use shardyard_protocol::BotKey;
use shardyard_protocol::names::{headers, msg_id, shard_header};
use shardyard_tests::bench::{self, cpu_secs, env_or, release_dir};
use shardyard_tests::worker::create_event_stream;
use shardyard_tests::{
    GatewayProcess, NatsServer, ProcessGuard, SimArgs, SimProcess, eventually, free_port,
};

fn main() -> anyhow::Result<()> {
    bench::run_on_release_binaries(
        "worker",
        &["-p", "shardyard", "-p", "shardyard-tests", "--bins"],
        &[],
    )?;
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(run())
}

async fn run() -> anyhow::Result<()> {
    shardyard_tests::install_crypto_provider();
    let nats = NatsServer::start().await?;
    let nats_pid = nats.pid().context("nats-server not running")?;
    pin(nats_pid, "0")?;
    if std::env::var_os("BENCH_SKIP_THROUGHPUT").is_none() {
        throughput(&nats).await?;
    }
    if std::env::var_os("BENCH_SKIP_LATENCY").is_none() {
        latency(&nats).await?;
    }
    Ok(())
}

/// Moves every thread of `pid` to `cores`.
fn pin(pid: u32, cores: &str) -> anyhow::Result<()> {
    let status = Command::new("taskset")
        .args(["-a", "-p", "-c", cores, &pid.to_string()])
        .stdout(std::process::Stdio::null())
        .status()
        .context("taskset")?;
    anyhow::ensure!(status.success(), "taskset failed: {status}");
    Ok(())
}

/// `test-worker ARGS` from the release directory, on `cores`, with its admin port; ready.
async fn start_worker(
    nats: &NatsServer,
    bot: &str,
    cores: &str,
    args: &[&str],
    env: &[(&str, &str)],
) -> anyhow::Result<(ProcessGuard, String)> {
    let admin = format!("127.0.0.1:{}", free_port());
    let mut command = Command::new("taskset");
    command
        .args(["-c", cores])
        .arg(release_dir().join("test-worker"))
        .args(args)
        .args(["--admin-addr", &admin])
        .env("SHARDYARD_BOT", bot)
        .env("SHARDYARD_NATS_URL", nats.url())
        .env("SHARDYARD_REST_URL", "http://127.0.0.1:9")
        .env("RUST_LOG", "warn")
        .envs(env.iter().copied());
    let process = ProcessGuard::spawn(format!("bench-worker-{bot}"), command)?;
    let ready = format!("http://{admin}/readyz");
    eventually(Duration::from_secs(30), "worker /readyz", || async {
        reqwest::get(&ready).await?.error_for_status()?;
        Ok(())
    })
    .await
    .with_context(|| process.log_report())?;
    Ok((process, admin))
}

/// A MESSAGE_CREATE of the simulator's shape and size.
fn message_payload(n: u64) -> String {
    json!({
        "id": (n + 1_000_000).to_string(), "channel_id": "1100000000000000001",
        "guild_id": "1100000000000000000", "content": format!("benchmark message number {n}"),
        "author": {"id": "1200000000000000000", "username": "someone", "discriminator": "0",
                   "global_name": "Someone", "avatar": null, "bot": false},
        "member": {"roles": [], "joined_at": "2024-01-01T00:00:00.000000+00:00", "deaf": false,
                   "mute": false, "flags": 0},
        "timestamp": "2026-11-27T12:00:00.000000+00:00", "edited_timestamp": null, "tts": false,
        "mention_everyone": false, "mentions": [], "mention_roles": [], "attachments": [],
        "embeds": [], "pinned": false, "type": 0, "flags": 0, "nonce": n.to_string(),
        "components": []
    })
    .to_string()
}

async fn throughput(nats: &NatsServer) -> anyhow::Result<()> {
    let events: u64 = env_or("BENCH_EVENTS", 200_000);
    let concurrencies: Vec<usize> = std::env::var("BENCH_CONCURRENCY")
        .unwrap_or_else(|_| "64,512".to_owned())
        .split(',')
        .map(str::parse)
        .collect::<Result<_, _>>()
        .context("BENCH_CONCURRENCY: comma-separated numbers")?;
    let js = nats.jetstream().await?;
    let name = "bench-consume";
    let bot = BotKey::local(name)?;
    create_event_stream(&js, &bot).await?;
    let started = Instant::now();
    let mut acks = Vec::with_capacity(1000);
    let subject = bot.event_subject(0, "MESSAGE_CREATE");
    for n in 0..events {
        let mut map = async_nats::HeaderMap::new();
        map.insert(headers::MSG_ID, msg_id("bench", n).as_str());
        map.insert(headers::SHARD, shard_header(0, 1).as_str());
        map.insert(headers::SEQ, n.to_string().as_str());
        map.insert(headers::EVENT, "MESSAGE_CREATE");
        map.insert(headers::RECEIVED_AT, "0");
        acks.push(
            js.publish_with_headers(subject.clone(), map, message_payload(n).into())
                .await?,
        );
        if acks.len() == 1000 {
            for ack in acks.drain(..) {
                ack.await?;
            }
        }
    }
    for ack in acks.drain(..) {
        ack.await?;
    }
    println!(
        "Consume throughput: {events} MESSAGE_CREATE events (~{} bytes each) published in {:.1} s; no-op handler, worker on core 1 (one thread), nats-server on core 0",
        message_payload(0).len(),
        started.elapsed().as_secs_f64()
    );
    for concurrency in concurrencies {
        let group = format!("c{concurrency}");
        let concurrency_text = concurrency.to_string();
        let (worker, _) = start_worker(
            nats,
            name,
            "1",
            &["--types", "MESSAGE_CREATE"],
            &[
                ("SHARDYARD_WORKER_GROUP", &group),
                ("SHARDYARD_WORKER_CONCURRENCY", &concurrency_text),
            ],
        )
        .await?;
        let (t0, c0) = (Instant::now(), cpu_secs(worker.pid())?);
        let stream = js.get_stream(bot.stream()).await?;
        let consumer_name = shardyard_protocol::names::worker_consumer(Some(&group));
        loop {
            let mut consumer: async_nats::jetstream::consumer::PullConsumer = stream
                .get_consumer(&consumer_name)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            let info = consumer.info().await?;
            if info.num_pending == 0
                && info.num_ack_pending == 0
                && info.ack_floor.stream_sequence >= events
            {
                break;
            }
            anyhow::ensure!(
                t0.elapsed() < Duration::from_secs(600),
                "not done after 10 minutes: {info:?}\n{}",
                worker.log_report()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let (secs, cpu) = (t0.elapsed().as_secs_f64(), cpu_secs(worker.pid())? - c0);
        #[allow(clippy::cast_precision_loss)]
        let n = events as f64;
        println!(
            "  concurrency {concurrency}: {:.0} events/s, worker CPU {:.0} % of a core, {:.0} events per CPU-second ({:.1} µs/event)",
            n / secs,
            cpu / secs * 100.0,
            n / cpu,
            cpu * 1e6 / n
        );
    }
    Ok(())
}

fn percentile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i]
}

async fn latency(nats: &NatsServer) -> anyhow::Result<()> {
    let rate: f64 = env_or("BENCH_RATE", 5000.0);
    let shards: u32 = env_or("BENCH_SHARDS", 4);
    let window = Duration::from_secs(env_or("BENCH_WINDOW_SECS", 10));
    let sim = SimProcess::start(SimArgs {
        guilds: 4000,
        max_concurrency: shards,
        extra: ["--members-per-guild", "5"].map(str::to_owned).to_vec(),
        ..SimArgs::default()
    })
    .await?;
    let name = "bench-latency";
    let gateway = GatewayProcess::start(&sim, nats, name, shards, 0..shards, &[]).await?;
    gateway.wait_ready(Duration::from_secs(60)).await?;
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("latencies");
    let file_arg = file.to_str().context("a UTF-8 path")?.to_owned();
    let (mut worker, _) = start_worker(
        nats,
        name,
        "1",
        &["--types", "all", "--latencies", &file_arg],
        &[("SHARDYARD_WORKER_DELIVER", "new")],
    )
    .await?;
    // The simulator drops events the gateway's intents do not cover (typing, presences,
    // reactions): ask for more so that `rate` events per second are dispatched.
    sim.post_json("/_sim/traffic", &json!({ "events_per_second": rate }))
        .await?;
    let (w0, e0) = (Instant::now(), dispatched(&sim).await?);
    tokio::time::sleep(Duration::from_secs(3)).await;
    #[allow(clippy::cast_precision_loss)]
    let got = (dispatched(&sim).await? - e0) as f64 / w0.elapsed().as_secs_f64();
    let asked = if got > 0.0 { rate * rate / got } else { rate };
    sim.post_json("/_sim/traffic", &json!({ "events_per_second": asked }))
        .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (t0, c0, d0, from) = (
        Instant::now(),
        cpu_secs(worker.pid())?,
        dispatched(&sim).await?,
        unix_micros(),
    );
    tokio::time::sleep(window).await;
    let (secs, cpu, d1, to) = (
        t0.elapsed().as_secs_f64(),
        cpu_secs(worker.pid())? - c0,
        dispatched(&sim).await?,
        unix_micros(),
    );
    sim.post_json("/_sim/traffic", &json!({ "events_per_second": 0 }))
        .await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    worker.sigterm()?;
    worker.wait_exit(Duration::from_secs(30)).await?;
    // Events the gateway received within the window.
    let window_events: Vec<(u64, u64, u64)> = read_latencies(&file)?
        .into_iter()
        .filter(|(received, _, _)| (from..to).contains(received))
        .collect();
    let mut measured: Vec<u64> = window_events.iter().map(|e| e.1).collect();
    measured.sort_unstable();
    let mut from_stored: Vec<u64> = window_events.iter().map(|e| e.2).collect();
    from_stored.sort_unstable();
    #[allow(clippy::cast_precision_loss)]
    let handled_per_sec = measured.len() as f64 / secs;
    println!(
        "Latency: simulator dispatching {rate:.0} events/s (asked {asked:.0}/s) over {shards} shards → shardyard gateway → JetStream → test-worker (every type, no-op), worker on core 1"
    );
    println!(
        "  simulator dispatched {:.0}/s; gateway receive → handler start: p50 {} µs, p99 {} µs, p99.9 {} µs, max {} µs ({} events, ~{handled_per_sec:.0}/s); worker CPU {:.0} % of a core",
        (d1 - d0) as f64 / secs,
        percentile(&measured, 0.5),
        percentile(&measured, 0.99),
        percentile(&measured, 0.999),
        measured.last().copied().unwrap_or_default(),
        measured.len(),
        cpu / secs * 100.0
    );
    println!(
        "  of which JetStream stored → handler start: p50 {} µs, p99 {} µs, p99.9 {} µs, max {} µs",
        percentile(&from_stored, 0.5),
        percentile(&from_stored, 0.99),
        percentile(&from_stored, 0.999),
        from_stored.last().copied().unwrap_or_default(),
    );
    println!(
        "  simulator violations: {}",
        sim.stats().await?["violations"]
    );
    Ok(())
}

/// Distinct events the simulator dispatched, over every shard.
async fn dispatched(sim: &SimProcess) -> anyhow::Result<u64> {
    let stats = sim.stats().await?;
    Ok(stats["shards"]
        .as_array()
        .context("shards")?
        .iter()
        .filter_map(|s| s["dispatched"].as_u64())
        .sum())
}

fn unix_micros() -> u64 {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    u64::try_from(since.as_micros()).unwrap_or(u64::MAX)
}

/// `(received at, latency from it, latency from stored)`, in µs, as `test-worker --latencies`
/// writes them.
fn read_latencies(path: &Path) -> anyhow::Result<Vec<(u64, u64, u64)>> {
    std::fs::read_to_string(path)
        .with_context(|| format!("reading {}", path.display()))?
        .lines()
        .map(|line| {
            let numbers: Vec<u64> = line.split(' ').map(str::parse).collect::<Result<_, _>>()?;
            anyhow::ensure!(numbers.len() == 3, "three numbers: {line}");
            Ok((numbers[0], numbers[1], numbers[2]))
        })
        .collect()
}
