//! `shardyard rest` (the REST proxy) as a process, in front of a [`SimProcess`].

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use anyhow::Context as _;

use crate::{NatsServer, ProcessGuard, SimProcess, eventually, free_port, shardyard_bin};

/// How to start a [`RestProcess`].
#[derive(Debug, Clone)]
pub struct RestArgs {
    /// `SHARDYARD_TOKEN` for the proxy; `None` starts it without a bot token.
    pub token: Option<String>,
    /// `--upstream`; `None` is the simulator's `http://ADDR/api`.
    pub upstream: Option<String>,
    /// More flags, appended as they are.
    pub extra: Vec<String>,
}

impl RestArgs {
    /// The simulator's token and API, and `extra` flags.
    #[must_use]
    pub fn for_sim(sim: &SimProcess, extra: &[&str]) -> Self {
        Self {
            token: Some(sim.token().to_owned()),
            upstream: None,
            extra: extra.iter().map(|s| (*s).to_owned()).collect(),
        }
    }
}

/// A running `shardyard rest --listen 127.0.0.1:P --upstream SIM/api --admin-addr 127.0.0.1:Q`,
/// killed with its process group when dropped. It logs at debug level, so tests can assert what
/// never appears in its log.
#[derive(Debug)]
pub struct RestProcess {
    process: ProcessGuard,
    addr: SocketAddr,
    admin: SocketAddr,
    http: reqwest::Client,
}

impl RestProcess {
    /// Starts the proxy in front of `sim` with the simulator's token and `extra` flags, and
    /// waits until `/readyz` answers 200.
    ///
    /// # Errors
    /// When the process does not start or never becomes ready.
    pub async fn start(sim: &SimProcess, extra: &[&str]) -> anyhow::Result<Self> {
        Self::start_with(sim, RestArgs::for_sim(sim, extra)).await
    }

    /// Starts the proxy as `args` say.
    ///
    /// # Errors
    /// When the process does not start or never becomes ready.
    pub async fn start_with(sim: &SimProcess, args: RestArgs) -> anyhow::Result<Self> {
        crate::install_crypto_provider();
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse()?;
        let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse()?;
        let upstream = args
            .upstream
            .clone()
            .unwrap_or_else(|| format!("{}/api", sim.http_base()));
        let mut command = Command::new(shardyard_bin()?);
        command
            .arg("rest")
            .args(["--listen", &addr.to_string()])
            .args(["--upstream", &upstream])
            .args(["--admin-addr", &admin.to_string()])
            .args(&args.extra)
            .env_remove("SHARDYARD_TOKEN")
            .env("RUST_LOG", "debug");
        if let Some(token) = &args.token {
            command.env("SHARDYARD_TOKEN", token);
        }
        let process = ProcessGuard::spawn(format!("rest:{}", addr.port()), command)?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .context("cannot build an HTTP client")?;
        let rest = Self {
            process,
            addr,
            admin,
            http,
        };
        eventually(Duration::from_secs(30), "rest proxy /readyz", || {
            rest.admin_get("/readyz")
        })
        .await
        .with_context(|| rest.process.log_report())?;
        Ok(rest)
    }

    /// Starts `n` replicas with `--nats` (bot `bot`) in front of `sim`, each with `extra` flags,
    /// and waits until every one counts `n` members (`shardyard_rest_cluster_members`).
    ///
    /// # Errors
    /// When one does not start, or they do not find each other within 30 s.
    pub async fn start_replicas(
        sim: &SimProcess,
        nats: &NatsServer,
        bot: &str,
        n: usize,
        extra: &[&str],
    ) -> anyhow::Result<Vec<Self>> {
        let url = nats.url();
        let mut flags = vec!["--nats", url.as_str(), "--bot", bot];
        flags.extend_from_slice(extra);
        let mut replicas = Vec::with_capacity(n);
        for _ in 0..n {
            replicas.push(Self::start(sim, &flags).await?);
        }
        for replica in &replicas {
            replica.wait_members(n).await?;
        }
        Ok(replicas)
    }

    /// Waits until this replica counts `n` members, itself included.
    ///
    /// # Errors
    /// When it does not within 30 s.
    pub async fn wait_members(&self, n: usize) -> anyhow::Result<()> {
        eventually(
            Duration::from_secs(30),
            "the replicas find each other",
            || async {
                let members = self.metric("shardyard_rest_cluster_members").await?;
                #[allow(clippy::cast_precision_loss)]
                let expected = n as f64;
                anyhow::ensure!(members == expected, "{members} members, not {n}");
                Ok(())
            },
        )
        .await
        .with_context(|| self.log_report())
    }

    /// Where clients connect, `127.0.0.1:PORT`.
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT/api/v10`: Discord's API base, through the proxy.
    #[must_use]
    pub fn api_base(&self) -> String {
        format!("http://{}/api/v10", self.addr)
    }

    /// `http://127.0.0.1:PORT{path}`.
    #[must_use]
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Where `/healthz`, `/readyz` and `/metrics` are served.
    #[must_use]
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin
    }

    /// GET on the admin server; the body on 2xx.
    ///
    /// # Errors
    /// On a non-2xx status or no answer.
    pub async fn admin_get(&self, path: &str) -> anyhow::Result<String> {
        crate::admin::admin_get(self.admin, path).await
    }

    /// `/metrics`.
    ///
    /// # Errors
    /// When it does not answer.
    pub async fn metrics(&self) -> anyhow::Result<String> {
        self.admin_get("/metrics").await
    }

    /// The value of the metric series whose line starts with `series` (name and labels as
    /// printed, e.g. `shardyard_rest_rate_limited_total{scope="user"}`), 0 when absent.
    ///
    /// # Errors
    /// When `/metrics` does not answer.
    pub async fn metric(&self, series: &str) -> anyhow::Result<f64> {
        let text = self.metrics().await?;
        Ok(crate::admin::metric_value(&text, series).unwrap_or(0.0))
    }

    /// The first `n` text channels of the simulated bot's guilds: the guild list asked through
    /// the proxy with the simulator's token (so the proxy, or the token's owner among replicas,
    /// counts it under the global limit as the simulator does), each guild's channels from the
    /// simulator's own state.
    pub async fn text_channels(&self, sim: &SimProcess, n: usize) -> anyhow::Result<Vec<u64>> {
        let guilds = self
            .http
            .get(format!("{}/users/@me/guilds", self.api_base()))
            .header("Authorization", format!("Bot {}", sim.token()))
            .send()
            .await?
            .json::<serde_json::Value>()
            .await?;
        let mut channels = Vec::new();
        for guild in guilds.as_array().context("guilds")? {
            let id = guild["id"].as_str().context("guild id")?;
            let state = sim.get_json(&format!("/_sim/guilds/{id}")).await?;
            for channel in state["channels"].as_array().context("channels")? {
                if channel["type"] == 0 {
                    channels.push(channel["id"].as_str().context("id")?.parse()?);
                }
                if channels.len() == n {
                    return Ok(channels);
                }
            }
        }
        anyhow::bail!("only {} text channels", channels.len())
    }

    /// `POST /channels/{channel}/messages` with `content` through the proxy (its token); the
    /// status and the body as JSON (`null` when it is not JSON).
    ///
    /// # Errors
    /// When the request gets no answer.
    pub async fn post_message(
        &self,
        channel: u64,
        content: &str,
    ) -> anyhow::Result<(u16, serde_json::Value)> {
        let response = self
            .http
            .post(format!("{}/channels/{channel}/messages", self.api_base()))
            .json(&serde_json::json!({ "content": content }))
            .send()
            .await?;
        let status = response.status().as_u16();
        let body = response
            .json::<serde_json::Value>()
            .await
            .unwrap_or(serde_json::Value::Null);
        Ok((status, body))
    }

    /// A client for requests through the proxy.
    #[must_use]
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// The process, to signal it or read its log.
    pub fn process(&mut self) -> &mut ProcessGuard {
        &mut self.process
    }

    /// Its whole log so far.
    #[must_use]
    pub fn log(&self) -> String {
        self.process.log()
    }

    /// Its log tail, for error messages.
    #[must_use]
    pub fn log_report(&self) -> String {
        self.process.log_report()
    }
}

/// The 429s the simulator sent (`/_sim/stats` `rest.rate_limited`) as (user, global, shared);
/// a missing field reads as `u64::MAX`, so asserting zero cannot pass by accident.
#[must_use]
pub fn rest_rate_limited(stats: &serde_json::Value) -> (u64, u64, u64) {
    let r = &stats["rest"]["rate_limited"];
    (
        r["user"].as_u64().unwrap_or(u64::MAX),
        r["global"].as_u64().unwrap_or(u64::MAX),
        r["shared"].as_u64().unwrap_or(u64::MAX),
    )
}

/// The most REST requests of one token the simulator saw in any rolling second
/// (`/_sim/stats` `rest.max_requests_in_any_second`).
///
/// # Errors
/// When the field is missing.
pub fn rest_busiest_second(stats: &serde_json::Value) -> anyhow::Result<u64> {
    stats["rest"]["max_requests_in_any_second"]
        .as_u64()
        .context("no rest.max_requests_in_any_second in the simulator's stats")
}

/// [`rest_busiest_second`], which must be at most `limit` (the global limit the clients had to
/// keep).
///
/// # Errors
/// When the field is missing or more than `limit` requests reached the simulator in a second.
pub fn rest_busiest_second_within(stats: &serde_json::Value, limit: u64) -> anyhow::Result<u64> {
    let max = rest_busiest_second(stats)?;
    anyhow::ensure!(
        max <= limit,
        "{max} requests reached the simulator in one second (limit {limit})"
    );
    Ok(max)
}
