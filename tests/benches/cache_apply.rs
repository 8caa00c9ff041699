//! The cache's apply rate (see `BENCHMARKS.md`, "Cache").
//!
//! 1. Pure: [`shardyard_cache::apply`] over an in-memory store (`MemoryStore`: parse, the reads
//!    it names, apply, writes into a `BTreeMap`), one thread, for a structural mix like the
//!    simulator's (members join, change and leave; channels and roles are created, updated and
//!    deleted) over `BENCH_GUILDS` guilds (100) of 100 members, after a GUILD_CREATE each.
//!    Events per second of the whole mix and of GUILD_CREATE alone.
//! 2. End to end: the same events (`BENCH_EVENTS`, 20,000) are published to a JetStream stream
//!    on a private nats-server first, then a release `shardyard cache` is started and timed from
//!    ready until its consumer has acked the last one: events/s, and the cache's CPU time per
//!    event (utime + stime from `/proc`), with nats-server and this process on the same machine.
//!
//! ```sh
//! cargo bench -p shardyard-tests --bench cache_apply
//! ```
//!
//! It builds the release binary itself (`cargo build --release -p shardyard`) and runs again with
//! `SHARDYARD_BIN` pointing at it. Knobs (environment): `BENCH_GUILDS` (100), `BENCH_EVENTS`
//! (20000), `BENCH_PURE_EVENTS` (200000), `BENCH_SKIP_E2E`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde_json::{Value, json};
use shardyard_cache::Resources;
use shardyard_cache::apply::MemoryStore;
use shardyard_protocol::BotKey;
use shardyard_protocol::names::{CACHE_CONSUMER, headers};
use shardyard_tests::bench::{self, cpu_secs, env_or};
use shardyard_tests::worker::create_event_stream;
use shardyard_tests::{CacheProcess, NatsServer, eventually};

fn main() -> anyhow::Result<()> {
    bench::run_on_release_binaries(
        "cache_apply",
        &["-p", "shardyard"],
        &[(
            "RUST_LOG",
            std::env::var_os("RUST_LOG").unwrap_or_else(|| "warn".into()),
        )],
    )?;
    let guilds: u64 = env_or("BENCH_GUILDS", 100);
    let pure_events: usize = env_or("BENCH_PURE_EVENTS", 200_000);
    let e2e_events: usize = env_or("BENCH_EVENTS", 20_000);

    let creates = World::new(guilds).creates();
    let mut world = World::new(guilds);
    let _ = world.creates();
    let events: Vec<(&'static str, String)> = (0..pure_events).map(|_| world.next()).collect();
    pure(&creates, &events);
    if std::env::var_os("BENCH_SKIP_E2E").is_some() {
        return Ok(());
    }
    let mut all = creates;
    all.extend(events.into_iter().take(e2e_events));
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(end_to_end(&all))
}

/// A little deterministic world to draw structural events from.
struct World {
    rng: u64,
    next_id: u64,
    guilds: Vec<Guild>,
}

struct Guild {
    id: u64,
    channels: Vec<u64>,
    roles: Vec<u64>,
    members: Vec<u64>,
}

impl World {
    fn new(guilds: u64) -> Self {
        let mut world = Self {
            rng: 0x9e37_79b9_7f4a_7c15,
            next_id: 1 << 40,
            guilds: Vec::new(),
        };
        for _ in 0..guilds {
            let id = world.id();
            let channels = (0..20).map(|_| world.id()).collect();
            let roles = (0..10).map(|_| world.id()).collect();
            let members = (0..100).map(|_| world.id()).collect();
            world.guilds.push(Guild {
                id,
                channels,
                roles,
                members,
            });
        }
        world
    }

    fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    fn random(&mut self, below: usize) -> usize {
        // xorshift64*
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        #[allow(clippy::cast_possible_truncation)]
        let r = (self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize;
        r % below.max(1)
    }

    fn creates(&mut self) -> Vec<(&'static str, String)> {
        self.guilds
            .iter()
            .map(|g| {
                let payload = json!({
                    "id": g.id.to_string(), "name": "bench guild", "owner_id": g.members[0].to_string(),
                    "joined_at": "2024-01-01T00:00:00.000000+00:00", "large": false,
                    "unavailable": false, "member_count": g.members.len(),
                    "channels": g.channels.iter().map(|c| channel(*c, g.id, "general")).collect::<Vec<_>>(),
                    "threads": [],
                    "roles": g.roles.iter().map(|r| role(*r, 0)).collect::<Vec<_>>(),
                    "members": g.members.iter().map(|m| member(*m, g.id, None)).collect::<Vec<_>>(),
                    "emojis": [], "voice_states": [], "presences": [], "features": [],
                    "stickers": [], "preferred_locale": "en-US", "premium_tier": 0
                });
                ("GUILD_CREATE", payload.to_string())
            })
            .collect()
    }

    fn next(&mut self) -> (&'static str, String) {
        let g = self.random(self.guilds.len());
        let roll = self.random(100);
        let new_id = self.id();
        let guild = &mut self.guilds[g];
        let gid = guild.id;
        let pick = |list: &Vec<u64>, r: usize| list[r % list.len()];
        let r = (new_id as usize).wrapping_mul(2_654_435_761);
        let (t, payload) = match roll {
            0..=39 => {
                let user = pick(&guild.members, r);
                ("GUILD_MEMBER_UPDATE", member(user, gid, Some("nick")))
            }
            40..=49 => {
                guild.members.push(new_id);
                ("GUILD_MEMBER_ADD", member(new_id, gid, None))
            }
            50..=59 if guild.members.len() > 5 => {
                let user = guild.members.swap_remove(r % guild.members.len());
                (
                    "GUILD_MEMBER_REMOVE",
                    json!({"guild_id": gid.to_string(), "user": user_object(user)}),
                )
            }
            60..=74 => (
                "CHANNEL_UPDATE",
                channel(pick(&guild.channels, r), gid, "renamed"),
            ),
            75..=79 => {
                guild.channels.push(new_id);
                ("CHANNEL_CREATE", channel(new_id, gid, "new"))
            }
            80..=84 if guild.channels.len() > 5 => {
                let c = guild.channels.swap_remove(r % guild.channels.len());
                ("CHANNEL_DELETE", channel(c, gid, "gone"))
            }
            85..=92 => (
                "GUILD_ROLE_UPDATE",
                json!({"guild_id": gid.to_string(), "role": role(pick(&guild.roles, r), 7)}),
            ),
            93..=96 => {
                guild.roles.push(new_id);
                (
                    "GUILD_ROLE_CREATE",
                    json!({"guild_id": gid.to_string(), "role": role(new_id, 1)}),
                )
            }
            97..=99 if guild.roles.len() > 3 => {
                let role = guild.roles.swap_remove(r % guild.roles.len());
                (
                    "GUILD_ROLE_DELETE",
                    json!({"guild_id": gid.to_string(), "role_id": role.to_string()}),
                )
            }
            _ => {
                let user = pick(&guild.members, r);
                ("GUILD_MEMBER_UPDATE", member(user, gid, Some("other")))
            }
        };
        (t, payload.to_string())
    }
}

fn user_object(id: u64) -> Value {
    json!({"id": id.to_string(), "username": format!("user{id}"), "global_name": null,
        "discriminator": "0", "avatar": "0123456789abcdef0123456789abcdef", "public_flags": 0,
        "avatar_decoration_data": null})
}

fn member(id: u64, guild: u64, nick: Option<&str>) -> Value {
    json!({"guild_id": guild.to_string(), "user": user_object(id), "nick": nick, "avatar": null,
        "roles": [], "joined_at": "2024-01-01T00:00:00.000000+00:00", "premium_since": null,
        "deaf": false, "mute": false, "flags": 0, "pending": false,
        "communication_disabled_until": null, "banner": null})
}

fn channel(id: u64, guild: u64, name: &str) -> Value {
    json!({"id": id.to_string(), "type": 0, "guild_id": guild.to_string(), "position": 1,
        "name": name, "topic": "a topic", "nsfw": false, "parent_id": null,
        "last_message_id": null, "rate_limit_per_user": 0, "permission_overwrites": [], "flags": 0})
}

fn role(id: u64, color: u32) -> Value {
    json!({"id": id.to_string(), "name": "role", "color": color,
        "colors": {"primary_color": color, "secondary_color": null, "tertiary_color": null},
        "hoist": false, "icon": null, "unicode_emoji": null, "position": 1,
        "permissions": "1071698660929", "managed": false, "mentionable": false, "flags": 0})
}

fn pure(creates: &[(&'static str, String)], events: &[(&'static str, String)]) {
    let mut store = MemoryStore::default();
    let started = Instant::now();
    for (i, (t, payload)) in creates.iter().enumerate() {
        store
            .apply(t, payload.as_bytes(), i as u64 + 1, Resources::DEFAULT)
            .expect("well-formed");
    }
    let create_secs = started.elapsed().as_secs_f64();
    let mut by_type: BTreeMap<&str, (u64, Duration)> = BTreeMap::new();
    let started = Instant::now();
    let first = creates.len() as u64 + 1;
    for (i, (t, payload)) in events.iter().enumerate() {
        let one = Instant::now();
        store
            .apply(t, payload.as_bytes(), first + i as u64, Resources::DEFAULT)
            .expect("well-formed");
        let entry = by_type.entry(t).or_default();
        entry.0 += 1;
        entry.1 += one.elapsed();
    }
    let secs = started.elapsed().as_secs_f64();
    #[allow(clippy::cast_precision_loss)]
    {
        println!(
            "pure apply: GUILD_CREATE (100 members, 20 channels, 10 roles): {:.0} events/s",
            creates.len() as f64 / create_secs
        );
        println!(
            "pure apply: {} structural events in {secs:.3} s: {:.0} events/s ({} keys in the store)",
            events.len(),
            events.len() as f64 / secs,
            store.values.len()
        );
        for (t, (count, time)) in by_type {
            println!(
                "  {t:<22} {count:>7} events  {:>9.0} events/s",
                count as f64 / time.as_secs_f64()
            );
        }
    }
}

async fn end_to_end(events: &[(&'static str, String)]) -> anyhow::Result<()> {
    let nats = NatsServer::start().await?;
    let js = nats.jetstream().await?;
    let bot = BotKey::local("bench")?;
    create_event_stream(&js, &bot).await?;
    let mut acks = Vec::with_capacity(events.len());
    for (i, (t, payload)) in events.iter().enumerate() {
        let mut h = async_nats::HeaderMap::new();
        h.insert(headers::MSG_ID, format!("bench:{i}").as_str());
        h.insert(headers::SHARD, "0/1");
        h.insert(headers::SEQ, (i + 1).to_string().as_str());
        h.insert(headers::EVENT, *t);
        h.insert(headers::RECEIVED_AT, "0");
        acks.push(
            js.publish_with_headers(bot.event_subject(0, t), h, payload.clone().into())
                .await?,
        );
        if acks.len() >= 512 {
            for ack in acks.drain(..) {
                ack.await?;
            }
        }
    }
    for ack in acks {
        ack.await?;
    }
    let mut cache = CacheProcess::start(&nats, bot.as_str(), &[]).await?;
    let cpu_before = cpu_secs(cache.process().pid())?;
    let started = Instant::now();
    cache.wait_ready(Duration::from_secs(30)).await?;
    let total = events.len() as u64;
    eventually(
        Duration::from_secs(600),
        "the cache applied every event",
        || async {
            let stream = js.get_stream(bot.stream()).await?;
            let info = stream.consumer_info(CACHE_CONSUMER).await?;
            anyhow::ensure!(
                info.ack_floor.stream_sequence >= total,
                "acked up to {}",
                info.ack_floor.stream_sequence
            );
            Ok(())
        },
    )
    .await
    .with_context(|| cache.log_report())?;
    let secs = started.elapsed().as_secs_f64();
    let cpu = cpu_secs(cache.process().pid())? - cpu_before;
    let bad = cache.metric("shardyard_cache_bad_events_total").await?;
    anyhow::ensure!(bad == 0.0, "{bad} bad events");
    #[allow(clippy::cast_precision_loss)]
    {
        println!(
            "end to end (nats-server KV, one event in flight): {total} events in {secs:.2} s: {:.0} events/s; cache CPU {cpu:.2} s = {:.0} µs/event",
            total as f64 / secs,
            cpu * 1e6 / total as f64
        );
    }
    Ok(())
}
