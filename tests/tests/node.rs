//! The test cluster's node (issue 17): pods of shardyard's image really run on the real kubelet
//! with containerd, reach each other through Services by name (kube-proxy and CoreDNS), and the
//! kubelet's probes, restarts and termination behave as on any cluster.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde_json::{Value, json};
use shardyard_tests::eventually;
use shardyard_tests::kube_cluster::{KubeCluster, sim_workload, succeeded};

const TOKEN: &str = "node-test-token";

async fn get_json(cluster: &KubeCluster, args: &[&str]) -> anyhow::Result<Value> {
    let mut all = args.to_vec();
    all.extend(["-o", "json"]);
    Ok(serde_json::from_str(&succeeded(
        &cluster.kubectl(&all, None).await?,
    )?)?)
}

/// A Deployment `name` of the REST proxy with `upstream` as Discord's API.
fn rest_deployment(image: &str, name: &str, upstream: &str) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}, namespace: default}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      containers:
      - name: rest
        image: {image}
        imagePullPolicy: Never
        args: [rest, --listen, "0.0.0.0:8080", --upstream, "{upstream}", --admin-addr, "0.0.0.0:9090"]
        readinessProbe:
          httpGet: {{path: /readyz, port: 9090}}
          periodSeconds: 1
"#
    )
}

/// `GET /users/@me` through the REST proxy Deployment `name` (reached by port-forward).
async fn get_me_through(cluster: &KubeCluster, name: &str) -> anyhow::Result<Value> {
    let forward = cluster
        .port_forward("default", &format!("deployment/{name}"), 8080)
        .await?;
    let me = reqwest::Client::new()
        .get(format!("{}/api/v10/users/@me", forward.url()))
        .header("Authorization", format!("Bot {TOKEN}"))
        .send()
        .await?
        .error_for_status()
        .context("GET /users/@me through the proxy")?
        .json()
        .await?;
    Ok(me)
}

/// The first `GET /users/@me` through the proxy `name`, tried until the upstream it names can be
/// reached. A pod is ready before the cluster can route to its peers: kube-proxy programs a
/// Service, and CoreDNS serves a headless Service's per-pod names, from the EndpointSlice on
/// their own schedules, and until then the proxy answers 502 (seen in CI). A request that failed
/// that way reached no simulator, so it changes no count the tests compare.
async fn first_get_me_through(cluster: &KubeCluster, name: &str) -> anyhow::Result<Value> {
    eventually(
        Duration::from_secs(30),
        "the proxy reaches its upstream",
        || get_me_through(cluster, name),
    )
    .await
}

/// `/_sim/stats` of the simulator behind `target` (`svc/NAME`, `pod/NAME`), port `port`.
async fn sim_stats(cluster: &KubeCluster, target: &str, port: u16) -> anyhow::Result<Value> {
    let forward = cluster.port_forward("default", target, port).await?;
    Ok(reqwest::Client::new()
        .get(format!("{}/_sim/stats", forward.url()))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?)
}

/// Requests to `/users/@me` the simulator answered, per its stats.
fn users_me_requests(stats: &Value) -> u64 {
    stats["rest"]["requests_by_route"]["GET /users/@me"]
        .as_u64()
        .unwrap_or(0)
}

#[tokio::test]
async fn a_pod_reaches_another_deployments_service_by_name() -> anyhow::Result<()> {
    let cluster = KubeCluster::start_with_node().await?;
    let image = cluster.shardyard_image()?;
    cluster
        .apply(&sim_workload(
            &image,
            "default",
            "sim",
            8080,
            80,
            &["--token", TOKEN, "--guilds", "10"],
        ))
        .await?;
    // The REST proxy names its upstream by the Service's short name: the pod's search domains
    // and the cluster DNS make it sim.default.svc.cluster.local, kube-proxy takes it to the pod.
    cluster
        .apply(&rest_deployment(&image, "rest", "http://sim/api"))
        .await?;
    cluster.wait_rollout("default", "deployment/sim").await?;
    cluster.wait_rollout("default", "deployment/rest").await?;

    let me = first_get_me_through(&cluster, "rest").await?;
    assert_eq!(me["bot"], json!(true), "{me}");
    // The simulator answered it: its own record says so.
    let stats = sim_stats(&cluster, "svc/sim", 80).await?;
    assert_eq!(users_me_requests(&stats), 1, "{}", stats["rest"]);
    Ok(())
}

#[tokio::test]
async fn a_statefulsets_pods_get_their_ordinals_and_see_their_own_names() -> anyhow::Result<()> {
    let cluster = KubeCluster::start_with_node().await?;
    let image = cluster.shardyard_image()?;
    // Each simulator advertises its own stable name (the headless Service's per-pod record),
    // from the pod name the downward API gives it.
    cluster.apply(&format!(
            r#"apiVersion: v1
kind: Service
metadata: {{name: sims, namespace: default}}
spec:
  clusterIP: None
  selector: {{app: sims}}
  ports: [{{port: 8080}}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {{name: sims, namespace: default}}
spec:
  serviceName: sims
  replicas: 2
  podManagementPolicy: Parallel
  selector: {{matchLabels: {{app: sims}}}}
  template:
    metadata: {{labels: {{app: sims}}}}
    spec:
      containers:
      - name: sim
        image: {image}
        imagePullPolicy: Never
        args: [sim, --addr, "0.0.0.0:8080", --token, {TOKEN}, --advertise-url, "http://$(POD_NAME).sims.default.svc.cluster.local:8080"]
        env:
        - name: POD_NAME
          valueFrom: {{fieldRef: {{fieldPath: metadata.name}}}}
        readinessProbe:
          httpGet: {{path: /readyz, port: 8080}}
          periodSeconds: 1
"#
        ),
    )
    .await?;
    // A proxy in front of the second one, by its per-pod name.
    cluster
        .apply(&rest_deployment(
            &image,
            "rest",
            "http://sims-1.sims:8080/api",
        ))
        .await?;
    cluster.wait_rollout("default", "statefulset/sims").await?;
    cluster.wait_rollout("default", "deployment/rest").await?;

    for ordinal in 0..2 {
        let pod = get_json(&cluster, &["get", "pod", &format!("sims-{ordinal}")]).await?;
        assert_eq!(
            pod["metadata"]["labels"]["apps.kubernetes.io/pod-index"],
            json!(ordinal.to_string()),
            "{}",
            pod["metadata"]
        );
        let forward = cluster
            .port_forward("default", &format!("pod/sims-{ordinal}"), 8080)
            .await?;
        let gateway: Value = reqwest::get(format!("{}/api/v10/gateway", forward.url()))
            .await?
            .json()
            .await?;
        assert_eq!(
            gateway["url"],
            json!(format!(
                "ws://sims-{ordinal}.sims.default.svc.cluster.local:8080/gateway"
            )),
            "sims-{ordinal} saw its own name"
        );
    }

    let me = first_get_me_through(&cluster, "rest").await?;
    assert_eq!(me["bot"], json!(true), "{me}");
    assert_eq!(
        users_me_requests(&sim_stats(&cluster, "pod/sims-1", 8080).await?),
        1
    );
    assert_eq!(
        users_me_requests(&sim_stats(&cluster, "pod/sims-0", 8080).await?),
        0,
        "the per-pod name reached that pod alone"
    );
    Ok(())
}

#[tokio::test]
async fn a_pod_failing_its_readiness_probe_stays_out_of_its_services_endpoints()
-> anyhow::Result<()> {
    let cluster = KubeCluster::start_with_node().await?;
    let image = cluster.shardyard_image()?;
    // Two Deployments behind one Service: one probes a path the simulator serves, one a path
    // it does not (404: not ready).
    let web = |name: &str, probe: &str| {
        format!(
            r#"apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}, namespace: default}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: web, variant: {name}}}}}
  template:
    metadata: {{labels: {{app: web, variant: {name}}}}}
    spec:
      containers:
      - name: sim
        image: {image}
        imagePullPolicy: Never
        args: [sim, --addr, "0.0.0.0:8080", --token, {TOKEN}]
        readinessProbe:
          httpGet: {{path: {probe}, port: 8080}}
          periodSeconds: 1
"#
        )
    };
    cluster.apply(&web("ready", "/readyz")).await?;
    cluster.apply(&web("unready", "/no-such-path")).await?;
    cluster
        .apply(
            r#"apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
"#,
        )
        .await?;
    cluster
        .apply(&rest_deployment(&image, "rest", "http://web/api"))
        .await?;
    cluster.wait_rollout("default", "deployment/ready").await?;
    cluster.wait_rollout("default", "deployment/rest").await?;

    let pod_ip = |variant: &'static str| {
        let cluster = &cluster;
        async move {
            let pods = get_json(
                cluster,
                &["get", "pods", "-l", &format!("variant={variant}")],
            )
            .await?;
            pods["items"][0]["status"]["podIP"]
                .as_str()
                .map(str::to_owned)
                .with_context(|| format!("{variant} has no IP yet"))
        }
    };
    let ready_ip = eventually(Duration::from_secs(30), "the ready pod's IP", || {
        pod_ip("ready")
    })
    .await?;
    let unready_ip = eventually(Duration::from_secs(30), "the unready pod's IP", || {
        pod_ip("unready")
    })
    .await?;
    // The unready pod runs, and its probe has failed: it is listed, not ready.
    eventually(Duration::from_secs(30), "the endpoints settle", || async {
        let slices = get_json(
            &cluster,
            &[
                "get",
                "endpointslices",
                "-l",
                "kubernetes.io/service-name=web",
            ],
        )
        .await?;
        let mut ready = Vec::new();
        let mut unready = Vec::new();
        for endpoint in slices["items"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|s| s["endpoints"].as_array().into_iter().flatten())
        {
            let address = endpoint["addresses"][0]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            if endpoint["conditions"]["ready"] == json!(true) {
                ready.push(address);
            } else {
                unready.push(address);
            }
        }
        anyhow::ensure!(
            ready == [ready_ip.clone()] && unready == [unready_ip.clone()],
            "ready {ready:?}, not ready {unready:?}"
        );
        Ok(())
    })
    .await?;

    first_get_me_through(&cluster, "rest").await?;
    let before = users_me_requests(&sim_stats(&cluster, "deployment/ready", 8080).await?);
    // kube-proxy sends the Service's traffic to the ready pod alone.
    for _ in 0..5 {
        get_me_through(&cluster, "rest").await?;
    }
    let ready_stats = sim_stats(&cluster, "deployment/ready", 8080).await?;
    let unready_stats = sim_stats(&cluster, "deployment/unready", 8080).await?;
    assert_eq!(users_me_requests(&ready_stats), before + 5);
    assert!(
        before >= 1,
        "the request that found a backend reached the ready pod"
    );
    assert_eq!(users_me_requests(&unready_stats), 0);
    Ok(())
}

/// `kubectl logs -f` of `pod`, collected until the container ends.
fn follow_logs(cluster: &KubeCluster, pod: &str) -> tokio::task::JoinHandle<String> {
    let mut command = cluster.kubectl_command(&["logs", "-f", "-n", "default", pod]);
    tokio::spawn(async move {
        match tokio::time::timeout(Duration::from_secs(90), command.output()).await {
            Ok(Ok(output)) => String::from_utf8_lossy(&output.stdout).into_owned(),
            Ok(Err(e)) => format!("kubectl logs failed: {e}"),
            Err(_) => "kubectl logs did not end".to_owned(),
        }
    })
}

/// A bare pod `name` of the simulator with a grace period of `grace` seconds and a preStop
/// hook, if given (the YAML of its handler).
fn sim_pod(image: &str, name: &str, grace: u32, pre_stop: Option<&str>) -> String {
    let hook = pre_stop.map_or(String::new(), |handler| {
        format!("    lifecycle: {{preStop: {handler}}}\n")
    });
    format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: default}}
spec:
  terminationGracePeriodSeconds: {grace}
  containers:
  - name: sim
    image: {image}
    imagePullPolicy: Never
    args: [sim, --addr, "0.0.0.0:8080", --token, {TOKEN}]
{hook}    readinessProbe:
      httpGet: {{path: /readyz, port: 8080}}
      periodSeconds: 1
"#
    )
}

/// Deletes `pod` and waits until it is gone; how long that took.
async fn delete_timed(cluster: &KubeCluster, pod: &str) -> anyhow::Result<Duration> {
    let started = Instant::now();
    succeeded(
        &cluster
            .kubectl(
                &["delete", "pod", pod, "--wait=true", "--timeout=60s"],
                None,
            )
            .await?,
    )?;
    Ok(started.elapsed())
}

#[tokio::test]
async fn deleting_a_pod_sends_sigterm_and_honours_the_grace_period() -> anyhow::Result<()> {
    let cluster = KubeCluster::start_with_node().await?;
    let image = cluster.shardyard_image()?;
    // prompt: stops on SIGTERM at once. waits: a preStop hook of 4 s, after which SIGTERM
    // comes. hooked: a preStop hook that never ends (`shardyard pause`, run in the container),
    // so only the grace period of 3 s ends it.
    let forever = "{exec: {command: [/usr/local/bin/shardyard, pause]}}";
    for (pod, grace, pre_stop) in [
        ("prompt", 30, None),
        ("waits", 30, Some("{sleep: {seconds: 4}}")),
        ("hooked", 3, Some(forever)),
    ] {
        cluster
            .apply(&sim_pod(&image, pod, grace, pre_stop))
            .await?;
    }
    for pod in ["prompt", "hooked", "waits"] {
        succeeded(
            &cluster
                .kubectl(
                    &[
                        "wait",
                        "--for=condition=Ready",
                        "--timeout=60s",
                        &format!("pod/{pod}"),
                    ],
                    None,
                )
                .await?,
        )?;
    }

    let logs = follow_logs(&cluster, "prompt");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let took = delete_timed(&cluster, "prompt").await?;
    let said = logs.await?;
    assert!(said.contains("SIGTERM received"), "{said}");
    assert!(took < Duration::from_secs(15), "prompt took {took:?}");

    // The hook runs first; SIGTERM follows it, within the grace period.
    let took = delete_timed(&cluster, "waits").await?;
    assert!(
        took >= Duration::from_secs(4) && took < Duration::from_secs(20),
        "waits took {took:?}"
    );

    // The grace period bounds the hook: the kubelet stops the pod after 3 s (and the 2 s it
    // grants a hook that overruns), although the hook never ends.
    let took = delete_timed(&cluster, "hooked").await?;
    assert!(
        took >= Duration::from_secs(3) && took < Duration::from_secs(20),
        "hooked took {took:?}"
    );
    Ok(())
}

#[tokio::test]
async fn a_container_that_exits_is_restarted() -> anyhow::Result<()> {
    let cluster = KubeCluster::start_with_node().await?;
    let image = cluster.shardyard_image()?;
    // An address that does not parse: the simulator exits with clap's status 2.
    cluster
        .apply(&format!(
            r#"apiVersion: v1
kind: Pod
metadata: {{name: exits, namespace: default}}
spec:
  restartPolicy: Always
  containers:
  - name: sim
    image: {image}
    imagePullPolicy: Never
    args: [sim, --addr, "not-an-address"]
"#
        ))
        .await?;
    eventually(Duration::from_secs(60), "restarted twice", || async {
        let pod = get_json(&cluster, &["get", "pod", "exits"]).await?;
        let status = &pod["status"]["containerStatuses"][0];
        anyhow::ensure!(status["restartCount"].as_u64() >= Some(2), "{}", status);
        assert_eq!(
            status["lastState"]["terminated"]["exitCode"],
            json!(2),
            "{status}"
        );
        Ok(())
    })
    .await?;
    Ok(())
}
