//! `shardyard dev` as a real process: [`DevRun`] starts it on a manifest file it can edit, with
//! the simulator on a free port, and reads dev's `/status` (every process with its pid, the
//! generation that publishes, the workers wanted).

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Command, ExitStatus};
use std::time::Duration;

use anyhow::Context as _;
use serde_json::Value;
use tempfile::TempDir;

use crate::bin::shardyard_bin;
use crate::ports::free_port;
use crate::process::ProcessGuard;
use crate::sim::SimClient;

/// A running `shardyard dev`; killed, with everything it started, when dropped.
#[derive(Debug)]
pub struct DevRun {
    process: ProcessGuard,
    dir: TempDir,
    admin: SocketAddr,
    sim: Option<SimClient>,
    http: reqwest::Client,
}

impl DevRun {
    /// `shardyard dev -f <manifest> --sim --sim-addr … --admin-addr … --state-dir …` plus `extra`
    /// (`--nats URL`, say), with `env` set. Returns once dev's admin address answers.
    pub async fn start(
        manifest: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir().context("a directory for dev")?;
        let sim_addr = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()));
        let sim_addr_text = sim_addr.to_string();
        let mut args = vec!["--sim", "--sim-addr", &sim_addr_text];
        args.extend_from_slice(extra);
        Self::spawn(dir, manifest, &args, env, Some(SimClient::new(sim_addr))).await
    }

    /// dev as with real Discord: no `--sim`, the token in `SHARDYARD_TOKEN`, and the manifest's
    /// `spec.discord.apiBase` (a simulator the test runs) as Discord. `dir` holds the manifest
    /// and the state directory, so a second run can use the first one's.
    pub async fn start_with_token(
        dir: TempDir,
        manifest: &str,
        token: &str,
        extra: &[&str],
    ) -> anyhow::Result<Self> {
        Self::spawn(dir, manifest, extra, &[("SHARDYARD_TOKEN", token)], None).await
    }

    async fn spawn(
        dir: TempDir,
        manifest: &str,
        args: &[&str],
        env: &[(&str, &str)],
        sim: Option<SimClient>,
    ) -> anyhow::Result<Self> {
        crate::install_crypto_provider();
        let file = dir.path().join("bot.yaml");
        std::fs::write(&file, manifest)?;
        let admin = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()));
        let mut command = Command::new(shardyard_bin()?);
        command
            .arg("dev")
            .arg("-f")
            .arg(&file)
            .args(["--admin-addr", &admin.to_string()])
            .arg("--state-dir")
            .arg(dir.path().join("state"))
            .args(args)
            .env_remove("SHARDYARD_TOKEN")
            .env("RUST_LOG", "info");
        for (name, value) in env {
            command.env(name, value);
        }
        let process = ProcessGuard::spawn("dev", command)?;
        let run = Self {
            process,
            dir,
            admin,
            sim,
            http: reqwest::Client::new(),
        };
        crate::eventually(Duration::from_secs(60), "dev answers", || async {
            run.status().await.map(|_| ())
        })
        .await
        .with_context(|| run.process.log_report())?;
        Ok(run)
    }

    /// Stops dev (Ctrl-C) and hands back its directory, for a second run on the same state.
    pub async fn stop_keeping_state(mut self) -> anyhow::Result<TempDir> {
        let exit = self.interrupt(Duration::from_secs(90)).await?;
        anyhow::ensure!(
            exit.success(),
            "dev exited with {exit:?}\n{}",
            self.report()
        );
        let dir = tempfile::tempdir()?;
        Ok(std::mem::replace(&mut self.dir, dir))
    }

    /// The simulator dev started (with `--sim`).
    ///
    /// # Panics
    /// When dev was started without it ([`Self::start_with_token`]).
    pub fn sim(&self) -> &SimClient {
        self.sim
            .as_ref()
            .expect("dev was started with the simulator")
    }

    /// dev's `GET /status`.
    pub async fn status(&self) -> anyhow::Result<Value> {
        let url = format!("http://{}/status", self.admin);
        Ok(self
            .http
            .get(&url)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?)
    }

    /// Waits until dev's `/readyz` says every process is ready, and returns `/status` then.
    pub async fn wait_ready(&self, timeout: Duration) -> anyhow::Result<Value> {
        crate::eventually(timeout, "every process of dev is ready", || async {
            let url = format!("http://{}/readyz", self.admin);
            let response = self.http.get(&url).send().await?;
            let status = response.status();
            let body = response.text().await?;
            anyhow::ensure!(status.is_success(), "{status}: {body}");
            self.status().await
        })
        .await
        .with_context(|| self.report())
    }

    /// Waits until `check` accepts dev's `/status`.
    pub async fn wait_for(
        &self,
        timeout: Duration,
        what: &str,
        check: impl Fn(&Value) -> anyhow::Result<()>,
    ) -> anyhow::Result<Value> {
        crate::eventually(timeout, what, || async {
            let status = self.status().await?;
            check(&status)?;
            Ok(status)
        })
        .await
        .with_context(|| self.report())
    }

    /// JetStream on the NATS dev uses (from `<state-dir>/dev.json`).
    pub async fn jetstream(&self) -> anyhow::Result<async_nats::jetstream::Context> {
        let text = std::fs::read(self.state_dir().join("dev.json")).context("dev.json")?;
        let addresses: Value = serde_json::from_slice(&text)?;
        let url = addresses["nats"]
            .as_str()
            .context("dev.json names no NATS")?;
        Ok(async_nats::jetstream::new(async_nats::connect(url).await?))
    }

    /// Rewrites the manifest (dev applies it within a second).
    pub fn edit(&self, manifest: &str) -> anyhow::Result<()> {
        std::fs::write(self.manifest(), manifest).context("editing the manifest")
    }

    /// The manifest's path.
    pub fn manifest(&self) -> PathBuf {
        self.dir.path().join("bot.yaml")
    }

    /// The state directory.
    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// Everything dev printed.
    pub fn output(&self) -> String {
        self.process.log()
    }

    /// dev's output and the end of every process's log, for a failing test.
    pub fn report(&self) -> String {
        let mut report = self.process.log_report();
        if let Ok(entries) = std::fs::read_dir(self.state_dir().join("logs")) {
            for entry in entries.flatten() {
                let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
                report.push_str(&format!(
                    "\n--- {} (last 30 lines, no backtrace frames) ---\n{}",
                    entry.path().display(),
                    crate::process::tail(&text, 30)
                ));
            }
        }
        report
    }

    /// Ctrl-C, and waits until dev has stopped everything and exited.
    pub async fn interrupt(&mut self, timeout: Duration) -> anyhow::Result<ExitStatus> {
        self.process.sigint()?;
        self.process
            .wait_exit(timeout)
            .await
            .with_context(|| self.report())
    }
}

impl Drop for DevRun {
    fn drop(&mut self) {
        // dev stops its processes on SIGINT; killed, it cannot: the pid files it keeps say what
        // runs.
        let _ = self.process.kill_9();
        shardyard_dev::supervisor::Supervisor::kill_leftovers(&self.state_dir());
    }
}

/// The pids of every process in a `/status`, by name.
pub fn pids(status: &Value) -> Vec<(String, u32)> {
    status["processes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| {
            Some((
                p["name"].as_str()?.to_owned(),
                u32::try_from(p["pid"].as_u64()?).ok()?,
            ))
        })
        .collect()
}

/// The pid of one process in a `/status`.
pub fn pid(status: &Value, name: &str) -> Option<u32> {
    pids(status)
        .into_iter()
        .find(|(n, _)| n == name)
        .map(|(_, p)| p)
}

/// The names of the processes of a component.
pub fn names(status: &Value, component: &str) -> Vec<String> {
    status["processes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["component"] == component)
        .filter_map(|p| p["name"].as_str().map(str::to_owned))
        .collect()
}
