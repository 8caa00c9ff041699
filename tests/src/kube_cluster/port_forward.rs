//! `kubectl port-forward`, as a user reaches a pod from outside the cluster: through the API
//! server, the kubelet and containerd's streaming server into the pod's network namespace.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context as _;
use tokio::io::{AsyncBufReadExt as _, BufReader};

use super::KubeCluster;

/// A running `kubectl port-forward`; stopped when dropped.
#[derive(Debug)]
pub struct PortForward {
    local: SocketAddr,
    _child: tokio::process::Child,
}

impl PortForward {
    pub(super) async fn start(
        cluster: &KubeCluster,
        namespace: &str,
        target: &str,
        port: u16,
    ) -> anyhow::Result<Self> {
        let port = format!(":{port}");
        let mut child = cluster
            .kubectl_command(&[
                "port-forward",
                "--address=127.0.0.1",
                "-n",
                namespace,
                target,
                &port,
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting kubectl port-forward")?;
        let stdout = child.stdout.take().context("kubectl's stdout")?;
        let mut stderr = child.stderr.take().context("kubectl's stderr")?;
        let mut lines = BufReader::new(stdout).lines();
        // "Forwarding from 127.0.0.1:41233 -> 8080"
        let local = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(line) = lines.next_line().await? {
                if let Some(address) = line
                    .strip_prefix("Forwarding from ")
                    .and_then(|rest| rest.split(" -> ").next())
                {
                    return address
                        .parse::<SocketAddr>()
                        .with_context(|| format!("kubectl said {line:?}"));
                }
            }
            let mut said = String::new();
            tokio::io::AsyncReadExt::read_to_string(&mut stderr, &mut said).await?;
            anyhow::bail!("kubectl port-forward {target} ended: {said}")
        })
        .await
        .with_context(|| format!("kubectl port-forward {target} did not start within 30 s"))??;
        // It prints a line per connection: keep reading, so it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        tokio::spawn(async move {
            let mut sink = tokio::io::sink();
            let _ = tokio::io::copy(&mut stderr, &mut sink).await;
        });
        Ok(Self {
            local,
            _child: child,
        })
    }

    /// The local address that reaches the pod's port.
    #[must_use]
    pub fn local(&self) -> SocketAddr {
        self.local
    }

    /// `http://<local address>`.
    #[must_use]
    pub fn url(&self) -> String {
        format!("http://{}", self.local)
    }
}
