//! Gateway commands from workers: NATS request/reply on `shardyard.<bot>.commands.<shard>`
//! (the subject from [`BotKey::command_subject`]), validated here before anything reaches
//! Discord, then sent by the shard's connection within its send limit
//! ([`crate::send_limit`]).
//!
//! # The contract
//!
//! A request is a JSON object with the command's name and Discord's fields for it:
//!
//! ```json
//! {"op": "presence_update", "d": {"since": null, "activities": [], "status": "online", "afk": false}}
//! {"op": "request_guild_members", "d": {"guild_id": "81384788765712384", "query": "", "limit": 0}}
//! {"op": "voice_state_update", "d": {"guild_id": "81384788765712384", "channel_id": null, "self_mute": false, "self_deaf": false}}
//! ```
//!
//! | `op` | gateway opcode | `d` |
//! |---|---|---|
//! | `presence_update` | 3 | `status`: `"online"`, `"dnd"`, `"idle"`, `"invisible"` or `"offline"`; `activities`: array of objects, each with a string `name` and an integer `type`; `afk`: bool; `since`: `null` or unix time in ms. All four required. |
//! | `request_guild_members` | 8 | `guild_id`: snowflake string; exactly one of `query` (string) or `user_ids` (a snowflake string, or an array of 1–100 of them); `limit`: integer 0–100, required with `query`, and 0 (every member) only with `query: ""` (which also needs the `GUILD_MEMBERS` intent); optional `presences` (bool) and `nonce` (string of at most 32 bytes). |
//! | `voice_state_update` | 4 | `guild_id`: snowflake string; `channel_id`: snowflake string, or `null` to leave; `self_mute`, `self_deaf`: bool. All four required. |
//!
//! Snowflakes are strings of digits, never JSON numbers. Other fields are refused (a typo would
//! otherwise be dropped silently), `null` counts as absent for the optional fields, and a guild
//! must live on the shard the request was sent to (`(guild_id >> 22) % shards`). The gateway
//! payload built from the request (`{"op":N,"d":{…}}`) must fit Discord's 4096 bytes.
//!
//! The reply is one JSON object:
//!
//! | reply | meaning |
//! |---|---|
//! | `{"status": "sent"}` | written to Discord's websocket |
//! | `{"status": "rejected", "reason": "…"}` | invalid; never sent. Do not retry unchanged. |
//! | `{"status": "retry_after", "retry_after_ms": N}` | the shard's send budget (120 per 60 s, less what heartbeats need) or its queue is full; not sent. Retry after N ms. |
//! | `{"status": "unavailable", "reason": "…"}` | the shard is not connected (or is stopping), so not sent; or its connection ended while sending, and the reason says it may have been sent. |
//!
//! A request without a reply subject (a plain publish) is validated and sent the same way, and
//! gets no answer. Gateway processes subscribe in the queue group [`QUEUE_GROUP`], so while two
//! of them hold the same shard (during a rolling restart) each request is handled once.
//!
//! # In the gateway
//!
//! [`serve`] answers invalid requests itself and hands valid ones to the shard's loop as
//! [`CommandRequest`]s. The loop takes them only while its session is identified, checks
//! [`SendLimiter::try_command`](crate::send_limit::SendLimiter::try_command), sends and answers.
//! A request the loop has not taken within [`QUEUE_TIMEOUT`] (the shard is reconnecting) is
//! answered `unavailable` and abandoned: [`CommandRequest::claim`] then returns `None`, so it is
//! never sent late.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt as _;
use futures_util::stream::FuturesUnordered;
use serde::Serialize;
use serde_json::{Map, Value};
use shardyard_protocol::{BotKey, Intents, MAX_SEND_PAYLOAD_BYTES, OpCode, shard_for_guild};
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// The NATS queue group every gateway process subscribes to a shard's command subject in.
pub const QUEUE_GROUP: &str = "gateway";
/// How long a valid request waits for the shard's loop to take it before it is answered
/// `unavailable` (the shard is connecting or reconnecting).
pub const QUEUE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a request the shard's loop took may take to be answered.
pub const CLAIMED_TIMEOUT: Duration = Duration::from_secs(10);
/// The `retry_after` answered when the shard's queue is full.
pub const QUEUE_FULL_RETRY: Duration = Duration::from_secs(1);
/// The most `user_ids` in one request guild members.
pub const MAX_USER_IDS: usize = 100;
/// The largest `limit` of request guild members.
pub const MAX_MEMBERS_LIMIT: u64 = 100;
/// The longest `nonce` of request guild members, in bytes.
pub const MAX_NONCE_BYTES: usize = 32;
/// The statuses a presence update may set.
pub const STATUSES: [&str; 5] = ["online", "dnd", "idle", "invisible", "offline"];

/// A command a worker may send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CommandOp {
    /// `presence_update`, gateway op 3.
    PresenceUpdate,
    /// `request_guild_members`, gateway op 8.
    RequestGuildMembers,
    /// `voice_state_update`, gateway op 4.
    VoiceStateUpdate,
}

impl CommandOp {
    /// Every command.
    pub const ALL: [Self; 3] = [
        Self::PresenceUpdate,
        Self::RequestGuildMembers,
        Self::VoiceStateUpdate,
    ];

    /// The name used in requests (`"op"`) and metrics.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::PresenceUpdate => "presence_update",
            Self::RequestGuildMembers => "request_guild_members",
            Self::VoiceStateUpdate => "voice_state_update",
        }
    }

    /// The gateway opcode the command is sent with.
    #[must_use]
    pub const fn opcode(self) -> OpCode {
        match self {
            Self::PresenceUpdate => OpCode::PresenceUpdate,
            Self::RequestGuildMembers => OpCode::RequestGuildMembers,
            Self::VoiceStateUpdate => OpCode::VoiceStateUpdate,
        }
    }

    /// The command of a request's `"op"`.
    #[must_use]
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|op| op.name() == name)
    }
}

impl fmt::Display for CommandOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

pub use shardyard_protocol::CommandReply;

/// A reply's JSON, as published to the requester.
fn reply_json(reply: &CommandReply) -> Bytes {
    Bytes::from(serde_json::to_vec(reply).unwrap_or_default())
}

/// A valid command: what [`validate_command`] returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidCommand {
    /// Which command.
    pub op: CommandOp,
    /// The gateway payload to send, `{"op":N,"d":{…}}`, at most 4096 bytes.
    pub payload: String,
}

const WAITING: u8 = 0;
const CLAIMED: u8 = 1;
const ABANDONED: u8 = 2;

/// A valid command on its way to the shard's loop, which must [`claim`](Self::claim) it before
/// sending it and answer through the [`Responder`].
#[derive(Debug)]
pub struct CommandRequest {
    op: CommandOp,
    payload: String,
    reply: oneshot::Sender<CommandReply>,
    state: Arc<AtomicU8>,
}

/// A request the shard's loop took: send `payload`, then answer with `responder`.
#[derive(Debug)]
pub struct ClaimedCommand {
    /// Which command.
    pub op: CommandOp,
    /// The gateway payload to write to the websocket as a text frame.
    pub payload: String,
    /// Where the answer goes.
    pub responder: Responder,
}

/// Answers one command request. Dropping it unanswered answers `unavailable` ("may have been
/// sent").
#[derive(Debug)]
pub struct Responder(oneshot::Sender<CommandReply>);

impl Responder {
    /// Answers the requester.
    pub fn respond(self, reply: CommandReply) {
        let _ = self.0.send(reply);
    }
}

impl CommandRequest {
    /// A request with the receiving end of its answer, for driving a shard loop in tests.
    #[must_use]
    pub fn new(op: CommandOp, payload: String) -> (Self, oneshot::Receiver<CommandReply>) {
        let (request, waiter) = Self::pending(op, payload);
        (request, waiter.rx)
    }

    fn pending(op: CommandOp, payload: String) -> (Self, Waiter) {
        let (tx, rx) = oneshot::channel();
        let state = Arc::new(AtomicU8::new(WAITING));
        let request = Self {
            op,
            payload,
            reply: tx,
            state: state.clone(),
        };
        (request, Waiter { rx, state })
    }

    /// Which command.
    #[must_use]
    pub const fn op(&self) -> CommandOp {
        self.op
    }

    /// The gateway payload.
    #[must_use]
    pub fn payload(&self) -> &str {
        &self.payload
    }

    /// Takes the request for sending: `None` when the requester was already answered
    /// (`unavailable`, after [`QUEUE_TIMEOUT`]) and the command must not be sent.
    #[must_use]
    pub fn claim(self) -> Option<ClaimedCommand> {
        self.state
            .compare_exchange(WAITING, CLAIMED, Ordering::AcqRel, Ordering::Acquire)
            .ok()?;
        Some(ClaimedCommand {
            op: self.op,
            payload: self.payload,
            responder: Responder(self.reply),
        })
    }
}

/// The serving side of a [`CommandRequest`].
struct Waiter {
    rx: oneshot::Receiver<CommandReply>,
    state: Arc<AtomicU8>,
}

impl Waiter {
    /// The answer, and whether the request was abandoned untaken (the shard is stalled).
    async fn wait(self, shard: u32, timeouts: Timeouts) -> (CommandReply, bool) {
        let Self { mut rx, state } = self;
        match tokio::time::timeout(timeouts.queue, &mut rx).await {
            Ok(Ok(reply)) => return (reply, false),
            Ok(Err(_)) => return (dropped(shard, &state), false),
            Err(_) => {}
        }
        if state
            .compare_exchange(WAITING, ABANDONED, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            let reason = format!(
                "shard {shard} is not connected: the command was not sent within {} ms",
                timeouts.queue.as_millis()
            );
            return (CommandReply::unavailable(reason), true);
        }
        // The shard's loop took it just now: its answer is on the way.
        match tokio::time::timeout(timeouts.claimed, rx).await {
            Ok(Ok(reply)) => (reply, false),
            Ok(Err(_)) => (dropped(shard, &state), false),
            Err(_) => (
                CommandReply::unavailable(format!(
                    "shard {shard} did not answer in time; the command may have been sent"
                )),
                false,
            ),
        }
    }
}

fn dropped(shard: u32, state: &AtomicU8) -> CommandReply {
    if state.load(Ordering::Acquire) == CLAIMED {
        CommandReply::unavailable(format!(
            "shard {shard} lost its connection while sending; the command may have been sent"
        ))
    } else {
        CommandReply::unavailable(format!("shard {shard} stopped before sending the command"))
    }
}

/// Why [`serve`] could not run.
#[derive(Debug, thiserror::Error)]
pub enum CommandsError {
    /// The command subject could not be subscribed to.
    #[error("subscribing to {subject}")]
    Subscribe {
        /// The subject.
        subject: String,
        /// Why.
        #[source]
        source: async_nats::SubscribeError,
    },
}

#[derive(Debug, Clone, Copy)]
struct Timeouts {
    queue: Duration,
    claimed: Duration,
    full_retry: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            queue: QUEUE_TIMEOUT,
            claimed: CLAIMED_TIMEOUT,
            full_retry: QUEUE_FULL_RETRY,
        }
    }
}

struct Answer {
    reply_to: Option<async_nats::Subject>,
    reply: CommandReply,
    stalled: bool,
}

type AnswerFuture = Pin<Box<dyn Future<Output = Answer> + Send>>;

/// Serves shard `shard`'s command subject until `shutdown` is cancelled or the shard's loop
/// drops the receiving end of `tx`: validates each request (with the bot's `intents`), answers
/// invalid ones, hands valid ones to the shard's loop through `tx` and relays its answer.
///
/// A full `tx` answers `retry_after` ([`QUEUE_FULL_RETRY`]), or `unavailable` when requests
/// already timed out untaken (the shard is not connected). On the way out it unsubscribes at
/// once (another process in the queue group takes over), answers requests it had received
/// `unavailable`, and waits for the answers of those the shard's loop holds.
///
/// # Errors
/// [`CommandsError`] when the subject cannot be subscribed to.
pub async fn serve(
    client: async_nats::Client,
    bot: BotKey,
    shard: u32,
    total: u32,
    intents: Intents,
    tx: mpsc::Sender<CommandRequest>,
    shutdown: CancellationToken,
) -> Result<(), CommandsError> {
    let scope = Scope {
        shard,
        total,
        intents,
    };
    serve_with(client, &bot, scope, tx, shutdown, Timeouts::default()).await
}

#[derive(Debug, Clone, Copy)]
struct Scope {
    shard: u32,
    total: u32,
    intents: Intents,
}

async fn serve_with(
    client: async_nats::Client,
    bot: &BotKey,
    scope: Scope,
    tx: mpsc::Sender<CommandRequest>,
    shutdown: CancellationToken,
    timeouts: Timeouts,
) -> Result<(), CommandsError> {
    let shard = scope.shard;
    let subject = bot.command_subject(shard);
    let mut subscriber = client
        .queue_subscribe(subject.clone(), QUEUE_GROUP.to_owned())
        .await
        .map_err(|source| CommandsError::Subscribe {
            subject: subject.clone(),
            source,
        })?;
    tracing::debug!(shard, %subject, "serving gateway commands");
    let mut pending: FuturesUnordered<AnswerFuture> = FuturesUnordered::new();
    // Whether the last request the shard's loop should have taken timed out untaken.
    let mut stalled = false;
    let why = loop {
        tokio::select! {
            biased;
            () = shutdown.cancelled() => break "the gateway is shutting down".to_owned(),
            () = tx.closed() => break format!("shard {shard} has stopped"),
            Some(answer) = pending.next(), if !pending.is_empty() => {
                stalled = answer.stalled;
                respond(&client, answer.reply_to, &answer.reply).await;
            }
            message = subscriber.next() => {
                let Some(message) = message else {
                    break "the NATS connection is closed".to_owned();
                };
                let reply_to = message.reply;
                let command = match validate_command(&message.payload, scope.shard, scope.total, scope.intents) {
                    Ok(command) => command,
                    Err(reason) => {
                        tracing::debug!(shard, %reason, "gateway command rejected");
                        respond(&client, reply_to, &CommandReply::Rejected { reason }).await;
                        continue;
                    }
                };
                let (request, waiter) = CommandRequest::pending(command.op, command.payload);
                match tx.try_send(request) {
                    Ok(()) => pending.push(Box::pin(async move {
                        let (reply, stalled) = waiter.wait(shard, timeouts).await;
                        Answer { reply_to, reply, stalled }
                    })),
                    Err(TrySendError::Full(_)) => {
                        let reply = if stalled {
                            CommandReply::unavailable(format!("shard {shard} is not connected"))
                        } else {
                            CommandReply::retry_after(timeouts.full_retry)
                        };
                        respond(&client, reply_to, &reply).await;
                    }
                    Err(TrySendError::Closed(_)) => {
                        let reply = CommandReply::unavailable(format!("shard {shard} has stopped"));
                        respond(&client, reply_to, &reply).await;
                    }
                }
            }
        }
    };
    tracing::debug!(shard, reason = %why, "no longer serving gateway commands");
    // Leave the queue group at once, so another process holding the shard takes new requests;
    // answer what was already delivered here.
    if subscriber.unsubscribe().await.is_ok() {
        let unavailable = CommandReply::unavailable(why);
        let drained = async {
            while let Some(message) = subscriber.next().await {
                respond(&client, message.reply, &unavailable).await;
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(1), drained).await;
    }
    while let Some(answer) = pending.next().await {
        respond(&client, answer.reply_to, &answer.reply).await;
    }
    Ok(())
}

async fn respond(
    client: &async_nats::Client,
    reply_to: Option<async_nats::Subject>,
    reply: &CommandReply,
) {
    let Some(reply_to) = reply_to else { return };
    if let Err(e) = client.publish(reply_to, reply_json(reply)).await {
        tracing::debug!(error = %e, "a gateway command's answer was not delivered");
    }
}

/// Validates a request and builds its gateway payload, `{"op":N,"d":{…}}`, for shard `shard` of
/// `total` (a guild of another shard is rejected). Assumes every intent; [`serve`] uses
/// [`validate_command`] with the bot's.
///
/// # Errors
/// Why the request is invalid, for the `rejected` reply.
pub fn validate(bytes: &[u8], shard: u32, total: u32) -> Result<String, String> {
    validate_command(bytes, shard, total, Intents::all()).map(|command| command.payload)
}

/// [`validate`], knowing the bot's intents: asking for every member of a guild needs
/// `GUILD_MEMBERS` (Discord closes the connection otherwise).
///
/// # Errors
/// Why the request is invalid, for the `rejected` reply.
pub fn validate_command(
    bytes: &[u8],
    shard: u32,
    total: u32,
    intents: Intents,
) -> Result<ValidCommand, String> {
    let value: Value = serde_json::from_slice(bytes).map_err(|e| format!("malformed JSON: {e}"))?;
    let mut top = match value {
        Value::Object(top) => top,
        other => {
            return Err(format!(
                "a command must be a JSON object {{\"op\": …, \"d\": {{…}}}}, not {}",
                kind(&other)
            ));
        }
    };
    if let Some(key) = top.keys().find(|k| *k != "op" && *k != "d") {
        return Err(format!(
            "unknown field {key:?}: a command has only \"op\" and \"d\""
        ));
    }
    let expected = "presence_update, request_guild_members or voice_state_update";
    let op = match top.get("op") {
        None => return Err(format!("missing \"op\": one of {expected}")),
        Some(Value::String(name)) => CommandOp::from_name(name)
            .ok_or_else(|| format!("unknown op {name:?}: expected {expected}"))?,
        Some(other) => {
            return Err(format!(
                "\"op\" must be a string ({expected}), not {}",
                kind(other)
            ));
        }
    };
    let d = match top.remove("d") {
        Some(Value::Object(d)) => d,
        None => return Err(format!("missing \"d\": the fields of {op}")),
        Some(other) => {
            return Err(format!(
                "\"d\" must be an object (the fields of {op}), not {}",
                kind(&other)
            ));
        }
    };
    let payload = match op {
        CommandOp::PresenceUpdate => gateway_json(op, &presence_update(d)?),
        CommandOp::RequestGuildMembers => {
            gateway_json(op, &request_guild_members(d, shard, total, intents)?)
        }
        CommandOp::VoiceStateUpdate => gateway_json(op, &voice_state_update(d, shard, total)?),
    }?;
    if payload.len() > MAX_SEND_PAYLOAD_BYTES {
        return Err(format!(
            "the gateway payload would be {} bytes, over Discord's limit of {MAX_SEND_PAYLOAD_BYTES}",
            payload.len()
        ));
    }
    Ok(ValidCommand { op, payload })
}

#[derive(Serialize)]
struct GatewayPayload<'a, D> {
    op: u8,
    d: &'a D,
}

fn gateway_json<D: Serialize>(op: CommandOp, d: &D) -> Result<String, String> {
    serde_json::to_string(&GatewayPayload {
        op: op.opcode().code(),
        d,
    })
    .map_err(|e| format!("cannot build the gateway payload: {e}"))
}

#[derive(Serialize)]
struct PresenceUpdate {
    since: Option<u64>,
    activities: Vec<Value>,
    status: String,
    afk: bool,
}

#[derive(Serialize)]
struct RequestGuildMembers {
    guild_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    query: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    limit: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    presences: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user_ids: Option<UserIds>,
    #[serde(skip_serializing_if = "Option::is_none")]
    nonce: Option<String>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum UserIds {
    One(String),
    Many(Vec<String>),
}

#[derive(Serialize)]
struct VoiceStateUpdate {
    guild_id: String,
    channel_id: Option<String>,
    self_mute: bool,
    self_deaf: bool,
}

/// The JSON kind of a value, for messages.
fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The fields of `d`, with typed accessors whose errors name the field.
struct Fields(Map<String, Value>);

impl Fields {
    /// Refuses fields outside `allowed`.
    fn new(d: Map<String, Value>, allowed: &[&str]) -> Result<Self, String> {
        if let Some(key) = d.keys().find(|k| !allowed.contains(&k.as_str())) {
            return Err(format!(
                "unknown field d.{key} (expected {})",
                allowed.join(", ")
            ));
        }
        Ok(Self(d))
    }

    fn required(&self, key: &str, expected: &str) -> Result<&Value, String> {
        self.0
            .get(key)
            .ok_or_else(|| format!("missing d.{key} ({expected})"))
    }

    /// An optional field: absent and `null` are both `None`.
    fn optional(&self, key: &str) -> Option<&Value> {
        self.0.get(key).filter(|v| !v.is_null())
    }

    fn bool(&self, key: &str) -> Result<bool, String> {
        expect_bool(key, self.required(key, "true or false")?)
    }

    fn optional_bool(&self, key: &str) -> Result<Option<bool>, String> {
        self.optional(key).map(|v| expect_bool(key, v)).transpose()
    }

    fn optional_string(&self, key: &str) -> Result<Option<String>, String> {
        self.optional(key)
            .map(|v| match v {
                Value::String(s) => Ok(s.clone()),
                other => Err(format!("d.{key} must be a string, not {}", kind(other))),
            })
            .transpose()
    }

    fn snowflake(&self, key: &str) -> Result<u64, String> {
        snowflake(key, self.required(key, "a snowflake string")?)
    }
}

fn expect_bool(key: &str, value: &Value) -> Result<bool, String> {
    value
        .as_bool()
        .ok_or_else(|| format!("d.{key} must be true or false, not {}", kind(value)))
}

/// A snowflake: a string of digits that fits in 64 bits (`field` names it in the error).
fn snowflake(field: &str, value: &Value) -> Result<u64, String> {
    match value {
        Value::String(s) => {
            if !s.is_empty()
                && s.bytes().all(|b| b.is_ascii_digit())
                && let Ok(id) = s.parse::<u64>()
            {
                return Ok(id);
            }
            Err(format!(
                "d.{field} must be a snowflake (a string of digits), not {s:?}"
            ))
        }
        Value::Number(_) => Err(format!(
            "d.{field} must be a snowflake string such as \"81384788765712384\", not a number \
             (JSON numbers lose precision)"
        )),
        other => Err(format!(
            "d.{field} must be a snowflake string, not {}",
            kind(other)
        )),
    }
}

fn same_shard(guild_id: u64, shard: u32, total: u32) -> Result<(), String> {
    let owner = shard_for_guild(guild_id, total);
    if owner == shard {
        Ok(())
    } else {
        Err(format!(
            "guild {guild_id} is on shard {owner}, not shard {shard} (of {total}): send it to shard {owner}'s subject"
        ))
    }
}

/// Checks IDENTIFY's `presence` (`--presence`) the way a `presence_update` command's `d` is
/// checked, and returns it normalized.
///
/// # Errors
/// What is wrong with it, naming the field.
pub fn validate_presence(presence: Value) -> Result<Value, String> {
    let Value::Object(d) = presence else {
        return Err(format!(
            "the presence must be an object like {{\"status\":\"online\",\"activities\":[],\"since\":null,\"afk\":false}}, not {}",
            kind(&presence)
        ));
    };
    serde_json::to_value(presence_update(d)?).map_err(|e| e.to_string())
}

fn presence_update(d: Map<String, Value>) -> Result<PresenceUpdate, String> {
    let f = Fields::new(d, &["since", "activities", "status", "afk"])?;
    let statuses = STATUSES.join(", ");
    let status = match f.required("status", &format!("one of {statuses}"))? {
        Value::String(s) if STATUSES.contains(&s.as_str()) => s.clone(),
        Value::String(s) => return Err(format!("d.status must be one of {statuses}, not {s:?}")),
        other => {
            return Err(format!(
                "d.status must be a string, one of {statuses}, not {}",
                kind(other)
            ));
        }
    };
    let activities = match f.required("activities", "an array of activities, may be empty")? {
        Value::Array(activities) => activities.clone(),
        other => {
            return Err(format!(
                "d.activities must be an array of activities, not {}",
                kind(other)
            ));
        }
    };
    for (i, activity) in activities.iter().enumerate() {
        let Value::Object(activity) = activity else {
            return Err(format!(
                "d.activities[{i}] must be an object with \"name\" and \"type\", not {}",
                kind(activity)
            ));
        };
        if !activity.get("name").is_some_and(Value::is_string) {
            return Err(format!("d.activities[{i}].name must be a string"));
        }
        if !activity.get("type").is_some_and(Value::is_u64) {
            return Err(format!(
                "d.activities[{i}].type must be an activity type (an integer such as 0, playing)"
            ));
        }
    }
    let afk = f.bool("afk")?;
    let since = match f.required("since", "null, or unix time in milliseconds")? {
        Value::Null => None,
        Value::Number(n) => Some(n.as_u64().ok_or_else(|| {
            format!("d.since must be null or unix time in milliseconds, not {n}")
        })?),
        other => {
            return Err(format!(
                "d.since must be null or unix time in milliseconds, not {}",
                kind(other)
            ));
        }
    };
    Ok(PresenceUpdate {
        since,
        activities,
        status,
        afk,
    })
}

fn request_guild_members(
    d: Map<String, Value>,
    shard: u32,
    total: u32,
    intents: Intents,
) -> Result<RequestGuildMembers, String> {
    let f = Fields::new(
        d,
        &[
            "guild_id",
            "query",
            "limit",
            "presences",
            "user_ids",
            "nonce",
        ],
    )?;
    let guild_id = f.snowflake("guild_id")?;
    let query = f.optional_string("query")?;
    let user_ids = match f.optional("user_ids") {
        None => None,
        Some(one @ Value::String(_)) => Some(UserIds::One(snowflake("user_ids", one)?.to_string())),
        Some(Value::Array(ids)) => {
            if ids.is_empty() {
                return Err("d.user_ids must not be empty".to_owned());
            }
            if ids.len() > MAX_USER_IDS {
                return Err(format!(
                    "d.user_ids holds {} ids, more than {MAX_USER_IDS}",
                    ids.len()
                ));
            }
            let ids = ids
                .iter()
                .enumerate()
                .map(|(i, id)| snowflake(&format!("user_ids[{i}]"), id).map(|id| id.to_string()))
                .collect::<Result<Vec<_>, _>>()?;
            Some(UserIds::Many(ids))
        }
        Some(other) => {
            return Err(format!(
                "d.user_ids must be a snowflake string or an array of them, not {}",
                kind(other)
            ));
        }
    };
    match (&query, &user_ids) {
        (Some(_), Some(_)) => return Err("give d.query or d.user_ids, not both".to_owned()),
        (None, None) => return Err("missing d.query or d.user_ids (one is required)".to_owned()),
        _ => {}
    }
    let limit = match f.optional("limit") {
        None => None,
        Some(value) => Some(
            value
                .as_u64()
                .filter(|l| *l <= MAX_MEMBERS_LIMIT)
                .ok_or_else(|| {
                    format!("d.limit must be an integer from 0 to {MAX_MEMBERS_LIMIT}, not {value}")
                })?,
        ),
    };
    if query.is_some() && limit.is_none() {
        return Err(format!(
            "missing d.limit (0 to {MAX_MEMBERS_LIMIT}; required with d.query)"
        ));
    }
    let every_member = limit == Some(0);
    if every_member && query.as_deref() != Some("") {
        return Err("d.limit 0 asks for every member and needs d.query \"\"".to_owned());
    }
    if every_member && !intents.contains(Intents::GUILD_MEMBERS) {
        return Err(
            "asking for every member (d.query \"\", d.limit 0) needs the GUILD_MEMBERS intent, \
             which this bot does not identify with"
                .to_owned(),
        );
    }
    let presences = f.optional_bool("presences")?;
    let nonce = f.optional_string("nonce")?;
    if let Some(nonce) = &nonce
        && nonce.len() > MAX_NONCE_BYTES
    {
        return Err(format!(
            "d.nonce is {} bytes, more than {MAX_NONCE_BYTES}",
            nonce.len()
        ));
    }
    same_shard(guild_id, shard, total)?;
    Ok(RequestGuildMembers {
        guild_id: guild_id.to_string(),
        query,
        limit,
        presences,
        user_ids,
        nonce,
    })
}

fn voice_state_update(
    d: Map<String, Value>,
    shard: u32,
    total: u32,
) -> Result<VoiceStateUpdate, String> {
    let f = Fields::new(d, &["guild_id", "channel_id", "self_mute", "self_deaf"])?;
    let guild_id = f.snowflake("guild_id")?;
    let channel_id = match f.required("channel_id", "a snowflake string, or null to leave")? {
        Value::Null => None,
        channel => Some(snowflake("channel_id", channel)?.to_string()),
    };
    let self_mute = f.bool("self_mute")?;
    let self_deaf = f.bool("self_deaf")?;
    same_shard(guild_id, shard, total)?;
    Ok(VoiceStateUpdate {
        guild_id: guild_id.to_string(),
        channel_id,
        self_mute,
        self_deaf,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn identify_presence_is_checked_like_the_command() {
        let ok = super::validate_presence(serde_json::json!({
            "status": "dnd", "activities": [{"name": "tests", "type": 0}], "since": null, "afk": false
        }))
        .unwrap();
        assert_eq!(ok["status"], "dnd");
        assert_eq!(ok["activities"][0]["name"], "tests");
        for (bad, says) in [
            (serde_json::json!("online"), "must be an object"),
            (
                serde_json::json!({"status": "busy", "activities": [], "since": null, "afk": false}),
                "d.status",
            ),
            (
                serde_json::json!({"status": "online", "since": null, "afk": false}),
                "activities",
            ),
            (
                serde_json::json!({"status": "online", "activities": [], "since": null, "afk": false, "x": 1}),
                "x",
            ),
        ] {
            let err = super::validate_presence(bad.clone()).unwrap_err();
            assert!(err.contains(says), "{bad}: {err}");
        }
    }

    use super::*;

    /// A guild on shard `shard` of `total`.
    fn guild_on(shard: u32, total: u32) -> u64 {
        let id = (u64::from(shard) << 22) | 12345;
        assert_eq!(shard_for_guild(id, total), shard);
        id
    }

    fn ok(json: &str) -> String {
        match validate(json.as_bytes(), 0, 1) {
            Ok(payload) => payload,
            Err(reason) => panic!("{json} was rejected: {reason}"),
        }
    }

    fn rejected(json: &str) -> String {
        match validate(json.as_bytes(), 0, 1) {
            Ok(payload) => panic!("{json} was accepted as {payload}"),
            Err(reason) => reason,
        }
    }

    #[test]
    fn presence_update_becomes_op_3() {
        assert_eq!(
            ok(
                r#"{"op":"presence_update","d":{"status":"dnd","afk":false,"since":null,"activities":[{"name":"chess","type":0,"state":"winning"}]}}"#
            ),
            r#"{"op":3,"d":{"since":null,"activities":[{"name":"chess","state":"winning","type":0}],"status":"dnd","afk":false}}"#
        );
        assert_eq!(
            ok(
                r#"{"op":"presence_update","d":{"status":"idle","afk":true,"since":1700000000000,"activities":[]}}"#
            ),
            r#"{"op":3,"d":{"since":1700000000000,"activities":[],"status":"idle","afk":true}}"#
        );
        for status in STATUSES {
            let json = format!(
                r#"{{"op":"presence_update","d":{{"status":"{status}","afk":false,"since":null,"activities":[]}}}}"#
            );
            assert!(ok(&json).contains(&format!("\"status\":\"{status}\"")));
        }
    }

    #[test]
    fn invalid_presence_updates_say_why() {
        let cases = [
            (
                r#"{"status":"away","afk":false,"since":null,"activities":[]}"#,
                "d.status must be one of online, dnd, idle, invisible, offline, not \"away\"",
            ),
            (
                r#"{"status":1,"afk":false,"since":null,"activities":[]}"#,
                "d.status must be a string, one of online, dnd, idle, invisible, offline, not a number",
            ),
            (
                r#"{"afk":false,"since":null,"activities":[]}"#,
                "missing d.status (one of online, dnd, idle, invisible, offline)",
            ),
            (
                r#"{"status":"online","afk":"no","since":null,"activities":[]}"#,
                "d.afk must be true or false, not a string",
            ),
            (
                r#"{"status":"online","since":null,"activities":[]}"#,
                "missing d.afk (true or false)",
            ),
            (
                r#"{"status":"online","afk":false,"activities":[]}"#,
                "missing d.since (null, or unix time in milliseconds)",
            ),
            (
                r#"{"status":"online","afk":false,"since":-5,"activities":[]}"#,
                "d.since must be null or unix time in milliseconds, not -5",
            ),
            (
                r#"{"status":"online","afk":false,"since":1.5,"activities":[]}"#,
                "d.since must be null or unix time in milliseconds, not 1.5",
            ),
            (
                r#"{"status":"online","afk":false,"since":"now","activities":[]}"#,
                "d.since must be null or unix time in milliseconds, not a string",
            ),
            (
                r#"{"status":"online","afk":false,"since":null}"#,
                "missing d.activities (an array of activities, may be empty)",
            ),
            (
                r#"{"status":"online","afk":false,"since":null,"activities":{}}"#,
                "d.activities must be an array of activities, not an object",
            ),
            (
                r#"{"status":"online","afk":false,"since":null,"activities":["chess"]}"#,
                "d.activities[0] must be an object with \"name\" and \"type\", not a string",
            ),
            (
                r#"{"status":"online","afk":false,"since":null,"activities":[{"type":0}]}"#,
                "d.activities[0].name must be a string",
            ),
            (
                r#"{"status":"online","afk":false,"since":null,"activities":[{"name":"a","type":0},{"name":"b","type":"game"}]}"#,
                "d.activities[1].type must be an activity type (an integer such as 0, playing)",
            ),
            (
                r#"{"status":"online","afk":false,"since":null,"activities":[],"mood":"good"}"#,
                "unknown field d.mood (expected since, activities, status, afk)",
            ),
        ];
        for (d, reason) in cases {
            let json = format!(r#"{{"op":"presence_update","d":{d}}}"#);
            assert_eq!(rejected(&json), reason, "for {d}");
        }
    }

    #[test]
    fn request_guild_members_becomes_op_8() {
        let guild = guild_on(2, 4);
        let check = |d: &str, expected: &str| {
            let json = format!(r#"{{"op":"request_guild_members","d":{d}}}"#);
            assert_eq!(validate(json.as_bytes(), 2, 4), Ok(expected.to_owned()));
        };
        check(
            &format!(r#"{{"guild_id":"{guild}","query":"","limit":0}}"#),
            &format!(r#"{{"op":8,"d":{{"guild_id":"{guild}","query":"","limit":0}}}}"#),
        );
        check(
            &format!(
                r#"{{"guild_id":"{guild}","query":"ab","limit":10,"presences":true,"nonce":"n-1","user_ids":null}}"#
            ),
            &format!(
                r#"{{"op":8,"d":{{"guild_id":"{guild}","query":"ab","limit":10,"presences":true,"nonce":"n-1"}}}}"#
            ),
        );
        check(
            &format!(r#"{{"guild_id":"{guild}","user_ids":"80351110224678912"}}"#),
            &format!(r#"{{"op":8,"d":{{"guild_id":"{guild}","user_ids":"80351110224678912"}}}}"#),
        );
        check(
            &format!(r#"{{"guild_id":"{guild}","user_ids":["1","2"],"limit":2}}"#),
            &format!(r#"{{"op":8,"d":{{"guild_id":"{guild}","limit":2,"user_ids":["1","2"]}}}}"#),
        );
        // 100 ids and a 32-byte nonce are the most allowed.
        let ids: Vec<String> = (1..=100).map(|i| format!("\"{i}\"")).collect();
        let d = format!(
            r#"{{"guild_id":"{guild}","user_ids":[{}],"nonce":"{}"}}"#,
            ids.join(","),
            "n".repeat(32)
        );
        let json = format!(r#"{{"op":"request_guild_members","d":{d}}}"#);
        assert!(validate(json.as_bytes(), 2, 4).is_ok());
    }

    #[test]
    fn invalid_member_requests_say_why() {
        let ids: Vec<String> = (1..=101).map(|i| format!("\"{i}\"")).collect();
        let too_many = format!(r#"{{"guild_id":"1","user_ids":[{}]}}"#, ids.join(","));
        let long_nonce = format!(
            r#"{{"guild_id":"1","query":"a","limit":1,"nonce":"{}"}}"#,
            "n".repeat(33)
        );
        let cases = [
            (
                r#"{"query":"","limit":0}"#,
                "missing d.guild_id (a snowflake string)".to_owned(),
            ),
            (
                r#"{"guild_id":81384788765712384,"query":"","limit":0}"#,
                "d.guild_id must be a snowflake string such as \"81384788765712384\", not a number (JSON numbers lose precision)".to_owned(),
            ),
            (
                r#"{"guild_id":"12a","query":"","limit":0}"#,
                "d.guild_id must be a snowflake (a string of digits), not \"12a\"".to_owned(),
            ),
            (
                r#"{"guild_id":"+12","query":"","limit":0}"#,
                "d.guild_id must be a snowflake (a string of digits), not \"+12\"".to_owned(),
            ),
            (
                r#"{"guild_id":"99999999999999999999","query":"","limit":0}"#,
                "d.guild_id must be a snowflake (a string of digits), not \"99999999999999999999\""
                    .to_owned(),
            ),
            (
                r#"{"guild_id":"1"}"#,
                "missing d.query or d.user_ids (one is required)".to_owned(),
            ),
            (
                r#"{"guild_id":"1","query":"a","limit":1,"user_ids":"2"}"#,
                "give d.query or d.user_ids, not both".to_owned(),
            ),
            (
                r#"{"guild_id":"1","query":"a"}"#,
                "missing d.limit (0 to 100; required with d.query)".to_owned(),
            ),
            (
                r#"{"guild_id":"1","query":5,"limit":1}"#,
                "d.query must be a string, not a number".to_owned(),
            ),
            (
                r#"{"guild_id":"1","query":"a","limit":101}"#,
                "d.limit must be an integer from 0 to 100, not 101".to_owned(),
            ),
            (
                r#"{"guild_id":"1","query":"a","limit":-1}"#,
                "d.limit must be an integer from 0 to 100, not -1".to_owned(),
            ),
            (
                r#"{"guild_id":"1","query":"a","limit":0}"#,
                "d.limit 0 asks for every member and needs d.query \"\"".to_owned(),
            ),
            (
                r#"{"guild_id":"1","user_ids":["2"],"limit":0}"#,
                "d.limit 0 asks for every member and needs d.query \"\"".to_owned(),
            ),
            (
                r#"{"guild_id":"1","user_ids":[]}"#,
                "d.user_ids must not be empty".to_owned(),
            ),
            (
                &too_many,
                "d.user_ids holds 101 ids, more than 100".to_owned(),
            ),
            (
                r#"{"guild_id":"1","user_ids":["2",3]}"#,
                "d.user_ids[1] must be a snowflake string such as \"81384788765712384\", not a number (JSON numbers lose precision)".to_owned(),
            ),
            (
                r#"{"guild_id":"1","user_ids":{"id":"2"}}"#,
                "d.user_ids must be a snowflake string or an array of them, not an object"
                    .to_owned(),
            ),
            (
                r#"{"guild_id":"1","query":"a","limit":1,"presences":"yes"}"#,
                "d.presences must be true or false, not a string".to_owned(),
            ),
            (
                &long_nonce,
                "d.nonce is 33 bytes, more than 32".to_owned(),
            ),
            (
                r#"{"guild_id":"1","query":"a","limit":1,"nonce":7}"#,
                "d.nonce must be a string, not a number".to_owned(),
            ),
            (
                r#"{"guild_id":"1","query":"a","limit":1,"guild":"2"}"#,
                "unknown field d.guild (expected guild_id, query, limit, presences, user_ids, nonce)"
                    .to_owned(),
            ),
        ];
        for (d, reason) in &cases {
            let json = format!(r#"{{"op":"request_guild_members","d":{d}}}"#);
            assert_eq!(&rejected(&json), reason, "for {d}");
        }
    }

    #[test]
    fn every_member_needs_the_members_intent() {
        let json = r#"{"op":"request_guild_members","d":{"guild_id":"1","query":"","limit":0}}"#;
        assert_eq!(
            validate_command(json.as_bytes(), 0, 1, Intents::GUILDS),
            Err("asking for every member (d.query \"\", d.limit 0) needs the GUILD_MEMBERS intent, which this bot does not identify with".to_owned())
        );
        let command = validate_command(
            json.as_bytes(),
            0,
            1,
            Intents::GUILDS | Intents::GUILD_MEMBERS,
        )
        .unwrap();
        assert_eq!(command.op, CommandOp::RequestGuildMembers);
        // A query or ids need no intent here.
        let json =
            r#"{"op":"request_guild_members","d":{"guild_id":"1","user_ids":"2","limit":1}}"#;
        assert!(validate_command(json.as_bytes(), 0, 1, Intents::EMPTY).is_ok());
    }

    #[test]
    fn voice_state_update_becomes_op_4() {
        let guild = guild_on(1, 3);
        let json = format!(
            r#"{{"op":"voice_state_update","d":{{"guild_id":"{guild}","channel_id":"0042","self_mute":true,"self_deaf":false}}}}"#
        );
        assert_eq!(
            validate(json.as_bytes(), 1, 3),
            Ok(format!(
                r#"{{"op":4,"d":{{"guild_id":"{guild}","channel_id":"42","self_mute":true,"self_deaf":false}}}}"#
            ))
        );
        let leave = format!(
            r#"{{"op":"voice_state_update","d":{{"guild_id":"{guild}","channel_id":null,"self_mute":false,"self_deaf":true}}}}"#
        );
        assert_eq!(
            validate(leave.as_bytes(), 1, 3),
            Ok(format!(
                r#"{{"op":4,"d":{{"guild_id":"{guild}","channel_id":null,"self_mute":false,"self_deaf":true}}}}"#
            ))
        );
    }

    #[test]
    fn invalid_voice_state_updates_say_why() {
        let cases = [
            (
                r#"{"guild_id":"1","self_mute":false,"self_deaf":false}"#,
                "missing d.channel_id (a snowflake string, or null to leave)",
            ),
            (
                r#"{"guild_id":"1","channel_id":5,"self_mute":false,"self_deaf":false}"#,
                "d.channel_id must be a snowflake string such as \"81384788765712384\", not a number (JSON numbers lose precision)",
            ),
            (
                r#"{"guild_id":"1","channel_id":null,"self_deaf":false}"#,
                "missing d.self_mute (true or false)",
            ),
            (
                r#"{"guild_id":"1","channel_id":null,"self_mute":false,"self_deaf":1}"#,
                "d.self_deaf must be true or false, not a number",
            ),
            (
                r#"{"guild_id":null,"channel_id":null,"self_mute":false,"self_deaf":false}"#,
                "d.guild_id must be a snowflake string, not null",
            ),
            (
                r#"{"guild_id":"1","channel_id":null,"self_mute":false,"self_deaf":false,"self_video":false}"#,
                "unknown field d.self_video (expected guild_id, channel_id, self_mute, self_deaf)",
            ),
        ];
        for (d, reason) in cases {
            let json = format!(r#"{{"op":"voice_state_update","d":{d}}}"#);
            assert_eq!(rejected(&json), reason, "for {d}");
        }
    }

    #[test]
    fn a_guild_of_another_shard_is_rejected() {
        let guild = guild_on(3, 4);
        let members = format!(
            r#"{{"op":"request_guild_members","d":{{"guild_id":"{guild}","query":"a","limit":1}}}}"#
        );
        let voice = format!(
            r#"{{"op":"voice_state_update","d":{{"guild_id":"{guild}","channel_id":null,"self_mute":false,"self_deaf":false}}}}"#
        );
        let reason = format!(
            "guild {guild} is on shard 3, not shard 1 (of 4): send it to shard 3's subject"
        );
        assert_eq!(validate(members.as_bytes(), 1, 4), Err(reason.clone()));
        assert_eq!(validate(voice.as_bytes(), 1, 4), Err(reason));
        assert!(validate(members.as_bytes(), 3, 4).is_ok());
        assert!(validate(voice.as_bytes(), 3, 4).is_ok());
        // A presence is the whole session's: no guild, any shard.
        let presence = r#"{"op":"presence_update","d":{"status":"online","afk":false,"since":null,"activities":[]}}"#;
        assert!(validate(presence.as_bytes(), 1, 4).is_ok());
    }

    #[test]
    fn payloads_over_4096_bytes_are_rejected() {
        let presence = |name_len: usize| {
            format!(
                r#"{{"op":"presence_update","d":{{"status":"online","afk":false,"since":null,"activities":[{{"name":"{}","type":0}}]}}}}"#,
                "x".repeat(name_len)
            )
        };
        // {"op":3,"d":{"since":null,"activities":[{"name":"…","type":0}],"status":"online","afk":false}}
        let overhead = ok(&presence(0)).len();
        let fits = ok(&presence(MAX_SEND_PAYLOAD_BYTES - overhead));
        assert_eq!(fits.len(), MAX_SEND_PAYLOAD_BYTES);
        assert_eq!(
            rejected(&presence(MAX_SEND_PAYLOAD_BYTES - overhead + 1)),
            "the gateway payload would be 4097 bytes, over Discord's limit of 4096"
        );
    }

    #[test]
    fn malformed_requests_say_why() {
        assert!(rejected("{\"op\":").starts_with("malformed JSON: EOF while parsing"));
        assert!(rejected("").starts_with("malformed JSON: "));
        assert!(rejected("\u{FF}").starts_with("malformed JSON: "));
        let cases = [
            (
                r#"["presence_update"]"#,
                "a command must be a JSON object {\"op\": …, \"d\": {…}}, not an array",
            ),
            (
                r#"{"d":{}}"#,
                "missing \"op\": one of presence_update, request_guild_members or voice_state_update",
            ),
            (
                r#"{"op":3,"d":{}}"#,
                "\"op\" must be a string (presence_update, request_guild_members or voice_state_update), not a number",
            ),
            (
                r#"{"op":"heartbeat","d":{}}"#,
                "unknown op \"heartbeat\": expected presence_update, request_guild_members or voice_state_update",
            ),
            (
                r#"{"op":"identify","d":{"token":"x"}}"#,
                "unknown op \"identify\": expected presence_update, request_guild_members or voice_state_update",
            ),
            (
                r#"{"op":"presence_update"}"#,
                "missing \"d\": the fields of presence_update",
            ),
            (
                r#"{"op":"voice_state_update","d":[1]}"#,
                "\"d\" must be an object (the fields of voice_state_update), not an array",
            ),
            (
                r#"{"op":"voice_state_update","d":{},"s":1}"#,
                "unknown field \"s\": a command has only \"op\" and \"d\"",
            ),
        ];
        for (json, reason) in cases {
            assert_eq!(rejected(json), reason, "for {json}");
        }
    }

    #[test]
    fn replies_serialize_to_the_contract() {
        // The reply type and its JSON are protocol's (tested there); what the gateway sends is
        // exactly that JSON.
        for reply in [
            CommandReply::Sent,
            CommandReply::rejected("bad"),
            CommandReply::retry_after(Duration::from_micros(1_500_001)),
            CommandReply::unavailable("down"),
        ] {
            let sent: CommandReply = serde_json::from_slice(&reply_json(&reply)).unwrap();
            assert_eq!(sent, reply);
            assert_eq!(
                reply_json(&reply).as_ref(),
                serde_json::to_vec(&reply).unwrap()
            );
        }
        for op in CommandOp::ALL {
            assert_eq!(CommandOp::from_name(op.name()), Some(op));
            assert!(op.opcode().is_sendable());
        }
    }

    #[test]
    fn a_claimed_request_cannot_be_abandoned_and_vice_versa() {
        let (request, waiter) = CommandRequest::pending(CommandOp::PresenceUpdate, "{}".into());
        assert_eq!(
            waiter
                .state
                .compare_exchange(WAITING, ABANDONED, Ordering::AcqRel, Ordering::Acquire),
            Ok(WAITING)
        );
        assert!(request.claim().is_none());

        let (request, waiter) = CommandRequest::pending(CommandOp::PresenceUpdate, "{}".into());
        let claimed = request.claim().unwrap();
        assert_eq!(claimed.payload, "{}");
        assert!(
            waiter
                .state
                .compare_exchange(WAITING, ABANDONED, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
        );
    }

    // --- with a real nats-server ---

    const PRESENCE: &str = r#"{"op":"presence_update","d":{"status":"online","afk":false,"since":null,"activities":[]}}"#;
    const PRESENCE_PAYLOAD: &str =
        r#"{"op":3,"d":{"since":null,"activities":[],"status":"online","afk":false}}"#;

    async fn ask(client: &async_nats::Client, subject: &str, body: &str) -> CommandReply {
        // The subscription may not be registered yet: retry while nobody answers.
        for _ in 0..100 {
            match client
                .request(subject.to_owned(), Bytes::from(body.to_owned()))
                .await
            {
                Ok(message) => return serde_json::from_slice(&message.payload).unwrap(),
                Err(e) if e.kind() == async_nats::RequestErrorKind::NoResponders => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => panic!("request failed: {e}"),
            }
        }
        panic!("nobody serves {subject}");
    }

    /// A shard loop that sends (records) every command it can claim.
    fn fake_shard(
        mut rx: mpsc::Receiver<CommandRequest>,
    ) -> (tokio::task::JoinHandle<()>, mpsc::UnboundedReceiver<String>) {
        let (sent_tx, sent_rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            while let Some(request) = rx.recv().await {
                let Some(ClaimedCommand {
                    payload, responder, ..
                }) = request.claim()
                else {
                    continue;
                };
                let _ = sent_tx.send(payload);
                responder.respond(CommandReply::Sent);
            }
        });
        (task, sent_rx)
    }

    #[tokio::test]
    async fn serve_answers_over_nats() -> anyhow::Result<()> {
        let server = shardyard_tests::NatsServer::start().await?;
        let client = server.connect().await?;
        let bot = BotKey::local("cmdbot")?;
        let (shard, total) = (1, 2);
        let subject = bot.command_subject(shard);
        let (tx, rx) = mpsc::channel(8);
        let (shard_task, mut sent) = fake_shard(rx);
        let shutdown = CancellationToken::new();
        let service = tokio::spawn(serve(
            client.clone(),
            bot.clone(),
            shard,
            total,
            Intents::GUILDS,
            tx,
            shutdown.clone(),
        ));

        // Valid: sent, with the exact gateway payload.
        assert_eq!(ask(&client, &subject, PRESENCE).await, CommandReply::Sent);
        assert_eq!(sent.recv().await.as_deref(), Some(PRESENCE_PAYLOAD));

        let guild = guild_on(1, 2);
        let voice = format!(
            r#"{{"op":"voice_state_update","d":{{"guild_id":"{guild}","channel_id":"7","self_mute":false,"self_deaf":false}}}}"#
        );
        assert_eq!(ask(&client, &subject, &voice).await, CommandReply::Sent);
        assert!(sent.recv().await.unwrap().starts_with(r#"{"op":4,"d":"#));

        // Invalid: rejected with the reason, and nothing reaches the shard.
        assert_eq!(
            ask(&client, &subject, "not json").await,
            CommandReply::rejected("malformed JSON: expected ident at line 1 column 2")
        );
        let other = guild_on(0, 2);
        let wrong_shard = format!(
            r#"{{"op":"request_guild_members","d":{{"guild_id":"{other}","query":"a","limit":5}}}}"#
        );
        assert_eq!(
            ask(&client, &subject, &wrong_shard).await,
            CommandReply::rejected(format!(
                "guild {other} is on shard 0, not shard 1 (of 2): send it to shard 0's subject"
            ))
        );
        // The bot's intents apply: no GUILD_MEMBERS, no member list.
        let all_members = format!(
            r#"{{"op":"request_guild_members","d":{{"guild_id":"{guild}","query":"","limit":0}}}}"#
        );
        assert!(matches!(
            ask(&client, &subject, &all_members).await,
            CommandReply::Rejected { reason } if reason.contains("GUILD_MEMBERS")
        ));
        assert!(sent.try_recv().is_err());

        // Without a reply subject: still sent, nobody answered.
        client
            .publish(subject.clone(), Bytes::from_static(PRESENCE.as_bytes()))
            .await?;
        let payload = tokio::time::timeout(Duration::from_secs(5), sent.recv()).await?;
        assert_eq!(payload.as_deref(), Some(PRESENCE_PAYLOAD));

        // Shutdown: serve returns, and the subject has no responders any more.
        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(5), service).await???;
        let gone = client
            .request(subject.clone(), Bytes::from_static(PRESENCE.as_bytes()))
            .await;
        assert!(matches!(
            gone.map_err(|e| e.kind()),
            Err(async_nats::RequestErrorKind::NoResponders)
        ));
        drop(sent);
        shard_task.abort();
        Ok(())
    }

    #[tokio::test]
    async fn a_full_or_stalled_shard_is_answered_without_waiting_forever() -> anyhow::Result<()> {
        let server = shardyard_tests::NatsServer::start().await?;
        let client = server.connect().await?;
        let bot = BotKey::local("cmdbot")?;
        let subject = bot.command_subject(0);
        // A queue of one, and a shard loop that does not read it yet (it is reconnecting).
        let (tx, rx) = mpsc::channel(1);
        let shutdown = CancellationToken::new();
        let timeouts = Timeouts {
            queue: Duration::from_millis(500),
            claimed: Duration::from_secs(5),
            full_retry: Duration::from_millis(250),
        };
        let scope = Scope {
            shard: 0,
            total: 1,
            intents: Intents::all(),
        };
        let service = tokio::spawn({
            let (client, bot, shutdown) = (client.clone(), bot.clone(), shutdown.clone());
            async move { serve_with(client, &bot, scope, tx, shutdown, timeouts).await }
        });

        // The first request waits in the queue…
        let first = tokio::spawn({
            let (client, subject) = (client.clone(), subject.clone());
            async move { ask(&client, &subject, PRESENCE).await }
        });
        while rx.is_empty() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // …so the next finds it full: retry after.
        assert_eq!(
            ask(&client, &subject, PRESENCE).await,
            CommandReply::RetryAfter {
                retry_after_ms: 250
            }
        );
        // The first is given up after the queue timeout: unavailable.
        assert_eq!(
            first.await?,
            CommandReply::unavailable(
                "shard 0 is not connected: the command was not sent within 500 ms"
            )
        );
        // With the shard known to be stalled, a full queue answers unavailable too.
        assert_eq!(
            ask(&client, &subject, PRESENCE).await,
            CommandReply::unavailable("shard 0 is not connected")
        );

        // The shard comes back: the abandoned request is skipped, never sent late.
        let (shard_task, mut sent) = fake_shard(rx);
        let guild = guild_on(0, 1);
        let voice = format!(
            r#"{{"op":"voice_state_update","d":{{"guild_id":"{guild}","channel_id":null,"self_mute":false,"self_deaf":false}}}}"#
        );
        assert_eq!(ask(&client, &subject, &voice).await, CommandReply::Sent);
        assert!(sent.recv().await.unwrap().starts_with(r#"{"op":4,"#));
        assert!(sent.try_recv().is_err());

        // The shard stops for good: serve stops too (another process may hold the shard).
        shard_task.abort();
        let _ = shard_task.await;
        tokio::time::timeout(Duration::from_secs(5), service).await???;
        Ok(())
    }

    #[tokio::test]
    async fn a_request_the_shard_drops_unanswered_is_unavailable() -> anyhow::Result<()> {
        let server = shardyard_tests::NatsServer::start().await?;
        let client = server.connect().await?;
        let bot = BotKey::local("cmdbot")?;
        let subject = bot.command_subject(0);
        let (tx, mut rx) = mpsc::channel(4);
        let shutdown = CancellationToken::new();
        let service = tokio::spawn(serve(
            client.clone(),
            bot.clone(),
            0,
            1,
            Intents::all(),
            tx,
            shutdown.clone(),
        ));
        // A shard loop whose connection drops mid-send: it claims, then drops the responder.
        let shard_task = tokio::spawn(async move {
            while let Some(request) = rx.recv().await {
                let claimed = request.claim();
                drop(claimed);
            }
        });
        assert_eq!(
            ask(&client, &subject, PRESENCE).await,
            CommandReply::unavailable(
                "shard 0 lost its connection while sending; the command may have been sent"
            )
        );
        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(5), service).await???;
        shard_task.abort();
        Ok(())
    }
}
