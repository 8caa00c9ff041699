//! The cache service: the bot's durable `cache` consumer, applied one event at a time, in stream
//! order, to the cache bucket.
//!
//! Start-up: connect, create the bucket if missing (file storage, history 1), serve the HTTP API,
//! wait (not ready, with backoff) until the event stream exists — the gateway or the operator
//! creates it — then create or update the consumer (filtered to the event types of the enabled
//! resources, explicit ack, one message in flight) and become ready.
//!
//! Per event: parse; read what it needs; write (all writes, then the guild's); ack. A malformed
//! payload is logged, counted and acked (skipped). A NATS failure retries the same event with
//! backoff, never skipping it; the next event only comes after the ack, so nothing is reordered.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, AckKind, consumer::pull, kv};
use bytes::Bytes;
use futures_util::{StreamExt as _, TryStreamExt as _};
use shardyard_admin::Status;
use shardyard_admin::prom::{Counter, Gauge, Histogram, LATENCY_BUCKETS, header};
use shardyard_protocol::names::{BotKey, CACHE_CONSUMER, headers};
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use crate::apply::{self, Current, EVENT_TYPES, Op, Resources, Writes};
use crate::reader::CacheReader;

/// Writes of one event in flight at once.
const CONCURRENT_WRITES: usize = 64;

/// What `shardyard cache` runs with.
#[derive(Debug, Clone)]
pub struct CacheConfig {
    /// The bot.
    pub bot: BotKey,
    /// NATS server URL(s).
    pub nats_url: String,
    /// Where the read-only HTTP API listens, if anywhere.
    pub listen: Option<SocketAddr>,
    /// What to keep.
    pub resources: Resources,
    /// How long NATS waits for an ack before redelivering (also how long a crashed instance's
    /// in-flight event blocks its successor).
    pub ack_wait: Duration,
}

impl CacheConfig {
    /// Defaults for `bot` at `nats_url`.
    #[must_use]
    pub fn new(bot: BotKey, nats_url: String) -> Self {
        Self {
            bot,
            nats_url,
            listen: None,
            resources: Resources::DEFAULT,
            ack_wait: Duration::from_secs(10),
        }
    }
}

/// Why the service stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The first connection to NATS failed.
    #[error("connecting to NATS at {url}")]
    Connect {
        /// The URL.
        url: String,
        /// Why.
        #[source]
        source: async_nats::ConnectError,
    },
    /// The HTTP API could not bind its address.
    #[error("binding the HTTP API on {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Error kinds counted in `shardyard_cache_apply_errors_total`.
const ERROR_KINDS: [&str; 4] = ["malformed", "missing_field", "kv_read", "kv_write"];

/// The service's state for `/readyz` and `/metrics` (served by [`shardyard_admin`]).
#[derive(Debug)]
pub struct CacheStatus {
    ready: AtomicBool,
    waiting_for: std::sync::Mutex<String>,
    applied: Vec<Counter>,
    errors: [Counter; ERROR_KINDS.len()],
    bad_events: Counter,
    kv_writes: Counter,
    kv_reads: Counter,
    last_seq: Gauge,
    pending: Gauge,
    apply_duration: Histogram,
    http_addr: std::sync::Mutex<Option<SocketAddr>>,
}

impl Default for CacheStatus {
    fn default() -> Self {
        Self {
            ready: AtomicBool::new(false),
            waiting_for: std::sync::Mutex::new("starting".to_owned()),
            applied: EVENT_TYPES.iter().map(|_| Counter::new()).collect(),
            errors: Default::default(),
            bad_events: Counter::new(),
            kv_writes: Counter::new(),
            kv_reads: Counter::new(),
            last_seq: Gauge::new(),
            pending: Gauge::new(),
            apply_duration: Histogram::new(LATENCY_BUCKETS),
            http_addr: std::sync::Mutex::new(None),
        }
    }
}

impl CacheStatus {
    fn not_ready(&self, why: impl Into<String>) {
        self.ready.store(false, Ordering::Relaxed);
        if let Ok(mut w) = self.waiting_for.lock() {
            *w = why.into();
        }
    }

    /// Where the HTTP API listens, once bound.
    #[must_use]
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http_addr.lock().ok().and_then(|a| *a)
    }

    /// Events applied so far (all types).
    #[must_use]
    pub fn applied_total(&self) -> u64 {
        self.applied.iter().map(Counter::get).sum()
    }

    /// The stream sequence of the last event applied (or skipped as malformed).
    #[must_use]
    pub fn last_seq(&self) -> u64 {
        u64::try_from(self.last_seq.get()).unwrap_or(0)
    }

    fn error(&self, kind: &str) {
        if let Some(i) = ERROR_KINDS.iter().position(|k| *k == kind) {
            self.errors[i].inc();
        }
    }
}

impl Status for CacheStatus {
    /// `Ok` once the consumer is set up; else what the service waits for.
    fn readiness(&self) -> Result<(), String> {
        if self.ready.load(Ordering::Relaxed) {
            Ok(())
        } else {
            Err(self
                .waiting_for
                .lock()
                .map_or_else(|_| "starting".to_owned(), |w| w.clone()))
        }
    }

    fn render_metrics(&self, out: &mut String) {
        header(
            out,
            "shardyard_cache_events_applied_total",
            "counter",
            "Events applied to the cache, by type.",
        );
        for ((event, _), count) in EVENT_TYPES.iter().zip(&self.applied) {
            let _ = writeln!(
                out,
                "shardyard_cache_events_applied_total{{event=\"{event}\"}} {}",
                count.get()
            );
        }
        header(
            out,
            "shardyard_cache_apply_errors_total",
            "counter",
            "Failures while applying events, by kind (malformed payloads are skipped; NATS \
             failures are retried).",
        );
        for (kind, count) in ERROR_KINDS.iter().zip(&self.errors) {
            let _ = writeln!(
                out,
                "shardyard_cache_apply_errors_total{{kind=\"{kind}\"}} {}",
                count.get()
            );
        }
        self.bad_events.render(
            out,
            "shardyard_cache_bad_events_total",
            "Events whose payload did not match their type: logged, acked and skipped.",
        );
        self.kv_writes.render(
            out,
            "shardyard_cache_kv_writes_total",
            "KV puts and deletes done.",
        );
        self.kv_reads.render(
            out,
            "shardyard_cache_kv_reads_total",
            "KV gets and key listings done.",
        );
        self.apply_duration.render(
            out,
            "shardyard_cache_apply_duration_seconds",
            "Time to apply one event: its reads, its writes and the ack.",
        );
        self.last_seq.render(
            out,
            "shardyard_cache_last_applied_sequence",
            "Stream sequence of the last event applied.",
        );
        self.pending.render(
            out,
            "shardyard_cache_consumer_pending",
            "Cache-relevant events in the stream not yet delivered to the cache (as of the last one).",
        );
        let ready = Gauge::new();
        ready.set(i64::from(self.ready.load(Ordering::Relaxed)));
        ready.render(
            out,
            "shardyard_cache_ready",
            "1 once the consumer is set up.",
        );
    }
}

/// Runs the cache service until `shutdown` is cancelled: the event being applied is finished and
/// acked first.
///
/// # Errors
/// [`ServiceError`] when NATS cannot be reached at all or the HTTP API cannot bind.
pub async fn run(
    config: CacheConfig,
    status: Arc<CacheStatus>,
    shutdown: CancellationToken,
) -> Result<(), ServiceError> {
    let client = async_nats::ConnectOptions::new()
        .name(format!("shardyard-cache-{}", config.bot))
        .retry_on_initial_connect()
        .connect(&config.nats_url)
        .await
        .map_err(|source| ServiceError::Connect {
            url: config.nats_url.clone(),
            source,
        })?;
    let js = jetstream::new(client.clone());
    let Some(kv) = retry(&status, &shutdown, "the cache bucket", || {
        ensure_bucket(&js, &config.bot)
    })
    .await
    else {
        return Ok(());
    };
    if let Some(addr) = config.listen {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| ServiceError::Bind { addr, source })?;
        if let Ok(mut a) = status.http_addr.lock() {
            *a = listener.local_addr().ok();
        }
        let app = crate::http::router(CacheReader::new(kv.clone()));
        let stop = shutdown.clone();
        tokio::spawn(
            async move {
                if let Err(error) = axum::serve(listener, app)
                    .with_graceful_shutdown(async move { stop.cancelled().await })
                    .await
                {
                    tracing::error!(%error, "the HTTP API failed");
                }
            }
            .instrument(tracing::info_span!("http")),
        );
    }
    let consumer_loop = Consumer {
        config: &config,
        js: &js,
        kv: &kv,
        reader: CacheReader::new(kv.clone()),
        status: &status,
        shutdown: &shutdown,
    };
    consumer_loop.run().await;
    status.not_ready("shutting down");
    let _ = client.flush().await;
    Ok(())
}

async fn ensure_bucket(js: &jetstream::Context, bot: &BotKey) -> Result<kv::Store, String> {
    let bucket = bot.cache_bucket();
    if let Ok(store) = js.get_key_value(&bucket).await {
        return Ok(store);
    }
    match js
        .create_key_value(kv::Config {
            bucket: bucket.clone(),
            description: "shardyard central cache".to_owned(),
            history: 1,
            storage: jetstream::stream::StorageType::File,
            ..Default::default()
        })
        .await
    {
        Ok(store) => Ok(store),
        // Another instance may have created it meanwhile.
        Err(create) => js
            .get_key_value(&bucket)
            .await
            .map_err(|_| format!("creating the bucket {bucket}: {create}")),
    }
}

/// Retries `attempt` with backoff (250 ms doubling to 5 s) until it succeeds or `shutdown`;
/// not ready meanwhile, with `what` as the reason.
async fn retry<T, F, Fut>(
    status: &CacheStatus,
    shutdown: &CancellationToken,
    what: &str,
    mut attempt: F,
) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let mut pause = Duration::from_millis(250);
    loop {
        match attempt().await {
            Ok(value) => return Some(value),
            Err(error) => {
                tracing::warn!(%error, "waiting for {what}");
                status.not_ready(format!("waiting for {what}: {error}"));
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => return None,
            () = tokio::time::sleep(pause) => {}
        }
        pause = (pause * 2).min(Duration::from_secs(5));
    }
}

struct Consumer<'a> {
    config: &'a CacheConfig,
    js: &'a jetstream::Context,
    kv: &'a kv::Store,
    reader: CacheReader,
    status: &'a CacheStatus,
    shutdown: &'a CancellationToken,
}

impl Consumer<'_> {
    async fn consumer(&self) -> Result<jetstream::consumer::Consumer<pull::Config>, String> {
        let bot = &self.config.bot;
        let stream = self
            .js
            .get_stream(bot.stream())
            .await
            .map_err(|e| format!("the stream {}: {e}", bot.stream()))?;
        let config = pull::Config {
            durable_name: Some(CACHE_CONSUMER.to_owned()),
            description: Some("shardyard cache: applies events to the cache bucket".to_owned()),
            filter_subjects: self
                .config
                .resources
                .event_types()
                .into_iter()
                .map(|t| bot.event_type_filter(t))
                .collect(),
            ack_policy: jetstream::consumer::AckPolicy::Explicit,
            ack_wait: self.config.ack_wait,
            max_ack_pending: 1,
            deliver_policy: jetstream::consumer::DeliverPolicy::All,
            max_deliver: -1,
            ..Default::default()
        };
        stream
            .create_consumer(config)
            .await
            .map_err(|e| format!("creating the consumer {CACHE_CONSUMER}: {e}"))
    }

    async fn run(&self) {
        loop {
            let Some(consumer) = retry(self.status, self.shutdown, "the event stream", || {
                self.consumer()
            })
            .await
            else {
                return;
            };
            let mut messages = match consumer.messages().await {
                Ok(messages) => messages,
                Err(error) => {
                    tracing::warn!(%error, "subscribing to the cache consumer");
                    self.status.not_ready(format!("consumer: {error}"));
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            self.status.ready.store(true, Ordering::Relaxed);
            tracing::info!(resources = ?self.config.resources, "applying events to the cache");
            loop {
                let next = tokio::select! {
                    () = self.shutdown.cancelled() => return,
                    next = messages.next() => next,
                };
                match next {
                    Some(Ok(message)) => {
                        if !self.handle(message).await {
                            return;
                        }
                    }
                    Some(Err(error)) => {
                        tracing::warn!(%error, "reading the cache consumer; resubscribing");
                        break;
                    }
                    None => break,
                }
            }
            self.status.not_ready("resubscribing to the event stream");
        }
    }

    /// Applies one message and acks it; `false` when shutdown interrupted it (it was nacked).
    async fn handle(&self, message: jetstream::Message) -> bool {
        let started = Instant::now();
        let (seq, pending) = match message.info() {
            Ok(info) => (info.stream_sequence, info.pending),
            Err(error) => {
                tracing::warn!(%error, "a message without JetStream metadata; skipped");
                let _ = message.ack().await;
                return true;
            }
        };
        let event_type = message
            .headers
            .as_ref()
            .and_then(|h| h.get(headers::EVENT))
            .map(|v| v.as_str().to_owned())
            .unwrap_or_else(|| {
                message
                    .subject
                    .rsplit('.')
                    .next()
                    .unwrap_or_default()
                    .to_owned()
            });
        let payload = message.payload.clone();
        let mut pause = Duration::from_millis(100);
        let applied = loop {
            match self.apply(&event_type, &payload, seq).await {
                Ok(()) => break true,
                Err(Failure::Bad(error)) => {
                    tracing::warn!(
                        event = %event_type,
                        stream_seq = seq,
                        %error,
                        "skipping an event whose payload does not match its type"
                    );
                    self.status.bad_events.inc();
                    self.status.error(error.kind());
                    break false;
                }
                Err(Failure::Nats(kind, error)) => {
                    tracing::warn!(event = %event_type, stream_seq = seq, %error, "{kind} failed; retrying the event");
                    self.status.error(kind);
                    // Keep the message ours while retrying.
                    let _ = message.ack_with(AckKind::Progress).await;
                    tokio::select! {
                        () = self.shutdown.cancelled() => {
                            let _ = message.ack_with(AckKind::Nak(None)).await;
                            return false;
                        }
                        () = tokio::time::sleep(pause) => {}
                    }
                    pause = (pause * 2).min(Duration::from_secs(5));
                }
            }
        };
        if let Err(error) = message.ack().await {
            // Redelivered later: applying again is harmless.
            tracing::warn!(%error, stream_seq = seq, "acking an applied event");
        }
        if applied && let Some(i) = apply::event_index(&event_type) {
            self.status.applied[i].inc();
        }
        self.status
            .last_seq
            .set(i64::try_from(seq).unwrap_or(i64::MAX));
        self.status
            .pending
            .set(i64::try_from(pending).unwrap_or(i64::MAX));
        self.status.apply_duration.observe(started.elapsed());
        true
    }

    async fn apply(&self, event_type: &str, payload: &Bytes, seq: u64) -> Result<(), Failure> {
        let Some(event) = apply::parse(event_type, payload).map_err(Failure::Bad)? else {
            return Ok(());
        };
        let reads = event.reads();
        let current = self.read(&reads).await?;
        let writes = event.apply(seq, self.config.resources, &current);
        self.write(writes).await
    }

    async fn read(&self, reads: &apply::Reads) -> Result<Current, Failure> {
        let mut current = Current::default();
        for key in &reads.keys {
            let value = self
                .kv
                .get(key)
                .await
                .map_err(|e| Failure::Nats("kv_read", format!("reading {key}: {e}")))?;
            self.status.kv_reads.inc();
            current.values.push((key.clone(), value));
        }
        for filter in &reads.lists {
            let keys = self.reader.keys(filter).await.map_err(|e| {
                Failure::Nats(
                    "kv_read",
                    format!("{e}: {:?}", std::error::Error::source(&e)),
                )
            })?;
            self.status.kv_reads.inc();
            current.listed.extend(keys);
        }
        Ok(current)
    }

    async fn write(&self, writes: Writes) -> Result<(), Failure> {
        let Writes { ops, commit } = writes;
        futures_util::stream::iter(ops.into_iter().map(|op| self.write_one(op)))
            .buffer_unordered(CONCURRENT_WRITES)
            .try_collect::<()>()
            .await?;
        if let Some(op) = commit {
            self.write_one(op).await?;
        }
        Ok(())
    }

    async fn write_one(&self, op: Op) -> Result<(), Failure> {
        let result = match op {
            Op::Put { key, value } => self
                .kv
                .put(&key, Bytes::from(value))
                .await
                .map(drop)
                .map_err(|e| format!("writing {key}: {e}")),
            Op::Delete { key } => self
                .kv
                .delete(&key)
                .await
                .map_err(|e| format!("deleting {key}: {e}")),
        };
        result.map_err(|e| Failure::Nats("kv_write", e))?;
        self.status.kv_writes.inc();
        Ok(())
    }
}

enum Failure {
    Bad(apply::ApplyError),
    Nats(&'static str, String),
}
