//! `/healthz` (alive), `/readyz` (every shard READY) and `/metrics`.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use crate::status::GatewayStatus;

/// The admin routes.
pub fn router(status: Arc<GatewayStatus>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics))
        .with_state(status)
}

async fn ready(State(status): State<Arc<GatewayStatus>>) -> impl IntoResponse {
    if status.ready() {
        (StatusCode::OK, "ready\n".to_owned())
    } else {
        let waiting: Vec<String> = status
            .shards
            .iter()
            .filter(|s| s.state() != crate::status::ShardState::Ready)
            .map(|s| format!("shard {} {}", s.id, s.state().name()))
            .collect();
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {}\n", waiting.join(", ")),
        )
    }
}

async fn metrics(State(status): State<Arc<GatewayStatus>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        status.metrics(),
    )
}
