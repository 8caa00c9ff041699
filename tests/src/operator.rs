//! `shardyard operator` as a process against a [`KubeCluster`].

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use anyhow::Context as _;

use crate::{KubeCluster, ProcessGuard, eventually, free_port, shardyard_bin};

/// A running `shardyard operator --admin-addr … [--api-base …]` with the cluster's kubeconfig.
#[derive(Debug)]
pub struct OperatorProcess {
    process: ProcessGuard,
    admin: SocketAddr,
    identity: String,
}

impl OperatorProcess {
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
