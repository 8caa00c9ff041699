//! Waiting for the signal that ends a service: SIGTERM (Kubernetes) or Ctrl-C.

/// Resolves on SIGTERM or Ctrl-C.
pub(crate) async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => term,
        Err(_) => {
            let _ = ctrl_c.await;
            return;
        }
    };
    // Said by name: "why did my pod stop" is answered by the log's last lines.
    tokio::select! {
        _ = ctrl_c => tracing::info!("SIGINT received: shutting down"),
        _ = term.recv() => tracing::info!("SIGTERM received: shutting down"),
    }
}
