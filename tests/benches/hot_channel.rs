//! A hot channel (issue 20; see `BENCHMARKS.md`, "Hot channel"), on release binaries:
//!
//! 1. **Pings.** `BENCH_PINGS` (60) users say `!ping` in one channel within 10 s, where Discord
//!    lets the bot post 5 messages per 5 s; one gateway, one REST proxy and one example worker
//!    (`shardyard worker`), everything on defaults. Measured until the last pong: POSTs that
//!    reached the proxy per pong (by status), the proxy's and the worker's CPU (utime + stime
//!    from `/proc`), the worker's log lines, and the time from the first ping to the last pong.
//! 2. **Hammer.** A client that never waits (twilight-http 0.18 in proxy mode with no rate
//!    limiter: it re-sends a 429 at once) keeps `BENCH_HAMMERING` (60) POSTs going into one
//!    channel whose bucket the proxy knows, for `BENCH_WINDOW_SECS` (15): the proxy's CPU per
//!    second of wall time and the requests it answered per second. `BENCH_ROUNDS` (3) rounds.
//! 3. **@discordjs/rest.** The same `BENCH_PINGS` messages posted at once into one channel by
//!    @discordjs/rest 2.6 on its defaults (its own queue per bucket, 3 retries, 15 s timeout):
//!    POSTs at the proxy per message, the proxy's CPU, the time to the last message.
//!
//! ```sh
//! cargo bench -p shardyard-tests --bench hot_channel
//! # an older build, for "before": its `shardyard` binary, this bench
//! SHARDYARD_BIN=/path/to/old/release/shardyard cargo bench -p shardyard-tests --bench hot_channel
//! ```
//!
//! Without `SHARDYARD_BIN` it builds the release binaries itself (`cargo build --release -p
//! shardyard`) and runs again with `SHARDYARD_BIN` pointing at them.
//! `BENCH_SKIP_PINGS`, `BENCH_SKIP_HAMMER` and `BENCH_SKIP_DISCORDJS` skip a phase.

use std::time::{Duration, Instant};

use shardyard_tests::WorkerProcess;
use shardyard_tests::bench::{self, cpu_secs, env_or};
use shardyard_tests::discordjs::{DiscordjsOptions, post_messages};
use shardyard_tests::hot_channel::{
    self, HotChannel, posts_at, posts_by_status, proxy_alone, teach_bucket,
};

fn main() -> anyhow::Result<()> {
    bench::run_on_release_binaries("hot_channel", &["-p", "shardyard"], &[])?;
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(run())
}

async fn run() -> anyhow::Result<()> {
    shardyard_tests::install_crypto_provider();
    eprintln!(
        "hot_channel: {}",
        shardyard_tests::shardyard_bin()?.display()
    );
    if std::env::var_os("BENCH_SKIP_PINGS").is_none() {
        pings(env_or("BENCH_PINGS", 60)).await?;
    }
    if std::env::var_os("BENCH_SKIP_HAMMER").is_none() {
        let window = Duration::from_secs(env_or("BENCH_WINDOW_SECS", 15));
        for round in 1..=env_or("BENCH_ROUNDS", 3) {
            hammer(round, env_or("BENCH_HAMMERING", 60), window).await?;
        }
    }
    if std::env::var_os("BENCH_SKIP_DISCORDJS").is_none() {
        discordjs(env_or("BENCH_PINGS", 60)).await?;
    }
    Ok(())
}

async fn discordjs(n: u32) -> anyhow::Result<()> {
    let (_sim, mut rest, channels) = proxy_alone(1).await?;
    let channel = channels[0];
    let pid = rest.process().pid();
    let cpu_before = cpu_secs(pid)?;
    let started = Instant::now();
    let sent = post_messages(
        &rest,
        channel,
        "djs",
        n,
        None,
        DiscordjsOptions::Defaults,
        Duration::from_secs(300),
    )
    .await?;
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = cpu_secs(pid)? - cpu_before;
    let posts = posts_by_status(&rest.metrics().await?)?;
    let total: u64 = posts.iter().map(|(_, n)| n).sum();
    let delivered = sent["contents"].as_array().map_or(0, Vec::len);
    #[allow(clippy::cast_precision_loss)]
    let per_message = total as f64 / f64::from(n);
    println!(
        "discordjs: {n} messages at once, {delivered} delivered, last after {elapsed:.1} s; \
         {total} POSTs at the proxy ({per_message:.2} per message; by status {posts:?}); proxy \
         CPU {cpu:.2} s"
    );
    Ok(())
}

async fn pings(n: usize) -> anyhow::Result<()> {
    let mut hot = HotChannel::start("benchbot", &[]).await?;
    let mut worker = WorkerProcess::start_example(&hot.nats, &hot.rest, &hot.bot, &[]).await?;
    let proxy_pid = hot.rest.process().pid();
    let worker_pid = worker.process().pid();
    let (proxy_before, worker_before) = (cpu_secs(proxy_pid)?, cpu_secs(worker_pid)?);
    let started = Instant::now();
    hot.say("!ping", n, Duration::from_secs(10)).await?;
    let pongs = hot.wait_messages(n, Duration::from_secs(300)).await?;
    let elapsed = started.elapsed().as_secs_f64();
    let proxy_cpu = cpu_secs(proxy_pid)? - proxy_before;
    let worker_cpu = cpu_secs(worker_pid)? - worker_before;
    let posts = hot.posts_by_status().await?;
    let total: u64 = posts.iter().map(|(_, n)| n).sum();
    let log_lines = worker.log().lines().count();
    #[allow(clippy::cast_precision_loss)]
    let per_pong = total as f64 / pongs as f64;
    println!(
        "pings: {n} pings, {pongs} pongs, last after {elapsed:.1} s; {total} POSTs at the proxy \
         ({per_pong:.2} per pong; by status {posts:?}); proxy CPU {proxy_cpu:.2} s, worker CPU \
         {worker_cpu:.2} s; worker log {log_lines} lines; violations {}",
        hot.violations().await?
    );
    Ok(())
}

async fn hammer(round: u32, hammering: usize, window: Duration) -> anyhow::Result<()> {
    let (_sim, mut rest, channels) = proxy_alone(1).await?;
    let channel = channels[0];
    teach_bucket(&rest, channel).await?;
    let pid = rest.process().pid();
    let (cpu_before, posts_before) = (cpu_secs(pid)?, posts_at(&rest).await?);
    let started = Instant::now();
    let mut tasks = hot_channel::hammer(&rest, channel, hammering);
    tokio::time::sleep(window).await;
    let wall = started.elapsed().as_secs_f64();
    let cpu = cpu_secs(pid)? - cpu_before;
    #[allow(clippy::cast_precision_loss)]
    let rate = (posts_at(&rest).await? - posts_before) as f64 / wall;
    tasks.abort_all();
    println!(
        "hammer round {round}: {hammering} POSTs re-sent at once into one channel for {wall:.1} s: \
         proxy CPU {cpu:.2} s ({:.1} % of a core), {rate:.0} requests/s answered",
        cpu / wall * 100.0
    );
    Ok(())
}
