//! The admin endpoints every long-running shardyard process serves, on their own address so a
//! busy service port never delays a probe:
//!
//! | path | answers |
//! |---|---|
//! | `/healthz` | `200 ok` while the process runs (liveness) |
//! | `/readyz` | `200 ready`, or `503 not ready: <reason>` from [`Status::readiness`] |
//! | `/metrics` | Prometheus text (version 0.0.4) from [`Status::render_metrics`] |
//!
//! A service implements [`Status`] and calls [`spawn`]; [`prom`] holds the lock-free counters,
//! gauges and histograms its metrics are made of.

pub mod prom;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio_util::sync::CancellationToken;

/// What a service reports to its admin endpoints.
pub trait Status: Send + Sync + 'static {
    /// `Ok(())` when the service does its job; otherwise why not, in one line.
    fn readiness(&self) -> Result<(), String>;

    /// Appends the service's metrics in Prometheus text format.
    fn render_metrics(&self, out: &mut String);
}

/// The admin routes over `status`.
pub fn router(status: Arc<dyn Status>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics))
        .with_state(status)
}

/// Binds `addr` and serves [`router`] in a background task until `shutdown` is cancelled.
/// Returns the bound address (useful with port 0).
///
/// # Errors
/// Binding the address failed.
pub async fn spawn(
    addr: SocketAddr,
    status: Arc<dyn Status>,
    shutdown: CancellationToken,
) -> std::io::Result<SocketAddr> {
    spawn_with(addr, status, Router::new(), shutdown).await
}

/// [`spawn`] with a service's own read-only routes beside the admin ones (the operator's
/// queue depth for KEDA).
///
/// # Errors
/// Binding the address failed.
pub async fn spawn_with(
    addr: SocketAddr,
    status: Arc<dyn Status>,
    extra: Router,
    shutdown: CancellationToken,
) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let app = router(status).merge(extra);
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

async fn ready(State(status): State<Arc<dyn Status>>) -> impl IntoResponse {
    match status.readiness() {
        Ok(()) => (StatusCode::OK, "ready\n".to_owned()),
        Err(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {reason}\n"),
        ),
    }
}

async fn metrics(State(status): State<Arc<dyn Status>>) -> impl IntoResponse {
    let mut text = String::with_capacity(4096);
    status.render_metrics(&mut text);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;

    struct Flag(AtomicBool);

    impl Status for Flag {
        fn readiness(&self) -> Result<(), String> {
            if self.0.load(Ordering::Relaxed) {
                Ok(())
            } else {
                Err("waiting for the stream".into())
            }
        }

        fn render_metrics(&self, out: &mut String) {
            prom::header(out, "test_ready", "gauge", "1 when ready.");
            out.push_str(&format!(
                "test_ready {}\n",
                u8::from(self.0.load(Ordering::Relaxed))
            ));
        }
    }

    /// One `GET` over a fresh connection: the status and the whole response (headers and body).
    async fn get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let mut conn = tokio::net::TcpStream::connect(addr).await?;
        conn.write_all(
            format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").as_bytes(),
        )
        .await?;
        let mut response = String::new();
        conn.read_to_string(&mut response).await?;
        let status = response
            .get(9..12)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("not HTTP: {response:?}")))?;
        Ok((status, response))
    }

    #[tokio::test]
    async fn serves_health_readiness_and_metrics_until_shut_down() {
        let flag = Arc::new(Flag(AtomicBool::new(false)));
        let shutdown = CancellationToken::new();
        let addr = spawn(
            "127.0.0.1:0".parse().unwrap(),
            flag.clone(),
            shutdown.clone(),
        )
        .await
        .unwrap();

        assert_eq!(get(addr, "/healthz").await.unwrap().0, 200);
        let (status, body) = get(addr, "/readyz").await.unwrap();
        assert_eq!(status, 503);
        assert!(
            body.ends_with("\r\n\r\nnot ready: waiting for the stream\n"),
            "{body}"
        );
        assert!(
            get(addr, "/metrics")
                .await
                .unwrap()
                .1
                .contains("\ntest_ready 0\n")
        );

        flag.0.store(true, Ordering::Relaxed);
        assert_eq!(get(addr, "/readyz").await.unwrap().0, 200);
        let (status, metrics) = get(addr, "/metrics").await.unwrap();
        assert_eq!(status, 200);
        assert!(
            metrics.contains("content-type: text/plain; version=0.0.4\r\n"),
            "{metrics}"
        );
        assert!(metrics.contains("\ntest_ready 1\n"));

        shutdown.cancel();
        let mut closed = false;
        for _ in 0..50 {
            if get(addr, "/healthz").await.is_err() {
                closed = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert!(closed, "the admin server kept answering after shutdown");
    }
}
