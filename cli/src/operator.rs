//! `shardyard operator`: reconciles DiscordBots into gateways, workers, a REST proxy and a
//! cache. The kubeconfig comes from `KUBECONFIG`, else from inside the cluster.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;
use shardyard_operator::controller::{OperatorConfig, run as run_operator};
use shardyard_operator::metrics_api::MetricsApiConfig;
use shardyard_operator::plan::{
    DEFAULT_API_BASE, DEFAULT_IMAGE, DEFAULT_QUEUE_DEPTH_URL, OperatorDefaults,
};

/// Flags of `shardyard operator`.
#[derive(Debug, Args)]
pub(crate) struct OperatorArgs {
    /// Discord's API base for bots that set no `spec.discord.apiBase`.
    #[arg(long, env = "SHARDYARD_API_BASE", default_value = DEFAULT_API_BASE)]
    api_base: String,
    /// The image of every component a bot gives none for.
    #[arg(long, env = "SHARDYARD_IMAGE", default_value = DEFAULT_IMAGE)]
    image: String,
    /// This operator's admin address as KEDA reaches it (its Service), for the ScaledObjects'
    /// `metrics-api` trigger: `<url>/queue-depth/<namespace>/<bot>`.
    #[arg(long, env = "SHARDYARD_QUEUE_DEPTH_URL", default_value = DEFAULT_QUEUE_DEPTH_URL)]
    queue_depth_url: String,
    /// Serve `/healthz`, `/readyz` and `/metrics` here.
    #[arg(long, env = "SHARDYARD_ADMIN_ADDR")]
    admin_addr: Option<SocketAddr>,
    /// The namespace of the leader Lease (the operator's own).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    lease_namespace: String,
    /// The leader Lease's name.
    #[arg(long, default_value = "shardyard-operator")]
    lease_name: String,
    /// This replica's name in the Lease (the pod's name); by default the host name and process
    /// id.
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Serve the external metrics API (`external.metrics.k8s.io`, for the workers' HPAs) here,
    /// over TLS with `--metrics-api-cert` and `--metrics-api-key`.
    #[arg(long, env = "SHARDYARD_METRICS_API_ADDR", requires_all = ["metrics_api_cert", "metrics_api_key"])]
    metrics_api_addr: Option<SocketAddr>,
    /// The metrics API's serving certificate (PEM), signed by the CA its `APIService` names.
    #[arg(long, env = "SHARDYARD_METRICS_API_CERT")]
    metrics_api_cert: Option<PathBuf>,
    /// Its key (PEM).
    #[arg(long, env = "SHARDYARD_METRICS_API_KEY")]
    metrics_api_key: Option<PathBuf>,
}

pub(crate) fn run(args: OperatorArgs) -> anyhow::Result<()> {
    let OperatorArgs {
        api_base,
        image,
        queue_depth_url,
        admin_addr,
        lease_namespace,
        lease_name,
        identity,
        metrics_api_addr,
        metrics_api_cert,
        metrics_api_key,
    } = args;
    let metrics_api = match (metrics_api_addr, metrics_api_cert, metrics_api_key) {
        (Some(addr), Some(cert), Some(key)) => Some(MetricsApiConfig { addr, cert, key }),
        _ => None,
    };
    let identity = identity.unwrap_or_else(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_else(|_| "operator".to_owned());
        format!("{host}-{}", std::process::id())
    });
    let config = OperatorConfig {
        defaults: OperatorDefaults {
            api_base,
            image,
            queue_depth_url,
        },
        admin_addr,
        lease_namespace,
        lease_name,
        identity,
        metrics_api,
    };
    let runtime = crate::runtime::build(2)?;
    runtime.block_on(async move {
        let shutdown = tokio_util::sync::CancellationToken::new();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            crate::signal::shutdown_signal().await;
            tracing::info!("shutting down");
            stop.cancel();
        });
        run_operator(config, shutdown)
            .await
            .context("running the operator")
    })
}
