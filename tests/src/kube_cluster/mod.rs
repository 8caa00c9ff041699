//! A real Kubernetes control plane for tests: [`KubeCluster`] starts etcd, kube-apiserver,
//! kube-controller-manager (every default controller) and kube-scheduler, built from Go modules
//! by `scripts/kube-tools`, in a network namespace of the test's own ([`TestNetns`]), each
//! under a [`ProcessGuard`]. Inside, every component has its usual port; the API server serves
//! on the namespace's address (`https://<inside>:6443`), which is also the address it
//! advertises (a loopback one would be refused for the `kubernetes` Service's endpoints). Tests
//! talk to it with `kube` (the Rust client the operator uses), `kubectl` and `helm`, through the
//! kubeconfig it writes; servers of the test process that the cluster must reach (an aggregated
//! API's backend) listen on [`KubeCluster::host_address`]. [`KubeCluster::start_with_node`] adds a
//! node that runs pods (the real kubelet with containerd, kube-proxy and the cluster DNS; see
//! `node.rs`); [`KubeCluster::start`] has none, and no pod runs.

mod cgroups;
mod dns;
pub mod external_metrics;
mod node;
mod pki;
pub use pki::ServingCertificate;
mod port_forward;
mod tools;
mod workloads;
pub use port_forward::PortForward;
pub use workloads::sim_workload;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use kube::config::{KubeConfigOptions, Kubeconfig};
use tempfile::TempDir;
use tokio::io::AsyncWriteExt as _;

use crate::images::{self, ImageArchive};
use crate::netns::TestNetns;
use crate::{ProcessGuard, eventually};
use node::KubeNode;
use pki::ClusterPki;
pub use pki::FRONT_PROXY_CLIENT;
pub use tools::{COREDNS_IMAGE, KUBE_TOOLS_ENV, PROGRAMS, kube_tools_dir};

/// The Services' virtual IP range (`--service-cluster-ip-range`).
pub const SERVICE_CIDR: &str = "10.0.0.0/24";
/// The Pods' range, which the node IPAM controller hands out per node (`--cluster-cidr`).
pub const CLUSTER_CIDR: &str = "10.244.0.0/16";
/// The service-account token issuer.
pub const SERVICE_ACCOUNT_ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

/// How long the API server may take to answer `/readyz` with 200 before start-up fails.
const API_READY_TIMEOUT: Duration = Duration::from_secs(60);

/// The components' ports inside the namespace: Kubernetes' own defaults.
const ETCD_CLIENT_PORT: u16 = 2379;
const ETCD_PEER_PORT: u16 = 2380;
/// The API server's secure port.
pub const API_PORT: u16 = 6443;
const CONTROLLER_MANAGER_PORT: u16 = 10257;
const SCHEDULER_PORT: u16 = 10259;

/// A running control plane; everything is killed when it is dropped.
#[derive(Debug)]
pub struct KubeCluster {
    /// The node, when started with one: stopped before the control plane.
    node: Option<KubeNode>,
    tools: PathBuf,
    kubeconfig: PathBuf,
    api_ready_after: Duration,
    /// The certificates and keys (files in `dir`).
    pki: ClusterPki,
    // Dropped in reverse start order: the API server's clients before it, it before etcd, and
    // the namespace last.
    scheduler: ProcessGuard,
    controller_manager: ProcessGuard,
    apiserver: ProcessGuard,
    etcd: ProcessGuard,
    /// The certificates, kubeconfigs and etcd's data: removed once the processes are gone.
    dir: TempDir,
    netns: TestNetns,
}

impl KubeCluster {
    /// Starts etcd, the API server (secure port, certificates generated now, RBAC and Node
    /// authorization, service-account tokens, the aggregation layer), and once it is ready the
    /// controller-manager and the scheduler; writes the admin kubeconfig.
    ///
    /// # Errors
    /// When the programs are missing or a component does not start (with its log).
    pub async fn start() -> anyhow::Result<Self> {
        crate::install_crypto_provider();
        let tools = kube_tools_dir()?;
        let started = Instant::now();
        let dir = tempfile::Builder::new()
            .prefix("shardyard-kube-")
            .tempdir()
            .context("a folder for the cluster")?;
        // kubectl's and helm's home (`tool_command`).
        std::fs::create_dir_all(dir.path().join("home"))?;
        let netns = TestNetns::create()?;
        let address = netns.inside();
        let pki = ClusterPki::generate(dir.path(), address, node::NODE_NAME)?;

        let etcd = start_etcd(&netns, &tools, dir.path()).await?;

        let mut apiserver_command = netns.command(tools.join("kube-apiserver"));
        apiserver_args(&mut apiserver_command, &pki, address);
        let apiserver =
            ProcessGuard::spawn(format!("kube-apiserver@{address}"), apiserver_command)?;
        let server = format!("https://{address}:{API_PORT}");
        let kubeconfig = write_kubeconfig(dir.path(), "admin", &server, &pki, &pki.admin)?;
        let client = client_for(&kubeconfig).await?;
        ready_while_alive(
            &apiserver,
            API_READY_TIMEOUT,
            "kube-apiserver /readyz",
            || async {
                let request = http::Request::get("/readyz").body(Vec::new())?;
                client.request_text(request).await?;
                Ok(())
            },
        )
        .await?;
        let api_ready_after = started.elapsed();

        let cm_kubeconfig = write_kubeconfig(
            dir.path(),
            "controller-manager",
            &server,
            &pki,
            &pki.controller_manager,
        )?;
        let mut cm_command = netns.command(tools.join("kube-controller-manager"));
        controller_manager_args(&mut cm_command, &pki, &cm_kubeconfig);
        let controller_manager =
            ProcessGuard::spawn(format!("kube-controller-manager@{address}"), cm_command)?;
        let scheduler_kubeconfig =
            write_kubeconfig(dir.path(), "scheduler", &server, &pki, &pki.scheduler)?;
        let mut scheduler_command = netns.command(tools.join("kube-scheduler"));
        scheduler_args(&mut scheduler_command, &scheduler_kubeconfig);
        let scheduler =
            ProcessGuard::spawn(format!("kube-scheduler@{address}"), scheduler_command)?;

        Ok(Self {
            node: None,
            tools,
            pki,
            dir,
            kubeconfig,
            api_ready_after,
            scheduler,
            controller_manager,
            apiserver,
            etcd,
            netns,
        })
    }

    /// A control plane as [`start`](Self::start) makes it, and a node that runs its pods:
    /// containerd with runc, the kubelet, kube-proxy (nftables), the CNI bridge, and the
    /// cluster DNS (CoreDNS behind `kube-dns`). shardyard's image and the pause image are
    /// imported (pods name them with `imagePullPolicy: Never` or `IfNotPresent`); see
    /// [`shardyard_image`](Self::shardyard_image).
    ///
    /// # Errors
    /// When a component does not start or the Node or the DNS is not Ready in time.
    pub async fn start_with_node() -> anyhow::Result<Self> {
        Self::start_with_node_and(&[]).await
    }

    /// As [`start_with_node`](Self::start_with_node), with more images imported into the node
    /// (nats-server's, say: [`images::nats_image`]).
    ///
    /// # Errors
    /// As [`start_with_node`](Self::start_with_node).
    pub async fn start_with_node_and(extra_images: &[ImageArchive]) -> anyhow::Result<Self> {
        let shardyard = images::shardyard_image()?;
        let pause = images::pause_image()?;
        let mut cluster = Self::start().await?;
        let coredns = ImageArchive {
            path: cluster.tools.join(COREDNS_IMAGE),
            name: images::image_name(&cluster.tools.join(COREDNS_IMAGE))?,
        };
        let client = cluster.client().await?;
        let node = KubeNode::start(
            &cluster.netns,
            &cluster.tools,
            cluster.dir.path(),
            &cluster.pki,
            &client,
            &[&[shardyard, coredns.clone()], extra_images].concat(),
            &pause,
        )
        .await
        .with_context(|| cluster.log_report())?;
        cluster.node = Some(node);
        cluster
            .apply(&dns::manifests(&coredns.name))
            .await
            .context("applying the cluster DNS")?;
        cluster
            .wait_rollout("kube-system", "deployment/coredns")
            .await
            .context("the cluster DNS")?;
        Ok(cluster)
    }

    /// The name pods give shardyard's image on this cluster's node.
    ///
    /// # Errors
    /// When the archive cannot be found or built.
    pub fn shardyard_image(&self) -> anyhow::Result<String> {
        Ok(images::shardyard_image()?.name)
    }

    /// Waits (50 s at most: within [`kubectl`](Self::kubectl)'s minute) until `kubectl rollout
    /// status` says `workload` in `namespace` is rolled out.
    ///
    /// # Errors
    /// When it is not, with the cluster's logs.
    pub async fn wait_rollout(&self, namespace: &str, workload: &str) -> anyhow::Result<()> {
        let output = self
            .kubectl(
                &[
                    "rollout",
                    "status",
                    "-n",
                    namespace,
                    workload,
                    "--timeout=50s",
                ],
                None,
            )
            .await?;
        if output.status.success() {
            return Ok(());
        }
        let pods = self
            .kubectl_report(&["get", "pods", "-A", "-o", "wide"])
            .await;
        let events = self
            .kubectl_report(&["get", "events", "-A", "--sort-by=.lastTimestamp"])
            .await;
        // What its containers said, the last run of a crashing one included.
        let mut logs = String::new();
        for previous in ["--previous=false", "--previous=true"] {
            let said = self
                .kubectl_report(&[
                    "logs",
                    "-n",
                    namespace,
                    workload,
                    "--all-containers",
                    "--tail=40",
                    previous,
                ])
                .await;
            let _ = writeln!(logs, "--- kubectl logs {workload} {previous} ---\n{said}");
        }
        anyhow::bail!(
            "{workload} in {namespace} not rolled out: {}\n{pods}\n{events}\n{logs}\n{}",
            String::from_utf8_lossy(&output.stderr),
            self.log_report()
        )
    }

    /// `kubectl port-forward` to `target` (`pod/NAME`, `svc/NAME`, …) in `namespace`, port
    /// `port`: the forward's local address, for the test process to reach a pod through the API
    /// server and the kubelet, as a user would.
    ///
    /// # Errors
    /// When kubectl does not report the forward within 30 s.
    pub async fn port_forward(
        &self,
        namespace: &str,
        target: &str,
        port: u16,
    ) -> anyhow::Result<PortForward> {
        PortForward::start(self, namespace, target, port).await
    }

    /// The admin kubeconfig (`system:masters`), for `kube`, `kubectl` and `helm`.
    #[must_use]
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// A kubeconfig for the same cluster that authenticates with a bearer `token` (a
    /// ServiceAccount's, from `kubectl create token`): to run something with exactly that
    /// account's permissions.
    ///
    /// # Errors
    /// When it cannot be written.
    pub fn kubeconfig_with_token(&self, name: &str, token: &str) -> anyhow::Result<PathBuf> {
        let path = self.dir.path().join(format!("{name}.kubeconfig"));
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: shardyard-test\n  cluster:\n    \
             server: {}\n    certificate-authority: {}\nusers:\n- name: {name}\n  user:\n    \
             token: {token}\ncontexts:\n- name: {name}\n  context:\n    cluster: shardyard-test\n    \
             user: {name}\ncurrent-context: {name}\n",
            self.server(),
            self.dir.path().join("ca.crt").display(),
        );
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    }

    /// `https://<the namespace's address>:6443`.
    #[must_use]
    pub fn server(&self) -> String {
        format!("https://{}:{API_PORT}", self.netns.inside())
    }

    /// The test process's address on the cluster's network: a server that the cluster must
    /// reach (an `APIService`'s backend, through an ExternalName Service naming this address)
    /// listens here.
    #[must_use]
    pub fn host_address(&self) -> std::net::Ipv4Addr {
        self.netns.outside()
    }

    /// The cluster's network namespace.
    #[must_use]
    pub fn netns(&self) -> &TestNetns {
        &self.netns
    }

    /// From the start of [`start`](Self::start) (certificates included) to the API server's
    /// first 200 on `/readyz`.
    #[must_use]
    pub fn api_ready_after(&self) -> Duration {
        self.api_ready_after
    }

    /// The cluster CA's certificate (PEM): it signed the API server's serving certificate.
    #[must_use]
    pub fn ca_pem(&self) -> &str {
        &self.pki.ca_pem
    }

    /// The certificate and key (PEM files) the API server's aggregation layer presents to an
    /// aggregated API server: to ask one directly, as the aggregator does.
    #[must_use]
    pub fn front_proxy_client(&self) -> (&Path, &Path) {
        (
            &self.pki.front_proxy_client_cert,
            &self.pki.front_proxy_client_key,
        )
    }

    /// A `kube` client with the admin kubeconfig.
    ///
    /// # Errors
    /// When the kubeconfig cannot be read.
    pub async fn client(&self) -> anyhow::Result<kube::Client> {
        client_for(&self.kubeconfig).await
    }

    /// The folder holding the test bed's programs.
    #[must_use]
    pub fn tools(&self) -> &Path {
        &self.tools
    }

    /// A folder for the test's files, removed with the cluster.
    #[must_use]
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `kubectl apply --server-side` of `manifest` (YAML, one or more documents).
    ///
    /// # Errors
    /// When kubectl fails, with what it said.
    pub async fn apply(&self, manifest: &str) -> anyhow::Result<()> {
        succeeded(
            &self
                .kubectl(&["apply", "--server-side", "-f", "-"], Some(manifest))
                .await?,
        )
        .context("kubectl apply")?;
        Ok(())
    }

    /// Applies a CustomResourceDefinition (`manifest`, YAML) server-side and waits until the API
    /// server serves it (`crd/<name>` established).
    ///
    /// # Errors
    /// When the API server refuses it, or it is not established within 30 s.
    pub async fn apply_crd(&self, manifest: &str, name: &str) -> anyhow::Result<()> {
        self.apply(manifest)
            .await
            .with_context(|| format!("applying crd/{name}"))?;
        succeeded(
            &self
                .kubectl(
                    &[
                        "wait",
                        "--for=condition=established",
                        "--timeout=30s",
                        &format!("crd/{name}"),
                    ],
                    None,
                )
                .await?,
        )
        .with_context(|| format!("crd/{name} established"))?;
        Ok(())
    }

    /// Applies the DiscordBot CRD the repository commits (`crds/`).
    ///
    /// # Errors
    /// As [`apply_crd`](Self::apply_crd).
    pub async fn apply_discordbot_crd(&self) -> anyhow::Result<()> {
        let path = crate::repo_root().join("crds/discordbots.shardyard.dev.yaml");
        let manifest = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        self.apply_crd(&manifest, "discordbots.shardyard.dev").await
    }

    /// Registers a server of the external metrics API (`external.metrics.k8s.io/v1beta1`)
    /// listening on the test process's side of the cluster's network at `port`, serving with a
    /// certificate from `ca_pem`, and waits until the aggregator finds it Available. The
    /// `APIService`'s Service is an ExternalName naming that address: the API server's default
    /// routing resolves it to the name and the `APIService`'s port.
    ///
    /// # Errors
    /// When kubectl fails or the API is not Available within 60 s.
    pub async fn register_external_metrics(&self, port: u16, ca_pem: &str) -> anyhow::Result<()> {
        let host = self.host_address();
        let ca_bundle = serde_json::to_value(k8s_openapi::ByteString(ca_pem.as_bytes().to_vec()))?;
        let manifests = format!(
            r#"
apiVersion: v1
kind: Service
metadata: {{name: external-metrics, namespace: default}}
spec:
  type: ExternalName
  externalName: "{host}"
---
apiVersion: apiregistration.k8s.io/v1
kind: APIService
metadata: {{name: v1beta1.external.metrics.k8s.io}}
spec:
  group: external.metrics.k8s.io
  version: v1beta1
  groupPriorityMinimum: 100
  versionPriority: 100
  caBundle: {ca_bundle}
  service: {{name: external-metrics, namespace: default, port: {port}}}
"#
        );
        self.apply(&manifests).await?;
        self.wait_external_metrics_available().await
    }

    /// Waits (60 s at most) until the aggregator finds the external metrics API Available.
    ///
    /// # Errors
    /// When it does not, with the cluster's logs.
    pub async fn wait_external_metrics_available(&self) -> anyhow::Result<()> {
        succeeded(
            &self
                .kubectl(
                    &[
                        "wait",
                        "--for=condition=Available",
                        "--timeout=60s",
                        "apiservice/v1beta1.external.metrics.k8s.io",
                    ],
                    None,
                )
                .await?,
        )
        .with_context(|| self.log_report())?;
        Ok(())
    }

    /// The Secret `name` in `namespace` holding a bot token under `token`, as a user creates it.
    ///
    /// # Errors
    /// When kubectl fails.
    pub async fn token_secret(
        &self,
        namespace: &str,
        name: &str,
        token: &str,
    ) -> anyhow::Result<()> {
        let literal = format!("--from-literal=token={token}");
        succeeded(
            &self
                .kubectl(
                    &[
                        "create", "secret", "generic", name, "-n", namespace, &literal,
                    ],
                    None,
                )
                .await?,
        )?;
        Ok(())
    }

    /// `kubectl ARGS` against this cluster, with `stdin` as its input; its output, whatever its
    /// exit status.
    ///
    /// # Errors
    /// When it cannot be run or does not finish within 60 s.
    pub async fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> anyhow::Result<Output> {
        self.run("kubectl", args, stdin).await
    }

    /// `helm ARGS` against this cluster; its output, whatever its exit status.
    ///
    /// # Errors
    /// When it cannot be run or does not finish within 60 s.
    pub async fn helm(&self, args: &[&str]) -> anyhow::Result<Output> {
        self.run("helm", args, None).await
    }

    /// `kubectl ARGS` against this cluster, not yet started: for what runs beside the test
    /// (`kubectl logs -f`, `kubectl port-forward`). Killed when dropped; output and input are
    /// the caller's to set.
    #[must_use]
    pub fn kubectl_command(&self, args: &[&str]) -> tokio::process::Command {
        self.tool_command("kubectl", args)
    }

    /// `program ARGS` (kubectl or helm) with this cluster's kubeconfig, and a home in the
    /// cluster's folder: helm keeps its cache, config and data there, kubectl its cache.
    fn tool_command(&self, program: &str, args: &[&str]) -> tokio::process::Command {
        let home = self.dir.path().join("home");
        let mut command = tokio::process::Command::new(self.tools.join(program));
        command
            .args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("HOME", &home)
            .env("HELM_CACHE_HOME", home.join("helm-cache"))
            .env("HELM_CONFIG_HOME", home.join("helm-config"))
            .env("HELM_DATA_HOME", home.join("helm-data"))
            .kill_on_drop(true);
        command
    }

    async fn run(
        &self,
        program: &str,
        args: &[&str],
        stdin: Option<&str>,
    ) -> anyhow::Result<Output> {
        let mut command = self.tool_command(program, args);
        command
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command
            .spawn()
            .with_context(|| format!("starting {program}"))?;
        if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
            pipe.write_all(input.as_bytes()).await?;
            drop(pipe);
        }
        tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
            .await
            .with_context(|| format!("{program} {args:?} did not finish within 60 s"))?
            .with_context(|| format!("running {program}"))
    }

    /// What `kubectl ARGS` printed, or what went wrong: for a failing test's report, where
    /// nothing more can fail.
    pub async fn kubectl_report(&self, args: &[&str]) -> String {
        match self.kubectl(args, None).await {
            Ok(output) => format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ),
            Err(e) => format!("kubectl {args:?}: {e:#}"),
        }
    }

    /// Every component's log tail, for a failing test's message.
    #[must_use]
    pub fn log_report(&self) -> String {
        let mut report = String::new();
        let node = self.node.iter().flat_map(KubeNode::processes);
        for process in [
            &self.etcd,
            &self.apiserver,
            &self.controller_manager,
            &self.scheduler,
        ]
        .into_iter()
        .chain(node)
        {
            let _ = writeln!(report, "{}", process.log_report());
        }
        report
    }

    /// The controller-manager's log (which controllers ran, what the HPA controller saw).
    #[must_use]
    pub fn controller_manager_log(&self) -> String {
        self.controller_manager.log()
    }

    /// The API server's log.
    #[must_use]
    pub fn apiserver_log(&self) -> String {
        self.apiserver.log()
    }
}

/// `stdout` of a command that must have succeeded.
///
/// # Errors
/// When it exited with an error, with both of its outputs.
pub fn succeeded(output: &Output) -> anyhow::Result<String> {
    anyhow::ensure!(
        output.status.success(),
        "failed ({}):\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

async fn client_for(kubeconfig: &Path) -> anyhow::Result<kube::Client> {
    let kubeconfig = Kubeconfig::read_from(kubeconfig).context("reading the kubeconfig")?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .context("a kube config from the kubeconfig")?;
    kube::Client::try_from(config).context("a kube client")
}

/// Writes `<dir>/<name>.kubeconfig` for `identity` (its certificate and key beside it).
fn write_kubeconfig(
    dir: &Path,
    name: &str,
    server: &str,
    pki: &ClusterPki,
    identity: &pki::ClientIdentity,
) -> anyhow::Result<PathBuf> {
    let cert = dir.join(format!("{name}.crt"));
    let key = dir.join(format!("{name}.key"));
    std::fs::write(&cert, &identity.cert_pem)?;
    std::fs::write(&key, &identity.key_pem)?;
    let path = dir.join(format!("{name}.kubeconfig"));
    let text = format!(
        "apiVersion: v1\n\
         kind: Config\n\
         clusters:\n\
         - name: shardyard-test\n  cluster:\n    server: {server}\n    certificate-authority: {ca}\n\
         users:\n\
         - name: {name}\n  user:\n    client-certificate: {cert}\n    client-key: {key}\n\
         contexts:\n\
         - name: {name}\n  context:\n    cluster: shardyard-test\n    user: {name}\n    namespace: default\n\
         current-context: {name}\n",
        ca = pki.ca_cert.display(),
        cert = cert.display(),
        key = key.display(),
    );
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

async fn start_etcd(netns: &TestNetns, tools: &Path, dir: &Path) -> anyhow::Result<ProcessGuard> {
    let address = netns.inside();
    // The API server uses the loopback URL; the namespace's address is for the health check.
    let client_urls =
        format!("http://127.0.0.1:{ETCD_CLIENT_PORT},http://{address}:{ETCD_CLIENT_PORT}");
    let peer_url = format!("http://127.0.0.1:{ETCD_PEER_PORT}");
    let mut command = netns.command(tools.join("etcd"));
    command
        .arg(format!("--data-dir={}", dir.join("etcd").display()))
        .arg("--name=default")
        .arg(format!("--listen-client-urls={client_urls}"))
        .arg(format!(
            "--advertise-client-urls=http://127.0.0.1:{ETCD_CLIENT_PORT}"
        ))
        .arg(format!("--listen-peer-urls={peer_url}"))
        .arg(format!("--initial-advertise-peer-urls={peer_url}"))
        .arg(format!("--initial-cluster=default={peer_url}"))
        // A test's cluster lives for a minute: durability across power loss buys nothing.
        .arg("--unsafe-no-fsync")
        .arg("--log-level=warn");
    let etcd = ProcessGuard::spawn(format!("etcd@{address}"), command)?;
    let http = reqwest::Client::new();
    let health = format!("http://{address}:{ETCD_CLIENT_PORT}/health");
    ready_while_alive(&etcd, Duration::from_secs(30), "etcd /health", || async {
        let body = http.get(&health).send().await?.text().await?;
        anyhow::ensure!(body.contains("\"health\":\"true\""), "{body}");
        Ok(())
    })
    .await?;
    Ok(etcd)
}

/// Waits until `check` passes, as [`eventually`] does, but fails at once when `process` exits
/// (a bad flag, a port taken): its log says why.
async fn ready_while_alive<T, F, Fut>(
    process: &ProcessGuard,
    timeout: Duration,
    what: &str,
    check: F,
) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    let pid = process.pid();
    let alive = async {
        while crate::pid_alive(pid) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::select! {
        ready = eventually(timeout, what, check) => {
            ready.with_context(|| process.log_report())
        }
        () = alive => Err(anyhow::anyhow!("{} exited before {what}\n{}", process.name(), process.log_report())),
    }
}

fn apiserver_args(command: &mut Command, pki: &ClusterPki, address: std::net::Ipv4Addr) {
    let path = |p: &Path| p.display().to_string();
    command.args([
        format!("--etcd-servers=http://127.0.0.1:{ETCD_CLIENT_PORT}"),
        // Every address of the namespace (its loopback and its own); the `kubernetes` Service's
        // endpoint is the namespace's address, which Kubernetes accepts (a loopback one it
        // refuses).
        "--bind-address=0.0.0.0".to_owned(),
        format!("--advertise-address={address}"),
        format!("--secure-port={API_PORT}"),
        format!("--tls-cert-file={}", path(&pki.serving_cert)),
        format!("--tls-private-key-file={}", path(&pki.serving_key)),
        format!("--client-ca-file={}", path(&pki.ca_cert)),
        "--authorization-mode=Node,RBAC".to_owned(),
        format!("--service-cluster-ip-range={SERVICE_CIDR}"),
        format!("--service-account-issuer={SERVICE_ACCOUNT_ISSUER}"),
        format!(
            "--service-account-key-file={}",
            path(&pki.service_account_pub)
        ),
        format!(
            "--service-account-signing-key-file={}",
            path(&pki.service_account_key)
        ),
        // The aggregation layer: the API server proxies aggregated APIs (external metrics) to
        // their servers, authenticating as the front proxy with the user in headers.
        format!(
            "--requestheader-client-ca-file={}",
            path(&pki.front_proxy_ca)
        ),
        format!("--requestheader-allowed-names={FRONT_PROXY_CLIENT}"),
        "--requestheader-username-headers=X-Remote-User".to_owned(),
        "--requestheader-group-headers=X-Remote-Group".to_owned(),
        "--requestheader-extra-headers-prefix=X-Remote-Extra-".to_owned(),
        format!(
            "--proxy-client-cert-file={}",
            path(&pki.front_proxy_client_cert)
        ),
        format!(
            "--proxy-client-key-file={}",
            path(&pki.front_proxy_client_key)
        ),
        "--allow-privileged=true".to_owned(),
        "--profiling=false".to_owned(),
        // Toward a node's kubelet (logs, exec, stats): a client certificate the kubelet's
        // webhook authorization accepts, and the node's InternalIP rather than its name, which
        // no DNS here resolves.
        format!(
            "--kubelet-client-certificate={}",
            path(&pki.kubelet_client_cert)
        ),
        format!("--kubelet-client-key={}", path(&pki.kubelet_client_key)),
        "--kubelet-preferred-address-types=InternalIP".to_owned(),
    ]);
}

fn controller_manager_args(command: &mut Command, pki: &ClusterPki, kubeconfig: &Path) {
    let path = |p: &Path| p.display().to_string();
    command.args(component_kubeconfig_args(kubeconfig));
    command.args([
        "--bind-address=127.0.0.1".to_owned(),
        format!("--secure-port={CONTROLLER_MANAGER_PORT}"),
        // Every controller a cluster runs by default, each with its own service account.
        "--controllers=*".to_owned(),
        "--use-service-account-credentials=true".to_owned(),
        format!(
            "--service-account-private-key-file={}",
            path(&pki.service_account_key)
        ),
        format!("--root-ca-file={}", path(&pki.ca_cert)),
        format!("--cluster-signing-cert-file={}", path(&pki.ca_cert)),
        format!("--cluster-signing-key-file={}", path(&pki.ca_key)),
        "--allocate-node-cidrs=true".to_owned(),
        format!("--cluster-cidr={CLUSTER_CIDR}"),
        format!("--service-cluster-ip-range={SERVICE_CIDR}"),
        "--leader-elect=false".to_owned(),
        // Tests wait for the HPA controller: every second instead of every 15.
        "--horizontal-pod-autoscaler-sync-period=1s".to_owned(),
    ]);
}

/// A component's API credentials: for its work, and for checking who calls its own port.
fn component_kubeconfig_args(kubeconfig: &Path) -> [String; 3] {
    let path = kubeconfig.display();
    [
        format!("--kubeconfig={path}"),
        format!("--authentication-kubeconfig={path}"),
        format!("--authorization-kubeconfig={path}"),
    ]
}

fn scheduler_args(command: &mut Command, kubeconfig: &Path) {
    command.args(component_kubeconfig_args(kubeconfig));
    command.args([
        "--bind-address=127.0.0.1".to_owned(),
        format!("--secure-port={SCHEDULER_PORT}"),
        "--leader-elect=false".to_owned(),
    ]);
}
