//! The gateway's receive path against twilight-gateway 0.18, both release builds, in one run
//! against one simulator with zlib-stream (see `BENCHMARKS.md`, "Gateway (receive path)").
//!
//! 1. CPU per event: `shardyard gateway` (inflate, envelope, publish to JetStream and wait for
//!    the acks) and `twilight-receiver` (`src/bin/twilight-receiver.rs`: inflate and twilight's
//!    scan, no publish) each hold the same shards of the same bot, one after the other, at the
//!    same simulator traffic rate. CPU is the process's utime + stime from `/proc/PID/stat` over
//!    a steady window; events are what the receiver counted in that window (the gateway's
//!    `shardyard_gateway_published_total`, twilight's own count), checked against the
//!    simulator's `dispatched`. A third receiver is the gateway with nothing to publish (its
//!    `--generation` inactive): the receive path alone, counted by
//!    `shardyard_gateway_suppressed_total`. nats-server's CPU over the publishing window, per
//!    event stored, is the pipeline's other half. Each round prints its figures and ratios; the
//!    end prints the medians over the rounds.
//! 2. Memory: VmRSS of each holding 1,000 idle shards once all are READY, minus the same
//!    process holding 1 shard of the same 1,000.
//! 3. Load: the gateway alone at rising simulator rates: events/s acknowledged by JetStream
//!    (sustained throughput) and, per event, receive → stored latency (the stream's own
//!    timestamp of the message minus its `Shardyard-Received-At` header), p50/p99/max.
//!
//! ```sh
//! cargo bench -p shardyard-tests --bench gateway_receive
//! ```
//!
//! It builds the release binaries itself (`cargo build --release -p shardyard -p
//! shardyard-tests --bins`) and runs again with `SHARDYARD_BIN` pointing at the release
//! `shardyard`. Knobs (environment): `BENCH_SHARDS` (16), `BENCH_RATE` events/s (10000),
//! `BENCH_WINDOW_SECS` (10), `BENCH_ROUNDS` (5), `BENCH_GATEWAY_ARGS` (extra flags for the
//! publishing gateway), `BENCH_MEMORY_SHARDS` (1000),
//! `BENCH_LOAD_RATES` (`5000,20000,50000`), `BENCH_SKIP_CPU`, `BENCH_SKIP_MEMORY`,
//! `BENCH_SKIP_LOAD`.

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde_json::json;
use shardyard_tests::bench::receive::{
    gateway_counter, gateway_published, latencies_us, measure, percentile, sim_dispatched,
    stream_last_seq,
};
use shardyard_tests::bench::{self, cpu_secs, env_or, release_dir, rss_kib};
use shardyard_tests::{
    GatewayProcess, NatsServer, ProcessGuard, SimArgs, SimProcess, eventually, free_port,
};
use tokio::io::AsyncReadExt as _;

const TOKEN: &str = "bench-token";

fn main() -> anyhow::Result<()> {
    // `cargo bench` passes `--bench`; nothing else to parse.
    bench::run_on_release_binaries(
        "gateway_receive",
        &["-p", "shardyard", "-p", "shardyard-tests", "--bins"],
        &[],
    )?;
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(run())
}

async fn run() -> anyhow::Result<()> {
    let nats = NatsServer::start().await?;
    if std::env::var_os("BENCH_SKIP_CPU").is_none() {
        cpu(&nats).await?;
    }
    if std::env::var_os("BENCH_SKIP_MEMORY").is_none() {
        memory(&nats).await?;
    }
    if std::env::var_os("BENCH_SKIP_LOAD").is_none() {
        load(&nats).await?;
    }
    Ok(())
}

/// The twilight receiver as a process, with its control port.
struct Twilight {
    process: ProcessGuard,
    control: SocketAddr,
}

impl Twilight {
    fn start(
        sim: &SimProcess,
        total: u32,
        shards: u32,
        max_concurrency: u32,
    ) -> anyhow::Result<Self> {
        let control: SocketAddr = format!("127.0.0.1:{}", free_port()).parse()?;
        let mut command = Command::new(release_dir().join("twilight-receiver"));
        command.args([
            "--addr",
            &sim.addr().to_string(),
            "--token",
            sim.token(),
            "--total",
            &total.to_string(),
            "--shards",
            &shards.to_string(),
            "--max-concurrency",
            &max_concurrency.to_string(),
            "--control",
            &control.to_string(),
        ]);
        let process = ProcessGuard::spawn(format!("twilight-{shards}"), command)?;
        Ok(Self { process, control })
    }

    /// (dispatches, READY events) so far.
    async fn counts(&self) -> anyhow::Result<(u64, u64)> {
        let mut socket = tokio::net::TcpStream::connect(self.control).await?;
        let mut line = String::new();
        socket.read_to_string(&mut line).await?;
        let mut dispatches = None;
        let mut ready = None;
        for part in line.split_whitespace() {
            match part.split_once('=') {
                Some(("dispatches", n)) => dispatches = Some(n.parse()?),
                Some(("ready", n)) => ready = Some(n.parse()?),
                _ => {}
            }
        }
        Ok((
            dispatches.context("no dispatches")?,
            ready.context("no ready")?,
        ))
    }

    async fn wait_ready(&self, shards: u64, timeout: Duration) -> anyhow::Result<()> {
        eventually(timeout, "twilight shards READY", || async {
            let (_, ready) = self.counts().await?;
            anyhow::ensure!(ready >= shards, "{ready} of {shards} READY");
            Ok(())
        })
        .await
        .with_context(|| self.process.log_tail(20))
    }
}

async fn cpu(nats: &NatsServer) -> anyhow::Result<()> {
    let shards: u32 = env_or("BENCH_SHARDS", 16);
    let rounds: u32 = env_or("BENCH_ROUNDS", 5);
    let nats_pid = nats.pid().context("nats-server not running")?;
    let sim = SimProcess::start(SimArgs {
        token: TOKEN.to_owned(),
        guilds: 10_000,
        max_concurrency: shards,
        events_per_second: 0.0,
        extra: [
            "--members-per-guild",
            "10",
            "--session-start-limit",
            "1000000",
        ]
        .map(str::to_owned)
        .to_vec(),
        ..SimArgs::default()
    })
    .await?;
    println!(
        "CPU per event: {shards} shards, zlib-stream, {} events/s asked of the simulator",
        env_or("BENCH_RATE", 10_000.0)
    );
    // Extra flags for the publishing gateway (`BENCH_GATEWAY_ARGS="--publish-linger-ms 0"`), to
    // compare settings in one run.
    let extra_args = std::env::var("BENCH_GATEWAY_ARGS").unwrap_or_default();
    let extra: Vec<&str> = extra_args.split_whitespace().collect();
    if !extra.is_empty() {
        println!("  the publishing gateway runs with {extra:?}");
    }
    let mut figures = Rounds::default();
    for round in 1..=rounds {
        // One identify per bucket per 5 s: leave the simulator's buckets time between receivers.
        // A new bot key per gateway run: none resumes a session an earlier run saved in KV.
        tokio::time::sleep(Duration::from_secs(6)).await;
        let gateway = GatewayProcess::start(
            &sim,
            nats,
            &format!("bench-cpu-{round}"),
            shards,
            0..shards,
            &extra,
        )
        .await?;
        gateway.wait_ready(Duration::from_secs(60)).await?;
        let mut gateway = gateway;
        let pid = gateway.process().pid();
        let (ours, nats_cpu) = measure(&sim, pid, nats_pid, || gateway_published(&gateway)).await?;
        drop(gateway);
        let nats_us = nats_cpu * 1e6 / ours.events as f64;
        println!("  round {round} shardyard gateway: {}", ours.describe());
        println!(
            "  round {round}   nats-server meanwhile: {nats_cpu:.2} s CPU = {nats_us:.2} µs/stored event"
        );

        // The same gateway with nothing to publish: its generation is not the active one, so
        // each dispatch is inflated, read and counted done in order, with no NATS write or ack.
        // What is left of the gap to twilight without the publish.
        tokio::time::sleep(Duration::from_secs(6)).await;
        let bot = format!("bench-cpu-quiet-{round}");
        let gateway =
            GatewayProcess::start(&sim, nats, &bot, shards, 0..shards, &["--generation", "2"])
                .await?;
        gateway.wait_ready(Duration::from_secs(60)).await?;
        nats.jetstream()
            .await?
            .get_key_value(shardyard_protocol::BotKey::local(&bot)?.control_bucket())
            .await?
            .put(shardyard_protocol::names::ACTIVE_GENERATION_KEY, "1".into())
            .await?;
        let mut gateway = gateway;
        let pid = gateway.process().pid();
        let (quiet, _) = measure(&sim, pid, nats_pid, || {
            gateway_counter(&gateway, "shardyard_gateway_suppressed_total")
        })
        .await?;
        drop(gateway);
        anyhow::ensure!(
            quiet.events * 100 >= quiet.sim_events * 99,
            "the inactive generation counted {} of {} dispatches: it was not receiving them all",
            quiet.events,
            quiet.sim_events
        );
        println!(
            "  round {round} shardyard gateway, receive only (inactive generation): {}",
            quiet.describe()
        );

        tokio::time::sleep(Duration::from_secs(6)).await;
        let twilight = Twilight::start(&sim, shards, shards, shards)?;
        twilight
            .wait_ready(u64::from(shards), Duration::from_secs(60))
            .await?;
        let pid = twilight.process.pid();
        let (theirs, _) = measure(&sim, pid, nats_pid, || async {
            Ok(twilight.counts().await?.0)
        })
        .await?;
        drop(twilight);
        println!("  round {round} twilight-gateway:  {}", theirs.describe());
        let round = Round {
            publishing: ours.us_per_event(),
            receive_only: quiet.us_per_event(),
            twilight: theirs.us_per_event(),
            nats: nats_us,
        };
        println!(
            "  round {} ratios: publishing ÷ twilight {:.2}× (goal ≤ 1.2×), receive only ÷ twilight {:.2}× (goal ≤ 1.0×); gateway + nats-server {:.1} µs/event (goal ≤ 25)",
            figures.0.len() + 1,
            round.publishing / round.twilight,
            round.receive_only / round.twilight,
            round.publishing + round.nats,
        );
        figures.0.push(round);
    }
    let violations = &sim.stats().await?["violations"];
    println!("  simulator violations: {violations}");
    figures.summarize();
    Ok(())
}

/// One round's CPU per event, µs.
#[derive(Debug, Clone, Copy)]
struct Round {
    publishing: f64,
    receive_only: f64,
    twilight: f64,
    /// nats-server's, per event the publishing gateway stored.
    nats: f64,
}

/// Every round's figures.
#[derive(Debug, Default)]
struct Rounds(Vec<Round>);

impl Rounds {
    /// Medians over the rounds: of each figure, and of each round's ratios (a ratio is taken
    /// within its round, where the machine was the same for both).
    fn summarize(&self) {
        let median = |f: &dyn Fn(&Round) -> f64| {
            let mut values: Vec<f64> = self.0.iter().map(f).collect();
            values.sort_by(f64::total_cmp);
            values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
        };
        println!("  medians over {} rounds:", self.0.len());
        println!(
            "    gateway publishing {:.2} µs, receive only {:.2} µs, twilight {:.2} µs, nats-server {:.2} µs per stored event",
            median(&|r| r.publishing),
            median(&|r| r.receive_only),
            median(&|r| r.twilight),
            median(&|r| r.nats)
        );
        println!(
            "    publishing ÷ twilight {:.2}× (goal ≤ 1.2×), receive only ÷ twilight {:.2}× (goal ≤ 1.0×), nats-server {:.2} µs (goal ≤ 12), gateway + nats-server {:.2} µs (goal ≤ 25)",
            median(&|r| r.publishing / r.twilight),
            median(&|r| r.receive_only / r.twilight),
            median(&|r| r.nats),
            median(&|r| r.publishing + r.nats)
        );
    }
}

async fn memory(nats: &NatsServer) -> anyhow::Result<()> {
    let shards: u32 = env_or("BENCH_MEMORY_SHARDS", 1000);
    let sim = SimProcess::start(SimArgs {
        token: TOKEN.to_owned(),
        guilds: 2 * shards,
        max_concurrency: shards,
        events_per_second: 0.0,
        extra: [
            "--members-per-guild",
            "1",
            "--session-start-limit",
            "1000000",
        ]
        .map(str::to_owned)
        .to_vec(),
        startup_timeout: Duration::from_secs(60),
    })
    .await?;
    let idle = Duration::from_secs(5);
    println!(
        "Memory: {shards} idle shards (guilds {}, 1 member each), zlib-stream",
        2 * shards
    );

    let mut gateway_rss = [0_u64; 2];
    for (i, held) in [1, shards].into_iter().enumerate() {
        tokio::time::sleep(Duration::from_secs(6)).await;
        let started = Instant::now();
        let mut gateway = GatewayProcess::start(
            &sim,
            nats,
            &format!("bench-mem-{held}"),
            shards,
            0..held,
            &[],
        )
        .await?;
        gateway.wait_ready(Duration::from_secs(300)).await?;
        let ready_after = started.elapsed();
        tokio::time::sleep(idle).await;
        gateway_rss[i] = rss_kib(gateway.process().pid())?;
        println!(
            "  shardyard gateway, {held} shard(s): all READY after {ready_after:.1?}, VmRSS {} KiB",
            gateway_rss[i]
        );
    }
    let mut twilight_rss = [0_u64; 2];
    for (i, held) in [1, shards].into_iter().enumerate() {
        tokio::time::sleep(Duration::from_secs(6)).await;
        let started = Instant::now();
        let twilight = Twilight::start(&sim, shards, held, shards)?;
        twilight
            .wait_ready(u64::from(held), Duration::from_secs(300))
            .await?;
        let ready_after = started.elapsed();
        tokio::time::sleep(idle).await;
        twilight_rss[i] = rss_kib(twilight.process.pid())?;
        println!(
            "  twilight-gateway, {held} shard(s): all READY after {ready_after:.1?}, VmRSS {} KiB",
            twilight_rss[i]
        );
    }
    let per_shard = |rss: [u64; 2]| {
        (
            rss[1] as f64 / f64::from(shards),
            (rss[1] as f64 - rss[0] as f64) / f64::from(shards - 1),
        )
    };
    let (ours_total, ours_marginal) = per_shard(gateway_rss);
    let (theirs_total, theirs_marginal) = per_shard(twilight_rss);
    println!(
        "  shardyard gateway: {ours_total:.1} KiB/shard (total / {shards}), {ours_marginal:.1} KiB/shard above the 1-shard baseline (goal ≤ 100)"
    );
    println!(
        "  twilight-gateway:  {theirs_total:.1} KiB/shard (total / {shards}), {theirs_marginal:.1} KiB/shard above the 1-shard baseline"
    );
    let violations = &sim.stats().await?["violations"];
    println!("  simulator violations: {violations}");
    Ok(())
}

async fn load(nats: &NatsServer) -> anyhow::Result<()> {
    let shards: u32 = env_or("BENCH_SHARDS", 16);
    let rates: Vec<f64> = std::env::var("BENCH_LOAD_RATES")
        .unwrap_or_else(|_| "5000,20000,50000".to_owned())
        .split(',')
        .map(str::parse)
        .collect::<Result<_, _>>()
        .context("BENCH_LOAD_RATES: comma-separated events/s")?;
    let window = Duration::from_secs(env_or("BENCH_WINDOW_SECS", 10));
    let nats_pid = nats.pid().context("nats-server not running")?;
    let js = nats.jetstream().await?;
    let sim = SimProcess::start(SimArgs {
        token: TOKEN.to_owned(),
        guilds: 10_000,
        max_concurrency: shards,
        events_per_second: 0.0,
        extra: ["--members-per-guild", "10"].map(str::to_owned).to_vec(),
        ..SimArgs::default()
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(6)).await;
    let bot = "bench-load";
    let stream = shardyard_protocol::BotKey::local(bot)?.stream();
    let mut gateway = GatewayProcess::start(&sim, nats, bot, shards, 0..shards, &[]).await?;
    gateway.wait_ready(Duration::from_secs(60)).await?;
    let pid = gateway.process().pid();
    println!("Load: {shards} shards, zlib-stream, one gateway process (default: one thread)");
    for rate in rates {
        sim.post_json("/_sim/traffic", &json!({ "events_per_second": rate }))
            .await?;
        tokio::time::sleep(Duration::from_secs(3)).await;
        let (c0, n0, p0, d0, first, t0) = (
            cpu_secs(pid)?,
            cpu_secs(nats_pid)?,
            gateway_published(&gateway).await?,
            sim_dispatched(&sim).await?,
            stream_last_seq(&js, &stream).await? + 1,
            Instant::now(),
        );
        tokio::time::sleep(window).await;
        let (c1, n1, p1, d1, last, t1) = (
            cpu_secs(pid)?,
            cpu_secs(nats_pid)?,
            gateway_published(&gateway).await?,
            sim_dispatched(&sim).await?,
            stream_last_seq(&js, &stream).await?,
            Instant::now(),
        );
        sim.post_json("/_sim/traffic", &json!({ "events_per_second": 0 }))
            .await?;
        let secs = (t1 - t0).as_secs_f64();
        let published = p1 - p0;
        let mut lat = latencies_us(&js, &stream, first, last).await?;
        lat.sort_unstable();
        println!(
            "  asked {rate:.0}/s: simulator dispatched {:.0}/s, acknowledged {:.0}/s; receive → stored p50 {} µs, p99 {} µs, max {} µs ({} events); gateway CPU {:.0} % of a core ({:.1} µs/event), nats-server {:.0} %",
            (d1 - d0) as f64 / secs,
            published as f64 / secs,
            percentile(&lat, 0.5),
            percentile(&lat, 0.99),
            lat.last().copied().unwrap_or_default(),
            lat.len(),
            (c1 - c0) / secs * 100.0,
            (c1 - c0) * 1e6 / published as f64,
            (n1 - n0) / secs * 100.0,
        );
        // Let the window drain before the next rate.
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let violations = &sim.stats().await?["violations"];
    println!("  simulator violations: {violations}");
    Ok(())
}
