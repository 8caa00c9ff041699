//! Gateway commands (presence, request guild members, voice state) sent over NATS to the shard
//! that holds the guild, with the gateway's reply as a typed result. The contract (request and
//! reply JSON) is documented in `gateway/src/commands.rs`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use shardyard_protocol::{BotKey, CommandReply, shard_for_guild};
use twilight_model::gateway::presence::{ActivityType, Status};
use twilight_model::id::Id;
use twilight_model::id::marker::{ChannelMarker, GuildMarker, UserMarker};

/// How long a command waits for the gateway's reply: the gateway answers within its queue
/// timeout (5 s) plus the time a claimed command may take (10 s).
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(20);

/// A presence update (gateway op 3), sent to one shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Presence {
    /// Online, idle, do not disturb, invisible or offline.
    pub status: Status,
    /// What the bot is doing.
    pub activities: Vec<Activity>,
    /// Whether the bot is away.
    pub afk: bool,
    /// Since when it is idle, in unix milliseconds.
    pub since: Option<u64>,
}

impl Presence {
    /// `status` with no activity, not afk.
    #[must_use]
    pub fn new(status: Status) -> Self {
        Self {
            status,
            activities: Vec::new(),
            afk: false,
            since: None,
        }
    }

    /// Adds an activity.
    #[must_use]
    pub fn activity(mut self, kind: ActivityType, name: impl Into<String>) -> Self {
        self.activities.push(Activity {
            kind,
            name: name.into(),
        });
        self
    }
}

/// An activity of a [`Presence`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Activity {
    /// Playing, listening, watching, …
    pub kind: ActivityType,
    /// What.
    pub name: String,
}

/// Which members a [`RequestGuildMembers`] asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemberQuery {
    /// Members whose username starts with `query`, at most `limit` (0–100; 0 with an empty
    /// query means every member and needs the `GUILD_MEMBERS` intent).
    Prefix {
        /// The username prefix; empty for everyone.
        query: String,
        /// The most members to return.
        limit: u16,
    },
    /// These users (1–100).
    Users(Vec<Id<UserMarker>>),
}

/// Request guild members (gateway op 8): Discord answers with `GUILD_MEMBERS_CHUNK` events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestGuildMembers {
    /// The guild.
    pub guild_id: Id<GuildMarker>,
    /// Which members.
    pub query: MemberQuery,
    /// Whether to include their presences.
    pub presences: bool,
    /// Echoed in the chunks, to match them with the request (at most 32 bytes).
    pub nonce: Option<String>,
}

/// A voice state update (gateway op 4): join, move or leave a voice channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VoiceStateUpdate {
    /// The guild.
    pub guild_id: Id<GuildMarker>,
    /// The channel to join, or `None` to leave.
    pub channel_id: Option<Id<ChannelMarker>>,
    /// Whether the bot mutes itself.
    pub self_mute: bool,
    /// Whether the bot deafens itself.
    pub self_deaf: bool,
}

/// Why a command was not sent.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The gateway refused it as invalid; sending it unchanged will fail again.
    #[error("the gateway rejected the command: {reason}")]
    Rejected {
        /// What is wrong with it.
        reason: String,
    },
    /// The shard's send budget or queue is full: try again after `retry_after`.
    #[error("the shard is busy: retry after {retry_after:?}")]
    RetryAfter {
        /// How long to wait.
        retry_after: Duration,
    },
    /// The shard is not connected (or, as the reason says, its connection ended while
    /// sending, so the command may have been sent).
    #[error("the shard is unavailable: {reason}")]
    Unavailable {
        /// Why.
        reason: String,
    },
    /// No gateway process holds the shard's command subject.
    #[error("no gateway listens for commands to shard {shard}")]
    NoGateway {
        /// The shard.
        shard: u32,
    },
    /// The shard total is not known yet: no event with a `Shardyard-Shard` header has been
    /// consumed and `SHARDYARD_SHARDS` is not set.
    #[error(
        "the shard total is unknown: no event has been consumed yet and SHARDYARD_SHARDS is not set"
    )]
    UnknownShardTotal,
    /// The request failed on NATS (timed out, disconnected).
    #[error("the command request failed")]
    Request(#[source] async_nats::RequestError),
    /// The reply is not one the contract knows.
    #[error("the gateway's reply is not understood: {reply}")]
    BadReply {
        /// The reply, as text.
        reply: String,
    },
}

impl CommandError {
    /// Whether sending the same command later may succeed.
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        !matches!(self, Self::Rejected { .. } | Self::BadReply { .. })
    }
}

/// The shard total: the latest `Shardyard-Shard` header consumed, else a configured one.
#[derive(Debug, Default)]
pub(crate) struct ShardTotal {
    seen: AtomicU32,
    configured: Option<u32>,
}

impl ShardTotal {
    pub(crate) fn new(configured: Option<u32>) -> Self {
        Self {
            seen: AtomicU32::new(0),
            configured: configured.filter(|&n| n > 0),
        }
    }

    pub(crate) fn observe(&self, total: u32) {
        if total > 0 {
            self.seen.store(total, Ordering::Relaxed);
        }
    }

    pub(crate) fn get(&self) -> Option<u32> {
        match self.seen.load(Ordering::Relaxed) {
            0 => self.configured,
            n => Some(n),
        }
    }
}

/// Sends gateway commands to the bot's shards over NATS. Cheap to clone.
#[derive(Debug, Clone)]
pub struct GatewayCommands {
    client: async_nats::Client,
    bot: BotKey,
    total: Arc<ShardTotal>,
}

impl GatewayCommands {
    /// Commands to `bot`'s shards over `client`, outside any handler (a task that sets the
    /// presence at start-up, an admin tool): `shard_total` routes guild commands. Handlers use
    /// [`Context::gateway`](crate::Context::gateway), whose shard total follows the events.
    #[must_use]
    pub fn new(client: async_nats::Client, bot: BotKey, shard_total: Option<u32>) -> Self {
        Self::with_total(client, bot, Arc::new(ShardTotal::new(shard_total)))
    }

    pub(crate) fn with_total(
        client: async_nats::Client,
        bot: BotKey,
        total: Arc<ShardTotal>,
    ) -> Self {
        Self { client, bot, total }
    }

    /// The shard total commands are routed with: the latest seen on a consumed event, else
    /// `SHARDYARD_SHARDS`.
    #[must_use]
    pub fn shard_total(&self) -> Option<u32> {
        self.total.get()
    }

    /// The shard that holds `guild`.
    ///
    /// # Errors
    /// [`CommandError::UnknownShardTotal`] before the shard total is known.
    pub fn shard_for(&self, guild: Id<GuildMarker>) -> Result<u32, CommandError> {
        let total = self.total.get().ok_or(CommandError::UnknownShardTotal)?;
        Ok(shard_for_guild(guild.get(), total))
    }

    /// Sets the bot's presence on one shard (presence is per gateway connection; send it to
    /// every shard for the whole bot).
    ///
    /// # Errors
    /// [`CommandError`]: what the gateway answered instead of sent, or why none answered.
    pub async fn update_presence(
        &self,
        shard: u32,
        presence: &Presence,
    ) -> Result<(), CommandError> {
        let activities: Vec<Value> = presence
            .activities
            .iter()
            .map(|a| json!({"name": a.name, "type": u8::from(a.kind)}))
            .collect();
        let d = json!({
            "since": presence.since,
            "activities": activities,
            "status": presence.status,
            "afk": presence.afk,
        });
        self.send(shard, "presence_update", d).await
    }

    /// Asks for a guild's members, on the shard that holds the guild.
    ///
    /// # Errors
    /// [`CommandError`]: what the gateway answered instead of sent, or why none answered.
    pub async fn request_guild_members(
        &self,
        request: &RequestGuildMembers,
    ) -> Result<(), CommandError> {
        let mut d = json!({"guild_id": request.guild_id, "presences": request.presences});
        match &request.query {
            MemberQuery::Prefix { query, limit } => {
                d["query"] = json!(query);
                d["limit"] = json!(limit);
            }
            MemberQuery::Users(users) => d["user_ids"] = json!(users),
        }
        if let Some(nonce) = &request.nonce {
            d["nonce"] = json!(nonce);
        }
        let shard = self.shard_for(request.guild_id)?;
        self.send(shard, "request_guild_members", d).await
    }

    /// Joins, moves or leaves a voice channel, on the shard that holds the guild.
    ///
    /// # Errors
    /// [`CommandError`]: what the gateway answered instead of sent, or why none answered.
    pub async fn update_voice_state(&self, update: &VoiceStateUpdate) -> Result<(), CommandError> {
        let d = json!({
            "guild_id": update.guild_id,
            "channel_id": update.channel_id,
            "self_mute": update.self_mute,
            "self_deaf": update.self_deaf,
        });
        let shard = self.shard_for(update.guild_id)?;
        self.send(shard, "voice_state_update", d).await
    }

    /// Sends a command by its contract name (`op`) and Discord's fields (`d`) to `shard`: for
    /// commands this client has no method for yet.
    ///
    /// # Errors
    /// [`CommandError`]: what the gateway answered instead of sent, or why none answered.
    pub async fn send(&self, shard: u32, op: &str, d: Value) -> Result<(), CommandError> {
        let body = json!({"op": op, "d": d}).to_string();
        let request = async_nats::Request::new()
            .payload(body.into())
            .timeout(Some(COMMAND_TIMEOUT));
        let reply = self
            .client
            .send_request(self.bot.command_subject(shard), request)
            .await
            .map_err(|e| match e.kind() {
                async_nats::RequestErrorKind::NoResponders => CommandError::NoGateway { shard },
                _ => CommandError::Request(e),
            })?;
        interpret(&reply.payload)
    }
}

fn interpret(reply: &[u8]) -> Result<(), CommandError> {
    match serde_json::from_slice::<CommandReply>(reply) {
        Ok(CommandReply::Sent) => Ok(()),
        Ok(CommandReply::Rejected { reason }) => Err(CommandError::Rejected { reason }),
        Ok(CommandReply::RetryAfter { retry_after_ms }) => Err(CommandError::RetryAfter {
            retry_after: Duration::from_millis(retry_after_ms),
        }),
        Ok(CommandReply::Unavailable { reason }) => Err(CommandError::Unavailable { reason }),
        Err(_) => Err(CommandError::BadReply {
            reply: String::from_utf8_lossy(reply).into_owned(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_become_typed_results() {
        assert!(interpret(br#"{"status":"sent"}"#).is_ok());
        match interpret(br#"{"status":"retry_after","retry_after_ms":1500}"#) {
            Err(e @ CommandError::RetryAfter { retry_after }) => {
                assert_eq!(retry_after, Duration::from_millis(1500));
                assert!(e.is_retryable());
            }
            other => panic!("{other:?}"),
        }
        match interpret(br#"{"status":"rejected","reason":"bad guild"}"#) {
            Err(e @ CommandError::Rejected { .. }) => {
                assert!(!e.is_retryable());
                assert!(e.to_string().contains("bad guild"));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            interpret(br#"{"status":"unavailable","reason":"reconnecting"}"#),
            Err(CommandError::Unavailable { .. })
        ));
        assert!(matches!(
            interpret(b"{}"),
            Err(CommandError::BadReply { .. })
        ));
    }

    #[test]
    fn the_shard_total_is_the_latest_seen_else_configured() {
        let total = ShardTotal::new(None);
        assert_eq!(total.get(), None);
        let total = ShardTotal::new(Some(4));
        assert_eq!(total.get(), Some(4));
        total.observe(8);
        assert_eq!(total.get(), Some(8));
        total.observe(0);
        assert_eq!(total.get(), Some(8));
    }
}
