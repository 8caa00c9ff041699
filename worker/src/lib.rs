//! The library shardyard bot authors build workers on.
//!
//! A worker consumes its bot's events from JetStream (the durable pull consumer of its worker
//! group, filtered to the event types it handles), runs a handler per event with bounded
//! concurrency, and acknowledges each in one place: success → ack; retryable error → NAK with
//! backoff; `max_deliver` reached or a fatal error → the event is published to the bot's
//! dead-letter subject with the reason, then terminated. Events are twilight-model types parsed
//! lazily from the raw payload; handlers call Discord's REST API through the shardyard REST
//! proxy with twilight-http, and send gateway commands to the right shard over NATS.
//!
//! ```no_run
//! use shardyard_worker::{Bot, HandlerError};
//! use twilight_model::gateway::payload::incoming::MessageCreate;
//!
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let bot = Bot::from_env()? // SHARDYARD_BOT, SHARDYARD_NATS_URL, SHARDYARD_REST_URL, …
//!     .on(|ctx, msg: MessageCreate| async move {
//!         if msg.content == "!ping" {
//!             ctx.rest().create_message(msg.channel_id).content("pong").await?;
//!         }
//!         Ok::<_, HandlerError>(())
//!     })
//!     .build()?;
//! bot.run(tokio_util::sync::CancellationToken::new()).await?;
//! # Ok(())
//! # }
//! ```
//!
//! See `worker/README.md` for the configuration, the ack, retry and dead-letter semantics,
//! ordering, shutdown and metrics.
#![warn(missing_docs)]
#![cfg_attr(not(test), warn(clippy::unwrap_used))]

mod backoff;
mod bot;
mod commands;
pub mod config;
mod consume;
mod context;
mod error;
mod event;
pub mod example;
mod interaction;
mod metrics;
mod order;
mod rest;
mod start;

pub use backoff::Backoff;
pub use bot::{Bot, BotBuilder, BuildError};
pub use commands::{
    Activity, COMMAND_TIMEOUT, CommandError, GatewayCommands, MemberQuery, Presence,
    RequestGuildMembers, VoiceStateUpdate,
};
pub use config::{ConfigError, DeliverFrom, WorkerConfig};
pub use consume::WorkerError;
pub use context::{Context, StartContext};
pub use error::HandlerError;
pub use event::{Event, EventInfo, EventParseError, KNOWN_EVENTS, parse_event};
pub use interaction::{RespondError, Responded, rest_error};
pub use metrics::{Metrics, Outcome};
pub use order::{OrderKey, order_key};
pub use rest::REST_ANSWER_MARGIN;
pub use shardyard_cache::{self as cache, CacheReader};
pub use start::START_HOOK_ATTEMPTS;
pub use twilight_http;
pub use twilight_model;

/// The README's examples, compiled as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
