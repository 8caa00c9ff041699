//! The simulated gateway behaves like Discord's: handshake, identify rules, dispatch, resume with
//! replay, commands and their limits, and every injected fault.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{Client, Frame, config, http_get, http_post, start};
use serde_json::{Value, json};
use shardyard_protocol::shard_for_guild;

const INTENTS: u64 = 1 | (1 << 9) | (1 << 15); // GUILDS | GUILD_MESSAGES | MESSAGE_CONTENT

fn base(sim: &shardyard_sim::Simulator) -> String {
    format!("http://{}", sim.addr())
}

fn gateway(sim: &shardyard_sim::Simulator) -> String {
    format!("ws://{}/gateway", sim.addr())
}

async fn shard_stats(base: &str, id: u32, total: u32) -> Value {
    let stats = http_get(base, "/_sim/stats").await;
    stats["shards"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == id && s["total"] == total)
        .cloned()
        .unwrap_or(Value::Null)
}

async fn violations(base: &str) -> Vec<Value> {
    http_get(base, "/_sim/stats").await["violations"]
        .as_array()
        .unwrap()
        .clone()
}

async fn identified(
    sim: &shardyard_sim::Simulator,
    zlib: bool,
    shard: [u32; 2],
) -> (Client, Value) {
    let mut client = Client::connect(&gateway(sim), zlib).await;
    let hello = client.next().await;
    assert_eq!(hello["op"], 10);
    client.identify(shard, INTENTS).await;
    let (ready, _) = client.until_dispatch("READY").await;
    for _ in 0..ready["d"]["guilds"].as_array().unwrap().len() {
        assert_eq!(client.next().await["t"], "GUILD_CREATE");
    }
    (client, ready)
}

#[tokio::test]
async fn identify_gets_ready_then_a_guild_create_per_guild_of_the_shard() {
    let sim = start(config(40)).await;
    let guilds: Vec<u64> = sim.state().bots[0].world().guild_ids().to_vec();
    for zlib in [true, false] {
        let mut client = Client::connect(&gateway(&sim), zlib).await;
        let hello = client.next().await;
        assert_eq!(hello["op"], 10);
        assert_eq!(hello["d"]["heartbeat_interval"], 41_250);
        let shard = if zlib { 1 } else { 2 };
        client.identify([shard, 4], INTENTS).await;
        let ready = client.next().await;
        assert_eq!(ready["t"], "READY");
        assert_eq!(ready["s"], 1);
        assert_eq!(ready["d"]["v"], 10);
        assert_eq!(ready["d"]["shard"], json!([shard, 4]));
        assert_eq!(
            ready["d"]["resume_gateway_url"],
            format!("ws://{}/resume", sim.addr())
        );
        let expected: BTreeSet<String> = guilds
            .iter()
            .filter(|g| shard_for_guild(**g, 4) == shard)
            .map(|g| g.to_string())
            .collect();
        let listed: BTreeSet<String> = ready["d"]["guilds"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| g["id"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(
            listed, expected,
            "READY must list exactly the shard's guilds"
        );
        let mut created = BTreeSet::new();
        for i in 0..expected.len() {
            let create = client.next().await;
            assert_eq!(create["t"], "GUILD_CREATE");
            assert_eq!(create["s"], i as u64 + 2);
            created.insert(create["d"]["id"].as_str().unwrap().to_owned());
        }
        assert_eq!(created, expected);
    }
    let stats = shard_stats(&base(&sim), 1, 4).await;
    assert_eq!(stats["identifies"], 1);
    assert_eq!(stats["sessions"], 1);
    sim.shutdown().await;
}

#[tokio::test]
async fn heartbeats_are_acknowledged_and_server_can_request_one() {
    let sim = start(config(2)).await;
    let (mut client, _) = identified(&sim, true, [0, 1]).await;
    client.send(json!({"op": 1, "d": client.seq})).await;
    loop {
        let v = client.next().await;
        if v["op"] == 11 {
            break;
        }
    }
    let answer = http_post(&base(&sim), "/_sim/shards/0/request-heartbeat", json!({})).await;
    assert_eq!(answer["connections"], 1);
    loop {
        let v = client.next().await;
        if v["op"] == 1 {
            break;
        }
    }
    sim.shutdown().await;
}

#[tokio::test]
async fn missing_heartbeats_close_the_connection() {
    let mut cfg = config(1);
    cfg.heartbeat_interval_ms = 200;
    let sim = start(cfg).await;
    let (mut client, _) = identified(&sim, false, [0, 1]).await;
    assert_eq!(client.expect_close().await, Some(4009));
    sim.shutdown().await;
}

#[tokio::test]
async fn identify_errors_close_with_discords_codes() {
    let mut cfg = config(3);
    cfg.bots[0].privileged_intents = shardyard_protocol::Intents::EMPTY;
    let sim = start(cfg).await;
    let url = gateway(&sim);
    let cases: Vec<(Value, u16)> = vec![
        (
            json!({"token": "wrong", "intents": 1, "properties": {}}),
            4004,
        ),
        (
            json!({"token": common::TOKEN, "intents": 1, "shard": [4, 4], "properties": {}}),
            4010,
        ),
        (
            json!({"token": common::TOKEN, "intents": 1, "shard": [0, 0], "properties": {}}),
            4010,
        ),
        (
            json!({"token": common::TOKEN, "intents": 1u64 << 40, "properties": {}}),
            4013,
        ),
        (json!({"token": common::TOKEN, "properties": {}}), 4013),
        (
            json!({"token": common::TOKEN, "intents": 1 << 15, "properties": {}}),
            4014,
        ),
        (json!({"token": common::TOKEN}), 4002),
    ];
    for (identify, code) in cases {
        let mut client = Client::connect(&url, false).await;
        client.next().await;
        client.send(json!({"op": 2, "d": identify})).await;
        assert_eq!(client.expect_close().await, Some(code), "{identify}");
    }
    // Before identifying, commands are refused; unknown opcodes too.
    let mut client = Client::connect(&url, false).await;
    client.next().await;
    client.send(json!({"op": 3, "d": {"since": null, "activities": [], "status": "online", "afk": false}})).await;
    assert_eq!(client.expect_close().await, Some(4003));
    let mut client = Client::connect(&url, false).await;
    client.next().await;
    client.send(json!({"op": 42, "d": null})).await;
    assert_eq!(client.expect_close().await, Some(4001));
    let mut client = Client::connect(&url, false).await;
    client.next().await;
    client.send_text("{not json".into()).await;
    assert_eq!(client.expect_close().await, Some(4002));
    // Wrong API version.
    let mut client = Client::connect_raw(&format!("{url}?v=6&encoding=json")).await;
    assert_eq!(client.expect_close().await, Some(4012));
    sim.shutdown().await;
}

#[tokio::test]
async fn too_many_guilds_on_one_shard_requires_sharding() {
    let mut cfg = config(2501);
    cfg.bots[0].members_per_guild = 1;
    let sim = start(cfg).await;
    let mut client = Client::connect(&gateway(&sim), false).await;
    client.next().await;
    client.identify([0, 1], 1).await;
    assert_eq!(client.expect_close().await, Some(4011));
    sim.shutdown().await;
}

#[tokio::test]
async fn identifying_faster_than_max_concurrency_is_refused_and_recorded() {
    let mut cfg = config(4);
    cfg.bots[0].max_concurrency = 2;
    let sim = start(cfg).await;
    let b = base(&sim);
    let before = http_get(&b, "/api/v10/gateway/bot").await;
    // Shards 0 and 1 are in different buckets: both fine at once.
    let (_c0, _) = identified(&sim, false, [0, 4]).await;
    let (_c1, _) = identified(&sim, false, [1, 4]).await;
    // Shard 2 shares bucket 0 with shard 0: refused with op 9 false.
    let mut c2 = Client::connect(&gateway(&sim), false).await;
    c2.next().await;
    c2.identify([2, 4], INTENTS).await;
    let invalid = c2.next().await;
    assert_eq!(invalid["op"], 9);
    assert_eq!(invalid["d"], false);
    let v = violations(&b).await;
    assert_eq!(v.len(), 1, "{v:?}");
    assert_eq!(v[0]["kind"], "identify_too_fast");
    let stats = http_get(&b, "/_sim/stats").await;
    let stamps = &stats["bots"][0]["identify_timestamps"];
    assert_eq!(stamps["0"].as_array().unwrap().len(), 2);
    assert_eq!(stamps["1"].as_array().unwrap().len(), 1);
    {
        let after = http_get(&b, "/api/v10/gateway/bot").await;
        let used = before["session_start_limit"]["remaining"].as_u64().unwrap()
            - after["session_start_limit"]["remaining"].as_u64().unwrap();
        assert_eq!(used, 2, "only successful identifies spend the budget");
    }
    sim.shutdown().await;
}

#[tokio::test]
async fn daily_session_budget_is_enforced() {
    let mut cfg = config(1);
    cfg.bots[0].session_start_total = 1;
    cfg.bots[0].max_concurrency = 4;
    let sim = start(cfg).await;
    let (_c0, _) = identified(&sim, false, [0, 4]).await;
    let mut c1 = Client::connect(&gateway(&sim), false).await;
    c1.next().await;
    c1.identify([1, 4], INTENTS).await;
    let invalid = c1.next().await;
    assert_eq!(invalid["op"], 9);
    let v = violations(&base(&sim)).await;
    assert_eq!(v[0]["kind"], "session_start_limit_exhausted");
    sim.shutdown().await;
}

#[tokio::test]
async fn traffic_reaches_the_right_shard_and_is_counted_once() {
    let mut cfg = config(30);
    cfg.bots[0].events_per_second = 2000.0;
    let sim = start(cfg).await;
    let b = base(&sim);
    let (mut c0, _) = identified(&sim, true, [0, 2]).await;
    let (mut c1, _) = identified(&sim, false, [1, 2]).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    http_post(&b, "/_sim/traffic", json!({"events_per_second": 0})).await;
    let world_guilds: Vec<u64> = sim.state().bots[0].world().guild_ids().to_vec();
    for (shard, client) in [(0u32, &mut c0), (1, &mut c1)] {
        let mut seqs = Vec::new();
        let mut messages = 0;
        while let Some(Frame::Payload(v)) = client.next_within(Duration::from_millis(300)).await {
            if v["op"] != 0 {
                continue;
            }
            seqs.push(v["s"].as_u64().unwrap());
            if let Some(guild) = v["d"]["guild_id"].as_str() {
                let guild: u64 = guild.parse().unwrap();
                assert!(world_guilds.contains(&guild) || v["t"] == "GUILD_CREATE");
                assert_eq!(
                    shard_for_guild(guild, 2),
                    shard,
                    "{} sent to the wrong shard",
                    v["t"]
                );
            }
            if v["t"] == "MESSAGE_CREATE" {
                messages += 1;
                assert!(v["d"]["content"].as_str().is_some());
            }
        }
        assert!(messages > 50, "shard {shard}: only {messages} messages");
        let stats = shard_stats(&b, shard, 2).await;
        // READY and GUILD_CREATEs came before the loop above.
        assert_eq!(
            stats["dispatched"].as_u64().unwrap(),
            client.seq,
            "shard {shard}"
        );
        assert_eq!(stats["replayed"], 0);
        assert_eq!(stats["last_seq"].as_u64().unwrap(), client.seq);
        let mut sorted = seqs.clone();
        sorted.dedup();
        assert_eq!(seqs, sorted, "sequence numbers in order without repeats");
        assert_eq!(
            *seqs.last().unwrap() - seqs[0] + 1,
            seqs.len() as u64,
            "no gaps"
        );
    }
    sim.shutdown().await;
}

#[tokio::test]
async fn message_content_is_empty_without_the_intent() {
    let sim = start(config(1)).await;
    let b = base(&sim);
    let mut client = Client::connect(&gateway(&sim), false).await;
    client.next().await;
    client.identify([0, 1], 1 | (1 << 9)).await;
    client.until_dispatch("READY").await;
    let said = http_post(&b, "/_sim/say", json!({"content": "secret words"})).await;
    let (msg, _) = client.until_dispatch("MESSAGE_CREATE").await;
    assert_eq!(msg["d"]["content"], "");
    assert_eq!(msg["d"]["channel_id"], said["channel_id"]);
    sim.shutdown().await;
}

#[tokio::test]
async fn say_posts_a_message_on_the_owning_shard() {
    let sim = start(config(20)).await;
    let b = base(&sim);
    let guild = sim.state().bots[0].world().guild_ids()[3];
    let shard = shard_for_guild(guild, 2);
    let (mut owner, _) = identified(&sim, false, [shard, 2]).await;
    let (mut other, _) = identified(&sim, false, [1 - shard, 2]).await;
    let said = http_post(
        &b,
        "/_sim/say",
        json!({"guild_id": guild.to_string(), "content": "!ping"}),
    )
    .await;
    assert_eq!(said["guild_id"], guild.to_string());
    let channel = said["channel_id"].as_str().unwrap().to_owned();
    let (msg, _) = owner.until_dispatch("MESSAGE_CREATE").await;
    assert_eq!(msg["d"]["content"], "!ping");
    assert_eq!(msg["d"]["channel_id"], channel);
    assert_eq!(msg["d"]["id"], said["message_id"]);
    assert!(
        msg["d"]["author"]["bot"].is_null(),
        "a user, not the bot, posts"
    );
    while let Some(Frame::Payload(v)) = other.next_within(Duration::from_millis(200)).await {
        assert_ne!(v["t"], "MESSAGE_CREATE", "the other shard must not see it");
    }
    // Explicit channel.
    let said = http_post(
        &b,
        "/_sim/say",
        json!({"channel_id": channel, "content": "again"}),
    )
    .await;
    assert_eq!(said["channel_id"], channel);
    let bad = http_post(&b, "/_sim/say", json!({"channel_id": "1", "content": "x"})).await;
    assert_eq!(bad["_status"], 404);
    sim.shutdown().await;
}

/// Discord dispatches an event to every live session whose shard owns its guild, whatever its
/// shard total: during a blue/green reshard both generations see every event (shardyard's
/// hand-over relies on it). One guild, sessions of totals 1, 2 and 4: the owners of each total
/// get the same payload; the others nothing.
#[tokio::test]
async fn every_total_s_owning_session_gets_the_event_during_a_reshard() {
    let sim = start(config(20)).await;
    let b = base(&sim);
    let guild = sim.state().bots[0].world().guild_ids()[5];
    let owner2 = shard_for_guild(guild, 2);
    let owner4 = shard_for_guild(guild, 4);
    // Identifies of one concurrency bucket (shard % 16 here) are 5 s apart, as Discord wants.
    let mut used = BTreeSet::new();
    let mut connect = async |shard: [u32; 2]| {
        if !used.insert(shard[0] % 16) {
            tokio::time::sleep(Duration::from_millis(5_100)).await;
            used = BTreeSet::from([shard[0] % 16]);
        }
        identified(&sim, false, shard).await.0
    };
    let mut one = connect([0, 1]).await;
    let mut two = connect([owner2, 2]).await;
    let mut two_other = connect([1 - owner2, 2]).await;
    let mut four = connect([owner4, 4]).await;
    let said = http_post(
        &b,
        "/_sim/say",
        json!({"guild_id": guild.to_string(), "content": "both generations"}),
    )
    .await;
    let mut payloads = Vec::new();
    for client in [&mut one, &mut two, &mut four] {
        let (message, _) = client.until_dispatch("MESSAGE_CREATE").await;
        assert_eq!(message["d"]["id"], said["message_id"]);
        payloads.push(message["d"].clone());
    }
    assert!(
        payloads.windows(2).all(|w| w[0] == w[1]),
        "the same payload: {payloads:?}"
    );
    while let Some(Frame::Payload(v)) = two_other.next_within(Duration::from_millis(200)).await {
        assert_ne!(
            v["t"], "MESSAGE_CREATE",
            "a shard that does not own the guild"
        );
    }
    assert!(
        violations(&b).await.is_empty(),
        "{:?}",
        violations(&b).await
    );
    sim.shutdown().await;
}

async fn resume_after(sim: &shardyard_sim::Simulator, zlib: bool, disconnect: &str) {
    let b = base(sim);
    let (mut client, ready) = identified(sim, zlib, [0, 1]).await;
    let session_id = ready["d"]["session_id"].as_str().unwrap().to_owned();
    for i in 0..5 {
        http_post(&b, "/_sim/say", json!({"content": format!("before {i}")})).await;
    }
    for _ in 0..5 {
        client.until_dispatch("MESSAGE_CREATE").await;
    }
    let seen = client.seq;
    match disconnect {
        "client-drop" => client.drop_tcp(),
        "client-close" => client.close(4000).await,
        "server-drop" => {
            http_post(&b, "/_sim/shards/0/drop", json!({})).await;
            assert!(matches!(
                client.next_within(Duration::from_secs(2)).await,
                Some(Frame::Closed(_))
            ));
        }
        "reconnect" => {
            http_post(&b, "/_sim/shards/0/reconnect", json!({})).await;
            let op7 = client.next().await;
            assert_eq!(op7["op"], 7);
            // Events after RECONNECT wait for the resume.
            http_post(&b, "/_sim/say", json!({"content": "during reconnect"})).await;
            assert!(matches!(
                client.next_within(Duration::from_millis(200)).await,
                None | Some(Frame::Closed(_))
            ));
            client.close(4000).await;
        }
        other => unreachable!("{other}"),
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let missed = 7;
    for i in 0..missed {
        http_post(&b, "/_sim/say", json!({"content": format!("missed {i}")})).await;
    }
    let mut client =
        Client::connect(ready["d"]["resume_gateway_url"].as_str().unwrap(), zlib).await;
    client.next().await;
    client.resume(&session_id, seen).await;
    let (resumed, replayed) = client.until_dispatch("RESUMED").await;
    let contents: Vec<&str> = replayed
        .iter()
        .filter(|v| v["t"] == "MESSAGE_CREATE")
        .map(|v| v["d"]["content"].as_str().unwrap())
        .collect();
    let mut expected: Vec<String> = Vec::new();
    if disconnect == "reconnect" {
        expected.push("during reconnect".into());
    }
    expected.extend((0..missed).map(|i| format!("missed {i}")));
    assert_eq!(
        contents, expected,
        "every missed event replayed, in order, before RESUMED"
    );
    let seqs: Vec<u64> = replayed.iter().map(|v| v["s"].as_u64().unwrap()).collect();
    assert_eq!(
        seqs,
        (seen + 1..seen + 1 + seqs.len() as u64).collect::<Vec<_>>()
    );
    assert_eq!(resumed["s"].as_u64().unwrap(), seen + seqs.len() as u64 + 1);
    // Live traffic continues on the resumed connection.
    http_post(&b, "/_sim/say", json!({"content": "after"})).await;
    let (after, _) = client.until_dispatch("MESSAGE_CREATE").await;
    assert_eq!(after["d"]["content"], "after");
    let stats = shard_stats(&b, 0, 1).await;
    assert_eq!(stats["resumes"], 1);
    assert_eq!(stats["identifies"], 1);
    assert_eq!(
        stats["dispatched"].as_u64().unwrap(),
        client.seq,
        "each event counted once"
    );
    assert!(violations(&b).await.is_empty());
}

#[tokio::test]
async fn resume_replays_missed_events_after_a_client_drop() {
    let sim = start(config(2)).await;
    resume_after(&sim, true, "client-drop").await;
    sim.shutdown().await;
}

#[tokio::test]
async fn resume_replays_missed_events_after_a_resumable_client_close() {
    let sim = start(config(2)).await;
    resume_after(&sim, false, "client-close").await;
    sim.shutdown().await;
}

#[tokio::test]
async fn resume_replays_missed_events_after_the_server_drops_tcp() {
    let sim = start(config(2)).await;
    resume_after(&sim, true, "server-drop").await;
    sim.shutdown().await;
}

#[tokio::test]
async fn reconnect_holds_events_for_the_resume() {
    let sim = start(config(2)).await;
    resume_after(&sim, true, "reconnect").await;
    sim.shutdown().await;
}

#[tokio::test]
async fn replaying_an_already_sent_event_counts_as_replayed_not_dispatched() {
    let sim = start(config(1)).await;
    let b = base(&sim);
    let (mut client, ready) = identified(&sim, false, [0, 1]).await;
    let session_id = ready["d"]["session_id"].as_str().unwrap().to_owned();
    http_post(&b, "/_sim/say", json!({"content": "one"})).await;
    client.until_dispatch("MESSAGE_CREATE").await;
    let total = client.seq;
    client.drop_tcp();
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Resume from READY: everything after it is sent again.
    let mut client = Client::connect(&format!("ws://{}/resume", sim.addr()), false).await;
    client.next().await;
    client.resume(&session_id, 1).await;
    let (_, replayed) = client.until_dispatch("RESUMED").await;
    assert_eq!(replayed.len() as u64, total - 1);
    let stats = shard_stats(&b, 0, 1).await;
    assert_eq!(stats["replayed"].as_u64().unwrap(), total - 1);
    assert_eq!(
        stats["dispatched"].as_u64().unwrap(),
        total + 1,
        "only RESUMED is new"
    );
    sim.shutdown().await;
}

/// A client that dies in the middle of a large batch (READY's burst of GUILD_CREATEs) has
/// received part of it. The simulator counts what the socket accepted, not only whole batches,
/// so the client resumes from the last event it got, and the record holds every event it got.
#[tokio::test]
async fn a_client_dropped_inside_a_burst_resumes_from_what_it_received() {
    let mut config = config(600);
    config.bots[0].members_per_guild = 50;
    let sim = start(config).await;
    let b = base(&sim);
    let mut client = Client::connect(&gateway(&sim), false).await;
    client.next().await;
    client.identify([0, 1], INTENTS).await;
    let (ready, _) = client.until_dispatch("READY").await;
    let session_id = ready["d"]["session_id"].as_str().unwrap().to_owned();
    for _ in 0..20 {
        assert_eq!(client.next().await["t"], "GUILD_CREATE");
    }
    // The simulator fills the socket's buffers and waits inside a batch; then the client dies.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let received = client.seq;
    client.drop_tcp();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stats = shard_stats(&b, 0, 1).await;
    assert!(
        stats["dispatched"].as_u64().unwrap() >= received,
        "the record holds every event the client received: {stats}"
    );

    let mut client =
        Client::connect(ready["d"]["resume_gateway_url"].as_str().unwrap(), false).await;
    client.next().await;
    client.resume(&session_id, received).await;
    let first = client.next().await;
    assert_eq!(first["op"], 0, "resumed, not invalidated: {first}");
    assert_eq!(first["s"].as_u64(), Some(received + 1), "{first}");
    let (_, replayed) = client.until_dispatch("RESUMED").await;
    assert_eq!(
        1 + replayed.len(),
        600 - 20,
        "the rest of the burst is replayed before RESUMED"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn unknown_or_ended_sessions_cannot_resume() {
    let sim = start(config(1)).await;
    let (client, ready) = identified(&sim, false, [0, 1]).await;
    let session_id = ready["d"]["session_id"].as_str().unwrap().to_owned();
    // 1000 ends the session.
    client.close(1000).await;
    for id in [session_id.as_str(), "no-such-session"] {
        let mut c = Client::connect(&format!("ws://{}/resume", sim.addr()), false).await;
        c.next().await;
        c.resume(id, 1).await;
        let answer = c.next().await;
        assert_eq!(answer["op"], 9, "{id}");
        assert_eq!(answer["d"], false);
    }
    sim.shutdown().await;
}

#[tokio::test]
async fn resuming_past_what_was_sent_is_an_invalid_seq() {
    let sim = start(config(1)).await;
    let (client, ready) = identified(&sim, false, [0, 1]).await;
    let session_id = ready["d"]["session_id"].as_str().unwrap().to_owned();
    client.drop_tcp();
    let mut c = Client::connect(&format!("ws://{}/resume", sim.addr()), false).await;
    c.next().await;
    c.resume(&session_id, 10_000).await;
    assert_eq!(c.expect_close().await, Some(4007));
    sim.shutdown().await;
}

#[tokio::test]
async fn resume_on_the_wrong_url_is_recorded() {
    let sim = start(config(1)).await;
    let (client, ready) = identified(&sim, false, [0, 1]).await;
    let session_id = ready["d"]["session_id"].as_str().unwrap().to_owned();
    let seq = client.seq;
    client.drop_tcp();
    let mut c = Client::connect(&gateway(&sim), false).await;
    c.next().await;
    c.resume(&session_id, seq).await;
    c.until_dispatch("RESUMED").await;
    let v = violations(&base(&sim)).await;
    assert_eq!(v[0]["kind"], "resume_not_on_resume_gateway_url");
    sim.shutdown().await;
}

#[tokio::test]
async fn invalidate_session_sends_op9() {
    let sim = start(config(1)).await;
    let b = base(&sim);
    let (mut client, ready) = identified(&sim, false, [0, 1]).await;
    let session_id = ready["d"]["session_id"].as_str().unwrap().to_owned();
    http_post(&b, "/_sim/shards/0/invalidate", json!({"resumable": true})).await;
    let op9 = client.next().await;
    assert_eq!(
        (op9["op"].clone(), op9["d"].clone()),
        (json!(9), json!(true))
    );
    // Resumable: the same connection may resume.
    let seq = client.seq;
    client.resume(&session_id, seq).await;
    client.until_dispatch("RESUMED").await;
    http_post(&b, "/_sim/shards/0/invalidate", json!({"resumable": false})).await;
    let op9 = client.next().await;
    assert_eq!(
        (op9["op"].clone(), op9["d"].clone()),
        (json!(9), json!(false))
    );
    client.resume(&session_id, client.seq).await;
    let again = client.next().await;
    assert_eq!(
        (again["op"].clone(), again["d"].clone()),
        (json!(9), json!(false)),
        "the session is gone"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn injected_close_codes_arrive_and_decide_resumability() {
    let sim = start(config(1)).await;
    let b = base(&sim);
    // One shard per case, so identify pacing never comes into it.
    for (shard, code, resumable) in [(0u32, 4000u16, true), (1, 4009, false), (2, 4004, false)] {
        let (mut client, ready) = identified(&sim, false, [shard, 3]).await;
        let session_id = ready["d"]["session_id"].as_str().unwrap().to_owned();
        let seq = client.seq;
        http_post(
            &b,
            &format!("/_sim/shards/{shard}/close"),
            json!({"code": code}),
        )
        .await;
        assert_eq!(client.expect_close().await, Some(code));
        let mut c = Client::connect(&format!("ws://{}/resume", sim.addr()), false).await;
        c.next().await;
        c.resume(&session_id, seq).await;
        let answer = c.next().await;
        if resumable {
            assert_eq!(answer["t"], "RESUMED", "{code}");
            c.close(1000).await;
        } else {
            assert_eq!(answer["op"], 9, "{code}");
        }
    }
    sim.shutdown().await;
}

#[tokio::test]
async fn stopped_heartbeat_acks_are_a_zombie_for_the_client() {
    let sim = start(config(1)).await;
    let (mut client, _) = identified(&sim, false, [0, 1]).await;
    http_post(
        &base(&sim),
        "/_sim/shards/0/heartbeat-acks",
        json!({"enabled": false}),
    )
    .await;
    client.send(json!({"op": 1, "d": client.seq})).await;
    while let Some(Frame::Payload(v)) = client.next_within(Duration::from_millis(300)).await {
        assert_ne!(v["op"], 11, "no ACK while disabled");
    }
    http_post(
        &base(&sim),
        "/_sim/shards/0/heartbeat-acks",
        json!({"enabled": true}),
    )
    .await;
    client.send(json!({"op": 1, "d": client.seq})).await;
    assert_eq!(client.next().await["op"], 11);
    sim.shutdown().await;
}

#[tokio::test]
async fn corrupted_frame_breaks_the_clients_inflater() {
    let sim = start(config(1)).await;
    let (mut client, _) = identified(&sim, true, [0, 1]).await;
    http_post(&base(&sim), "/_sim/shards/0/corrupt", json!({})).await;
    loop {
        match client.next_within(Duration::from_secs(2)).await {
            Some(Frame::Closed(Some(0))) => break, // inflate error
            Some(Frame::Payload(_)) => continue,
            other => panic!(
                "expected an inflate error, got {:?}",
                other.map(|_| "frame")
            ),
        }
    }
    sim.shutdown().await;
}

#[tokio::test]
async fn more_than_120_sends_a_minute_closes_with_4008() {
    let sim = start(config(1)).await;
    let (mut client, _) = identified(&sim, false, [0, 1]).await;
    // IDENTIFY was send 1; 119 more are fine.
    for _ in 0..119 {
        client.send(json!({"op": 1, "d": null})).await;
    }
    for _ in 0..119 {
        let v = client.next().await;
        assert_eq!(v["op"], 11);
    }
    client.send(json!({"op": 1, "d": null})).await;
    assert_eq!(client.expect_close().await, Some(4008));
    let v = violations(&base(&sim)).await;
    assert_eq!(v[0]["kind"], "gateway_send_rate");
    sim.shutdown().await;
}

#[tokio::test]
async fn payloads_over_4096_bytes_close_with_4002() {
    let sim = start(config(1)).await;
    let (mut client, _) = identified(&sim, false, [0, 1]).await;
    let name = "x".repeat(5000);
    client.send(json!({"op": 3, "d": {"since": null, "activities": [{"name": name, "type": 0}], "status": "online", "afk": false}})).await;
    assert_eq!(client.expect_close().await, Some(4002));
    sim.shutdown().await;
}

#[tokio::test]
async fn commands_are_validated_and_answered() {
    let mut cfg = config(2);
    cfg.bots[0].members_per_guild = 30;
    let sim = start(cfg).await;
    let b = base(&sim);
    let mut client = Client::connect(&gateway(&sim), false).await;
    client.next().await;
    client.identify([0, 1], 1 | (1 << 1) | (1 << 7)).await; // GUILDS | GUILD_MEMBERS | GUILD_VOICE_STATES
    client.until_dispatch("READY").await;
    let guild = sim.state().bots[0].world().guild_ids()[0];
    let members = sim.state().bots[0].world().guilds[&guild].members.len();

    client
        .send(
            json!({"op": 3, "d": {"since": null, "activities": [], "status": "dnd", "afk": false}}),
        )
        .await;
    client.send(json!({"op": 8, "d": {"guild_id": guild.to_string(), "query": "", "limit": 0, "nonce": "n1"}})).await;
    let (chunk, _) = client.until_dispatch("GUILD_MEMBERS_CHUNK").await;
    assert_eq!(chunk["d"]["members"].as_array().unwrap().len(), members);
    assert_eq!(chunk["d"]["nonce"], "n1");
    assert_eq!(chunk["d"]["chunk_count"], 1);
    client.send(json!({"op": 8, "d": {"guild_id": guild.to_string(), "query": "", "limit": 0, "nonce": "n2"}})).await;
    let (limited, _) = client.until_dispatch("RATE_LIMITED").await;
    assert_eq!(limited["d"]["opcode"], 8);
    assert_eq!(limited["d"]["meta"]["nonce"], "n2");
    assert!(limited["d"]["retry_after"].as_f64().unwrap() > 0.0);
    let some_user = sim.state().bots[0].world().guilds[&guild]
        .members
        .keys()
        .next()
        .copied()
        .unwrap();
    client.send(json!({"op": 8, "d": {"guild_id": guild.to_string(), "user_ids": [some_user.to_string(), "1"], "limit": 0}})).await;
    let (chunk, _) = client.until_dispatch("GUILD_MEMBERS_CHUNK").await;
    assert_eq!(chunk["d"]["members"].as_array().unwrap().len(), 1);
    assert_eq!(chunk["d"]["not_found"], json!(["1"]));

    let voice = sim.state().bots[0].world().guilds[&guild]
        .channels
        .values()
        .find(|c| c.kind == 2)
        .map(|c| c.id)
        .unwrap();
    client.send(json!({"op": 4, "d": {"guild_id": guild.to_string(), "channel_id": voice.to_string(), "self_mute": false, "self_deaf": true}})).await;
    let (state, _) = client.until_dispatch("VOICE_STATE_UPDATE").await;
    assert_eq!(state["d"]["channel_id"], voice.to_string());
    assert_eq!(state["d"]["self_deaf"], true);
    client.until_dispatch("VOICE_SERVER_UPDATE").await;

    let stats = shard_stats(&b, 0, 1).await;
    assert_eq!(stats["commands"]["presence_update"], 1);
    assert_eq!(stats["commands"]["request_guild_members"], 3);
    assert_eq!(stats["commands"]["voice_state_update"], 1);
    assert_eq!(stats["last_presence_status"], "dnd");

    // A malformed command closes with 4002 and never counts.
    client.send(json!({"op": 3, "d": {"status": "sleepy", "since": null, "activities": [], "afk": false}})).await;
    assert_eq!(client.expect_close().await, Some(4002));
    sim.shutdown().await;
}

#[tokio::test]
async fn guild_count_changes_the_recommendation_and_dispatches_joins() {
    let sim = start(config(10)).await;
    let b = base(&sim);
    let (mut client, _) = identified(&sim, false, [0, 1]).await;
    let answer = http_post(&b, "/_sim/guilds", json!({"count": 2500})).await;
    assert_eq!(answer["recommended_shards"], 3);
    let (create, _) = client.until_dispatch("GUILD_CREATE").await;
    let id = create["d"]["id"].as_str().unwrap();
    let guild = http_get(&b, &format!("/_sim/guilds/{id}")).await;
    assert_eq!(guild["id"], id);
    http_post(&b, "/_sim/guilds", json!({"count": 9})).await;
    let (delete, _) = client.until_dispatch("GUILD_DELETE").await;
    assert!(
        delete["d"].get("unavailable").is_none(),
        "removed, not an outage"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn session_events_expose_the_ground_truth_log() {
    let sim = start(config(3)).await;
    let b = base(&sim);
    let (mut client, ready) = identified(&sim, false, [0, 1]).await;
    let session_id = ready["d"]["session_id"].as_str().unwrap();
    http_post(&b, "/_sim/say", json!({"content": "hello"})).await;
    let (msg, _) = client.until_dispatch("MESSAGE_CREATE").await;
    let log = http_get(&b, &format!("/_sim/sessions/{session_id}/events")).await;
    let events = log["events"].as_array().unwrap();
    assert_eq!(events.len() as u64, client.seq);
    let last = events.last().unwrap();
    assert_eq!(last["t"], "MESSAGE_CREATE");
    assert_eq!(last["seq"], msg["s"]);
    assert!(last["len"].as_u64().unwrap() > 100);
    // The log's digests add up to the shard's checksum.
    let sum = events
        .iter()
        .map(|e| e["digest"].as_str().unwrap().parse::<u64>().unwrap())
        .fold(0u64, u64::wrapping_add);
    let stats = shard_stats(&b, 0, 1).await;
    assert_eq!(
        stats["checksum"].as_str().unwrap().parse::<u64>().unwrap(),
        sum
    );
    let sessions = http_get(&b, "/_sim/sessions").await;
    assert_eq!(sessions.as_array().unwrap().len(), 1);
    sim.shutdown().await;
}

#[tokio::test]
async fn interactions_reach_the_owning_shard_and_their_callbacks_are_checked() {
    let sim = start(config(4)).await;
    let b = base(&sim);
    let (mut client, _) = identified(&sim, false, [0, 1]).await;
    let issued = http_post(&b, "/_sim/interactions", json!({"name": "ping"})).await;
    let (interaction, _) = client.until_dispatch("INTERACTION_CREATE").await;
    assert_eq!(interaction["d"]["id"], issued["id"]);
    assert_eq!(interaction["d"]["token"], issued["token"]);
    assert_eq!(interaction["d"]["data"]["name"], "ping");
    assert_eq!(interaction["d"]["type"], 2);
    let path = format!(
        "/api/v10/interactions/{}/{}/callback",
        issued["id"].as_str().unwrap(),
        issued["token"].as_str().unwrap()
    );
    let answer = common::http(
        "POST",
        &b,
        &path,
        Some(json!({"type": 4, "data": {"content": "pong"}})),
    )
    .await;
    assert!(
        matches!(answer["_status"].as_u64(), None | Some(204)),
        "{answer}"
    );
    let again = common::http(
        "POST",
        &b,
        &path,
        Some(json!({"type": 4, "data": {"content": "pong"}})),
    )
    .await;
    assert_eq!(
        again["_status"], 400,
        "an interaction is answered once: {again}"
    );
    let bogus = common::http(
        "POST",
        &b,
        &format!(
            "/api/v10/interactions/{}/not-the-token/callback",
            issued["id"].as_str().unwrap()
        ),
        Some(json!({"type": 4, "data": {"content": "pong"}})),
    )
    .await;
    assert_eq!(bogus["_status"], 404);
    let callbacks = http_get(&b, "/_sim/rest/interactions").await;
    let first = &callbacks.as_array().unwrap()[0];
    assert_eq!(first["id"], issued["id"]);
    assert!(first["response_ms"].as_u64().unwrap() < 3000);
    sim.shutdown().await;
}

#[tokio::test]
async fn sessions_expire_after_the_resume_window() {
    let mut cfg = config(1);
    cfg.resume_window_secs = 1;
    let sim = start(cfg).await;
    let (client, ready) = identified(&sim, false, [0, 1]).await;
    let session_id = ready["d"]["session_id"].as_str().unwrap().to_owned();
    let seq = client.seq;
    client.drop_tcp();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut c = Client::connect(&format!("ws://{}/resume", sim.addr()), false).await;
    c.next().await;
    c.resume(&session_id, seq).await;
    let answer = c.next().await;
    assert_eq!(
        (answer["op"].clone(), answer["d"].clone()),
        (json!(9), json!(false)),
        "expired"
    );
    assert_eq!(
        http_get(&base(&sim), "/_sim/sessions").await,
        json!([]),
        "pruned"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn health_and_metrics_are_served() {
    let sim = start(config(3)).await;
    let b = base(&sim);
    assert_eq!(http_get(&b, "/healthz").await, json!("ok\n"));
    assert_eq!(http_get(&b, "/readyz").await, json!("ready\n"));
    let (client, _) = identified(&sim, false, [0, 1]).await;
    let dispatched = shard_stats(&b, 0, 1).await["dispatched"].as_u64().unwrap();
    let metrics = http_get(&b, "/metrics").await;
    let text = metrics.as_str().unwrap();
    assert!(
        text.contains(&format!(
            "shardyard_sim_events_dispatched_total{{bot=\"bot\"}} {dispatched}"
        )),
        "{text}"
    );
    assert!(
        text.contains("shardyard_sim_identifies_total{bot=\"bot\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("shardyard_sim_sessions{bot=\"bot\"} 1"),
        "{text}"
    );
    assert!(
        !text.contains(common::TOKEN),
        "the token never reaches metrics"
    );
    drop(client);
    sim.shutdown().await;
}

/// A user running a command the bot registered gets that command's id in `data.id`, as on
/// Discord: the guild's own command before the global one.
#[tokio::test]
async fn an_interaction_names_the_command_the_bot_registered() {
    let sim = start(config(1)).await;
    let b = base(&sim);
    let (application, guild) = {
        let world = sim.state().bots[0].world();
        (world.application_id, world.guild_ids()[0])
    };
    let ping = json!([{"name": "ping", "description": "Replies with pong"}]);
    let global = common::http(
        "PUT",
        &b,
        &format!("/api/v10/applications/{application}/commands"),
        Some(ping.clone()),
    )
    .await;
    let global_id = global[0]["id"].clone();
    assert!(global_id.is_string(), "{global}");
    let (mut client, _) = identified(&sim, false, [0, 1]).await;
    http_post(&b, "/_sim/interactions", json!({"name": "ping"})).await;
    let (interaction, _) = client.until_dispatch("INTERACTION_CREATE").await;
    assert_eq!(interaction["d"]["data"]["id"], global_id);

    let local = common::http(
        "PUT",
        &b,
        &format!("/api/v10/applications/{application}/guilds/{guild}/commands"),
        Some(ping),
    )
    .await;
    http_post(&b, "/_sim/interactions", json!({"name": "ping"})).await;
    let (interaction, _) = client.until_dispatch("INTERACTION_CREATE").await;
    assert_eq!(interaction["d"]["data"]["id"], local[0]["id"]);
    assert_ne!(local[0]["id"], global_id);
    // A command nobody registered still gets an id of its own.
    http_post(&b, "/_sim/interactions", json!({"name": "other"})).await;
    let (interaction, _) = client.until_dispatch("INTERACTION_CREATE").await;
    let id = &interaction["d"]["data"]["id"];
    assert!(id.is_string() && *id != global_id && *id != local[0]["id"]);
    sim.shutdown().await;
}
