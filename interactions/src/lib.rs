//! `shardyard interactions`: the bot's Interactions Endpoint. Discord sends slash commands,
//! components, autocomplete and modal submits here as signed HTTP requests instead of over the
//! gateway; each is verified, published to the bot's event stream as an `INTERACTION_CREATE`
//! (subject `shardyard.<bot>.events.http.INTERACTION_CREATE`, `Nats-Msg-Id:
//! interaction:<id>`, the reply subject in `Shardyard-Reply-To`), and Discord's request is held
//! open for the worker's answer, which becomes the HTTP response. Without an answer in time the
//! endpoint defers as Discord allows, and the worker's late answer becomes an edit of the
//! original response (the worker library does that). See `README.md`.

mod endpoint;
pub mod pending;
pub mod status;
pub mod verify;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_nats::jetstream;
use bytes::Bytes;
use futures_util::StreamExt as _;
use shardyard_protocol::{BotKey, InteractionReply};
use tokio_util::sync::CancellationToken;

pub use endpoint::INTERACTION_CREATE;
pub use status::EndpointStatus;
pub use verify::{BadPublicKey, Refusal, Verifier};

use crate::pending::Pending;

/// How often the bot's stream is looked for.
const STREAM_CHECK: Duration = Duration::from_secs(2);

/// What `shardyard interactions` runs.
#[derive(Debug, Clone)]
pub struct InteractionsConfig {
    /// The bot.
    pub bot: BotKey,
    /// NATS.
    pub nats_url: String,
    /// Where Discord's requests arrive (`POST /interactions`).
    pub listen: SocketAddr,
    /// The application's public key, 64 hex digits.
    pub public_key: String,
    /// How long Discord's request is held for a worker before deferring: safely under
    /// Discord's 3 s.
    pub answer_within: Duration,
    /// How far a request's timestamp may be from this host's clock.
    pub timestamp_window: Duration,
    /// The largest body accepted (413 above it).
    pub max_body_bytes: usize,
    /// After the shutdown signal, how long requests are still taken while `/readyz` says not
    /// ready: a Service's endpoints take a moment to drop a terminating pod.
    pub drain: Duration,
}

impl InteractionsConfig {
    /// The defaults: answer within 2.5 s, timestamps within 60 s, bodies up to 4 MiB, a 5 s
    /// drain.
    #[must_use]
    pub fn new(bot: BotKey, nats_url: String, listen: SocketAddr, public_key: String) -> Self {
        Self {
            bot,
            nats_url,
            listen,
            public_key,
            answer_within: Duration::from_millis(2_500),
            timestamp_window: Duration::from_secs(60),
            max_body_bytes: 4 << 20,
            drain: Duration::from_secs(5),
        }
    }
}

/// Why the endpoint could not run.
#[derive(Debug, thiserror::Error)]
pub enum InteractionsError {
    /// `--public-key` is unusable.
    #[error(transparent)]
    PublicKey(#[from] BadPublicKey),
    /// `--answer-within` at or past Discord's 3 s.
    #[error("the answer deadline must be under Discord's 3 s, not {0:?}")]
    Deadline(Duration),
    /// The admin server could not bind.
    #[error("serving /healthz, /readyz and /metrics on {addr}")]
    Admin {
        /// Where.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// NATS.
    #[error("NATS at {url}")]
    Nats {
        /// Where.
        url: String,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The listener could not bind or serve.
    #[error("listening for Discord's requests on {addr}")]
    Listen {
        /// Where.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Runs the endpoint until `shutdown`; then it says it is not ready, goes on taking requests for
/// `drain` (while the Service's endpoints drop the pod), stops taking them, answers the ones it
/// holds (each within its deadline) and returns.
///
/// # Errors
/// [`InteractionsError`].
pub async fn run(
    config: InteractionsConfig,
    admin_addr: Option<SocketAddr>,
    shutdown: CancellationToken,
) -> Result<(), InteractionsError> {
    let verifier = Verifier::new(&config.public_key, config.timestamp_window)?;
    if config.answer_within >= Duration::from_secs(3) || config.answer_within.is_zero() {
        return Err(InteractionsError::Deadline(config.answer_within));
    }
    let pending = Arc::new(Pending::default());
    let status = Arc::new(EndpointStatus::new(pending.clone()));
    if let Some(addr) = admin_addr {
        shardyard_admin::spawn(addr, status.clone(), shutdown.clone())
            .await
            .map_err(|source| InteractionsError::Admin { addr, source })?;
    }
    let connected = status.clone();
    let nats = async_nats::ConnectOptions::new()
        .name("shardyard-interactions")
        .retry_on_initial_connect()
        .event_callback(move |event| {
            let connected = connected.clone();
            async move {
                match event {
                    async_nats::Event::Connected => {
                        connected.nats_connected.store(true, Ordering::Relaxed);
                    }
                    async_nats::Event::Disconnected => {
                        connected.nats_connected.store(false, Ordering::Relaxed);
                    }
                    _ => {}
                }
            }
        })
        .connect(&config.nats_url)
        .await
        .map_err(|source| InteractionsError::Nats {
            url: config.nats_url.clone(),
            source: Box::new(source),
        })?;
    let js = jetstream::new(nats.clone());
    let reply_prefix = nats.new_inbox();
    let replies = nats
        .subscribe(format!("{reply_prefix}.*"))
        .await
        .map_err(|source| InteractionsError::Nats {
            url: config.nats_url.clone(),
            source: Box::new(source),
        })?;
    // Replies are taken until the last held request is answered, after the listener stops.
    let replies_stop = CancellationToken::new();
    let replies_task = tokio::spawn(take_replies(
        nats.clone(),
        replies,
        pending.clone(),
        status.clone(),
        replies_stop.clone(),
    ));
    tokio::spawn(watch_stream(
        js.clone(),
        config.bot.stream(),
        status.clone(),
        shutdown.clone(),
    ));

    let endpoint = Arc::new(endpoint::Endpoint {
        verifier,
        js,
        subject: config.bot.http_event_subject(INTERACTION_CREATE),
        reply_prefix,
        answer_within: config.answer_within,
        pending,
        status: status.clone(),
    });
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| InteractionsError::Listen {
            addr: config.listen,
            source,
        })?;
    tracing::info!(listen = %config.listen, bot = %config.bot, "taking Discord's interactions on POST /interactions");
    let stopping = status.clone();
    let stop = shutdown.clone();
    let drain = config.drain;
    let served = axum::serve(listener, endpoint::router(endpoint, config.max_body_bytes))
        .with_graceful_shutdown(async move {
            stop.cancelled().await;
            stopping.stopping.store(true, Ordering::Relaxed);
            tracing::info!(
                ?drain,
                "not ready; taking requests for the drain, then stopping"
            );
            tokio::time::sleep(drain).await;
        })
        .await;
    replies_stop.cancel();
    let _ = replies_task.await;
    let _ = nats.flush().await;
    served.map_err(|source| InteractionsError::Listen {
        addr: config.listen,
        source,
    })
}

/// Workers' answers on `<reply prefix>.<interaction id>`: handed to the held request, and the
/// outcome sent back to the worker.
async fn take_replies(
    nats: async_nats::Client,
    mut replies: async_nats::Subscriber,
    pending: Arc<Pending>,
    status: Arc<EndpointStatus>,
    stop: CancellationToken,
) {
    loop {
        let message = tokio::select! {
            () = stop.cancelled() => return,
            message = replies.next() => match message {
                Some(message) => message,
                None => return,
            },
        };
        let id = message.subject.rsplit('.').next().unwrap_or_default();
        let outcome = if is_response(&message.payload) {
            pending.respond(id, message.payload.clone())
        } else {
            InteractionReply::Refused {
                reason: "an interaction response is a JSON object with a numeric type".into(),
            }
        };
        if matches!(outcome, InteractionReply::Deferred { .. }) {
            status.late_answers.inc();
        }
        if let Some(reply) = message.reply {
            let body = serde_json::to_vec(&outcome).unwrap_or_default();
            if let Err(error) = nats.publish(reply, Bytes::from(body)).await {
                tracing::warn!(%error, "telling a worker what became of its answer failed");
            }
        }
    }
}

fn is_response(payload: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Value>(payload)
        .ok()
        .and_then(|v| v.get("type").and_then(serde_json::Value::as_u64))
        .is_some()
}

/// Keeps `stream_exists` up to date: ready only once the stream the operator (or a gateway)
/// creates is there.
async fn watch_stream(
    js: jetstream::Context,
    stream: String,
    status: Arc<EndpointStatus>,
    shutdown: CancellationToken,
) {
    loop {
        let exists = js.get_stream(&stream).await.is_ok();
        if exists != status.stream_exists.swap(exists, Ordering::Relaxed) {
            tracing::info!(%stream, exists, "the bot's event stream");
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(STREAM_CHECK) => {}
        }
    }
}
