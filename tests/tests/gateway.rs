//! `shardyard gateway` end to end: the simulator's dispatches reach JetStream, byte for byte,
//! in order, once — checked against the simulator's ground truth — through reconnects and
//! resumes; fatal close codes stop a shard for good.

use std::time::Duration;

use serde_json::json;
use shardyard_protocol::BotKey;
use shardyard_tests::ground_truth::{read_stream_shard, shard_truth};
use shardyard_tests::{GatewayProcess, NatsServer, SimArgs, SimProcess, eventually};

async fn stream_equals_ground_truth(
    nats: &NatsServer,
    sim: &SimProcess,
    bot: &BotKey,
    total: u32,
) -> anyhow::Result<()> {
    let js = nats.jetstream().await?;
    for shard in 0..total {
        eventually(
            Duration::from_secs(30),
            "stream equals the simulator's record",
            || {
                let (js, sim) = (&js, sim);
                async move {
                    let truth = shard_truth(&sim.stats().await?, "bot", shard, total)?
                        .ok_or_else(|| anyhow::anyhow!("shard {shard} never connected"))?;
                    let stream = read_stream_shard(js, bot, shard).await?;
                    anyhow::ensure!(
                        stream.malformed.is_empty(),
                        "malformed: {:?}",
                        stream.malformed
                    );
                    anyhow::ensure!(
                        stream.disorder.is_empty(),
                        "out of order: {:?}",
                        stream.disorder
                    );
                    anyhow::ensure!(
                        stream.duplicates == 0,
                        "{} duplicates in the stream",
                        stream.duplicates
                    );
                    anyhow::ensure!(
                        stream.truth() == truth,
                        "shard {shard}: stream {:?} != simulator {truth:?}",
                        stream.truth()
                    );
                    Ok(())
                }
            },
        )
        .await?;
    }
    Ok(())
}

#[tokio::test]
async fn every_dispatch_reaches_the_stream_through_reconnects_and_resumes() -> anyhow::Result<()> {
    let nats = NatsServer::start().await?;
    let sim = SimProcess::start(SimArgs {
        guilds: 40,
        max_concurrency: 2,
        events_per_second: 300.0,
        ..SimArgs::default()
    })
    .await?;
    let gateway = GatewayProcess::start(&sim, &nats, "e2e", 2, 0..2, &[]).await?;
    gateway.wait_ready(Duration::from_secs(30)).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    // Discord asks shard 0 to reconnect, and drops shard 1's TCP connection.
    sim.post_json("/_sim/shards/0/reconnect", &json!({}))
        .await?;
    sim.post_json("/_sim/shards/1/drop", &json!({})).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    gateway.wait_ready(Duration::from_secs(30)).await?;
    // A session invalidated for good: the shard identifies a new one (after 1–5 s).
    sim.post_json("/_sim/shards/1/invalidate", &json!({"resumable": false}))
        .await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    sim.post_json("/_sim/say", &json!({"content": "during the storm"}))
        .await?;
    gateway.wait_ready(Duration::from_secs(30)).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    sim.post_json("/_sim/traffic", &json!({"events_per_second": 0}))
        .await?;

    stream_equals_ground_truth(&nats, &sim, &BotKey::local("e2e")?, 2).await?;
    let stats = sim.stats().await?;
    let shards = stats["shards"].as_array().cloned().unwrap_or_default();
    let shard0 = shards
        .iter()
        .find(|s| s["id"] == 0)
        .cloned()
        .unwrap_or_default();
    let shard1 = shards
        .iter()
        .find(|s| s["id"] == 1)
        .cloned()
        .unwrap_or_default();
    assert_eq!(shard0["resumes"], 1, "RECONNECT resumes: {shard0}");
    assert_eq!(shard0["identifies"], 1, "and never re-identifies: {shard0}");
    assert!(
        shard1["resumes"].as_u64().unwrap_or(0) >= 1,
        "a dropped connection resumes: {shard1}"
    );
    assert_eq!(
        shard1["identifies"], 2,
        "op 9 false means a new session: {shard1}"
    );
    assert_eq!(
        stats["violations"],
        json!([]),
        "the gateway broke no Discord rule"
    );
    let metrics = gateway.admin_get("/metrics").await?;
    assert!(
        metrics.contains("shardyard_gateway_published_total{shard=\"0\"}"),
        "{metrics}"
    );
    assert!(
        !metrics.contains(sim.token()),
        "the token never reaches metrics"
    );
    Ok(())
}

async fn shard(sim: &SimProcess, id: u32) -> anyhow::Result<serde_json::Value> {
    let stats = sim.stats().await?;
    Ok(stats["shards"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["id"] == id).cloned())
        .unwrap_or_default())
}

#[tokio::test]
async fn zombies_corrupt_frames_and_close_codes_lose_nothing() -> anyhow::Result<()> {
    let nats = NatsServer::start().await?;
    let sim = SimProcess::start(SimArgs {
        guilds: 20,
        max_concurrency: 2,
        events_per_second: 200.0,
        extra: vec!["--heartbeat-interval-ms".into(), "1000".into()],
        ..SimArgs::default()
    })
    .await?;
    let gateway = GatewayProcess::start(&sim, &nats, "faults", 2, 0..2, &[]).await?;
    gateway.wait_ready(Duration::from_secs(30)).await?;

    // Heartbeats stop being acknowledged: the gateway sees a zombie and resumes.
    sim.post_json("/_sim/shards/0/heartbeat-acks", &json!({"enabled": false}))
        .await?;
    eventually(
        Duration::from_secs(10),
        "shard 0 resumed after the zombie",
        || async {
            anyhow::ensure!(shard(&sim, 0).await?["resumes"] == 1, "not yet");
            Ok(())
        },
    )
    .await?;
    // A frame no inflater accepts: reconnect and resume.
    sim.post_json("/_sim/shards/1/corrupt", &json!({})).await?;
    eventually(
        Duration::from_secs(10),
        "shard 1 resumed after the corrupt frame",
        || async {
            anyhow::ensure!(shard(&sim, 1).await?["resumes"] == 1, "not yet");
            Ok(())
        },
    )
    .await?;
    gateway.wait_ready(Duration::from_secs(30)).await?;
    // 4000 resumes; 4009 needs a new session.
    sim.post_json("/_sim/shards/0/close", &json!({"code": 4000}))
        .await?;
    sim.post_json("/_sim/shards/1/close", &json!({"code": 4009}))
        .await?;
    eventually(Duration::from_secs(20), "both shards back", || async {
        anyhow::ensure!(
            shard(&sim, 0).await?["resumes"] == 2,
            "shard 0 not resumed yet"
        );
        anyhow::ensure!(
            shard(&sim, 1).await?["identifies"] == 2,
            "shard 1 not re-identified yet"
        );
        Ok(())
    })
    .await?;
    gateway.wait_ready(Duration::from_secs(30)).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    sim.post_json("/_sim/traffic", &json!({"events_per_second": 0}))
        .await?;
    stream_equals_ground_truth(&nats, &sim, &BotKey::local("faults")?, 2).await?;
    assert_eq!(
        shard(&sim, 0).await?["identifies"],
        1,
        "shard 0 only ever resumed"
    );
    assert_eq!(sim.stats().await?["violations"], json!([]));
    Ok(())
}

#[tokio::test]
async fn nats_restarted_mid_traffic_loses_no_event() -> anyhow::Result<()> {
    let mut nats = NatsServer::start().await?;
    let sim = SimProcess::start(SimArgs {
        guilds: 20,
        max_concurrency: 2,
        events_per_second: 200.0,
        ..SimArgs::default()
    })
    .await?;
    let gateway = GatewayProcess::start(&sim, &nats, "natsdown", 2, 0..2, &[]).await?;
    gateway.wait_ready(Duration::from_secs(30)).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    nats.restart().await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    sim.post_json("/_sim/traffic", &json!({"events_per_second": 0}))
        .await?;
    gateway.wait_ready(Duration::from_secs(60)).await?;
    stream_equals_ground_truth(&nats, &sim, &BotKey::local("natsdown")?, 2).await?;
    assert_eq!(sim.stats().await?["violations"], json!([]));
    Ok(())
}

#[tokio::test]
async fn fatal_close_codes_stop_the_shard_and_are_never_retried() -> anyhow::Result<()> {
    let nats = NatsServer::start().await?;
    let sim = SimProcess::start(SimArgs {
        guilds: 4,
        max_concurrency: 2,
        ..SimArgs::default()
    })
    .await?;
    let gateway = GatewayProcess::start(&sim, &nats, "fatal", 2, 0..2, &[]).await?;
    gateway.wait_ready(Duration::from_secs(30)).await?;
    sim.post_json("/_sim/shards/1/close", &json!({"code": 4004}))
        .await?;
    eventually(
        Duration::from_secs(10),
        "readyz reports the failed shard",
        || async {
            let answer = reqwest::get(format!("{}/readyz", gateway_admin(&gateway).await?)).await?;
            anyhow::ensure!(
                answer.status().as_u16() == 503,
                "readyz {}",
                answer.status()
            );
            let body = answer.text().await?;
            anyhow::ensure!(body.contains("shard 1 failed"), "{body}");
            Ok(())
        },
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let stats = sim.stats().await?;
    let shard1 = stats["shards"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["id"] == 1).cloned())
        .unwrap_or_default();
    assert_eq!(shard1["identifies"], 1, "no retry after 4004: {shard1}");
    assert_eq!(shard1["resumes"], 0, "no resume after 4004: {shard1}");
    let metrics = gateway.admin_get("/metrics").await?;
    assert!(
        metrics.contains("shardyard_gateway_shard_state{shard=\"1\",state=\"failed\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("shardyard_gateway_shard_state{shard=\"0\",state=\"ready\"} 1"),
        "{metrics}"
    );
    Ok(())
}

async fn gateway_admin(gateway: &GatewayProcess) -> anyhow::Result<String> {
    // /healthz answers on the admin address; find it from a metrics call's URL.
    let _ = gateway.admin_get("/healthz").await?;
    Ok(format!("http://{}", gateway.admin_addr()))
}

#[tokio::test]
async fn publishing_follows_the_active_generation() -> anyhow::Result<()> {
    let nats = NatsServer::start().await?;
    let sim = SimProcess::start(SimArgs {
        guilds: 10,
        events_per_second: 200.0,
        ..SimArgs::default()
    })
    .await?;
    let gateway =
        GatewayProcess::start(&sim, &nats, "gen", 1, 0..1, &["--generation", "2"]).await?;
    gateway.wait_ready(Duration::from_secs(30)).await?;
    let bot = BotKey::local("gen")?;
    let js = nats.jetstream().await?;
    let count = || {
        let js = js.clone();
        let stream = bot.stream();
        async move { anyhow::Ok(js.get_stream(stream).await?.info().await?.state.messages) }
    };
    // No key: every generation is active.
    eventually(Duration::from_secs(10), "events published", || async {
        anyhow::ensure!(count().await? > 50, "not yet");
        Ok(())
    })
    .await?;
    let control = js.get_key_value(bot.control_bucket()).await?;
    control
        .put(shardyard_protocol::names::ACTIVE_GENERATION_KEY, "1".into())
        .await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let paused = count().await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        count().await?,
        paused,
        "generation 2 must not publish while 1 is active"
    );
    let metrics = gateway.admin_get("/metrics").await?;
    assert!(
        !metrics.contains("shardyard_gateway_suppressed_total{shard=\"0\"} 0"),
        "{metrics}"
    );
    control
        .put(shardyard_protocol::names::ACTIVE_GENERATION_KEY, "2".into())
        .await?;
    eventually(
        Duration::from_secs(10),
        "publishing again once 2 is active",
        || async {
            anyhow::ensure!(count().await? > paused + 50, "not yet");
            Ok(())
        },
    )
    .await?;
    Ok(())
}
