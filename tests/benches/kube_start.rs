//! How long the Kubernetes test bed takes to start (`tests/README.md`, "The Kubernetes test
//! bed"): `BENCH_ROUNDS` (5) times, a [`KubeCluster`] from nothing (a network namespace,
//! certificates, etcd, the API server) until the API server first answers `/readyz` with 200,
//! then until the controller-manager has made the `default` namespace's service account (its
//! controllers run) and the whole cluster is stopped.
//!
//! ```sh
//! cargo bench -p shardyard-tests --bench kube_start
//! ```
//!
//! The programs come from `scripts/kube-tools` (or `SHARDYARD_KUBE_TOOLS`); nothing of
//! shardyard's own is built.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ServiceAccount;
use kube::Api;
use shardyard_tests::bench::env_or;
use shardyard_tests::{KubeCluster, eventually};

fn main() -> anyhow::Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(run())
}

async fn run() -> anyhow::Result<()> {
    let rounds: usize = env_or("BENCH_ROUNDS", 5);
    let mut ready = Vec::with_capacity(rounds);
    for round in 1..=rounds {
        let started = Instant::now();
        let cluster = KubeCluster::start().await?;
        let api = cluster.api_ready_after();
        let accounts: Api<ServiceAccount> = Api::namespaced(cluster.client().await?, "default");
        eventually(
            Duration::from_secs(60),
            "the default service account",
            || async {
                accounts.get("default").await?;
                Ok(())
            },
        )
        .await?;
        let controllers = started.elapsed();
        drop(cluster);
        println!(
            "round {round}: API server ready after {:.2} s, controllers working after {:.2} s, \
             stopped after {:.2} s",
            api.as_secs_f64(),
            controllers.as_secs_f64(),
            started.elapsed().as_secs_f64()
        );
        ready.push(api);
    }
    ready.sort();
    println!(
        "API server ready: min {:.2} s, median {:.2} s, max {:.2} s over {rounds} rounds",
        ready[0].as_secs_f64(),
        ready[rounds / 2].as_secs_f64(),
        ready[rounds - 1].as_secs_f64()
    );
    Ok(())
}
