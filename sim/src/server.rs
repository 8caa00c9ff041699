//! Serving the simulator: one port for REST (`/api/v10`), the gateway (`/gateway`, `/resume`)
//! and the control API (`/_sim`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::config::SimConfig;
use crate::state::SimState;
use crate::{control, gateway, health, rest, traffic};

/// A simulator serving on a socket.
#[derive(Debug)]
pub struct Simulator {
    state: Arc<SimState>,
    server: JoinHandle<std::io::Result<()>>,
}

impl Simulator {
    /// Binds `addr` and starts serving `config`.
    ///
    /// # Errors
    /// When the address cannot be bound.
    pub async fn bind(addr: SocketAddr, config: SimConfig) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        Self::serve(listener, config)
    }

    /// Serves `config` on an already bound listener.
    ///
    /// # Errors
    /// When the listener's address cannot be read.
    pub fn serve(listener: TcpListener, config: SimConfig) -> std::io::Result<Self> {
        let addr = listener.local_addr()?;
        let state = Arc::new(SimState::new(config, addr));
        for bot in &state.bots {
            tokio::spawn(traffic::run(bot.clone(), state.shutdown.clone()));
        }
        tokio::spawn(prune_sessions(state.clone()));
        let app = router(state.clone());
        let shutdown = state.shutdown.clone();
        let server = tokio::spawn(async move {
            axum::serve(
                listener,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await
        });
        Ok(Self { state, server })
    }

    /// Where it listens.
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        self.state.addr
    }

    /// Its state, for in-process tests.
    #[must_use]
    pub fn state(&self) -> &Arc<SimState> {
        &self.state
    }

    /// Stops serving and closes every connection.
    pub async fn shutdown(self) {
        self.state.shutdown.cancel();
        let _ = self.server.await;
    }

    /// Serves until the server fails or is shut down.
    ///
    /// # Errors
    /// When serving fails.
    pub async fn wait(self) -> std::io::Result<()> {
        match self.server.await {
            Ok(result) => result,
            Err(join) => Err(std::io::Error::other(join)),
        }
    }
}

/// The whole HTTP surface.
pub fn router(state: Arc<SimState>) -> Router {
    Router::new()
        .route("/gateway", get(gateway::gateway))
        .route("/gateway/", get(gateway::gateway))
        .route("/resume", get(gateway::resume))
        .route("/resume/", get(gateway::resume))
        .nest("/api/v10", rest::router())
        .route("/_sim/channels/{id}/messages", get(rest::channel_messages))
        .nest("/_sim/rest", rest::control_router())
        .nest("/_sim", control::router())
        .merge(health::router())
        .with_state(state)
}

async fn prune_sessions(state: Arc<SimState>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            () = state.shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        for bot in &state.bots {
            bot.prune_sessions(state.resume_window());
        }
    }
}
