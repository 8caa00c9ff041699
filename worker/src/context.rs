//! What a handler gets besides its event: the REST client, gateway commands, the central
//! cache, and the event's headers and delivery.

use std::sync::Arc;

use async_nats::HeaderMap;
use async_nats::jetstream;
use bytes::Bytes;
use shardyard_cache::{CacheReader, ReadError};
use shardyard_protocol::BotKey;
use tokio::sync::OnceCell;

use crate::commands::GatewayCommands;
use crate::event::EventInfo;

/// Per-bot state every handler shares.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) bot: BotKey,
    /// The worker's NATS connection (answers to interactions that came over HTTP).
    pub(crate) nats: async_nats::Client,
    pub(crate) rest: twilight_http::Client,
    pub(crate) gateway: GatewayCommands,
    pub(crate) cache: LazyCache,
}

/// The central cache's reader, opened on first use: its bucket is made by `shardyard cache`,
/// which may start after the worker, and a bot that never reads the cache never opens it.
#[derive(Debug)]
pub(crate) struct LazyCache {
    js: jetstream::Context,
    bot: BotKey,
    reader: OnceCell<CacheReader>,
}

impl LazyCache {
    pub(crate) fn new(js: jetstream::Context, bot: BotKey) -> Self {
        Self {
            js,
            bot,
            reader: OnceCell::new(),
        }
    }

    /// The reader; an error (the bucket does not exist yet, NATS did not answer) is not kept,
    /// so the next call tries again.
    async fn get(&self) -> Result<&CacheReader, ReadError> {
        self.reader
            .get_or_try_init(|| CacheReader::open(&self.js, &self.bot))
            .await
    }
}

/// One event as it arrived: headers, payload, what they say.
#[derive(Debug)]
pub(crate) struct Incoming {
    pub(crate) info: EventInfo,
    pub(crate) headers: Option<HeaderMap>,
    pub(crate) payload: Bytes,
}

/// A handler's view of the bot and of the event being handled. Cheap to clone (two `Arc`s),
/// so it can move into tasks the handler spawns.
#[derive(Debug, Clone)]
pub struct Context {
    shared: Arc<Shared>,
    incoming: Arc<Incoming>,
}

impl Context {
    pub(crate) fn new(shared: Arc<Shared>, incoming: Arc<Incoming>) -> Self {
        Self { shared, incoming }
    }

    /// Discord's REST API through the shardyard REST proxy: twilight-http in proxy mode,
    /// without a token (the proxy adds the bot's) and without a rate limiter of its own (the
    /// proxy shares Discord's limits between every process of the bot).
    #[must_use]
    pub fn rest(&self) -> &twilight_http::Client {
        &self.shared.rest
    }

    /// Gateway commands (presence, request guild members, voice state), sent to the right
    /// shard.
    #[must_use]
    pub fn gateway(&self) -> &GatewayCommands {
        &self.shared.gateway
    }

    /// The central cache (guilds, channels, roles, members, users, … kept by `shardyard cache`
    /// in NATS KV; keys and values in `cache/README.md`).
    ///
    /// # Errors
    /// [`ReadError::Open`] while the cache's bucket does not exist yet (`shardyard cache` has
    /// not started) or NATS does not answer; the next call tries again.
    pub async fn cache(&self) -> Result<&CacheReader, ReadError> {
        self.shared.cache.get().await
    }

    /// The bot.
    #[must_use]
    pub fn bot(&self) -> &BotKey {
        &self.shared.bot
    }

    /// The worker's NATS connection.
    pub(crate) fn nats(&self) -> &async_nats::Client {
        &self.shared.nats
    }

    /// The event's type, shard, sequence, message id, receive time and delivery count.
    #[must_use]
    pub fn event(&self) -> &EventInfo {
        &self.incoming.info
    }

    /// Every header of the event's message.
    #[must_use]
    pub fn headers(&self) -> Option<&HeaderMap> {
        self.incoming.headers.as_ref()
    }

    /// The raw payload: the dispatch's `d`, byte for byte as Discord sent it.
    #[must_use]
    pub fn payload(&self) -> &Bytes {
        &self.incoming.payload
    }
}

/// What a start-up hook gets ([`BotBuilder::on_start`](crate::BotBuilder::on_start)): the bot's
/// REST client, gateway commands and central cache, as handlers have them, without an event.
/// Cheap to clone.
#[derive(Debug, Clone)]
pub struct StartContext {
    shared: Arc<Shared>,
}

impl StartContext {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    /// Discord's REST API through the shardyard REST proxy, as [`Context::rest`].
    #[must_use]
    pub fn rest(&self) -> &twilight_http::Client {
        &self.shared.rest
    }

    /// Gateway commands, as [`Context::gateway`]. Before the first event is consumed the
    /// shard total is known only from `SHARDYARD_SHARDS`.
    #[must_use]
    pub fn gateway(&self) -> &GatewayCommands {
        &self.shared.gateway
    }

    /// The central cache, as [`Context::cache`].
    ///
    /// # Errors
    /// [`ReadError::Open`] while the cache's bucket does not exist yet or NATS does not answer.
    pub async fn cache(&self) -> Result<&CacheReader, ReadError> {
        self.shared.cache.get().await
    }

    /// The bot.
    #[must_use]
    pub fn bot(&self) -> &BotKey {
        &self.shared.bot
    }
}
