//! The test cluster's node: the real kubelet, containerd with runc, the CNI bridge and
//! kube-proxy, built from Go modules by `scripts/kube-tools`, running pods from OCI archives
//! imported into containerd (nothing is pulled). What the spike found, and why each setting is
//! here: `tests/README.md`, "The node (issue 17)".
//!
//! The node shares the control plane's network namespace (its address is the Node's
//! InternalIP). Its daemons get a mount namespace of their own (containerd's; the kubelet joins
//! it), so every mount they make (volumes, root file systems, the pods' network namespaces) is
//! gone with them, and a cgroup of their own ([`NodeCgroup`]): the pods' `cgroupRoot`, and where
//! containerd and its shims live, so two test nodes never meet and nothing outlives the test.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use k8s_openapi::api::core::v1::Node;

use super::cgroups::{self, NodeCgroup};
use super::pki::ClusterPki;
use super::{CLUSTER_CIDR, SERVICE_CIDR, ready_while_alive, write_kubeconfig};
use crate::ProcessGuard;
use crate::images::ImageArchive;
use crate::netns::TestNetns;

/// The Node's name (the kubelet's certificate is `system:node:test-node`).
pub(crate) const NODE_NAME: &str = "test-node";
/// The cluster DNS Service's ClusterIP (the kubelet's `clusterDNS`).
pub(crate) const CLUSTER_DNS_IP: &str = "10.0.0.10";
/// The cluster's DNS domain.
pub(crate) const CLUSTER_DOMAIN: &str = "cluster.local";

/// kube-proxy's health port, on the node's address.
const PROXY_HEALTHZ_PORT: u16 = 10256;

/// How long the node may take from its kubelet's start to Ready.
const NODE_READY_TIMEOUT: Duration = Duration::from_secs(90);

/// A running node. Dropped in field order: kube-proxy, the kubelet, containerd, then every
/// process left in its cgroup (shims, containers) is killed and the cgroup removed.
#[derive(Debug)]
pub(crate) struct KubeNode {
    kube_proxy: ProcessGuard,
    kubelet: ProcessGuard,
    containerd: ProcessGuard,
    /// Killed and removed on drop.
    _cgroup: NodeCgroup,
    /// Then the files the node's programs keep in fixed places are removed.
    _files: MachineWideFiles,
}

/// What the node leaves in machine-wide folders, each named apart from another node's: the
/// kubelet's links to its containers' logs (`/var/log/containers`, a path it does not let one
/// change) and libcni's cached results (`/var/lib/cni/results`, under the network's name).
/// containerd's shim sockets (`/run/containerd/s/<hash>`) stay: nothing says whose they are.
#[derive(Debug)]
struct MachineWideFiles {
    pod_logs: PathBuf,
    network: String,
}

impl Drop for MachineWideFiles {
    fn drop(&mut self) {
        for entry in std::fs::read_dir("/var/log/containers")
            .into_iter()
            .flatten()
            .flatten()
        {
            if std::fs::read_link(entry.path()).is_ok_and(|t| t.starts_with(&self.pod_logs)) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        let results = Path::new("/var/lib/cni/results");
        let prefix = format!("{}-", self.network);
        for entry in std::fs::read_dir(results).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(container) = name
                .strip_prefix(&prefix)
                .and_then(|rest| rest.rsplit_once('-'))
                .map(|(id, _)| id.to_owned())
            {
                let _ = std::fs::remove_file(entry.path());
                let _ = std::fs::remove_file(results.join(format!("cni-loopback-{container}-lo")));
            }
        }
    }
}

/// Where the node's files go, under the cluster's folder.
struct NodePaths {
    root: PathBuf,
}

impl NodePaths {
    fn containerd(&self) -> PathBuf {
        self.root.join("containerd")
    }
    fn socket(&self) -> PathBuf {
        self.containerd().join("containerd.sock")
    }
    fn cni_conf(&self) -> PathBuf {
        self.root.join("cni")
    }
    fn kubelet(&self) -> PathBuf {
        self.root.join("kubelet")
    }
    fn pod_logs(&self) -> PathBuf {
        self.root.join("pod-logs")
    }
}

impl KubeNode {
    /// Starts containerd (and imports `images` into it), the kubelet and kube-proxy, and waits
    /// until the Node is Ready.
    pub(crate) async fn start(
        netns: &TestNetns,
        tools: &Path,
        dir: &Path,
        pki: &ClusterPki,
        client: &kube::Client,
        images: &[ImageArchive],
        pause: &ImageArchive,
    ) -> anyhow::Result<Self> {
        let paths = NodePaths {
            root: dir.join("node"),
        };
        for folder in [paths.containerd(), paths.cni_conf(), paths.kubelet()] {
            std::fs::create_dir_all(&folder)
                .with_context(|| format!("creating {}", folder.display()))?;
        }
        set_up_network(netns)?;
        let files = MachineWideFiles {
            pod_logs: paths.pod_logs(),
            network: format!("shardyard-test-{}", netns.name()),
        };
        cgroups::sweep_abandoned();
        let cgroup = NodeCgroup::create(netns.name())?;

        let containerd = start_containerd(netns, tools, &paths, pause, &cgroup).await?;
        let socket = paths.socket();
        for image in images.iter().chain([pause]) {
            import(tools, &socket, image).await?;
        }

        let server = format!("https://{}:{}", netns.inside(), super::API_PORT);
        let kubeconfig = write_kubeconfig(dir, "node", &server, pki, &pki.node)?;
        let config = paths.root.join("kubelet.yaml");
        std::fs::write(&config, kubelet_config(netns, pki, &paths, &cgroup.path()))?;
        // containerd's mount namespace: the kubelet's volume mounts must be where containerd
        // mounts them into containers.
        let mut command = netns.nsenter_with_mounts_of(containerd.pid(), tools.join("kubelet"));
        command
            .arg(format!("--config={}", config.display()))
            .arg(format!("--kubeconfig={}", kubeconfig.display()))
            .arg(format!("--root-dir={}", paths.kubelet().display()))
            .arg(format!("--hostname-override={NODE_NAME}"))
            .arg(format!("--node-ip={}", netns.inside()))
            .arg("--v=1");
        let kubelet = ProcessGuard::spawn(format!("kubelet@{}", netns.inside()), command)?;

        // The CNI configuration takes the pod range the controller-manager gave the Node, as a
        // cluster's network add-on would; containerd picks it up when it appears.
        let nodes: kube::Api<Node> = kube::Api::all(client.clone());
        let pod_cidr = ready_while_alive(
            &kubelet,
            NODE_READY_TIMEOUT,
            "the Node registered with a pod range",
            || async {
                let node = nodes.get(NODE_NAME).await?;
                node.spec.and_then(|s| s.pod_cidr).context("no podCIDR yet")
            },
        )
        .await?;
        std::fs::write(
            paths.cni_conf().join("10-bridge.conflist"),
            cni_config(&files.network, &pod_cidr, &paths),
        )?;
        ready_while_alive(&kubelet, NODE_READY_TIMEOUT, "the Node Ready", || async {
            let node = nodes.get(NODE_NAME).await?;
            let ready = node
                .status
                .and_then(|s| s.conditions)
                .unwrap_or_default()
                .into_iter()
                .find(|c| c.type_ == "Ready")
                .context("no Ready condition yet")?;
            anyhow::ensure!(
                ready.status == "True",
                "Ready {}: {}",
                ready.status,
                ready.message.unwrap_or_default()
            );
            Ok(())
        })
        .await
        .with_context(|| containerd.log_report())?;

        let proxy_kubeconfig = write_kubeconfig(dir, "kube-proxy", &server, pki, &pki.kube_proxy)?;
        let proxy_config = paths.root.join("kube-proxy.yaml");
        std::fs::write(&proxy_config, kube_proxy_config(netns, &proxy_kubeconfig))?;
        let mut command = netns.nsenter(tools.join("kube-proxy"));
        command
            .arg(format!("--config={}", proxy_config.display()))
            .arg("--v=1");
        let kube_proxy = ProcessGuard::spawn(format!("kube-proxy@{}", netns.inside()), command)?;
        let healthz = format!("http://{}:{PROXY_HEALTHZ_PORT}/healthz", netns.inside());
        let http = reqwest::Client::new();
        ready_while_alive(
            &kube_proxy,
            Duration::from_secs(30),
            "kube-proxy /healthz",
            || async {
                http.get(&healthz).send().await?.error_for_status()?;
                Ok(())
            },
        )
        .await?;

        Ok(Self {
            kube_proxy,
            kubelet,
            containerd,
            _cgroup: cgroup,
            _files: files,
        })
    }

    /// The node's processes, for a failing test's report.
    pub(crate) fn processes(&self) -> [&ProcessGuard; 3] {
        [&self.containerd, &self.kubelet, &self.kube_proxy]
    }
}

/// Forwarding and bridged traffic through netfilter (kube-proxy's rules see pod traffic), and a
/// route for ClusterIPs: traffic from the namespace itself to a Service needs one before
/// kube-proxy's rules rewrite it.
fn set_up_network(netns: &TestNetns) -> anyhow::Result<()> {
    netns.sysctl("net.ipv4.ip_forward", "1")?;
    netns.sysctl("net.bridge.bridge-nf-call-iptables", "1")?;
    netns.ip(&[
        "route",
        "replace",
        SERVICE_CIDR,
        "via",
        &netns.outside().to_string(),
    ])
}

async fn start_containerd(
    netns: &TestNetns,
    tools: &Path,
    paths: &NodePaths,
    pause: &ImageArchive,
    cgroup: &NodeCgroup,
) -> anyhow::Result<ProcessGuard> {
    let config = paths.root.join("containerd.toml");
    std::fs::write(&config, containerd_config(tools, paths, &pause.name))?;
    // A mount namespace of its own (mounts stay inside and go with it); the shim is found on
    // PATH.
    let mut command = netns.nsenter("unshare");
    command
        .args(["--mount", "--propagation", "private", "--"])
        .arg(tools.join("containerd"))
        .arg(format!("--config={}", config.display()))
        .env("PATH", path_with(tools));
    let containerd = ProcessGuard::spawn(format!("containerd@{}", netns.inside()), command)?;
    cgroup.adopt_runtime(containerd.pid())?;
    let socket = paths.socket();
    ready_while_alive(
        &containerd,
        Duration::from_secs(30),
        "containerd answers",
        || ctr(tools, &socket, &["version"]),
    )
    .await?;
    Ok(containerd)
}

/// `ctr images import` into the namespace the CRI uses.
async fn import(tools: &Path, socket: &Path, image: &ImageArchive) -> anyhow::Result<()> {
    let archive = image.path.to_str().context("an archive's path")?;
    ctr(
        tools,
        socket,
        &["--namespace=k8s.io", "images", "import", archive],
    )
    .await
    .with_context(|| format!("importing {} ({archive})", image.name))
}

/// `ctr ARGS` against the node's containerd, which must succeed.
async fn ctr(tools: &Path, socket: &Path, args: &[&str]) -> anyhow::Result<()> {
    let output = tokio::process::Command::new(tools.join("ctr"))
        .arg(format!("--address={}", socket.display()))
        .args(args)
        .output()
        .await
        .context("running ctr")?;
    anyhow::ensure!(
        output.status.success(),
        "ctr {args:?}: {}",
        String::from_utf8_lossy(&output.stderr).trim()
    );
    Ok(())
}

fn path_with(dir: &Path) -> String {
    let mut path = dir.display().to_string();
    if let Some(existing) = std::env::var_os("PATH") {
        path.push(':');
        path.push_str(&existing.to_string_lossy());
    }
    path
}

/// containerd's configuration: everything under the node's folder (its state, runc's, the
/// pods' network namespaces), the sandbox image the imported pause image, and two settings the
/// spike needed: `restrict_oom_score_adj` (root here lacks CAP_SYS_RESOURCE, so a pause
/// container's -998 is refused) and cgroupfs. NRI is off: its socket is one fixed path per
/// machine, which a second test node would fight over.
fn containerd_config(tools: &Path, paths: &NodePaths, sandbox_image: &str) -> String {
    let state = paths.containerd();
    format!(
        r#"version = 3
root = "{root}"
state = "{run}"
disabled_plugins = ["io.containerd.nri.v1.nri"]

[grpc]
  address = "{socket}"

[plugins."io.containerd.cri.v1.runtime"]
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.cri.v1.runtime".containerd]
    default_runtime_name = "runc"
    [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc.options]
        BinaryName = "{runc}"
        Root = "{runc_root}"
        SystemdCgroup = false
  [plugins."io.containerd.cri.v1.runtime".cni]
    bin_dirs = ["{cni_bin}"]
    conf_dir = "{cni_conf}"

[plugins."io.containerd.cri.v1.images"]
  [plugins."io.containerd.cri.v1.images".pinned_images]
    sandbox = "{sandbox_image}"
"#,
        root = state.join("root").display(),
        run = state.join("state").display(),
        socket = paths.socket().display(),
        runc = tools.join("runc").display(),
        runc_root = state.join("runc").display(),
        cni_bin = tools.join("cni").display(),
        cni_conf = paths.cni_conf().display(),
    )
}

/// The bridge network: pods on `cni0` with addresses from the Node's pod range, masqueraded
/// when they leave it; hairpin so a pod reaches itself through its Service. containerd runs
/// `loopback` itself.
fn cni_config(network: &str, pod_cidr: &str, paths: &NodePaths) -> String {
    serde_json::json!({
        "cniVersion": "1.0.0",
        "name": network,
        "plugins": [
            {
                "type": "bridge",
                "bridge": "cni0",
                "isGateway": true,
                "ipMasq": true,
                "hairpinMode": true,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": pod_cidr}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": paths.root.join("ipam").display().to_string(),
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": true}},
        ],
    })
    .to_string()
}

/// The kubelet's configuration. `failCgroupV1: false` because this machine is cgroup v1 (the
/// kubelet refuses it otherwise since 1.35); the pods' cgroups under the node's own; webhook
/// authentication and authorization of its API as a real node has; no DNS lookups through the
/// machine's resolver (pods get the cluster's DNS); eviction thresholds a shared disk cannot
/// trip.
fn kubelet_config(
    netns: &TestNetns,
    pki: &ClusterPki,
    paths: &NodePaths,
    cgroup_root: &str,
) -> String {
    let mut text = String::new();
    let _ = write!(
        text,
        r#"apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: {cgroup_root}
containerRuntimeEndpoint: unix://{socket}
failSwapOn: false
address: {address}
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
authentication:
  anonymous: {{enabled: false}}
  webhook: {{enabled: true}}
  x509: {{clientCAFile: {ca}}}
authorization: {{mode: Webhook}}
clusterDomain: {CLUSTER_DOMAIN}
clusterDNS: [{CLUSTER_DNS_IP}]
resolvConf: ""
podLogsDir: {logs}
evictionHard: {{memory.available: 100Mi, nodefs.available: "1%", imagefs.available: "1%", nodefs.inodesFree: "1%"}}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
rotateCertificates: false
serverTLSBootstrap: false
"#,
        socket = paths.socket().display(),
        address = netns.inside(),
        ca = pki.ca_cert.display(),
        logs = paths.pod_logs().display(),
    );
    text
}

/// kube-proxy in nftables mode. `maxPerCore: 0` leaves the machine-wide conntrack table size
/// alone (a namespace cannot set it).
fn kube_proxy_config(netns: &TestNetns, kubeconfig: &Path) -> String {
    format!(
        r#"apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {{kubeconfig: {kubeconfig}}}
mode: nftables
hostnameOverride: {NODE_NAME}
clusterCIDR: {CLUSTER_CIDR}
nodePortAddresses: ["{address}/32"]
healthzBindAddress: {address}:{PROXY_HEALTHZ_PORT}
metricsBindAddress: 127.0.0.1:10249
conntrack: {{maxPerCore: 0}}
"#,
        kubeconfig = kubeconfig.display(),
        address = netns.inside(),
    )
}
