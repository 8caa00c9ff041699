//! Events as handlers see them: twilight-model types parsed lazily from the raw payload, and
//! what the gateway said about each event in its headers.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_nats::HeaderMap;
use serde::de::DeserializeOwned;
use shardyard_protocol::names::{headers, parse_shard_header};
use twilight_model::gateway::payload::incoming;

/// A Discord dispatch type a handler can ask for: a twilight-model event (every dispatch
/// twilight-model 0.18 knows is implemented here), or a type of your own for events it does not
/// know yet.
///
/// The payload is the dispatch's `d`, byte for byte as Discord sent it; it is parsed into `Self`
/// only for handlers of [`NAME`](Self::NAME), when such a handler runs.
///
/// ```
/// use serde::Deserialize;
/// use shardyard_worker::Event;
///
/// #[derive(Deserialize)]
/// struct SoundboardSounds {
///     guild_id: String,
/// }
///
/// impl Event for SoundboardSounds {
///     const NAME: &'static str = "SOUNDBOARD_SOUNDS";
/// }
/// ```
pub trait Event: DeserializeOwned + Send + 'static {
    /// Discord's name of the dispatch (`t`), e.g. `MESSAGE_CREATE`.
    const NAME: &'static str;
}

macro_rules! events {
    ($($ty:ident => $name:literal,)*) => {
        $(
            impl Event for incoming::$ty {
                const NAME: &'static str = $name;
            }
        )*

        /// Every dispatch type twilight-model 0.18 parses, by Discord's name.
        pub const KNOWN_EVENTS: &[&str] = &[$($name),*];
    };
}

events! {
    AutoModerationActionExecution => "AUTO_MODERATION_ACTION_EXECUTION",
    AutoModerationRuleCreate => "AUTO_MODERATION_RULE_CREATE",
    AutoModerationRuleDelete => "AUTO_MODERATION_RULE_DELETE",
    AutoModerationRuleUpdate => "AUTO_MODERATION_RULE_UPDATE",
    ChannelCreate => "CHANNEL_CREATE",
    ChannelDelete => "CHANNEL_DELETE",
    ChannelPinsUpdate => "CHANNEL_PINS_UPDATE",
    ChannelUpdate => "CHANNEL_UPDATE",
    CommandPermissionsUpdate => "APPLICATION_COMMAND_PERMISSIONS_UPDATE",
    EntitlementCreate => "ENTITLEMENT_CREATE",
    GuildAuditLogEntryCreate => "GUILD_AUDIT_LOG_ENTRY_CREATE",
    BanAdd => "GUILD_BAN_ADD",
    BanRemove => "GUILD_BAN_REMOVE",
    GuildCreate => "GUILD_CREATE",
    GuildDelete => "GUILD_DELETE",
    GuildEmojisUpdate => "GUILD_EMOJIS_UPDATE",
    GuildIntegrationsUpdate => "GUILD_INTEGRATIONS_UPDATE",
    GuildScheduledEventCreate => "GUILD_SCHEDULED_EVENT_CREATE",
    GuildScheduledEventDelete => "GUILD_SCHEDULED_EVENT_DELETE",
    GuildScheduledEventUpdate => "GUILD_SCHEDULED_EVENT_UPDATE",
    GuildScheduledEventUserAdd => "GUILD_SCHEDULED_EVENT_USER_ADD",
    GuildScheduledEventUserRemove => "GUILD_SCHEDULED_EVENT_USER_REMOVE",
    MemberChunk => "GUILD_MEMBERS_CHUNK",
    MemberAdd => "GUILD_MEMBER_ADD",
    MemberRemove => "GUILD_MEMBER_REMOVE",
    MemberUpdate => "GUILD_MEMBER_UPDATE",
    RoleCreate => "GUILD_ROLE_CREATE",
    RoleDelete => "GUILD_ROLE_DELETE",
    RoleUpdate => "GUILD_ROLE_UPDATE",
    GuildStickersUpdate => "GUILD_STICKERS_UPDATE",
    GuildUpdate => "GUILD_UPDATE",
    IntegrationCreate => "INTEGRATION_CREATE",
    IntegrationDelete => "INTEGRATION_DELETE",
    IntegrationUpdate => "INTEGRATION_UPDATE",
    InteractionCreate => "INTERACTION_CREATE",
    InviteCreate => "INVITE_CREATE",
    InviteDelete => "INVITE_DELETE",
    MessageCreate => "MESSAGE_CREATE",
    MessageDelete => "MESSAGE_DELETE",
    MessageDeleteBulk => "MESSAGE_DELETE_BULK",
    ReactionAdd => "MESSAGE_REACTION_ADD",
    ReactionRemove => "MESSAGE_REACTION_REMOVE",
    ReactionRemoveEmoji => "MESSAGE_REACTION_REMOVE_EMOJI",
    ReactionRemoveAll => "MESSAGE_REACTION_REMOVE_ALL",
    MessagePollVoteAdd => "MESSAGE_POLL_VOTE_ADD",
    MessagePollVoteRemove => "MESSAGE_POLL_VOTE_REMOVE",
    MessageUpdate => "MESSAGE_UPDATE",
    PresenceUpdate => "PRESENCE_UPDATE",
    RateLimited => "RATE_LIMITED",
    Ready => "READY",
    StageInstanceCreate => "STAGE_INSTANCE_CREATE",
    StageInstanceDelete => "STAGE_INSTANCE_DELETE",
    StageInstanceUpdate => "STAGE_INSTANCE_UPDATE",
    SubscriptionCreate => "SUBSCRIPTION_CREATE",
    SubscriptionDelete => "SUBSCRIPTION_DELETE",
    SubscriptionUpdate => "SUBSCRIPTION_UPDATE",
    ThreadCreate => "THREAD_CREATE",
    ThreadDelete => "THREAD_DELETE",
    ThreadListSync => "THREAD_LIST_SYNC",
    ThreadMemberUpdate => "THREAD_MEMBER_UPDATE",
    ThreadMembersUpdate => "THREAD_MEMBERS_UPDATE",
    ThreadUpdate => "THREAD_UPDATE",
    TypingStart => "TYPING_START",
    UserUpdate => "USER_UPDATE",
    VoiceServerUpdate => "VOICE_SERVER_UPDATE",
    VoiceStateUpdate => "VOICE_STATE_UPDATE",
    WebhooksUpdate => "WEBHOOKS_UPDATE",
}

/// A payload that is not what its event type says: the event goes to the dead-letter subject
/// with this as its reason (retrying cannot fix it).
#[derive(Debug, thiserror::Error)]
#[error("the payload is not a valid {event_type} (twilight-model): {source}")]
pub struct EventParseError {
    /// The event type the payload was parsed as.
    pub event_type: &'static str,
    /// What serde_json said.
    #[source]
    pub source: serde_json::Error,
}

/// Parses a raw payload as `E`.
///
/// # Errors
/// [`EventParseError`] when the payload does not match `E`.
pub fn parse_event<E: Event>(payload: &[u8]) -> Result<E, EventParseError> {
    serde_json::from_slice(payload).map_err(|source| EventParseError {
        event_type: E::NAME,
        source,
    })
}

/// What the gateway and JetStream said about one event (its headers and delivery).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventInfo {
    /// The dispatch type (`Shardyard-Event`, else the subject's last token).
    pub event_type: String,
    /// The shard that received it and the shard total (`Shardyard-Shard`).
    pub shard: Option<(u32, u32)>,
    /// The gateway sequence number (`Shardyard-Seq`).
    pub seq: Option<u64>,
    /// `Nats-Msg-Id`: `<session_id>:<seq>`, unique per event.
    pub msg_id: Option<String>,
    /// When the gateway received it, in unix microseconds (`Shardyard-Received-At`).
    pub received_at_us: Option<u64>,
    /// When JetStream stored it, in unix microseconds (from the delivery).
    pub stored_at_us: Option<u64>,
    /// The event's sequence number in the bot's stream.
    pub stream_sequence: u64,
    /// How many times JetStream has delivered it, this time included (1 the first time).
    pub delivered: u32,
}

impl EventInfo {
    /// Reads the headers of a message on `subject`; `stream_sequence` and `delivered` come from
    /// JetStream's reply subject (as does `stored_at_us`, left `None` here).
    #[must_use]
    pub fn from_headers(
        subject: &str,
        headers: Option<&HeaderMap>,
        stream_sequence: u64,
        delivered: u32,
    ) -> Self {
        let get = |name: &str| {
            headers
                .and_then(|h| h.get(name))
                .map(|v| v.as_str().to_owned())
        };
        let event_type = get(headers::EVENT)
            .filter(|t| !t.is_empty())
            .unwrap_or_else(|| subject.rsplit('.').next().unwrap_or_default().to_owned());
        Self {
            event_type,
            shard: get(headers::SHARD).and_then(|v| parse_shard_header(&v)),
            seq: get(headers::SEQ).and_then(|v| v.parse().ok()),
            msg_id: get(headers::MSG_ID),
            received_at_us: get(headers::RECEIVED_AT).and_then(|v| v.parse().ok()),
            stored_at_us: None,
            stream_sequence,
            delivered,
        }
    }

    /// How long ago the gateway received the event, by this host's clock (`None` without the
    /// header, or when the clocks disagree so that it would be negative).
    #[must_use]
    pub fn age(&self) -> Option<Duration> {
        let received = UNIX_EPOCH + Duration::from_micros(self.received_at_us?);
        SystemTime::now().duration_since(received).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use twilight_model::gateway::payload::incoming::{MessageCreate, TypingStart};

    #[test]
    fn twilight_types_map_to_discord_names() {
        assert_eq!(MessageCreate::NAME, "MESSAGE_CREATE");
        assert_eq!(incoming::MemberChunk::NAME, "GUILD_MEMBERS_CHUNK");
        assert_eq!(incoming::ReactionAdd::NAME, "MESSAGE_REACTION_ADD");
        assert_eq!(
            incoming::CommandPermissionsUpdate::NAME,
            "APPLICATION_COMMAND_PERMISSIONS_UPDATE"
        );
        assert!(KNOWN_EVENTS.contains(&"INTERACTION_CREATE"));
        let mut sorted = KNOWN_EVENTS.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), KNOWN_EVENTS.len(), "no name twice");
        assert!(
            KNOWN_EVENTS
                .iter()
                .all(|n| shardyard_protocol::names::is_subject_token(n))
        );
    }

    #[test]
    fn a_payload_of_another_shape_is_a_clear_error() {
        let typing = br#"{"channel_id":"1","user_id":"2","timestamp":1700000000}"#;
        let parsed: TypingStart = parse_event(typing).unwrap();
        assert_eq!(parsed.user_id.get(), 2);
        let error = parse_event::<MessageCreate>(typing).err().unwrap();
        assert_eq!(error.event_type, "MESSAGE_CREATE");
        let text = error.to_string();
        assert!(
            text.starts_with("the payload is not a valid MESSAGE_CREATE"),
            "{text}"
        );
        assert!(text.contains("at line 1 column"), "{text}");
        let error = parse_event::<MessageCreate>(b"not json").err().unwrap();
        assert!(error.to_string().contains("expected"), "{error}");
    }

    #[test]
    fn headers_become_event_info() {
        let mut headers = HeaderMap::new();
        headers.insert(headers::EVENT, "MESSAGE_CREATE");
        headers.insert(headers::SHARD, "3/16");
        headers.insert(headers::SEQ, "42");
        headers.insert(headers::MSG_ID, "abc:42");
        headers.insert(headers::RECEIVED_AT, "1700000000000000");
        let info = EventInfo::from_headers("x.events.3.MESSAGE_CREATE", Some(&headers), 7, 2);
        assert_eq!(info.event_type, "MESSAGE_CREATE");
        assert_eq!(info.shard, Some((3, 16)));
        assert_eq!(info.seq, Some(42));
        assert_eq!(info.msg_id.as_deref(), Some("abc:42"));
        assert!(info.age().unwrap() > Duration::from_secs(1));
        assert_eq!((info.stream_sequence, info.delivered), (7, 2));
        let bare = EventInfo::from_headers("x.events.0.NEW_THING", None, 1, 1);
        assert_eq!(bare.event_type, "NEW_THING");
        assert_eq!((bare.shard, bare.seq, bare.age()), (None, None, None));
    }
}
