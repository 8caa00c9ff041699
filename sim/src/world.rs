//! The simulated Discord world of one bot: its guilds with their channels, roles, members and
//! emojis, and the messages bots created through REST. Generated deterministically from a seed.

use std::collections::{BTreeMap, HashMap};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::commands::CommandRegistry;
use crate::model::{Channel, Emoji, Member, Role, RoleColors, StoredMessage, User, channel_kind};
use crate::payload::VoiceState;
use crate::snowflake::{SnowflakeGenerator, as_string, compose, iso8601, now_ms};

/// Guilds a single shard may hold before IDENTIFY fails with 4011.
pub const MAX_GUILDS_PER_SHARD: usize = 2500;

/// The permissions the bot's role grants: view, send, read history, embed, attach, react.
const BOT_PERMISSIONS: &str = "117824";
const EVERYONE_PERMISSIONS: &str = "1071698660929";

/// One guild and everything in it.
#[derive(Debug, Clone)]
pub struct GuildState {
    /// Snowflake.
    pub id: u64,
    /// Name.
    pub name: String,
    /// Owner's user id.
    pub owner_id: u64,
    /// When the bot joined.
    pub joined_at: String,
    /// Channels and threads by id.
    pub channels: BTreeMap<u64, Channel>,
    /// Roles by id.
    pub roles: BTreeMap<u64, Role>,
    /// Members by user id.
    pub members: BTreeMap<u64, Member>,
    /// Custom emojis.
    pub emojis: Vec<Emoji>,
    /// Voice states by user id: the channel each user sits in.
    pub voice_states: BTreeMap<u64, u64>,
}

impl GuildState {
    /// Text channels, in id order.
    pub fn text_channels(&self) -> impl Iterator<Item = &Channel> {
        self.channels
            .values()
            .filter(|c| c.kind == channel_kind::TEXT)
    }
}

/// The world of one bot.
#[derive(Debug)]
pub struct World {
    /// The bot's own user.
    pub bot_user: User,
    /// The bot's application id.
    pub application_id: u64,
    /// Guilds by id.
    pub guilds: BTreeMap<u64, GuildState>,
    /// Which guild each channel belongs to.
    pub channel_guild: HashMap<u64, u64>,
    /// Messages bots created through REST, per channel.
    pub messages: HashMap<u64, Vec<StoredMessage>>,
    /// The application commands the bot registered through REST.
    pub commands: CommandRegistry,
    /// Users that are not members anywhere yet, to join guilds later.
    pub user_pool: Vec<User>,
    /// New ids.
    pub ids: SnowflakeGenerator,
    /// Random source for generation and traffic.
    pub rng: StdRng,
    guild_ids: Vec<u64>,
}

/// Sizes the world is generated with.
#[derive(Debug, Clone)]
pub struct WorldSpec {
    /// Number of guilds.
    pub guilds: u32,
    /// Average members per guild (the bot comes on top).
    pub members_per_guild: u32,
    /// Seed for every random choice.
    pub seed: u64,
    /// The bot's application (and user) id.
    pub application_id: u64,
    /// The bot's username.
    pub bot_name: String,
}

const WORDS: &[&str] = &[
    "amber", "birch", "cedar", "delta", "ember", "fjord", "grove", "harbor", "iris", "juniper",
    "kestrel", "lumen", "maple", "nova", "onyx", "pine", "quartz", "raven", "sierra", "tundra",
    "umber", "vale", "willow", "xenon", "yarrow", "zephyr",
];

fn word(rng: &mut StdRng) -> &'static str {
    WORDS[rng.random_range(0..WORDS.len())]
}

fn hash(rng: &mut StdRng) -> String {
    format!("{:032x}", rng.random::<u128>())
}

impl World {
    /// Generates a world from `spec`.
    #[must_use]
    pub fn generate(spec: &WorldSpec) -> Self {
        let mut rng = StdRng::seed_from_u64(spec.seed);
        // The worker bits follow the seed, so two bots' worlds (seeds 7919 apart) never hand out
        // the same channel or message ids.
        let ids = SnowflakeGenerator::new(u8::try_from(spec.seed % 32).unwrap_or(1));
        let bot_user = User {
            id: spec.application_id,
            username: spec.bot_name.clone(),
            global_name: None,
            discriminator: "0",
            avatar: Some(hash(&mut rng)),
            bot: true,
            public_flags: 0,
            avatar_decoration_data: None,
        };
        let mut world = Self {
            bot_user,
            application_id: spec.application_id,
            guilds: BTreeMap::new(),
            channel_guild: HashMap::new(),
            messages: HashMap::new(),
            commands: CommandRegistry::default(),
            user_pool: Vec::new(),
            ids,
            rng,
            guild_ids: Vec::new(),
        };
        for _ in 0..spec.guilds {
            world.add_guild(spec.members_per_guild);
        }
        world
    }

    /// Guild ids in a stable order, for picking one at random.
    #[must_use]
    pub fn guild_ids(&self) -> &[u64] {
        &self.guild_ids
    }

    /// A fresh user, not yet in any guild.
    pub fn new_user(&mut self) -> User {
        let id = self.ids.next();
        let name = format!(
            "{}{}",
            word(&mut self.rng),
            self.rng.random_range(1..10_000)
        );
        User {
            id,
            global_name: Some(name.to_ascii_uppercase()),
            username: name,
            discriminator: "0",
            avatar: self.rng.random_bool(0.8).then(|| hash(&mut self.rng)),
            bot: false,
            public_flags: 0,
            avatar_decoration_data: None,
        }
    }

    /// A member entry for `user` in a guild with roles drawn from `roles`.
    pub fn new_member(&mut self, user: User, roles: &[u64]) -> Member {
        let picked: Vec<u64> = roles
            .iter()
            .copied()
            .filter(|_| self.rng.random_bool(0.3))
            .collect();
        Member {
            user,
            nick: self
                .rng
                .random_bool(0.2)
                .then(|| word(&mut self.rng).to_owned()),
            avatar: None,
            roles: picked,
            joined_at: iso8601(now_ms().saturating_sub(self.rng.random_range(0..100_000_000_000))),
            premium_since: None,
            deaf: false,
            mute: false,
            flags: 0,
            pending: false,
            communication_disabled_until: None,
            banner: None,
        }
    }

    /// Adds a generated guild; returns its id.
    pub fn add_guild(&mut self, members_per_guild: u32) -> u64 {
        // Spread creation times over ~10 years so `(id >> 22) % shards` is uniform.
        let created = 1_450_000_000_000 + self.rng.random_range(0..315_360_000_000_u64);
        let increment = self.rng.random_range(0..0x1ffff);
        let id = compose(created, 2, increment);
        let owner = self.new_user();
        let mut roles = BTreeMap::new();
        roles.insert(
            id,
            Role {
                id,
                name: "@everyone".into(),
                color: 0,
                colors: RoleColors::solid(0),
                hoist: false,
                icon: None,
                unicode_emoji: None,
                position: 0,
                permissions: EVERYONE_PERMISSIONS.into(),
                managed: false,
                mentionable: false,
                flags: 0,
            },
        );
        let role_count = self.rng.random_range(2..7);
        for position in 1..=role_count {
            let role = self.new_role(position);
            roles.insert(role.id, role);
        }
        let role_ids: Vec<u64> = roles.keys().copied().filter(|r| *r != id).collect();

        let mut channels = BTreeMap::new();
        let category = self.new_channel(id, channel_kind::CATEGORY, 0, None);
        let category_id = category.id;
        channels.insert(category.id, category);
        let text_count = self.rng.random_range(3..9);
        for position in 0..text_count {
            let channel = self.new_channel(id, channel_kind::TEXT, position, Some(category_id));
            channels.insert(channel.id, channel);
        }
        for position in 0..self.rng.random_range(1..3) {
            let channel = self.new_channel(id, channel_kind::VOICE, position, Some(category_id));
            channels.insert(channel.id, channel);
        }

        let mut members = BTreeMap::new();
        let bot = self.bot_user.clone();
        let mut bot_member = self.new_member(bot, &role_ids);
        bot_member.roles = role_ids.first().copied().into_iter().collect();
        members.insert(bot_member.user.id, bot_member);
        let owner_member = self.new_member(owner.clone(), &role_ids);
        members.insert(owner.id, owner_member);
        let target = members_per_guild.max(1);
        let count = self
            .rng
            .random_range(target / 2..=target + target / 2)
            .max(1);
        for _ in 0..count {
            let user = self.pool_user();
            let member = self.new_member(user, &role_ids);
            members.insert(member.user.id, member);
        }

        let emojis = (0..self.rng.random_range(0..5))
            .map(|_| Emoji {
                id: self.ids.next(),
                name: word(&mut self.rng).to_owned(),
                roles: Vec::new(),
                require_colons: true,
                managed: false,
                animated: self.rng.random_bool(0.2),
                available: true,
            })
            .collect();

        for channel in channels.keys() {
            self.channel_guild.insert(*channel, id);
        }
        let guild = GuildState {
            id,
            name: format!("{} {}", word(&mut self.rng), word(&mut self.rng)),
            owner_id: owner.id,
            joined_at: iso8601(now_ms().saturating_sub(self.rng.random_range(0..10_000_000_000))),
            channels,
            roles,
            members,
            emojis,
            voice_states: BTreeMap::new(),
        };
        self.guilds.insert(id, guild);
        self.guild_ids.push(id);
        id
    }

    /// Removes a guild (the bot left or was kicked); returns it.
    pub fn remove_guild(&mut self, id: u64) -> Option<GuildState> {
        let guild = self.guilds.remove(&id)?;
        self.guild_ids.retain(|g| *g != id);
        for channel in guild.channels.keys() {
            self.channel_guild.remove(channel);
        }
        // An application removed from a guild loses its commands there.
        self.commands.remove_guild(id);
        Some(guild)
    }

    fn pool_user(&mut self) -> User {
        // Half the members are people already seen in another guild, as in real bots.
        if !self.user_pool.is_empty() && self.rng.random_bool(0.5) {
            let i = self.rng.random_range(0..self.user_pool.len());
            return self.user_pool[i].clone();
        }
        let user = self.new_user();
        if self.user_pool.len() < 100_000 {
            self.user_pool.push(user.clone());
        }
        user
    }

    /// A new role at `position`.
    pub fn new_role(&mut self, position: i64) -> Role {
        let color = self.rng.random_range(0..0x00ff_ffff);
        Role {
            id: self.ids.next(),
            name: word(&mut self.rng).to_owned(),
            color,
            colors: RoleColors::solid(color),
            hoist: self.rng.random_bool(0.3),
            icon: None,
            unicode_emoji: None,
            position,
            permissions: BOT_PERMISSIONS.into(),
            managed: false,
            mentionable: self.rng.random_bool(0.5),
            flags: 0,
        }
    }

    /// A new channel of `kind` in `guild`.
    pub fn new_channel(
        &mut self,
        guild: u64,
        kind: u8,
        position: i64,
        parent: Option<u64>,
    ) -> Channel {
        let voice = kind == channel_kind::VOICE;
        let text = kind == channel_kind::TEXT;
        Channel {
            id: self.ids.next(),
            kind,
            guild_id: guild,
            position,
            name: format!("{}-{}", word(&mut self.rng), word(&mut self.rng)),
            topic: text.then(|| format!("all about {}", word(&mut self.rng))),
            nsfw: false,
            parent_id: parent,
            last_message_id: None,
            rate_limit_per_user: 0,
            bitrate: voice.then_some(64_000),
            user_limit: voice.then_some(0),
            permission_overwrites: [],
            flags: 0,
            thread_metadata: None,
            owner_id: None,
        }
    }

    /// The guild owning `channel`.
    #[must_use]
    pub fn guild_of_channel(&self, channel: u64) -> Option<&GuildState> {
        self.guilds.get(self.channel_guild.get(&channel)?)
    }

    /// A channel by id.
    #[must_use]
    pub fn channel(&self, channel: u64) -> Option<&Channel> {
        self.guild_of_channel(channel)?.channels.get(&channel)
    }
}

/// A guild as sent in GUILD_CREATE: the guild object plus the gateway-only fields.
#[derive(Serialize)]
pub struct GuildCreate<'a> {
    #[serde(flatten)]
    guild: GuildObject<'a>,
    joined_at: &'a str,
    large: bool,
    unavailable: bool,
    member_count: usize,
    voice_states: Vec<VoiceState<'a>>,
    members: Vec<&'a Member>,
    channels: Vec<&'a Channel>,
    threads: Vec<&'a Channel>,
    presences: [(); 0],
    stage_instances: [(); 0],
    guild_scheduled_events: [(); 0],
    soundboard_sounds: [(); 0],
}

/// The guild object as REST returns it (`GET /guilds/{id}`).
#[derive(Serialize)]
pub struct GuildObject<'a> {
    #[serde(with = "as_string")]
    id: u64,
    name: &'a str,
    icon: Option<&'a str>,
    splash: Option<&'a str>,
    discovery_splash: Option<&'a str>,
    #[serde(with = "as_string")]
    owner_id: u64,
    afk_channel_id: Option<()>,
    afk_timeout: u32,
    widget_enabled: bool,
    verification_level: u8,
    default_message_notifications: u8,
    explicit_content_filter: u8,
    roles: Vec<&'a Role>,
    emojis: &'a [Emoji],
    features: [&'static str; 0],
    mfa_level: u8,
    application_id: Option<()>,
    system_channel_id: Option<()>,
    system_channel_flags: u64,
    rules_channel_id: Option<()>,
    max_members: u32,
    vanity_url_code: Option<()>,
    description: Option<()>,
    banner: Option<()>,
    premium_tier: u8,
    premium_subscription_count: u32,
    preferred_locale: &'static str,
    public_updates_channel_id: Option<()>,
    nsfw_level: u8,
    stickers: [(); 0],
    premium_progress_bar_enabled: bool,
    safety_alerts_channel_id: Option<()>,
    #[serde(skip_serializing_if = "Option::is_none")]
    approximate_member_count: Option<usize>,
}

impl GuildState {
    /// The REST guild object.
    #[must_use]
    pub fn object(&self, with_counts: bool) -> GuildObject<'_> {
        GuildObject {
            id: self.id,
            name: &self.name,
            icon: None,
            splash: None,
            discovery_splash: None,
            owner_id: self.owner_id,
            afk_channel_id: None,
            afk_timeout: 300,
            widget_enabled: false,
            verification_level: 1,
            default_message_notifications: 1,
            explicit_content_filter: 2,
            roles: self.roles.values().collect(),
            emojis: &self.emojis,
            features: [],
            mfa_level: 0,
            application_id: None,
            system_channel_id: None,
            system_channel_flags: 0,
            rules_channel_id: None,
            max_members: 500_000,
            vanity_url_code: None,
            description: None,
            banner: None,
            premium_tier: 0,
            premium_subscription_count: 0,
            preferred_locale: "en-US",
            public_updates_channel_id: None,
            nsfw_level: 0,
            stickers: [],
            premium_progress_bar_enabled: false,
            safety_alerts_channel_id: None,
            approximate_member_count: with_counts.then_some(self.members.len()),
        }
    }

    /// The GUILD_CREATE payload; members are capped at `large_threshold` for large guilds, as
    /// Discord sends only some members of those (the bot's own member always included).
    #[must_use]
    pub fn create_payload(&self, large_threshold: usize, bot_id: u64) -> GuildCreate<'_> {
        let large = self.members.len() > large_threshold;
        let members: Vec<&Member> = if large {
            let mut some: Vec<&Member> = self.members.get(&bot_id).into_iter().collect();
            some.extend(
                self.members
                    .values()
                    .filter(|m| m.user.id != bot_id)
                    .take(large_threshold.saturating_sub(1)),
            );
            some
        } else {
            self.members.values().collect()
        };
        GuildCreate {
            guild: self.object(false),
            joined_at: &self.joined_at,
            large,
            unavailable: false,
            member_count: self.members.len(),
            voice_states: self
                .voice_states
                .iter()
                .map(|(user, channel)| VoiceState::new(*user, Some(*channel)))
                .collect(),
            members,
            channels: self
                .channels
                .values()
                .filter(|c| c.thread_metadata.is_none())
                .collect(),
            threads: self
                .channels
                .values()
                .filter(|c| c.thread_metadata.is_some())
                .collect(),
            presences: [],
            stage_instances: [],
            guild_scheduled_events: [],
            soundboard_sounds: [],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{World, WorldSpec};

    fn spec(guilds: u32) -> WorldSpec {
        WorldSpec {
            guilds,
            members_per_guild: 20,
            seed: 7,
            application_id: 1_000_000_000_000_000_001,
            bot_name: "simbot".into(),
        }
    }

    #[test]
    fn generation_is_deterministic_per_seed() {
        let a = World::generate(&spec(5));
        let b = World::generate(&spec(5));
        assert_eq!(a.guild_ids(), b.guild_ids());
        let ga = &a.guilds[&a.guild_ids()[0]];
        let gb = &b.guilds[&b.guild_ids()[0]];
        assert_eq!(ga.name, gb.name);
        assert_eq!(ga.members.len(), gb.members.len());
    }

    #[test]
    fn guilds_spread_over_shards() {
        let world = World::generate(&WorldSpec {
            members_per_guild: 2,
            ..spec(1600)
        });
        let mut per_shard = [0u32; 16];
        for id in world.guild_ids() {
            per_shard[shardyard_protocol::shard_for_guild(*id, 16) as usize] += 1;
        }
        for count in per_shard {
            assert!((50..150).contains(&count), "uneven spread: {per_shard:?}");
        }
    }

    #[test]
    fn every_guild_has_text_channels_and_the_bot() {
        let world = World::generate(&spec(3));
        for guild in world.guilds.values() {
            assert!(guild.text_channels().count() >= 3);
            assert!(guild.members.contains_key(&world.bot_user.id));
            for channel in guild.channels.keys() {
                assert_eq!(world.channel_guild[channel], guild.id);
            }
        }
    }

    #[test]
    fn large_guilds_send_some_members() {
        let world = World::generate(&WorldSpec {
            members_per_guild: 200,
            ..spec(1)
        });
        let guild = world.guilds.values().next().unwrap();
        let payload = serde_json::to_value(guild.create_payload(50, world.bot_user.id)).unwrap();
        assert_eq!(payload["large"], true);
        assert_eq!(payload["members"].as_array().unwrap().len(), 50);
        assert_eq!(
            payload["member_count"].as_u64().unwrap() as usize,
            guild.members.len()
        );
    }
}
