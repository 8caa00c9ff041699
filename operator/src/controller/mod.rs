//! `shardyard operator`: leader election, then the controller that reconciles every DiscordBot
//! (and is woken by changes to the objects it owns), with `/healthz`, `/readyz` and `/metrics`.

pub mod apply;
pub mod context;
pub mod leader;
pub mod metrics;
pub mod nats;
pub mod reconcile;
pub mod reshard;
pub mod status;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use futures_util::StreamExt as _;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::coordination::v1::Lease;
use kube::runtime::Controller;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{self, reflector};
use kube::runtime::{WatchStreamExt as _, watcher};
use kube::{Api, Client};
use tokio_util::sync::CancellationToken;

use crate::metrics_api::depths::QueueDepths;
use crate::metrics_api::queue_depth_routes;
use crate::plan::OperatorDefaults;
use crate::resource::DiscordBot;
use context::Context;
use leader::LeaseLock;

/// How the operator runs.
#[derive(Debug, Clone)]
pub struct OperatorConfig {
    /// The defaults every plan gets (`--api-base`, `--image`).
    pub defaults: OperatorDefaults,
    /// Where `/healthz`, `/readyz` and `/metrics` are served.
    pub admin_addr: Option<SocketAddr>,
    /// The leader Lease's namespace and name.
    pub lease_namespace: String,
    /// The leader Lease's name.
    pub lease_name: String,
    /// This replica's identity in the Lease (the pod's name).
    pub identity: String,
    /// The external metrics API, when this operator serves it.
    pub metrics_api: Option<crate::metrics_api::MetricsApiConfig>,
}

/// Why the operator stopped.
#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    /// No Kubernetes client (no kubeconfig, not in a cluster).
    #[error("connecting to Kubernetes (KUBECONFIG, or the pod's service account)")]
    Client(#[source] kube::Error),
    /// The admin address could not be bound.
    #[error("binding {addr}")]
    Admin {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// This replica led and lost the Lease: it stops, to start again as a candidate.
    #[error("lost the leader Lease")]
    LostLease,
    /// The external metrics API could not start.
    #[error(transparent)]
    MetricsApi(#[from] crate::metrics_api::MetricsApiError),
    /// No HTTPS client for Discord's API.
    #[error(transparent)]
    Http(#[from] crate::discord::ClientError),
}

/// What `/readyz` and `/metrics` see.
struct Admin {
    context: Arc<Context>,
    /// The API server answered (the Lease was read): a replica that does not lead is ready too,
    /// since it takes over when the leader goes.
    ready: Arc<std::sync::atomic::AtomicBool>,
}

impl shardyard_admin::Status for Admin {
    fn readiness(&self) -> Result<(), String> {
        if self.ready.load(Ordering::Relaxed) {
            Ok(())
        } else {
            Err("the Kubernetes API has not answered yet, or shutting down".to_owned())
        }
    }

    fn render_metrics(&self, out: &mut String) {
        self.context.metrics.render(out);
    }
}

/// Runs until `shutdown`, or until this replica loses the leader Lease.
///
/// # Errors
/// [`OperatorError`].
pub async fn run(config: OperatorConfig, shutdown: CancellationToken) -> Result<(), OperatorError> {
    let client = Client::try_default().await.map_err(OperatorError::Client)?;
    let reporter = Reporter {
        controller: apply::FIELD_MANAGER.to_owned(),
        instance: Some(config.identity.clone()),
    };
    let context = Arc::new(Context::new(
        client.clone(),
        config.defaults.clone(),
        Recorder::new(client.clone(), reporter),
    )?);
    let ready = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Every replica knows the bots, to answer for their queue depth whether it leads or not.
    let (bots, writer) = reflector::store::<DiscordBot>();
    let watched = reflector(
        writer,
        watcher(
            Api::<DiscordBot>::all(client.clone()),
            watcher::Config::default(),
        ),
    )
    .default_backoff()
    .touched_objects();
    tokio::spawn(watched.for_each(|_| async {}));
    let depths = QueueDepths::new(client.clone(), bots, Arc::clone(&context.metrics));
    if let Some(addr) = config.admin_addr {
        let admin = Arc::new(Admin {
            context: Arc::clone(&context),
            ready: Arc::clone(&ready),
        });
        let queue_depth = queue_depth_routes(depths.clone(), Arc::clone(&context.metrics));
        shardyard_admin::spawn_with(addr, admin, queue_depth, shutdown.clone())
            .await
            .map_err(|source| OperatorError::Admin { addr, source })?;
    }
    if let Some(metrics_api) = &config.metrics_api {
        crate::metrics_api::serve(
            metrics_api,
            client.clone(),
            depths,
            Arc::clone(&context.metrics),
            shutdown.clone(),
        )
        .await?;
    }

    let lock = LeaseLock::new(
        Api::<Lease>::namespaced(client.clone(), &config.lease_namespace),
        config.lease_name.clone(),
        config.identity.clone(),
    );
    tracing::info!(identity = %lock.identity(), lease = %config.lease_name, "waiting for the leader Lease");
    let became_ready = Arc::clone(&ready);
    let stop = shutdown.clone();
    tokio::spawn(async move {
        stop.cancelled().await;
        became_ready.store(false, Ordering::Relaxed);
    });
    tokio::select! {
        () = shutdown.cancelled() => return Ok(()),
        () = lock.acquire(|| ready.store(true, Ordering::Relaxed)) => {}
    }
    context.metrics.leading.store(true, Ordering::Relaxed);
    tracing::info!(identity = %lock.identity(), "leading");

    let bots: Api<DiscordBot> = Api::all(client.clone());
    let controller = Controller::new(bots, watcher::Config::default())
        .owns(
            Api::<StatefulSet>::all(client.clone()),
            watcher::Config::default(),
        )
        .owns(
            Api::<Deployment>::all(client.clone()),
            watcher::Config::default(),
        )
        .graceful_shutdown_on(shutdown.clone().cancelled_owned())
        .run(
            reconcile::reconcile,
            reconcile::error_policy,
            Arc::clone(&context),
        )
        .for_each(|result| async move {
            if let Err(error) = result {
                tracing::debug!(%error, "reconcile");
            }
        });
    let outcome = tokio::select! {
        () = controller => Ok(()),
        () = lock.keep() => Err(OperatorError::LostLease),
    };
    context.metrics.leading.store(false, Ordering::Relaxed);
    outcome
}
