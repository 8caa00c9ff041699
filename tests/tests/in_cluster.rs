//! The end-to-end test the project is for (issue 17): on the test cluster with its node,
//! `helm install` the chart (the operator runs in a pod), create the token Secret and
//! `kubectl apply` the example bot, with the simulator and nats-server running in the cluster
//! too. The operator asks the simulator for the shard count and makes the gateway StatefulSet,
//! the workers, the REST proxy and the cache; the gateway pods take their shard ranges from
//! their ordinals; `!ping` gets `pong`; a deleted gateway pod saves its session and its
//! replacement resumes; the stream holds exactly what the simulator dispatched; and a new shard
//! count reshards blue/green with no event lost and no identify too early.

use std::time::Duration;

use anyhow::Context as _;
use serde_json::{Value, json};
use shardyard_protocol::BotKey;
use shardyard_tests::ground_truth::{
    check_handover, per_shard, read_stream_events, session_logs, wait_until_stream_matches,
};
use shardyard_tests::images;
use shardyard_tests::kube_cluster::{KubeCluster, sim_workload, succeeded};
use shardyard_tests::{SimApi as _, SimClient, eventually, repo_root};

const TOKEN: &str = "MTEwMDAwMDAwMDAwMDAwMDAwMA.in-cluster.secret-token-value-4242";
/// The simulator's (first and only) bot.
const SIM_BOT: &str = "bot";

/// nats-server with JetStream on an emptyDir, and the 8 MiB payloads the bot's streams need,
/// in namespace `nats` where the example bot looks for it (`nats://nats.nats.svc:4222`).
fn nats_manifests(image: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Namespace
metadata: {{name: nats}}
---
apiVersion: v1
kind: ConfigMap
metadata: {{name: nats, namespace: nats}}
data:
  nats.conf: |
    port: 4222
    http_port: 8222
    max_payload: 8MB
    jetstream {{
      store_dir: /data
    }}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: nats, namespace: nats}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: nats}}}}
  template:
    metadata: {{labels: {{app: nats}}}}
    spec:
      containers:
      - name: nats
        image: {image}
        imagePullPolicy: Never
        args: [-c, /etc/nats/nats.conf]
        ports: [{{containerPort: 4222}}, {{containerPort: 8222}}]
        readinessProbe:
          httpGet: {{path: "/healthz?js-enabled-only=true", port: 8222}}
          periodSeconds: 1
        volumeMounts:
        - {{name: config, mountPath: /etc/nats}}
        - {{name: data, mountPath: /data}}
      volumes:
      - name: config
        configMap: {{name: nats}}
      - name: data
        emptyDir: {{}}
---
apiVersion: v1
kind: Service
metadata: {{name: nats, namespace: nats}}
spec:
  selector: {{app: nats}}
  ports: [{{name: client, port: 4222}}]
"#
    )
}

/// The example bot as a user applies it, with one shard per gateway pod (so each pod's
/// ordinal picks one shard).
fn example_bot() -> anyhow::Result<String> {
    let example = std::fs::read_to_string(repo_root().join("config/examples/bot.yaml"))?;
    anyhow::ensure!(example.contains("shardsPerPod: 16"), "the example changed");
    Ok(example.replace("shardsPerPod: 16", "shardsPerPod: 1"))
}

/// The example bot's status, as `kubectl get dbot mybot -o json` shows it.
async fn bot_status(cluster: &KubeCluster) -> anyhow::Result<Value> {
    let bot: Value = serde_json::from_str(&succeeded(
        &cluster
            .kubectl(&["get", "dbot", "mybot", "-o", "json"], None)
            .await?,
    )?)?;
    Ok(bot["status"].clone())
}

async fn pod_log(cluster: &KubeCluster, pod: &str) -> anyhow::Result<String> {
    succeeded(
        &cluster
            .kubectl(&["logs", "-n", "default", pod], None)
            .await?,
    )
}

#[tokio::test]
async fn helm_installs_the_operator_and_the_example_bot_runs_in_the_cluster_losing_nothing()
-> anyhow::Result<()> {
    let nats_image = images::nats_image()?;
    let cluster = KubeCluster::start_with_node_and(std::slice::from_ref(&nats_image)).await?;
    let image = cluster.shardyard_image()?;
    cluster.apply(&nats_manifests(&nats_image.name)).await?;
    // The simulator advertises its Service's name as the gateway URL (pods cannot reach its
    // bind address), with 1,500 guilds (2 shards) and some traffic.
    cluster
        .apply(&sim_workload(
            &image,
            "default",
            "sim",
            8450,
            8450,
            &[
                "--token",
                TOKEN,
                "--guilds",
                "1500",
                "--events-per-second",
                "20",
                "--advertise-url",
                "http://sim.default.svc:8450",
            ],
        ))
        .await?;

    let chart = repo_root().join("charts/shardyard");
    succeeded(
        &cluster
            .helm(&[
                "install",
                "sy",
                &chart.display().to_string(),
                "--namespace",
                "shardyard",
                "--create-namespace",
                "--set",
                "image.pullPolicy=Never",
                "--set",
                "operator.replicas=1",
                "--set",
                "operator.apiBase=http://sim.default.svc:8450/api/v10",
            ])
            .await?,
    )
    .context("helm install")?;
    cluster.wait_rollout("nats", "deployment/nats").await?;
    cluster.wait_rollout("default", "deployment/sim").await?;
    cluster
        .wait_rollout("shardyard", "deployment/sy-shardyard")
        .await?;

    cluster
        .token_secret("default", "mybot-token", TOKEN)
        .await?;
    cluster.apply(&example_bot()?).await?;
    let report = || async {
        let all = cluster
            .kubectl_report(&["get", "all,dbot,hpa", "-A", "-o", "wide"])
            .await;
        let operator = cluster
            .kubectl_report(&["logs", "-n", "shardyard", "deployment/sy-shardyard"])
            .await;
        format!("{all}\n--- operator ---\n{operator}")
    };
    let ready = eventually(Duration::from_secs(180), "the bot is ready", || async {
        let status = bot_status(&cluster).await?;
        anyhow::ensure!(
            status["shards"] == json!(2) && status["readyShards"] == json!(2),
            "{status}"
        );
        Ok(())
    })
    .await;
    if let Err(e) = ready {
        anyhow::bail!("{e:#}\n{}", report().await);
    }
    for (ordinal, range) in [(0, "shards=0..1"), (1, "shards=1..2")] {
        let log = pod_log(&cluster, &format!("mybot-gateway-g1-{ordinal}")).await?;
        assert!(
            log.contains(range) && log.contains("total=2"),
            "pod {ordinal} takes {range} from its ordinal:\n{log}"
        );
    }
    for workload in ["deployment/mybot-worker", "deployment/mybot-rest"] {
        cluster.wait_rollout("default", workload).await?;
    }

    let sim_forward = cluster.port_forward("default", "svc/sim", 8450).await?;
    let sim = SimClient::new(sim_forward.local());
    let said = sim
        .post_json("/_sim/say", &json!({"content": "!ping"}))
        .await?;
    let channel = said["channel_id"]
        .as_str()
        .context("a channel id")?
        .parse::<u64>()?;
    eventually(Duration::from_secs(60), "pong arrives", || async {
        let got = sim.channel_message_contents(channel).await?;
        anyhow::ensure!(got == ["pong"], "{got:?}");
        Ok(())
    })
    .await?;

    // A deleted gateway pod saves its session (SIGTERM), and the StatefulSet's new pod with the
    // same ordinal resumes it.
    succeeded(
        &cluster
            .kubectl(
                &["delete", "pod", "mybot-gateway-g1-1", "--wait=true"],
                None,
            )
            .await?,
    )?;
    eventually(Duration::from_secs(90), "shard 1 resumed", || async {
        let stats = sim.stats().await?;
        anyhow::ensure!(
            per_shard(&stats, SIM_BOT, 2, "resumes")[1] >= 1,
            "resumes {:?}",
            per_shard(&stats, SIM_BOT, 2, "resumes")
        );
        Ok(())
    })
    .await?;
    let stats = sim.stats().await?;
    assert_eq!(
        per_shard(&stats, SIM_BOT, 2, "identifies"),
        [1, 1],
        "nothing identified twice"
    );

    // Nothing lost, nothing twice: the stream against the simulator's record.
    sim.post_json("/_sim/traffic", &json!({"events_per_second": 0}))
        .await?;
    let nats_forward = cluster.port_forward("nats", "svc/nats", 4222).await?;
    let nats = async_nats::connect(nats_forward.local().to_string()).await?;
    let js = async_nats::jetstream::new(nats);
    let bot = BotKey::namespaced("default", "mybot")?;
    wait_until_stream_matches(&js, &sim, SIM_BOT, &bot, 2, Duration::from_secs(60)).await?;

    // A new shard count, under traffic: generation 2 (4 shards, a pod each) starts beside
    // generation 1, takes over once every shard is READY, and generation 1 goes.
    sim.post_json("/_sim/traffic", &json!({"events_per_second": 20}))
        .await?;
    succeeded(
        &cluster
            .kubectl(
                &[
                    "patch",
                    "dbot",
                    "mybot",
                    "--type=merge",
                    "-p",
                    r#"{"spec":{"shards":4}}"#,
                ],
                None,
            )
            .await?,
    )?;
    let resharded = eventually(
        Duration::from_secs(180),
        "generation 2 took over",
        || async {
            let status = bot_status(&cluster).await?;
            anyhow::ensure!(
                status["gatewayGeneration"] == json!(2)
                    && status["reshard"].is_null()
                    && status["readyShards"] == json!(4),
                "{status}"
            );
            let old = cluster
                .kubectl(&["get", "statefulset", "mybot-gateway-g1"], None)
                .await?;
            anyhow::ensure!(!old.status.success(), "generation 1 is still there");
            Ok(())
        },
    )
    .await;
    if let Err(e) = resharded {
        anyhow::bail!("{e:#}\n{}", report().await);
    }
    sim.post_json("/_sim/traffic", &json!({"events_per_second": 0}))
        .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let logs = session_logs(&sim).await?;
    let stored = read_stream_events(&js, &bot).await?;
    let handover = check_handover(&logs, &stored, 2, 4);
    assert!(handover.problems.is_empty(), "{:#?}", handover.problems);
    assert!(handover.shared > 0, "the generations overlapped");
    assert_eq!(sim.stats().await?["violations"], json!([]));
    Ok(())
}
