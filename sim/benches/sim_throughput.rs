//! Load run: how many events per second the simulator dispatches on ONE core across 100 shards
//! with zlib-stream, so it is never the bottleneck of a benchmark.
//!
//! The simulator runs on a current-thread runtime in its own OS thread (one core at most); 100
//! raw websocket clients that inflate every frame run on another thread. The simulator is asked
//! for more than it can give, and the run reports what reached the clients and the simulator
//! thread's CPU use.
//!
//! `cargo bench -p shardyard-sim --bench sim_throughput` (env `SIM_BENCH_SECS` per window,
//! `SIM_BENCH_WINDOWS`, `SIM_BENCH_RATE`, `SIM_BENCH_SHARDS` to change the run). Each window
//! reports on its own and the median closes the run: this machine's timings drift by ±20 %.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use flate2::{Decompress, FlushDecompress};
use futures_util::{SinkExt, StreamExt};
use shardyard_sim::{BotConfig, SimConfig, Simulator};
use tokio_tungstenite::tungstenite::Message;

fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// CPU seconds this thread has used, from /proc (utime + stime, in clock ticks of 10 ms).
fn thread_cpu_secs() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/thread-self/stat") else {
        return f64::NAN;
    };
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    ticks / 100.0
}

fn inflate(d: &mut Decompress, input: &[u8], out: &mut Vec<u8>) {
    out.clear();
    out.reserve(input.len() * 4 + 64);
    let start = d.total_in();
    loop {
        let consumed = (d.total_in() - start) as usize;
        d.decompress_vec(&input[consumed..], out, FlushDecompress::Sync)
            .expect("valid zlib-stream");
        if (d.total_in() - start) as usize == input.len() && out.len() < out.capacity() {
            return;
        }
        out.reserve(out.capacity());
    }
}

fn main() {
    let secs: u64 = env("SIM_BENCH_SECS", 5);
    let windows: usize = env("SIM_BENCH_WINDOWS", 5);
    let rate: f64 = env("SIM_BENCH_RATE", 400_000.0);
    let shards: u32 = env("SIM_BENCH_SHARDS", 100);
    let guilds = shards * 100;

    let mut config = SimConfig {
        bots: vec![BotConfig {
            guilds,
            members_per_guild: 10,
            max_concurrency: 128,
            events_per_second: 0.0,
            ..BotConfig::default()
        }],
        // 4 MiB of replay per session (4 s of this traffic) reaches its steady state within the
        // warm-up; the default 32 MiB would still be growing (and page-faulting) while measured.
        replay_buffer_bytes: env("SIM_BENCH_REPLAY_BYTES", 4 << 20),
        ..SimConfig::default()
    };
    config.fill_defaults().expect("valid config");
    let token = config.bots[0].token.expose().to_owned();

    let (addr_tx, addr_rx) = mpsc::channel();
    // Asks the simulator's thread for its CPU time; a closed channel stops the simulator.
    let (cpu_tx, mut cpu_rx) =
        tokio::sync::mpsc::unbounded_channel::<tokio::sync::oneshot::Sender<f64>>();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async move {
            let sim = Simulator::bind("127.0.0.1:0".parse().expect("addr"), config)
                .await
                .expect("bind");
            addr_tx
                .send((sim.addr(), sim.state().clone()))
                .expect("send addr");
            while let Some(reply) = cpu_rx.recv().await {
                let _ = reply.send(thread_cpu_secs());
            }
            sim.shutdown().await;
        });
    });
    let (addr, state) = addr_rx.recv().expect("simulator started");

    let received = Arc::new(AtomicU64::new(0));
    let bytes = Arc::new(AtomicU64::new(0));
    let clients = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    clients.block_on(async {
        let mut ready = Vec::new();
        for shard in 0..shards {
            let received = received.clone();
            let bytes = bytes.clone();
            let token = token.clone();
            let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
            ready.push(ready_rx);
            tokio::spawn(async move {
                let url = format!("ws://{addr}/gateway?v=10&encoding=json&compress=zlib-stream");
                let (mut ws, _) = tokio_tungstenite::connect_async(url).await.expect("connect");
                let mut inflater = Decompress::new(true);
                let mut out = Vec::new();
                let identify = serde_json::json!({"op": 2, "d": {"token": token, "intents": 1 | (1 << 9) | (1 << 15), "shard": [shard, shards], "properties": {}}});
                ws.send(Message::Text(identify.to_string().into())).await.expect("identify");
                let mut ready_tx = Some(ready_tx);
                while let Some(Ok(msg)) = ws.next().await {
                    if let Message::Binary(frame) = msg {
                        inflate(&mut inflater, &frame, &mut out);
                        bytes.fetch_add(out.len() as u64, Ordering::Relaxed);
                        if out.starts_with(b"{\"t\":\"MESSAGE") || out.starts_with(b"{\"t\":\"TYPING") || out.starts_with(b"{\"t\":\"PRESENCE") || out.starts_with(b"{\"t\":\"GUILD_MEMBER") || out.starts_with(b"{\"t\":\"VOICE") || out.starts_with(b"{\"t\":\"CHANNEL") || out.starts_with(b"{\"t\":\"GUILD_ROLE") {
                            received.fetch_add(1, Ordering::Relaxed);
                        } else if out.starts_with(b"{\"t\":\"READY")
                            && let Some(tx) = ready_tx.take()
                        {
                            let _ = tx.send(());
                        }
                    }
                }
            });
        }
        for r in ready {
            r.await.expect("every shard identified");
        }
        tokio::time::sleep(Duration::from_secs(1)).await; // GUILD_CREATEs drain
        state.bots[0].traffic.send_replace(rate);
        tokio::time::sleep(Duration::from_secs(2)).await; // warm up
        let sim_cpu = || {
            let (tx, rx) = tokio::sync::oneshot::channel();
            cpu_tx.send(tx).expect("simulator running");
            rx
        };
        println!("simulator throughput: {shards} shards, zlib-stream, asked {rate:.0} events/s, {windows} windows of {secs} s");
        let mut per_core = Vec::new();
        for window in 1..=windows {
            let start_events = received.load(Ordering::Relaxed);
            let start_bytes = bytes.load(Ordering::Relaxed);
            let cpu_start = sim_cpu().await.expect("cpu");
            let started = Instant::now();
            tokio::time::sleep(Duration::from_secs(secs)).await;
            let cpu = sim_cpu().await.expect("cpu") - cpu_start;
            let elapsed = started.elapsed().as_secs_f64();
            let events = received.load(Ordering::Relaxed) - start_events;
            let raw = bytes.load(Ordering::Relaxed) - start_bytes;
            let per_sec = events as f64 / elapsed;
            let cores = cpu / elapsed;
            per_core.push(per_sec / cores.max(0.01));
            println!(
                "  window {window}: delivered {per_sec:>8.0} events/s, {:>6.1} MB/s inflated, {:>4.0} B/frame, simulator thread {cores:.2} cores -> {:>8.0} events/s per core",
                raw as f64 / elapsed / 1e6,
                raw as f64 / events.max(1) as f64,
                per_sec / cores.max(0.01),
            );
        }
        state.bots[0].traffic.send_replace(0.0);
        per_core.sort_by(f64::total_cmp);
        println!("  median: {:.0} events/s per core", per_core[per_core.len() / 2]);
    });
}
