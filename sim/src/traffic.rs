//! Background traffic: realistic dispatches at a chosen rate, spread over a bot's guilds, with
//! structural events (channels, roles, members) applied to the world so its state stays the
//! truth a cache can be compared with.

use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use rand::seq::IndexedRandom;
use shardyard_protocol::Intents;
use tokio::time::Instant;

use crate::bot::{BotState, Dispatch};
use crate::model::{ThreadMetadata, channel_kind};
use crate::payload::{
    Activity, ClientStatus, EmojiRef, GuildDelete, MemberRemove, MemberWithGuild, MessageDelete,
    MessageParts, MessagePayload, Nonce, PresenceUpdate, ReactionAdd, RoleDelete, RoleEvent,
    ThreadCreate, ThreadDelete, TypingStart, UserRef, VoiceState, unix_secs,
};
use crate::session::Event;
use crate::snowflake::{iso8601, now_ms};
use crate::world::World;

const SENTENCE_WORDS: &[&str] = &[
    "the", "raid", "tonight", "anyone", "up", "for", "a", "match", "lol", "gg", "did", "you",
    "see", "patch", "notes", "new", "season", "starts", "tomorrow", "bot", "is", "fast", "meeting",
    "moved", "to", "friday", "check", "pinned", "thanks", "everyone", "welcome", "server", "rules",
    "please", "read", "channel", "voice", "later", "stream", "link", "build",
];

const EMOJIS: &[&str] = &["👍", "🔥", "😂", "🎉", "❤️", "👀"];

/// How often the generator wakes: each wake's events reach a connection in one write, so a
/// longer tick means fewer syscalls per event; 5 ms keeps delivery smooth for people watching.
const TICK: Duration = Duration::from_millis(5);

/// Kinds of generated traffic with their weight out of 1,000. Creations and deletions balance,
/// so guilds wander around their size instead of growing without end in a long run.
const MIX: &[(Kind, u32)] = &[
    (Kind::MessageCreate, 552),
    (Kind::TypingStart, 120),
    (Kind::ReactionAdd, 80),
    (Kind::PresenceUpdate, 80),
    (Kind::MessageUpdate, 50),
    (Kind::MessageDelete, 30),
    (Kind::MemberUpdate, 25),
    (Kind::VoiceStateUpdate, 15),
    (Kind::MemberAdd, 10),
    (Kind::MemberRemove, 10),
    (Kind::ChannelUpdate, 6),
    (Kind::ChannelCreate, 3),
    (Kind::ChannelDelete, 3),
    (Kind::RoleCreate, 2),
    (Kind::RoleUpdate, 3),
    (Kind::RoleDelete, 2),
    (Kind::ThreadCreate, 3),
    (Kind::ThreadUpdate, 3),
    (Kind::ThreadDelete, 2),
];

#[derive(Clone, Copy, Debug)]
enum Kind {
    MessageCreate,
    TypingStart,
    ReactionAdd,
    PresenceUpdate,
    MessageUpdate,
    MessageDelete,
    MemberUpdate,
    VoiceStateUpdate,
    MemberAdd,
    MemberRemove,
    ChannelUpdate,
    ChannelCreate,
    ChannelDelete,
    RoleCreate,
    RoleUpdate,
    RoleDelete,
    ThreadCreate,
    ThreadUpdate,
    ThreadDelete,
}

fn pick_kind(rng: &mut impl Rng) -> Kind {
    let mut roll = rng.random_range(0..1000);
    for (kind, weight) in MIX {
        if roll < *weight {
            return *kind;
        }
        roll -= weight;
    }
    Kind::MessageCreate
}

/// A sentence of `words` words.
pub fn sentence(rng: &mut impl Rng, words: usize) -> String {
    let mut out = String::with_capacity(words * 7);
    for i in 0..words {
        if i > 0 {
            out.push(' ');
        }
        out.push_str(SENTENCE_WORDS.choose(rng).copied().unwrap_or("hi"));
    }
    out
}

/// Runs the generator of one bot until the simulator shuts down, at the rate in `bot.traffic`.
pub async fn run(bot: Arc<BotState>, shutdown: tokio_util::sync::CancellationToken) {
    let mut rate_rx = bot.traffic.subscribe();
    loop {
        let rate = *rate_rx.borrow_and_update();
        if rate <= 0.0 {
            tokio::select! {
                () = shutdown.cancelled() => return,
                changed = rate_rx.changed() => if changed.is_err() { return },
            }
            continue;
        }
        // Generate at `rate` until it changes: owed events are computed from elapsed time, so the
        // rate holds whatever the tick jitter, and a stall is not paid back in a burst.
        let start = Instant::now();
        let mut generated: u64 = 0;
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                changed = rate_rx.changed() => { if changed.is_err() { return } break; }
                _ = tick.tick() => {}
            }
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let owed = (start.elapsed().as_secs_f64() * rate) as u64;
            let due = owed.saturating_sub(generated);
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let cap = (rate / 4.0).max(1.0) as u64;
            for _ in 0..due.min(cap) {
                if let Some(dispatch) = generate(&bot) {
                    bot.dispatch(&dispatch);
                }
            }
            generated = if due > cap { owed } else { generated + due };
            // Yield between ticks even when behind, so connections get to write.
            tokio::task::yield_now().await;
        }
    }
}

/// One random dispatch for a random guild of `bot`, with the world updated to match.
pub fn generate(bot: &BotState) -> Option<Dispatch> {
    let strip = bot.needs_content_stripped();
    let mut world = bot.world();
    let world = &mut *world;
    let count = world.guild_ids().len();
    if count == 0 {
        return None;
    }
    let pick = skewed_index(&mut world.rng, count);
    let guild_id = world.guild_ids()[pick];
    let kind = pick_kind(&mut world.rng);
    Some(match kind {
        Kind::MessageCreate | Kind::MessageUpdate => {
            message(world, guild_id, matches!(kind, Kind::MessageUpdate), strip)?
        }
        Kind::MessageDelete => {
            let channel = random_text_channel(world, guild_id)?;
            let id = world.ids.next();
            guild_event(
                guild_id,
                Intents::GUILD_MESSAGES,
                Event::json(
                    "MESSAGE_DELETE",
                    &MessageDelete {
                        id,
                        channel_id: channel,
                        guild_id,
                    },
                ),
            )
        }
        Kind::TypingStart => {
            let channel = random_text_channel(world, guild_id)?;
            let guild = world.guilds.get(&guild_id)?;
            let member = random_member(guild, &mut world.rng, world.bot_user.id)?;
            guild_event(
                guild_id,
                Intents::GUILD_MESSAGE_TYPING,
                Event::json(
                    "TYPING_START",
                    &TypingStart {
                        channel_id: channel,
                        guild_id,
                        user_id: member.user.id,
                        timestamp: unix_secs(),
                        member,
                    },
                ),
            )
        }
        Kind::ReactionAdd => {
            let channel = random_text_channel(world, guild_id)?;
            let message_id = world.ids.next();
            let emoji = EMOJIS.choose(&mut world.rng).copied().unwrap_or("👍");
            let guild = world.guilds.get(&guild_id)?;
            let member = random_member(guild, &mut world.rng, world.bot_user.id)?;
            guild_event(
                guild_id,
                Intents::GUILD_MESSAGE_REACTIONS,
                Event::json(
                    "MESSAGE_REACTION_ADD",
                    &ReactionAdd {
                        user_id: member.user.id,
                        kind: 0,
                        message_id,
                        message_author_id: member.user.id,
                        member,
                        emoji: EmojiRef {
                            id: None,
                            name: emoji,
                        },
                        channel_id: channel,
                        burst: false,
                        guild_id,
                    },
                ),
            )
        }
        Kind::PresenceUpdate => {
            let guild = world.guilds.get(&guild_id)?;
            let member = random_member(guild, &mut world.rng, world.bot_user.id)?;
            let status = ["online", "idle", "dnd", "offline"]
                .choose(&mut world.rng)
                .copied()
                .unwrap_or("online");
            let activities = if status == "offline" {
                Vec::new()
            } else {
                vec![Activity {
                    name: "a game",
                    kind: 0,
                    created_at: now_ms(),
                    id: "ec0b28a579ecb4bd",
                }]
            };
            guild_event(
                guild_id,
                Intents::GUILD_PRESENCES,
                Event::json(
                    "PRESENCE_UPDATE",
                    &PresenceUpdate {
                        user: UserRef { id: member.user.id },
                        status,
                        activities,
                        client_status: ClientStatus { desktop: status },
                        guild_id,
                    },
                ),
            )
        }
        Kind::MemberUpdate => {
            let nick = crate::traffic::sentence(&mut world.rng, 1);
            let bot_id = world.bot_user.id;
            let guild = world.guilds.get_mut(&guild_id)?;
            let user = random_member(guild, &mut world.rng, bot_id)?.user.id;
            let member = guild.members.get_mut(&user)?;
            member.nick = Some(nick);
            guild_event(
                guild_id,
                Intents::GUILD_MEMBERS,
                Event::json("GUILD_MEMBER_UPDATE", &MemberWithGuild { member, guild_id }),
            )
        }
        Kind::VoiceStateUpdate => {
            let bot_id = world.bot_user.id;
            let guild = world.guilds.get_mut(&guild_id)?;
            let user = random_member(guild, &mut world.rng, bot_id)?.user.id;
            let voice: Vec<u64> = guild
                .channels
                .values()
                .filter(|c| c.kind == channel_kind::VOICE)
                .map(|c| c.id)
                .collect();
            let channel = if guild.voice_states.contains_key(&user) {
                None
            } else {
                voice.choose(&mut world.rng).copied()
            };
            match channel {
                Some(c) => guild.voice_states.insert(user, c),
                None => guild.voice_states.remove(&user),
            };
            let member = guild.members.get(&user)?;
            guild_event(
                guild_id,
                Intents::GUILD_VOICE_STATES,
                Event::json(
                    "VOICE_STATE_UPDATE",
                    &VoiceState::new(user, channel).in_guild(guild_id, member),
                ),
            )
        }
        Kind::MemberAdd => {
            let user = world.new_user();
            let roles: Vec<u64> = world
                .guilds
                .get(&guild_id)?
                .roles
                .keys()
                .copied()
                .filter(|r| *r != guild_id)
                .collect();
            let member = world.new_member(user, &roles);
            let guild = world.guilds.get_mut(&guild_id)?;
            let id = member.user.id;
            guild.members.insert(id, member);
            let member = guild.members.get(&id)?;
            guild_event(
                guild_id,
                Intents::GUILD_MEMBERS,
                Event::json("GUILD_MEMBER_ADD", &MemberWithGuild { member, guild_id }),
            )
        }
        Kind::MemberRemove => {
            let bot_id = world.bot_user.id;
            let guild = world.guilds.get_mut(&guild_id)?;
            if guild.members.len() <= 3 {
                return None;
            }
            let user = random_member(guild, &mut world.rng, bot_id)?.user.id;
            if user == guild.owner_id {
                return None;
            }
            let member = guild.members.remove(&user)?;
            guild.voice_states.remove(&user);
            guild_event(
                guild_id,
                Intents::GUILD_MEMBERS,
                Event::json(
                    "GUILD_MEMBER_REMOVE",
                    &MemberRemove {
                        guild_id,
                        user: &member.user,
                    },
                ),
            )
        }
        Kind::ChannelCreate => {
            let parent = world
                .guilds
                .get(&guild_id)?
                .channels
                .values()
                .find(|c| c.kind == channel_kind::CATEGORY)
                .map(|c| c.id);
            let position = i64::try_from(world.guilds.get(&guild_id)?.channels.len()).unwrap_or(0);
            let channel = world.new_channel(guild_id, channel_kind::TEXT, position, parent);
            let id = channel.id;
            world.channel_guild.insert(id, guild_id);
            let guild = world.guilds.get_mut(&guild_id)?;
            guild.channels.insert(id, channel);
            guild_event(
                guild_id,
                Intents::GUILDS,
                Event::json("CHANNEL_CREATE", guild.channels.get(&id)?),
            )
        }
        Kind::ChannelUpdate => {
            let id = random_text_channel(world, guild_id)?;
            let topic = sentence(&mut world.rng, 5);
            let channel = world.guilds.get_mut(&guild_id)?.channels.get_mut(&id)?;
            channel.topic = Some(topic);
            guild_event(
                guild_id,
                Intents::GUILDS,
                Event::json("CHANNEL_UPDATE", &*channel),
            )
        }
        Kind::ChannelDelete => {
            let guild = world.guilds.get(&guild_id)?;
            // Keep a few text channels so `say` and messages always have somewhere to go.
            if guild.text_channels().count() <= 3 {
                return None;
            }
            let id = random_text_channel(world, guild_id)?;
            world.channel_guild.remove(&id);
            let guild = world.guilds.get_mut(&guild_id)?;
            let channel = guild.channels.remove(&id)?;
            // Its threads go with it, without a THREAD_DELETE of their own (as on Discord).
            let threads: Vec<u64> = guild
                .channels
                .values()
                .filter(|c| c.thread_metadata.is_some() && c.parent_id == Some(id))
                .map(|c| c.id)
                .collect();
            for thread in threads {
                guild.channels.remove(&thread);
                world.channel_guild.remove(&thread);
                world.messages.remove(&thread);
            }
            world.messages.remove(&id);
            guild_event(
                guild_id,
                Intents::GUILDS,
                Event::json("CHANNEL_DELETE", &channel),
            )
        }
        Kind::RoleCreate => {
            let position = i64::try_from(world.guilds.get(&guild_id)?.roles.len()).unwrap_or(1);
            let role = world.new_role(position);
            let guild = world.guilds.get_mut(&guild_id)?;
            let id = role.id;
            guild.roles.insert(id, role);
            guild_event(
                guild_id,
                Intents::GUILDS,
                Event::json(
                    "GUILD_ROLE_CREATE",
                    &RoleEvent {
                        guild_id,
                        role: guild.roles.get(&id)?,
                    },
                ),
            )
        }
        Kind::RoleUpdate => {
            let color = world.rng.random_range(0..0x00ff_ffff);
            let guild = world.guilds.get_mut(&guild_id)?;
            let ids: Vec<u64> = guild
                .roles
                .keys()
                .copied()
                .filter(|r| *r != guild_id)
                .collect();
            let id = *ids.choose(&mut world.rng)?;
            let role = guild.roles.get_mut(&id)?;
            role.color = color;
            role.colors = crate::model::RoleColors::solid(color);
            guild_event(
                guild_id,
                Intents::GUILDS,
                Event::json("GUILD_ROLE_UPDATE", &RoleEvent { guild_id, role }),
            )
        }
        Kind::ThreadCreate => thread_create(world, guild_id)?,
        Kind::ThreadUpdate => thread_update(world, guild_id)?,
        Kind::ThreadDelete => thread_delete(world, guild_id)?,
        Kind::RoleDelete => {
            let guild = world.guilds.get_mut(&guild_id)?;
            if guild.roles.len() <= 2 {
                return None;
            }
            let bot_role = guild
                .members
                .get(&world.bot_user.id)
                .and_then(|m| m.roles.first().copied());
            let candidates: Vec<u64> = guild
                .roles
                .keys()
                .copied()
                .filter(|r| *r != guild_id && Some(*r) != bot_role)
                .collect();
            let id = *candidates.choose(&mut world.rng)?;
            guild.roles.remove(&id);
            for member in guild.members.values_mut() {
                member.roles.retain(|r| *r != id);
            }
            guild_event(
                guild_id,
                Intents::GUILDS,
                Event::json(
                    "GUILD_ROLE_DELETE",
                    &RoleDelete {
                        guild_id,
                        role_id: id,
                    },
                ),
            )
        }
    })
}

/// A member starts a public thread in a text channel: THREAD_CREATE.
fn thread_create(world: &mut World, guild_id: u64) -> Option<Dispatch> {
    let parent = random_text_channel(world, guild_id)?;
    let bot_id = world.bot_user.id;
    let owner = random_member(world.guilds.get(&guild_id)?, &mut world.rng, bot_id)?
        .user
        .id;
    let mut thread = world.new_channel(guild_id, channel_kind::PUBLIC_THREAD, 0, Some(parent));
    thread.thread_metadata = Some(ThreadMetadata {
        archived: false,
        auto_archive_duration: 1440,
        archive_timestamp: iso8601(now_ms()),
        locked: false,
    });
    thread.owner_id = Some(owner);
    let id = thread.id;
    world.channel_guild.insert(id, guild_id);
    let guild = world.guilds.get_mut(&guild_id)?;
    guild.channels.insert(id, thread);
    Some(guild_event(
        guild_id,
        Intents::GUILDS,
        Event::json(
            "THREAD_CREATE",
            &ThreadCreate {
                thread: guild.channels.get(&id)?,
                newly_created: true,
            },
        ),
    ))
}

/// A random thread of the guild is archived or unarchived: THREAD_UPDATE.
fn thread_update(world: &mut World, guild_id: u64) -> Option<Dispatch> {
    let guild = world.guilds.get_mut(&guild_id)?;
    let id = random_entry(&guild.channels, &mut world.rng, |c| {
        c.thread_metadata.is_some()
    })?
    .id;
    let thread = guild.channels.get_mut(&id)?;
    let metadata = thread.thread_metadata.as_mut()?;
    metadata.archived = !metadata.archived;
    metadata.archive_timestamp = iso8601(now_ms());
    Some(guild_event(
        guild_id,
        Intents::GUILDS,
        Event::json("THREAD_UPDATE", &*thread),
    ))
}

/// A random thread of the guild is deleted: THREAD_DELETE.
fn thread_delete(world: &mut World, guild_id: u64) -> Option<Dispatch> {
    let guild = world.guilds.get_mut(&guild_id)?;
    let id = random_entry(&guild.channels, &mut world.rng, |c| {
        c.thread_metadata.is_some()
    })?
    .id;
    let thread = guild.channels.remove(&id)?;
    world.channel_guild.remove(&id);
    world.messages.remove(&id);
    Some(guild_event(
        guild_id,
        Intents::GUILDS,
        Event::json(
            "THREAD_DELETE",
            &ThreadDelete {
                id,
                guild_id,
                parent_id: thread.parent_id?,
                kind: thread.kind,
            },
        ),
    ))
}

/// An index below `count`, skewed like real bot traffic: a few busy guilds carry most events
/// (the busiest 1% about a fifth of them) while every guild sees some. Busy guilds also stay in
/// cache, which is what lets one core generate 100k events/s over a large world.
fn skewed_index(rng: &mut impl Rng, count: usize) -> usize {
    let u: f64 = rng.random();
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let index = (u * u * u * count as f64) as usize;
    index.min(count - 1)
}

fn guild_event(guild: u64, intents: Intents, event: Arc<Event>) -> Dispatch {
    Dispatch {
        guild: Some(guild),
        intents,
        event,
        without_content: None,
    }
}

fn random_text_channel(world: &mut World, guild_id: u64) -> Option<u64> {
    let guild = world.guilds.get(&guild_id)?;
    random_entry(&guild.channels, &mut world.rng, |c| {
        c.kind == channel_kind::TEXT
    })
    .map(|c| c.id)
}

fn random_member<'a>(
    guild: &'a crate::world::GuildState,
    rng: &mut impl Rng,
    bot_id: u64,
) -> Option<&'a crate::model::Member> {
    random_entry(&guild.members, rng, |m| m.user.id != bot_id)
}

/// A random entry that `accept`s: a uniformly random position, then the first acceptable entry
/// from there on (wrapping). One partial pass and no allocation: this is the generator's hot
/// path, and the slight skew towards entries after rejected ones does not matter for traffic.
fn random_entry<'a, V>(
    map: &'a std::collections::BTreeMap<u64, V>,
    rng: &mut impl Rng,
    accept: impl Fn(&V) -> bool,
) -> Option<&'a V> {
    if map.is_empty() {
        return None;
    }
    let start = rng.random_range(0..map.len());
    map.values()
        .skip(start)
        .chain(map.values().take(start))
        .find(|v| accept(v))
}

fn message(world: &mut World, guild_id: u64, edit: bool, strip: bool) -> Option<Dispatch> {
    let channel = random_text_channel(world, guild_id)?;
    let words = world.rng.random_range(2..18);
    let content = sentence(&mut world.rng, words);
    let id = world.ids.next();
    let bot_id = world.bot_user.id;
    let guild = world.guilds.get(&guild_id)?;
    let member = random_member(guild, &mut world.rng, bot_id)?;
    let parts = || MessageParts {
        id,
        channel_id: channel,
        guild_id: Some(guild_id),
        author: &member.user,
        member: Some(member.into()),
        content: &content,
        embeds: &[],
        edited_ms: edit.then(now_ms),
        nonce: (!edit).then_some(Nonce::Id(id)),
    };
    let kind = if edit {
        "MESSAGE_UPDATE"
    } else {
        "MESSAGE_CREATE"
    };
    Some(message_dispatch(kind, guild_id, parts, strip))
}

/// A message event, plus its content-less copy when some session lacks MESSAGE_CONTENT.
fn message_dispatch<'a>(
    kind: &'static str,
    guild_id: u64,
    parts: impl Fn() -> MessageParts<'a>,
    strip: bool,
) -> Dispatch {
    Dispatch {
        guild: Some(guild_id),
        intents: Intents::GUILD_MESSAGES,
        event: Event::new(kind, MessagePayload::new(parts()).to_json()),
        without_content: strip.then(|| {
            Event::new(
                kind,
                MessagePayload::new(parts()).without_content().to_json(),
            )
        }),
    }
}

/// A message a user posts in `channel` (for `/_sim/say`): the dispatch and the message id.
pub fn user_message(
    world: &mut World,
    channel: u64,
    content: &str,
    author: Option<u64>,
    strip: bool,
) -> Option<(Dispatch, u64)> {
    let guild_id = *world.channel_guild.get(&channel)?;
    let id = world.ids.next();
    let bot_id = world.bot_user.id;
    let guild = world.guilds.get(&guild_id)?;
    let member = match author {
        Some(user) => guild.members.get(&user)?,
        None => random_member(guild, &mut world.rng, bot_id)?,
    };
    let parts = || MessageParts {
        id,
        channel_id: channel,
        guild_id: Some(guild_id),
        author: &member.user,
        member: Some(member.into()),
        content,
        embeds: &[],
        edited_ms: None,
        nonce: Some(Nonce::Id(id)),
    };
    Some((
        message_dispatch("MESSAGE_CREATE", guild_id, parts, strip),
        id,
    ))
}

/// GUILD_DELETE for a guild the bot was removed from.
#[must_use]
pub fn guild_removed(guild_id: u64) -> Dispatch {
    guild_event(
        guild_id,
        Intents::GUILDS,
        Event::json(
            "GUILD_DELETE",
            &GuildDelete {
                id: guild_id,
                unavailable: None,
            },
        ),
    )
}
