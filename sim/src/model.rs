//! The simulator's Discord objects, serialized in Discord's v10 shapes (ids as strings, every
//! field a client library expects present, `null` where Discord sends `null`).

use serde::Serialize;

use crate::json;
use crate::snowflake::{as_string, opt_string, vec_string};

/// Channel types the simulator creates.
pub mod channel_kind {
    /// A text channel.
    pub const TEXT: u8 = 0;
    /// A voice channel.
    pub const VOICE: u8 = 2;
    /// A category.
    pub const CATEGORY: u8 = 4;
    /// A public thread.
    pub const PUBLIC_THREAD: u8 = 11;
}

/// A user (a person or the bot).
#[derive(Debug, Clone, Serialize)]
pub struct User {
    /// Snowflake.
    #[serde(with = "as_string")]
    pub id: u64,
    /// Unique username.
    pub username: String,
    /// Display name.
    pub global_name: Option<String>,
    /// Always `"0"` since the username migration.
    pub discriminator: &'static str,
    /// Avatar hash.
    pub avatar: Option<String>,
    /// Whether this is a bot account.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub bot: bool,
    /// Public flags.
    pub public_flags: u64,
    /// Avatar decoration; always `null` here.
    pub avatar_decoration_data: Option<()>,
}

/// A guild member.
#[derive(Debug, Clone, Serialize)]
pub struct Member {
    /// The user.
    pub user: User,
    /// Guild nickname.
    pub nick: Option<String>,
    /// Guild avatar hash.
    pub avatar: Option<String>,
    /// Role ids.
    #[serde(serialize_with = "vec_string::serialize")]
    pub roles: Vec<u64>,
    /// When the user joined.
    pub joined_at: String,
    /// When the user started boosting.
    pub premium_since: Option<String>,
    /// Server-deafened.
    pub deaf: bool,
    /// Server-muted.
    pub mute: bool,
    /// Member flags.
    pub flags: u64,
    /// Membership screening pending.
    pub pending: bool,
    /// Timeout end.
    pub communication_disabled_until: Option<String>,
    /// Guild banner hash; always `null` here.
    pub banner: Option<String>,
}

/// A member as embedded in a message (no `user`).
#[derive(Debug, Clone, Serialize)]
pub struct PartialMember<'a> {
    /// Role ids.
    #[serde(serialize_with = "vec_string::serialize")]
    pub roles: &'a [u64],
    /// When the user started boosting.
    pub premium_since: Option<&'a str>,
    /// Membership screening pending.
    pub pending: bool,
    /// Guild nickname.
    pub nick: Option<&'a str>,
    /// Server-muted.
    pub mute: bool,
    /// When the user joined.
    pub joined_at: &'a str,
    /// Member flags.
    pub flags: u64,
    /// Server-deafened.
    pub deaf: bool,
    /// Timeout end.
    pub communication_disabled_until: Option<&'a str>,
    /// Guild banner hash.
    pub banner: Option<&'a str>,
    /// Guild avatar hash.
    pub avatar: Option<&'a str>,
}

impl User {
    /// Writes the user's JSON, exactly as its `Serialize` does (see `json`).
    pub fn write_json(&self, out: &mut Vec<u8>) {
        out.push(b'{');
        json::key(out, "id");
        json::id(out, self.id);
        json::key(out, "username");
        json::str(out, &self.username);
        json::key(out, "global_name");
        json::opt_str(out, self.global_name.as_deref());
        json::key(out, "discriminator");
        json::str(out, self.discriminator);
        json::key(out, "avatar");
        json::opt_str(out, self.avatar.as_deref());
        if self.bot {
            json::key(out, "bot");
            json::boolean(out, true);
        }
        json::key(out, "public_flags");
        json::num(out, self.public_flags);
        json::key(out, "avatar_decoration_data");
        out.extend_from_slice(b"null");
        out.push(b'}');
    }
}

impl PartialMember<'_> {
    /// Writes the member's JSON, exactly as its `Serialize` does (see `json`).
    pub fn write_json(&self, out: &mut Vec<u8>) {
        out.push(b'{');
        json::key(out, "roles");
        out.push(b'[');
        for (i, role) in self.roles.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            json::id(out, *role);
        }
        out.push(b']');
        json::key(out, "premium_since");
        json::opt_str(out, self.premium_since);
        json::key(out, "pending");
        json::boolean(out, self.pending);
        json::key(out, "nick");
        json::opt_str(out, self.nick);
        json::key(out, "mute");
        json::boolean(out, self.mute);
        json::key(out, "joined_at");
        json::str(out, self.joined_at);
        json::key(out, "flags");
        json::num(out, self.flags);
        json::key(out, "deaf");
        json::boolean(out, self.deaf);
        json::key(out, "communication_disabled_until");
        json::opt_str(out, self.communication_disabled_until);
        json::key(out, "banner");
        json::opt_str(out, self.banner);
        json::key(out, "avatar");
        json::opt_str(out, self.avatar);
        out.push(b'}');
    }
}

impl<'a> From<&'a Member> for PartialMember<'a> {
    fn from(m: &'a Member) -> Self {
        Self {
            roles: &m.roles,
            premium_since: m.premium_since.as_deref(),
            pending: m.pending,
            nick: m.nick.as_deref(),
            mute: m.mute,
            joined_at: &m.joined_at,
            flags: m.flags,
            deaf: m.deaf,
            communication_disabled_until: m.communication_disabled_until.as_deref(),
            banner: m.banner.as_deref(),
            avatar: m.avatar.as_deref(),
        }
    }
}

/// A role.
#[derive(Debug, Clone, Serialize)]
pub struct Role {
    /// Snowflake (the `@everyone` role has the guild's id).
    #[serde(with = "as_string")]
    pub id: u64,
    /// Name.
    pub name: String,
    /// RGB colour (deprecated by Discord in favour of `colors`, still sent).
    pub color: u32,
    /// The role's colours.
    pub colors: RoleColors,
    /// Shown separately in the member list.
    pub hoist: bool,
    /// Icon hash.
    pub icon: Option<String>,
    /// Unicode emoji.
    pub unicode_emoji: Option<String>,
    /// Sort position.
    pub position: i64,
    /// Permission bit set, as a string.
    pub permissions: String,
    /// Managed by an integration.
    pub managed: bool,
    /// Mentionable.
    pub mentionable: bool,
    /// Role flags.
    pub flags: u64,
}

/// A role's colours: a primary one, and two more for gradient and holographic styles.
#[derive(Debug, Clone, Serialize)]
pub struct RoleColors {
    /// Primary colour.
    pub primary_color: u32,
    /// Second gradient colour.
    pub secondary_color: Option<u32>,
    /// Third colour (holographic).
    pub tertiary_color: Option<u32>,
}

impl RoleColors {
    /// A single colour.
    #[must_use]
    pub fn solid(color: u32) -> Self {
        Self {
            primary_color: color,
            secondary_color: None,
            tertiary_color: None,
        }
    }
}

/// A guild channel or thread.
#[derive(Debug, Clone, Serialize)]
pub struct Channel {
    /// Snowflake.
    #[serde(with = "as_string")]
    pub id: u64,
    /// Channel type (see [`channel_kind`]).
    #[serde(rename = "type")]
    pub kind: u8,
    /// Owning guild.
    #[serde(with = "as_string")]
    pub guild_id: u64,
    /// Sort position.
    pub position: i64,
    /// Name.
    pub name: String,
    /// Topic (text channels).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    /// Age-restricted.
    pub nsfw: bool,
    /// Category or parent channel.
    #[serde(serialize_with = "opt_string::serialize")]
    pub parent_id: Option<u64>,
    /// Last message id (text channels).
    #[serde(serialize_with = "opt_string::serialize")]
    pub last_message_id: Option<u64>,
    /// Slow-mode seconds.
    pub rate_limit_per_user: u32,
    /// Voice bitrate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bitrate: Option<u32>,
    /// Voice user limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_limit: Option<u32>,
    /// Permission overwrites; none here.
    pub permission_overwrites: [(); 0],
    /// Channel flags.
    pub flags: u64,
    /// Thread metadata, for threads.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thread_metadata: Option<ThreadMetadata>,
    /// Thread owner, for threads.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "opt_string::serialize"
    )]
    pub owner_id: Option<u64>,
}

/// Thread metadata.
#[derive(Debug, Clone, Serialize)]
pub struct ThreadMetadata {
    /// Archived.
    pub archived: bool,
    /// Minutes of inactivity before auto-archiving.
    pub auto_archive_duration: u32,
    /// When the archive status last changed.
    pub archive_timestamp: String,
    /// Locked.
    pub locked: bool,
}

/// A custom emoji.
#[derive(Debug, Clone, Serialize)]
pub struct Emoji {
    /// Snowflake.
    #[serde(with = "as_string")]
    pub id: u64,
    /// Name.
    pub name: String,
    /// Roles allowed to use it.
    #[serde(serialize_with = "vec_string::serialize")]
    pub roles: Vec<u64>,
    /// Needs colons.
    pub require_colons: bool,
    /// Managed by an integration.
    pub managed: bool,
    /// Animated.
    pub animated: bool,
    /// Usable.
    pub available: bool,
}

/// A message a bot created through REST, kept so tests can read a bot's replies.
#[derive(Debug, Clone, Serialize)]
pub struct StoredMessage {
    /// Snowflake.
    #[serde(with = "as_string")]
    pub id: u64,
    /// Channel.
    #[serde(with = "as_string")]
    pub channel_id: u64,
    /// Author's user id.
    #[serde(with = "as_string")]
    pub author_id: u64,
    /// Text.
    pub content: String,
    /// Whether it was edited since.
    pub edited: bool,
    /// Embeds as sent.
    pub embeds: Vec<serde_json::Value>,
    /// Unix milliseconds of creation.
    pub created_at_ms: u64,
}

#[cfg(test)]
mod tests {
    use super::{Member, PartialMember, User};

    fn user(bot: bool, name: &str) -> User {
        User {
            id: 42,
            username: name.into(),
            global_name: if bot {
                None
            } else {
                Some("Ünïcode \"quoted\"".into())
            },
            discriminator: "0",
            avatar: Some("abc".into()),
            bot,
            public_flags: 64,
            avatar_decoration_data: None,
        }
    }

    #[test]
    fn hand_written_json_matches_serde() {
        for (bot, name) in [(true, "bot"), (false, "back\\slash\ttab")] {
            let user = user(bot, name);
            let mut out = Vec::new();
            user.write_json(&mut out);
            let hand: serde_json::Value = serde_json::from_slice(&out).unwrap();
            assert_eq!(hand, serde_json::to_value(&user).unwrap());
            let member = Member {
                user: user.clone(),
                nick: Some("n\"ick".into()),
                avatar: None,
                roles: vec![1, 2, 3],
                joined_at: "2026-01-01T00:00:00.000000+00:00".into(),
                premium_since: None,
                deaf: false,
                mute: true,
                flags: 2,
                pending: false,
                communication_disabled_until: None,
                banner: None,
            };
            let partial = PartialMember::from(&member);
            let mut out = Vec::new();
            partial.write_json(&mut out);
            let hand: serde_json::Value = serde_json::from_slice(&out).unwrap();
            assert_eq!(hand, serde_json::to_value(&partial).unwrap());
        }
    }
}
