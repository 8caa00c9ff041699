//! `shardyard cache` as a process, pointed at a [`NatsServer`].

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use anyhow::Context as _;
use serde_json::Value;

use crate::{NatsServer, ProcessGuard, eventually, free_port, shardyard_bin};

/// A running `shardyard cache`, with its HTTP API and admin port on free ports.
#[derive(Debug)]
pub struct CacheProcess {
    process: ProcessGuard,
    listen: SocketAddr,
    admin: SocketAddr,
    http: reqwest::Client,
}

impl CacheProcess {
    /// Starts `shardyard cache --bot BOT --nats NATS --listen … --admin-addr …` with `extra`
    /// flags and waits until `/healthz` answers (not `/readyz`: the cache is not ready while
    /// the event stream does not exist; see [`wait_ready`](Self::wait_ready)).
    ///
    /// # Errors
    /// When the process does not start or never serves `/healthz`.
    pub async fn start(nats: &NatsServer, bot: &str, extra: &[&str]) -> anyhow::Result<Self> {
        crate::install_crypto_provider();
        let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse()?;
        let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse()?;
        let mut command = Command::new(shardyard_bin()?);
        command
            .arg("cache")
            .args(["--bot", bot, "--nats", &nats.url()])
            .args(["--listen", &listen.to_string()])
            .args(["--admin-addr", &admin.to_string()])
            .args(extra)
            .env("RUST_LOG", "info,shardyard_cache=debug");
        let process = ProcessGuard::spawn(format!("cache-{bot}-{}", listen.port()), command)?;
        let cache = Self {
            process,
            listen,
            admin,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()?,
        };
        eventually(Duration::from_secs(30), "cache /healthz", || {
            cache.admin_get("/healthz")
        })
        .await
        .with_context(|| cache.process.log_report())?;
        Ok(cache)
    }

    /// GET on the admin server; the body on 2xx.
    ///
    /// # Errors
    /// On a non-2xx status or no answer.
    pub async fn admin_get(&self, path: &str) -> anyhow::Result<String> {
        crate::admin::admin_get(self.admin, path).await
    }

    /// Waits until `/readyz` answers 200.
    ///
    /// # Errors
    /// When it does not within `timeout`.
    pub async fn wait_ready(&self, timeout: Duration) -> anyhow::Result<()> {
        eventually(timeout, "cache /readyz", || self.admin_get("/readyz"))
            .await
            .with_context(|| self.process.log_report())?;
        Ok(())
    }

    /// The value of the metric series whose line starts with `series` (name and labels as
    /// printed), 0 when absent.
    ///
    /// # Errors
    /// When `/metrics` does not answer.
    pub async fn metric(&self, series: &str) -> anyhow::Result<f64> {
        let text = self.admin_get("/metrics").await?;
        Ok(crate::admin::metric_value(&text, series).unwrap_or(0.0))
    }

    /// GET on the HTTP API: the status and the body as JSON (`Value::Null` when it isn't).
    ///
    /// # Errors
    /// When the API does not answer.
    pub async fn api_get(&self, path: &str) -> anyhow::Result<(u16, Value)> {
        let response = self
            .http
            .get(format!("http://{}{path}", self.listen))
            .send()
            .await?;
        let status = response.status().as_u16();
        let body = response.bytes().await?;
        Ok((status, serde_json::from_slice(&body).unwrap_or(Value::Null)))
    }

    /// Where the HTTP API listens.
    #[must_use]
    pub fn listen_addr(&self) -> SocketAddr {
        self.listen
    }

    /// Where `/healthz`, `/readyz` and `/metrics` are served.
    #[must_use]
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin
    }

    /// The process.
    pub fn process(&mut self) -> &mut ProcessGuard {
        &mut self.process
    }

    /// The log tail, for error messages.
    #[must_use]
    pub fn log_report(&self) -> String {
        self.process.log_report()
    }
}
