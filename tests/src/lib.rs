//! The end-to-end test harness: real processes against a real nats-server and the simulator.
//!
//! - [`NatsServer`]: a private nats-server with JetStream on free ports and its own store,
//!   restartable on the same port and store, killed on drop.
//! - [`SimProcess`]: `shardyard sim` (the Discord simulator) on a free port.
//! - [`GatewayProcess`]: `shardyard gateway` against a simulator and a nats-server.
//! - [`RestProcess`]: `shardyard rest`, the REST proxy, in front of a simulator.
//! - [`CacheProcess`]: `shardyard cache`, the central cache, with its HTTP API.
//! - [`ProcessGuard`]: any child process in its own process group with its output in a log file;
//!   the group is killed on drop, and by a watchdog if the test process itself is killed.
//! - [`WorkerProcess`]: `shardyard worker` (the example bot) or `test-worker` (behaviours by
//!   flags, a record of what it handled: [`worker::read_record`]).
//! - [`ground_truth`]: the simulator's record of each shard against what a stream holds.
//! - [`free_port`], [`shardyard_bin`], [`nats_server_bin`], [`eventually`], [`pid_alive`].
//!
//! Run the suite with `scripts/test`, which installs nats-server first; see `tests/README.md`.

mod admin;
pub mod bench;
mod bin;
mod cache;
pub mod dev;
pub mod discordjs;
mod gateway;
pub mod ground_truth;
pub mod hot_channel;
pub mod images;
pub mod interactions;
pub mod kube_cluster;
mod nats;
pub mod netns;
pub mod operator;
mod ports;
mod process;
mod rest;
mod sim;
pub mod worker;

use std::future::Future;
use std::time::{Duration, Instant};

pub use admin::{admin_get, metric_value};
pub use bin::{nats_server_bin, repo_root, shardyard_bin};
pub use cache::CacheProcess;
pub use gateway::GatewayProcess;
pub use kube_cluster::KubeCluster;
pub use nats::{NatsConfig, NatsServer, TestCertificates};
pub use ports::free_port;
pub use process::{ProcessGuard, pid_alive};
pub use rest::{
    RestArgs, RestProcess, rest_busiest_second, rest_busiest_second_within, rest_rate_limited,
};
pub use sim::{SimApi, SimArgs, SimClient, SimProcess};
pub use worker::WorkerProcess;

/// Installs rustls' ring provider (once): the workspace's reqwest has TLS without a default
/// provider, as the services install theirs at start-up. The harness calls it before any HTTP.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Retries `attempt` until it succeeds or `timeout` has passed, and returns its value or, on
/// timeout, its last error with `what` as context. Each attempt is cut off at the deadline.
/// Waits grow from 10 ms to 250 ms between attempts.
///
/// ```no_run
/// # async fn example(nats: &shardyard_tests::NatsServer) -> anyhow::Result<()> {
/// use std::time::Duration;
/// let js = nats.jetstream().await?;
/// shardyard_tests::eventually(Duration::from_secs(10), "stream has 3 messages", || async {
///     let mut stream = js.get_stream("EVENTS").await?;
///     let n = stream.info().await?.state.messages;
///     anyhow::ensure!(n == 3, "{n} messages");
///     Ok(())
/// })
/// .await?;
/// # Ok(())
/// # }
/// ```
pub async fn eventually<T, F, Fut>(
    timeout: Duration,
    what: &str,
    mut attempt: F,
) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<T>>,
{
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(10);
    // What the attempt before a cut-off one said: a cut-off alone says nothing about why.
    let mut previous: Option<String> = None;
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let error = match tokio::time::timeout(remaining, attempt()).await {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(e)) => e,
            Err(_) => match &previous {
                Some(before) => anyhow::anyhow!(
                    "the last attempt was still running at the deadline; the one before: {before}"
                ),
                None => anyhow::anyhow!("the last attempt was still running at the deadline"),
            },
        };
        previous = Some(format!("{error:#}"));
        if Instant::now() >= deadline {
            return Err(error.context(format!("{what}: not true within {timeout:?}")));
        }
        tokio::time::sleep(pause.min(deadline.saturating_duration_since(Instant::now()))).await;
        pause = (pause * 2).min(Duration::from_millis(250));
    }
}
