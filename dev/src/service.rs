//! A Service's address on 127.0.0.1, as kube-proxy makes one: a TCP listener that spreads
//! connections over the ready processes behind it, round robin. A Service with none ready
//! refuses (the connection is closed at once), as a ClusterIP without endpoints does.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// How long a connection to a backend may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// The ready backends of a Service port; the reconcile loop keeps it current.
#[derive(Debug, Clone, Default)]
pub struct Endpoints(Arc<RwLock<Vec<SocketAddr>>>);

impl Endpoints {
    /// Replaces the backends.
    pub fn set(&self, backends: Vec<SocketAddr>) {
        if let Ok(mut current) = self.0.write() {
            *current = backends;
        }
    }

    /// The backends now.
    #[must_use]
    pub fn get(&self) -> Vec<SocketAddr> {
        self.0.read().map(|b| b.clone()).unwrap_or_default()
    }
}

/// Serves `listener` until `shutdown`: each connection goes to the next ready backend.
pub fn spawn(listener: TcpListener, endpoints: Endpoints, shutdown: CancellationToken) {
    let next = Arc::new(AtomicUsize::new(0));
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                () = shutdown.cancelled() => return,
            };
            let Ok((client, _)) = accepted else {
                continue;
            };
            let backends = endpoints.get();
            if backends.is_empty() {
                continue;
            }
            let first = next.fetch_add(1, Ordering::Relaxed);
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                // A backend that refuses (it just stopped) is skipped for the next one.
                for i in 0..backends.len() {
                    let backend = backends[(first + i) % backends.len()];
                    let Ok(Ok(upstream)) =
                        tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(backend)).await
                    else {
                        continue;
                    };
                    relay(client, upstream, shutdown).await;
                    return;
                }
            });
        }
    });
}

async fn relay(mut client: TcpStream, mut upstream: TcpStream, shutdown: CancellationToken) {
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {}
        () = shutdown.cancelled() => {}
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;

    async fn echo_server(tag: u8) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 1];
                    if socket.read_exact(&mut buf).await.is_ok() {
                        let _ = socket.write_all(&[tag, buf[0]]).await;
                    }
                });
            }
        });
        addr
    }

    async fn ask(addr: SocketAddr) -> Option<[u8; 2]> {
        let mut socket = TcpStream::connect(addr).await.ok()?;
        socket.write_all(&[7]).await.ok()?;
        let mut answer = [0u8; 2];
        socket.read_exact(&mut answer).await.ok()?;
        Some(answer)
    }

    #[tokio::test]
    async fn connections_are_spread_over_the_ready_backends_and_refused_without_any() {
        let (a, b) = (echo_server(1).await, echo_server(2).await);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let service = listener.local_addr().unwrap();
        let endpoints = Endpoints::default();
        let shutdown = CancellationToken::new();
        spawn(listener, endpoints.clone(), shutdown.clone());

        assert_eq!(ask(service).await, None, "no backend: refused");
        endpoints.set(vec![a, b]);
        let mut seen = Vec::new();
        for _ in 0..4 {
            seen.push(ask(service).await.unwrap()[0]);
        }
        seen.sort_unstable();
        assert_eq!(seen, [1, 1, 2, 2]);

        // A backend that went away is skipped.
        let gone = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap();
        endpoints.set(vec![gone, b]);
        for _ in 0..3 {
            assert_eq!(ask(service).await, Some([2, 7]));
        }
        shutdown.cancel();
    }
}
