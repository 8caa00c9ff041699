//! A bot: its handlers by event type, and [`Bot::run`].

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use shardyard_protocol::names::is_subject_token;
use tokio_util::sync::CancellationToken;

use crate::config::{ConfigError, WorkerConfig};
use crate::context::{Context, StartContext};
use crate::error::HandlerError;
use crate::event::{Event, parse_event};
use crate::metrics::Metrics;
use crate::start::{StartFuture, StartHook};

pub(crate) type HandlerFuture = Pin<Box<dyn Future<Output = Result<(), HandlerError>> + Send>>;
pub(crate) type Handler = Arc<dyn Fn(Context) -> HandlerFuture + Send + Sync>;

/// Builds a [`Bot`]: its configuration and a handler per event type it wants.
///
/// ```no_run
/// use shardyard_worker::{Bot, HandlerError};
/// use twilight_model::gateway::payload::incoming::MessageCreate;
///
/// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
/// let bot = Bot::from_env()?
///     .on(|ctx, msg: MessageCreate| async move {
///         if msg.content == "!ping" {
///             ctx.rest().create_message(msg.channel_id).content("pong").await?;
///         }
///         Ok::<_, HandlerError>(())
///     })
///     .build()?;
/// bot.run(tokio_util::sync::CancellationToken::new()).await?;
/// # Ok(())
/// # }
/// ```
pub struct BotBuilder {
    config: WorkerConfig,
    handlers: HashMap<String, Vec<Handler>>,
    start_hooks: Vec<StartHook>,
}

impl std::fmt::Debug for BotBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BotBuilder")
            .field("config", &self.config)
            .field("event_types", &self.handlers.keys().collect::<Vec<_>>())
            .field("start_hooks", &self.start_hooks.len())
            .finish()
    }
}

impl BotBuilder {
    /// Handles events of type `E` (`MESSAGE_CREATE` for
    /// `twilight_model::gateway::payload::incoming::MessageCreate`). The payload is parsed
    /// only when this handler runs; a payload that does not parse as `E` is dead-lettered with
    /// the reason ([`crate::EventParseError`]) without calling the handler. Several handlers of
    /// one type run one after the other, and all run again on a retry.
    #[must_use]
    pub fn on<E, F, Fut>(mut self, handler: F) -> Self
    where
        E: Event,
        F: Fn(Context, E) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), HandlerError>> + Send + 'static,
    {
        let handler: Handler = Arc::new(move |ctx: Context| -> HandlerFuture {
            match parse_event::<E>(ctx.payload()) {
                Ok(event) => Box::pin(handler(ctx, event)),
                Err(error) => Box::pin(std::future::ready(Err(HandlerError::fatal(error)))),
            }
        });
        self.handlers
            .entry(E::NAME.to_owned())
            .or_default()
            .push(handler);
        self
    }

    /// Handles events of `event_type` as raw bytes (the dispatch's `d`): for types
    /// twilight-model does not know, or to skip parsing.
    ///
    /// # Panics
    /// When `event_type` cannot be a NATS subject token (empty, or with `.`, `*`, `>` or
    /// whitespace): no Discord event type is like that.
    #[must_use]
    pub fn on_raw<F, Fut>(mut self, event_type: &str, handler: F) -> Self
    where
        F: Fn(Context, Bytes) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), HandlerError>> + Send + 'static,
    {
        assert!(
            is_subject_token(event_type),
            "{event_type:?} is not an event type"
        );
        let handler: Handler = Arc::new(move |ctx: Context| -> HandlerFuture {
            let payload = ctx.payload().clone();
            Box::pin(handler(ctx, payload))
        });
        self.handlers
            .entry(event_type.to_owned())
            .or_default()
            .push(handler);
        self
    }

    /// Runs `hook` once per process start, beside the consumer: for work a bot does at
    /// start-up, such as registering its application commands. Events are handled meanwhile,
    /// and whatever the hook does cannot stop the worker: an `Err` is logged as a warning; a
    /// retryable one (`?` on any error, [`HandlerError::retry`]) is tried again with the
    /// worker's retry backoff, up to [`START_HOOK_ATTEMPTS`](crate::START_HOOK_ATTEMPTS)
    /// attempts; a fatal one ([`HandlerError::fatal`]) or a panic is not. Shutdown cancels it.
    /// Several hooks run concurrently.
    ///
    /// Every replica runs its hooks, so make them idempotent (a bulk overwrite of the same
    /// commands is).
    ///
    /// ```no_run
    /// use shardyard_worker::{Bot, HandlerError};
    ///
    /// # fn example(bot: shardyard_worker::BotBuilder) {
    /// let bot = bot.on_start(|ctx| async move {
    ///     let me = ctx.rest().current_user().await?.model().await?;
    ///     tracing::info!(user = %me.name, "logged in");
    ///     Ok::<_, HandlerError>(())
    /// });
    /// # }
    /// ```
    #[must_use]
    pub fn on_start<F, Fut>(mut self, hook: F) -> Self
    where
        F: Fn(StartContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), HandlerError>> + Send + 'static,
    {
        let hook: StartHook =
            Arc::new(move |ctx: StartContext| -> StartFuture { Box::pin(hook(ctx)) });
        self.start_hooks.push(hook);
        self
    }

    /// Ordering mode: events of one guild (of one channel, for events without a guild) are
    /// handled one at a time in stream order, different guilds concurrently. A failing event
    /// is retried in place so later events of its guild cannot overtake it. See the README for
    /// what ordering means with several worker processes.
    #[must_use]
    pub fn ordered(mut self) -> Self {
        self.config.ordered = true;
        self
    }

    /// Changes the configuration.
    #[must_use]
    pub fn configure(mut self, change: impl FnOnce(&mut WorkerConfig)) -> Self {
        change(&mut self.config);
        self
    }

    /// The bot, ready to run.
    ///
    /// # Errors
    /// [`BuildError::NoHandlers`] without a handler; [`BuildError::Config`] for an invalid
    /// configuration.
    pub fn build(self) -> Result<Bot, BuildError> {
        if self.handlers.is_empty() {
            return Err(BuildError::NoHandlers);
        }
        self.config.validate().map_err(BuildError::Config)?;
        let metrics = Arc::new(Metrics::new(self.handlers.keys().map(String::as_str)));
        Ok(Bot {
            config: self.config,
            handlers: Arc::new(self.handlers),
            start_hooks: self.start_hooks,
            metrics,
        })
    }
}

/// A bot that cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// A bot without handlers would consume nothing.
    #[error("the bot has no handler: add one with .on() or .on_raw()")]
    NoHandlers,
    /// The configuration is invalid.
    #[error("invalid worker configuration")]
    Config(#[source] ConfigError),
}

/// A bot: handlers by event type, ready to [`run`](Self::run).
pub struct Bot {
    pub(crate) config: WorkerConfig,
    pub(crate) handlers: Arc<HashMap<String, Vec<Handler>>>,
    pub(crate) start_hooks: Vec<StartHook>,
    pub(crate) metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Bot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bot")
            .field("config", &self.config)
            .field("event_types", &self.event_types())
            .field("start_hooks", &self.start_hooks.len())
            .finish_non_exhaustive()
    }
}

impl Bot {
    /// A bot configured from the environment the operator injects ([`config::env`](mod@crate::config::env)).
    ///
    /// # Errors
    /// [`ConfigError`] when a required variable is missing or one is invalid.
    pub fn from_env() -> Result<BotBuilder, ConfigError> {
        Ok(Self::builder(WorkerConfig::from_env()?))
    }

    /// A bot with this configuration.
    #[must_use]
    pub fn builder(config: WorkerConfig) -> BotBuilder {
        BotBuilder {
            config,
            handlers: HashMap::new(),
            start_hooks: Vec::new(),
        }
    }

    /// The configuration.
    #[must_use]
    pub fn config(&self) -> &WorkerConfig {
        &self.config
    }

    /// The event types the bot handles, sorted: its consumer's filter.
    #[must_use]
    pub fn event_types(&self) -> Vec<&str> {
        let mut types: Vec<&str> = self.handlers.keys().map(String::as_str).collect();
        types.sort_unstable();
        types
    }

    /// The bot's metrics and readiness, for an admin server.
    #[must_use]
    pub fn metrics(&self) -> Arc<Metrics> {
        Arc::clone(&self.metrics)
    }

    /// Consumes and handles events until `shutdown` is cancelled, then stops pulling,
    /// lets in-flight events finish (for up to the shutdown grace, then hands them back) and
    /// drains NATS. Waits (not ready) while the event stream does not exist yet.
    ///
    /// # Errors
    /// [`crate::WorkerError`] when NATS cannot be used at all (an invalid URL).
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), crate::WorkerError> {
        crate::consume::run(self, shutdown).await
    }
}
