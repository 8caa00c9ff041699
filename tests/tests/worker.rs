//! The worker library and `shardyard worker` end to end, against a real nats-server (and, where
//! events come from Discord, the simulator, the gateway and the REST proxy): the example bot
//! answers through the proxy; a killed worker loses nothing; failures and bad payloads end on
//! the dead-letter subject with their reason; ordering mode keeps a guild's events in order.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use anyhow::Context as _;
use serde_json::{Value, json};
use shardyard_protocol::BotKey;
use shardyard_protocol::names::{self, headers};
use shardyard_tests::ground_truth::wait_until_stream_matches;
use shardyard_tests::worker::{
    Handled, create_event_stream, done_counts, publish_event, read_record, read_stream,
};
use shardyard_tests::{
    CacheProcess, GatewayProcess, NatsConfig, NatsServer, RestProcess, SimArgs, SimProcess,
    WorkerProcess, eventually,
};

fn as_u64(value: &Value) -> anyhow::Result<u64> {
    match value {
        Value::String(s) => Ok(s.parse()?),
        Value::Number(n) => n.as_u64().context("an id"),
        other => anyhow::bail!("not an id: {other}"),
    }
}

/// Someone says `!ping` in the simulator; the example bot's `pong` must land in that channel.
async fn says_ping_and_gets_pong(sim: &SimProcess, worker: &WorkerProcess) -> anyhow::Result<()> {
    let said = sim
        .post_json("/_sim/say", &json!({"content": "!ping"}))
        .await?;
    let channel = as_u64(&said["channel_id"])?;
    eventually(Duration::from_secs(10), "pong arrives", || async {
        let got = sim.channel_message_contents(channel).await?;
        anyhow::ensure!(got == ["pong"], "{got:?}");
        Ok(())
    })
    .await
    .with_context(|| worker.log_report())
}

/// JetStream reserves each stream's `max_bytes` out of the server's storage when the stream is
/// created, so default limits must fit a small NATS volume: here 2 GB, where an event stream
/// reserving 10 GiB by default once kept the worker's dead-letter stream (1 GiB) from being
/// created and the bot from starting.
#[tokio::test]
async fn the_example_bot_starts_with_default_limits_on_a_small_nats_volume() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("small-store.conf");
    std::fs::write(&config, "jetstream {\n  max_file_store: 2GB\n}\n")?;
    let nats = NatsServer::start_with(NatsConfig {
        extra_args: vec!["-c".into(), config.to_string_lossy().into_owned()],
        ..NatsConfig::default()
    })
    .await?;
    let max_storage = &nats.monitor_json("/jsz").await?["config"]["max_storage"];
    anyhow::ensure!(
        max_storage.as_u64().is_some_and(|n| n <= 2 << 30),
        "the server's JetStream storage is {max_storage}, not the configured 2 GB"
    );
    let sim = SimProcess::start(SimArgs {
        guilds: 3,
        events_per_second: 20.0,
        ..SimArgs::default()
    })
    .await?;
    let mut gateway = GatewayProcess::start(&sim, &nats, "smallbot", 1, 0..1, &[]).await?;
    gateway
        .wait_ready(Duration::from_secs(30))
        .await
        .map_err(|e| anyhow::anyhow!("{e:#}\n{}", gateway.process().log_report()))?;
    let rest = RestProcess::start(&sim, &[]).await?;
    let worker = WorkerProcess::start_example(&nats, &rest, "smallbot", &[]).await?;
    says_ping_and_gets_pong(&sim, &worker).await
}

#[tokio::test]
async fn the_example_bot_answers_ping_and_a_slash_command_through_the_proxy() -> anyhow::Result<()>
{
    let nats = NatsServer::start().await?;
    let sim = SimProcess::start(SimArgs {
        guilds: 3,
        events_per_second: 20.0,
        ..SimArgs::default()
    })
    .await?;
    let gateway = GatewayProcess::start(&sim, &nats, "pingbot", 1, 0..1, &[]).await?;
    gateway.wait_ready(Duration::from_secs(30)).await?;
    let rest = RestProcess::start(&sim, &[]).await?;
    let worker = WorkerProcess::start_example(&nats, &rest, "pingbot", &[]).await?;

    says_ping_and_gets_pong(&sim, &worker).await?;

    let interaction = sim
        .post_json("/_sim/interactions", &json!({"name": "ping"}))
        .await?;
    let callback = eventually(
        Duration::from_secs(10),
        "the interaction is answered",
        || async {
            let callbacks = sim.get_json("/_sim/rest/interactions").await?;
            callbacks
                .as_array()
                .and_then(|all| all.iter().find(|c| c["id"] == interaction["id"]))
                .cloned()
                .context("no callback yet")
        },
    )
    .await
    .with_context(|| worker.log_report())?;
    let response_ms = callback["response_ms"]
        .as_u64()
        .context("a registered interaction")?;
    assert!(
        response_ms < 3000,
        "answered in {response_ms} ms: {callback}"
    );
    assert_eq!(callback["type"], 4, "a message with source: {callback}");
    assert_eq!(callback["data"]["content"], "pong", "{callback}");

    // What it handled is counted: the !ping and the background traffic, the interaction.
    assert!(worker.handled("MESSAGE_CREATE", "ok").await? >= 1);
    assert_eq!(worker.handled("INTERACTION_CREATE", "ok").await?, 1);
    assert_eq!(worker.handled("MESSAGE_CREATE", "dead_letter").await?, 0);
    let metrics = worker.admin_get("/metrics").await?;
    assert!(
        metrics.contains("shardyard_worker_receive_to_handler_seconds_count"),
        "{metrics}"
    );
    // The worker never needs the token: the proxy adds it.
    assert!(!worker.log_report().contains(sim.token()));
    let stats = sim.stats().await?;
    assert_eq!(stats["violations"], json!([]));
    Ok(())
}

/// At start-up the example bot registers `/ping` through the proxy, as real bots do: two
/// replicas starting at once each read the application and overwrite the global commands once,
/// the simulator keeps one command, and nothing breaks a rule.
#[tokio::test]
async fn the_example_bot_registers_its_slash_command_at_start_up() -> anyhow::Result<()> {
    let nats = NatsServer::start().await?;
    let sim = SimProcess::start(SimArgs {
        guilds: 2,
        ..SimArgs::default()
    })
    .await?;
    let bot = BotKey::parse("cmdbot")?;
    // The workers become ready once the event stream exists; no gateway is needed here.
    create_event_stream(&nats.jetstream().await?, &bot).await?;
    let rest = RestProcess::start(&sim, &[]).await?;
    let (first, second) = tokio::try_join!(
        WorkerProcess::start_example(&nats, &rest, "cmdbot", &[]),
        WorkerProcess::start_example(&nats, &rest, "cmdbot", &[]),
    )?;
    let registered = eventually(
        Duration::from_secs(20),
        "both replicas registered /ping",
        || async {
            let commands = sim.get_json("/_sim/commands").await?;
            anyhow::ensure!(commands["overwrites"] == 2, "{commands}");
            Ok(commands)
        },
    )
    .await
    .with_context(|| format!("{}\n{}", first.log_report(), second.log_report()))?;
    let global = registered["global"]
        .as_array()
        .context("the global commands")?;
    assert_eq!(global.len(), 1, "{registered}");
    assert_eq!(global[0]["name"], "ping");
    assert_eq!(global[0]["description"], "Replies with pong");
    assert_eq!(global[0]["type"], 1);
    assert_eq!(global[0]["application_id"], registered["application_id"]);
    assert_eq!(registered["guilds"], json!({}));

    let stats = sim.stats().await?;
    let routes = &stats["rest"]["requests_by_route"];
    assert_eq!(routes["GET /applications/@me"], 2, "{routes}");
    assert_eq!(
        routes["PUT /applications/{application_id}/commands"], 2,
        "{routes}"
    );
    assert_eq!(stats["violations"], json!([]));
    for worker in [&first, &second] {
        assert!(
            worker.log().contains("registered the application commands"),
            "{}",
            worker.log_report()
        );
    }
    // Once per process start: nothing more while they run.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(sim.get_json("/_sim/commands").await?["overwrites"], 2);
    Ok(())
}

/// Discord failing at start-up must not keep the bot from its events: with every
/// `/applications` request answered 503, the example bot tries a few times, logs that it goes
/// on without its commands, and answers `!ping` all along.
#[tokio::test]
async fn the_example_bot_handles_events_when_registering_its_commands_fails() -> anyhow::Result<()>
{
    let nats = NatsServer::start().await?;
    let sim = SimProcess::start(SimArgs {
        guilds: 3,
        events_per_second: 20.0,
        ..SimArgs::default()
    })
    .await?;
    sim.post_json(
        "/_sim/rest/faults",
        &json!({"status": 503, "count": 10_000, "route": "/applications"}),
    )
    .await?;
    let gateway = GatewayProcess::start(&sim, &nats, "downbot", 1, 0..1, &[]).await?;
    gateway.wait_ready(Duration::from_secs(30)).await?;
    let rest = RestProcess::start(&sim, &[]).await?;
    let worker = WorkerProcess::start_example(
        &nats,
        &rest,
        "downbot",
        &[
            ("SHARDYARD_WORKER_RETRY_BASE_MS", "100"),
            ("SHARDYARD_WORKER_RETRY_MAX_MS", "400"),
        ],
    )
    .await?;
    says_ping_and_gets_pong(&sim, &worker).await?;
    eventually(
        Duration::from_secs(30),
        "the start-up hook gives up",
        || async {
            anyhow::ensure!(
                worker
                    .log()
                    .contains("start-up hook failed; the bot goes on without it"),
                "not yet"
            );
            Ok(())
        },
    )
    .await
    .with_context(|| worker.log_report())?;
    let tries = worker
        .log()
        .matches("start-up hook failed; trying again")
        .count();
    assert_eq!(tries, 4, "5 attempts in all: {}", worker.log_report());
    let registered = sim.get_json("/_sim/commands").await?;
    assert_eq!(registered["overwrites"], 0, "{registered}");
    assert_eq!(registered["global"], json!([]));
    // Still handling events after giving up.
    let said = sim
        .post_json("/_sim/say", &json!({"content": "!ping"}))
        .await?;
    let channel = as_u64(&said["channel_id"])?;
    eventually(Duration::from_secs(10), "the second pong", || async {
        let got = sim.channel_message_contents(channel).await?;
        anyhow::ensure!(got == ["pong", "pong"], "{got:?}");
        Ok(())
    })
    .await
    .with_context(|| worker.log_report())?;
    Ok(())
}

#[tokio::test]
async fn the_example_bot_answers_from_the_central_cache() -> anyhow::Result<()> {
    let nats = NatsServer::start().await?;
    let sim = SimProcess::start(SimArgs {
        guilds: 3,
        events_per_second: 0.0,
        ..SimArgs::default()
    })
    .await?;
    let gateway = GatewayProcess::start(&sim, &nats, "cachedbot", 1, 0..1, &[]).await?;
    gateway.wait_ready(Duration::from_secs(30)).await?;
    let rest = RestProcess::start(&sim, &[]).await?;
    // The worker starts before the cache's bucket exists: it opens the cache on first use.
    let worker = WorkerProcess::start_example(&nats, &rest, "cachedbot", &[]).await?;
    let cache = CacheProcess::start(&nats, "cachedbot", &[]).await?;
    cache.wait_ready(Duration::from_secs(30)).await?;
    let guilds = sim.stats().await?["bots"][0]["guilds"].as_u64();
    assert_eq!(guilds, Some(3));
    let said = sim
        .post_json("/_sim/say", &json!({"content": "!ping"}))
        .await?;
    let guild = as_u64(&said["guild_id"])?;
    eventually(
        Duration::from_secs(20),
        "the cache has the guild",
        || async {
            let (status, _) = cache.api_get(&format!("/guilds/{guild}")).await?;
            anyhow::ensure!(status == 200, "{status}");
            Ok(())
        },
    )
    .await?;

    let said = sim
        .post_json(
            "/_sim/say",
            &json!({"content": "!guild", "guild_id": guild.to_string()}),
        )
        .await?;
    let channel = as_u64(&said["channel_id"])?;
    let truth = sim.get_json(&format!("/_sim/guilds/{guild}")).await?;
    let count = |field: &str| truth[field].as_array().map_or(0, Vec::len);
    let expected = format!(
        "{}: {} members, {} channels, {} roles",
        truth["name"].as_str().context("a guild name")?,
        count("members"),
        count("channels") + count("threads"),
        count("roles")
    );
    eventually(
        Duration::from_secs(10),
        "the answer from the cache",
        || async {
            let got = sim.channel_message_contents(channel).await?;
            anyhow::ensure!(got.last() == Some(&expected), "{got:?}, want {expected:?}");
            Ok(())
        },
    )
    .await
    .with_context(|| worker.log_report())?;
    Ok(())
}

/// The dead letters of `bot`, in order: (subject, headers, payload).
async fn dead_letters(
    nats: &NatsServer,
    bot: &BotKey,
) -> anyhow::Result<Vec<async_nats::jetstream::message::StreamMessage>> {
    let js = nats.jetstream().await?;
    read_stream(&js, &bot.dead_letter_stream(), &bot.dead_letter_filter()).await
}

fn header(message: &async_nats::jetstream::message::StreamMessage, name: &str) -> String {
    message
        .headers
        .get(name)
        .map(|v| v.as_str().to_owned())
        .unwrap_or_default()
}

/// Waits until the worker group's consumer has nothing pending or unacknowledged.
async fn consumer_settles(nats: &NatsServer, bot: &BotKey) -> anyhow::Result<()> {
    let js = nats.jetstream().await?;
    eventually(
        Duration::from_secs(20),
        "the consumer has nothing pending",
        || async {
            let stream = js.get_stream(bot.stream()).await?;
            let mut consumer: async_nats::jetstream::consumer::PullConsumer = stream
                .get_consumer(&names::worker_consumer(None))
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            let info = consumer.info().await?;
            anyhow::ensure!(
                info.num_pending == 0 && info.num_ack_pending == 0,
                "pending {}, unacknowledged {}",
                info.num_pending,
                info.num_ack_pending
            );
            Ok(())
        },
    )
    .await
}

const FAST_RETRIES: [(&str, &str); 3] = [
    ("SHARDYARD_WORKER_MAX_DELIVER", "3"),
    ("SHARDYARD_WORKER_RETRY_BASE_MS", "50"),
    ("SHARDYARD_WORKER_RETRY_MAX_MS", "200"),
];

#[tokio::test]
async fn failing_and_panicking_handlers_dead_letter_after_max_deliver_and_the_consumer_goes_on()
-> anyhow::Result<()> {
    let nats = NatsServer::start().await?;
    let js = nats.jetstream().await?;
    let bot = BotKey::local("failbot")?;
    create_event_stream(&js, &bot).await?;
    let record = tempfile::NamedTempFile::new()?;
    let record_path = record.path().to_str().context("a UTF-8 path")?;
    let worker = WorkerProcess::start_test(
        &nats,
        bot.as_str(),
        &[
            "--types",
            "MESSAGE_CREATE",
            "--fail-when",
            "FAIL",
            "--panic-when",
            "PANIC",
            "--record",
            record_path,
        ],
        &FAST_RETRIES,
    )
    .await?;
    let failing = publish_event(
        &js,
        &bot,
        (1, 4),
        1,
        "MESSAGE_CREATE",
        r#"{"content":"FAIL"}"#,
    )
    .await?;
    let fine = publish_event(
        &js,
        &bot,
        (1, 4),
        2,
        "MESSAGE_CREATE",
        r#"{"content":"ok"}"#,
    )
    .await?;
    let panicking = publish_event(
        &js,
        &bot,
        (1, 4),
        3,
        "MESSAGE_CREATE",
        r#"{"content":"PANIC"}"#,
    )
    .await?;

    let letters = eventually(Duration::from_secs(20), "two dead letters", || async {
        let letters = dead_letters(&nats, &bot).await?;
        anyhow::ensure!(letters.len() == 2, "{} dead letters", letters.len());
        Ok(letters)
    })
    .await
    .with_context(|| worker.log_report())?;
    // Bounded, so that a handler failing on everything cannot fill JetStream's storage.
    let dead_stream = js
        .get_stream(bot.dead_letter_stream())
        .await?
        .info()
        .await?
        .config
        .clone();
    assert_eq!(dead_stream.max_age, Duration::from_secs(14 * 24 * 60 * 60));
    assert_eq!(dead_stream.max_bytes, 1024 * 1024 * 1024);
    assert_eq!(
        dead_stream.discard,
        async_nats::jetstream::stream::DiscardPolicy::Old
    );
    let by_id: HashMap<String, &async_nats::jetstream::message::StreamMessage> = letters
        .iter()
        .map(|m| (header(m, headers::MSG_ID), m))
        .collect();
    let failed = by_id.get(&failing).context("the failing event")?;
    assert_eq!(
        failed.subject.as_str(),
        bot.dead_letter_subject("MESSAGE_CREATE")
    );
    assert_eq!(
        &failed.payload[..],
        br#"{"content":"FAIL"}"#,
        "the original payload"
    );
    let error = header(failed, headers::ERROR);
    assert!(
        error.contains("failed 3 times") && error.contains("deliberate failure"),
        "{error}"
    );
    assert_eq!(
        header(failed, headers::SHARD),
        "1/4",
        "the original headers"
    );
    assert_eq!(header(failed, headers::EVENT), "MESSAGE_CREATE");
    assert_eq!(header(failed, headers::SEQ), "1");
    let panicked = by_id.get(&panicking).context("the panicking event")?;
    let error = header(panicked, headers::ERROR);
    assert!(
        error.contains("panicked 3 times") && error.contains("deliberate panic"),
        "{error}"
    );

    // Each was tried max_deliver times, by JetStream's count; the fine one once.
    let lines = read_record(record.path())?;
    let starts = |id: &str| -> Vec<u32> {
        lines
            .iter()
            .filter(|l| l.what == "start" && l.msg_id == id)
            .map(|l| l.delivered)
            .collect()
    };
    assert_eq!(starts(&failing), [1, 2, 3]);
    assert_eq!(starts(&panicking), [1, 2, 3]);
    assert_eq!(done_counts(&lines).get(&fine), Some(&1));

    // The consumer goes on: a later event is handled, nothing stays pending.
    let later = publish_event(
        &js,
        &bot,
        (1, 4),
        4,
        "MESSAGE_CREATE",
        r#"{"content":"later"}"#,
    )
    .await?;
    eventually(
        Duration::from_secs(10),
        "the later event is handled",
        || async {
            let lines = read_record(record.path())?;
            anyhow::ensure!(done_counts(&lines).contains_key(&later), "not yet");
            Ok(())
        },
    )
    .await?;
    consumer_settles(&nats, &bot).await?;
    assert_eq!(worker.handled("MESSAGE_CREATE", "dead_letter").await?, 2);
    assert_eq!(worker.handled("MESSAGE_CREATE", "retry").await?, 2);
    assert_eq!(worker.handled("MESSAGE_CREATE", "panic").await?, 2);
    assert_eq!(worker.handled("MESSAGE_CREATE", "ok").await?, 2);
    let metrics = worker.admin_get("/metrics").await?;
    assert!(
        metrics.contains("shardyard_worker_handler_panics_total 3\n"),
        "{metrics}"
    );
    Ok(())
}

#[tokio::test]
async fn a_payload_that_does_not_match_its_type_is_dead_lettered_at_once_with_the_reason()
-> anyhow::Result<()> {
    let nats = NatsServer::start().await?;
    let js = nats.jetstream().await?;
    let bot = BotKey::local("badbot")?;
    create_event_stream(&js, &bot).await?;
    let worker = WorkerProcess::start_test(
        &nats,
        bot.as_str(),
        &["--types", "MESSAGE_CREATE", "--typed"],
        &FAST_RETRIES,
    )
    .await?;
    let wrong_shape = publish_event(
        &js,
        &bot,
        (0, 1),
        1,
        "MESSAGE_CREATE",
        r#"{"id":"1","channel_id":"2","content":"no author, no timestamp"}"#,
    )
    .await?;
    let not_json = publish_event(&js, &bot, (0, 1), 2, "MESSAGE_CREATE", "{not json").await?;
    let letters = eventually(Duration::from_secs(20), "two dead letters", || async {
        let letters = dead_letters(&nats, &bot).await?;
        anyhow::ensure!(letters.len() == 2, "{} dead letters", letters.len());
        Ok(letters)
    })
    .await
    .with_context(|| worker.log_report())?;
    for (letter, id) in letters.iter().zip([&wrong_shape, &not_json]) {
        assert_eq!(&header(letter, headers::MSG_ID), id);
        let error = header(letter, headers::ERROR);
        assert!(
            error.starts_with("the payload is not a valid MESSAGE_CREATE (twilight-model): "),
            "{error}"
        );
    }
    consumer_settles(&nats, &bot).await?;
    // Dead-lettered on the first delivery: retrying cannot fix a payload.
    assert_eq!(worker.handled("MESSAGE_CREATE", "dead_letter").await?, 2);
    assert_eq!(worker.handled("MESSAGE_CREATE", "retry").await?, 0);
    let metrics = worker.admin_get("/metrics").await?;
    assert!(
        metrics.contains("shardyard_worker_handler_panics_total 0\n"),
        "{metrics}"
    );
    Ok(())
}

#[tokio::test]
async fn ordering_mode_sees_each_guilds_events_in_stream_order() -> anyhow::Result<()> {
    let nats = NatsServer::start().await?;
    let js = nats.jetstream().await?;
    let bot = BotKey::local("orderbot")?;
    create_event_stream(&js, &bot).await?;
    let record = tempfile::NamedTempFile::new()?;
    let record_path = record.path().to_str().context("a UTF-8 path")?;
    let mut env = FAST_RETRIES.to_vec();
    env.extend([
        ("SHARDYARD_WORKER_ORDERED", "true"),
        ("SHARDYARD_WORKER_CONCURRENCY", "32"),
    ]);
    let worker = WorkerProcess::start_test(
        &nats,
        bot.as_str(),
        &[
            "--types",
            "MESSAGE_CREATE,MESSAGE_UPDATE,MESSAGE_DELETE",
            "--random-delay-ms",
            "15",
            "--fail-when",
            "FAIL",
            "--record",
            record_path,
        ],
        &env,
    )
    .await?;
    // A burst: create/update/delete for one busy guild, interleaved with three others; one
    // event of the busy guild fails every time.
    let busy = 1_u64 << 22;
    let mut guild_of: HashMap<String, u64> = HashMap::new();
    let mut failing = String::new();
    let types = ["MESSAGE_CREATE", "MESSAGE_UPDATE", "MESSAGE_DELETE"];
    for seq in 1..=120_u64 {
        let guild = if seq % 2 == 0 {
            busy
        } else {
            (seq % 3 + 2) << 22
        };
        let content = if seq == 40 { "FAIL" } else { "x" };
        let payload = format!(
            r#"{{"id":"{seq}","channel_id":"{}","guild_id":"{guild}","content":"{content}"}}"#,
            guild + 1
        );
        let event_type = types[usize::try_from(seq % 3)?];
        let id = publish_event(&js, &bot, (0, 1), seq, event_type, &payload).await?;
        if seq == 40 {
            failing = id.clone();
        }
        guild_of.insert(id, guild);
    }
    let lines = eventually(Duration::from_secs(30), "every event handled", || async {
        let lines = read_record(record.path())?;
        let done = done_counts(&lines);
        anyhow::ensure!(done.len() == 119, "{} of 119 handled", done.len());
        Ok(lines)
    })
    .await
    .with_context(|| worker.log_report())?;
    consumer_settles(&nats, &bot).await?;

    // Per guild, one event at a time in stream order: an event starts only after the previous
    // one finished (or, for the failing one, after its last attempt), and sequences only grow.
    let mut open: HashMap<u64, (String, u64)> = HashMap::new();
    let mut last: HashMap<u64, u64> = HashMap::new();
    let mut failing_attempts = 0;
    for line in &lines {
        let guild = guild_of[&line.msg_id];
        match line.what.as_str() {
            "start" => {
                if line.msg_id == failing {
                    failing_attempts += 1;
                }
                if let Some((running, _)) = open.get(&guild) {
                    let retry = *running == line.msg_id;
                    let after_last_attempt = *running == failing && failing_attempts >= 3;
                    assert!(
                        retry || after_last_attempt,
                        "guild {guild}: {} started while {running} was running",
                        line.msg_id
                    );
                }
                if let Some(&previous) = last.get(&guild) {
                    assert!(
                        line.stream_sequence >= previous,
                        "guild {guild}: {} started after {previous}",
                        line.stream_sequence
                    );
                }
                last.insert(guild, line.stream_sequence);
                open.insert(guild, (line.msg_id.clone(), line.stream_sequence));
            }
            _ => {
                let running = open.remove(&guild);
                assert_eq!(
                    running.map(|(id, _)| id).as_deref(),
                    Some(line.msg_id.as_str())
                );
            }
        }
    }
    // The failing event was retried in place (3 attempts) before the busy guild went on, then
    // dead-lettered; the guild continued.
    let failing_starts: Vec<&Handled> = lines
        .iter()
        .filter(|l| l.what == "start" && l.msg_id == failing)
        .collect();
    assert_eq!(failing_starts.len(), 3, "{failing_starts:?}");
    let letters = dead_letters(&nats, &bot).await?;
    assert_eq!(letters.len(), 1);
    assert_eq!(header(&letters[0], headers::MSG_ID), failing);
    // Different guilds ran concurrently: other guilds' events started between two events of
    // the busy guild.
    let busy_positions: Vec<usize> = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| l.what == "start" && guild_of[&l.msg_id] == busy)
        .map(|(i, _)| i)
        .collect();
    let first = busy_positions[0];
    let last_busy = busy_positions[busy_positions.len() - 1];
    let others_between = lines[first..last_busy]
        .iter()
        .filter(|l| l.what == "start" && guild_of[&l.msg_id] != busy)
        .count();
    assert!(others_between > 0, "other guilds waited for the busy one");
    Ok(())
}

#[tokio::test]
async fn a_worker_killed_mid_batch_loses_nothing_and_the_survivor_handles_its_events()
-> anyhow::Result<()> {
    let nats = NatsServer::start().await?;
    let sim = SimProcess::start(SimArgs {
        guilds: 20,
        ..SimArgs::default()
    })
    .await?;
    let gateway = GatewayProcess::start(&sim, &nats, "killbot", 2, 0..2, &[]).await?;
    gateway.wait_ready(Duration::from_secs(30)).await?;
    let bot = BotKey::local("killbot")?;
    let dir = tempfile::tempdir()?;
    let (path_a, path_b) = (dir.path().join("a"), dir.path().join("b"));
    let env = [
        ("SHARDYARD_WORKER_ACK_WAIT", "2"),
        ("SHARDYARD_WORKER_CONCURRENCY", "16"),
    ];
    let start = |path: &std::path::Path| {
        let path = path.to_str().unwrap_or_default().to_owned();
        let nats = &nats;
        async move {
            WorkerProcess::start_test(
                nats,
                "killbot",
                &[
                    "--types",
                    "MESSAGE_CREATE",
                    "--delay-ms",
                    "200",
                    "--record",
                    &path,
                ],
                &env,
            )
            .await
        }
    };
    let mut worker_a = start(&path_a).await?;
    let worker_b = start(&path_b).await?;
    sim.post_json("/_sim/traffic", &json!({"events_per_second": 150}))
        .await?;
    // Mid-batch: A has events started and not finished.
    eventually(Duration::from_secs(10), "A is busy", || async {
        let lines = read_record(&path_a)?;
        let done = done_counts(&lines);
        let open = lines
            .iter()
            .filter(|l| l.what == "start" && !done.contains_key(&l.msg_id))
            .count();
        anyhow::ensure!(
            done.len() >= 20 && open >= 4,
            "{} done, {open} open",
            done.len()
        );
        Ok(())
    })
    .await?;
    worker_a.process().kill_9()?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    sim.post_json("/_sim/traffic", &json!({"events_per_second": 0}))
        .await?;

    // The stream holds exactly what the simulator dispatched (its ground truth)…
    let js = nats.jetstream().await?;
    wait_until_stream_matches(&js, &sim, "bot", &bot, 2, Duration::from_secs(30)).await?;
    let in_stream: HashSet<String> =
        read_stream(&js, &bot.stream(), &bot.event_type_filter("MESSAGE_CREATE"))
            .await?
            .iter()
            .map(|m| header(m, headers::MSG_ID))
            .collect();
    let stats = sim.stats().await?;
    let dispatched: u64 = stats["shards"]
        .as_array()
        .context("shards")?
        .iter()
        .map(|s| s["by_type"]["MESSAGE_CREATE"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(in_stream.len() as u64, dispatched);
    assert!(dispatched >= 100, "{dispatched} messages");

    // … and every one of them was handled by A before the kill or by B.
    let record_b = eventually(
        Duration::from_secs(60),
        "every event handled at least once",
        || async {
            let a = done_counts(&read_record(&path_a)?);
            let b = read_record(&path_b)?;
            let done_b = done_counts(&b);
            let missing = in_stream
                .iter()
                .filter(|id| !a.contains_key(*id) && !done_b.contains_key(*id))
                .count();
            anyhow::ensure!(missing == 0, "{missing} of {} not handled", in_stream.len());
            Ok(b)
        },
    )
    .await
    .with_context(|| worker_b.log_report())?;
    // What A started and never finished went to B, redelivered.
    let record_a = read_record(&path_a)?;
    let done_a = done_counts(&record_a);
    let stranded: HashSet<&str> = record_a
        .iter()
        .filter(|l| l.what == "start" && !done_a.contains_key(&l.msg_id))
        .map(|l| l.msg_id.as_str())
        .collect();
    assert!(!stranded.is_empty(), "A was killed mid-batch");
    for id in &stranded {
        let redelivered = record_b
            .iter()
            .find(|l| l.what == "done" && l.msg_id == *id)
            .with_context(|| format!("{id} never handled by B"))?;
        assert!(redelivered.delivered >= 2, "{redelivered:?}");
    }
    consumer_settles(&nats, &bot).await?;
    Ok(())
}

#[tokio::test]
async fn gateway_commands_reach_the_shard_that_holds_the_guild() -> anyhow::Result<()> {
    let nats = NatsServer::start().await?;
    let sim = SimProcess::start(SimArgs {
        guilds: 20,
        ..SimArgs::default()
    })
    .await?;
    let gateway = GatewayProcess::start(&sim, &nats, "cmdbot", 2, 0..2, &[]).await?;
    gateway.wait_ready(Duration::from_secs(30)).await?;
    let worker = WorkerProcess::start_test(
        &nats,
        "cmdbot",
        &["--types", "MESSAGE_CREATE", "--members-when", "!members"],
        &[],
    )
    .await?;
    // One guild on each shard: the shard total comes from the events' Shardyard-Shard header.
    let guilds: Vec<Value> = reqwest::Client::new()
        .get(format!("{}/users/@me/guilds", sim.api_base()))
        .header("authorization", format!("Bot {}", sim.token()))
        .send()
        .await?
        .json()
        .await?;
    let mut per_shard: HashMap<u64, u64> = HashMap::new();
    for guild in &guilds {
        let id = as_u64(&guild["id"])?;
        per_shard.entry((id >> 22) % 2).or_insert(id);
    }
    assert_eq!(per_shard.len(), 2, "a guild on each shard");
    for guild in per_shard.values() {
        sim.post_json(
            "/_sim/say",
            &json!({"content": "!members", "guild_id": guild.to_string()}),
        )
        .await?;
    }
    eventually(
        Duration::from_secs(10),
        "each shard sent one member request to Discord",
        || async {
            let stats = sim.stats().await?;
            for shard in stats["shards"].as_array().context("shards")? {
                anyhow::ensure!(
                    shard["commands"]["request_guild_members"] == 1,
                    "shard {}: {}",
                    shard["id"],
                    shard["commands"]
                );
            }
            Ok(())
        },
    )
    .await
    .with_context(|| worker.log_report())?;
    eventually(Duration::from_secs(5), "both handled", || async {
        anyhow::ensure!(worker.handled("MESSAGE_CREATE", "ok").await? >= 2);
        Ok(())
    })
    .await?;
    assert_eq!(worker.handled("MESSAGE_CREATE", "dead_letter").await?, 0);
    assert_eq!(sim.stats().await?["violations"], json!([]));
    Ok(())
}

#[tokio::test]
async fn sigterm_finishes_in_flight_events_and_hands_the_rest_back_at_once() -> anyhow::Result<()> {
    let nats = NatsServer::start().await?;
    let js = nats.jetstream().await?;
    let bot = BotKey::local("stopbot")?;
    create_event_stream(&js, &bot).await?;
    let dir = tempfile::tempdir()?;
    let (path_a, path_b) = (dir.path().join("a"), dir.path().join("b"));
    let path = |p: &std::path::Path| p.to_str().unwrap_or_default().to_owned();
    // ack_wait 30 s: an event back within seconds was handed back, not timed out.
    let env = [("SHARDYARD_WORKER_CONCURRENCY", "8")];
    let mut worker_a = WorkerProcess::start_test(
        &nats,
        "stopbot",
        &["--delay-ms", "1000", "--record", &path(&path_a)],
        &env,
    )
    .await?;
    let mut ids = HashSet::new();
    for seq in 1..=40 {
        ids.insert(
            publish_event(
                &js,
                &bot,
                (0, 1),
                seq,
                "MESSAGE_CREATE",
                r#"{"content":"x"}"#,
            )
            .await?,
        );
    }
    eventually(Duration::from_secs(10), "A is busy", || async {
        let started = read_record(&path_a)?.len();
        anyhow::ensure!(started >= 8, "{started} started");
        Ok(())
    })
    .await?;
    worker_a.process().sigterm()?;
    let stopped = std::time::Instant::now();
    let status = worker_a
        .process()
        .wait_exit(Duration::from_secs(10))
        .await?;
    assert!(status.success(), "{status}\n{}", worker_a.log_report());
    // Everything A started, it finished.
    let record_a = read_record(&path_a)?;
    let done_a = done_counts(&record_a);
    for line in record_a.iter().filter(|l| l.what == "start") {
        assert!(done_a.contains_key(&line.msg_id), "{line:?} abandoned");
    }
    let mut worker_b =
        WorkerProcess::start_test(&nats, "stopbot", &["--record", &path(&path_b)], &env).await?;
    eventually(Duration::from_secs(10), "B handles the rest", || async {
        let done_b = done_counts(&read_record(&path_b)?);
        let missing = ids
            .iter()
            .filter(|id| !done_a.contains_key(*id) && !done_b.contains_key(*id))
            .count();
        anyhow::ensure!(missing == 0, "{missing} not handled");
        Ok(())
    })
    .await?;
    assert!(
        stopped.elapsed() < Duration::from_secs(20),
        "handed back, not left for ack_wait"
    );
    // Nothing twice: what A finished was acked before it exited.
    let done_b = done_counts(&read_record(&path_b)?);
    let handled: usize = done_a.values().chain(done_b.values()).sum();
    assert_eq!(handled, 40, "A {} + B {}", done_a.len(), done_b.len());
    assert!(!done_b.is_empty(), "A handed events back");
    consumer_settles(&nats, &bot).await?;
    // With NATS gone for good, SIGTERM still ends the worker cleanly: the last flush and the
    // drain are bounded instead of waiting for a reconnect that never comes.
    let mut nats = nats;
    nats.kill_9()?;
    let status = worker_b
        .process()
        .terminate(Duration::from_secs(15))
        .await?;
    assert!(
        status.success(),
        "exits by itself with NATS down: {status}\n{}",
        worker_b.log_report()
    );
    Ok(())
}

#[tokio::test]
async fn a_handler_slower_than_ack_wait_keeps_its_event_by_extending_the_deadline()
-> anyhow::Result<()> {
    let nats = NatsServer::start().await?;
    let js = nats.jetstream().await?;
    let bot = BotKey::local("slowbot")?;
    create_event_stream(&js, &bot).await?;
    let record = tempfile::NamedTempFile::new()?;
    let record_path = record.path().to_str().context("a UTF-8 path")?;
    // ack_wait 2 s, handlers of 5 s: without progress reports JetStream would redeliver each
    // event twice while its first handler still runs.
    let worker = WorkerProcess::start_test(
        &nats,
        bot.as_str(),
        &["--delay-ms", "5000", "--record", record_path],
        &[("SHARDYARD_WORKER_ACK_WAIT", "2")],
    )
    .await?;
    let mut ids = Vec::new();
    for seq in 1..=3 {
        ids.push(
            publish_event(
                &js,
                &bot,
                (0, 1),
                seq,
                "MESSAGE_CREATE",
                r#"{"content":"slow"}"#,
            )
            .await?,
        );
    }
    let lines = eventually(
        Duration::from_secs(20),
        "the slow events finish",
        || async {
            let lines = read_record(record.path())?;
            anyhow::ensure!(done_counts(&lines).len() == 3, "not yet");
            Ok(lines)
        },
    )
    .await
    .with_context(|| worker.log_report())?;
    consumer_settles(&nats, &bot).await?;
    let lines = {
        // Anything redelivered would have started by now.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let later = read_record(record.path())?;
        assert!(later.len() >= lines.len());
        later
    };
    for id in &ids {
        let starts: Vec<u32> = lines
            .iter()
            .filter(|l| l.what == "start" && &l.msg_id == id)
            .map(|l| l.delivered)
            .collect();
        assert_eq!(starts, [1], "{id} started once, on its first delivery");
    }
    assert_eq!(worker.handled("MESSAGE_CREATE", "ok").await?, 3);
    Ok(())
}
