//! Every NATS name shardyard puts on the wire: subjects, headers, streams, consumers, KV buckets
//! and keys. Nothing else in the project spells them (see `shared/DESIGN.md`).

use std::fmt;

/// The first token of every shardyard subject.
pub const SUBJECT_ROOT: &str = "shardyard";

/// Message headers on every event in the stream.
pub mod headers {
    /// JetStream's de-duplication id: `<session_id>:<seq>`.
    pub const MSG_ID: &str = "Nats-Msg-Id";
    /// `<shard id>/<shard total>`.
    pub const SHARD: &str = "Shardyard-Shard";
    /// The dispatch's gateway sequence number.
    pub const SEQ: &str = "Shardyard-Seq";
    /// The dispatch's event type (`t`).
    pub const EVENT: &str = "Shardyard-Event";
    /// When the gateway received the frame, in unix microseconds.
    pub const RECEIVED_AT: &str = "Shardyard-Received-At";
    /// On dead letters: why handling failed.
    pub const ERROR: &str = "Shardyard-Error";
    /// On interactions that came over HTTP (`shardyard interactions`): the NATS subject the
    /// worker answers on while Discord's request is held open (see
    /// [`crate::interaction_reply`]).
    pub const REPLY_TO: &str = "Shardyard-Reply-To";
}

/// The token that stands where a shard id would in the subject of an event that came over
/// HTTP rather than a gateway shard: `shardyard.<bot>.events.http.INTERACTION_CREATE`.
pub const HTTP_EVENTS_TOKEN: &str = "http";

/// Where a REST proxy replica lends permits to the other replicas of its bot: `POST` asks for
/// one, `POST …/<id>` reports the answer, `DELETE …/<id>` gives it back (`rest/README.md`,
/// "Several replicas").
pub const REST_PERMITS_PATH: &str = "/_shardyard/permits";

/// HTTP headers of the REST proxy (`shardyard rest`) that its clients send or read. HTTP header
/// names are case-insensitive; these are lower case, as `http::HeaderName` wants them.
pub mod proxy_headers {
    /// Request: how long (seconds, a number ≥ 0) the request may wait for the rate limit
    /// before the proxy answers 429 itself. Workers send it so that they wait their turn.
    pub const MAX_WAIT: &str = "x-shardyard-max-wait";
    /// Answer: on every answer the proxy made itself, what went wrong (`bad_path`,
    /// `body_too_large`, `upstream_unreachable`, … and the refusal kinds).
    pub const ERROR: &str = "x-shardyard-error";
    /// Answer: on answers refused by the rate-limit engine, the refusal's kind (`would_wait`,
    /// `invalid_request_guard`, `token_locked`, `webhook_gone`) or `no_token`,
    /// `too_many_tokens`.
    pub const REFUSED: &str = "x-shardyard-refused";
    /// Request, between replicas: `<replica id>` of a replica that asks the replica keeping
    /// its token's limits for a permit (or, in an earlier version, forwarded it a whole
    /// request, which the owner then never sends on to another replica).
    pub const FORWARDED: &str = "x-shardyard-forwarded";
    /// Request, between replicas: on a permit's report ([`super::REST_PERMITS_PATH`]), the
    /// status upstream answered the request sent under it.
    pub const STATUS: &str = "x-shardyard-status";
    /// The prefix of every proxy header: a client's headers with it are never forwarded.
    pub const PREFIX: &str = "x-shardyard-";
}

/// The durable pull consumer of the default worker group.
pub const WORKER_CONSUMER: &str = "workers";

/// The durable pull consumer of a worker group: [`WORKER_CONSUMER`] for the default group,
/// `workers-<group>` for a named one (consumer names allow `-`; a group is a DNS label).
#[must_use]
pub fn worker_consumer(group: Option<&str>) -> String {
    match group {
        None | Some("") => WORKER_CONSUMER.to_owned(),
        Some(group) => format!("{WORKER_CONSUMER}-{group}"),
    }
}
/// The durable consumer of the cache service.
pub const CACHE_CONSUMER: &str = "cache";
/// The key in the control bucket naming the gateway generations that publish: one number, or
/// during a reshard's hand-over two, comma separated (`1,2`), so the new generation starts
/// publishing before the old one stops. No key means every generation publishes.
pub const ACTIVE_GENERATION_KEY: &str = "active_generation";

/// The generations an `active_generation` value names (numbers separated by commas or spaces;
/// anything else names none).
#[must_use]
pub fn active_generations(value: &str) -> Vec<u64> {
    value
        .split([',', ' '])
        .map(str::trim)
        .filter(|part| !part.is_empty())
        .map(str::parse::<u64>)
        .collect::<Result<Vec<_>, _>>()
        .unwrap_or_default()
}

/// An `active_generation` value for `generations`.
#[must_use]
pub fn active_generation_value(generations: &[u64]) -> String {
    generations
        .iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// The event type used in subjects when a dispatch's `t` cannot be a subject token.
pub const UNKNOWN_EVENT_TOKEN: &str = "UNKNOWN";

/// A bot's key, from which every name is built: `<namespace>_<name>` under Kubernetes (both DNS
/// labels, so `_` cannot collide), or a manifest's name locally.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BotKey(String);

/// A bot key that is not a DNS label, or two joined by `_`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid bot name {0:?}: use a DNS label (lowercase letters, digits and '-', 1–63 characters, starting and ending with a letter or digit), or namespace_name"
)]
pub struct InvalidBotKey(pub String);

/// Whether `s` is an RFC 1123 DNS label, as Kubernetes requires of names.
#[must_use]
pub fn is_dns_label(s: &str) -> bool {
    let bytes = s.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes[0] != b'-'
        && bytes[bytes.len() - 1] != b'-'
}

impl BotKey {
    /// A local bot's key: its manifest name, a DNS label.
    ///
    /// # Errors
    /// [`InvalidBotKey`] when the name is not a DNS label.
    pub fn local(name: &str) -> Result<Self, InvalidBotKey> {
        Self::parse(name)
    }

    /// The key of a bot living in a Kubernetes namespace: `<namespace>_<name>`.
    ///
    /// # Errors
    /// [`InvalidBotKey`] when either part is not a DNS label.
    pub fn namespaced(namespace: &str, name: &str) -> Result<Self, InvalidBotKey> {
        if is_dns_label(namespace) && is_dns_label(name) {
            Ok(Self(format!("{namespace}_{name}")))
        } else {
            Err(InvalidBotKey(format!("{namespace}_{name}")))
        }
    }

    /// Parses a key in either form.
    ///
    /// # Errors
    /// [`InvalidBotKey`] when it is neither a DNS label nor two joined by `_`.
    pub fn parse(key: &str) -> Result<Self, InvalidBotKey> {
        let valid = match key.split_once('_') {
            Some((namespace, name)) => is_dns_label(namespace) && is_dns_label(name),
            None => is_dns_label(key),
        };
        if valid {
            Ok(Self(key.to_owned()))
        } else {
            Err(InvalidBotKey(key.to_owned()))
        }
    }

    /// The key as used in subjects and bucket names.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `shardyard.<bot>.events.<shard>.<EVENT_TYPE>`; a `t` that cannot be a subject token
    /// becomes [`UNKNOWN_EVENT_TOKEN`] (the real type still travels in the header).
    #[must_use]
    pub fn event_subject(&self, shard: u32, event_type: &str) -> String {
        let mut subject = self.shard_events_prefix(shard);
        subject.push_str(event_subject_token(event_type));
        subject
    }

    /// `shardyard.<bot>.events.<shard>.`: [`event_subject`](Self::event_subject) without the
    /// event token, for a publisher that builds one subject per dispatch.
    #[must_use]
    pub fn shard_events_prefix(&self, shard: u32) -> String {
        format!("{SUBJECT_ROOT}.{}.events.{shard}.", self.0)
    }

    /// `shardyard.<bot>.events.http.<EVENT_TYPE>`: an event that came over HTTP (an
    /// interaction sent to the bot's Interactions Endpoint), in the same stream as the
    /// gateway's and matched by the same `events.*.<EVENT_TYPE>` filters.
    #[must_use]
    pub fn http_event_subject(&self, event_type: &str) -> String {
        format!(
            "{SUBJECT_ROOT}.{}.events.{HTTP_EVENTS_TOKEN}.{}",
            self.0,
            event_subject_token(event_type)
        )
    }

    /// Every event of the bot: `shardyard.<bot>.events.>`, the stream's subject.
    #[must_use]
    pub fn events_filter(&self) -> String {
        format!("{SUBJECT_ROOT}.{}.events.>", self.0)
    }

    /// Events of one type from every shard: `shardyard.<bot>.events.*.<EVENT_TYPE>`.
    #[must_use]
    pub fn event_type_filter(&self, event_type: &str) -> String {
        format!("{SUBJECT_ROOT}.{}.events.*.{event_type}", self.0)
    }

    /// Events of one shard: `shardyard.<bot>.events.<shard>.>`.
    #[must_use]
    pub fn shard_events_filter(&self, shard: u32) -> String {
        format!("{SUBJECT_ROOT}.{}.events.{shard}.>", self.0)
    }

    /// `shardyard.<bot>.dead.<EVENT_TYPE>`: where events go after `max_deliver` failures.
    #[must_use]
    pub fn dead_letter_subject(&self, event_type: &str) -> String {
        let token = if is_subject_token(event_type) {
            event_type
        } else {
            UNKNOWN_EVENT_TOKEN
        };
        format!("{SUBJECT_ROOT}.{}.dead.{token}", self.0)
    }

    /// Every dead letter of the bot: the dead-letter stream's subject.
    #[must_use]
    pub fn dead_letter_filter(&self) -> String {
        format!("{SUBJECT_ROOT}.{}.dead.>", self.0)
    }

    /// Request/reply subject for gateway commands to one shard.
    #[must_use]
    pub fn command_subject(&self, shard: u32) -> String {
        format!("{SUBJECT_ROOT}.{}.commands.{shard}", self.0)
    }

    /// The event stream: `SHARDYARD_<BOT>`.
    #[must_use]
    pub fn stream(&self) -> String {
        format!("SHARDYARD_{}", self.0.to_ascii_uppercase())
    }

    /// The dead-letter stream: `SHARDYARD_<BOT>_DEAD`.
    #[must_use]
    pub fn dead_letter_stream(&self) -> String {
        format!("SHARDYARD_{}_DEAD", self.0.to_ascii_uppercase())
    }

    /// The KV bucket of shard sessions (id, sequence, resume URL).
    #[must_use]
    pub fn sessions_bucket(&self) -> String {
        format!("shardyard_{}_sessions", self.0)
    }

    /// The KV bucket of identify leases, one key per concurrency bucket.
    #[must_use]
    pub fn identify_bucket(&self) -> String {
        format!("shardyard_{}_identify", self.0)
    }

    /// The KV bucket of the central cache.
    #[must_use]
    pub fn cache_bucket(&self) -> String {
        format!("shardyard_{}_cache", self.0)
    }

    /// The KV bucket holding the active shard generation.
    #[must_use]
    pub fn control_bucket(&self) -> String {
        format!("shardyard_{}_control", self.0)
    }

    /// Where REST proxy replicas announce themselves (a heartbeat every second, or that one is
    /// gone): `shardyard.<bot>.rest.members`. Replicas of one bot share rate limits through it.
    #[must_use]
    pub fn rest_members_subject(&self) -> String {
        format!("{SUBJECT_ROOT}.{}.rest.members", self.0)
    }

    /// Where REST proxy replicas report the rate-limit window of each answer they had from
    /// Discord (`shardyard.<bot>.rest.windows`), so that a replica that takes a token over
    /// knows what the previous owner spent.
    #[must_use]
    pub fn rest_windows_subject(&self) -> String {
        format!("{SUBJECT_ROOT}.{}.rest.windows", self.0)
    }

    /// Where a REST proxy replica that joins asks the others for every window they know
    /// (`shardyard.<bot>.rest.windows.sync`); they answer on its reply subject.
    #[must_use]
    pub fn rest_windows_sync_subject(&self) -> String {
        format!("{SUBJECT_ROOT}.{}.rest.windows.sync", self.0)
    }
}

impl fmt::Display for BotKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for BotKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BotKey({})", self.0)
    }
}

impl std::str::FromStr for BotKey {
    type Err = InvalidBotKey;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// Whether `s` can stand as one token of a NATS subject: non-empty, no `.`, `*`, `>` or
/// whitespace.
#[must_use]
pub fn is_subject_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_graphic() && b != b'.' && b != b'*' && b != b'>')
}

/// `Nats-Msg-Id` of a dispatch: `<session_id>:<seq>`.
#[must_use]
pub fn msg_id(session_id: &str, seq: u64) -> String {
    format!("{session_id}:{seq}")
}

/// `Nats-Msg-Id` of an interaction that came over HTTP: `interaction:<id>`. The same
/// interaction published twice (a replayed request, two replicas) is stored once.
#[must_use]
pub fn interaction_msg_id(interaction_id: &str) -> String {
    format!("interaction:{interaction_id}")
}

/// [`msg_id`] appended to `out`, for a header block built without allocating.
pub fn write_msg_id(out: &mut Vec<u8>, session_id: &str, seq: u64) {
    out.extend_from_slice(session_id.as_bytes());
    out.push(b':');
    out.extend_from_slice(itoa::Buffer::new().format(seq).as_bytes());
}

/// The last token of an event's subject: the type itself, or [`UNKNOWN_EVENT_TOKEN`] when it
/// cannot be a subject token.
#[must_use]
pub fn event_subject_token(event_type: &str) -> &str {
    if is_subject_token(event_type) {
        event_type
    } else {
        UNKNOWN_EVENT_TOKEN
    }
}

/// `Shardyard-Shard` of a dispatch: `<id>/<total>`.
#[must_use]
pub fn shard_header(shard: u32, total: u32) -> String {
    format!("{shard}/{total}")
}

/// Parses a `Shardyard-Shard` header back into `(id, total)`.
#[must_use]
pub fn parse_shard_header(value: &str) -> Option<(u32, u32)> {
    let (id, total) = value.split_once('/')?;
    let (id, total) = (id.parse().ok()?, total.parse().ok()?);
    (id < total).then_some((id, total))
}

/// Keys in the KV buckets.
pub mod keys {
    /// Sessions bucket: the saved session of shard `id` of `total`.
    #[must_use]
    pub fn session(total: u32, shard: u32) -> String {
        format!("shard.{total}.{shard}")
    }

    /// Identify bucket: the lease of concurrency bucket `bucket`.
    #[must_use]
    pub fn identify_lease(bucket: u32) -> String {
        format!("bucket.{bucket}")
    }

    /// Identify bucket: the bot's shared daily session-start budget.
    pub const IDENTIFY_BUDGET: &str = "budget";

    /// Control bucket: shard `shard` of gateway generation `generation` is READY (value:
    /// `{"total", "at_ms"}`). A generation that does not publish yet keeps these fresh, so the
    /// operator can tell when all of its shards are ready to take over.
    #[must_use]
    pub fn generation_ready(generation: u64, shard: u32) -> String {
        format!("ready.g{generation}.{shard}")
    }

    /// Control bucket: the subject filter of generation `generation`'s ready keys.
    #[must_use]
    pub fn generation_ready_filter(generation: u64) -> String {
        format!("ready.g{generation}.*")
    }

    /// Cache: the kinds of key, each key's first token.
    pub mod cache_kind {
        /// `guild.<id>`.
        pub const GUILD: &str = "guild";
        /// `channel.<id>`.
        pub const CHANNEL: &str = "channel";
        /// `role.<guild>.<id>`.
        pub const ROLE: &str = "role";
        /// `member.<guild>.<user>`.
        pub const MEMBER: &str = "member";
        /// `user.<id>`.
        pub const USER: &str = "user";
        /// `emojis.<guild>`.
        pub const EMOJIS: &str = "emojis";
        /// `voice.<guild>.<user>`.
        pub const VOICE: &str = "voice";
        /// `presence.<guild>.<user>`.
        pub const PRESENCE: &str = "presence";
    }

    /// Cache: the key filter matching every key of a kind (`channel.>`).
    #[must_use]
    pub fn all_of(kind: &str) -> String {
        format!("{kind}.>")
    }

    /// Cache: the kind of a key (its first token, one of [`cache_kind`]).
    #[must_use]
    pub fn kind_of(key: &str) -> &str {
        key.split('.').next().unwrap_or_default()
    }

    /// Cache: a guild.
    #[must_use]
    pub fn guild(guild: u64) -> String {
        format!("guild.{guild}")
    }

    /// Cache: a channel or thread.
    #[must_use]
    pub fn channel(channel: u64) -> String {
        format!("channel.{channel}")
    }

    /// Cache: a role of a guild.
    #[must_use]
    pub fn role(guild: u64, role: u64) -> String {
        format!("role.{guild}.{role}")
    }

    /// Cache: a member of a guild.
    #[must_use]
    pub fn member(guild: u64, user: u64) -> String {
        format!("member.{guild}.{user}")
    }

    /// Cache: a user.
    #[must_use]
    pub fn user(user: u64) -> String {
        format!("user.{user}")
    }

    /// Cache: a guild's emojis.
    #[must_use]
    pub fn emojis(guild: u64) -> String {
        format!("emojis.{guild}")
    }

    /// Cache: a user's voice state in a guild.
    #[must_use]
    pub fn voice_state(guild: u64, user: u64) -> String {
        format!("voice.{guild}.{user}")
    }

    /// Cache: a user's presence in a guild (only with presences enabled).
    #[must_use]
    pub fn presence(guild: u64, user: u64) -> String {
        format!("presence.{guild}.{user}")
    }

    /// Cache: the key filter matching every member of a guild, `member.<guild>.*` (for key
    /// listings and KV watches).
    #[must_use]
    pub fn members_of(guild: u64) -> String {
        format!("member.{guild}.*")
    }

    /// Cache: the key filter matching every voice state in a guild, `voice.<guild>.*`.
    #[must_use]
    pub fn voice_states_of(guild: u64) -> String {
        format!("voice.{guild}.*")
    }

    /// Cache: the key filter matching every presence in a guild, `presence.<guild>.*`.
    #[must_use]
    pub fn presences_of(guild: u64) -> String {
        format!("presence.{guild}.*")
    }

    /// Cache: the key filter matching every role of a guild, `role.<guild>.*`.
    #[must_use]
    pub fn roles_of(guild: u64) -> String {
        format!("role.{guild}.*")
    }
}

#[cfg(test)]
mod tests {
    use super::{
        BotKey, active_generation_value, active_generations, interaction_msg_id, is_subject_token,
        keys, msg_id, parse_shard_header, shard_header,
    };

    #[test]
    fn the_active_generation_names_one_or_two_generations() {
        assert_eq!(active_generations("3"), [3]);
        assert_eq!(active_generations(" 3\n"), [3]);
        assert_eq!(active_generations("1,2"), [1, 2]);
        assert_eq!(active_generations("1, 2"), [1, 2]);
        assert!(active_generations("three").is_empty());
        assert!(
            active_generations("1,x").is_empty(),
            "a bad value names none"
        );
        assert_eq!(active_generation_value(&[1, 2]), "1,2");
        assert_eq!(active_generation_value(&[7]), "7");
        assert_eq!(keys::generation_ready(2, 15), "ready.g2.15");
        assert_eq!(keys::generation_ready_filter(2), "ready.g2.*");
    }

    #[test]
    fn names_follow_the_design_contract() {
        let bot = BotKey::local("mybot").unwrap();
        assert_eq!(
            bot.event_subject(3, "MESSAGE_CREATE"),
            "shardyard.mybot.events.3.MESSAGE_CREATE"
        );
        assert_eq!(bot.events_filter(), "shardyard.mybot.events.>");
        assert_eq!(
            bot.event_type_filter("MESSAGE_CREATE"),
            "shardyard.mybot.events.*.MESSAGE_CREATE"
        );
        assert_eq!(bot.shard_events_filter(7), "shardyard.mybot.events.7.>");
        assert_eq!(
            bot.dead_letter_subject("READY"),
            "shardyard.mybot.dead.READY"
        );
        assert_eq!(bot.dead_letter_filter(), "shardyard.mybot.dead.>");
        assert_eq!(bot.command_subject(0), "shardyard.mybot.commands.0");
        assert_eq!(bot.stream(), "SHARDYARD_MYBOT");
        assert_eq!(bot.dead_letter_stream(), "SHARDYARD_MYBOT_DEAD");
        assert_eq!(bot.sessions_bucket(), "shardyard_mybot_sessions");
        assert_eq!(bot.identify_bucket(), "shardyard_mybot_identify");
        assert_eq!(bot.cache_bucket(), "shardyard_mybot_cache");
        assert_eq!(bot.control_bucket(), "shardyard_mybot_control");
        // Interactions over HTTP: `http` in place of a shard, matched by the type filter.
        assert_eq!(
            bot.http_event_subject("INTERACTION_CREATE"),
            "shardyard.mybot.events.http.INTERACTION_CREATE"
        );
        assert_eq!(interaction_msg_id("123"), "interaction:123");
    }

    #[test]
    fn namespaced_keys_join_with_underscore() {
        let bot = BotKey::namespaced("prod", "my-bot").unwrap();
        assert_eq!(bot.as_str(), "prod_my-bot");
        assert_eq!(bot.stream(), "SHARDYARD_PROD_MY-BOT");
        assert_eq!(BotKey::parse("prod_my-bot").unwrap(), bot);
        // Two namespaces never share a stream.
        assert_ne!(
            BotKey::namespaced("a", "bot").unwrap().stream(),
            BotKey::namespaced("b", "bot").unwrap().stream()
        );
    }

    #[test]
    fn keys_that_are_not_dns_labels_are_refused() {
        for bad in [
            "",
            "My-Bot",
            "-bot",
            "bot-",
            "a.b",
            "a*b",
            "a>b",
            "a b",
            "a_b_c",
            "_a",
            &"x".repeat(64),
        ] {
            assert!(BotKey::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert!(BotKey::namespaced("default", "Bot").is_err());
        assert!(
            BotKey::local("a_b").is_ok(),
            "namespace_name is a valid key"
        );
    }

    #[test]
    fn event_types_that_break_subjects_are_replaced() {
        let bot = BotKey::local("b").unwrap();
        assert_eq!(bot.event_subject(0, "A.B"), "shardyard.b.events.0.UNKNOWN");
        assert_eq!(bot.event_subject(0, "A>"), "shardyard.b.events.0.UNKNOWN");
        assert_eq!(bot.event_subject(0, ""), "shardyard.b.events.0.UNKNOWN");
        assert!(is_subject_token("GUILD_CREATE"));
        assert!(!is_subject_token("A B"));
    }

    #[test]
    fn rest_replicas_meet_on_their_bot_subject() {
        let bot = BotKey::namespaced("prod", "mybot").unwrap();
        assert_eq!(
            bot.rest_members_subject(),
            "shardyard.prod_mybot.rest.members"
        );
        assert_eq!(
            bot.rest_windows_subject(),
            "shardyard.prod_mybot.rest.windows"
        );
        assert_eq!(
            bot.rest_windows_sync_subject(),
            "shardyard.prod_mybot.rest.windows.sync"
        );
        assert!(bot.rest_members_subject().split('.').all(is_subject_token));
    }

    #[test]
    fn worker_groups_get_their_own_consumer() {
        assert_eq!(super::worker_consumer(None), "workers");
        assert_eq!(super::worker_consumer(Some("")), "workers");
        assert_eq!(super::worker_consumer(Some("commands")), "workers-commands");
    }

    #[test]
    fn headers_and_keys() {
        assert_eq!(msg_id("abc", 42), "abc:42");
        let mut written = b"prefix ".to_vec();
        super::write_msg_id(&mut written, "abc", u64::MAX);
        assert_eq!(
            written,
            format!("prefix {}", msg_id("abc", u64::MAX)).into_bytes()
        );
        assert_eq!(shard_header(3, 16), "3/16");
        assert_eq!(parse_shard_header("3/16"), Some((3, 16)));
        assert_eq!(parse_shard_header("16/16"), None);
        assert_eq!(parse_shard_header("x/16"), None);
        assert_eq!(keys::session(16, 3), "shard.16.3");
        assert_eq!(keys::identify_lease(2), "bucket.2");
        assert_eq!(keys::IDENTIFY_BUDGET, "budget");
        assert_eq!(keys::guild(1), "guild.1");
        assert_eq!(keys::channel(2), "channel.2");
        assert_eq!(keys::role(1, 3), "role.1.3");
        assert_eq!(keys::member(1, 4), "member.1.4");
        assert_eq!(keys::user(4), "user.4");
        assert_eq!(keys::emojis(1), "emojis.1");
        assert_eq!(keys::voice_state(1, 4), "voice.1.4");
        assert_eq!(keys::presence(1, 4), "presence.1.4");
        assert_eq!(keys::members_of(1), "member.1.*");
        assert_eq!(keys::voice_states_of(1), "voice.1.*");
        assert_eq!(keys::presences_of(1), "presence.1.*");
        assert_eq!(keys::roles_of(1), "role.1.*");
        assert_eq!(keys::all_of(keys::cache_kind::CHANNEL), "channel.>");
        assert_eq!(keys::kind_of(&keys::member(1, 2)), keys::cache_kind::MEMBER);
        assert_eq!(keys::kind_of(&keys::emojis(1)), keys::cache_kind::EMOJIS);
        assert_eq!(
            keys::kind_of(&keys::voice_state(1, 2)),
            keys::cache_kind::VOICE
        );
        assert_eq!(
            keys::kind_of(&keys::presence(1, 2)),
            keys::cache_kind::PRESENCE
        );
        assert_eq!(keys::kind_of(&keys::guild(1)), keys::cache_kind::GUILD);
        assert_eq!(keys::kind_of(&keys::role(1, 2)), keys::cache_kind::ROLE);
        assert_eq!(keys::kind_of(&keys::user(1)), keys::cache_kind::USER);
        assert_eq!(keys::kind_of(&keys::channel(1)), keys::cache_kind::CHANNEL);
    }
}
