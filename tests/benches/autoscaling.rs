//! Autoscaling's two figures (issue 15), on the test bed with release binaries:
//!
//! 1. **Backlog to scale-up**: from a backlog appearing in a bot's stream until the real HPA
//!    controller has asked for more workers (the Deployment's `spec.replicas` rises), read
//!    through the real aggregator from the operator's metrics API. The test bed's HPA syncs
//!    every second; a cluster's default is 15 s, which adds up to that much.
//! 2. **The metrics API's latency per request** with `BENCH_BOTS` (1,000) DiscordBots in the
//!    cluster, each with its stream and consumer, asked directly over TLS with the front
//!    proxy's client certificate, as the aggregator asks. The operator is a follower here (the
//!    bench holds the leader Lease), so the bots are not reconciled: only the API is measured.
//!    Goal: p99 ≤ 5 ms.
//!
//! `cargo bench -p shardyard-tests --bench autoscaling` (`BENCH_ROUNDS`, `BENCH_BOTS`,
//! `BENCH_REQUESTS` per round).

use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_nats::jetstream::{consumer, stream};
use futures_util::StreamExt as _;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use kube::api::{Patch, PatchParams};
use shardyard_operator::controller::leader::LeaseLock;
use shardyard_protocol::BotKey;
use shardyard_protocol::names::worker_consumer;
use shardyard_tests::bench::env_or;
use shardyard_tests::operator::{OperatorBed, OperatorProcess};
use shardyard_tests::worker::publish_event;
use shardyard_tests::{KubeCluster, NatsServer, eventually};

const METRIC_PATH: &str =
    "/apis/external.metrics.k8s.io/v1beta1/namespaces/default/shardyard_pending_events";

fn main() -> anyhow::Result<()> {
    shardyard_tests::bench::run_on_release_binaries("autoscaling", &["-p", "shardyard"], &[])?;
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(async {
            shardyard_tests::install_crypto_provider();
            backlog_to_scale_up().await?;
            metrics_api_latency().await
        })
}

async fn backlog_to_scale_up() -> anyhow::Result<()> {
    let rounds: usize = env_or("BENCH_ROUNDS", 5);
    let bed = OperatorBed::start().await?;
    let (operator, _, _) =
        OperatorProcess::start_with_metrics_api(&bed.cluster, "op-bench", &bed.sim.api_base())
            .await?;
    bed.secret("mybot", bed.sim.token()).await?;
    bed.apply(&bed.manifest(
        "mybot",
        "  workers: {minReplicas: 1, maxReplicas: 10, targetPendingPerReplica: 10}\n  \
         autoscaling: {scaleDownStabilizationSeconds: 0}\n",
    ))
    .await?;
    let key = BotKey::namespaced("default", "mybot")?;
    let js = bed.nats.jetstream().await?;
    bed.condition("mybot", "Ready", "True", "Applied", &operator)
        .await?;
    let workers = js
        .create_consumer_on_stream(
            consumer::pull::Config {
                durable_name: Some(worker_consumer(None)),
                ack_policy: consumer::AckPolicy::Explicit,
                ..Default::default()
            },
            key.stream(),
        )
        .await?;
    let deployments: Api<Deployment> = Api::namespaced(bed.client.clone(), "default");
    let replicas = || async {
        anyhow::Ok(
            deployments
                .get("mybot-worker")
                .await?
                .spec
                .replicas
                .unwrap_or(0),
        )
    };
    eventually(Duration::from_secs(60), "one worker", || async {
        anyhow::ensure!(replicas().await? == 1);
        Ok(())
    })
    .await?;
    let mut took = Vec::with_capacity(rounds);
    let mut seq = 0;
    for round in 1..=rounds {
        // 50 events at 10 per replica: the HPA asks for 5.
        let started = Instant::now();
        for _ in 0..50 {
            seq += 1;
            publish_event(&js, &key, (0, 1), seq, "MESSAGE_CREATE", "{}").await?;
        }
        loop {
            if replicas().await? > 1 {
                break;
            }
            anyhow::ensure!(
                started.elapsed() < Duration::from_secs(120),
                "no scale-up: {}",
                bed.cluster.controller_manager_log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let elapsed = started.elapsed();
        println!(
            "round {round}: backlog of 50 to the HPA asking for {} workers: {:.2} s",
            replicas().await?,
            elapsed.as_secs_f64()
        );
        took.push(elapsed);
        // Drain it, and wait for the HPA to come back to one.
        let mut batch = workers.fetch().max_messages(100).messages().await?;
        while let Some(message) = batch.next().await {
            message
                .map_err(|e| anyhow::anyhow!(e))?
                .ack()
                .await
                .map_err(|e| anyhow::anyhow!(e))?;
        }
        eventually(Duration::from_secs(120), "back to one worker", || async {
            anyhow::ensure!(replicas().await? == 1);
            Ok(())
        })
        .await?;
    }
    took.sort();
    println!(
        "backlog to scale-up (HPA sync 1 s): min {:.2} s, median {:.2} s, max {:.2} s over \
         {rounds} rounds",
        took[0].as_secs_f64(),
        took[rounds / 2].as_secs_f64(),
        took[rounds - 1].as_secs_f64()
    );
    Ok(())
}

async fn metrics_api_latency() -> anyhow::Result<()> {
    let rounds: usize = env_or("BENCH_ROUNDS", 5);
    let bots: usize = env_or("BENCH_BOTS", 1000);
    let requests: usize = env_or("BENCH_REQUESTS", 2000);
    let cluster = KubeCluster::start().await?;
    cluster.apply_discordbot_crd().await?;
    let nats = NatsServer::start().await?;
    let client = cluster.client().await?;
    // The bench leads, so the operator under test only serves.
    let lock = LeaseLock::new(
        Api::<Lease>::namespaced(client.clone(), "default"),
        "shardyard-operator",
        "bench",
    );
    lock.acquire(|| {}).await;
    let holder = tokio::spawn(async move { lock.keep().await });

    let js = nats.jetstream().await?;
    let api = Api::<shardyard_operator::DiscordBot>::namespaced(client.clone(), "default");
    let started = Instant::now();
    let names: Vec<String> = (0..bots).map(|i| format!("bot{i:04}")).collect();
    for chunk in names.chunks(50) {
        let mut creating = Vec::new();
        for name in chunk {
            let key = BotKey::namespaced("default", name)?;
            let js = js.clone();
            let api = api.clone();
            let url = nats.url();
            let name = name.clone();
            creating.push(tokio::spawn(async move {
                js.create_stream(stream::Config {
                    name: key.stream(),
                    subjects: vec![key.events_filter()],
                    storage: stream::StorageType::Memory,
                    ..Default::default()
                })
                .await?;
                js.create_consumer_on_stream(
                    consumer::pull::Config {
                        durable_name: Some(worker_consumer(None)),
                        ..Default::default()
                    },
                    key.stream(),
                )
                .await?;
                api.patch(
                    &name,
                    &PatchParams::apply("bench"),
                    &Patch::Apply(serde_json::json!({
                        "apiVersion": "shardyard.dev/v1alpha1",
                        "kind": "DiscordBot",
                        "metadata": {"name": name, "namespace": "default"},
                        "spec": {"tokenSecret": {"name": "none"}, "nats": {"url": url}},
                    })),
                )
                .await?;
                anyhow::Ok(())
            }));
        }
        for task in creating {
            task.await??;
        }
    }
    println!(
        "{bots} bots, their streams and consumers made in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let (operator, certificate, addr) =
        OperatorProcess::start_with_metrics_api(&cluster, "op-bench", "http://127.0.0.1:9/api/v10")
            .await?;
    let (cert, key) = cluster.front_proxy_client();
    let mut identity = std::fs::read(cert)?;
    identity.extend(std::fs::read(key)?);
    let http = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(
            certificate.ca_pem.as_bytes(),
        )?])
        .identity(reqwest::Identity::from_pem(&identity)?)
        .build()?;
    let ask = |bot: &str| {
        let request = http
            .get(format!(
                "https://{addr}{METRIC_PATH}?labelSelector=bot%3D{bot}"
            ))
            .header(
                "X-Remote-User",
                "system:serviceaccount:kube-system:horizontal-pod-autoscaler",
            )
            .header("X-Remote-Group", "system:serviceaccounts");
        async move {
            let answer = request.send().await?;
            anyhow::ensure!(answer.status().is_success(), "{}", answer.text().await?);
            Ok(())
        }
    };
    let last = names.last().context("bots")?.clone();
    eventually(
        Duration::from_secs(120),
        "the operator knows every bot",
        || ask(&last),
    )
    .await
    .with_context(|| operator.log_report())?;
    let mut p99s = Vec::with_capacity(rounds);
    for round in 1..=rounds {
        let mut latencies = Vec::with_capacity(requests);
        for i in 0..requests {
            let bot = &names[(i * 7919 + round) % bots];
            let sent = Instant::now();
            ask(bot).await?;
            latencies.push(sent.elapsed());
        }
        latencies.sort();
        let at = |q: f64| latencies[((requests as f64 * q) as usize).min(requests - 1)];
        println!(
            "round {round}: {requests} requests over {bots} bots: p50 {:.2} ms, p99 {:.2} ms, \
             max {:.2} ms",
            at(0.5).as_secs_f64() * 1e3,
            at(0.99).as_secs_f64() * 1e3,
            latencies[requests - 1].as_secs_f64() * 1e3
        );
        p99s.push(at(0.99));
    }
    p99s.sort();
    println!(
        "metrics API p99 with {bots} bots: median {:.2} ms over {rounds} rounds (goal 5 ms)",
        p99s[rounds / 2].as_secs_f64() * 1e3
    );
    holder.abort();
    Ok(())
}
