//! Workers as processes: `shardyard worker` (the example bot) and `test-worker`
//! (`src/bin/test-worker.rs`, behaviours chosen by flags, with a record of what it handled).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::Context as _;

use crate::{NatsServer, ProcessGuard, RestProcess, eventually, free_port, shardyard_bin};

/// A running worker process with an admin address.
#[derive(Debug)]
pub struct WorkerProcess {
    process: ProcessGuard,
    admin: SocketAddr,
}

/// The `test-worker` binary cargo built next to the test binaries.
///
/// # Errors
/// When it is not there (run the tests through cargo, which builds it).
pub fn test_worker_bin() -> anyhow::Result<PathBuf> {
    let bin = crate::bin::profile_dir().join("test-worker");
    anyhow::ensure!(
        bin.is_file(),
        "{} does not exist: cargo builds it for this crate's tests (cargo test -p \
         shardyard-tests)",
        bin.display()
    );
    Ok(bin)
}

impl WorkerProcess {
    /// `shardyard worker --bot BOT --nats NATS --rest REST --admin-addr …` with `env` added
    /// (`SHARDYARD_WORKER_*`); waits until `/readyz`.
    ///
    /// # Errors
    /// When it does not start or never becomes ready.
    pub async fn start_example(
        nats: &NatsServer,
        rest: &RestProcess,
        bot: &str,
        env: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse()?;
        let mut command = Command::new(shardyard_bin()?);
        command
            .arg("worker")
            .args(["--bot", bot, "--nats", &nats.url()])
            .args(["--rest", &format!("http://{}", rest.addr())])
            .args(["--admin-addr", &admin.to_string()])
            .env("RUST_LOG", "info,shardyard_worker=debug")
            .envs(env.iter().copied());
        Self::spawn(format!("worker-{bot}-{}", admin.port()), command, admin).await
    }

    /// `test-worker ARGS` configured by `SHARDYARD_BOT`, `SHARDYARD_NATS_URL`, a REST URL
    /// nothing listens on, and `env`; waits until `/readyz`.
    ///
    /// # Errors
    /// When it does not start or never becomes ready.
    pub async fn start_test(
        nats: &NatsServer,
        bot: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse()?;
        let mut command = Command::new(test_worker_bin()?);
        command
            .args(args)
            .args(["--admin-addr", &admin.to_string()])
            .env("SHARDYARD_BOT", bot)
            .env("SHARDYARD_NATS_URL", nats.url())
            .env("SHARDYARD_REST_URL", "http://127.0.0.1:9")
            .env("RUST_LOG", "info,shardyard_worker=debug")
            .envs(env.iter().copied());
        Self::spawn(
            format!("test-worker-{bot}-{}", admin.port()),
            command,
            admin,
        )
        .await
    }

    async fn spawn(name: String, command: Command, admin: SocketAddr) -> anyhow::Result<Self> {
        crate::install_crypto_provider();
        let process = ProcessGuard::spawn(name, command)?;
        let worker = Self { process, admin };
        worker.wait_ready(Duration::from_secs(30)).await?;
        Ok(worker)
    }

    /// Waits until `/readyz` answers 200.
    ///
    /// # Errors
    /// When it does not within `timeout`.
    pub async fn wait_ready(&self, timeout: Duration) -> anyhow::Result<()> {
        eventually(timeout, "worker /readyz", || self.admin_get("/readyz"))
            .await
            .with_context(|| self.process.log_report())?;
        Ok(())
    }

    /// GET on the admin server; the body on 2xx.
    ///
    /// # Errors
    /// On a non-2xx status or no answer.
    pub async fn admin_get(&self, path: &str) -> anyhow::Result<String> {
        crate::admin::admin_get(self.admin, path).await
    }

    /// `shardyard_worker_events_total{type="TYPE",outcome="OUTCOME"}`.
    ///
    /// # Errors
    /// When `/metrics` does not answer or has no such series.
    pub async fn handled(&self, event_type: &str, outcome: &str) -> anyhow::Result<u64> {
        let metrics = self.admin_get("/metrics").await?;
        let series =
            format!("shardyard_worker_events_total{{type=\"{event_type}\",outcome=\"{outcome}\"}}");
        let value = crate::admin::metric_value(&metrics, &series)
            .with_context(|| format!("no {series} in /metrics"))?;
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        Ok(value as u64)
    }

    /// The process.
    pub fn process(&mut self) -> &mut ProcessGuard {
        &mut self.process
    }

    /// Its whole log so far.
    #[must_use]
    pub fn log(&self) -> String {
        self.process.log()
    }

    /// The log, for error messages.
    #[must_use]
    pub fn log_report(&self) -> String {
        self.process.log_report()
    }
}

/// One line of a `test-worker --record` file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handled {
    /// `start` or `done`.
    pub what: String,
    /// The event's stream sequence.
    pub stream_sequence: u64,
    /// Its `Nats-Msg-Id`.
    pub msg_id: String,
    /// Its type.
    pub event_type: String,
    /// Its delivery count.
    pub delivered: u32,
}

/// The lines of a `test-worker --record` file, in the order they were written (a missing file
/// is empty).
///
/// # Errors
/// When the file cannot be read or a line is malformed.
pub fn read_record(path: &Path) -> anyhow::Result<Vec<Handled>> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    text.lines()
        // A kill -9 may cut the last line short.
        .filter(|line| line.split(' ').count() == 5)
        .map(|line| {
            let parts: Vec<&str> = line.split(' ').collect();
            Ok(Handled {
                what: parts[0].to_owned(),
                stream_sequence: parts[1].parse()?,
                msg_id: parts[2].to_owned(),
                event_type: parts[3].to_owned(),
                delivered: parts[4].parse()?,
            })
        })
        .collect()
}

/// Counts of `done` lines by message id.
#[must_use]
pub fn done_counts(lines: &[Handled]) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for line in lines.iter().filter(|l| l.what == "done") {
        *counts.entry(line.msg_id.clone()).or_insert(0) += 1;
    }
    counts
}

/// Creates `bot`'s event stream as the gateway would (for tests that publish events
/// themselves).
///
/// # Errors
/// When JetStream refuses.
pub async fn create_event_stream(
    js: &async_nats::jetstream::Context,
    bot: &shardyard_protocol::BotKey,
) -> anyhow::Result<()> {
    js.get_or_create_stream(async_nats::jetstream::stream::Config {
        name: bot.stream(),
        subjects: vec![bot.events_filter()],
        ..Default::default()
    })
    .await
    .context("creating the event stream")?;
    Ok(())
}

/// Publishes one event as the gateway does (subject and every contract header: message id
/// `test:<seq>`, shard `shard/total`, sequence, type, receive time now) and waits for
/// JetStream's ack; returns the message id.
///
/// # Errors
/// When JetStream does not take it.
pub async fn publish_event(
    js: &async_nats::jetstream::Context,
    bot: &shardyard_protocol::BotKey,
    (shard, total): (u32, u32),
    seq: u64,
    event_type: &str,
    payload: &str,
) -> anyhow::Result<String> {
    use shardyard_protocol::names::{headers, msg_id, shard_header};
    let id = msg_id("test", seq);
    let mut map = async_nats::HeaderMap::new();
    map.insert(headers::MSG_ID, id.as_str());
    map.insert(headers::SHARD, shard_header(shard, total).as_str());
    map.insert(headers::SEQ, seq.to_string().as_str());
    map.insert(headers::EVENT, event_type);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_micros();
    map.insert(headers::RECEIVED_AT, now.to_string().as_str());
    js.publish_with_headers(
        bot.event_subject(shard, event_type),
        map,
        payload.to_owned().into(),
    )
    .await?
    .await
    .context("JetStream's ack")?;
    Ok(id)
}

/// Every message of `stream` (in stream order) on subjects matching `filter`: its stream
/// sequence, subject, headers and payload.
///
/// # Errors
/// When the stream cannot be read within 30 s.
pub async fn read_stream(
    js: &async_nats::jetstream::Context,
    stream: &str,
    filter: &str,
) -> anyhow::Result<Vec<async_nats::jetstream::message::StreamMessage>> {
    use futures_util::StreamExt as _;
    let stream = js.get_stream(stream).await.context("getting the stream")?;
    let mut consumer = stream
        .create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig {
            filter_subject: filter.to_owned(),
            ..Default::default()
        })
        .await
        .context("creating an ordered consumer")?;
    let pending = consumer.info().await.context("consumer info")?.num_pending;
    let mut out = Vec::new();
    if pending == 0 {
        return Ok(out);
    }
    let mut messages = consumer.messages().await.context("reading messages")?;
    while (out.len() as u64) < pending {
        let message = tokio::time::timeout(Duration::from_secs(30), messages.next())
            .await
            .context("the stream stalled")?
            .context("the stream ended")??;
        let info = message.info().map_err(|e| anyhow::anyhow!("{e}"))?;
        let sequence = info.stream_sequence;
        let time = info.published;
        let message = message.message;
        out.push(async_nats::jetstream::message::StreamMessage {
            subject: message.subject,
            sequence,
            headers: message.headers.unwrap_or_default(),
            payload: message.payload,
            time,
        });
    }
    Ok(out)
}
