//! Discord-shaped dispatch payloads built from the world: what the traffic generator, `/_sim/say`
//! and REST-created messages dispatch.

use serde::Serialize;

use crate::json;
use crate::model::{PartialMember, User};
use crate::snowflake::{as_string, iso8601, now_ms, opt_string};

/// A message as sent in MESSAGE_CREATE (and returned by REST). Written by hand
/// ([`MessagePayload::to_json`]): it is most of the traffic.
pub struct MessagePayload<'a> {
    kind: u8,
    tts: bool,
    timestamp: String,
    pinned: bool,
    nonce: Option<Nonce>,
    mention_everyone: bool,
    member: Option<PartialMember<'a>>,
    id: u64,
    flags: u64,
    embeds: &'a [serde_json::Value],
    edited_timestamp: Option<String>,
    content: &'a str,
    channel_type: Option<u8>,
    channel_id: u64,
    author: &'a User,
    guild_id: Option<u64>,
}

impl Serialize for MessagePayload<'_> {
    /// The hand-written JSON, passed through as a raw value (the simulator serializes only to
    /// JSON), so REST answers and gateway events share one writer.
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let text = String::from_utf8(self.to_json()).map_err(serde::ser::Error::custom)?;
        let raw =
            serde_json::value::RawValue::from_string(text).map_err(serde::ser::Error::custom)?;
        raw.serialize(s)
    }
}

/// A message nonce: generated ones are numbers (written without allocating), a client's may be
/// any string. Both go out as a JSON string.
#[derive(Debug, Clone)]
pub enum Nonce {
    /// A number, sent as its decimal string.
    Id(u64),
    /// A client's own nonce.
    Text(String),
}

impl Serialize for Nonce {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Id(id) => s.serialize_str(itoa::Buffer::new().format(*id)),
            Self::Text(text) => s.serialize_str(text),
        }
    }
}

/// The parts of a message.
pub struct MessageParts<'a> {
    /// Message id.
    pub id: u64,
    /// Channel id.
    pub channel_id: u64,
    /// Guild id, `None` in DMs.
    pub guild_id: Option<u64>,
    /// Author.
    pub author: &'a User,
    /// The author's member in the guild (gateway events carry it).
    pub member: Option<PartialMember<'a>>,
    /// Text.
    pub content: &'a str,
    /// Embeds.
    pub embeds: &'a [serde_json::Value],
    /// When it was edited, for MESSAGE_UPDATE.
    pub edited_ms: Option<u64>,
    /// Client nonce.
    pub nonce: Option<Nonce>,
}

impl<'a> MessagePayload<'a> {
    /// A message from its parts.
    #[must_use]
    pub fn new(parts: MessageParts<'a>) -> Self {
        Self {
            kind: 0,
            tts: false,
            timestamp: iso8601(crate::snowflake::timestamp_ms(parts.id)),
            pinned: false,
            nonce: parts.nonce,
            mention_everyone: false,
            member: parts.member,
            id: parts.id,
            flags: 0,
            embeds: parts.embeds,
            edited_timestamp: parts.edited_ms.map(iso8601),
            content: parts.content,
            channel_type: parts.guild_id.map(|_| 0),
            channel_id: parts.channel_id,
            author: parts.author,
            guild_id: parts.guild_id,
        }
    }

    /// The message's JSON.
    #[must_use]
    pub fn to_json(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(1024);
        out.push(b'{');
        json::key(&mut out, "type");
        json::num(&mut out, u64::from(self.kind));
        json::key(&mut out, "tts");
        json::boolean(&mut out, self.tts);
        json::key(&mut out, "timestamp");
        json::str(&mut out, &self.timestamp);
        json::key(&mut out, "pinned");
        json::boolean(&mut out, self.pinned);
        if let Some(nonce) = &self.nonce {
            json::key(&mut out, "nonce");
            match nonce {
                Nonce::Id(id) => json::id(&mut out, *id),
                Nonce::Text(text) => json::str(&mut out, text),
            }
        }
        json::key(&mut out, "mentions");
        out.extend_from_slice(b"[]");
        json::key(&mut out, "mention_roles");
        out.extend_from_slice(b"[]");
        json::key(&mut out, "mention_everyone");
        json::boolean(&mut out, self.mention_everyone);
        if let Some(member) = &self.member {
            json::key(&mut out, "member");
            member.write_json(&mut out);
        }
        json::key(&mut out, "id");
        json::id(&mut out, self.id);
        json::key(&mut out, "flags");
        json::num(&mut out, self.flags);
        json::key(&mut out, "embeds");
        let _ = serde_json::to_writer(&mut out, self.embeds);
        json::key(&mut out, "edited_timestamp");
        json::opt_str(&mut out, self.edited_timestamp.as_deref());
        json::key(&mut out, "content");
        json::str(&mut out, self.content);
        json::key(&mut out, "components");
        out.extend_from_slice(b"[]");
        if let Some(kind) = self.channel_type {
            json::key(&mut out, "channel_type");
            json::num(&mut out, u64::from(kind));
        }
        json::key(&mut out, "channel_id");
        json::id(&mut out, self.channel_id);
        json::key(&mut out, "author");
        self.author.write_json(&mut out);
        json::key(&mut out, "attachments");
        out.extend_from_slice(b"[]");
        if let Some(guild) = self.guild_id {
            json::key(&mut out, "guild_id");
            json::id(&mut out, guild);
        }
        out.push(b'}');
        out
    }

    /// The same message with empty content, as sessions without MESSAGE_CONTENT see it.
    #[must_use]
    pub fn without_content(mut self) -> Self {
        self.content = "";
        self.embeds = &[];
        self
    }
}

/// MESSAGE_DELETE.
#[derive(Serialize)]
pub struct MessageDelete {
    /// Message.
    #[serde(with = "as_string")]
    pub id: u64,
    /// Channel.
    #[serde(with = "as_string")]
    pub channel_id: u64,
    /// Guild.
    #[serde(with = "as_string")]
    pub guild_id: u64,
}

/// TYPING_START.
#[derive(Serialize)]
pub struct TypingStart<'a> {
    /// Channel.
    #[serde(with = "as_string")]
    pub channel_id: u64,
    /// Guild.
    #[serde(with = "as_string")]
    pub guild_id: u64,
    /// User.
    #[serde(with = "as_string")]
    pub user_id: u64,
    /// Unix seconds.
    pub timestamp: u64,
    /// The member typing, with the user.
    pub member: &'a crate::model::Member,
}

/// MESSAGE_REACTION_ADD.
#[derive(Serialize)]
pub struct ReactionAdd<'a> {
    /// User.
    #[serde(with = "as_string")]
    pub user_id: u64,
    /// Reaction type (0 normal).
    #[serde(rename = "type")]
    pub kind: u8,
    /// Message.
    #[serde(with = "as_string")]
    pub message_id: u64,
    /// The author of the message.
    #[serde(with = "as_string")]
    pub message_author_id: u64,
    /// Member reacting.
    pub member: &'a crate::model::Member,
    /// Emoji.
    pub emoji: EmojiRef<'a>,
    /// Channel.
    #[serde(with = "as_string")]
    pub channel_id: u64,
    /// Whether it's a super reaction.
    pub burst: bool,
    /// Guild.
    #[serde(with = "as_string")]
    pub guild_id: u64,
}

/// A unicode emoji reference.
#[derive(Serialize)]
pub struct EmojiRef<'a> {
    /// Custom emoji id; `null` for unicode.
    pub id: Option<()>,
    /// The emoji.
    pub name: &'a str,
}

/// A presence (PRESENCE_UPDATE).
#[derive(Serialize)]
pub struct PresenceUpdate<'a> {
    /// Partial user.
    pub user: UserRef,
    /// Status.
    pub status: &'a str,
    /// Activities.
    pub activities: Vec<Activity<'a>>,
    /// Per-platform status.
    pub client_status: ClientStatus<'a>,
    /// Guild.
    #[serde(with = "as_string")]
    pub guild_id: u64,
}

/// `{ "id": … }`.
#[derive(Serialize)]
pub struct UserRef {
    /// User id.
    #[serde(with = "as_string")]
    pub id: u64,
}

/// An activity.
#[derive(Serialize)]
pub struct Activity<'a> {
    /// Name.
    pub name: &'a str,
    /// Type (0 playing).
    #[serde(rename = "type")]
    pub kind: u8,
    /// Unix ms.
    pub created_at: u64,
    /// Activity id.
    pub id: &'a str,
}

/// Per-platform status.
#[derive(Serialize)]
pub struct ClientStatus<'a> {
    /// Desktop.
    pub desktop: &'a str,
}

/// GUILD_MEMBER_ADD / GUILD_MEMBER_UPDATE: a member plus its guild id.
#[derive(Serialize)]
pub struct MemberWithGuild<'a> {
    /// The member.
    #[serde(flatten)]
    pub member: &'a crate::model::Member,
    /// Guild.
    #[serde(with = "as_string")]
    pub guild_id: u64,
}

/// GUILD_MEMBER_REMOVE.
#[derive(Serialize)]
pub struct MemberRemove<'a> {
    /// Guild.
    #[serde(with = "as_string")]
    pub guild_id: u64,
    /// The user who left.
    pub user: &'a User,
}

/// GUILD_ROLE_CREATE / GUILD_ROLE_UPDATE.
#[derive(Serialize)]
pub struct RoleEvent<'a> {
    /// Guild.
    #[serde(with = "as_string")]
    pub guild_id: u64,
    /// The role.
    pub role: &'a crate::model::Role,
}

/// GUILD_ROLE_DELETE.
#[derive(Serialize)]
pub struct RoleDelete {
    /// Guild.
    #[serde(with = "as_string")]
    pub guild_id: u64,
    /// Role.
    #[serde(with = "as_string")]
    pub role_id: u64,
}

/// THREAD_CREATE: the thread channel, and `newly_created` when it was just created (rather than
/// the bot being added to an existing private thread).
#[derive(Serialize)]
pub struct ThreadCreate<'a> {
    /// The thread.
    #[serde(flatten)]
    pub thread: &'a crate::model::Channel,
    /// Always `true` here.
    pub newly_created: bool,
}

/// THREAD_DELETE: only the thread's id, guild, parent and type.
#[derive(Serialize)]
pub struct ThreadDelete {
    /// The thread.
    #[serde(with = "as_string")]
    pub id: u64,
    /// Guild.
    #[serde(with = "as_string")]
    pub guild_id: u64,
    /// The channel the thread was in.
    #[serde(with = "as_string")]
    pub parent_id: u64,
    /// The thread's channel type.
    #[serde(rename = "type")]
    pub kind: u8,
}

/// GUILD_DELETE: `unavailable: true` for an outage, absent when the bot was removed.
#[derive(Serialize)]
pub struct GuildDelete {
    /// Guild.
    #[serde(with = "as_string")]
    pub id: u64,
    /// Present (true) only for outages.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unavailable: Option<bool>,
}

/// A voice state: VOICE_STATE_UPDATE's payload, and (without `guild_id` and `member`) an entry
/// of GUILD_CREATE's `voice_states`.
#[derive(Serialize)]
pub struct VoiceState<'a> {
    /// Guild; absent inside GUILD_CREATE.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "opt_string::serialize"
    )]
    pub guild_id: Option<u64>,
    /// Channel, `null` when leaving.
    #[serde(serialize_with = "opt_string::serialize")]
    pub channel_id: Option<u64>,
    /// User.
    #[serde(with = "as_string")]
    pub user_id: u64,
    /// The member; absent inside GUILD_CREATE.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub member: Option<&'a crate::model::Member>,
    /// Voice session id.
    pub session_id: String,
    /// Server-deafened.
    pub deaf: bool,
    /// Server-muted.
    pub mute: bool,
    /// Self-deafened.
    pub self_deaf: bool,
    /// Self-muted.
    pub self_mute: bool,
    /// Streaming video.
    pub self_video: bool,
    /// Suppressed.
    pub suppress: bool,
    /// Request to speak.
    pub request_to_speak_timestamp: Option<()>,
}

impl<'a> VoiceState<'a> {
    /// `user` in `channel` (or leaving, with `None`), nothing muted; the voice session id is
    /// derived from the user unless set after.
    #[must_use]
    pub fn new(user_id: u64, channel_id: Option<u64>) -> Self {
        Self {
            guild_id: None,
            channel_id,
            user_id,
            member: None,
            session_id: format!("{user_id:x}"),
            deaf: false,
            mute: false,
            self_deaf: false,
            self_mute: false,
            self_video: false,
            suppress: false,
            request_to_speak_timestamp: None,
        }
    }

    /// The same state as VOICE_STATE_UPDATE sends it: with the guild and the member.
    #[must_use]
    pub fn in_guild(mut self, guild_id: u64, member: &'a crate::model::Member) -> Self {
        self.guild_id = Some(guild_id);
        self.member = Some(member);
        self
    }
}

/// A unix-seconds timestamp now.
#[must_use]
pub fn unix_secs() -> u64 {
    now_ms() / 1000
}

/// INTERACTION_CREATE: an interaction a user started (`type` 2 APPLICATION_COMMAND, 3
/// MESSAGE_COMPONENT, 4 APPLICATION_COMMAND_AUTOCOMPLETE, 5 MODAL_SUBMIT). The same JSON is the
/// body the simulator POSTs to an app's interactions endpoint URL.
#[derive(Serialize)]
pub struct InteractionCreate<'a> {
    /// Interaction id.
    #[serde(with = "as_string")]
    pub id: u64,
    /// The bot's application.
    #[serde(with = "as_string")]
    pub application_id: u64,
    /// The interaction type.
    #[serde(rename = "type")]
    pub kind: u8,
    /// The command, component or modal.
    pub data: InteractionData<'a>,
    /// Guild.
    #[serde(with = "as_string")]
    pub guild_id: u64,
    /// Channel, partial.
    pub channel: PartialChannel<'a>,
    /// Channel id.
    #[serde(with = "as_string")]
    pub channel_id: u64,
    /// The message a component is attached to (MESSAGE_COMPONENT only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<serde_json::Value>,
    /// The member who ran it, with the user.
    pub member: InteractionMember<'a>,
    /// The token to answer with.
    pub token: &'a str,
    /// Always 1.
    pub version: u8,
    /// The bot's permissions in the channel.
    pub app_permissions: &'static str,
    /// The user's locale.
    pub locale: &'static str,
    /// The guild's locale.
    pub guild_locale: &'static str,
    /// Entitlements; none.
    pub entitlements: [(); 0],
    /// Installation contexts: guild install, keyed `"0"`.
    pub authorizing_integration_owners: std::collections::BTreeMap<&'static str, String>,
    /// 0: in a guild.
    pub context: u8,
    /// Attachment size limit in bytes.
    pub attachment_size_limit: u64,
}

/// The `data` of an interaction, by its type.
#[derive(Serialize)]
#[serde(untagged)]
pub enum InteractionData<'a> {
    /// APPLICATION_COMMAND and APPLICATION_COMMAND_AUTOCOMPLETE.
    Command(CommandData<'a>),
    /// MESSAGE_COMPONENT.
    Component(ComponentData<'a>),
    /// MODAL_SUBMIT.
    ModalSubmit(ModalSubmitData<'a>),
}

/// The command of an interaction.
#[derive(Serialize)]
pub struct CommandData<'a> {
    /// Command id.
    #[serde(with = "as_string")]
    pub id: u64,
    /// Command name.
    pub name: &'a str,
    /// 1: a slash command.
    #[serde(rename = "type")]
    pub kind: u8,
    /// Options as the client sent them (for autocomplete, one marked `focused`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub options: Option<&'a serde_json::Value>,
}

/// The component a user clicked.
#[derive(Serialize)]
pub struct ComponentData<'a> {
    /// The developer-defined id of the component.
    pub custom_id: &'a str,
    /// 2: a button.
    pub component_type: u8,
}

/// The modal a user submitted.
#[derive(Serialize)]
pub struct ModalSubmitData<'a> {
    /// The developer-defined id of the modal.
    pub custom_id: &'a str,
    /// The submitted components; none.
    pub components: [(); 0],
}

/// A channel as embedded in an interaction.
#[derive(Serialize)]
pub struct PartialChannel<'a> {
    /// Id.
    #[serde(with = "as_string")]
    pub id: u64,
    /// Type.
    #[serde(rename = "type")]
    pub kind: u8,
    /// Name.
    pub name: &'a str,
    /// Guild.
    #[serde(with = "as_string")]
    pub guild_id: u64,
    /// The user's permissions there.
    pub permissions: &'static str,
}

/// The member who ran an interaction: the guild member plus their permissions.
#[derive(Serialize)]
pub struct InteractionMember<'a> {
    /// The member.
    #[serde(flatten)]
    pub member: &'a crate::model::Member,
    /// Their permissions in the channel.
    pub permissions: &'static str,
}
