//! `shardyard interactions` as a process, and a stand-in for Discord's side of it: requests
//! signed as Discord signs them.

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use ed25519_dalek::{Signer as _, SigningKey};
use serde_json::Value;

use crate::{NatsServer, ProcessGuard, eventually, free_port, shardyard_bin};

/// An application's key pair, signing requests as Discord does: Ed25519 over the
/// `X-Signature-Timestamp` value followed by the body.
#[derive(Debug, Clone)]
pub struct DiscordSigner {
    key: SigningKey,
}

impl DiscordSigner {
    /// A key pair from a seed byte (tests want several distinct, repeatable keys).
    #[must_use]
    pub fn from_seed(seed: u8) -> Self {
        Self {
            key: SigningKey::from_bytes(&[seed; 32]),
        }
    }

    /// The public key as `--public-key` takes it: 64 hex digits.
    #[must_use]
    pub fn public_key_hex(&self) -> String {
        hex(self.key.verifying_key().as_bytes())
    }

    /// `(X-Signature-Ed25519, X-Signature-Timestamp)` for `body` at `timestamp`.
    #[must_use]
    pub fn sign_at(&self, timestamp: u64, body: &[u8]) -> (String, String) {
        let timestamp = timestamp.to_string();
        let mut message = timestamp.as_bytes().to_vec();
        message.extend_from_slice(body);
        (hex(&self.key.sign(&message).to_bytes()), timestamp)
    }

    /// [`sign_at`](Self::sign_at) now.
    #[must_use]
    pub fn sign(&self, body: &[u8]) -> (String, String) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        self.sign_at(now, body)
    }
}

/// The bot's event stream as the operator (or a gateway) creates it, for tests that run the
/// endpoint without either.
///
/// # Errors
/// When JetStream refuses.
pub async fn create_event_stream(
    nats: &NatsServer,
    bot: &shardyard_protocol::BotKey,
) -> anyhow::Result<async_nats::jetstream::Context> {
    let js = nats.jetstream().await?;
    js.create_stream(async_nats::jetstream::stream::Config {
        name: bot.stream(),
        subjects: vec![bot.events_filter()],
        duplicate_window: Duration::from_secs(300),
        ..Default::default()
    })
    .await?;
    Ok(js)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A running `shardyard interactions` on free ports.
#[derive(Debug)]
pub struct InteractionsProcess {
    process: ProcessGuard,
    listen: SocketAddr,
    admin: SocketAddr,
    http: reqwest::Client,
}

impl InteractionsProcess {
    /// Starts `shardyard interactions --listen … --nats NATS --bot BOT --public-key KEY
    /// --admin-addr …` with `extra` flags and waits until `/healthz` answers.
    ///
    /// # Errors
    /// When the process does not start or never serves `/healthz`.
    pub async fn start(
        nats: &NatsServer,
        bot: &str,
        public_key: &str,
        extra: &[&str],
    ) -> anyhow::Result<Self> {
        Self::start_at(nats, bot, public_key, free_port(), extra).await
    }

    /// [`start`](Self::start) listening on `port` (a restart on the same address).
    ///
    /// # Errors
    /// When the process does not start or never serves `/healthz`.
    pub async fn start_at(
        nats: &NatsServer,
        bot: &str,
        public_key: &str,
        port: u16,
        extra: &[&str],
    ) -> anyhow::Result<Self> {
        crate::install_crypto_provider();
        let listen: SocketAddr = format!("127.0.0.1:{port}").parse()?;
        let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse()?;
        let mut command = Command::new(shardyard_bin()?);
        command
            .arg("interactions")
            .args(["--listen", &listen.to_string()])
            .args(["--nats", &nats.url(), "--bot", bot])
            .args(["--public-key", public_key])
            .args(["--admin-addr", &admin.to_string()])
            .args(extra)
            .env("RUST_LOG", "info,shardyard_interactions=debug");
        let process = ProcessGuard::spawn(format!("interactions-{bot}-{port}"), command)?;
        let endpoint = Self {
            process,
            listen,
            admin,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()?,
        };
        eventually(Duration::from_secs(30), "interactions /healthz", || {
            endpoint.admin_get("/healthz")
        })
        .await
        .with_context(|| endpoint.process.log_report())?;
        Ok(endpoint)
    }

    /// `http://ADDR/interactions`, the URL Discord is given.
    #[must_use]
    pub fn url(&self) -> String {
        format!("http://{}/interactions", self.listen)
    }

    /// The port it listens on.
    #[must_use]
    pub fn port(&self) -> u16 {
        self.listen.port()
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
        eventually(timeout, "interactions /readyz", || {
            self.admin_get("/readyz")
        })
        .await
        .with_context(|| self.process.log_report())?;
        Ok(())
    }

    /// The value of the metric series whose line starts with `series`, 0 when absent.
    ///
    /// # Errors
    /// When `/metrics` does not answer.
    pub async fn metric(&self, series: &str) -> anyhow::Result<f64> {
        let text = self.admin_get("/metrics").await?;
        Ok(crate::admin::metric_value(&text, series).unwrap_or(0.0))
    }

    /// POSTs `body` to `/interactions` with `headers` as they are: the status and the body as
    /// JSON (`Value::Null` when it isn't).
    ///
    /// # Errors
    /// When the endpoint does not answer.
    pub async fn post(
        &self,
        body: &[u8],
        headers: &[(&str, &str)],
    ) -> anyhow::Result<(u16, Value)> {
        let mut request = self
            .http
            .post(self.url())
            .header("content-type", "application/json")
            .body(body.to_vec());
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        let body = response.bytes().await?;
        Ok((status, serde_json::from_slice(&body).unwrap_or(Value::Null)))
    }

    /// POSTs `body` signed by `signer` now, as Discord would.
    ///
    /// # Errors
    /// When the endpoint does not answer.
    pub async fn post_signed(
        &self,
        signer: &DiscordSigner,
        body: &[u8],
    ) -> anyhow::Result<(u16, Value)> {
        let (signature, timestamp) = signer.sign(body);
        self.post(
            body,
            &[
                ("x-signature-ed25519", &signature),
                ("x-signature-timestamp", &timestamp),
            ],
        )
        .await
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
