//! What the cache stores: one JSON value per key, in Discord's own object shapes, so a reader in
//! any language can use its Discord library's types. `cache/README.md` has the same table for
//! people who don't read Rust.
//!
//! | key (from `shardyard_protocol::names::keys`) | value |
//! |---|---|
//! | `guild.<id>` | the guild object of GUILD_CREATE **without** `channels`, `threads`, `roles`, `emojis`, `members`, `presences` and `voice_states` (they have keys of their own), **plus** `channel_ids` and `role_ids` (string snowflakes, ascending: the guild's channels and threads, its roles), `thread_parents` (`{"<thread>": "<parent channel>"}`: a deleted channel's threads go with it, as Discord sends no THREAD_DELETE for them), `member_count` (kept up to date by member add/remove), `unavailable` (`true` during an outage) and `shardyard_seq` (the stream sequence of the last event that wrote this value) |
//! | `channel.<id>` | the channel or thread object, always with `guild_id` (GUILD_CREATE's channels lack it; it is added), without THREAD_CREATE's `newly_created` |
//! | `role.<guild>.<id>` | the role object |
//! | `member.<guild>.<user>` | the member object **without** `user` and `guild_id`, **plus** `user_id`; the user lives at `user.<id>` |
//! | `user.<id>` | the user object (from READY, USER_UPDATE and every member payload) |
//! | `emojis.<guild>` | the guild's emoji objects, a JSON array |
//! | `voice.<guild>.<user>` | the voice state **without** `member`; deleted when the user leaves voice |
//! | `presence.<guild>.<user>` | PRESENCE_UPDATE's payload (only with presences enabled) |
//!
//! Lists: a guild's channels and roles are named by `channel_ids` / `role_ids` in its value (one
//! read); its members, voice states and presences are found by listing keys with a subject
//! filter (`member.<guild>.*`, see [`crate::CacheReader::member_ids`]).
//!
//! Deliberately not rewritten: a deleted role's id stays in `roles` of members that had it
//! (Discord sends no member updates for a role deletion; read a member's roles through the
//! guild's `role_ids`, as Discord's own clients do), and `user.<id>` is kept when the user leaves
//! every guild (the cache cannot know).

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;

/// A JSON object read without copying: each field's raw JSON. Values in the cache are written
/// from these, so fields the cache does not know travel through untouched.
pub type Object<'a> = BTreeMap<&'a str, &'a RawValue>;

/// Field names the cache adds to Discord's shapes.
pub mod fields {
    /// `guild.<id>`: the guild's channel and thread ids, ascending.
    pub const CHANNEL_IDS: &str = "channel_ids";
    /// `guild.<id>`: each thread's parent channel, `{"<thread id>": "<parent id>"}` (a deleted
    /// channel's threads are deleted with it: Discord sends no THREAD_DELETE for them).
    pub const THREAD_PARENTS: &str = "thread_parents";
    /// Removed from THREAD_CREATE's thread: a fact about the event.
    pub const NEWLY_CREATED: &str = "newly_created";
    /// `guild.<id>`: the guild's role ids, ascending.
    pub const ROLE_IDS: &str = "role_ids";
    /// `guild.<id>`: the number of members.
    pub const MEMBER_COUNT: &str = "member_count";
    /// `guild.<id>`: `true` while Discord reports an outage of the guild.
    pub const UNAVAILABLE: &str = "unavailable";
    /// `guild.<id>`: the stream sequence of the last event that wrote the value.
    pub const SEQ: &str = "shardyard_seq";
    /// `member.<guild>.<user>`: the member's user id (the user object is at `user.<id>`).
    pub const USER_ID: &str = "user_id";
    /// `channel.<id>`: the guild the channel belongs to.
    pub const GUILD_ID: &str = "guild_id";
    /// Removed from member values.
    pub const USER: &str = "user";
    /// Removed from voice states.
    pub const MEMBER: &str = "member";
}

/// The arrays of GUILD_CREATE that have keys of their own and are not kept in `guild.<id>`.
pub const GUILD_ARRAYS: &[&str] = &[
    "channels",
    "threads",
    "roles",
    "emojis",
    "members",
    "presences",
    "voice_states",
];

/// A Discord snowflake: a string in JSON (a number is accepted too when reading).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Id(pub u64);

impl fmt::Debug for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl Serialize for Id {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Id {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Id;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a snowflake (a string of digits)")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Id, E> {
                v.parse().map(Id).map_err(|_| E::custom("not a snowflake"))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Id, E> {
                Ok(Id(v))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// Any fields beyond the typed ones, as JSON.
pub type Extra = serde_json::Map<String, serde_json::Value>;

/// `guild.<id>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Guild {
    /// The guild's id.
    pub id: Id,
    /// Its name (absent while a guild the cache has never seen whole is unavailable).
    #[serde(default)]
    pub name: Option<String>,
    /// Its channels and threads, ascending.
    #[serde(default)]
    pub channel_ids: Vec<Id>,
    /// Each thread's parent channel.
    #[serde(default)]
    pub thread_parents: BTreeMap<Id, Id>,
    /// Its roles, ascending.
    #[serde(default)]
    pub role_ids: Vec<Id>,
    /// Its member count.
    #[serde(default)]
    pub member_count: u64,
    /// Whether Discord reports an outage.
    #[serde(default)]
    pub unavailable: bool,
    /// The stream sequence of the last event that wrote the value.
    #[serde(default)]
    pub shardyard_seq: u64,
    /// Every other field of Discord's guild object.
    #[serde(flatten)]
    pub extra: Extra,
}

/// `channel.<id>`: a channel or thread.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Channel {
    /// The channel's id.
    pub id: Id,
    /// Its guild.
    pub guild_id: Id,
    /// Discord's channel type.
    #[serde(rename = "type")]
    pub kind: u8,
    /// Its name.
    #[serde(default)]
    pub name: Option<String>,
    /// Its category, or a thread's channel.
    #[serde(default)]
    pub parent_id: Option<Id>,
    /// Every other field.
    #[serde(flatten)]
    pub extra: Extra,
}

/// `role.<guild>.<id>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Role {
    /// The role's id (`@everyone` has the guild's).
    pub id: Id,
    /// Its name.
    pub name: String,
    /// Its position.
    #[serde(default)]
    pub position: i64,
    /// Its permissions, a decimal string.
    #[serde(default)]
    pub permissions: String,
    /// Every other field.
    #[serde(flatten)]
    pub extra: Extra,
}

/// `member.<guild>.<user>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Member {
    /// The member's user id; the user is at `user.<id>`.
    pub user_id: Id,
    /// Guild nickname.
    #[serde(default)]
    pub nick: Option<String>,
    /// Role ids, as Discord last sent them (may name deleted roles; see the module docs).
    #[serde(default)]
    pub roles: Vec<Id>,
    /// Every other field.
    #[serde(flatten)]
    pub extra: Extra,
}

/// `user.<id>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct User {
    /// The user's id.
    pub id: Id,
    /// Unique username.
    #[serde(default)]
    pub username: Option<String>,
    /// Whether this is a bot account.
    #[serde(default)]
    pub bot: bool,
    /// Every other field.
    #[serde(flatten)]
    pub extra: Extra,
}

/// `voice.<guild>.<user>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VoiceState {
    /// The user.
    pub user_id: Id,
    /// The voice channel.
    pub channel_id: Option<Id>,
    /// Every other field.
    #[serde(flatten)]
    pub extra: Extra,
}

/// Key counts by kind (`/counts`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// `guild.*`.
    pub guilds: u64,
    /// `channel.*`.
    pub channels: u64,
    /// `role.*.*`.
    pub roles: u64,
    /// `member.*.*`.
    pub members: u64,
    /// `user.*`.
    pub users: u64,
    /// `voice.*.*`.
    pub voice_states: u64,
    /// `presence.*.*`.
    pub presences: u64,
    /// `emojis.*`: guilds with an emoji list.
    pub emoji_lists: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_strings_and_accept_numbers() {
        assert_eq!(serde_json::to_string(&Id(42)).unwrap(), r#""42""#);
        assert_eq!(serde_json::from_str::<Id>(r#""42""#).unwrap(), Id(42));
        assert_eq!(serde_json::from_str::<Id>("42").unwrap(), Id(42));
        assert!(serde_json::from_str::<Id>(r#""x""#).is_err());
    }
}
