//! `shardyard operator` as a process against a [`KubeCluster`].

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use anyhow::Context as _;

use kube::Api;
use shardyard_operator::DiscordBot;

use crate::{
    KubeCluster, NatsServer, ProcessGuard, SimArgs, SimProcess, eventually, free_port,
    shardyard_bin,
};

/// A running `shardyard operator --admin-addr … [--api-base …]` with the cluster's kubeconfig.
#[derive(Debug)]
pub struct OperatorProcess {
    process: ProcessGuard,
    admin: SocketAddr,
    identity: String,
}

impl OperatorProcess {
    /// Starts the operator as `identity` with its external metrics API on the cluster's host
    /// address (a serving certificate made now), registered with the aggregator and Available.
    /// Returns it, the certificate, and the API's address.
    ///
    /// # Errors
    /// When it does not start or the aggregator does not find it Available.
    pub async fn start_with_metrics_api(
        cluster: &crate::KubeCluster,
        identity: &str,
        api_base: &str,
    ) -> anyhow::Result<(Self, crate::kube_cluster::ServingCertificate, String)> {
        let host = cluster.host_address();
        let port = crate::free_port();
        let certificate = crate::kube_cluster::ServingCertificate::new(&[
            "external-metrics.default.svc".to_owned(),
            host.to_string(),
        ])?;
        let cert = cluster.dir().join("metrics-api.crt");
        let key = cluster.dir().join("metrics-api.key");
        std::fs::write(&cert, &certificate.cert_pem)?;
        std::fs::write(&key, &certificate.key_pem)?;
        let addr = format!("{host}:{port}");
        let operator = Self::start(
            cluster,
            identity,
            api_base,
            &[
                "--metrics-api-addr",
                &addr,
                "--metrics-api-cert",
                cert.to_str().context("a path")?,
                "--metrics-api-key",
                key.to_str().context("a path")?,
            ],
        )
        .await?;
        cluster
            .register_external_metrics(port, &certificate.ca_pem)
            .await
            .with_context(|| operator.log_report())?;
        Ok((operator, certificate, addr))
    }

    /// Starts the operator as `identity`, with `--api-base api_base` (a simulator's), and waits
    /// until its admin server answers.
    ///
    /// # Errors
    /// When it does not start.
    pub async fn start(
        cluster: &KubeCluster,
        identity: &str,
        api_base: &str,
        extra: &[&str],
    ) -> anyhow::Result<Self> {
        Self::start_with_kubeconfig(cluster.kubeconfig(), identity, api_base, extra).await
    }

    /// [`start`](Self::start) with another kubeconfig (a ServiceAccount's, to run with exactly
    /// its permissions).
    ///
    /// # Errors
    /// When it does not start.
    pub async fn start_with_kubeconfig(
        kubeconfig: &std::path::Path,
        identity: &str,
        api_base: &str,
        extra: &[&str],
    ) -> anyhow::Result<Self> {
        let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse()?;
        let mut command = Command::new(shardyard_bin()?);
        command
            .arg("operator")
            .args(["--api-base", api_base])
            .args(["--admin-addr", &admin.to_string()])
            .args(["--identity", identity])
            .args(extra)
            .env("KUBECONFIG", kubeconfig)
            .env("RUST_LOG", "info,shardyard_operator=debug,kube=info");
        let process = ProcessGuard::spawn(format!("operator-{identity}"), command)?;
        let operator = Self {
            process,
            admin,
            identity: identity.to_owned(),
        };
        eventually(Duration::from_secs(30), "operator /healthz", || {
            operator.admin_get("/healthz")
        })
        .await
        .with_context(|| operator.process.log_report())?;
        Ok(operator)
    }

    /// GET on its admin server.
    ///
    /// # Errors
    /// On a non-2xx status or no answer.
    pub async fn admin_get(&self, path: &str) -> anyhow::Result<String> {
        crate::admin::admin_get(self.admin, path).await
    }

    /// A metric's value (0 when absent).
    ///
    /// # Errors
    /// When `/metrics` does not answer.
    pub async fn metric(&self, series: &str) -> anyhow::Result<f64> {
        Ok(crate::admin::metric_value(&self.admin_get("/metrics").await?, series).unwrap_or(0.0))
    }

    /// Whether it holds the leader Lease (`shardyard_operator_leader`).
    ///
    /// # Errors
    /// When `/metrics` does not answer.
    pub async fn leads(&self) -> anyhow::Result<bool> {
        Ok(self.metric("shardyard_operator_leader").await? == 1.0)
    }

    /// Its identity in the Lease.
    #[must_use]
    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// The process.
    pub fn process(&mut self) -> &mut ProcessGuard {
        &mut self.process
    }

    /// Its log tail, for error messages.
    #[must_use]
    pub fn log_report(&self) -> String {
        self.process.log_report()
    }

    /// Its whole log.
    #[must_use]
    pub fn log(&self) -> String {
        self.process.log()
    }
}

/// One pod of a StatefulSet run as a process: the container's `args` and `env` as the pod
/// would get them (the ordinal from `apps.kubernetes.io/pod-index`, Secret keys read from the
/// cluster), with its admin address on a free local port.
#[derive(Debug)]
pub struct PodProcess {
    process: ProcessGuard,
    admin: SocketAddr,
}

impl PodProcess {
    /// GET on its admin server.
    ///
    /// # Errors
    /// On a non-2xx status or no answer.
    pub async fn admin_get(&self, path: &str) -> anyhow::Result<String> {
        crate::admin::admin_get(self.admin, path).await
    }

    /// The process.
    pub fn process(&mut self) -> &mut ProcessGuard {
        &mut self.process
    }
}

/// Starts every pod of the StatefulSet `name` in `namespace` as a local process running the
/// `shardyard` binary with the pod's arguments and environment, and waits until each serves
/// `/healthz`: what the kubelet would start, for tests on a control plane without a node (quicker,
/// and a process can be killed with `-9` where the test wants it; `tests/in_cluster.rs` runs
/// real pods).
///
/// `services` stands in for the cluster's DNS: each `(host:port, local address)` is replaced in
/// the arguments and environment (`mybot-rest.default.svc:8080` → a proxy the test runs).
///
/// # Errors
/// When the StatefulSet, a Secret or a key is missing, or a process does not start.
pub async fn start_pods(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    services: &[(&str, SocketAddr)],
) -> anyhow::Result<Vec<PodProcess>> {
    let resolve = |text: &str| {
        services
            .iter()
            .fold(text.to_owned(), |text, (service, local)| {
                text.replace(service, &local.to_string())
            })
    };
    use k8s_openapi::api::apps::v1::StatefulSet;
    use k8s_openapi::api::core::v1::Secret;
    let sets: kube::Api<StatefulSet> = kube::Api::namespaced(client.clone(), namespace);
    let secrets: kube::Api<Secret> = kube::Api::namespaced(client.clone(), namespace);
    let set = sets
        .get(name)
        .await
        .with_context(|| format!("StatefulSet {name}"))?;
    let replicas = set.spec.replicas.unwrap_or(1);
    let pod = set.spec.template.spec.context("a pod spec")?;
    let container = pod.containers.first().context("a container")?;
    let mut pods = Vec::new();
    for ordinal in 0..replicas {
        let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse()?;
        let mut command = Command::new(shardyard_bin()?);
        command.args(container.args.iter().flatten().map(|a| resolve(a)));
        command
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default());
        for var in container.env.iter().flatten() {
            let value = match (&var.value, &var.value_from) {
                (Some(value), _) => value.clone(),
                (None, Some(from)) => {
                    if let Some(field) = &from.field_ref {
                        anyhow::ensure!(
                            field.field_path.contains("pod-index"),
                            "a field this harness cannot fill: {}",
                            field.field_path
                        );
                        ordinal.to_string()
                    } else if let Some(key) = &from.secret_key_ref {
                        let secret = secrets.get(&key.name).await?;
                        let bytes = secret
                            .data
                            .and_then(|d| d.get(&key.key).cloned())
                            .with_context(|| format!("Secret {} key {}", key.name, key.key))?;
                        String::from_utf8(bytes.0)?
                    } else {
                        anyhow::bail!("an env source this harness cannot fill: {var:?}");
                    }
                }
                (None, None) => String::new(),
            };
            command.env(&var.name, resolve(&value));
        }
        command.env("SHARDYARD_ADMIN_ADDR", admin.to_string());
        command.env("RUST_LOG", "info");
        let process = ProcessGuard::spawn(format!("{name}-{ordinal}"), command)?;
        let pod = PodProcess { process, admin };
        eventually(Duration::from_secs(30), "the pod's /healthz", || {
            pod.admin_get("/healthz")
        })
        .await
        .with_context(|| pod.process.log_report())?;
        pods.push(pod);
    }
    Ok(pods)
}

/// The control plane with the DiscordBot CRD, NATS and the simulator (2,500 guilds: 3 shards),
/// and what the operator tests do with them.
pub struct OperatorBed {
    /// The control plane.
    pub cluster: KubeCluster,
    /// The bots' NATS.
    pub nats: NatsServer,
    /// Discord.
    pub sim: SimProcess,
    /// A client of the cluster, as its admin.
    pub client: kube::Client,
}

impl std::fmt::Debug for OperatorBed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OperatorBed")
            .field("nats", &self.nats.url())
            .field("sim", &self.sim.api_base())
            .finish_non_exhaustive()
    }
}

impl OperatorBed {
    /// Starts them.
    ///
    /// # Errors
    /// When one does not start.
    pub async fn start() -> anyhow::Result<Self> {
        let cluster = KubeCluster::start().await?;
        cluster.apply_discordbot_crd().await?;
        let nats = NatsServer::start().await?;
        let sim = SimProcess::start(SimArgs {
            guilds: 2500,
            ..SimArgs::default()
        })
        .await?;
        let client = cluster.client().await?;
        Ok(Self {
            cluster,
            nats,
            sim,
            client,
        })
    }

    /// An operator as `identity`, Discord being the simulator.
    ///
    /// # Errors
    /// When it does not start.
    pub async fn operator(&self, identity: &str) -> anyhow::Result<OperatorProcess> {
        self.operator_with(identity, &[]).await
    }

    /// [`operator`](Self::operator) with more flags.
    ///
    /// # Errors
    /// When it does not start.
    pub async fn operator_with(
        &self,
        identity: &str,
        extra: &[&str],
    ) -> anyhow::Result<OperatorProcess> {
        OperatorProcess::start(&self.cluster, identity, &self.sim.api_base(), extra).await
    }

    /// The DiscordBot `name` in `default` on the bed's NATS, with `extra` spec lines.
    #[must_use]
    pub fn manifest(&self, name: &str, extra: &str) -> String {
        format!(
            "apiVersion: shardyard.dev/v1alpha1\nkind: DiscordBot\nmetadata: {{name: {name}, namespace: default}}\n\
             spec:\n  tokenSecret: {{name: {name}-token}}\n  intents: [GUILDS, GUILD_MESSAGES]\n  \
             nats: {{url: '{}'}}\n{extra}",
            self.nats.url()
        )
    }

    /// The Secret `<name>-token` holding `token`.
    ///
    /// # Errors
    /// When kubectl fails.
    pub async fn secret(&self, name: &str, token: &str) -> anyhow::Result<()> {
        self.cluster
            .token_secret("default", &format!("{name}-token"), token)
            .await
    }

    /// Wakes the controller for `name` without a spec change: an annotation `poke: <n>`.
    ///
    /// # Errors
    /// When the API server refuses.
    pub async fn poke(&self, name: &str, n: u32) -> anyhow::Result<()> {
        use kube::api::{Patch, PatchParams};
        self.bots()
            .patch(
                name,
                &PatchParams::apply("test-poke"),
                &Patch::Apply(serde_json::json!({
                    "apiVersion": "shardyard.dev/v1alpha1",
                    "kind": "DiscordBot",
                    "metadata": {"annotations": {"poke": n.to_string()}},
                })),
            )
            .await?;
        Ok(())
    }

    /// `kubectl apply --server-side` of `manifest`.
    ///
    /// # Errors
    /// When kubectl fails.
    pub async fn apply(&self, manifest: &str) -> anyhow::Result<()> {
        self.cluster.apply(manifest).await
    }

    /// The DiscordBots of `default`.
    #[must_use]
    pub fn bots(&self) -> Api<DiscordBot> {
        Api::namespaced(self.client.clone(), "default")
    }

    /// Waits until the bot's condition `type_` has `status` and `reason`; the bot then.
    ///
    /// # Errors
    /// When it does not within a minute (with the operator's log).
    pub async fn condition(
        &self,
        name: &str,
        type_: &str,
        status: &str,
        reason: &str,
        operator: &OperatorProcess,
    ) -> anyhow::Result<DiscordBot> {
        let bots = self.bots();
        eventually(
            Duration::from_secs(60),
            &format!("{name}: {type_}={status} ({reason})"),
            || async {
                let bot = bots.get(name).await?;
                let conditions = bot
                    .status
                    .as_ref()
                    .map(|s| s.conditions.clone())
                    .unwrap_or_default();
                let found = conditions.iter().find(|c| c.type_ == type_);
                anyhow::ensure!(
                    found.is_some_and(|c| c.status == status && c.reason == reason),
                    "{conditions:?}"
                );
                Ok(bot)
            },
        )
        .await
        .with_context(|| operator.log_report())
    }
}
