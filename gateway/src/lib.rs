//! The gateway service: a bot's Discord websocket shards, every dispatch published to JetStream
//! per the contract in `shared/DESIGN.md` (subject, headers, `Nats-Msg-Id`, the raw bytes of
//! `d`), a shard's sequence advancing only past what JetStream acknowledged, and reconnects that
//! follow Discord's close codes.
#![cfg_attr(not(test), warn(clippy::unwrap_used))]

pub mod admin;
pub mod commands;
pub mod config;
pub mod coordinator;
pub mod decompress;
pub mod discord;
pub mod generation;
pub mod inflate;
pub mod nats_link;
pub mod pacer;
pub mod publisher;
pub mod readiness;
pub mod send_limit;
pub mod sessions;
pub mod shard;
pub mod status;
pub mod window;
pub mod zstd;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

pub use config::{Compression, GatewayConfig, StreamLimits};
use tokio_util::sync::CancellationToken;

/// Why the gateway could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// `GET /gateway/bot` failed.
    #[error("asking Discord for the gateway")]
    Discord(#[from] discord::DiscordError),
    /// NATS could not be reached.
    #[error("connecting to NATS at {url}")]
    Nats {
        /// The URL.
        url: String,
        /// Why.
        #[source]
        source: async_nats::ConnectError,
    },
    /// `--nats` cannot be used for the publishing connection.
    #[error("the NATS URL cannot be used for publishing")]
    NatsAddress(#[from] nats_link::AddressError),
    /// The event stream could not be ensured.
    #[error("preparing the event stream")]
    Stream(#[from] publisher::PublishError),
    /// The admin address could not be bound.
    #[error("binding the admin server on {addr}")]
    Admin {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The sessions bucket could not be opened.
    #[error("opening the sessions bucket")]
    Sessions(#[from] sessions::SessionStoreError),
    /// The identify coordinator could not start.
    #[error("starting the identify coordinator")]
    Identify(#[from] coordinator::CoordinatorError),
    /// The active generation could not be read.
    #[error("reading the active shard generation")]
    Generation(#[from] generation::GenerationError),
    /// A shard range outside the bot's shard count.
    #[error("shards {start}..{end} are not within 0..{total}")]
    ShardsOutOfRange {
        /// First shard.
        start: u32,
        /// Past the last shard.
        end: u32,
        /// Shard count.
        total: u32,
    },
}

/// How long shutdown waits for the NATS client's last flush.
const FINAL_FLUSH_TIMEOUT: Duration = Duration::from_secs(3);

/// Runs the gateway until `shutdown` is cancelled (then closes every shard resumably) or every
/// shard failed.
///
/// # Errors
/// [`GatewayError`] when it cannot start.
pub async fn run(
    config: GatewayConfig,
    admin_addr: Option<SocketAddr>,
    shutdown: CancellationToken,
) -> Result<(), GatewayError> {
    if config.shards.end > config.total || config.shards.is_empty() {
        return Err(GatewayError::ShardsOutOfRange {
            start: config.shards.start,
            end: config.shards.end,
            total: config.total,
        });
    }
    let status = Arc::new(status::GatewayStatus {
        shards: config
            .shards
            .clone()
            .map(status::ShardStatus::new)
            .map(Arc::new)
            .collect(),
        link: std::sync::OnceLock::new(),
    });
    if let Some(addr) = admin_addr {
        shardyard_admin::spawn(addr, status.clone(), shutdown.clone())
            .await
            .map_err(|source| GatewayError::Admin { addr, source })?;
    }
    // TLS for https:// and wss:// uses ring; a no-op when the binary installed it already.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .build()
        .map_err(|source| discord::DiscordError::Request {
            url: config.api_base.clone(),
            source,
        })?;
    // The REST proxy the operator points us at may still be starting: retry soon, then back off;
    // if it stays unreachable, ask the fallback (Discord itself) rather than never start.
    let mut backoff = Duration::from_millis(500);
    let failing_since = tokio::time::Instant::now();
    let info = loop {
        let api_base = match &config.api_fallback {
            Some(fallback) if failing_since.elapsed() >= config.api_fallback_after => {
                tracing::warn!(%fallback, "asking for the gateway at the fallback: --api-base has failed since start");
                fallback
            }
            _ => &config.api_base,
        };
        match discord::gateway_bot(&http, api_base, &config.token).await {
            Ok(info) => break info,
            Err(e) if e.is_retryable() => {
                let wait = e.retry_after().unwrap_or(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(5));
                tracing::warn!(
                    error = %e,
                    retry_in_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                    "asking for the gateway failed; retrying"
                );
                tokio::select! {
                    () = shutdown.cancelled() => return Ok(()),
                    () = tokio::time::sleep(wait) => {}
                }
            }
            Err(e) => return Err(e.into()),
        }
    };
    tracing::info!(
        url = %info.url,
        recommended_shards = info.shards,
        total = config.total,
        max_concurrency = info.session_start_limit.max_concurrency,
        remaining = info.session_start_limit.remaining,
        "gateway found"
    );
    let nats = async_nats::ConnectOptions::new()
        .name("shardyard-gateway")
        .retry_on_initial_connect()
        .connect(&config.nats_url)
        .await
        .map_err(|source| GatewayError::Nats {
            url: config.nats_url.clone(),
            source,
        })?;
    let js = async_nats::jetstream::new(nats.clone());
    // Dispatches go over a connection of their own (see `nats_link` for why).
    let link = nats_link::NatsLink::start(
        &config.nats_url,
        "shardyard-gateway-publish",
        config.publish_linger,
    )?;
    let _close_link = link.close_on_drop();
    let _ = status.link.set(link.clone());
    let publisher =
        publisher::Publisher::new(js.clone(), link.clone(), config.bot.clone(), config.total)
            .with_stream_limits(config.stream_limits);
    publisher.ensure_stream().await?;
    let generation = match config.generation {
        Some(g) => generation::GenerationGate::watch(&js, &config.bot, g, shutdown.clone()).await?,
        None => generation::GenerationGate::always(),
    };
    // Stopped with the process, or once every shard has ended for good.
    let readiness_stop = shutdown.child_token();
    let readiness = match (config.generation, generation.control_store()) {
        (Some(number), Some(store)) => Some(tokio::spawn(readiness::report(
            store,
            number,
            config.total,
            status.shards.clone(),
            generation.clone(),
            readiness_stop.clone(),
        ))),
        _ => None,
    };
    let sessions = sessions::SessionStore::open(&js, &config.bot).await?;
    let gate = Arc::new(coordinator::IdentifyGate::Nats(Box::new(
        coordinator::Coordinator::open(
            &js,
            &config.bot,
            coordinator::CoordinatorConfig::new(&info.session_start_limit),
        )
        .await?,
    )));
    let ctx = shard::ShardContext {
        config: Arc::new(config),
        gateway_url: info.url.clone(),
        publisher,
        gate,
        sessions,
        generation,
        shutdown: shutdown.clone(),
    };
    let mut tasks = tokio::task::JoinSet::new();
    for status in &status.shards {
        let shard = status.id;
        // Commands from workers: validated by `serve`, sent by the shard within its send limit.
        let (command_tx, command_rx) = tokio::sync::mpsc::channel(32);
        let (client, bot, stop) = (nats.clone(), ctx.config.bot.clone(), shutdown.clone());
        let (total, intents) = (ctx.config.total, ctx.config.intents);
        tokio::spawn(async move {
            if let Err(e) =
                commands::serve(client, bot, shard, total, intents, command_tx, stop).await
            {
                tracing::error!(shard, error = %e, "gateway commands unavailable");
            }
        });
        let span = tracing::info_span!("shard", id = shard);
        tasks.spawn(tracing::Instrument::instrument(
            shard::run(ctx.clone(), status.clone(), command_rx),
            span,
        ));
    }
    while tasks.join_next().await.is_some() {}
    if let Some(readiness) = readiness {
        // The shards are stopped: their ready keys go.
        readiness_stop.cancel();
        let _ = readiness.await;
    }
    // Every publish was awaited by its shard; flush what the client still buffers. Bounded: with
    // NATS gone the flush would wait for a reconnect forever, and a stopping pod must exit.
    if tokio::time::timeout(FINAL_FLUSH_TIMEOUT, nats.flush())
        .await
        .is_err()
    {
        tracing::warn!("NATS did not take the final flush in time; exiting anyway");
    }
    Ok(())
}
