//! The workers scale on their backlog (issue 15), proven by the real HPA controller of the
//! test bed reading the operator's external metrics API through the real aggregator: an
//! `APIService` names the operator (running here as a process on the host side of the bed's
//! network), the API server proxies to it with its front-proxy client certificate, and the
//! worker Deployment's replicas follow `ceil(pending / target)`.

use std::time::Duration;

use anyhow::Context as _;
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::Api;
use shardyard_protocol::BotKey;
use shardyard_tests::kube_cluster::succeeded;
use shardyard_tests::operator::{OperatorBed, OperatorProcess};
use shardyard_tests::worker::publish_event;
use shardyard_tests::{KubeCluster, WorkerProcess, eventually};

const METRIC_PATH: &str =
    "/apis/external.metrics.k8s.io/v1beta1/namespaces/default/shardyard_pending_events";

/// Waits until the worker Deployment asks for `want` replicas.
async fn replicas_become(
    deployments: &Api<Deployment>,
    want: i32,
    cluster: &KubeCluster,
) -> anyhow::Result<()> {
    eventually(
        Duration::from_secs(90),
        &format!("the HPA asks for {want} workers"),
        || async {
            let got = deployments.get("mybot-worker").await?.spec.replicas;
            anyhow::ensure!(got == Some(want), "{got:?} replicas");
            Ok(())
        },
    )
    .await
    .with_context(|| cluster.controller_manager_log())
}

#[tokio::test]
async fn the_hpa_scales_the_workers_on_their_backlog_through_the_operators_metrics_api()
-> anyhow::Result<()> {
    let bed = OperatorBed::start().await?;
    let (operator, certificate, addr) =
        OperatorProcess::start_with_metrics_api(&bed.cluster, "op-a", &bed.sim.api_base()).await?;

    // Written with fixed replicas first: 2 workers.
    bed.secret("mybot", bed.sim.token()).await?;
    let workers = "  workers: {minReplicas: 2, maxReplicas: 6, targetPendingPerReplica: 10}\n";
    bed.apply(&bed.manifest(
        "mybot",
        &format!("{workers}  autoscaling: {{provider: none}}\n"),
    ))
    .await?;
    bed.condition("mybot", "Autoscaling", "False", "Disabled", &operator)
        .await?;
    let deployments: Api<Deployment> = Api::namespaced(bed.client.clone(), "default");
    assert_eq!(
        deployments.get("mybot-worker").await?.spec.replicas,
        Some(2)
    );

    // Switched to the HPA: the replicas are handed over, never reset to 1 on the way.
    let watched = {
        let deployments = deployments.clone();
        tokio::spawn(async move {
            let mut fewest = i32::MAX;
            for _ in 0..150 {
                if let Ok(d) = deployments.get("mybot-worker").await {
                    fewest = fewest.min(d.spec.replicas.unwrap_or(0));
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            fewest
        })
    };
    bed.apply(&bed.manifest(
        "mybot",
        &format!("{workers}  autoscaling: {{scaleDownStabilizationSeconds: 0}}\n"),
    ))
    .await?;
    // No worker has made its consumer: the number is unknown, not zero.
    bed.condition(
        "mybot",
        "Autoscaling",
        "False",
        "ConsumerMissing",
        &operator,
    )
    .await?;
    let unknown = bed
        .cluster
        .kubectl(
            &[
                "get",
                "--raw",
                &format!("{METRIC_PATH}?labelSelector=bot%3Dmybot"),
            ],
            None,
        )
        .await?;
    let refusal = String::from_utf8_lossy(&unknown.stderr);
    assert!(
        !unknown.status.success() && refusal.contains("no worker has started"),
        "{refusal}"
    );
    assert_eq!(watched.await?, 2, "the replicas never dropped below 2");

    // A worker makes its consumer and is stopped; a backlog of 35 builds.
    let key = BotKey::namespaced("default", "mybot")?;
    let record = tempfile::NamedTempFile::new()?;
    let record_path = record.path().to_str().context("a path")?.to_owned();
    let worker_args = [
        "--types",
        "MESSAGE_CREATE",
        "--record",
        record_path.as_str(),
    ];
    let worker = WorkerProcess::start_test(&bed.nats, key.as_str(), &worker_args, &[]).await?;
    drop(worker);
    let js = bed.nats.jetstream().await?;
    for seq in 0..35 {
        publish_event(&js, &key, (0, 3), seq, "MESSAGE_CREATE", "{}").await?;
    }

    // Through the aggregator, as the HPA reads it.
    let value = succeeded(
        &bed.cluster
            .kubectl(
                &[
                    "get",
                    "--raw",
                    &format!("{METRIC_PATH}?labelSelector=bot%3Dmybot%2Cgroup%3Ddefault"),
                ],
                None,
            )
            .await?,
    )?;
    let list: serde_json::Value = serde_json::from_str(&value)?;
    assert_eq!(list["items"][0]["value"], "35", "{list}");
    assert_eq!(
        list["items"][0]["metricLabels"],
        serde_json::json!({"bot": "mybot", "group": "default"})
    );
    for (path, words) in [
        (
            "/apis/external.metrics.k8s.io/v1beta1/namespaces/default/other_metric".to_owned(),
            "NotFound",
        ),
        (
            format!("{METRIC_PATH}?labelSelector=bot%3Dnobot"),
            "NotFound",
        ),
        (
            format!("{METRIC_PATH}?labelSelector=bot%3D%3D%3D"),
            "BadRequest",
        ),
    ] {
        let refused = bed.cluster.kubectl(&["get", "--raw", &path], None).await?;
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert!(
            !refused.status.success() && stderr.contains(words),
            "{path}: {stderr}"
        );
    }

    // 35 pending at 10 per replica: the HPA asks for 4.
    replicas_become(&deployments, 4, &bed.cluster).await?;
    bed.condition("mybot", "Autoscaling", "True", "QueueDepthRead", &operator)
        .await?;

    // The workers come back and drain it: down to the minimum.
    let _worker = WorkerProcess::start_test(&bed.nats, key.as_str(), &worker_args, &[]).await?;
    replicas_become(&deployments, 2, &bed.cluster).await?;

    // Only the aggregator may ask, and only for users RBAC lets read the metric.
    let url = format!("https://{addr}{METRIC_PATH}?labelSelector=bot%3Dmybot");
    let ca = reqwest::Certificate::from_pem(certificate.ca_pem.as_bytes())?;
    let stranger = reqwest::Client::builder()
        .tls_certs_only([ca.clone()])
        .build()?;
    assert!(
        stranger.get(&url).send().await.is_err(),
        "TLS refuses a client without the front proxy's certificate"
    );
    let (proxy_cert, proxy_key) = bed.cluster.front_proxy_client();
    let mut identity = std::fs::read(proxy_cert)?;
    identity.extend(std::fs::read(proxy_key)?);
    let as_proxy = reqwest::Client::builder()
        .tls_certs_only([ca])
        .identity(reqwest::Identity::from_pem(&identity)?)
        .build()?;
    let nobody = as_proxy.get(&url).send().await?;
    assert_eq!(nobody.status(), 401, "no user named");
    let anonymous = as_proxy
        .get(&url)
        .header("X-Remote-User", "system:anonymous")
        .send()
        .await?;
    assert_eq!(anonymous.status(), 403, "{}", anonymous.text().await?);
    let hpa = as_proxy
        .get(&url)
        .header(
            "X-Remote-User",
            "system:serviceaccount:kube-system:horizontal-pod-autoscaler",
        )
        .header("X-Remote-Group", "system:serviceaccounts")
        .send()
        .await?;
    assert_eq!(hpa.status(), 200, "{}", hpa.text().await?);

    // The HPA controller asked, and the operator never took the replicas back.
    assert!(
        operator
            .metric("shardyard_operator_metrics_api_answers_total{code=\"200\"}")
            .await?
            >= 2.0
    );
    let deployment = deployments.get("mybot-worker").await?;
    let holders: Vec<String> = deployment
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .filter(|m| {
            m.fields_v1
                .as_ref()
                .is_some_and(|f| f.0["f:spec"].get("f:replicas").is_some())
        })
        .filter_map(|m| m.manager.clone())
        .collect();
    assert!(
        !holders.iter().any(|m| m == "shardyard-operator"),
        "replicas held by {holders:?}"
    );
    Ok(())
}

/// `provider: keda` without KEDA: the bot runs and says so; with KEDA's published CRD
/// (`tests/data/keda/`), the ScaledObject the operator plans passes KEDA's schema on the real
/// API server, and switching back to the HPA removes it.
#[tokio::test]
async fn a_scaled_object_waits_for_keda_and_then_passes_kedas_own_schema() -> anyhow::Result<()> {
    let bed = OperatorBed::start().await?;
    let operator = bed.operator("op-a").await?;
    bed.secret("mybot", bed.sim.token()).await?;
    let keda = "  workers: {minReplicas: 0, maxReplicas: 4}\n  autoscaling: {provider: keda}\n";
    bed.apply(&bed.manifest("mybot", keda)).await?;
    bed.condition("mybot", "Ready", "True", "Applied", &operator)
        .await?;
    bed.condition("mybot", "Autoscaling", "False", "KedaMissing", &operator)
        .await?;

    let crd = std::fs::read_to_string(
        shardyard_tests::repo_root().join("tests/data/keda/keda.sh_scaledobjects.yaml"),
    )?;
    bed.cluster.apply_crd(&crd, "scaledobjects.keda.sh").await?;
    // The next reconcile (a spec change wakes it) creates it; the API server validated it
    // against KEDA's schema on the way in.
    bed.apply(&bed.manifest("mybot", &format!("{keda}  shardsPerPod: 8\n")))
        .await?;
    let scaled = eventually(Duration::from_secs(60), "the ScaledObject", || async {
        let out = bed
            .cluster
            .kubectl(&["get", "scaledobject", "mybot-worker", "-o", "json"], None)
            .await?;
        let text = succeeded(&out)?;
        anyhow::Ok(serde_json::from_str::<serde_json::Value>(&text)?)
    })
    .await
    .with_context(|| operator.log_report())?;
    let spec = &scaled["spec"];
    assert_eq!(spec["scaleTargetRef"]["name"], "mybot-worker");
    assert_eq!(spec["minReplicaCount"], 0);
    assert_eq!(spec["triggers"][0]["type"], "metrics-api");
    // No KEDA controller runs here, so the number itself is not asked for: the depth is
    // unknown until a worker makes its consumer.
    bed.condition(
        "mybot",
        "Autoscaling",
        "False",
        "ConsumerMissing",
        &operator,
    )
    .await?;
    // A field KEDA's schema does not know is refused: the check above can fail.
    let mut wrong = scaled.clone();
    wrong["spec"]["triggers"][0]["surprise"] = serde_json::json!(true);
    wrong["metadata"] = serde_json::json!({"name": "wrong", "namespace": "default"});
    let refused = bed
        .cluster
        .kubectl(
            &["apply", "--server-side", "--validate=strict", "-f", "-"],
            Some(&wrong.to_string()),
        )
        .await?;
    let refusal = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && refusal.contains("surprise"),
        "{refusal}"
    );

    // Back to the HPA: the ScaledObject goes, an HPA comes.
    bed.apply(&bed.manifest(
        "mybot",
        "  workers: {minReplicas: 1, maxReplicas: 4}\n  shardsPerPod: 8\n",
    ))
    .await?;
    eventually(
        Duration::from_secs(60),
        "the ScaledObject is pruned",
        || async {
            let out = bed
                .cluster
                .kubectl(&["get", "scaledobject,hpa", "-o", "name"], None)
                .await?;
            let names = succeeded(&out)?;
            anyhow::ensure!(
                names.trim() == "horizontalpodautoscaler.autoscaling/mybot-worker",
                "{names}"
            );
            Ok(())
        },
    )
    .await
    .with_context(|| operator.log_report())?;
    Ok(())
}
