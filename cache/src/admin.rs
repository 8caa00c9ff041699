//! `/healthz`, `/readyz` and `/metrics` of the cache service.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio_util::sync::CancellationToken;

use crate::service::CacheStatus;

/// Binds `addr` and serves the admin routes until `shutdown`; the bound address.
///
/// # Errors
/// Binding failed.
pub async fn spawn(
    addr: SocketAddr,
    status: Arc<CacheStatus>,
    shutdown: CancellationToken,
) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics))
        .with_state(status);
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await
        {
            tracing::error!(%error, "the admin server failed");
        }
    });
    Ok(bound)
}

async fn ready(State(status): State<Arc<CacheStatus>>) -> impl IntoResponse {
    match status.readiness() {
        Ok(()) => (StatusCode::OK, "ready\n".to_owned()),
        Err(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {reason}\n"),
        ),
    }
}

async fn metrics(State(status): State<Arc<CacheStatus>>) -> impl IntoResponse {
    let mut text = String::with_capacity(4096);
    status.render_metrics(&mut text);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text)
}
