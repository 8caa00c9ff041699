//! `shardyard gateway` as a process, pointed at a [`SimProcess`] and a [`NatsServer`].

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use anyhow::Context as _;

use crate::{NatsServer, ProcessGuard, SimProcess, eventually, free_port, shardyard_bin};

/// A running `shardyard gateway`.
#[derive(Debug)]
pub struct GatewayProcess {
    process: ProcessGuard,
    admin: SocketAddr,
}

impl GatewayProcess {
    /// Starts `shardyard gateway --bot BOT --api-base SIM --nats NATS --total TOTAL --shards A..B`
    /// with the simulator's token, an admin port, and `extra` flags (an `--api-base` among them
    /// replaces the simulator's); waits until `/healthz`
    /// answers.
    ///
    /// # Errors
    /// When the process does not start or never serves `/healthz`.
    pub async fn start(
        sim: &SimProcess,
        nats: &NatsServer,
        bot: &str,
        total: u32,
        shards: std::ops::Range<u32>,
        extra: &[&str],
    ) -> anyhow::Result<Self> {
        Self::start_with_intents(
            sim,
            nats,
            bot,
            total,
            shards,
            "GUILDS,GUILD_MESSAGES,MESSAGE_CONTENT,GUILD_MEMBERS",
            extra,
        )
        .await
    }

    /// [`start`](Self::start) with other `--intents` (names joined by `,`).
    ///
    /// # Errors
    /// When the process does not start or never serves `/healthz`.
    pub async fn start_with_intents(
        sim: &SimProcess,
        nats: &NatsServer,
        bot: &str,
        total: u32,
        shards: std::ops::Range<u32>,
        intents: &str,
        extra: &[&str],
    ) -> anyhow::Result<Self> {
        let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse()?;
        let mut command = Command::new(shardyard_bin()?);
        command
            .arg("gateway")
            .args(["--bot", bot, "--nats", &nats.url()]);
        // The simulator's API unless `extra` names another.
        if !extra.contains(&"--api-base") {
            command.args(["--api-base", &sim.api_base()]);
        }
        command
            .args([
                "--total",
                &total.to_string(),
                "--shards",
                &format!("{}..{}", shards.start, shards.end),
            ])
            .args(["--admin-addr", &admin.to_string(), "--intents", intents])
            .args(extra)
            .env("SHARDYARD_TOKEN", sim.token())
            .env("RUST_LOG", "info,shardyard_gateway=debug");
        if let Some(tls) = nats.tls() {
            // Both of the gateway's NATS connections trust the platform's roots.
            command.env("SSL_CERT_FILE", &tls.ca);
        }
        let process = ProcessGuard::spawn(
            format!("gateway-{bot}-{}-{}", shards.start, shards.end),
            command,
        )?;
        let gateway = Self { process, admin };
        eventually(Duration::from_secs(30), "gateway /healthz", || {
            gateway.admin_get("/healthz")
        })
        .await
        .with_context(|| gateway.process.log_tail(30))?;
        Ok(gateway)
    }

    /// GET on the admin server; the body on 2xx.
    ///
    /// # Errors
    /// On a non-2xx status or no answer.
    pub async fn admin_get(&self, path: &str) -> anyhow::Result<String> {
        crate::admin::admin_get(self.admin, path).await
    }

    /// Waits until `/readyz` says every shard is ready.
    ///
    /// # Errors
    /// When it does not within `timeout`.
    pub async fn wait_ready(&self, timeout: Duration) -> anyhow::Result<()> {
        eventually(timeout, "gateway /readyz", || self.admin_get("/readyz"))
            .await
            .with_context(|| self.process.log_tail(30))?;
        Ok(())
    }

    /// Everything the process has logged so far.
    #[must_use]
    pub fn log(&self) -> String {
        self.process.log()
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
}
