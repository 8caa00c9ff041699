//! `shardyard cache` end to end: the simulator's structural events go through `shardyard
//! gateway` and JetStream into the cache bucket, and after a storm (with the cache killed and
//! restarted in the middle, guilds removed and added, threads deleted with their channels) the
//! bucket holds exactly the simulator's own state of every guild; the same after NATS crashes
//! while the cache works through a backlog. Malformed payloads are counted and skipped without
//! stopping the consumer.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream;
use async_nats::jetstream::kv;
use serde_json::{Value, json};
use shardyard_cache::CacheReader;
use shardyard_protocol::BotKey;
use shardyard_protocol::names::{CACHE_CONSUMER, headers, keys};
use shardyard_tests::ground_truth::wait_until_stream_matches;
use shardyard_tests::worker::create_event_stream;
use shardyard_tests::{CacheProcess, GatewayProcess, NatsServer, SimArgs, SimProcess, eventually};

/// Waits until the cache consumer has applied and acked everything in the stream.
async fn wait_drained(
    js: &jetstream::Context,
    bot: &BotKey,
    cache: &CacheProcess,
) -> anyhow::Result<()> {
    eventually(
        Duration::from_secs(60),
        "the cache consumer is drained",
        || async {
            let stream = js.get_stream(bot.stream()).await?;
            let info = stream.consumer_info(CACHE_CONSUMER).await?;
            anyhow::ensure!(
                info.num_pending == 0 && info.num_ack_pending == 0,
                "{} pending, {} unacked",
                info.num_pending,
                info.num_ack_pending
            );
            Ok(())
        },
    )
    .await
    .with_context(|| cache.log_report())
}

async fn sim_guild_ids(sim: &SimProcess) -> anyhow::Result<Vec<u64>> {
    let guilds: Value = reqwest::Client::new()
        .get(format!("{}/users/@me/guilds", sim.api_base()))
        .header("Authorization", format!("Bot {}", sim.token()))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    guilds
        .as_array()
        .context("a guild list")?
        .iter()
        .map(|g| {
            g["id"]
                .as_str()
                .and_then(|id| id.parse().ok())
                .context("a guild id")
        })
        .collect()
}

async fn kv_json(kv: &kv::Store, key: &str) -> anyhow::Result<Option<Value>> {
    Ok(match kv.get(key).await? {
        Some(bytes) => {
            Some(serde_json::from_slice(&bytes).with_context(|| format!("{key} is not JSON"))?)
        }
        None => None,
    })
}

fn id(value: &Value) -> u64 {
    value
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_default()
}

fn ids(values: &Value) -> BTreeSet<u64> {
    values
        .as_array()
        .map(|a| a.iter().map(id).collect())
        .unwrap_or_default()
}

/// Every difference between the cache and the simulator's state of one guild.
async fn guild_differences(
    kv: &kv::Store,
    reader: &CacheReader,
    sim: &SimProcess,
    guild_id: u64,
    differences: &mut Vec<String>,
) -> anyhow::Result<()> {
    let truth = sim.get_json(&format!("/_sim/guilds/{guild_id}")).await?;
    let mut diff = |what: String| differences.push(format!("guild {guild_id}: {what}"));
    let Some(guild) = kv_json(kv, &keys::guild(guild_id)).await? else {
        diff("not cached".into());
        return Ok(());
    };
    // Guild fields: everything the simulator sends but the arrays with their own keys. The
    // list is the test's own, not `shardyard_cache::schema::GUILD_ARRAYS`: a field the cache
    // drops by mistake must show here.
    let arrays = [
        "channels",
        "threads",
        "roles",
        "emojis",
        "members",
        "presences",
        "voice_states",
    ];
    for (field, value) in truth.as_object().context("a guild object")? {
        if arrays.contains(&field.as_str()) || field == "large" || field == "member_count" {
            continue;
        }
        if guild.get(field) != Some(value) {
            diff(format!(
                "{field}: cache {:?}, sim {value}",
                guild.get(field)
            ));
        }
    }
    let members = truth["members"].as_array().context("members")?;
    if guild["member_count"] != json!(members.len()) {
        diff(format!(
            "member_count {} != {}",
            guild["member_count"],
            members.len()
        ));
    }
    if guild["unavailable"] != json!(false) {
        diff("unavailable".into());
    }
    // Channels and threads.
    let mut sim_channels: BTreeMap<u64, Value> = BTreeMap::new();
    for channel in truth["channels"]
        .as_array()
        .into_iter()
        .chain(truth["threads"].as_array())
        .flatten()
    {
        sim_channels.insert(id(&channel["id"]), channel.clone());
    }
    let channel_ids = ids(&guild["channel_ids"]);
    if channel_ids != sim_channels.keys().copied().collect() {
        diff(format!(
            "channel_ids {channel_ids:?} != {:?}",
            sim_channels.keys()
        ));
    }
    for (channel_id, channel) in &sim_channels {
        let cached = kv_json(kv, &keys::channel(*channel_id)).await?;
        if cached.as_ref() != Some(channel) {
            diff(format!(
                "channel {channel_id}: cache {cached:?}, sim {channel}"
            ));
        }
    }
    // Roles: the index, the keys and every value.
    let sim_roles: BTreeMap<u64, &Value> = truth["roles"]
        .as_array()
        .context("roles")?
        .iter()
        .map(|r| (id(&r["id"]), r))
        .collect();
    let role_ids = ids(&guild["role_ids"]);
    if role_ids != sim_roles.keys().copied().collect() {
        diff(format!("role_ids {role_ids:?} != {:?}", sim_roles.keys()));
    }
    let role_keys: BTreeSet<String> = reader
        .keys(&keys::roles_of(guild_id))
        .await?
        .into_iter()
        .collect();
    let expected: BTreeSet<String> = sim_roles.keys().map(|r| keys::role(guild_id, *r)).collect();
    if role_keys != expected {
        diff(format!("role keys {role_keys:?} != {expected:?}"));
    }
    for (role_id, role) in &sim_roles {
        let cached = kv_json(kv, &keys::role(guild_id, *role_id)).await?;
        if cached.as_ref() != Some(*role) {
            diff(format!("role {role_id}: cache {cached:?}, sim {role}"));
        }
    }
    // Members: the keys, every value (roles read through the guild's roles, as documented:
    // Discord sends no member updates when a role is deleted), and their users.
    let member_ids: BTreeSet<u64> = reader.member_ids(guild_id).await?.into_iter().collect();
    let sim_member_ids: BTreeSet<u64> = members.iter().map(|m| id(&m["user"]["id"])).collect();
    if member_ids != sim_member_ids {
        diff(format!(
            "members: only in cache {:?}, only in sim {:?}",
            member_ids.difference(&sim_member_ids).collect::<Vec<_>>(),
            sim_member_ids.difference(&member_ids).collect::<Vec<_>>()
        ));
    }
    for member in members {
        let user_id = id(&member["user"]["id"]);
        let mut expected = member.clone();
        let user = expected
            .as_object_mut()
            .and_then(|m| m.remove("user"))
            .unwrap_or_default();
        expected["user_id"] = json!(user_id.to_string());
        let Some(mut cached) = kv_json(kv, &keys::member(guild_id, user_id)).await? else {
            continue; // reported above
        };
        let roles: Vec<Value> = cached["roles"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|r| role_ids.contains(&id(r)))
            .collect();
        cached["roles"] = Value::Array(roles);
        if cached != expected {
            diff(format!("member {user_id}: cache {cached}, sim {expected}"));
        }
        let cached_user = kv_json(kv, &keys::user(user_id)).await?;
        if cached_user.as_ref() != Some(&user) {
            diff(format!("user {user_id}: cache {cached_user:?}, sim {user}"));
        }
    }
    // Voice states (GUILD_CREATE's shape plus the guild id) and the emoji list.
    let sim_voice: BTreeMap<u64, &Value> = truth["voice_states"]
        .as_array()
        .context("voice_states")?
        .iter()
        .map(|v| (id(&v["user_id"]), v))
        .collect();
    let voice_keys: BTreeSet<String> = reader
        .keys(&keys::voice_states_of(guild_id))
        .await?
        .into_iter()
        .collect();
    let expected: BTreeSet<String> = sim_voice
        .keys()
        .map(|u| keys::voice_state(guild_id, *u))
        .collect();
    if voice_keys != expected {
        diff(format!("voice keys {voice_keys:?} != {expected:?}"));
    }
    for (user_id, state) in &sim_voice {
        let mut expected = (*state).clone();
        expected["guild_id"] = json!(guild_id.to_string());
        let cached = kv_json(kv, &keys::voice_state(guild_id, *user_id)).await?;
        if cached.as_ref() != Some(&expected) {
            diff(format!("voice {user_id}: cache {cached:?}, sim {expected}"));
        }
    }
    let emojis = kv_json(kv, &keys::emojis(guild_id)).await?;
    if emojis.as_ref() != Some(&truth["emojis"]) {
        diff(format!("emojis: cache {emojis:?}, sim {}", truth["emojis"]));
    }
    Ok(())
}

/// Every difference between the cache and the simulator's state of `guilds`, and of the
/// cache's channels with theirs (no channel outlives its deletion); the simulator's channel ids.
async fn cache_differences(
    store: &kv::Store,
    reader: &CacheReader,
    sim: &SimProcess,
    guilds: &[u64],
    differences: &mut Vec<String>,
) -> anyhow::Result<BTreeSet<u64>> {
    let mut sim_channels = BTreeSet::new();
    for guild in guilds {
        guild_differences(store, reader, sim, *guild, differences).await?;
        let truth = sim.get_json(&format!("/_sim/guilds/{guild}")).await?;
        sim_channels.extend(ids(&Value::Array(
            truth["channels"]
                .as_array()
                .into_iter()
                .chain(truth["threads"].as_array())
                .flatten()
                .map(|c| c["id"].clone())
                .collect(),
        )));
    }
    // No channel outlives its deletion.
    let cached_channels: BTreeSet<u64> = reader
        .keys(&keys::all_of(keys::cache_kind::CHANNEL))
        .await?
        .iter()
        .filter_map(|k| k.rsplit('.').next()?.parse().ok())
        .collect();
    if cached_channels != sim_channels {
        differences.push(format!(
            "channels only in cache {:?}, only in sim {:?}",
            cached_channels
                .difference(&sim_channels)
                .collect::<Vec<_>>(),
            sim_channels
                .difference(&cached_channels)
                .collect::<Vec<_>>()
        ));
    }
    Ok(sim_channels)
}

/// nats-server, a simulator of `guilds` guilds with 15 members each (no traffic yet), and one
/// READY gateway shard of bot `name` with the intents the cache needs.
async fn storm_setup(
    guilds: u32,
    name: &str,
) -> anyhow::Result<(NatsServer, SimProcess, BotKey, GatewayProcess)> {
    let nats = NatsServer::start().await?;
    let sim = SimProcess::start(SimArgs {
        guilds,
        events_per_second: 0.0,
        extra: vec!["--members-per-guild".into(), "15".into()],
        ..SimArgs::default()
    })
    .await?;
    let bot = BotKey::local(name)?;
    let gateway = GatewayProcess::start_with_intents(
        &sim,
        &nats,
        bot.as_str(),
        1,
        0..1,
        "GUILDS,GUILD_MEMBERS,GUILD_VOICE_STATES",
        &["--large-threshold", "250"],
    )
    .await?;
    gateway.wait_ready(Duration::from_secs(30)).await?;
    Ok((nats, sim, bot, gateway))
}

#[tokio::test]
async fn after_a_storm_and_a_cache_restart_the_bucket_equals_the_simulator() -> anyhow::Result<()> {
    let (nats, sim, bot, _gateway) = storm_setup(6, "cachestorm").await?;
    let js = nats.jetstream().await?;
    let mut cache = CacheProcess::start(&nats, bot.as_str(), &["--ack-wait", "2"]).await?;
    cache.wait_ready(Duration::from_secs(30)).await?;

    // A storm: about 9% of the simulator's traffic is members, channels, roles and voice
    // changing (the rest is messages, typing and presences, which these intents leave out).
    let before = sim_guild_ids(&sim).await?;
    sim.post_json("/_sim/traffic", &json!({"events_per_second": 2500}))
        .await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    // A crash mid-event, then a graceful stop, while the storm goes on; meanwhile the bot is
    // removed from a guild and added to two more.
    cache.process().kill_9()?;
    sim.post_json("/_sim/guilds", &json!({"count": 5})).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut cache = CacheProcess::start(&nats, bot.as_str(), &["--ack-wait", "2"]).await?;
    cache.wait_ready(Duration::from_secs(30)).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let status = cache.process().terminate(Duration::from_secs(10)).await?;
    anyhow::ensure!(
        status.success(),
        "SIGTERM: {status}\n{}",
        cache.log_report()
    );
    sim.post_json("/_sim/guilds", &json!({"count": 7})).await?;
    let cache = CacheProcess::start(&nats, bot.as_str(), &["--ack-wait", "2"]).await?;
    cache.wait_ready(Duration::from_secs(30)).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    sim.post_json("/_sim/traffic", &json!({"events_per_second": 0}))
        .await?;

    wait_until_stream_matches(&js, &sim, "bot", &bot, 1, Duration::from_secs(30)).await?;
    wait_drained(&js, &bot, &cache).await?;

    let stats = sim.stats().await?;
    let by_type = &stats["shards"][0]["by_type"];
    for structural in [
        "GUILD_MEMBER_ADD",
        "GUILD_MEMBER_REMOVE",
        "CHANNEL_DELETE",
        "GUILD_ROLE_DELETE",
        "VOICE_STATE_UPDATE",
        "GUILD_DELETE",
        "THREAD_CREATE",
        "THREAD_UPDATE",
        "THREAD_DELETE",
    ] {
        anyhow::ensure!(
            by_type[structural].as_u64().unwrap_or(0) > 0,
            "the storm had no {structural}: {by_type}"
        );
    }
    let store = js.get_key_value(bot.cache_bucket()).await?;
    let reader = CacheReader::new(store.clone());
    let guilds = sim_guild_ids(&sim).await?;
    anyhow::ensure!(guilds.len() == 7, "{guilds:?}");
    let mut differences = Vec::new();
    // The guild the bot was removed from left nothing behind but its members' users.
    let removed: Vec<u64> = before
        .iter()
        .copied()
        .filter(|g| !guilds.contains(g))
        .collect();
    anyhow::ensure!(removed.len() == 1, "removed {removed:?}");
    let all_keys = reader.keys(">").await?;
    let left: Vec<&String> = all_keys
        .iter()
        .filter(|k| {
            keys::kind_of(k) != keys::cache_kind::USER && k.contains(&removed[0].to_string())
        })
        .collect();
    if !left.is_empty() {
        differences.push(format!("removed guild {}: left {left:?}", removed[0]));
    }
    let sim_channels = cache_differences(&store, &reader, &sim, &guilds, &mut differences).await?;
    anyhow::ensure!(
        differences.is_empty(),
        "{} differences:\n{}\n{}",
        differences.len(),
        differences.join("\n"),
        cache.log_report()
    );
    assert_eq!(cache.metric("shardyard_cache_bad_events_total").await?, 0.0);
    // The last instance resumed where the one before stopped: of the GUILD_CREATEs it saw only
    // the two of the guilds added while no cache ran, not the first six again.
    assert_eq!(
        cache
            .metric("shardyard_cache_events_applied_total{event=\"GUILD_CREATE\"}")
            .await?,
        2.0,
        "{}",
        cache.log_report()
    );
    assert!(
        cache
            .metric("shardyard_cache_events_applied_total{event=\"GUILD_MEMBER_ADD\"}")
            .await?
            > 0.0
    );

    // The HTTP API answers what the bucket holds.
    let guild = guilds[0];
    let (status, body) = cache.api_get(&format!("/guilds/{guild}")).await?;
    assert_eq!(status, 200);
    assert_eq!(
        Some(body.clone()),
        kv_json(&store, &keys::guild(guild)).await?
    );
    let (status, channels) = cache.api_get(&format!("/guilds/{guild}/channels")).await?;
    assert_eq!(status, 200);
    let mut expected = Vec::new();
    for channel in body["channel_ids"].as_array().context("channel_ids")? {
        expected.push(
            kv_json(&store, &keys::channel(id(channel)))
                .await?
                .context("a channel")?,
        );
    }
    assert_eq!(channels, Value::Array(expected));
    let (status, roles) = cache.api_get(&format!("/guilds/{guild}/roles")).await?;
    assert_eq!(status, 200);
    assert_eq!(
        ids(&Value::Array(
            roles
                .as_array()
                .context("roles")?
                .iter()
                .map(|r| r["id"].clone())
                .collect()
        )),
        ids(&body["role_ids"])
    );
    let (status, member_ids) = cache.api_get(&format!("/guilds/{guild}/members")).await?;
    assert_eq!(status, 200);
    let user = id(&member_ids[0]);
    let (status, member) = cache
        .api_get(&format!("/guilds/{guild}/members/{user}"))
        .await?;
    assert_eq!(status, 200);
    assert_eq!(
        Some(member),
        kv_json(&store, &keys::member(guild, user)).await?
    );
    let (status, user_value) = cache.api_get(&format!("/users/{user}")).await?;
    assert_eq!(status, 200);
    assert_eq!(user_value["id"], json!(user.to_string()));
    let (status, counts) = cache.api_get("/counts").await?;
    assert_eq!(status, 200);
    assert_eq!(counts["guilds"], 7);
    assert_eq!(counts["channels"], json!(sim_channels.len()));
    let (status, error) = cache.api_get("/guilds/12345").await?;
    assert_eq!((status, error["error"].is_string()), (404, true));
    let (status, error) = cache.api_get("/guilds/general").await?;
    assert_eq!((status, error["error"].is_string()), (400, true));
    let (status, _) = cache
        .api_get(&format!("/guilds/{guild}/members/-1"))
        .await?;
    assert_eq!(status, 400);
    Ok(())
}

async fn publish(
    js: &jetstream::Context,
    bot: &BotKey,
    seq: u64,
    event: &str,
    payload: &str,
) -> anyhow::Result<()> {
    let mut h = async_nats::HeaderMap::new();
    h.insert(headers::MSG_ID, format!("test:{seq}").as_str());
    h.insert(headers::SHARD, "0/1");
    h.insert(headers::SEQ, seq.to_string().as_str());
    h.insert(headers::EVENT, event);
    h.insert(headers::RECEIVED_AT, "0");
    js.publish_with_headers(bot.event_subject(0, event), h, payload.to_owned().into())
        .await?
        .await?;
    Ok(())
}

#[tokio::test]
async fn malformed_payloads_are_counted_and_skipped_and_later_events_still_apply()
-> anyhow::Result<()> {
    let nats = NatsServer::start().await?;
    let bot = BotKey::local("badinput")?;
    // The cache starts before the stream exists: alive, not ready, waiting.
    let mut cache = CacheProcess::start(&nats, bot.as_str(), &[]).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let not_ready = cache
        .admin_get("/readyz")
        .await
        .expect_err("ready without a stream");
    assert!(not_ready.to_string().contains("503"), "{not_ready}");
    let js = nats.jetstream().await?;
    create_event_stream(&js, &bot).await?;
    cache.wait_ready(Duration::from_secs(30)).await?;

    publish(
        &js,
        &bot,
        1,
        "GUILD_CREATE",
        r#"{"id": true, "name": "broken"}"#,
    )
    .await?;
    publish(&js, &bot, 2, "CHANNEL_CREATE", "not json at all").await?;
    publish(&js, &bot, 3, "MESSAGE_CREATE", "not the cache's business").await?;
    publish(
        &js,
        &bot,
        4,
        "GUILD_CREATE",
        r#"{"id": "42", "name": "fine", "member_count": 0, "channels": [], "roles": [], "members": []}"#,
    )
    .await?;
    publish(
        &js,
        &bot,
        5,
        "CHANNEL_CREATE",
        r#"{"id": "43", "type": 0, "guild_id": "42", "name": "general"}"#,
    )
    .await?;
    wait_drained(&js, &bot, &cache).await?;
    let (status, guild) = cache.api_get("/guilds/42").await?;
    assert_eq!(status, 200, "{guild}\n{}", cache.log_report());
    assert_eq!(guild["channel_ids"], json!(["43"]));
    assert_eq!(cache.metric("shardyard_cache_bad_events_total").await?, 2.0);
    assert_eq!(
        cache
            .metric("shardyard_cache_apply_errors_total{kind=\"malformed\"}")
            .await?,
        2.0
    );
    assert_eq!(
        cache
            .metric("shardyard_cache_events_applied_total{event=\"GUILD_CREATE\"}")
            .await?,
        1.0
    );
    assert_eq!(
        cache
            .metric("shardyard_cache_events_applied_total{event=\"CHANNEL_CREATE\"}")
            .await?,
        1.0
    );
    assert!(
        cache
            .metric("shardyard_cache_last_applied_sequence")
            .await?
            >= 5.0
    );
    let log = cache.process().log();
    assert!(log.contains("does not match its type"), "{log}");
    assert!(!log.contains("panicked"), "{log}");
    let status = cache.process().terminate(Duration::from_secs(10)).await?;
    assert!(
        status.success(),
        "SIGTERM: {status}\n{}",
        cache.log_report()
    );
    Ok(())
}

#[tokio::test]
async fn a_nats_crash_while_applying_a_backlog_is_waited_out_and_the_bucket_still_converges()
-> anyhow::Result<()> {
    let (mut nats, sim, bot, _gateway) = storm_setup(4, "cachenats").await?;
    // A backlog while no cache runs (NATS stays up meanwhile: the gateway's own behaviour
    // across a NATS restart is tested in tests/gateway.rs).
    sim.post_json("/_sim/traffic", &json!({"events_per_second": 3000}))
        .await?;
    tokio::time::sleep(Duration::from_secs(6)).await;
    sim.post_json("/_sim/traffic", &json!({"events_per_second": 0}))
        .await?;
    let js = nats.jetstream().await?;
    wait_until_stream_matches(&js, &sim, "bot", &bot, 1, Duration::from_secs(30)).await?;
    let mut cache = CacheProcess::start(&nats, bot.as_str(), &["--ack-wait", "2"]).await?;
    cache.wait_ready(Duration::from_secs(30)).await?;
    // NATS crashes, and is away for 2 s, while the cache works through the backlog.
    let stream = js.get_stream(bot.stream()).await?;
    let info = stream.consumer_info(CACHE_CONSUMER).await?;
    anyhow::ensure!(
        info.num_pending > 100,
        "the backlog was applied before NATS restarted ({} pending); make it bigger",
        info.num_pending
    );
    nats.kill_9()?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    nats.start_again().await?;
    let js = nats.jetstream().await?;
    wait_drained(&js, &bot, &cache).await?;
    anyhow::ensure!(
        cache.process().is_running(),
        "the cache exited\n{}",
        cache.log_report()
    );
    cache.wait_ready(Duration::from_secs(30)).await?;
    let store = js.get_key_value(bot.cache_bucket()).await?;
    let reader = CacheReader::new(store.clone());
    let guilds = sim_guild_ids(&sim).await?;
    let mut differences = Vec::new();
    cache_differences(&store, &reader, &sim, &guilds, &mut differences).await?;
    anyhow::ensure!(
        differences.is_empty(),
        "{} differences:\n{}\n{}",
        differences.len(),
        differences.join("\n"),
        cache.log_report()
    );
    Ok(())
}
