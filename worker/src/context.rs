//! What a handler gets besides its event: the REST client, gateway commands, and the event's
//! headers and delivery.

use std::sync::Arc;

use async_nats::HeaderMap;
use bytes::Bytes;
use shardyard_protocol::BotKey;

use crate::commands::GatewayCommands;
use crate::event::EventInfo;

/// Per-bot state every handler shares.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) bot: BotKey,
    pub(crate) rest: twilight_http::Client,
    pub(crate) gateway: GatewayCommands,
    // The central cache's reader (`shardyard_cache::CacheReader`) joins here once the cache
    // crate is merged, with `Context::cache()` beside `rest()` and `gateway()`.
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

    /// The bot.
    #[must_use]
    pub fn bot(&self) -> &BotKey {
        &self.shared.bot
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
