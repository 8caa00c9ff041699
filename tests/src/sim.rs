//! The Discord simulator as a real process: [`SimProcess`] runs `shardyard sim`.

use std::net::{Ipv4Addr, SocketAddr};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde_json::Value;

use crate::bin::shardyard_bin;
use crate::ports::free_port;
use crate::process::ProcessGuard;

/// The command line of `shardyard sim`.
#[derive(Debug, Clone)]
pub struct SimArgs {
    /// `--token`: the bot token clients must present.
    pub token: String,
    /// `--guilds`: guilds the bot is in.
    pub guilds: u32,
    /// `--max-concurrency`: `session_start_limit.max_concurrency`.
    pub max_concurrency: u32,
    /// `--events-per-second`: background dispatches per second (0: none).
    pub events_per_second: f64,
    /// More arguments, appended as they are.
    pub extra: Vec<String>,
    /// How long start-up may take until `GET /api/v10/gateway` answers.
    pub startup_timeout: Duration,
}

impl Default for SimArgs {
    fn default() -> Self {
        Self {
            token: "test-token".to_owned(),
            guilds: 10,
            max_concurrency: 1,
            events_per_second: 0.0,
            extra: Vec::new(),
            startup_timeout: Duration::from_secs(30),
        }
    }
}

/// A running `shardyard sim` on a free port of 127.0.0.1, killed when dropped.
///
/// Start-up polls `GET /api/v10/gateway` (without a token) until it answers 2xx; a simulator that
/// counts REST requests counts those probes too.
#[derive(Debug)]
pub struct SimProcess {
    process: ProcessGuard,
    addr: SocketAddr,
    args: SimArgs,
    http: reqwest::Client,
}

impl SimProcess {
    /// Starts `shardyard sim --addr 127.0.0.1:PORT --token … --guilds … --max-concurrency …
    /// --events-per-second … EXTRA…` and waits until it serves HTTP.
    pub async fn start(args: SimArgs) -> anyhow::Result<Self> {
        crate::install_crypto_provider();
        let bin = shardyard_bin()?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .context("cannot build an HTTP client")?;
        let mut attempt = 1;
        loop {
            let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()));
            let mut command = Command::new(&bin);
            command
                .arg("sim")
                .args(["--addr", &addr.to_string()])
                .args(["--token", &args.token])
                .args(["--guilds", &args.guilds.to_string()])
                .args(["--max-concurrency", &args.max_concurrency.to_string()])
                .args(["--events-per-second", &args.events_per_second.to_string()])
                .args(&args.extra);
            let process = ProcessGuard::spawn(format!("sim:{}", addr.port()), command)?;
            let mut sim = Self {
                process,
                addr,
                args: args.clone(),
                http: http.clone(),
            };
            match sim.wait_ready().await {
                Ok(()) => return Ok(sim),
                Err(e) if attempt < 3 && sim.process.log().contains("in use") => {
                    eprintln!("shardyard-tests: sim port clash, retrying: {e:#}");
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let url = format!("{}/gateway", self.api_base());
        let timeout = self.args.startup_timeout;
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.process.try_wait()? {
                bail!(
                    "shardyard sim exited during start-up ({status})\n{}",
                    self.process.log_report()
                );
            }
            let last = match self
                .http
                .get(&url)
                .timeout(Duration::from_secs(1))
                .send()
                .await
            {
                Ok(response) if response.status().is_success() => return Ok(()),
                Ok(response) => format!("{}", response.status()),
                Err(e) => format!("{e}"),
            };
            if Instant::now() >= deadline {
                bail!(
                    "shardyard sim: GET {url} did not succeed within {timeout:?} (last: {last})\n{}",
                    self.process.log_report()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The address it listens on, `127.0.0.1:PORT`.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`.
    pub fn http_base(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `http://127.0.0.1:PORT/api/v10`, Discord's REST base.
    pub fn api_base(&self) -> String {
        format!("{}/api/v10", self.http_base())
    }

    /// The arguments it was started with.
    pub fn args(&self) -> &SimArgs {
        &self.args
    }

    /// The bot token (`--token`).
    pub fn token(&self) -> &str {
        &self.args.token
    }

    /// The process, to signal or kill it, or read its log.
    pub fn process(&mut self) -> &mut ProcessGuard {
        &mut self.process
    }

    /// The last `lines` lines of its log.
    pub fn log_tail(&self, lines: usize) -> String {
        self.process.log_tail(lines)
    }

    /// The ground-truth counters, `GET /_sim/stats`.
    pub async fn stats(&self) -> anyhow::Result<Value> {
        self.get_json("/_sim/stats").await
    }

    /// The contents of the messages bots created in `channel` through REST, oldest first
    /// (`GET /_sim/channels/{id}/messages`).
    pub async fn channel_message_contents(&self, channel: u64) -> anyhow::Result<Vec<String>> {
        contents(
            &self
                .get_json(&format!("/_sim/channels/{channel}/messages"))
                .await?,
        )
    }

    /// `GET http://ADDR{path}` as JSON.
    pub async fn get_json(&self, path: &str) -> anyhow::Result<Value> {
        let url = self.url(path);
        self.json(self.http.get(&url), "GET", &url).await
    }

    /// `POST http://ADDR{path}` with a JSON body, for the `/_sim/` control calls. An empty
    /// response body gives `Value::Null`.
    pub async fn post_json(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        let url = self.url(path);
        self.json(self.http.post(&url).json(body), "POST", &url)
            .await
    }

    fn url(&self, path: &str) -> String {
        format!("{}/{}", self.http_base(), path.trim_start_matches('/'))
    }

    async fn json(
        &self,
        request: reqwest::RequestBuilder,
        method: &str,
        url: &str,
    ) -> anyhow::Result<Value> {
        let response = request
            .send()
            .await
            .with_context(|| format!("{method} {url}\n{}", self.process.log_report()))?;
        let status = response.status();
        let body = response
            .text()
            .await
            .with_context(|| format!("{method} {url}: reading the body"))?;
        if !status.is_success() {
            bail!(
                "{method} {url}: {status}: {body}\n{}",
                self.process.log_report()
            );
        }
        if body.trim().is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&body).with_context(|| format!("{method} {url}: not JSON: {body}"))
    }
}

/// The simulator's HTTP API wherever it runs: a [`SimProcess`] of the test's own, or one another
/// process started ([`SimClient`]: `shardyard dev`'s).
pub trait SimApi: Sync {
    /// `GET http://ADDR{path}` as JSON.
    fn get_json(&self, path: &str) -> impl Future<Output = anyhow::Result<Value>> + Send;

    /// The ground-truth counters, `GET /_sim/stats`.
    fn stats(&self) -> impl Future<Output = anyhow::Result<Value>> + Send {
        self.get_json("/_sim/stats")
    }
}

impl SimApi for SimProcess {
    fn get_json(&self, path: &str) -> impl Future<Output = anyhow::Result<Value>> + Send {
        SimProcess::get_json(self, path)
    }
}

/// A simulator someone else runs, reached at its address.
#[derive(Debug, Clone)]
pub struct SimClient {
    base: String,
    http: reqwest::Client,
}

impl SimClient {
    /// The simulator at `http://addr`.
    pub fn new(addr: SocketAddr) -> Self {
        crate::install_crypto_provider();
        Self {
            base: format!("http://{addr}"),
            http: reqwest::Client::new(),
        }
    }

    /// `http://ADDR`.
    pub fn http_base(&self) -> &str {
        &self.base
    }

    /// `POST http://ADDR{path}` with a JSON body.
    pub async fn post_json(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.base);
        answer(self.http.post(&url).json(body), &url).await
    }

    /// The contents of the messages bots created in `channel` through REST, oldest first.
    pub async fn channel_message_contents(&self, channel: u64) -> anyhow::Result<Vec<String>> {
        contents(
            &self
                .get_json(&format!("/_sim/channels/{channel}/messages"))
                .await?,
        )
    }
}

impl SimApi for SimClient {
    fn get_json(&self, path: &str) -> impl Future<Output = anyhow::Result<Value>> + Send {
        let url = format!("{}{path}", self.base);
        let request = self.http.get(url.clone());
        async move { answer(request, &url).await }
    }
}

async fn answer(request: reqwest::RequestBuilder, url: &str) -> anyhow::Result<Value> {
    let response = request.send().await.with_context(|| url.to_owned())?;
    let status = response.status();
    let body = response.text().await.with_context(|| url.to_owned())?;
    if !status.is_success() {
        bail!("{url}: {status}: {body}");
    }
    if body.trim().is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_str(&body).with_context(|| format!("{url}: not JSON: {body}"))
}

/// The `content` of each message in `GET /_sim/channels/{id}/messages`.
fn contents(messages: &Value) -> anyhow::Result<Vec<String>> {
    Ok(messages
        .as_array()
        .context("the simulator's channel messages are not an array")?
        .iter()
        .filter_map(|m| m["content"].as_str().map(str::to_owned))
        .collect())
}
