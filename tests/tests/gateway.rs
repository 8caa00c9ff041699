//! `shardyard gateway` end to end: the simulator's dispatches reach JetStream, byte for byte,
//! in order, once — checked against the simulator's ground truth — through reconnects and
//! resumes; fatal close codes stop a shard for good.

use std::time::Duration;

use anyhow::Context as _;
use serde_json::json;
use shardyard_protocol::BotKey;
use shardyard_tests::ground_truth::wait_until_stream_matches;
use shardyard_tests::{
    GatewayProcess, NatsConfig, NatsServer, SimArgs, SimProcess, TestCertificates, eventually,
};

async fn stream_equals_ground_truth(
    nats: &NatsServer,
    sim: &SimProcess,
    bot: &BotKey,
    total: u32,
) -> anyhow::Result<()> {
    let js = nats.jetstream().await?;
    wait_until_stream_matches(&js, sim, "bot", bot, total, Duration::from_secs(30)).await
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
    // Each shard's acknowledged sequence (where it would resume) reaches the last one
    // Discord sent in the newest session.
    for id in 0..2 {
        let last_seq = shard(&sim, id).await?["last_seq"].clone();
        let line = format!("shardyard_gateway_acked_sequence{{shard=\"{id}\"}} {last_seq}\n");
        eventually(Duration::from_secs(5), "acked sequence", || async {
            let metrics = gateway.admin_get("/metrics").await?;
            anyhow::ensure!(metrics.contains(&line), "no {line:?} in:\n{metrics}");
            Ok(())
        })
        .await?;
    }
    let stats = sim.stats().await?;
    let (shard0, shard1) = (shard(&sim, 0).await?, shard(&sim, 1).await?);
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
    // Debug logging, through identifies, resumes and reconnects.
    let log = gateway.log();
    assert!(
        log.contains("shard ready"),
        "the log is the gateway's: {log}"
    );
    assert!(
        !log.contains(sim.token()),
        "the token never reaches the log"
    );
    Ok(())
}

#[tokio::test]
async fn a_nats_that_requires_tls_gets_every_dispatch() -> anyhow::Result<()> {
    let nats = NatsServer::start_with(NatsConfig {
        tls: Some(TestCertificates::generate()?),
        ..NatsConfig::default()
    })
    .await?;
    assert!(nats.url().starts_with("tls://"), "{}", nats.url());
    let sim = SimProcess::start(SimArgs {
        guilds: 20,
        events_per_second: 200.0,
        ..SimArgs::default()
    })
    .await?;
    let gateway = GatewayProcess::start(&sim, &nats, "tlsbot", 2, 0..2, &[]).await?;
    gateway.wait_ready(Duration::from_secs(30)).await?;
    // A connection lost mid-traffic comes back over TLS too.
    sim.post_json("/_sim/shards/0/drop", &json!({})).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    gateway.wait_ready(Duration::from_secs(30)).await?;
    sim.post_json("/_sim/traffic", &json!({"events_per_second": 0}))
        .await?;
    stream_equals_ground_truth(&nats, &sim, &BotKey::local("tlsbot")?, 2).await?;
    let metrics = gateway.admin_get("/metrics").await?;
    assert!(
        metrics.contains("shardyard_gateway_nats_link_up 1"),
        "the publishing connection is up: {metrics}"
    );
    assert_eq!(sim.stats().await?["violations"], json!([]));
    Ok(())
}

async fn shard(sim: &SimProcess, id: u32) -> anyhow::Result<serde_json::Value> {
    let stats = sim.stats().await?;
    Ok(stats["shards"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["id"] == id).cloned())
        .unwrap_or_default())
}

/// zstd-stream end to end: every dispatch reaches the stream through a dropped connection's
/// resume (a fresh context) and a corrupt frame, and the shards report what they saved.
#[tokio::test]
async fn zstd_stream_delivers_every_dispatch_through_resumes_and_a_corrupt_frame()
-> anyhow::Result<()> {
    let nats = NatsServer::start().await?;
    let sim = SimProcess::start(SimArgs {
        guilds: 20,
        events_per_second: 200.0,
        ..SimArgs::default()
    })
    .await?;
    let gateway = GatewayProcess::start(
        &sim,
        &nats,
        "zstdbot",
        2,
        0..2,
        &["--compression", "zstd-stream"],
    )
    .await?;
    gateway.wait_ready(Duration::from_secs(30)).await?;
    sim.post_json("/_sim/shards/0/drop", &json!({})).await?;
    sim.post_json("/_sim/shards/1/corrupt", &json!({})).await?;
    eventually(Duration::from_secs(15), "both shards resumed", || async {
        anyhow::ensure!(shard(&sim, 0).await?["resumes"] == 1, "shard 0 not yet");
        anyhow::ensure!(shard(&sim, 1).await?["resumes"] == 1, "shard 1 not yet");
        Ok(())
    })
    .await?;
    gateway.wait_ready(Duration::from_secs(30)).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    sim.post_json("/_sim/traffic", &json!({"events_per_second": 0}))
        .await?;
    stream_equals_ground_truth(&nats, &sim, &BotKey::local("zstdbot")?, 2).await?;
    let metrics = gateway.admin_get("/metrics").await?;
    let series = |name: &str| {
        metrics
            .lines()
            .filter(|l| l.starts_with(name))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>()
    };
    let (compressed, raw) = (
        series("shardyard_gateway_bytes_compressed_total"),
        series("shardyard_gateway_bytes_raw_total"),
    );
    assert!(
        compressed > 0.0 && raw > compressed * 2.0,
        "zstd compressed the traffic: {compressed} bytes for {raw}\n{metrics}"
    );
    assert_eq!(sim.stats().await?["violations"], json!([]));
    Ok(())
}

/// The REST proxy that `--api-base` names is down: after `--api-fallback-after-secs` the gateway
/// asks the fallback (Discord) and starts, instead of waiting for the proxy forever.
#[tokio::test]
async fn an_unreachable_api_base_falls_back_to_discord() -> anyhow::Result<()> {
    let nats = NatsServer::start().await?;
    let sim = SimProcess::start(SimArgs {
        guilds: 2,
        ..SimArgs::default()
    })
    .await?;
    let nowhere = format!("http://127.0.0.1:{}/api/v10", shardyard_tests::free_port());
    let started = std::time::Instant::now();
    let fallback = sim.api_base();
    let gateway = GatewayProcess::start(
        &sim,
        &nats,
        "fallback",
        1,
        0..1,
        &[
            "--api-base",
            &nowhere,
            "--api-fallback",
            &fallback,
            "--api-fallback-after-secs",
            "2",
        ],
    )
    .await?;
    gateway.wait_ready(Duration::from_secs(30)).await?;
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "the proxy was tried first"
    );
    let log = gateway.log();
    assert!(
        log.contains("asking for the gateway at the fallback"),
        "{log}"
    );
    Ok(())
}

/// `GET /gateway/bot`'s bucket spent by the bot's other pods: the gateway's 429 is waited out for
/// as long as it says, then the gateway starts, without a request the bucket refuses.
#[tokio::test]
async fn a_rate_limited_gateway_bot_is_asked_again_after_its_retry_after() -> anyhow::Result<()> {
    let nats = NatsServer::start().await?;
    let sim = SimProcess::start(SimArgs {
        guilds: 2,
        ..SimArgs::default()
    })
    .await?;
    sim.post_json(
        "/_sim/rest/faults",
        &json!({"rate_limit": {"scope": "user", "retry_after": 1.5, "count": 2, "route": "/gateway/bot"}}),
    )
    .await?;
    let started = std::time::Instant::now();
    let gateway = GatewayProcess::start(&sim, &nats, "limited", 1, 0..1, &[]).await?;
    gateway.wait_ready(Duration::from_secs(30)).await?;
    let log = gateway.log();
    assert_eq!(
        log.matches("was rate limited (429)").count(),
        2,
        "both 429s were seen: {log}"
    );
    assert_eq!(log.matches("retry_in_ms=1500").count(), 2, "{log}");
    assert!(
        started.elapsed() >= Duration::from_secs(3),
        "each 429 was waited out"
    );
    let faults = sim.get_json("/_sim/rest/faults").await?;
    assert_eq!(faults["rate_limit"], json!([]), "both 429s were used");
    assert_eq!(sim.stats().await?["violations"], json!([]));
    Ok(())
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
        events_per_second: 400.0,
        ..SimArgs::default()
    })
    .await?;
    let mut gateway = GatewayProcess::start(&sim, &nats, "natsdown", 2, 0..2, &[]).await?;
    gateway.wait_ready(Duration::from_secs(30)).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    // A graceful restart, then a crash: publishes in flight are lost with the connection, and
    // the replay must not land behind events published after them (the stream stays in order).
    nats.restart().await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    nats.kill_9()?;
    nats.start_again().await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    sim.post_json("/_sim/traffic", &json!({"events_per_second": 0}))
        .await?;
    gateway.wait_ready(Duration::from_secs(60)).await?;
    // Longer than the other tests: after the restart each shard waits for JetStream to answer,
    // then resumes, and Discord replays what was not acknowledged.
    let js = nats.jetstream().await?;
    let bot = BotKey::local("natsdown")?;
    wait_until_stream_matches(&js, &sim, "bot", &bot, 2, Duration::from_secs(90)).await?;
    assert_eq!(sim.stats().await?["violations"], json!([]));
    let metrics = gateway.admin_get("/metrics").await?;
    let link = |series| shardyard_tests::metric_value(&metrics, series);
    assert_eq!(
        link("shardyard_gateway_nats_link_up"),
        Some(1.0),
        "{metrics}"
    );
    assert!(
        link("shardyard_gateway_nats_link_connections_total").is_some_and(|n| n >= 3.0),
        "the publishing connection came back after the restart and the crash: {metrics}"
    );
    // With NATS gone for good, a SIGTERM still ends the process cleanly and promptly: sessions
    // cannot be saved, but a pod that never stops is worse (Kubernetes would SIGKILL it).
    nats.kill_9()?;
    let status = gateway.process().terminate(Duration::from_secs(15)).await?;
    assert!(
        status.success(),
        "exits by itself with NATS down: {status:?}"
    );
    Ok(())
}

#[tokio::test]
async fn a_deleted_stream_is_created_again_and_publishing_goes_on() -> anyhow::Result<()> {
    let nats = NatsServer::start().await?;
    let sim = SimProcess::start(SimArgs {
        guilds: 10,
        events_per_second: 200.0,
        ..SimArgs::default()
    })
    .await?;
    let limits = ["--stream-max-age", "2h", "--stream-max-bytes", "64MiB"];
    let mut gateway = GatewayProcess::start(&sim, &nats, "lostbot", 1, 0..1, &limits).await?;
    gateway.wait_ready(Duration::from_secs(30)).await?;
    let js = nats.jetstream().await?;
    let bot = BotKey::local("lostbot")?;
    let stored = |js: async_nats::jetstream::Context, name: String| async move {
        anyhow::Ok(js.get_stream(name).await?.info().await?.state.messages)
    };
    // The limits the gateway was given, each time it creates the stream.
    let limits_of = |js: async_nats::jetstream::Context, name: String| async move {
        let config = js.get_stream(name).await?.info().await?.config.clone();
        anyhow::Ok((config.max_age, config.max_bytes, config.discard))
    };
    let wanted = (
        Duration::from_secs(2 * 60 * 60),
        64 << 20,
        async_nats::jetstream::stream::DiscardPolicy::Old,
    );
    assert_eq!(limits_of(js.clone(), bot.stream()).await?, wanted);
    eventually(Duration::from_secs(20), "events in the stream", || async {
        let n = stored(js.clone(), bot.stream()).await?;
        anyhow::ensure!(n > 0, "no event yet");
        Ok(())
    })
    .await?;
    // As if JetStream lost its storage: publishes are refused until the stream exists again.
    js.delete_stream(bot.stream()).await?;
    eventually(
        Duration::from_secs(60),
        "the stream is back and filling",
        || async {
            let n = stored(js.clone(), bot.stream()).await?;
            anyhow::ensure!(n >= 20, "{n} events since it was deleted");
            Ok(())
        },
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e:#}\n{}", gateway.process().log_report()))?;
    assert_eq!(limits_of(js.clone(), bot.stream()).await?, wanted);
    gateway.wait_ready(Duration::from_secs(30)).await?;
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
            let answer = reqwest::get(format!("http://{}/readyz", gateway.admin_addr())).await?;
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
    let shard1 = shard(&sim, 1).await?;
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
    // An authentication failure is where a token would be quoted, if anywhere.
    let log = gateway.log();
    assert!(log.contains("4004"), "the log reports the close: {log}");
    assert!(
        !log.contains(sim.token()),
        "the token never reaches the log"
    );
    Ok(())
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
    // What it received meanwhile is counted as suppressed.
    let metrics = gateway.admin_get("/metrics").await?;
    let suppressed: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("shardyard_gateway_suppressed_total{shard=\"0\"} "))
        .with_context(|| format!("no suppressed counter for shard 0 in:\n{metrics}"))?
        .parse()?;
    assert!(
        suppressed > 0,
        "nothing counted as suppressed while inactive"
    );
    // The waiting generation says its shard is READY, for the operator's hand-over.
    let ready_key = shardyard_protocol::names::keys::generation_ready(2, 0);
    let ready = control
        .get(&ready_key)
        .await?
        .with_context(|| format!("no {ready_key}"))?;
    let ready: serde_json::Value = serde_json::from_slice(&ready)?;
    assert_eq!(ready["total"], 1, "{ready}");
    assert!(ready["at_ms"].as_u64().is_some_and(|ms| ms > 0), "{ready}");
    // A hand-over names both generations: 2 publishes while 1 still does.
    control
        .put(
            shardyard_protocol::names::ACTIVE_GENERATION_KEY,
            "1,2".into(),
        )
        .await?;
    eventually(
        Duration::from_secs(10),
        "publishing again once 2 is named beside 1",
        || async {
            anyhow::ensure!(count().await? > paused + 50, "not yet");
            Ok(())
        },
    )
    .await?;
    // A stopped gateway withdraws its shards' readiness.
    let mut gateway = gateway;
    gateway.process().terminate(Duration::from_secs(10)).await?;
    assert!(
        control.get(&ready_key).await?.is_none(),
        "{ready_key} is left after the gateway stopped"
    );

    // So does one that a newer generation took over from, while it still runs (a pod being
    // stopped): the operator has forgotten its keys by then, and they must not come back.
    let old = GatewayProcess::start(&sim, &nats, "gen", 1, 0..1, &["--generation", "2"]).await?;
    old.wait_ready(Duration::from_secs(30)).await?;
    eventually(Duration::from_secs(10), "ready again", || async {
        control.get(&ready_key).await?.context("no key yet")
    })
    .await?;
    control
        .put(shardyard_protocol::names::ACTIVE_GENERATION_KEY, "3".into())
        .await?;
    eventually(Duration::from_secs(10), "the key withdrawn", || async {
        anyhow::ensure!(control.get(&ready_key).await?.is_none(), "still there");
        Ok(())
    })
    .await?;
    drop(old);
    Ok(())
}

/// Every shard of `sim`: identifies and resumes.
async fn shards_summary(sim: &SimProcess) -> anyhow::Result<Vec<(u64, u64)>> {
    let stats = sim.stats().await?;
    let mut shards: Vec<_> = stats["shards"].as_array().cloned().unwrap_or_default();
    shards.sort_by_key(|s| s["id"].as_u64());
    Ok(shards
        .iter()
        .map(|s| {
            (
                s["identifies"].as_u64().unwrap_or(0),
                s["resumes"].as_u64().unwrap_or(0),
            )
        })
        .collect())
}

#[tokio::test]
async fn a_killed_gateway_resumes_from_kv_losing_and_duplicating_nothing() -> anyhow::Result<()> {
    let nats = NatsServer::start().await?;
    let sim = SimProcess::start(SimArgs {
        guilds: 20,
        max_concurrency: 2,
        events_per_second: 300.0,
        ..SimArgs::default()
    })
    .await?;
    let mut gateway = GatewayProcess::start(&sim, &nats, "crash", 2, 0..2, &[]).await?;
    gateway.wait_ready(Duration::from_secs(30)).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    gateway.process().kill_9()?;
    // Traffic goes on while nothing holds the shards.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let restarted = GatewayProcess::start(&sim, &nats, "crash", 2, 0..2, &[]).await?;
    restarted.wait_ready(Duration::from_secs(30)).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    sim.post_json("/_sim/traffic", &json!({"events_per_second": 0}))
        .await?;
    stream_equals_ground_truth(&nats, &sim, &BotKey::local("crash")?, 2).await?;
    for (shard, (identifies, resumes)) in shards_summary(&sim).await?.into_iter().enumerate() {
        assert_eq!(
            identifies, 1,
            "shard {shard} resumed from KV instead of identifying"
        );
        assert_eq!(resumes, 1, "shard {shard}");
    }
    assert_eq!(sim.stats().await?["violations"], json!([]));
    Ok(())
}

#[tokio::test]
async fn sigterm_and_a_rolling_restart_of_two_processes_resume_every_shard() -> anyhow::Result<()> {
    let nats = NatsServer::start().await?;
    let sim = SimProcess::start(SimArgs {
        guilds: 40,
        max_concurrency: 4,
        events_per_second: 300.0,
        ..SimArgs::default()
    })
    .await?;
    let mut a = GatewayProcess::start(&sim, &nats, "rolling", 4, 0..2, &[]).await?;
    let mut b = GatewayProcess::start(&sim, &nats, "rolling", 4, 2..4, &[]).await?;
    a.wait_ready(Duration::from_secs(30)).await?;
    b.wait_ready(Duration::from_secs(30)).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    // Roll: one process at a time gets SIGTERM and is replaced.
    let status = a.process().terminate(Duration::from_secs(10)).await?;
    assert!(status.success(), "SIGTERM is a clean exit: {status:?}");
    let a2 = GatewayProcess::start(&sim, &nats, "rolling", 4, 0..2, &[]).await?;
    a2.wait_ready(Duration::from_secs(30)).await?;
    let status = b.process().terminate(Duration::from_secs(10)).await?;
    assert!(status.success(), "SIGTERM is a clean exit: {status:?}");
    let b2 = GatewayProcess::start(&sim, &nats, "rolling", 4, 2..4, &[]).await?;
    b2.wait_ready(Duration::from_secs(30)).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    sim.post_json("/_sim/traffic", &json!({"events_per_second": 0}))
        .await?;
    stream_equals_ground_truth(&nats, &sim, &BotKey::local("rolling")?, 4).await?;
    for (shard, (identifies, resumes)) in shards_summary(&sim).await?.into_iter().enumerate() {
        assert_eq!(
            (identifies, resumes),
            (1, 1),
            "shard {shard}: one identify, one resume"
        );
    }
    assert_eq!(sim.stats().await?["violations"], json!([]));
    Ok(())
}

#[tokio::test]
async fn commands_reach_discord_or_are_refused_with_a_reason() -> anyhow::Result<()> {
    let nats = NatsServer::start().await?;
    let sim = SimProcess::start(SimArgs {
        guilds: 3,
        ..SimArgs::default()
    })
    .await?;
    let gateway = GatewayProcess::start(&sim, &nats, "cmd", 1, 0..1, &[]).await?;
    gateway.wait_ready(Duration::from_secs(30)).await?;
    let client = nats.connect().await?;
    let subject = BotKey::local("cmd")?.command_subject(0);
    let ask = |body: serde_json::Value| {
        let (client, subject) = (client.clone(), subject.clone());
        async move {
            let reply = client.request(subject, body.to_string().into()).await?;
            anyhow::Ok(serde_json::from_slice::<serde_json::Value>(&reply.payload)?)
        }
    };
    let presence = json!({"op": "presence_update", "d": {"since": null, "activities": [], "status": "idle", "afk": false}});
    assert_eq!(ask(presence.clone()).await?, json!({"status": "sent"}));
    let guild = sim
        .post_json("/_sim/say", &json!({"content": "hello"}))
        .await?["guild_id"]
        .clone();
    let members = json!({"op": "request_guild_members", "d": {"guild_id": guild, "query": "", "limit": 0, "nonce": "n1"}});
    assert_eq!(ask(members).await?, json!({"status": "sent"}));
    eventually(
        Duration::from_secs(5),
        "the simulator got the member request",
        || async {
            let stats = sim.stats().await?;
            anyhow::ensure!(
                stats["shards"][0]["commands"]["request_guild_members"] == 1,
                "not yet"
            );
            Ok(())
        },
    )
    .await?;
    let unknown = ask(json!({"op": "launch_rockets", "d": {}})).await?;
    assert_eq!(unknown["status"], "rejected", "{unknown}");
    let huge = json!({"op": "presence_update", "d": {"since": null, "activities": [{"name": "x".repeat(5000), "type": 0}], "status": "online", "afk": false}});
    let refused = ask(huge).await?;
    assert_eq!(refused["status"], "rejected", "{refused}");
    assert!(
        refused["reason"].as_str().unwrap_or("").contains("4096"),
        "{refused}"
    );
    // 200 commands in a burst: each sent or told when to retry, and Discord never closes 4008.
    let mut sent = 0;
    let mut retry = 0;
    for _ in 0..200 {
        match ask(presence.clone()).await?["status"].as_str() {
            Some("sent") => sent += 1,
            Some("retry_after") => retry += 1,
            other => panic!("unexpected reply {other:?}"),
        }
    }
    assert!(
        sent >= 50 && sent + retry == 200,
        "sent {sent}, retry {retry}"
    );
    eventually(
        Duration::from_secs(5),
        "the simulator counted every sent presence",
        || async {
            let stats = sim.stats().await?;
            let got = stats["shards"][0]["commands"]["presence_update"]
                .as_u64()
                .unwrap_or(0);
            anyhow::ensure!(
                got == sent + 1,
                "simulator saw {got}, gateway sent {}",
                sent + 1
            );
            Ok(())
        },
    )
    .await?;
    let stats = sim.stats().await?;
    assert_eq!(stats["shards"][0]["last_presence_status"], "idle");
    assert_eq!(
        stats["shards"][0]["closes"],
        json!({}),
        "no 4008 or any other close"
    );
    assert_eq!(stats["violations"], json!([]));
    gateway.wait_ready(Duration::from_secs(1)).await?;
    Ok(())
}

#[tokio::test]
async fn two_processes_pace_32_identifies_without_a_violation() -> anyhow::Result<()> {
    let nats = NatsServer::start().await?;
    let sim = SimProcess::start(SimArgs {
        guilds: 64,
        max_concurrency: 4,
        extra: vec!["--members-per-guild".into(), "2".into()],
        ..SimArgs::default()
    })
    .await?;
    let a = GatewayProcess::start(&sim, &nats, "pace", 32, 0..16, &[]).await?;
    let b = GatewayProcess::start(&sim, &nats, "pace", 32, 16..32, &[]).await?;
    // 8 shards per bucket at one identify per 5.5 s: about 40 s.
    a.wait_ready(Duration::from_secs(90)).await?;
    b.wait_ready(Duration::from_secs(90)).await?;
    let stats = sim.stats().await?;
    assert_eq!(
        stats["violations"],
        json!([]),
        "identify pacing across processes"
    );
    let summary = shards_summary(&sim).await?;
    assert_eq!(summary.len(), 32);
    assert!(
        summary.iter().all(|(identifies, _)| *identifies == 1),
        "{summary:?}"
    );
    let limit = &stats["bots"][0]["session_start_limit"];
    assert_eq!(
        limit["total"].as_u64().unwrap_or(0) - limit["remaining"].as_u64().unwrap_or(0),
        32,
        "32 session starts spent"
    );
    Ok(())
}

#[tokio::test]
async fn the_daily_session_budget_is_waited_for_not_burnt() -> anyhow::Result<()> {
    let nats = NatsServer::start().await?;
    let sim = SimProcess::start(SimArgs {
        guilds: 16,
        max_concurrency: 8,
        extra: vec!["--session-start-limit".into(), "6".into()],
        ..SimArgs::default()
    })
    .await?;
    let a = GatewayProcess::start(&sim, &nats, "budget", 8, 0..4, &[]).await?;
    let b = GatewayProcess::start(&sim, &nats, "budget", 8, 4..8, &[]).await?;
    eventually(Duration::from_secs(20), "six shards identified", || async {
        let identified: u64 = shards_summary(&sim).await?.iter().map(|(i, _)| i).sum();
        anyhow::ensure!(identified == 6, "{identified} identified");
        Ok(())
    })
    .await?;
    // The other two wait for tomorrow's reset instead of identifying with no budget left.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let identified: u64 = shards_summary(&sim).await?.iter().map(|(i, _)| i).sum();
    assert_eq!(identified, 6);
    assert_eq!(
        sim.stats().await?["violations"],
        json!([]),
        "the budget was never exceeded"
    );
    assert!(
        a.admin_get("/readyz").await.is_err() || b.admin_get("/readyz").await.is_err(),
        "two shards are still waiting"
    );
    Ok(())
}
