//! The Kubernetes test bed proves itself (issue 13): a real control plane built from Go modules
//! (`scripts/kube-tools`) enforces CEL rules under server-side apply, collects garbage by owner
//! reference, takes `helm install` and `helm uninstall`, scales a Deployment through an HPA on an
//! External metric served through the aggregation layer, and keeps Leases with optimistic
//! concurrency. Each test fails when the thing it proves is missing.

use std::time::Duration;

use anyhow::Context as _;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::Api;
use kube::api::{ApiResource, DeleteParams, DynamicObject, GroupVersionKind, PostParams};
use serde_json::json;
use shardyard_operator::controller::leader::LeaseLock;
use shardyard_tests::kube_cluster::external_metrics::ExternalMetricsServer;
use shardyard_tests::kube_cluster::succeeded;
use shardyard_tests::{KubeCluster, eventually, repo_root};

const WIDGET_CRD: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.testbed.shardyard.dev
spec:
  group: testbed.shardyard.dev
  names: {kind: Widget, plural: widgets, singular: widget}
  scope: Namespaced
  versions:
    - name: v1
      served: true
      storage: true
      schema:
        openAPIV3Schema:
          type: object
          properties:
            spec:
              type: object
              required: [min, max]
              x-kubernetes-validations:
                - rule: "self.min <= self.max"
                  message: "min must not exceed max"
              properties:
                min: {type: integer}
                max: {type: integer}
"#;

fn widget(name: &str, min: i64, max: i64) -> String {
    format!(
        "apiVersion: testbed.shardyard.dev/v1\nkind: Widget\nmetadata:\n  name: {name}\n  \
         namespace: default\nspec:\n  min: {min}\n  max: {max}\n"
    )
}

fn widgets(client: &kube::Client) -> Api<DynamicObject> {
    let resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("testbed.shardyard.dev", "v1", "Widget"),
        "widgets",
    );
    Api::namespaced_with(client.clone(), "default", &resource)
}

/// Applies the Widget CRD server-side and waits until it is established.
async fn widget_crd(cluster: &KubeCluster) -> anyhow::Result<()> {
    cluster
        .apply_crd(WIDGET_CRD, "widgets.testbed.shardyard.dev")
        .await
}

#[tokio::test]
async fn a_cel_rule_refuses_an_invalid_resource_under_server_side_apply() -> anyhow::Result<()> {
    let cluster = KubeCluster::start().await?;
    eprintln!("API server ready after {:?}", cluster.api_ready_after());
    widget_crd(&cluster).await?;

    let valid = cluster
        .kubectl(
            &["apply", "--server-side", "-f", "-"],
            Some(&widget("fine", 1, 3)),
        )
        .await?;
    succeeded(&valid).with_context(|| cluster.log_report())?;
    let invalid = cluster
        .kubectl(
            &["apply", "--server-side", "-f", "-"],
            Some(&widget("upside-down", 5, 2)),
        )
        .await?;
    let stderr = String::from_utf8_lossy(&invalid.stderr);
    assert!(!invalid.status.success(), "the invalid widget was accepted");
    assert!(
        stderr.contains("min must not exceed max"),
        "refused without the rule's message: {stderr}"
    );

    let client = cluster.client().await?;
    let api = widgets(&client);
    let fine = api.get("fine").await?;
    assert_eq!(fine.data["spec"]["max"], 3);
    // Server-side apply recorded kubectl as the manager of the fields it set.
    let managers: Vec<_> = fine
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .map(|m| (m.manager.clone(), m.operation.clone()))
        .collect();
    assert!(
        managers.contains(&(Some("kubectl".to_owned()), Some("Apply".to_owned()))),
        "{managers:?}"
    );
    assert!(api.get_opt("upside-down").await?.is_none());
    Ok(())
}

fn deployment(name: &str, owner: Option<OwnerReference>) -> anyhow::Result<Deployment> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": "default", "ownerReferences": owner.into_iter().collect::<Vec<_>>()},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                // No node runs pods in this test bed: the image is never pulled.
                "spec": {"containers": [{"name": "app", "image": "registry.invalid/app:1"}]},
            },
        },
    }))?)
}

#[tokio::test]
async fn the_garbage_collector_removes_what_a_deleted_custom_resource_owned() -> anyhow::Result<()>
{
    let cluster = KubeCluster::start().await?;
    widget_crd(&cluster).await?;
    let client = cluster.client().await?;
    let owner: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "testbed.shardyard.dev/v1",
        "kind": "Widget",
        "metadata": {"name": "owner", "namespace": "default"},
        "spec": {"min": 1, "max": 2},
    }))?;
    let owner = widgets(&client)
        .create(&PostParams::default(), &owner)
        .await?;
    let reference = OwnerReference {
        api_version: "testbed.shardyard.dev/v1".to_owned(),
        kind: "Widget".to_owned(),
        name: "owner".to_owned(),
        uid: owner.metadata.uid.clone().context("a uid")?,
        controller: Some(true),
        block_owner_deletion: Some(true),
    };
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    deployments
        .create(
            &PostParams::default(),
            &deployment("owned", Some(reference))?,
        )
        .await?;
    deployments
        .create(&PostParams::default(), &deployment("unowned", None)?)
        .await?;

    widgets(&client)
        .delete("owner", &DeleteParams::background())
        .await?;
    eventually(
        Duration::from_secs(60),
        "the garbage collector deletes the owned Deployment",
        || async {
            anyhow::ensure!(deployments.get_opt("owned").await?.is_none(), "still there");
            Ok(())
        },
    )
    .await
    .with_context(|| cluster.log_report())?;
    assert!(
        deployments.get_opt("unowned").await?.is_some(),
        "a Deployment nobody owned was deleted too"
    );
    Ok(())
}

#[tokio::test]
async fn helm_installs_a_chart_and_uninstalls_it() -> anyhow::Result<()> {
    let cluster = KubeCluster::start().await?;
    let chart = repo_root().join("tests/kube/testdata/chart");
    let chart = chart.to_str().context("a UTF-8 path")?;
    succeeded(
        &cluster
            .helm(&[
                "install",
                "checks",
                chart,
                "--namespace",
                "default",
                "--set",
                "greeting=hi",
            ])
            .await?,
    )
    .with_context(|| cluster.log_report())?;

    let client = cluster.client().await?;
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let settings = config_maps.get("checks-settings").await?;
    assert_eq!(
        settings
            .data
            .unwrap_or_default()
            .get("greeting")
            .map(String::as_str),
        Some("hi")
    );
    assert!(deployments.get_opt("checks-app").await?.is_some());
    let listed = succeeded(
        &cluster
            .helm(&["list", "--namespace", "default", "-o", "json"])
            .await?,
    )?;
    let releases: serde_json::Value = serde_json::from_str(&listed)?;
    assert_eq!(releases[0]["name"], "checks", "{listed}");
    assert_eq!(releases[0]["status"], "deployed", "{listed}");

    succeeded(
        &cluster
            .helm(&["uninstall", "checks", "--namespace", "default"])
            .await?,
    )?;
    eventually(
        Duration::from_secs(30),
        "helm's objects are gone",
        || async {
            anyhow::ensure!(
                config_maps.get_opt("checks-settings").await?.is_none(),
                "ConfigMap"
            );
            anyhow::ensure!(
                deployments.get_opt("checks-app").await?.is_none(),
                "Deployment"
            );
            Ok(())
        },
    )
    .await?;
    Ok(())
}

/// The HPA controller reads an External metric through the aggregation layer: the API server
/// proxies `external.metrics.k8s.io` to a server registered by an `APIService`, whose Service is
/// an ExternalName naming the test process's address on the cluster's network (the API
/// server's default routing resolves an ExternalName to that name and the `APIService`'s
/// port), and the Deployment's replicas follow the metric.
#[tokio::test]
async fn an_hpa_on_an_external_metric_scales_a_deployment_through_the_aggregator()
-> anyhow::Result<()> {
    const METRIC: &str = "shardyard_pending_events";
    let cluster = KubeCluster::start().await?;
    let host = cluster.host_address();
    let metrics =
        ExternalMetricsServer::start(host.into(), &["external-metrics.default.svc"]).await?;
    metrics.set(METRIC, 5);
    cluster
        .register_external_metrics(metrics.addr().port(), metrics.ca_pem())
        .await?;
    let hpa = format!(
        r#"
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {{name: workers, namespace: default}}
spec:
  scaleTargetRef: {{apiVersion: apps/v1, kind: Deployment, name: workers}}
  minReplicas: 1
  maxReplicas: 10
  metrics:
    - type: External
      external:
        metric:
          name: {METRIC}
          selector: {{matchLabels: {{bot: testbot, group: default}}}}
        target: {{type: AverageValue, averageValue: "10"}}
  behavior:
    scaleDown: {{stabilizationWindowSeconds: 0}}
"#
    );
    succeeded(
        &cluster
            .kubectl(&["apply", "--server-side", "-f", "-"], Some(&hpa))
            .await?,
    )?;
    let client = cluster.client().await?;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    deployments
        .create(&PostParams::default(), &deployment("workers", None)?)
        .await?;
    let replicas = |want: i32| {
        let deployments = deployments.clone();
        async move {
            let got = deployments.get("workers").await?.spec.replicas.unwrap_or(0);
            anyhow::ensure!(got == want, "{got} replicas, waiting for {want}");
            Ok(())
        }
    };
    // 35 pending at 10 per replica: 4 replicas.
    metrics.set(METRIC, 35);
    eventually(Duration::from_secs(60), "the HPA scales up", || replicas(4))
        .await
        .with_context(|| cluster.controller_manager_log())?;
    metrics.set(METRIC, 3);
    eventually(Duration::from_secs(60), "the HPA scales down", || {
        replicas(1)
    })
    .await
    .with_context(|| cluster.controller_manager_log())?;

    // It was the HPA controller that asked, through the API server's front proxy.
    let asked_by_hpa = metrics.requests().into_iter().any(|r| {
        r.user == "system:serviceaccount:kube-system:horizontal-pod-autoscaler"
            && r.path.contains(&format!("/namespaces/default/{METRIC}"))
            && r.path.contains("labelSelector=")
    });
    assert!(asked_by_hpa, "{:?}", metrics.requests());
    Ok(())
}

#[tokio::test]
async fn a_lease_is_taken_renewed_and_guarded_by_its_resource_version() -> anyhow::Result<()> {
    let cluster = KubeCluster::start().await?;
    let client = cluster.client().await?;
    let leases: Api<Lease> = Api::namespaced(client, "default");
    // The operator's own leader election.
    let a = LeaseLock::new(leases.clone(), "shardyard-operator", "operator-a");
    let b = LeaseLock::new(leases.clone(), "shardyard-operator", "operator-b");

    assert!(a.try_acquire_or_renew().await?);
    let taken = leases.get("shardyard-operator").await?;
    let first_renewal = taken
        .spec
        .clone()
        .and_then(|s| s.renew_time)
        .context("renewed")?;
    // Another candidate cannot take a Lease that is held and fresh.
    assert!(!b.try_acquire_or_renew().await?);

    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert!(a.try_acquire_or_renew().await?);
    let renewed = leases.get("shardyard-operator").await?;
    let spec = renewed.spec.clone().context("a spec")?;
    assert_eq!(spec.holder_identity.as_deref(), Some("operator-a"));
    assert!(spec.renew_time.context("renewed")?.0 > first_renewal.0);
    assert_ne!(
        renewed.metadata.resource_version, taken.metadata.resource_version,
        "the renewal is a new version"
    );

    // A write based on what was read before the renewal is refused: 409 Conflict.
    let mut stale = taken;
    if let Some(spec) = stale.spec.as_mut() {
        spec.holder_identity = Some("operator-b".to_owned());
    }
    match leases
        .replace("shardyard-operator", &PostParams::default(), &stale)
        .await
    {
        Err(kube::Error::Api(e)) => assert_eq!(e.code, 409, "{e:?}"),
        other => panic!("a stale write was not refused: {other:?}"),
    }
    let holder = leases
        .get("shardyard-operator")
        .await?
        .spec
        .and_then(|s| s.holder_identity);
    assert_eq!(holder.as_deref(), Some("operator-a"));
    Ok(())
}
