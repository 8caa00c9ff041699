//! `shardyard rest` against the simulator, both release builds (see `BENCHMARKS.md`, "REST
//! proxy").
//!
//! 1. Added latency: an open-loop generator sends `GET /channels/{id}` at `BENCH_RATE` requests
//!    per second (1,000) through the proxy and, interleaved in the same run, the same number
//!    straight to the simulator, over every channel of the simulated world (each channel then
//!    sees well under its 5 / s bucket), for `BENCH_WINDOW_SECS` (10) after a warm-up that
//!    teaches the proxy every bucket. A third path, interleaved too, goes through
//!    `tcp-relay` (`src/bin/tcp-relay.rs`: bytes copied both ways on one thread, nothing
//!    parsed): the cost of a loopback hop itself, the floor under any proxy on this machine.
//!    One reqwest client for every path, identical requests (`Authorization: Bot …` included,
//!    which the proxy passes through). Latency is from just before `send()` to the whole body
//!    read; p50/p99/max per path and their differences.
//! 2. Throughput: the proxy pinned to core 1 with one runtime worker (`taskset -c 1`,
//!    `TOKIO_WORKER_THREADS=1`), the simulator and this generator pinned to core 0, `N`
//!    closed-loop clients (`BENCH_CONCURRENCY`, `16,64`) for the window: requests/s, the proxy's
//!    CPU (utime + stime from `/proc/PID/stat`) and so requests per second per core of proxy
//!    CPU. Then the simulator's own ceiling: the same clients straight to it, the simulator
//!    alone on core 1.
//!
//! The simulator runs with its global limit off (`--global-rate-limit 0`) and its
//! invalid-request ban out of reach, the proxy with its own global limit raised out of reach
//! (`--global-per-second 100000000`) and at `RUST_LOG=warn`. The throughput phase has a
//! simulator of its own with `BENCH_THROUGHPUT_GUILDS` (3000) guilds, so that clients going
//! straight to it at full speed never send one channel more than its 5 / s.
//!
//! ```sh
//! cargo bench -p shardyard-tests --bench rest_proxy
//! ```
//!
//! It builds the release binaries itself (`cargo build --release -p shardyard -p
//! shardyard-tests --bins`) and runs again
//! with `SHARDYARD_BIN` pointing at it. Knobs (environment): `BENCH_GUILDS` (1000: about 8,000
//! channels), `BENCH_RATE` (1000), `BENCH_WINDOW_SECS` (10), `BENCH_CONCURRENCY` (`16,64`),
//! `BENCH_THROUGHPUT_GUILDS` (3000), `BENCH_SKIP_LATENCY`, `BENCH_SKIP_THROUGHPUT`,
//! `BENCH_HOLD_SECS` (keep the pinned proxy
//! under load this much longer after its window, e.g. for `perf record -p`), `BENCH_CLUSTER`
//! (the latency phase through two replicas sharing limits over NATS instead: direct, through
//! the token's owner and through a replica borrowing permits from it; with `BENCH_CLUSTER=owner`:
//! direct, a single proxy without replicas and the owner; needs `NATS_SERVER_BIN`).

use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use shardyard_tests::bench::{self, cpu_secs, env_or};
use shardyard_tests::{ProcessGuard, SimArgs, SimProcess, eventually, free_port};

const TOKEN: &str = "bench-token";
/// What both paths send: the proxy passes a client's own `Authorization` through.
const AUTH: &str = "Bot bench-token";

fn main() -> anyhow::Result<()> {
    // `cargo bench` passes `--bench`; nothing else to parse. The simulator inherits RUST_LOG.
    bench::run_on_release_binaries(
        "rest_proxy",
        &["-p", "shardyard", "-p", "shardyard-tests", "--bins"],
        &[(
            "RUST_LOG",
            std::env::var_os("RUST_LOG").unwrap_or_else(|| "warn".into()),
        )],
    )?;
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(run())
}

async fn run() -> anyhow::Result<()> {
    shardyard_tests::install_crypto_provider();
    let client = client()?;
    if std::env::var_os("BENCH_SKIP_LATENCY").is_none() {
        let (sim, channels) = start_sim(&client, env_or("BENCH_GUILDS", 1000)).await?;
        if std::env::var_os("BENCH_CLUSTER").is_some() {
            cluster_latency(&client, &sim, &channels).await?;
        } else {
            latency(&client, &sim, &channels).await?;
        }
        report(&sim).await?;
    }
    if std::env::var_os("BENCH_SKIP_THROUGHPUT").is_none() {
        // A world of its own, with more channels: straight to the simulator the clients go
        // fast enough that ~8,000 channels visited in turn would each see more than 5 / s.
        let (mut sim, channels) =
            start_sim(&client, env_or("BENCH_THROUGHPUT_GUILDS", 3000)).await?;
        let sim_pid = sim.process().pid();
        throughput(&client, &sim, sim_pid, &channels).await?;
        report(&sim).await?;
    }
    Ok(())
}

/// A simulator with `guilds` guilds (its global limit off, and its invalid-request ban out
/// of reach so that a burst of 429s shows in the tables instead of failing every later
/// request), and every channel of its world.
async fn start_sim(
    client: &reqwest::Client,
    guilds: u32,
) -> anyhow::Result<(SimProcess, Vec<u64>)> {
    let sim = SimProcess::start(SimArgs {
        token: TOKEN.to_owned(),
        guilds,
        extra: [
            "--members-per-guild",
            "1",
            "--global-rate-limit",
            "0",
            "--invalid-request-limit",
            "1000000000",
        ]
        .map(str::to_owned)
        .to_vec(),
        startup_timeout: Duration::from_secs(60),
        ..SimArgs::default()
    })
    .await?;
    let channels = list_channels(client, &sim).await?;
    println!(
        "simulator: {guilds} guilds, {} channels; GET /channels/{{id}} (bucket 5 / 1 s per channel)",
        channels.len()
    );
    Ok((sim, channels))
}

/// The simulator's 429 counts and its violations, counted by kind.
async fn report(sim: &SimProcess) -> anyhow::Result<()> {
    let stats = sim.stats().await?;
    let mut kinds = std::collections::BTreeMap::<String, usize>::new();
    for violation in stats["violations"].as_array().into_iter().flatten() {
        let kind = violation["kind"].as_str().unwrap_or("?").to_owned();
        *kinds.entry(kind).or_default() += 1;
    }
    println!(
        "simulator: rate limited {}, violations by kind {kinds:?}",
        stats["rest"]["rate_limited"]
    );
    Ok(())
}

/// The one client of both paths: no system proxy, Nagle off, idle connections kept.
fn client() -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .no_proxy()
        .tcp_nodelay(true)
        .pool_idle_timeout(Duration::from_secs(300))
        .timeout(Duration::from_secs(30))
        .build()
        .context("cannot build an HTTP client")
}

/// Every channel id of the bot's world, from `GET /users/@me/guilds` (1 / s) and
/// `GET /guilds/{id}/channels`, straight from the simulator.
async fn list_channels(client: &reqwest::Client, sim: &SimProcess) -> anyhow::Result<Vec<u64>> {
    let mut guilds = Vec::new();
    let mut after = 0_u64;
    for page in 0.. {
        if page > 0 {
            // The guild list's bucket is 1 / s.
            tokio::time::sleep(Duration::from_millis(1050)).await;
        }
        let url = format!(
            "{}/users/@me/guilds?limit=200&after={after}",
            sim.api_base()
        );
        let response = client
            .get(&url)
            .header("Authorization", AUTH)
            .send()
            .await?;
        if response.status() == reqwest::StatusCode::TOO_MANY_REQUESTS {
            tokio::time::sleep(Duration::from_millis(1050)).await;
            continue;
        }
        let page: serde_json::Value = response.error_for_status()?.json().await?;
        let ids: Vec<u64> = page
            .as_array()
            .context("guild list is not an array")?
            .iter()
            .filter_map(|g| g["id"].as_str()?.parse().ok())
            .collect();
        let Some(last) = ids.iter().max().copied() else {
            break;
        };
        guilds.extend(ids);
        after = last;
    }
    let mut channels = Vec::new();
    for guild in guilds {
        let url = format!("{}/guilds/{guild}/channels", sim.api_base());
        let list: serde_json::Value = client
            .get(&url)
            .header("Authorization", AUTH)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        channels.extend(
            list.as_array()
                .context("channel list is not an array")?
                .iter()
                .filter_map(|c| c["id"].as_str()?.parse::<u64>().ok()),
        );
    }
    anyhow::ensure!(!channels.is_empty(), "the simulator has no channels");
    Ok(channels)
}

/// `shardyard rest` in front of the simulator, logging at warn, optionally pinned to core 1
/// with one runtime worker.
struct Proxy {
    process: ProcessGuard,
    addr: SocketAddr,
}

impl Proxy {
    async fn start(sim: &SimProcess, pinned: bool) -> anyhow::Result<Self> {
        Self::start_with(sim, pinned, &[]).await
    }

    /// With `extra` flags (`--nats …` for a replica).
    async fn start_with(sim: &SimProcess, pinned: bool, extra: &[&str]) -> anyhow::Result<Self> {
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse()?;
        let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse()?;
        let bin = shardyard_tests::shardyard_bin()?;
        let mut command = if pinned {
            let mut c = Command::new("taskset");
            c.args(["-c", "1"])
                .arg(bin)
                .env("TOKIO_WORKER_THREADS", "1");
            c
        } else {
            Command::new(bin)
        };
        command
            .arg("rest")
            .args(["--listen", &addr.to_string()])
            .args(["--upstream", &format!("{}/api", sim.http_base())])
            .args(["--admin-addr", &admin.to_string()])
            .args(["--global-per-second", "100000000"])
            .args([
                "--threads",
                &env_or("BENCH_PROXY_THREADS", 1_u16).to_string(),
            ])
            .args(extra)
            .env("SHARDYARD_TOKEN", TOKEN)
            .env("RUST_LOG", "warn");
        let process = ProcessGuard::spawn(format!("rest:{}", addr.port()), command)?;
        let probe = client()?;
        eventually(Duration::from_secs(30), "rest proxy /readyz", || async {
            probe
                .get(format!("http://{admin}/readyz"))
                .send()
                .await?
                .error_for_status()?;
            Ok(())
        })
        .await
        .with_context(|| process.log_report())?;
        Ok(Self { process, addr })
    }

    fn api_base(&self) -> String {
        format!("http://{}/api/v10", self.addr)
    }

    fn pid(&self) -> u32 {
        self.process.pid()
    }
}

/// Pins every thread of `pid` to `cpus` (`taskset -a -p -c`).
fn pin(pid: u32, cpus: &str) -> anyhow::Result<()> {
    let output = Command::new("taskset")
        .args(["-a", "-p", "-c", cpus, &pid.to_string()])
        .output()
        .context("cannot run taskset")?;
    anyhow::ensure!(
        output.status.success(),
        "taskset -p {pid}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(())
}

/// One GET, body read; `Ok(true)` on 200.
async fn get(client: &reqwest::Client, url: &str) -> anyhow::Result<bool> {
    let response = client.get(url).header("Authorization", AUTH).send().await?;
    let ok = response.status() == reqwest::StatusCode::OK;
    response.bytes().await?;
    Ok(ok)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Path {
    Direct,
    Relay,
    Proxy,
}

const PATHS: [(Path, &str); 3] = [
    (Path::Direct, "direct"),
    (Path::Relay, "tcp relay"),
    (Path::Proxy, "proxy"),
];

/// Open loop: per tick one request of each path (which goes first rotates), over the
/// channels in turn; latencies of 200 answers by path, and the number of other outcomes.
async fn open_loop(
    client: &reqwest::Client,
    bases: [&str; 3],
    channels: &[u64],
    rate: f64,
    length: Duration,
) -> anyhow::Result<([Vec<Duration>; 3], u64)> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let period = Duration::from_secs_f64(1.0 / rate);
    let ticks = (length.as_secs_f64() * rate) as u64;
    let start = tokio::time::Instant::now();
    for i in 0..ticks {
        tokio::time::sleep_until(start + period * i as u32).await;
        let channel = channels[i as usize % channels.len()];
        let mut order = PATHS.map(|(path, _)| path);
        order.rotate_left(i as usize % PATHS.len());
        for path in order {
            let base = bases[path as usize];
            let url = format!("{base}/channels/{channel}");
            let client = client.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                let sent = Instant::now();
                let outcome = get(&client, &url).await;
                let _ = tx.send((path, sent.elapsed(), matches!(outcome, Ok(true))));
            });
        }
    }
    drop(tx);
    let mut latencies = [Vec::new(), Vec::new(), Vec::new()];
    let mut failed = 0;
    while let Some((path, latency, ok)) = rx.recv().await {
        if ok {
            latencies[path as usize].push(latency);
        } else {
            failed += 1;
        }
    }
    Ok((latencies, failed))
}

async fn latency(
    client: &reqwest::Client,
    sim: &SimProcess,
    channels: &[u64],
) -> anyhow::Result<()> {
    let proxy = Proxy::start(sim, false).await?;
    let relay_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse()?;
    let mut relay_command = Command::new(bench::release_dir().join("tcp-relay"));
    relay_command.args([relay_addr.to_string(), sim.addr().to_string()]);
    let _relay = ProcessGuard::spawn("tcp-relay", relay_command)?;
    let sim_base = sim.api_base();
    let relay_base = format!("http://{relay_addr}/api/v10");
    let proxy_base = proxy.api_base();
    eventually(Duration::from_secs(10), "tcp-relay answers", || async {
        let ok = get(client, &format!("{relay_base}/channels/{}", channels[0])).await?;
        anyhow::ensure!(ok, "not 200 through the relay");
        Ok(())
    })
    .await?;
    compare(
        client,
        channels,
        [&sim_base, &relay_base, &proxy_base],
        ["direct", "tcp relay", "proxy"],
        &[&proxy],
    )
    .await?;
    println!("  (goal: the proxy adds under 200 µs at p99)");
    Ok(())
}

/// Two replicas sharing the bench token's limits through NATS: the token's owner, and a
/// replica that borrows a permit from it for every request (`BENCH_CLUSTER`).
async fn cluster_latency(
    client: &reqwest::Client,
    sim: &SimProcess,
    channels: &[u64],
) -> anyhow::Result<()> {
    let nats = shardyard_tests::NatsServer::start().await?;
    let url = nats.url();
    // Ids chosen so that the first keeps the client token's limits.
    let key = shardyard_rest::cluster::Cluster::token_key(&shardyard_protocol::Token::new(AUTH));
    let ids = ["bench-a", "bench-b"];
    let owner_id = *shardyard_rest::cluster::rendezvous::owner(&ids, key).context("an owner")?;
    let other_id = *ids.iter().find(|id| **id != owner_id).context("another")?;
    let mut replicas = Vec::new();
    for id in [owner_id, other_id] {
        replicas.push(
            Proxy::start_with(
                sim,
                false,
                &["--nats", &url, "--bot", "bench", "--replica-id", id],
            )
            .await?,
        );
    }
    let sim_base = sim.api_base();
    let owner_base = replicas[0].api_base();
    if std::env::var("BENCH_CLUSTER").is_ok_and(|v| v == "owner") {
        // The owner beside a proxy without replicas: what sharing limits costs the owner's
        // own requests (the other replica idles).
        let plain = Proxy::start(sim, false).await?;
        let plain_base = plain.api_base();
        compare(
            client,
            channels,
            [&sim_base, &plain_base, &owner_base],
            ["direct", "single proxy", "owner"],
            &[&plain, &replicas[0]],
        )
        .await?;
    } else {
        let other_base = replicas[1].api_base();
        compare(
            client,
            channels,
            [&sim_base, &owner_base, &other_base],
            ["direct", "owner", "non-owner"],
            &[&replicas[0], &replicas[1]],
        )
        .await?;
    }
    println!("  (goal: the owner adds under 200 µs at p99)");
    Ok(())
}

/// The open loop over three paths, after a warm-up; prints each path's latencies and what
/// the second and third add over the first and over each other. `proxies`' CPU is reported.
async fn compare(
    client: &reqwest::Client,
    channels: &[u64],
    bases: [&str; 3],
    names: [&str; 3],
    proxies: &[&Proxy],
) -> anyhow::Result<()> {
    let rate: f64 = env_or("BENCH_RATE", 1000.0);
    let window = Duration::from_secs(env_or("BENCH_WINDOW_SECS", 10));
    // Warm-up: every channel once per path (the proxy learns each bucket), connections opened.
    let warm = Duration::from_secs_f64((channels.len() as f64 / rate).max(2.0));
    let (_, failed) = open_loop(client, bases, channels, rate, warm).await?;
    anyhow::ensure!(
        failed == 0,
        "{failed} warm-up requests failed\n{}",
        proxies
            .iter()
            .map(|p| p.process.log_report())
            .collect::<Vec<_>>()
            .join("\n")
    );
    let cpu0: Vec<f64> = proxies
        .iter()
        .map(|p| cpu_secs(p.pid()))
        .collect::<Result<_, _>>()?;
    let started = Instant::now();
    let (mut latencies, failed) = open_loop(client, bases, channels, rate, window).await?;
    let secs = started.elapsed().as_secs_f64();
    let per_path = latencies[2].len() as f64;
    println!(
        "Added latency: {rate} req/s per path ({}), interleaved, {secs:.1} s, {failed} not 200",
        names.join(", ")
    );
    for (proxy, before) in proxies.iter().zip(cpu0) {
        let cpu = cpu_secs(proxy.pid())? - before;
        println!(
            "  proxy at {}: CPU {:.1} % of a core ({:.1} µs per request of one path)",
            proxy.addr,
            cpu / secs * 100.0,
            cpu * 1e6 / per_path
        );
    }
    println!("  | path | requests | p50 | p90 | p99 | p99.9 | max |");
    let mut rows = Vec::new();
    for (path, name) in PATHS.map(|(path, _)| path).into_iter().zip(names) {
        let sorted = &mut latencies[path as usize];
        sorted.sort_unstable();
        anyhow::ensure!(!sorted.is_empty(), "no {name} request succeeded");
        let row = [50.0, 90.0, 99.0, 99.9].map(|p| percentile(sorted, p));
        let max = *sorted.last().context("empty")?;
        println!(
            "  | {name} | {} | {:.0} µs | {:.0} µs | {:.0} µs | {:.0} µs | {:.0} µs |",
            sorted.len(),
            us(row[0]),
            us(row[1]),
            us(row[2]),
            us(row[3]),
            us(max)
        );
        rows.push(row);
    }
    let added = |over: usize, path: usize, i: usize| us(rows[path][i]) - us(rows[over][i]);
    for (over, path) in [(0, 2), (0, 1), (1, 2)] {
        println!(
            "  added by {} over {}: p50 {:.0} µs, p90 {:.0} µs, p99 {:.0} µs, p99.9 {:.0} µs",
            names[path],
            names[over],
            added(over, path, 0),
            added(over, path, 1),
            added(over, path, 2),
            added(over, path, 3)
        );
    }
    Ok(())
}

/// `concurrency` closed-loop clients against `base` for a warm-up, then the window; returns
/// (seconds, 200 answers, other outcomes, CPU seconds of `pid` in the window).
async fn closed_loop(
    client: &reqwest::Client,
    base: &str,
    channels: &Arc<Vec<u64>>,
    concurrency: usize,
    pid: u32,
    hold: Duration,
) -> anyhow::Result<(f64, u64, u64, f64)> {
    let window = Duration::from_secs(env_or("BENCH_WINDOW_SECS", 10));
    let stop = Arc::new(AtomicBool::new(false));
    let next = Arc::new(AtomicU64::new(0));
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (client, base, channels) = (client.clone(), base.to_owned(), Arc::clone(channels));
        let (stop, next, ok, failed) = (
            Arc::clone(&stop),
            Arc::clone(&next),
            Arc::clone(&ok),
            Arc::clone(&failed),
        );
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                let url = format!("{base}/channels/{}", channels[i % channels.len()]);
                match get(&client, &url).await {
                    Ok(true) => ok.fetch_add(1, Ordering::Relaxed),
                    _ => failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (ok0, failed0, cpu0, t0) = (
        ok.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed),
        cpu_secs(pid)?,
        Instant::now(),
    );
    tokio::time::sleep(window).await;
    let (ok1, failed1, cpu1, t1) = (
        ok.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed),
        cpu_secs(pid)?,
        Instant::now(),
    );
    tokio::time::sleep(hold).await;
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await?;
    }
    Ok((
        (t1 - t0).as_secs_f64(),
        ok1 - ok0,
        failed1 - failed0,
        cpu1 - cpu0,
    ))
}

async fn throughput(
    client: &reqwest::Client,
    sim: &SimProcess,
    sim_pid: u32,
    channels: &[u64],
) -> anyhow::Result<()> {
    let levels: Vec<usize> = std::env::var("BENCH_CONCURRENCY")
        .unwrap_or_else(|_| "16,64".to_owned())
        .split(',')
        .filter_map(|n| n.trim().parse().ok())
        .collect();
    let hold = Duration::from_secs(env_or("BENCH_HOLD_SECS", 0));
    let channels = Arc::new(channels.to_vec());
    let me = std::process::id();
    println!("Throughput: closed loop, GET /channels/{{id}} over every channel in turn");
    println!(
        "  | target | clients | requests/s | not 200 | target CPU (% of a core) | requests/s per core of target CPU | sim CPU (% of a core) |"
    );
    // The proxy alone on core 1; the simulator and this generator on core 0.
    pin(me, "0")?;
    pin(sim_pid, "0")?;
    let proxy = Proxy::start(sim, true).await?;
    println!("  (proxy pid {})", proxy.pid());
    for &concurrency in &levels {
        let sim0 = cpu_secs(sim_pid)?;
        let (secs, ok, failed, cpu) = closed_loop(
            client,
            &proxy.api_base(),
            &channels,
            concurrency,
            proxy.pid(),
            hold,
        )
        .await?;
        let sim_cpu = cpu_secs(sim_pid)? - sim0;
        println!(
            "  | proxy (core 1, 1 worker) | {concurrency} | {:.0} | {failed} | {:.0} % | {:.0} | ~{:.0} % |",
            ok as f64 / secs,
            cpu / secs * 100.0,
            ok as f64 / cpu,
            sim_cpu / (secs + 3.0 + hold.as_secs_f64()) * 100.0
        );
    }
    drop(proxy);
    // The simulator's own ceiling: it alone on core 1, the same clients straight to it.
    pin(sim_pid, "1")?;
    for &concurrency in &levels {
        let (secs, ok, failed, cpu) = closed_loop(
            client,
            &sim.api_base(),
            &channels,
            concurrency,
            sim_pid,
            Duration::ZERO,
        )
        .await?;
        println!(
            "  | simulator direct (core 1) | {concurrency} | {:.0} | {failed} | {:.0} % | {:.0} | |",
            ok as f64 / secs,
            cpu / secs * 100.0,
            ok as f64 / cpu,
        );
    }
    pin(sim_pid, "0,1")?;
    pin(me, "0,1")?;
    Ok(())
}
