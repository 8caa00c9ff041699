//! The consume loop: the durable pull consumer, bounded concurrency, and every ack in one
//! place ([`Worker::settle`]).

use std::any::Any;
use std::collections::HashMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, PullConsumer, pull};
use async_nats::jetstream::{self, AckKind};
use async_nats::{Client, Subject};
use futures_util::{FutureExt as _, StreamExt as _};
use shardyard_protocol::names::{headers, worker_consumer};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::bot::{Bot, Handler};
use crate::commands::{GatewayCommands, ShardTotal};
use crate::config::{DeliverFrom, WorkerConfig};
use crate::context::{Context, Incoming, LazyCache, Shared, StartContext};
use crate::error::HandlerError;
use crate::event::EventInfo;
use crate::metrics::{Metrics, Outcome};
use crate::order::{Lanes, OrderKey, order_key};

/// Why a worker could not run.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The NATS URL cannot be used.
    #[error("cannot connect to NATS at {url}")]
    Connect {
        /// The URL.
        url: String,
        /// Why.
        #[source]
        source: async_nats::ConnectError,
    },
}

/// How long shutdown keeps reading messages already pulled, to hand them back at once instead
/// of letting them wait for `ack_wait`.
const HAND_BACK_WINDOW: Duration = Duration::from_millis(250);
/// How long shutdown waits for NATS to take the last acknowledgements, and again to drain.
const FINAL_FLUSH_TIMEOUT: Duration = Duration::from_secs(3);
/// Idle heartbeat of pull requests: a silent server is noticed within two of these.
const PULL_HEARTBEAT: Duration = Duration::from_secs(5);
/// How long a pull request lasts.
const PULL_EXPIRES: Duration = Duration::from_secs(30);
/// The longest wait between attempts to reach NATS, the stream or the consumer.
const MAX_SETUP_BACKOFF: Duration = Duration::from_secs(5);
/// How long the dead-letter stream keeps a dead letter (as long as SQS keeps one at most).
const DEAD_LETTER_MAX_AGE: Duration = Duration::from_secs(14 * 24 * 60 * 60);
/// The most the dead-letter stream holds before its oldest letters go.
const DEAD_LETTER_MAX_BYTES: i64 = 1024 * 1024 * 1024;
/// The longest `Shardyard-Error` header.
const MAX_ERROR_BYTES: usize = 1024;

/// One pulled message on its way through a handler: acknowledged exactly once, and handed
/// back (NAK) if dropped unacknowledged, so a panic or an aborted task never strands it.
pub(crate) struct Delivery {
    client: Client,
    reply: Option<Subject>,
}

impl Delivery {
    fn new(client: Client, reply: Option<Subject>) -> Self {
        Self { client, reply }
    }

    /// Sends the final acknowledgement of any kind (ack, NAK, term): the only place one is sent.
    async fn finish(mut self, kind: AckKind) {
        if let Some(reply) = self.reply.take()
            && let Err(error) = self.client.publish(reply, kind.into()).await
        {
            tracing::warn!(%error, "cannot send an acknowledgement: the event will be redelivered after ack_wait");
        }
    }
}

impl Drop for Delivery {
    fn drop(&mut self) {
        if let Some(reply) = self.reply.take()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            let client = self.client.clone();
            runtime.spawn(async move {
                let _ = client.publish(reply, AckKind::Nak(None).into()).await;
            });
        }
    }
}

/// A pulled event with what it holds: its concurrency permit and its acknowledgement.
pub(crate) struct Job {
    delivery: Delivery,
    incoming: Arc<Incoming>,
    _permit: OwnedSemaphorePermit,
    _in_flight: InFlight,
}

struct InFlight(Arc<Metrics>);

impl InFlight {
    fn new(metrics: &Arc<Metrics>) -> Self {
        metrics.in_flight(1);
        Self(Arc::clone(metrics))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight(-1);
    }
}

/// What one run of an event's handlers came to.
enum Attempt {
    Ok,
    Failed(HandlerError),
    Panicked(String),
    /// Cut off by the end of the shutdown grace.
    Abandoned,
}

struct Worker {
    config: WorkerConfig,
    shared: Arc<Shared>,
    handlers: Arc<HashMap<String, Vec<Handler>>>,
    metrics: Arc<Metrics>,
    total: Arc<ShardTotal>,
    client: Client,
    js: jetstream::Context,
    lanes: Mutex<Lanes<OrderKey, Job>>,
    /// Cancelled when shutdown begins: no new pulls, no new lane items.
    stopping: CancellationToken,
    /// Cancelled when the shutdown grace is over: running handlers are abandoned.
    hard_stop: CancellationToken,
}

/// Runs `bot` until `shutdown` (see [`Bot::run`]).
pub(crate) async fn run(bot: Bot, shutdown: CancellationToken) -> Result<(), WorkerError> {
    let Bot {
        config,
        handlers,
        start_hooks,
        metrics,
    } = bot;
    let client = async_nats::ConnectOptions::new()
        .name(format!("shardyard-worker {}", config.bot))
        .retry_on_initial_connect()
        .connect(config.nats_url.as_str())
        .await
        .map_err(|source| WorkerError::Connect {
            url: config.nats_url.clone(),
            source,
        })?;
    // twilight-http's TLS needs a crypto provider; keep one the application installed.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let total = Arc::new(ShardTotal::new(config.shards));
    let rest = crate::rest::client(&config);
    let shared = Arc::new(Shared {
        bot: config.bot.clone(),
        nats: client.clone(),
        rest,
        gateway: GatewayCommands::with_total(
            client.clone(),
            config.bot.clone(),
            Arc::clone(&total),
        ),
        cache: LazyCache::new(jetstream::new(client.clone()), config.bot.clone()),
    });
    let stopping = shutdown.child_token();
    crate::start::spawn_hooks(
        &start_hooks,
        &StartContext::new(Arc::clone(&shared)),
        config.retry,
        &stopping,
    );
    let worker = Arc::new(Worker {
        js: jetstream::new(client.clone()),
        client,
        shared,
        handlers,
        metrics,
        total,
        lanes: Mutex::new(Lanes::default()),
        stopping,
        hard_stop: CancellationToken::new(),
        config,
    });
    worker.consume().await;
    Ok(())
}

/// The panic's message, when it has one.
fn panic_message(panic: &(dyn Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned())
}

/// `reason` as a header value: one line, at most [`MAX_ERROR_BYTES`].
fn header_value(reason: &str) -> String {
    let mut value: String = reason
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if value.len() > MAX_ERROR_BYTES {
        let mut end = MAX_ERROR_BYTES;
        while !value.is_char_boundary(end) {
            end -= 1;
        }
        value.truncate(end);
    }
    value
}

impl Worker {
    fn lanes(&self) -> std::sync::MutexGuard<'_, Lanes<OrderKey, Job>> {
        self.lanes.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Retries `step` with backoff until it succeeds, or `None` once stopping.
    async fn retry<T, E: std::fmt::Display, F, Fut>(&self, what: &str, mut step: F) -> Option<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let mut wait = Duration::from_millis(100);
        loop {
            let result = tokio::select! {
                () = self.stopping.cancelled() => return None,
                result = step() => result,
            };
            match result {
                Ok(value) => return Some(value),
                Err(error) => tracing::warn!(%error, "{what}; retrying in {wait:?}"),
            }
            tokio::select! {
                () = self.stopping.cancelled() => return None,
                () = tokio::time::sleep(wait) => {}
            }
            wait = (wait * 2).min(MAX_SETUP_BACKOFF);
        }
    }

    /// The dead-letter stream (created if missing), the event stream (waited for: the gateway
    /// or the operator creates it) and the durable consumer (created or updated).
    async fn ensure_consumer(&self) -> Option<PullConsumer> {
        let bot = &self.config.bot;
        self.retry("cannot create the dead-letter stream", || {
            self.js.get_or_create_stream(jetstream::stream::Config {
                name: bot.dead_letter_stream(),
                subjects: vec![bot.dead_letter_filter()],
                storage: jetstream::stream::StorageType::File,
                // Bounded, so that a handler failing on every event cannot fill JetStream's
                // storage: the oldest dead letters go first.
                max_age: DEAD_LETTER_MAX_AGE,
                max_bytes: DEAD_LETTER_MAX_BYTES,
                discard: jetstream::stream::DiscardPolicy::Old,
                ..Default::default()
            })
        })
        .await?;
        let stream_name = bot.stream();
        let stream = self
            .retry(
                &format!("waiting for the event stream {stream_name}"),
                || self.js.get_stream(stream_name.as_str()),
            )
            .await?;
        let name = worker_consumer(self.config.group.as_deref());
        let mut types: Vec<&String> = self.handlers.keys().collect();
        types.sort_unstable();
        let consumer_config = pull::Config {
            durable_name: Some(name.clone()),
            description: Some(format!("shardyard workers of {bot}")),
            ack_policy: AckPolicy::Explicit,
            ack_wait: self.config.ack_wait,
            max_deliver: i64::from(self.config.max_deliver),
            filter_subjects: types.iter().map(|t| bot.event_type_filter(t)).collect(),
            deliver_policy: match self.config.deliver {
                DeliverFrom::All => DeliverPolicy::All,
                DeliverFrom::New => DeliverPolicy::New,
            },
            ..Default::default()
        };
        self.retry(&format!("cannot create or update the consumer {name}"), || async {
            match stream.create_consumer(consumer_config.clone()).await {
                Ok(consumer) => Ok(consumer),
                Err(error) => match stream.get_consumer::<pull::Config>(&name).await {
                    // A change the server refuses (the start of an existing consumer):
                    // keep consuming from it as it is.
                    Ok(consumer) => {
                        tracing::warn!(%error, consumer = %name, "cannot update the consumer; using it as it is");
                        Ok(consumer)
                    }
                    Err(_) => Err(error),
                },
            }
        })
        .await
    }

    async fn consume(self: Arc<Self>) {
        let semaphore = Arc::new(Semaphore::new(self.config.concurrency));
        let tracker = TaskTracker::new();
        let mut pulled = None;
        'pull: loop {
            let mut messages = match pulled.take() {
                Some(messages) => messages,
                None => {
                    let Some(consumer) = self.ensure_consumer().await else {
                        break 'pull;
                    };
                    let opened = self
                        .retry("cannot pull from the consumer", || {
                            consumer
                                .stream()
                                .max_messages_per_batch(self.config.concurrency)
                                .heartbeat(PULL_HEARTBEAT)
                                .expires(PULL_EXPIRES)
                                .messages()
                        })
                        .await;
                    let Some(messages) = opened else {
                        break 'pull;
                    };
                    tracing::info!(
                        bot = %self.config.bot,
                        types = ?self.handlers.keys().collect::<Vec<_>>(),
                        ordered = self.config.ordered,
                        "consuming"
                    );
                    self.metrics.set_ready(true);
                    messages
                }
            };
            loop {
                let permit = tokio::select! {
                    () = self.stopping.cancelled() => {
                        pulled = Some(messages);
                        break 'pull;
                    }
                    permit = Arc::clone(&semaphore).acquire_owned() => {
                        permit.expect("the semaphore is never closed")
                    }
                };
                let next = tokio::select! {
                    () = self.stopping.cancelled() => {
                        pulled = Some(messages);
                        break 'pull;
                    }
                    next = messages.next() => next,
                };
                match next {
                    Some(Ok(message)) => self.dispatch(message, permit, &tracker),
                    Some(Err(error)) => {
                        tracing::warn!(%error, "pulling failed; pulling again");
                        self.metrics.set_ready(false);
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue 'pull;
                    }
                    None => {
                        tracing::warn!("the pull ended; pulling again");
                        self.metrics.set_ready(false);
                        continue 'pull;
                    }
                }
            }
        }
        self.shut_down(pulled, tracker).await;
    }

    async fn shut_down(&self, pulled: Option<pull::Stream>, tracker: TaskTracker) {
        self.metrics.set_ready(false);
        tracing::info!("shutting down: no more pulls; in-flight events finish or go back");
        // Messages the server already sent (or sends to the open pull request now) go back at
        // once, after the pull is dropped so they are not sent to this worker again.
        let mut hand_back = Vec::new();
        if let Some(mut messages) = pulled {
            let deadline = tokio::time::Instant::now() + HAND_BACK_WINDOW;
            while let Ok(Some(Ok(message))) =
                tokio::time::timeout_at(deadline, messages.next()).await
            {
                hand_back.push(message);
            }
        }
        let waiting = self.lanes().take_waiting();
        let handed_back = hand_back.len() + waiting.len();
        let give_back = async {
            for message in hand_back {
                Delivery::new(self.client.clone(), message.message.reply)
                    .finish(AckKind::Nak(None))
                    .await;
            }
            for job in waiting {
                job.delivery.finish(AckKind::Nak(None)).await;
            }
        };
        if tokio::time::timeout(FINAL_FLUSH_TIMEOUT, give_back)
            .await
            .is_err()
        {
            tracing::warn!(
                "NATS did not take the hand-backs in time: they are redelivered after ack_wait"
            );
        }
        tracker.close();
        if tokio::time::timeout(self.config.shutdown_grace, tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                grace = ?self.config.shutdown_grace,
                "handlers still running after the shutdown grace: handing their events back"
            );
            self.hard_stop.cancel();
            tracker.wait().await;
        }
        // Bounded: with NATS gone both would wait for a reconnect that may never come, and a
        // pod that never stops is worse (Kubernetes kills it anyway). What was not acknowledged
        // is redelivered after ack_wait.
        match tokio::time::timeout(FINAL_FLUSH_TIMEOUT, self.client.flush()).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::warn!(%error, "cannot flush the last acknowledgements"),
            Err(_) => tracing::warn!(
                "NATS did not take the last acknowledgements in time: those events are redelivered after ack_wait"
            ),
        }
        match tokio::time::timeout(FINAL_FLUSH_TIMEOUT, self.client.drain()).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::warn!(%error, "cannot drain the NATS connection"),
            Err(_) => tracing::warn!("draining the NATS connection timed out"),
        }
        tracing::info!(handed_back, "worker stopped");
    }

    fn dispatch(
        self: &Arc<Self>,
        message: jetstream::Message,
        permit: OwnedSemaphorePermit,
        tracker: &TaskTracker,
    ) {
        let (stream_sequence, delivered, stored_at_us) = message
            .info()
            .map(|info| {
                let stored = info.published.unix_timestamp_nanos() / 1000;
                (
                    info.stream_sequence,
                    u32::try_from(info.delivered).unwrap_or(u32::MAX),
                    u64::try_from(stored).ok(),
                )
            })
            .unwrap_or((0, 1, None));
        let message = message.message;
        let mut info = EventInfo::from_headers(
            message.subject.as_str(),
            message.headers.as_ref(),
            stream_sequence,
            delivered,
        );
        info.stored_at_us = stored_at_us;
        if let Some((_, total)) = info.shard {
            self.total.observe(total);
        }
        let job = Job {
            delivery: Delivery::new(self.client.clone(), message.reply),
            incoming: Arc::new(Incoming {
                info,
                headers: message.headers,
                payload: message.payload,
            }),
            _permit: permit,
            _in_flight: InFlight::new(&self.metrics),
        };
        let key = if self.config.ordered {
            order_key(&job.incoming.info.event_type, &job.incoming.payload)
        } else {
            None
        };
        let worker = Arc::clone(self);
        match key {
            None => {
                tracker.spawn(async move { worker.process(job).await });
            }
            Some(key) => {
                let first = self.lanes().push(key, job);
                if let Some(job) = first {
                    tracker.spawn(async move { worker.run_lane(key, job).await });
                }
            }
        }
    }

    /// Runs one attempt of an event's handlers: parse errors, handler errors and panics all
    /// come back as an [`Attempt`]; the ack deadline is extended while it runs.
    async fn attempt(&self, job: &Job, lane: Option<OrderKey>, first: bool) -> Attempt {
        let info = &job.incoming.info;
        if first
            && info.delivered == 1
            && let Some(age) = info.age()
        {
            self.metrics.receive_latency(age);
        }
        let Some(handlers) = self.handlers.get(&info.event_type) else {
            return Attempt::Failed(HandlerError::fatal(format!(
                "no handler for event type {:?} (its subject matched the consumer's filter)",
                info.event_type
            )));
        };
        let ctx = Context::new(Arc::clone(&self.shared), Arc::clone(&job.incoming));
        let started = Instant::now();
        let run = async move {
            for handler in handlers {
                handler(ctx.clone()).await?;
            }
            Ok::<(), HandlerError>(())
        };
        let result = self
            .with_progress(AssertUnwindSafe(run).catch_unwind(), job, lane)
            .await;
        self.metrics.handler_duration(started.elapsed());
        match result {
            None => Attempt::Abandoned,
            Some(Ok(Ok(()))) => Attempt::Ok,
            Some(Ok(Err(error))) => Attempt::Failed(error),
            Some(Err(panic)) => Attempt::Panicked(panic_message(&*panic)),
        }
    }

    /// Runs `work`, telling JetStream every half `ack_wait` that the event (and the events
    /// waiting behind it in its lane) are still being worked on. `None` when the shutdown
    /// grace ended first.
    async fn with_progress<F: Future>(
        &self,
        work: F,
        job: &Job,
        lane: Option<OrderKey>,
    ) -> Option<F::Output> {
        let every = self.config.ack_wait / 2;
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        tokio::pin!(work);
        loop {
            tokio::select! {
                output = &mut work => return Some(output),
                () = self.hard_stop.cancelled() => return None,
                _ = tick.tick() => self.progress(job, lane).await,
            }
        }
    }

    async fn progress(&self, job: &Job, lane: Option<OrderKey>) {
        let mut replies: Vec<Subject> = job.delivery.reply.iter().cloned().collect();
        if let Some(key) = lane {
            replies.extend(
                self.lanes()
                    .waiting(&key)
                    .filter_map(|waiting| waiting.delivery.reply.clone()),
            );
        }
        for reply in replies {
            let _ = self.client.publish(reply, AckKind::Progress.into()).await;
        }
    }

    /// Unordered: one attempt, then ack, NAK with backoff, or dead letter.
    async fn process(&self, job: Job) {
        let attempt = self.attempt(&job, None, true).await;
        let delivered = job.incoming.info.delivered;
        self.settle(job, attempt, delivered).await;
    }

    /// Ordered: the events of one lane one after the other; a failing one is retried here
    /// (its ack deadline extended) so later events of the lane cannot overtake it.
    async fn run_lane(&self, key: OrderKey, mut job: Job) {
        loop {
            let first_attempt = job.incoming.info.delivered;
            let mut attempts = first_attempt;
            loop {
                let attempt = self
                    .attempt(&job, Some(key), attempts == first_attempt)
                    .await;
                let retry = match &attempt {
                    Attempt::Failed(error) => error.is_retryable(),
                    Attempt::Panicked(_) => true,
                    Attempt::Ok | Attempt::Abandoned => false,
                };
                if !retry || attempts >= self.config.max_deliver || self.stopping.is_cancelled() {
                    self.settle(job, attempt, attempts).await;
                    break;
                }
                self.count_retry(&job, &attempt, attempts);
                let wait = self.config.retry.delay(attempts);
                let waited = self
                    .with_progress(tokio::time::sleep(wait), &job, Some(key))
                    .await;
                if waited.is_none() {
                    self.settle(job, Attempt::Abandoned, attempts).await;
                    break;
                }
                attempts += 1;
            }
            let next = if self.stopping.is_cancelled() {
                None
            } else {
                self.lanes().next(&key)
            };
            match next {
                Some(next) => job = next,
                None => {
                    if self.stopping.is_cancelled() {
                        // Waiting items were taken out at shutdown; free the lane.
                        while self.lanes().next(&key).is_some() {}
                    }
                    return;
                }
            }
        }
    }

    fn count_retry(&self, job: &Job, attempt: &Attempt, attempts: u32) {
        let info = &job.incoming.info;
        match attempt {
            Attempt::Panicked(message) => {
                self.metrics.panicked();
                self.metrics.handled(&info.event_type, Outcome::Panic);
                tracing::warn!(event = %info.event_type, msg_id = ?info.msg_id, attempts, panic = %message, "handler panicked; retrying");
            }
            Attempt::Failed(error) => {
                self.metrics.handled(&info.event_type, Outcome::Retry);
                tracing::warn!(event = %info.event_type, msg_id = ?info.msg_id, attempts, %error, "handler failed; retrying");
            }
            Attempt::Ok | Attempt::Abandoned => {}
        }
    }

    /// Every acknowledgement decision: success → ack; retryable failure or panic with
    /// deliveries left → NAK with backoff; otherwise → dead letter, then term.
    async fn settle(&self, job: Job, attempt: Attempt, attempts: u32) {
        let event_type = job.incoming.info.event_type.clone();
        let last = attempts >= self.config.max_deliver;
        let reason = match attempt {
            Attempt::Ok => {
                self.metrics.handled(&event_type, Outcome::Ok);
                job.delivery.finish(AckKind::Ack).await;
                return;
            }
            Attempt::Abandoned => {
                job.delivery.finish(AckKind::Nak(None)).await;
                return;
            }
            Attempt::Failed(error) if error.is_retryable() && !last => {
                self.count_retry(&job, &Attempt::Failed(error), attempts);
                let delay = self.config.retry.delay(attempts);
                job.delivery.finish(AckKind::Nak(Some(delay))).await;
                return;
            }
            Attempt::Panicked(message) if !last => {
                self.count_retry(&job, &Attempt::Panicked(message), attempts);
                let delay = self.config.retry.delay(attempts);
                job.delivery.finish(AckKind::Nak(Some(delay))).await;
                return;
            }
            Attempt::Failed(error) if error.is_retryable() => {
                format!("failed {attempts} times (max_deliver): {error}")
            }
            Attempt::Failed(error) => error.to_string(),
            Attempt::Panicked(message) => {
                self.metrics.panicked();
                format!("the handler panicked {attempts} times (max_deliver): {message}")
            }
        };
        self.dead_letter(job, &reason).await;
    }

    /// Publishes the event to its dead-letter subject with `reason` in `Shardyard-Error` and
    /// waits for JetStream's ack, then terminates the original. If the dead-letter stream
    /// cannot take it, the original is handed back instead (never terminated unrecorded).
    async fn dead_letter(&self, job: Job, reason: &str) {
        let info = &job.incoming.info;
        let mut message_headers = job.incoming.headers.clone().unwrap_or_default();
        message_headers.insert(headers::ERROR, header_value(reason).as_str());
        let subject = self.config.bot.dead_letter_subject(&info.event_type);
        let mut wait = Duration::from_millis(100);
        for _ in 0..4 {
            let published = async {
                self.js
                    .publish_with_headers(
                        subject.clone(),
                        message_headers.clone(),
                        job.incoming.payload.clone(),
                    )
                    .await?
                    .await?;
                Ok::<(), Box<dyn std::error::Error + Send + Sync>>(())
            };
            match published.await {
                Ok(()) => {
                    self.metrics.handled(&info.event_type, Outcome::DeadLetter);
                    tracing::warn!(event = %info.event_type, msg_id = ?info.msg_id, %reason, "dead-lettered");
                    job.delivery.finish(AckKind::Term).await;
                    return;
                }
                Err(error) => {
                    tracing::warn!(%error, %subject, "cannot publish a dead letter; retrying");
                    self.progress(&job, None).await;
                    tokio::time::sleep(wait).await;
                    wait *= 2;
                }
            }
        }
        self.metrics.dead_letter_failed();
        tracing::error!(event = %info.event_type, msg_id = ?info.msg_id, %reason, "cannot dead-letter the event; handing it back");
        let delay = self.config.retry.delay(info.delivered);
        job.delivery.finish(AckKind::Nak(Some(delay))).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dead_letter_reasons_fit_a_header() {
        assert_eq!(header_value("a\r\nb"), "a  b");
        let long = "é".repeat(1000);
        let value = header_value(&long);
        assert!(value.len() <= MAX_ERROR_BYTES);
        assert!(value.chars().all(|c| c == 'é'));
        assert_eq!(panic_message(&"boom"), "boom");
        assert_eq!(panic_message(&String::from("bang")), "bang");
        assert_eq!(panic_message(&42), "a panic without a message");
    }
}
