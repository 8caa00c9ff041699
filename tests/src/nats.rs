//! A real nats-server with JetStream, private to one test: [`NatsServer`].

use std::fs::File;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use tempfile::TempDir;

use crate::bin::nats_server_bin;
use crate::ports::free_port;
use crate::process::{ProcessGuard, log_file_path, tail};

/// How [`NatsServer::start_with`] runs the server.
#[derive(Debug, Clone)]
pub struct NatsConfig {
    /// The binary; `None` finds it like [`crate::nats_server_bin`].
    pub bin: Option<PathBuf>,
    /// Extra command-line arguments (e.g. `["--max_payload", "2MB"]`).
    pub extra_args: Vec<String>,
    /// How long a (re)start may take until JetStream answers.
    pub startup_timeout: Duration,
    /// How long a graceful [`NatsServer::stop`] waits after SIGTERM before SIGKILL.
    pub stop_grace: Duration,
    /// Require TLS from clients, with this certificate (see [`TestCertificates`]).
    pub tls: Option<TestCertificates>,
}

/// A CA and a server certificate for `127.0.0.1` and `localhost` signed by it, as PEM files in
/// a directory of their own: for a nats-server that requires TLS. Clients trust `ca` (a
/// process started with `SSL_CERT_FILE` pointing at it does).
#[derive(Debug, Clone)]
pub struct TestCertificates {
    /// The CA's certificate.
    pub ca: PathBuf,
    /// The server's certificate.
    pub cert: PathBuf,
    /// The server's private key.
    pub key: PathBuf,
    _dir: std::sync::Arc<TempDir>,
}

impl TestCertificates {
    /// Generates a fresh CA and server certificate.
    ///
    /// # Errors
    /// When generating or writing them fails.
    pub fn generate() -> anyhow::Result<Self> {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "shardyard test CA");
        let ca_key = KeyPair::generate()?;
        let ca = ca_params.self_signed(&ca_key)?;
        let server_params =
            CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])?;
        let server_key = KeyPair::generate()?;
        let server = server_params.signed_by(&server_key, &ca, &ca_key)?;
        let dir = tempfile::Builder::new()
            .prefix("shardyard-tls-")
            .tempdir()
            .context("cannot create a directory for certificates")?;
        let write = |name: &str, pem: String| -> anyhow::Result<PathBuf> {
            let path = dir.path().join(name);
            std::fs::write(&path, pem).with_context(|| format!("cannot write {name}"))?;
            Ok(path)
        };
        Ok(Self {
            ca: write("ca.pem", ca.pem())?,
            cert: write("server.pem", server.pem())?,
            key: write("server-key.pem", server_key.serialize_pem())?,
            _dir: std::sync::Arc::new(dir),
        })
    }
}

impl Default for NatsConfig {
    fn default() -> Self {
        Self {
            bin: None,
            extra_args: Vec::new(),
            startup_timeout: Duration::from_secs(30),
            stop_grace: Duration::from_secs(10),
            tls: None,
        }
    }
}

/// A nats-server with JetStream on 127.0.0.1, with its own free ports and its own store
/// directory, killed (process group and all) when dropped.
///
/// It can be stopped and started again on the same port and store, to test clients through a
/// NATS outage. All runs append to one log file ([`log_path`](Self::log_path)).
#[derive(Debug)]
pub struct NatsServer {
    // Dropped first: the server dies before its store is deleted.
    process: Option<ProcessGuard>,
    config: NatsConfig,
    bin: PathBuf,
    port: u16,
    monitor_port: u16,
    starts: u32,
    store: TempDir,
    log_path: PathBuf,
    _log_dir: Option<TempDir>,
    http: reqwest::Client,
}

impl NatsServer {
    /// Starts a nats-server with JetStream and waits until JetStream answers.
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with(NatsConfig::default()).await
    }

    /// [`start`](Self::start) with options.
    pub async fn start_with(config: NatsConfig) -> anyhow::Result<Self> {
        crate::install_crypto_provider();
        let bin = match &config.bin {
            Some(bin) => bin.clone(),
            None => nats_server_bin()?,
        };
        let store = tempfile::Builder::new()
            .prefix("shardyard-nats-store-")
            .tempdir()
            .context("cannot create the nats-server store directory")?;
        let (log_dir, log_path) = log_file_path("nats-server")?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .context("cannot build an HTTP client")?;
        let mut server = Self {
            process: None,
            config,
            bin,
            port: 0,
            monitor_port: 0,
            starts: 0,
            store,
            log_path,
            _log_dir: log_dir,
            http,
        };
        // Another process can take a free port before the server binds it: retry on new ports.
        let mut attempt = 1;
        loop {
            server.port = free_port();
            server.monitor_port = free_port();
            match server.launch().await {
                Ok(()) => return Ok(server),
                Err(e) if attempt < 3 && server.port_clash() => {
                    eprintln!("shardyard-tests: nats-server port clash, retrying: {e:#}");
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The client URL, `nats://127.0.0.1:PORT` (`tls://` when the server requires TLS).
    pub fn url(&self) -> String {
        let scheme = if self.config.tls.is_some() {
            "tls"
        } else {
            "nats"
        };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// The certificates, when the server requires TLS.
    pub fn tls(&self) -> Option<&TestCertificates> {
        self.config.tls.as_ref()
    }

    /// The client port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The HTTP monitoring port (`/varz`, `/jsz`, `/healthz`, …).
    pub fn monitor_port(&self) -> u16 {
        self.monitor_port
    }

    /// The monitoring base URL, `http://127.0.0.1:MONITOR_PORT`.
    pub fn monitor_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.monitor_port)
    }

    /// The JetStream store directory (`-sd`); it survives [`restart`](Self::restart).
    pub fn store_dir(&self) -> &Path {
        self.store.path()
    }

    /// The server's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(ProcessGuard::pid)
    }

    /// Whether the server process is running.
    pub fn is_running(&mut self) -> bool {
        self.process.as_mut().is_some_and(ProcessGuard::is_running)
    }

    /// The log file of every run of this server.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The last `lines` lines of the server's log, across restarts.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read(&self.log_path)
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_default();
        tail(&text, lines)
    }

    /// A new client connection.
    pub async fn connect(&self) -> anyhow::Result<async_nats::Client> {
        self.client_options(Duration::from_secs(5))
            .connect(self.url())
            .await
            .with_context(|| format!("cannot connect to nats-server at {}", self.url()))
    }

    /// A client's options for this server: its CA trusted when it requires TLS.
    fn client_options(&self, timeout: Duration) -> async_nats::ConnectOptions {
        let options = async_nats::ConnectOptions::new().connection_timeout(timeout);
        match &self.config.tls {
            Some(tls) => options
                .require_tls(true)
                .add_root_certificates(tls.ca.clone()),
            None => options,
        }
    }

    /// A JetStream context on a new client connection.
    pub async fn jetstream(&self) -> anyhow::Result<async_nats::jetstream::Context> {
        Ok(async_nats::jetstream::new(self.connect().await?))
    }

    /// GETs a monitoring endpoint (e.g. `/jsz?consumers=true`) as JSON.
    pub async fn monitor_json(&self, path: &str) -> anyhow::Result<serde_json::Value> {
        let url = format!("{}/{}", self.monitor_url(), path.trim_start_matches('/'));
        let response = self
            .http
            .get(&url)
            .send()
            .await
            .with_context(|| format!("GET {url}"))?;
        let status = response.status();
        let body = response
            .text()
            .await
            .with_context(|| format!("GET {url}"))?;
        if !status.is_success() {
            bail!("GET {url}: {status}: {body}");
        }
        serde_json::from_str(&body).with_context(|| format!("GET {url}: not JSON: {body}"))
    }

    /// Graceful stop: SIGTERM, SIGKILL after the grace period. The store is kept.
    /// Does nothing if the server is not running.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        if let Some(mut process) = self.process.take() {
            process.terminate(self.config.stop_grace).await?;
        }
        Ok(())
    }

    /// Crash: SIGKILL, no clean shutdown. The store is kept.
    pub fn kill_9(&mut self) -> anyhow::Result<()> {
        if let Some(mut process) = self.process.take() {
            process.kill_9()?;
        }
        Ok(())
    }

    /// Starts the server again after [`stop`](Self::stop) or [`kill_9`](Self::kill_9), on the
    /// same ports and store, and waits until JetStream answers (streams recovered).
    pub async fn start_again(&mut self) -> anyhow::Result<()> {
        if self.is_running() {
            bail!("nats-server on port {} is already running", self.port);
        }
        self.process = None;
        self.launch().await.with_context(|| {
            format!(
                "cannot start nats-server again on port {} (if the port was taken meanwhile, \
                 the test cannot continue on it)",
                self.port
            )
        })
    }

    /// [`stop`](Self::stop) then [`start_again`](Self::start_again): same URL, same data.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.stop().await?;
        self.start_again().await
    }

    /// Spawns the server and waits until it is ready.
    async fn launch(&mut self) -> anyhow::Result<()> {
        self.starts += 1;
        if let Ok(mut log) = File::options()
            .create(true)
            .append(true)
            .open(&self.log_path)
        {
            let _ = writeln!(
                log,
                "=== shardyard-tests: start #{} of nats-server on port {} (monitor {}) ===",
                self.starts, self.port, self.monitor_port
            );
        }
        let mut command = Command::new(&self.bin);
        command
            .arg("-js")
            .args(["-a", "127.0.0.1"])
            .args(["-p", &self.port.to_string()])
            .args(["-m", &self.monitor_port.to_string()])
            .arg("-sd")
            .arg(self.store.path())
            .args(["--server_name", &format!("shardyard-test-{}", self.port)])
            .args(&self.config.extra_args);
        if let Some(tls) = &self.config.tls {
            command
                .arg("--tls")
                .arg("--tlscert")
                .arg(&tls.cert)
                .arg("--tlskey")
                .arg(&tls.key);
        }
        let process = ProcessGuard::spawn_with_log(
            format!("nats-server:{}", self.port),
            command,
            &self.log_path,
        )?;
        self.process = Some(process);
        self.wait_ready().await
    }

    /// Polls `/healthz` (which covers JetStream) and then a real client's JetStream account
    /// query, until both succeed.
    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let timeout = self.config.startup_timeout;
        let deadline = Instant::now() + timeout;
        loop {
            let Some(process) = self.process.as_mut() else {
                bail!("nats-server is not running");
            };
            if let Some(status) = process.try_wait()? {
                let report = process.log_report();
                self.process = None;
                bail!("nats-server exited during start-up ({status})\n{report}");
            }
            let last_error = match self.probe().await {
                Ok(()) => return Ok(()),
                Err(e) => e,
            };
            if Instant::now() >= deadline {
                let report = self
                    .process
                    .as_ref()
                    .map(ProcessGuard::log_report)
                    .unwrap_or_default();
                // Do not leave a half-started server behind.
                self.process = None;
                bail!(
                    "nats-server on port {} not ready within {timeout:?}: {last_error:#}\n{report}",
                    self.port
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn probe(&self) -> anyhow::Result<()> {
        let url = format!("{}/healthz", self.monitor_url());
        let response = self.http.get(&url).send().await?;
        if !response.status().is_success() {
            let status = response.status();
            bail!(
                "{url}: {status}: {}",
                response.text().await.unwrap_or_default()
            );
        }
        let client = self
            .client_options(Duration::from_secs(1))
            .connect(self.url())
            .await?;
        let jetstream = async_nats::jetstream::new(client);
        tokio::time::timeout(Duration::from_secs(2), jetstream.query_account())
            .await
            .context("JetStream account query timed out")??;
        Ok(())
    }

    /// Whether the last failed start failed because a port was taken.
    fn port_clash(&self) -> bool {
        let log = self.log_tail(50);
        let last_run = log
            .rsplit("=== shardyard-tests: start #")
            .next()
            .unwrap_or_default();
        last_run.contains("address already in use")
    }
}
