//! The DiscordBot CRD and `shardyard plan` on the real API server of the test bed (issue 14):
//! the schema fills in what a minimal manifest leaves out, exactly as the Rust types' defaults
//! do; the schema and its CEL rules refuse bad bots with a message that says what to fix; and
//! every object `shardyard plan` prints is accepted by the API server (a server-side dry run).

use std::process::Command;

use anyhow::Context as _;
use serde_json::{Value, json};
use shardyard_operator::DiscordBot;
use shardyard_tests::kube_cluster::succeeded;
use shardyard_tests::{KubeCluster, SimArgs, SimProcess, repo_root, shardyard_bin};

const MINIMAL: &str = "apiVersion: shardyard.dev/v1alpha1
kind: DiscordBot
metadata:
  name: mybot
  namespace: default
spec:
  tokenSecret: {name: mybot-token}
  nats: {url: 'nats://nats.nats.svc:4222'}
";

async fn cluster_with_crd() -> anyhow::Result<KubeCluster> {
    let cluster = KubeCluster::start().await?;
    cluster.apply_discordbot_crd().await?;
    Ok(cluster)
}

#[tokio::test]
async fn a_minimal_bot_is_defaulted_by_the_api_server_as_by_the_types() -> anyhow::Result<()> {
    let cluster = cluster_with_crd().await?;
    succeeded(
        &cluster
            .kubectl(&["apply", "--server-side", "-f", "-"], Some(MINIMAL))
            .await?,
    )?;
    let stored: Value = serde_json::from_str(&succeeded(
        &cluster
            .kubectl(&["get", "dbot", "mybot", "-o", "json"], None)
            .await?,
    )?)?;
    let spec = &stored["spec"];
    assert_eq!(spec["shards"], "auto", "{spec}");
    assert_eq!(spec["shardsPerPod"], 16);
    assert_eq!(spec["intents"], json!(["NON_PRIVILEGED"]));
    assert_eq!(spec["tokenSecret"]["key"], "token");
    assert_eq!(spec["rest"]["replicas"], 2);
    assert_eq!(spec["cache"]["enabled"], true);
    assert_eq!(spec["stream"]["deadLetter"]["maxBytes"], "1Gi");
    assert_eq!(spec["autoscaling"]["provider"], "hpa");
    assert!(
        spec.get("discord").is_none(),
        "apiBase has no default: {spec}"
    );

    // The types read the stored bot, and their own defaults are the schema's.
    let from_api: DiscordBot = serde_json::from_value(stored.clone())?;
    let from_types: DiscordBot = serde_saphyr::from_str(MINIMAL)?;
    assert_eq!(from_api.spec, from_types.spec);
    // The short name and the printer columns.
    let table = succeeded(&cluster.kubectl(&["get", "dbot"], None).await?)?;
    let header: Vec<&str> = table
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        ["NAME", "SHARDS", "READY", "WORKERS", "PENDING", "AGE"]
    );
    Ok(())
}

#[tokio::test]
async fn bad_bots_are_refused_with_what_to_fix() -> anyhow::Result<()> {
    let cluster = cluster_with_crd().await?;
    let long_name = "b".repeat(41);
    let cases: [(&str, String, &str); 16] = [
        (
            "shards 0",
            MINIMAL.replace("  tokenSecret:", "  shards: 0\n  tokenSecret:"),
            r#"shards must be "auto" or a whole number of at least 1"#,
        ),
        (
            "shards many",
            MINIMAL.replace("  tokenSecret:", "  shards: many\n  tokenSecret:"),
            r#"shards must be "auto" or a whole number of at least 1"#,
        ),
        (
            "unknown intent",
            MINIMAL.replace(
                "  tokenSecret:",
                "  intents: [GUILDS, TELEPATHY]\n  tokenSecret:",
            ),
            r#"spec.intents[1]: Unsupported value: "TELEPATHY""#,
        ),
        (
            "min over max",
            MINIMAL.replace(
                "  tokenSecret:",
                "  workers: {minReplicas: 5, maxReplicas: 2}\n  tokenSecret:",
            ),
            "workers.minReplicas must not exceed workers.maxReplicas",
        ),
        (
            "api base",
            MINIMAL.replace(
                "  tokenSecret:",
                "  discord: {apiBase: 'ftp://discord.com/api'}\n  tokenSecret:",
            ),
            "discord.apiBase must be an http(s) URL ending in the API version",
        ),
        (
            "nats url",
            MINIMAL.replace("nats://nats.nats.svc:4222", "http://nats:4222"),
            "nats.url must be nats://host:port or tls://host:port",
        ),
        (
            "long name",
            MINIMAL.replace("name: mybot", &format!("name: {long_name}")),
            "metadata.name must be at most 40 characters",
        ),
        (
            "per pod 0",
            MINIMAL.replace("  tokenSecret:", "  shardsPerPod: 0\n  tokenSecret:"),
            "spec.shardsPerPod: Invalid value: 0: spec.shardsPerPod in body should be greater than or equal to 1",
        ),
        (
            "no token",
            MINIMAL.replace("  tokenSecret: {name: mybot-token}\n", ""),
            "spec.tokenSecret: Required value",
        ),
        (
            "max age",
            MINIMAL.replace("  tokenSecret:", "  stream: {maxAge: 1w}\n  tokenSecret:"),
            "stream.maxAge must be 0 or a whole number with s, m, h or d",
        ),
        (
            "max bytes",
            MINIMAL.replace(
                "  tokenSecret:",
                "  stream: {maxBytes: 1GB}\n  tokenSecret:",
            ),
            r#"spec.stream.maxBytes: Invalid value: "1GB": must be a number of bytes or a quantity like 512Mi or 10Gi"#,
        ),
        (
            "no workers with an hpa",
            MINIMAL.replace(
                "  tokenSecret:",
                "  workers: {minReplicas: 0}\n  tokenSecret:",
            ),
            "spec.workers.minReplicas may be 0 only with autoscaling.provider keda",
        ),
        (
            "keda's nats trigger without an endpoint",
            MINIMAL.replace(
                "  tokenSecret:",
                "  autoscaling: {provider: keda, keda: {trigger: nats-jetstream}}\n  tokenSecret:",
            ),
            "autoscaling.keda.natsMonitoringEndpoint is required with the nats-jetstream trigger",
        ),
        (
            "interactions answered too late",
            MINIMAL.replace(
                "  tokenSecret:",
                "  interactions: {publicKeySecret: {name: app, key: pk}, answerWithinMs: 3000}\n  tokenSecret:",
            ),
            "spec.interactions.answerWithinMs: Invalid value: 3000: spec.interactions.answerWithinMs in body should be less than or equal to 2999",
        ),
        (
            "interactions without a public key",
            MINIMAL.replace("  tokenSecret:", "  interactions: {replicas: 2}\n  tokenSecret:"),
            "spec.interactions.publicKeySecret: Required value",
        ),
        (
            "interactions behind an unknown service type",
            MINIMAL.replace(
                "  tokenSecret:",
                "  interactions: {publicKeySecret: {name: app, key: pk}, serviceType: Ingress}\n  tokenSecret:",
            ),
            r#"spec.interactions.serviceType: Unsupported value: "Ingress""#,
        ),
    ];
    for (what, manifest, message) in cases {
        let output = cluster
            .kubectl(&["apply", "--server-side", "-f", "-"], Some(&manifest))
            .await?;
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{what}: accepted\n{manifest}");
        assert!(
            stderr.contains(message),
            "{what}: refused without {message:?}: {stderr}"
        );
        // `shardyard plan` refuses it without a cluster, in the API server's words.
        let file = cluster.dir().join("bad.yaml");
        std::fs::write(&file, &manifest)?;
        let planned = Command::new(shardyard_bin()?)
            .args(["plan", "-f", file.to_str().context("a path")?])
            .env("RUST_BACKTRACE", "0")
            .output()?;
        assert!(
            !planned.status.success(),
            "{what}: shardyard plan accepted it"
        );
        let refusal = String::from_utf8_lossy(&planned.stderr);
        let lines: Vec<&str> = refusal
            .lines()
            .map(str::trim)
            .filter(|l| l.starts_with("spec.") || l.starts_with("<nil>"))
            .collect();
        assert!(
            !lines.is_empty(),
            "{what}: no field errors from plan: {refusal}"
        );
        for line in lines {
            assert!(
                stderr.contains(line),
                "{what}: plan says {line:?}, the API server says: {stderr}"
            );
        }
    }
    let none = succeeded(
        &cluster
            .kubectl(&["get", "dbot", "-A", "-o", "name"], None)
            .await?,
    )?;
    assert_eq!(none.trim(), "", "nothing was stored");
    Ok(())
}

/// `shards: auto` asks Discord (here the simulator, recommending 3 shards for 2,500 guilds).
#[tokio::test]
async fn everything_plan_prints_is_accepted_by_the_api_server() -> anyhow::Result<()> {
    let cluster = cluster_with_crd().await?;
    let sim = SimProcess::start(SimArgs {
        guilds: 2500,
        ..SimArgs::default()
    })
    .await?;
    for example in ["minimal.yaml", "bot.yaml"] {
        let path = repo_root().join("config/examples").join(example);
        let output = Command::new(shardyard_bin()?)
            .args(["plan", "-f", path.to_str().context("a path")?])
            .args(["--api-base", &sim.api_base()])
            .env("SHARDYARD_TOKEN", sim.token())
            .output()?;
        let planned = succeeded(&output).with_context(|| format!("shardyard plan -f {example}"))?;
        assert!(planned.contains("kind: StatefulSet"), "{planned}");
        assert!(
            planned.contains("- --total\n        - \"3\"\n"),
            "Discord's 3 shards: {planned}"
        );
        assert!(
            !planned.contains(sim.token()),
            "the token stays out of the plan"
        );
        let applied = cluster
            .kubectl(
                &["apply", "--server-side", "--dry-run=server", "-f", "-"],
                Some(&planned),
            )
            .await?;
        let accepted = succeeded(&applied).with_context(|| format!("{example}:\n{planned}"))?;
        for object in [
            "statefulset.apps/",
            "deployment.apps/",
            "service/",
            "networkpolicy",
            "poddisruptionbudget",
        ] {
            assert!(
                accepted.contains(object),
                "{example}: no {object} in {accepted}"
            );
        }
        // The examples themselves are valid DiscordBots.
        succeeded(
            &cluster
                .kubectl(
                    &[
                        "apply",
                        "--server-side",
                        "--dry-run=server",
                        "-f",
                        path.to_str().context("a path")?,
                    ],
                    None,
                )
                .await?,
        )
        .with_context(|| format!("{example} as a DiscordBot"))?;
    }
    Ok(())
}
