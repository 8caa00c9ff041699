//! The Helm chart (`charts/shardyard`) on the real control plane: it lints strictly and renders;
//! `helm install` creates the operator's Deployment, ServiceAccount, RBAC and CRD; and the
//! operator, run with exactly the chart's ServiceAccount's permissions (its token, from the API
//! server's TokenRequest), turns each example of `config/examples` into every planned object.
//! (A control plane without a node, so the test runs the operator as a process;
//! `in_cluster.rs` installs the chart with the operator in a pod.)

use std::time::Duration;

use anyhow::Context as _;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use kube::Api;
use serde_json::Value;
use shardyard_operator::DiscordBot;
use shardyard_tests::kube_cluster::succeeded;
use shardyard_tests::operator::OperatorProcess;
use shardyard_tests::{KubeCluster, NatsServer, SimArgs, SimProcess, eventually, repo_root};

fn chart() -> String {
    repo_root()
        .join("charts/shardyard")
        .to_string_lossy()
        .into_owned()
}

#[tokio::test]
async fn the_chart_lints_strictly_and_its_values_are_checked() -> anyhow::Result<()> {
    let cluster = KubeCluster::start().await?;
    succeeded(&cluster.helm(&["lint", "--strict", &chart()]).await?)?;
    let rendered = succeeded(
        &cluster
            .helm(&["template", "sy", &chart(), "--namespace", "shardyard"])
            .await?,
    )?;
    for kind in [
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "Deployment",
        "Service",
    ] {
        assert!(
            rendered.contains(&format!("kind: {kind}\n")),
            "no {kind}:\n{rendered}"
        );
    }
    assert!(!rendered.contains("kind: ServiceMonitor"), "off by default");
    assert!(
        rendered.contains("kind: APIService"),
        "the metrics API, on by default"
    );
    let monitored = succeeded(
        &cluster
            .helm(&[
                "template",
                "sy",
                &chart(),
                "--set",
                "metrics.serviceMonitor.enabled=true",
            ])
            .await?,
    )?;
    assert!(monitored.contains("kind: ServiceMonitor"));
    // values.schema.json refuses what the chart cannot use.
    let refused = cluster
        .helm(&["template", "sy", &chart(), "--set", "operator.replicas=0"])
        .await?;
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("/operator/replicas"));
    let unknown = cluster
        .helm(&["template", "sy", &chart(), "--set", "oprator.replicas=2"])
        .await?;
    assert!(!unknown.status.success(), "a misspelt value is refused");
    // Everything rendered is accepted by the API server (a server-side dry run).
    succeeded(
        &cluster
            .kubectl(&["create", "namespace", "shardyard"], None)
            .await?,
    )?;
    succeeded(
        &cluster
            .kubectl(
                &["apply", "--server-side", "--dry-run=server", "-f", "-"],
                Some(&rendered),
            )
            .await?,
    )?;
    Ok(())
}

#[tokio::test]
async fn helm_install_then_each_example_becomes_its_planned_objects() -> anyhow::Result<()> {
    let cluster = KubeCluster::start().await?;
    let nats = NatsServer::start().await?;
    let sim = SimProcess::start(SimArgs {
        guilds: 2500,
        ..SimArgs::default()
    })
    .await?;
    succeeded(
        &cluster
            .helm(&[
                "install",
                "sy",
                &chart(),
                "--namespace",
                "shardyard",
                "--create-namespace",
                // No operator pod runs here to answer for the API: the adapter's own test
                // below points it at a process.
                "--set",
                "metricsAdapter.enabled=false",
            ])
            .await?,
    )
    .with_context(|| cluster.log_report())?;
    let client = cluster.client().await?;
    let operator_deployment: Api<Deployment> = Api::namespaced(client.clone(), "shardyard");
    let deployment = operator_deployment.get("sy-shardyard").await?;
    assert_eq!(deployment.spec.replicas, Some(2));
    succeeded(
        &cluster
            .kubectl(&["get", "crd", "discordbots.shardyard.dev"], None)
            .await?,
    )?;

    // The operator with the chart's ServiceAccount's token, and nothing more.
    let token = succeeded(
        &cluster
            .kubectl(
                &[
                    "create",
                    "token",
                    "sy-shardyard",
                    "-n",
                    "shardyard",
                    "--duration=1h",
                ],
                None,
            )
            .await?,
    )?;
    let kubeconfig = cluster.kubeconfig_with_token("chart-operator", token.trim())?;
    let operator = OperatorProcess::start_with_kubeconfig(
        &kubeconfig,
        "chart-operator",
        &sim.api_base(),
        &[
            "--lease-namespace",
            "shardyard",
            "--lease-name",
            "sy-shardyard",
        ],
    )
    .await?;

    for (example, name) in [("minimal.yaml", "mybot"), ("bot.yaml", "mybot")] {
        let namespace = example.trim_end_matches(".yaml");
        succeeded(
            &cluster
                .kubectl(&["create", "namespace", namespace], None)
                .await?,
        )?;
        cluster
            .token_secret(namespace, "mybot-token", sim.token())
            .await?;
        let text = std::fs::read_to_string(repo_root().join("config/examples").join(example))?
            .replace("nats://nats.nats.svc:4222", &nats.url());
        succeeded(
            &cluster
                .kubectl(
                    &["apply", "--server-side", "-n", namespace, "-f", "-"],
                    Some(&text),
                )
                .await?,
        )?;
        let bots: Api<DiscordBot> = Api::namespaced(client.clone(), namespace);
        eventually(
            Duration::from_secs(60),
            &format!("{example} is Ready"),
            || async {
                let bot = bots.get(name).await?;
                let ready = bot
                    .status
                    .iter()
                    .flat_map(|s| &s.conditions)
                    .find(|c| c.type_ == "Ready")
                    .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()));
                anyhow::ensure!(
                    ready.as_ref().is_some_and(|(s, _, _)| s == "True"),
                    "{ready:?}"
                );
                Ok(())
            },
        )
        .await
        .with_context(|| operator.log_report())?;
        let sets: Api<StatefulSet> = Api::namespaced(client.clone(), namespace);
        let gateway = sets.get(&format!("{name}-gateway-g1")).await?;
        let args = gateway.spec.template.spec.context("a pod spec")?.containers[0]
            .args
            .clone()
            .unwrap_or_default();
        let total = args
            .iter()
            .position(|a| a == "--total")
            .map(|i| args[i + 1].clone());
        assert_eq!(
            total.as_deref(),
            Some("3"),
            "Discord's three shards: {args:?}"
        );
        let listed: Value = serde_json::from_str(&succeeded(
            &cluster
                .kubectl(
                    &[
                        "get",
                        "deployments,services,statefulsets,poddisruptionbudgets,networkpolicies,horizontalpodautoscalers",
                        "-n",
                        namespace,
                        "-l",
                        &format!("shardyard.dev/bot={name}"),
                        "-o",
                        "json",
                    ],
                    None,
                )
                .await?,
        )?)?;
        let mut found: Vec<String> = listed["items"]
            .as_array()
            .context("items")?
            .iter()
            .map(|o| {
                format!(
                    "{}/{}",
                    o["kind"].as_str().unwrap_or(""),
                    o["metadata"]["name"].as_str().unwrap_or("")
                )
            })
            .collect();
        found.sort();
        assert_eq!(
            found,
            [
                format!("Deployment/{name}-cache"),
                format!("Deployment/{name}-rest"),
                format!("Deployment/{name}-worker"),
                format!("HorizontalPodAutoscaler/{name}-worker"),
                format!("NetworkPolicy/{name}-rest"),
                format!("PodDisruptionBudget/{name}-gateway-g1"),
                format!("PodDisruptionBudget/{name}-rest"),
                format!("Service/{name}-cache"),
                format!("Service/{name}-gateway-g1"),
                format!("Service/{name}-rest"),
                format!("StatefulSet/{name}-gateway-g1"),
            ],
            "{example}"
        );
    }
    // The operator never needed more than the chart grants: no "forbidden" in its log.
    assert!(
        !operator.log().contains("forbidden"),
        "{}",
        operator.log_report()
    );
    succeeded(
        &cluster
            .helm(&["uninstall", "sy", "--namespace", "shardyard"])
            .await?,
    )?;
    Ok(())
}

/// With `metricsAdapter.enabled`, the chart registers the operator as the external metrics API
/// with a certificate of its own, and gives its ServiceAccount what the API needs: reading the
/// front proxy's settings and asking SubjectAccessReviews. The operator runs with exactly
/// that token, serving the chart's certificate; the chart's Service is pointed at it (no pod
/// runs here), and the aggregator's answers prove the permissions: a 503 that says no worker
/// has started, not one that says authorization could not be asked.
#[tokio::test]
async fn the_charts_metrics_adapter_answers_the_aggregator_with_the_charts_permissions()
-> anyhow::Result<()> {
    let cluster = KubeCluster::start().await?;
    let nats = NatsServer::start().await?;
    let sim = SimProcess::start(SimArgs::default()).await?;
    succeeded(
        &cluster
            .helm(&[
                "install",
                "sy",
                &chart(),
                "--namespace",
                "shardyard",
                "--create-namespace",
                "--set",
                "metricsAdapter.enabled=true",
            ])
            .await?,
    )
    .with_context(|| cluster.log_report())?;
    let client = cluster.client().await?;
    let secret = Api::<k8s_openapi::api::core::v1::Secret>::namespaced(client.clone(), "shardyard")
        .get("sy-shardyard-metrics-api-tls")
        .await?;
    let data = secret.data.context("the certificate Secret's data")?;
    let file = |key: &str| -> anyhow::Result<String> {
        let path = cluster.dir().join(format!("adapter-{key}"));
        std::fs::write(&path, &data.get(key).with_context(|| key.to_owned())?.0)?;
        Ok(path.to_string_lossy().into_owned())
    };
    let (cert, key) = (file("tls.crt")?, file("tls.key")?);
    // An upgrade keeps the certificate (a new one would break the registration until every
    // operator pod restarted).
    succeeded(
        &cluster
            .helm(&[
                "upgrade",
                "sy",
                &chart(),
                "--namespace",
                "shardyard",
                "--set",
                "metricsAdapter.enabled=true",
            ])
            .await?,
    )?;
    let kept = Api::<k8s_openapi::api::core::v1::Secret>::namespaced(client.clone(), "shardyard")
        .get("sy-shardyard-metrics-api-tls")
        .await?
        .data
        .context("data")?;
    assert_eq!(
        kept.get("tls.crt"),
        data.get("tls.crt"),
        "the same certificate"
    );

    let token = succeeded(
        &cluster
            .kubectl(
                &[
                    "create",
                    "token",
                    "sy-shardyard",
                    "-n",
                    "shardyard",
                    "--duration=1h",
                ],
                None,
            )
            .await?,
    )?;
    let kubeconfig = cluster.kubeconfig_with_token("chart-operator", token.trim())?;
    let host = cluster.host_address();
    let operator = OperatorProcess::start_with_kubeconfig(
        &kubeconfig,
        "chart-operator",
        &sim.api_base(),
        &[
            "--lease-namespace",
            "shardyard",
            "--lease-name",
            "sy-shardyard",
            "--metrics-api-addr",
            &format!("{host}:443"),
            "--metrics-api-cert",
            &cert,
            "--metrics-api-key",
            &key,
        ],
    )
    .await?;
    // The chart's Service, which would select the operator's pods, names this process instead.
    succeeded(
        &cluster
            .kubectl(
                &[
                    "patch",
                    "service",
                    "sy-shardyard-metrics-api",
                    "-n",
                    "shardyard",
                    "--type=merge",
                    "-p",
                    &format!(
                        r#"{{"spec":{{"type":"ExternalName","externalName":"{host}","clusterIP":null,"clusterIPs":null,"selector":null}}}}"#
                    ),
                ],
                None,
            )
            .await?,
    )?;
    cluster
        .wait_external_metrics_available()
        .await
        .with_context(|| operator.log_report())?;

    cluster
        .token_secret("default", "mybot-token", sim.token())
        .await?;
    let manifest = format!(
        "apiVersion: shardyard.dev/v1alpha1\nkind: DiscordBot\nmetadata: {{name: mybot, namespace: default}}\n\
         spec:\n  tokenSecret: {{name: mybot-token}}\n  nats: {{url: '{}'}}\n",
        nats.url()
    );
    succeeded(
        &cluster
            .kubectl(&["apply", "--server-side", "-f", "-"], Some(&manifest))
            .await?,
    )?;
    let path = "/apis/external.metrics.k8s.io/v1beta1/namespaces/default/shardyard_pending_events?labelSelector=bot%3Dmybot";
    eventually(Duration::from_secs(60), "the adapter's answer", || async {
        let out = cluster.kubectl(&["get", "--raw", path], None).await?;
        let said = String::from_utf8_lossy(&out.stderr);
        anyhow::ensure!(
            !out.status.success() && said.contains("no worker has started"),
            "{said}"
        );
        Ok(())
    })
    .await
    .with_context(|| operator.log_report())?;
    assert!(
        !operator.log().contains("forbidden"),
        "{}",
        operator.log_report()
    );
    Ok(())
}
