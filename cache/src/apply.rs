//! From one event to the KV writes it causes, without I/O.
//!
//! Applying an event is three steps, only the middle one needs NATS:
//!
//! 1. [`parse`] the payload for its type (only the fields the cache needs are looked at; other
//!    fields travel into the stored values as raw JSON, untouched);
//! 2. read what [`Event::reads`] names (the guild's value, a member's value, key listings);
//! 3. [`Event::apply`] with those values gives the [`Writes`].
//!
//! # Idempotence
//!
//! Every write is an absolute value. The one derived value, `guild.<id>` (its `member_count`,
//! `channel_ids`, `role_ids`), carries the stream sequence of the last event that wrote it in
//! `shardyard_seq`, and an event whose sequence is not above it leaves it alone. The guild's
//! write is always the *last* write of an event ([`Writes::commit`]), so an event redelivered
//! after a crash between two writes redoes the others (absolute, harmless) and then the guild's
//! once. Replaying a whole stream again ends in the same state: a replayed event (older than the
//! guild's value) rewrites a channel or role only if the guild's value still lists it, so
//! something deleted later without an event of its own (a thread with its parent channel)
//! is not brought back.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;
use shardyard_protocol::names::keys;

use crate::schema::{GUILD_ARRAYS, Id, Object, fields};

/// What the cache can keep; each is switched on or off as a whole.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Resource {
    /// Guilds (always on: the others are indexed by them).
    Guilds,
    /// Channels and threads.
    Channels,
    /// Roles.
    Roles,
    /// Members (and the member count).
    Members,
    /// Users (from READY, USER_UPDATE and member payloads).
    Users,
    /// A guild's emoji list.
    Emojis,
    /// Voice states.
    Voice,
    /// Presences (off by default: they are most of a big bot's traffic).
    Presences,
}

impl Resource {
    /// Every resource, in the order of [`Resource::name`].
    pub const ALL: [Self; 8] = [
        Self::Guilds,
        Self::Channels,
        Self::Roles,
        Self::Members,
        Self::Users,
        Self::Emojis,
        Self::Voice,
        Self::Presences,
    ];

    /// The name used in `--resources`.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Guilds => "guilds",
            Self::Channels => "channels",
            Self::Roles => "roles",
            Self::Members => "members",
            Self::Users => "users",
            Self::Emojis => "emojis",
            Self::Voice => "voice",
            Self::Presences => "presences",
        }
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// A set of [`Resource`]s; guilds are always in it.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Resources(u8);

/// A `--resources` entry that names no resource.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown cache resource {0:?} (known: guilds, channels, roles, members, users, emojis, voice, presences)"
)]
pub struct UnknownResource(pub String);

impl Resources {
    /// Everything but presences.
    pub const DEFAULT: Self = Self(0b0111_1111);

    /// Everything.
    pub const ALL: Self = Self(0b1111_1111);

    /// Only guilds.
    #[must_use]
    pub fn guilds_only() -> Self {
        Self(Resource::Guilds.bit())
    }

    /// Parses a comma-separated list (`channels,roles`); guilds are added.
    ///
    /// # Errors
    /// [`UnknownResource`] for a name that is not a resource.
    pub fn parse(list: &str) -> Result<Self, UnknownResource> {
        let mut set = Self::guilds_only();
        for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            let resource = Resource::ALL
                .into_iter()
                .find(|r| r.name().eq_ignore_ascii_case(name))
                .ok_or_else(|| UnknownResource(name.to_owned()))?;
            set = set.with(resource);
        }
        Ok(set)
    }

    /// This set and `resource`.
    #[must_use]
    pub fn with(self, resource: Resource) -> Self {
        Self(self.0 | resource.bit())
    }

    /// Whether `resource` is in the set.
    #[must_use]
    pub fn contains(self, resource: Resource) -> bool {
        self.0 & resource.bit() != 0
    }

    /// The event types the cache consumes for this set, for the consumer's subject filter.
    #[must_use]
    pub fn event_types(self) -> Vec<&'static str> {
        EVENT_TYPES
            .iter()
            .filter(|(_, r)| self.contains(*r))
            .map(|(t, _)| *t)
            .collect()
    }
}

impl Default for Resources {
    fn default() -> Self {
        Self::DEFAULT
    }
}

impl fmt::Debug for Resources {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = Resource::ALL
            .into_iter()
            .filter(|r| self.contains(*r))
            .map(Resource::name)
            .collect();
        write!(f, "{}", names.join(","))
    }
}

impl std::str::FromStr for Resources {
    type Err = UnknownResource;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// Every event type the cache applies, with the resource it belongs to. Its order is the label
/// order of the per-type metrics.
pub const EVENT_TYPES: &[(&str, Resource)] = &[
    ("READY", Resource::Users),
    ("GUILD_CREATE", Resource::Guilds),
    ("GUILD_UPDATE", Resource::Guilds),
    ("GUILD_DELETE", Resource::Guilds),
    ("CHANNEL_CREATE", Resource::Channels),
    ("CHANNEL_UPDATE", Resource::Channels),
    ("CHANNEL_DELETE", Resource::Channels),
    ("THREAD_CREATE", Resource::Channels),
    ("THREAD_UPDATE", Resource::Channels),
    ("THREAD_DELETE", Resource::Channels),
    ("THREAD_LIST_SYNC", Resource::Channels),
    ("GUILD_ROLE_CREATE", Resource::Roles),
    ("GUILD_ROLE_UPDATE", Resource::Roles),
    ("GUILD_ROLE_DELETE", Resource::Roles),
    ("GUILD_MEMBER_ADD", Resource::Members),
    ("GUILD_MEMBER_UPDATE", Resource::Members),
    ("GUILD_MEMBER_REMOVE", Resource::Members),
    ("GUILD_MEMBERS_CHUNK", Resource::Members),
    ("USER_UPDATE", Resource::Users),
    ("GUILD_EMOJIS_UPDATE", Resource::Emojis),
    ("VOICE_STATE_UPDATE", Resource::Voice),
    ("PRESENCE_UPDATE", Resource::Presences),
];

/// The index of `event_type` in [`EVENT_TYPES`].
#[must_use]
pub fn event_index(event_type: &str) -> Option<usize> {
    EVENT_TYPES.iter().position(|(t, _)| *t == event_type)
}

/// A payload that does not match its event type.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// Not JSON, or not the shape of its type.
    #[error("{event} payload does not match its type: {source}")]
    Malformed {
        /// The event type.
        event: &'static str,
        /// What serde said.
        #[source]
        source: serde_json::Error,
    },
    /// A field the cache needs is missing.
    #[error("{event} payload has no {field:?}")]
    Missing {
        /// The event type.
        event: &'static str,
        /// The field.
        field: &'static str,
    },
}

impl ApplyError {
    /// A short, bounded name of the error kind, for metrics labels.
    #[must_use]
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Malformed { .. } => "malformed",
            Self::Missing { .. } => "missing_field",
        }
    }
}

/// One KV write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Store `value` at `key`.
    Put {
        /// The key.
        key: String,
        /// The JSON value.
        value: Vec<u8>,
    },
    /// Delete `key`.
    Delete {
        /// The key.
        key: String,
    },
}

impl Op {
    /// The key written.
    #[must_use]
    pub fn key(&self) -> &str {
        match self {
            Self::Put { key, .. } | Self::Delete { key } => key,
        }
    }
}

/// The writes of one event: `ops` in any order (each key at most once), then `commit` (the
/// guild's value) after all of them succeeded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Writes {
    /// Writes that may run concurrently.
    pub ops: Vec<Op>,
    /// The guild value's write, last.
    pub commit: Option<Op>,
}

impl Writes {
    /// Every op, `commit` last.
    pub fn iter(&self) -> impl Iterator<Item = &Op> {
        self.ops.iter().chain(self.commit.iter())
    }

    /// How many writes.
    #[must_use]
    pub fn len(&self) -> usize {
        self.ops.len() + usize::from(self.commit.is_some())
    }

    /// Whether there is nothing to write.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What an event needs read before it can be applied.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reads {
    /// Keys whose current values are needed.
    pub keys: Vec<String>,
    /// Key filters (`member.<guild>.*`) whose existing keys are needed.
    pub lists: Vec<String>,
}

/// The current values [`Reads`] asked for.
#[derive(Debug, Clone, Default)]
pub struct Current {
    /// Each key asked for and its value, if any.
    pub values: Vec<(String, Option<Bytes>)>,
    /// Every existing key matching the listed filters.
    pub listed: Vec<String>,
}

impl Current {
    /// The value of `key`, if it was read and exists.
    #[must_use]
    pub fn get(&self, key: &str) -> Option<&[u8]> {
        self.values
            .iter()
            .find(|(k, _)| k == key)
            .and_then(|(_, v)| v.as_deref())
    }
}

/// A parsed cache event. Borrows the payload.
#[derive(Debug)]
pub struct Event<'a> {
    name: &'static str,
    kind: Kind<'a>,
}

#[derive(Debug)]
enum Kind<'a> {
    Ready {
        user: &'a RawValue,
        user_id: Id,
    },
    GuildCreate(Box<GuildCreate<'a>>),
    GuildUpdate {
        id: Id,
        guild: Object<'a>,
        roles: Option<Vec<(Id, &'a RawValue)>>,
        emojis: Option<&'a RawValue>,
    },
    GuildDelete {
        id: Id,
        unavailable: bool,
    },
    ChannelUpsert {
        id: Id,
        guild_id: Option<Id>,
        channel: Object<'a>,
    },
    ChannelDelete {
        id: Id,
        guild_id: Option<Id>,
    },
    ThreadListSync {
        guild_id: Id,
        threads: Vec<(Id, Object<'a>)>,
    },
    RoleUpsert {
        guild_id: Id,
        role_id: Id,
        role: &'a RawValue,
    },
    RoleDelete {
        guild_id: Id,
        role_id: Id,
    },
    MemberUpsert {
        guild_id: Id,
        added: bool,
        member: ParsedMember<'a>,
    },
    MembersChunk {
        guild_id: Id,
        members: Vec<ParsedMember<'a>>,
    },
    MemberRemove {
        guild_id: Id,
        user_id: Id,
    },
    UserUpdate {
        id: Id,
        user: &'a RawValue,
    },
    EmojisUpdate {
        guild_id: Id,
        emojis: &'a RawValue,
    },
    VoiceState {
        guild_id: Option<Id>,
        user_id: Id,
        channel_id: Option<Id>,
        state: Object<'a>,
    },
    Presence {
        guild_id: Id,
        user_id: Id,
        presence: &'a RawValue,
    },
}

#[derive(Debug)]
struct GuildCreate<'a> {
    id: Id,
    unavailable: bool,
    guild: Object<'a>,
    member_count: Option<u64>,
    channels: Vec<(Id, Object<'a>)>,
    roles: Vec<(Id, &'a RawValue)>,
    members: Vec<ParsedMember<'a>>,
    emojis: Option<&'a RawValue>,
    voice_states: Vec<(Id, Object<'a>)>,
    presences: Vec<(Id, &'a RawValue)>,
}

#[derive(Debug)]
struct ParsedMember<'a> {
    user_id: Id,
    user: &'a RawValue,
    member: Object<'a>,
}

#[derive(Deserialize)]
struct IdOnly {
    id: Id,
}

#[derive(Deserialize)]
struct PresenceIds<'a> {
    guild_id: Id,
    #[serde(borrow)]
    user: &'a RawValue,
}

struct Parser {
    event: &'static str,
}

impl Parser {
    fn malformed(&self, source: serde_json::Error) -> ApplyError {
        ApplyError::Malformed {
            event: self.event,
            source,
        }
    }

    fn object<'a>(&self, raw: &'a [u8]) -> Result<Object<'a>, ApplyError> {
        serde_json::from_slice(raw).map_err(|e| self.malformed(e))
    }

    fn raw_object<'a>(&self, raw: &'a RawValue) -> Result<Object<'a>, ApplyError> {
        serde_json::from_str(raw.get()).map_err(|e| self.malformed(e))
    }

    fn field<'a, T: Deserialize<'a>>(
        &self,
        object: &Object<'a>,
        field: &'static str,
    ) -> Result<T, ApplyError> {
        let raw = object.get(field).ok_or(ApplyError::Missing {
            event: self.event,
            field,
        })?;
        serde_json::from_str(raw.get()).map_err(|e| self.malformed(e))
    }

    fn optional<'a, T: Deserialize<'a>>(
        &self,
        object: &Object<'a>,
        field: &'static str,
    ) -> Result<Option<T>, ApplyError> {
        match object.get(field) {
            None => Ok(None),
            Some(raw) => serde_json::from_str(raw.get()).map_err(|e| self.malformed(e)),
        }
    }

    fn id_of(&self, raw: &RawValue) -> Result<Id, ApplyError> {
        serde_json::from_str::<IdOnly>(raw.get())
            .map(|o| o.id)
            .map_err(|e| self.malformed(e))
    }

    fn objects<'a>(
        &self,
        object: &Object<'a>,
        field: &'static str,
    ) -> Result<Vec<(Id, Object<'a>)>, ApplyError> {
        let list: Vec<&'a RawValue> = self.optional(object, field)?.unwrap_or_default();
        list.into_iter()
            .map(|raw| {
                let o = self.raw_object(raw)?;
                Ok((self.field(&o, "id")?, o))
            })
            .collect()
    }

    fn raw_list<'a>(
        &self,
        object: &Object<'a>,
        field: &'static str,
    ) -> Result<Vec<(Id, &'a RawValue)>, ApplyError> {
        let list: Vec<&'a RawValue> = self.optional(object, field)?.unwrap_or_default();
        list.into_iter()
            .map(|raw| Ok((self.id_of(raw)?, raw)))
            .collect()
    }

    fn member<'a>(&self, member: Object<'a>) -> Result<ParsedMember<'a>, ApplyError> {
        let user: &'a RawValue = self.field(&member, fields::USER)?;
        Ok(ParsedMember {
            user_id: self.id_of(user)?,
            user,
            member,
        })
    }

    fn members<'a>(
        &self,
        object: &Object<'a>,
        field: &'static str,
    ) -> Result<Vec<ParsedMember<'a>>, ApplyError> {
        let list: Vec<&'a RawValue> = self.optional(object, field)?.unwrap_or_default();
        list.into_iter()
            .map(|raw| self.member(self.raw_object(raw)?))
            .collect()
    }
}

/// Parses a payload of `event_type`; `Ok(None)` for a type the cache does not apply.
///
/// # Errors
/// [`ApplyError`] when the payload is not JSON or lacks what its type must have.
pub fn parse<'a>(event_type: &str, payload: &'a [u8]) -> Result<Option<Event<'a>>, ApplyError> {
    let Some(index) = event_index(event_type) else {
        return Ok(None);
    };
    let name = EVENT_TYPES[index].0;
    let p = Parser { event: name };
    let object = p.object(payload)?;
    let kind = match name {
        "READY" => {
            let user: &RawValue = p.field(&object, "user")?;
            Kind::Ready {
                user_id: p.id_of(user)?,
                user,
            }
        }
        "GUILD_CREATE" => {
            let id = p.field(&object, "id")?;
            let unavailable = p.optional(&object, "unavailable")?.unwrap_or(false);
            let mut channels = p.objects(&object, "channels")?;
            channels.extend(p.objects(&object, "threads")?);
            let presences = p.raw_list_by_user(&object, "presences").unwrap_or_default();
            Kind::GuildCreate(Box::new(GuildCreate {
                id,
                unavailable,
                member_count: p.optional(&object, fields::MEMBER_COUNT)?,
                channels,
                roles: p.raw_list(&object, "roles")?,
                members: p.members(&object, "members")?,
                emojis: p.optional(&object, "emojis")?,
                voice_states: p.voice_states(&object)?,
                presences,
                guild: object,
            }))
        }
        "GUILD_UPDATE" => {
            let roles = if object.contains_key("roles") {
                Some(p.raw_list(&object, "roles")?)
            } else {
                None
            };
            Kind::GuildUpdate {
                id: p.field(&object, "id")?,
                emojis: p.optional(&object, "emojis")?,
                roles,
                guild: object,
            }
        }
        "GUILD_DELETE" => Kind::GuildDelete {
            id: p.field(&object, "id")?,
            unavailable: p.optional(&object, "unavailable")?.unwrap_or(false),
        },
        "CHANNEL_CREATE" | "CHANNEL_UPDATE" | "THREAD_CREATE" | "THREAD_UPDATE" => {
            Kind::ChannelUpsert {
                id: p.field(&object, "id")?,
                guild_id: p.optional(&object, fields::GUILD_ID)?,
                channel: object,
            }
        }
        "CHANNEL_DELETE" | "THREAD_DELETE" => Kind::ChannelDelete {
            id: p.field(&object, "id")?,
            guild_id: p.optional(&object, fields::GUILD_ID)?,
        },
        "THREAD_LIST_SYNC" => Kind::ThreadListSync {
            guild_id: p.field(&object, fields::GUILD_ID)?,
            threads: p.objects(&object, "threads")?,
        },
        "GUILD_ROLE_CREATE" | "GUILD_ROLE_UPDATE" => {
            let role: &RawValue = p.field(&object, "role")?;
            Kind::RoleUpsert {
                guild_id: p.field(&object, fields::GUILD_ID)?,
                role_id: p.id_of(role)?,
                role,
            }
        }
        "GUILD_ROLE_DELETE" => Kind::RoleDelete {
            guild_id: p.field(&object, fields::GUILD_ID)?,
            role_id: p.field(&object, "role_id")?,
        },
        "GUILD_MEMBER_ADD" | "GUILD_MEMBER_UPDATE" => Kind::MemberUpsert {
            guild_id: p.field(&object, fields::GUILD_ID)?,
            added: name == "GUILD_MEMBER_ADD",
            member: p.member(object)?,
        },
        "GUILD_MEMBERS_CHUNK" => Kind::MembersChunk {
            guild_id: p.field(&object, fields::GUILD_ID)?,
            members: p.members(&object, "members")?,
        },
        "GUILD_MEMBER_REMOVE" => {
            let user: &RawValue = p.field(&object, fields::USER)?;
            Kind::MemberRemove {
                guild_id: p.field(&object, fields::GUILD_ID)?,
                user_id: p.id_of(user)?,
            }
        }
        "USER_UPDATE" => Kind::UserUpdate {
            id: p.field(&object, "id")?,
            user: serde_json::from_slice(payload).map_err(|e| p.malformed(e))?,
        },
        "GUILD_EMOJIS_UPDATE" => Kind::EmojisUpdate {
            guild_id: p.field(&object, fields::GUILD_ID)?,
            emojis: p.field(&object, "emojis")?,
        },
        "VOICE_STATE_UPDATE" => Kind::VoiceState {
            guild_id: p.optional(&object, fields::GUILD_ID)?,
            user_id: p.field(&object, "user_id")?,
            channel_id: p.optional(&object, "channel_id")?,
            state: object,
        },
        "PRESENCE_UPDATE" => {
            let ids: PresenceIds<'_> =
                serde_json::from_slice(payload).map_err(|e| p.malformed(e))?;
            Kind::Presence {
                guild_id: ids.guild_id,
                user_id: p.id_of(ids.user)?,
                presence: serde_json::from_slice(payload).map_err(|e| p.malformed(e))?,
            }
        }
        _ => return Ok(None),
    };
    Ok(Some(Event { name, kind }))
}

impl Parser {
    fn voice_states<'a>(&self, object: &Object<'a>) -> Result<Vec<(Id, Object<'a>)>, ApplyError> {
        let list: Vec<&'a RawValue> = self.optional(object, "voice_states")?.unwrap_or_default();
        list.into_iter()
            .map(|raw| {
                let o = self.raw_object(raw)?;
                Ok((self.field(&o, "user_id")?, o))
            })
            .collect()
    }

    /// Presences of GUILD_CREATE; a malformed one is dropped rather than failing the guild.
    fn raw_list_by_user<'a>(
        &self,
        object: &Object<'a>,
        field: &'static str,
    ) -> Option<Vec<(Id, &'a RawValue)>> {
        let list: Vec<&'a RawValue> = self.optional(object, field).ok()??;
        Some(
            list.into_iter()
                .filter_map(|raw| {
                    let o = self.raw_object(raw).ok()?;
                    let user = o.get(fields::USER)?;
                    Some((self.id_of(user).ok()?, raw))
                })
                .collect(),
        )
    }
}

/// The derived part of a stored guild value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Meta {
    channel_ids: BTreeSet<Id>,
    /// Each thread's parent channel: Discord sends no THREAD_DELETE when the parent is deleted.
    thread_parents: BTreeMap<Id, Id>,
    role_ids: BTreeSet<Id>,
    member_count: u64,
    unavailable: bool,
    seq: u64,
}

/// A stored guild value: its fields and its derived part. `None` when there is none or it is not
/// one of ours (then it is rewritten from scratch).
fn stored_guild(bytes: Option<&[u8]>) -> Option<(Object<'_>, Meta)> {
    let object: Object<'_> = serde_json::from_slice(bytes?).ok()?;
    let ids = |field| -> Option<BTreeSet<Id>> {
        object
            .get(field)
            .and_then(|raw| serde_json::from_str::<Vec<Id>>(raw.get()).ok())
            .map(|v| v.into_iter().collect())
    };
    let number = |field| -> Option<u64> {
        object
            .get(field)
            .and_then(|raw| serde_json::from_str(raw.get()).ok())
    };
    let meta = Meta {
        channel_ids: ids(fields::CHANNEL_IDS)?,
        thread_parents: object
            .get(fields::THREAD_PARENTS)
            .and_then(|raw| serde_json::from_str(raw.get()).ok())
            .unwrap_or_default(),
        role_ids: ids(fields::ROLE_IDS)?,
        member_count: number(fields::MEMBER_COUNT).unwrap_or(0),
        unavailable: object
            .get(fields::UNAVAILABLE)
            .is_some_and(|raw| raw.get() == "true"),
        seq: number(fields::SEQ)?,
    };
    Some((object, meta))
}

/// Writes a JSON object: `base` without `skip`, then `extra` (whose keys replace `base`'s).
fn write_object(base: &Object<'_>, skip: &[&str], extra: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(
        base.iter()
            .map(|(k, v)| k.len() + v.get().len() + 4)
            .sum::<usize>()
            + 64,
    );
    out.push(b'{');
    let mut first = true;
    let mut entry = |out: &mut Vec<u8>, key: &str, raw: &str| {
        if !first {
            out.push(b',');
        }
        first = false;
        // Keys borrowed from parsed JSON hold no escapes; the added ones are constants.
        out.push(b'"');
        out.extend_from_slice(key.as_bytes());
        out.extend_from_slice(b"\":");
        out.extend_from_slice(raw.as_bytes());
    };
    for (key, raw) in base {
        if skip.contains(key) || extra.iter().any(|(k, _)| k == key) {
            continue;
        }
        entry(&mut out, key, raw.get());
    }
    for (key, raw) in extra {
        entry(&mut out, key, raw);
    }
    out.push(b'}');
    out
}

fn id_list(ids: &BTreeSet<Id>) -> String {
    let mut out = String::with_capacity(ids.len() * 22 + 2);
    out.push('[');
    for (i, id) in ids.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push('"');
        out.push_str(&id.0.to_string());
        out.push('"');
    }
    out.push(']');
    out
}

fn id_map(map: &BTreeMap<Id, Id>) -> String {
    let mut out = String::with_capacity(map.len() * 44 + 2);
    out.push('{');
    for (i, (key, value)) in map.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&format!("\"{key}\":\"{value}\""));
    }
    out.push('}');
    out
}

/// A thread's parent channel; `None` for a channel that is not a thread.
fn thread_parent(channel: &Object<'_>) -> Option<Id> {
    let kind: u8 = serde_json::from_str(channel.get("type")?.get()).ok()?;
    if !THREAD_TYPES.contains(&kind) {
        return None;
    }
    serde_json::from_str(channel.get("parent_id")?.get()).ok()
}

/// Discord's thread channel types: announcement, public and private threads.
const THREAD_TYPES: [u8; 3] = [10, 11, 12];

fn quoted(id: Id) -> String {
    format!("\"{}\"", id.0)
}

fn guild_value(base: &Object<'_>, meta: &Meta) -> Vec<u8> {
    let channel_ids = id_list(&meta.channel_ids);
    let thread_parents = id_map(&meta.thread_parents);
    let role_ids = id_list(&meta.role_ids);
    let member_count = meta.member_count.to_string();
    let seq = meta.seq.to_string();
    write_object(
        base,
        GUILD_ARRAYS,
        &[
            (fields::CHANNEL_IDS, &channel_ids),
            (fields::THREAD_PARENTS, &thread_parents),
            (fields::ROLE_IDS, &role_ids),
            (fields::MEMBER_COUNT, &member_count),
            (
                fields::UNAVAILABLE,
                if meta.unavailable { "true" } else { "false" },
            ),
            (fields::SEQ, &seq),
        ],
    )
}

fn put(key: String, value: Vec<u8>) -> Op {
    Op::Put { key, value }
}

fn delete(key: String) -> Op {
    Op::Delete { key }
}

/// A channel or thread as stored: with its guild, without THREAD_CREATE's `newly_created` (a
/// fact about the event, not the thread).
fn channel_value(channel: &Object<'_>, guild_id: Id) -> Vec<u8> {
    if channel.contains_key(fields::GUILD_ID) {
        write_object(channel, &[fields::NEWLY_CREATED], &[])
    } else {
        write_object(
            channel,
            &[fields::NEWLY_CREATED],
            &[(fields::GUILD_ID, &quoted(guild_id))],
        )
    }
}

impl Event<'_> {
    /// The event type.
    #[must_use]
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The guild the event is about, if any.
    #[must_use]
    pub fn guild_id(&self) -> Option<u64> {
        match &self.kind {
            Kind::Ready { .. } | Kind::UserUpdate { .. } => None,
            Kind::GuildCreate(g) => Some(g.id.0),
            Kind::GuildUpdate { id, .. } | Kind::GuildDelete { id, .. } => Some(id.0),
            Kind::ChannelUpsert { guild_id, .. }
            | Kind::ChannelDelete { guild_id, .. }
            | Kind::VoiceState { guild_id, .. } => guild_id.map(|g| g.0),
            Kind::ThreadListSync { guild_id, .. }
            | Kind::RoleUpsert { guild_id, .. }
            | Kind::RoleDelete { guild_id, .. }
            | Kind::MemberUpsert { guild_id, .. }
            | Kind::MembersChunk { guild_id, .. }
            | Kind::MemberRemove { guild_id, .. }
            | Kind::EmojisUpdate { guild_id, .. }
            | Kind::Presence { guild_id, .. } => Some(guild_id.0),
        }
    }

    /// What must be read before [`apply`](Self::apply).
    #[must_use]
    pub fn reads(&self) -> Reads {
        let mut reads = Reads::default();
        let guild = |reads: &mut Reads, id: Id| reads.keys.push(keys::guild(id.0));
        match &self.kind {
            Kind::Ready { .. }
            | Kind::UserUpdate { .. }
            | Kind::EmojisUpdate { .. }
            | Kind::VoiceState { .. }
            | Kind::Presence { .. }
            | Kind::MembersChunk { .. } => {}
            Kind::GuildCreate(g) => guild(&mut reads, g.id),
            Kind::GuildUpdate { id, .. } => guild(&mut reads, *id),
            Kind::GuildDelete { id, unavailable } => {
                guild(&mut reads, *id);
                if !unavailable {
                    reads.lists.extend([
                        keys::roles_of(id.0),
                        keys::members_of(id.0),
                        keys::voice_states_of(id.0),
                        keys::presences_of(id.0),
                    ]);
                }
            }
            Kind::ChannelUpsert { guild_id, .. } | Kind::ChannelDelete { guild_id, .. } => {
                if let Some(g) = guild_id {
                    guild(&mut reads, *g);
                }
            }
            Kind::ThreadListSync { guild_id, .. }
            | Kind::RoleUpsert { guild_id, .. }
            | Kind::RoleDelete { guild_id, .. }
            | Kind::MemberRemove { guild_id, .. } => guild(&mut reads, *guild_id),
            Kind::MemberUpsert {
                guild_id,
                added,
                member,
            } => {
                guild(&mut reads, *guild_id);
                if !added {
                    // GUILD_MEMBER_UPDATE may leave out optional fields: merge over what we have.
                    reads.keys.push(keys::member(guild_id.0, member.user_id.0));
                }
            }
        }
        reads
    }

    /// The writes this event causes, given the values [`reads`](Self::reads) named, at stream
    /// sequence `seq`, keeping only `resources`.
    #[must_use]
    #[allow(clippy::too_many_lines)]
    pub fn apply(&self, seq: u64, resources: Resources, current: &Current) -> Writes {
        let mut w = Writes::default();
        // A resource switched off writes nothing of its own (the consumer normally filters it).
        if let Some((_, resource)) = EVENT_TYPES.iter().find(|(t, _)| *t == self.name)
            && !resources.contains(*resource)
        {
            return w;
        }
        let stored = |guild: Id| stored_guild(current.get(&keys::guild(guild.0)));
        // The guild's value is written only by an event later in the stream than its last writer.
        let fresh = |meta: &Meta| seq > meta.seq;
        let users = resources.contains(Resource::Users);
        let put_member =
            |w: &mut Writes, guild_id: Id, m: &ParsedMember<'_>, merge: Option<&[u8]>| {
                let user_id = quoted(m.user_id);
                let value = match merge.and_then(|b| serde_json::from_slice::<Object<'_>>(b).ok()) {
                    Some(mut old) => {
                        old.extend(m.member.iter().map(|(k, v)| (*k, *v)));
                        write_object(
                            &old,
                            &[fields::USER, fields::GUILD_ID],
                            &[(fields::USER_ID, &user_id)],
                        )
                    }
                    None => write_object(
                        &m.member,
                        &[fields::USER, fields::GUILD_ID],
                        &[(fields::USER_ID, &user_id)],
                    ),
                };
                w.ops
                    .push(put(keys::member(guild_id.0, m.user_id.0), value));
                if users {
                    w.ops.push(put(
                        keys::user(m.user_id.0),
                        m.user.get().as_bytes().to_vec(),
                    ));
                }
            };
        match &self.kind {
            Kind::Ready { user, user_id } => {
                if users {
                    w.ops
                        .push(put(keys::user(user_id.0), user.get().as_bytes().to_vec()));
                }
            }
            Kind::UserUpdate { id, user } => {
                if users {
                    w.ops
                        .push(put(keys::user(id.0), user.get().as_bytes().to_vec()));
                }
            }
            Kind::GuildCreate(g) => {
                let old = stored(g.id);
                if g.unavailable {
                    if let Some((object, mut meta)) = old
                        && fresh(&meta)
                    {
                        meta.unavailable = true;
                        meta.seq = seq;
                        w.commit = Some(put(keys::guild(g.id.0), guild_value(&object, &meta)));
                    }
                    return w;
                }
                let mut meta = Meta {
                    member_count: g.member_count.unwrap_or(g.members.len() as u64),
                    seq,
                    ..Meta::default()
                };
                // Replayed (the guild's value is newer): only what still exists is rewritten.
                let replayed = old.as_ref().filter(|(_, m)| !fresh(m)).map(|(_, m)| m);
                if resources.contains(Resource::Channels) {
                    for (id, channel) in &g.channels {
                        meta.channel_ids.insert(*id);
                        if let Some(parent) = thread_parent(channel) {
                            meta.thread_parents.insert(*id, parent);
                        }
                        if replayed.is_none_or(|m| m.channel_ids.contains(id)) {
                            w.ops
                                .push(put(keys::channel(id.0), channel_value(channel, g.id)));
                        }
                    }
                }
                if resources.contains(Resource::Roles) {
                    for (id, role) in &g.roles {
                        meta.role_ids.insert(*id);
                        if replayed.is_some_and(|m| !m.role_ids.contains(id)) {
                            continue;
                        }
                        w.ops.push(put(
                            keys::role(g.id.0, id.0),
                            role.get().as_bytes().to_vec(),
                        ));
                    }
                }
                if resources.contains(Resource::Members) {
                    for m in &g.members {
                        put_member(&mut w, g.id, m, None);
                    }
                }
                if resources.contains(Resource::Emojis) {
                    let emojis = g.emojis.map_or("[]", RawValue::get);
                    w.ops
                        .push(put(keys::emojis(g.id.0), emojis.as_bytes().to_vec()));
                }
                if resources.contains(Resource::Voice) {
                    let guild_id = quoted(g.id);
                    for (user, state) in &g.voice_states {
                        w.ops.push(put(
                            keys::voice_state(g.id.0, user.0),
                            write_object(
                                state,
                                &[fields::MEMBER],
                                &[(fields::GUILD_ID, &guild_id)],
                            ),
                        ));
                    }
                }
                if resources.contains(Resource::Presences) {
                    for (user, presence) in &g.presences {
                        w.ops.push(put(
                            keys::presence(g.id.0, user.0),
                            presence.get().as_bytes().to_vec(),
                        ));
                    }
                }
                match old {
                    Some((_, old_meta)) if !fresh(&old_meta) => {}
                    old => {
                        if let Some((_, old_meta)) = old {
                            // Channels and roles deleted while the guild was away.
                            for id in old_meta.channel_ids.difference(&meta.channel_ids) {
                                w.ops.push(delete(keys::channel(id.0)));
                            }
                            for id in old_meta.role_ids.difference(&meta.role_ids) {
                                w.ops.push(delete(keys::role(g.id.0, id.0)));
                            }
                        }
                        w.commit = Some(put(keys::guild(g.id.0), guild_value(&g.guild, &meta)));
                    }
                }
            }
            Kind::GuildUpdate {
                id,
                guild,
                roles,
                emojis,
            } => {
                let old = stored(*id);
                if let Some((_, meta)) = &old
                    && !fresh(meta)
                {
                    return w;
                }
                let (mut object, mut meta) = old.unwrap_or_default();
                object.extend(guild.iter().map(|(k, v)| (*k, *v)));
                if let Some(roles) = roles
                    && resources.contains(Resource::Roles)
                {
                    let new: BTreeSet<Id> = roles.iter().map(|(id, _)| *id).collect();
                    for gone in meta.role_ids.difference(&new) {
                        w.ops.push(delete(keys::role(id.0, gone.0)));
                    }
                    for (role_id, role) in roles {
                        w.ops.push(put(
                            keys::role(id.0, role_id.0),
                            role.get().as_bytes().to_vec(),
                        ));
                    }
                    meta.role_ids = new;
                }
                if let Some(emojis) = emojis
                    && resources.contains(Resource::Emojis)
                {
                    w.ops
                        .push(put(keys::emojis(id.0), emojis.get().as_bytes().to_vec()));
                }
                meta.seq = seq;
                w.commit = Some(put(keys::guild(id.0), guild_value(&object, &meta)));
            }
            Kind::GuildDelete { id, unavailable } => {
                let old = stored(*id);
                if let Some((_, meta)) = &old
                    && !fresh(meta)
                {
                    // The guild was written after this delete (a replay): this is history.
                    return w;
                }
                if *unavailable {
                    if let Some((object, mut meta)) = old {
                        meta.unavailable = true;
                        meta.seq = seq;
                        w.commit = Some(put(keys::guild(id.0), guild_value(&object, &meta)));
                    }
                    return w;
                }
                let mut gone: BTreeSet<String> = current.listed.iter().cloned().collect();
                if let Some((_, meta)) = &old {
                    gone.extend(meta.channel_ids.iter().map(|c| keys::channel(c.0)));
                    gone.extend(meta.role_ids.iter().map(|r| keys::role(id.0, r.0)));
                }
                gone.insert(keys::emojis(id.0));
                w.ops.extend(gone.into_iter().map(delete));
                w.commit = Some(delete(keys::guild(id.0)));
            }
            Kind::ChannelUpsert {
                id,
                guild_id,
                channel,
            } => {
                // A DM channel has no guild; the cache keeps guild channels only.
                let Some(guild_id) = guild_id else { return w };
                let old = stored(*guild_id);
                // Replayed (the guild's value is newer): a channel deleted since (perhaps with
                // its parent, without an event of its own) stays deleted.
                if old
                    .as_ref()
                    .is_none_or(|(_, m)| fresh(m) || m.channel_ids.contains(id))
                {
                    w.ops
                        .push(put(keys::channel(id.0), channel_value(channel, *guild_id)));
                }
                if let Some((object, mut meta)) = old
                    && fresh(&meta)
                {
                    let added = meta.channel_ids.insert(*id);
                    let parent = thread_parent(channel);
                    let reparented = match parent {
                        Some(parent) => meta.thread_parents.insert(*id, parent) != Some(parent),
                        None => meta.thread_parents.remove(id).is_some(),
                    };
                    if added || reparented {
                        meta.seq = seq;
                        w.commit = Some(put(keys::guild(guild_id.0), guild_value(&object, &meta)));
                    }
                }
            }
            Kind::ChannelDelete { id, guild_id } => {
                let Some(guild_id) = guild_id else { return w };
                w.ops.push(delete(keys::channel(id.0)));
                let Some((object, mut meta)) = stored(*guild_id) else {
                    return w;
                };
                // A deleted channel takes its threads along, without a THREAD_DELETE each.
                let threads: Vec<Id> = meta
                    .thread_parents
                    .iter()
                    .filter(|(_, parent)| *parent == id)
                    .map(|(thread, _)| *thread)
                    .collect();
                w.ops
                    .extend(threads.iter().map(|thread| delete(keys::channel(thread.0))));
                if fresh(&meta) {
                    let mut changed = meta.channel_ids.remove(id);
                    changed |= meta.thread_parents.remove(id).is_some();
                    for thread in &threads {
                        meta.channel_ids.remove(thread);
                        meta.thread_parents.remove(thread);
                        changed = true;
                    }
                    if changed {
                        meta.seq = seq;
                        w.commit = Some(put(keys::guild(guild_id.0), guild_value(&object, &meta)));
                    }
                }
            }
            Kind::ThreadListSync { guild_id, threads } => {
                let old = stored(*guild_id);
                for (id, thread) in threads {
                    if old
                        .as_ref()
                        .is_none_or(|(_, m)| fresh(m) || m.channel_ids.contains(id))
                    {
                        w.ops
                            .push(put(keys::channel(id.0), channel_value(thread, *guild_id)));
                    }
                }
                if let Some((object, mut meta)) = old
                    && fresh(&meta)
                {
                    let before = (meta.channel_ids.clone(), meta.thread_parents.clone());
                    for (id, thread) in threads {
                        meta.channel_ids.insert(*id);
                        if let Some(parent) = thread_parent(thread) {
                            meta.thread_parents.insert(*id, parent);
                        }
                    }
                    if (&meta.channel_ids, &meta.thread_parents) != (&before.0, &before.1) {
                        meta.seq = seq;
                        w.commit = Some(put(keys::guild(guild_id.0), guild_value(&object, &meta)));
                    }
                }
            }
            Kind::RoleUpsert {
                guild_id,
                role_id,
                role,
            } => {
                let old = stored(*guild_id);
                if old
                    .as_ref()
                    .is_none_or(|(_, m)| fresh(m) || m.role_ids.contains(role_id))
                {
                    w.ops.push(put(
                        keys::role(guild_id.0, role_id.0),
                        role.get().as_bytes().to_vec(),
                    ));
                }
                if let Some((object, mut meta)) = old
                    && fresh(&meta)
                    && meta.role_ids.insert(*role_id)
                {
                    meta.seq = seq;
                    w.commit = Some(put(keys::guild(guild_id.0), guild_value(&object, &meta)));
                }
            }
            Kind::RoleDelete { guild_id, role_id } => {
                w.ops.push(delete(keys::role(guild_id.0, role_id.0)));
                if let Some((object, mut meta)) = stored(*guild_id)
                    && fresh(&meta)
                    && meta.role_ids.remove(role_id)
                {
                    meta.seq = seq;
                    w.commit = Some(put(keys::guild(guild_id.0), guild_value(&object, &meta)));
                }
            }
            Kind::MemberUpsert {
                guild_id,
                added,
                member,
            } => {
                let merge = if *added {
                    None
                } else {
                    current.get(&keys::member(guild_id.0, member.user_id.0))
                };
                put_member(&mut w, *guild_id, member, merge);
                if *added
                    && let Some((object, mut meta)) = stored(*guild_id)
                    && fresh(&meta)
                {
                    meta.member_count += 1;
                    meta.seq = seq;
                    w.commit = Some(put(keys::guild(guild_id.0), guild_value(&object, &meta)));
                }
            }
            Kind::MembersChunk { guild_id, members } => {
                for m in members {
                    put_member(&mut w, *guild_id, m, None);
                }
            }
            Kind::MemberRemove { guild_id, user_id } => {
                w.ops.push(delete(keys::member(guild_id.0, user_id.0)));
                if resources.contains(Resource::Voice) {
                    w.ops.push(delete(keys::voice_state(guild_id.0, user_id.0)));
                }
                if resources.contains(Resource::Presences) {
                    w.ops.push(delete(keys::presence(guild_id.0, user_id.0)));
                }
                if let Some((object, mut meta)) = stored(*guild_id)
                    && fresh(&meta)
                {
                    meta.member_count = meta.member_count.saturating_sub(1);
                    meta.seq = seq;
                    w.commit = Some(put(keys::guild(guild_id.0), guild_value(&object, &meta)));
                }
            }
            Kind::EmojisUpdate { guild_id, emojis } => {
                w.ops.push(put(
                    keys::emojis(guild_id.0),
                    emojis.get().as_bytes().to_vec(),
                ));
            }
            Kind::VoiceState {
                guild_id,
                user_id,
                channel_id,
                state,
            } => {
                let Some(guild_id) = guild_id else { return w };
                let key = keys::voice_state(guild_id.0, user_id.0);
                w.ops.push(match channel_id {
                    None => delete(key),
                    Some(_) => put(key, write_object(state, &[fields::MEMBER], &[])),
                });
            }
            Kind::Presence {
                guild_id,
                user_id,
                presence,
            } => {
                if resources.contains(Resource::Presences) {
                    w.ops.push(put(
                        keys::presence(guild_id.0, user_id.0),
                        presence.get().as_bytes().to_vec(),
                    ));
                }
            }
        }
        w
    }
}

#[cfg(test)]
mod tests;

/// An in-memory stand-in for the KV bucket, for tests and the pure benchmark: runs an event's
/// reads and writes against a map.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemoryStore {
    /// Every key and its value.
    pub values: std::collections::BTreeMap<String, Vec<u8>>,
}

impl MemoryStore {
    /// Parses, reads, applies and writes one event; its writes.
    ///
    /// # Errors
    /// [`ApplyError`] for a malformed payload (nothing is written then).
    pub fn apply(
        &mut self,
        event_type: &str,
        payload: &[u8],
        seq: u64,
        resources: Resources,
    ) -> Result<Writes, ApplyError> {
        let Some(event) = parse(event_type, payload)? else {
            return Ok(Writes::default());
        };
        let writes = event.apply(seq, resources, &self.current(&event.reads()));
        self.write(writes.iter());
        Ok(writes)
    }

    /// The values `reads` asks for.
    #[must_use]
    pub fn current(&self, reads: &Reads) -> Current {
        Current {
            values: reads
                .keys
                .iter()
                .map(|k| {
                    (
                        k.clone(),
                        self.values.get(k).map(|v| Bytes::from(v.clone())),
                    )
                })
                .collect(),
            listed: reads
                .lists
                .iter()
                .flat_map(|filter| self.matching(filter))
                .collect(),
        }
    }

    /// Keys matching a filter whose last token is `*` (as NATS subjects match).
    #[must_use]
    pub fn matching(&self, filter: &str) -> Vec<String> {
        let prefix = filter.strip_suffix('*').unwrap_or(filter);
        self.values
            .keys()
            .filter(|k| {
                k.strip_prefix(prefix)
                    .is_some_and(|rest| !rest.contains('.'))
            })
            .cloned()
            .collect()
    }

    /// Performs `ops` in order.
    pub fn write<'o>(&mut self, ops: impl IntoIterator<Item = &'o Op>) {
        for op in ops {
            match op {
                Op::Put { key, value } => {
                    self.values.insert(key.clone(), value.clone());
                }
                Op::Delete { key } => {
                    self.values.remove(key);
                }
            }
        }
    }
}
