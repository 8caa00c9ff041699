//! `shardyard interactions` against a real nats-server, with requests signed as Discord signs
//! them: what is refused (and never published), PING, a worker's answer in time, a deferral and
//! the late answer told to edit, a replay.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_nats::jetstream;
use futures_util::StreamExt as _;
use serde_json::json;
use shardyard_protocol::names::headers;
use shardyard_protocol::{BotKey, InteractionReply};
use shardyard_tests::NatsServer;
use shardyard_tests::interactions::{DiscordSigner, InteractionsProcess, create_event_stream};

async fn stored(js: &jetstream::Context, bot: &BotKey) -> anyhow::Result<u64> {
    Ok(js
        .get_stream(bot.stream())
        .await?
        .info()
        .await?
        .state
        .messages)
}

fn command(id: u64) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "id": id.to_string(),
        "application_id": "100",
        "type": 2,
        "token": format!("token-{id}"),
        "version": 1,
        "data": {"id": "5", "name": "ping", "type": 1},
        "guild_id": "7",
        "channel_id": "8",
    }))
    .unwrap_or_default()
}

#[tokio::test]
async fn unsigned_tampered_stale_and_foreign_requests_are_refused_and_nothing_is_published()
-> anyhow::Result<()> {
    let nats = NatsServer::start().await?;
    let bot = BotKey::local("refusals")?;
    let js = create_event_stream(&nats, &bot).await?;
    let discord = DiscordSigner::from_seed(1);
    let endpoint = InteractionsProcess::start(
        &nats,
        bot.as_str(),
        &discord.public_key_hex(),
        &["--max-body-bytes", "4096"],
    )
    .await?;
    endpoint.wait_ready(Duration::from_secs(10)).await?;

    // Discord's own check: a signed PING is answered PONG; an unsigned one is 401.
    let ping = br#"{"id":"1","application_id":"100","type":1,"token":"t","version":1}"#;
    assert_eq!(
        endpoint.post_signed(&discord, ping).await?,
        (200, json!({"type": 1}))
    );
    assert_eq!(endpoint.post(ping, &[]).await?.0, 401);

    let body = command(2);
    let (signature, timestamp) = discord.sign(&body);
    let mut tampered = body.clone();
    tampered[8] = b'3';
    let now = timestamp.parse::<u64>()?;
    let (old_signature, old_timestamp) = discord.sign_at(now - 600, &body);
    let (foreign_signature, _) = DiscordSigner::from_seed(2).sign_at(now, &body);
    let cases: [(&str, &[u8], &str, &str, u16); 5] = [
        ("tampered body", &tampered, &signature, &timestamp, 401),
        (
            "tampered timestamp",
            &body,
            &signature,
            &(now + 1).to_string(),
            401,
        ),
        (
            "ten minutes old",
            &body,
            &old_signature,
            &old_timestamp,
            401,
        ),
        (
            "another application's key",
            &body,
            &foreign_signature,
            &timestamp,
            401,
        ),
        ("not hex", &body, "xyz", &timestamp, 401),
    ];
    for (case, body, signature, timestamp, expected) in cases {
        let (status, _) = endpoint
            .post(
                body,
                &[
                    ("x-signature-ed25519", signature),
                    ("x-signature-timestamp", timestamp),
                ],
            )
            .await?;
        assert_eq!(status, expected, "{case}");
    }
    // Signed, but not an interaction; and over the size limit.
    assert_eq!(endpoint.post_signed(&discord, b"[1,2]").await?.0, 400);
    let big = format!(r#"{{"id":"3","type":2,"pad":"{}"}}"#, "x".repeat(5000));
    assert_eq!(endpoint.post_signed(&discord, big.as_bytes()).await?.0, 413);

    assert_eq!(stored(&js, &bot).await?, 0, "nothing refused was published");
    let refused = |reason: &str| {
        let series = format!("shardyard_interactions_refused_total{{reason=\"{reason}\"}}");
        let endpoint = &endpoint;
        async move { endpoint.metric(&series).await }
    };
    assert_eq!(refused("unsigned").await?, 1.0);
    assert_eq!(refused("bad_signature").await?, 4.0);
    assert_eq!(refused("stale_timestamp").await?, 1.0);
    assert_eq!(refused("malformed").await?, 1.0);
    assert_eq!(refused("too_large").await?, 1.0);
    assert_eq!(
        endpoint
            .metric("shardyard_interactions_requests_total{type=\"ping\"}")
            .await?,
        1.0
    );
    Ok(())
}

/// A worker's side, by hand: a consumer of the bot's interactions from now on.
async fn interaction_consumer(
    js: &jetstream::Context,
    bot: &BotKey,
) -> anyhow::Result<jetstream::consumer::Consumer<jetstream::consumer::pull::Config>> {
    Ok(js
        .get_stream(bot.stream())
        .await?
        .create_consumer(jetstream::consumer::pull::Config {
            filter_subject: bot.event_type_filter("INTERACTION_CREATE"),
            deliver_policy: jetstream::consumer::DeliverPolicy::New,
            ..Default::default()
        })
        .await?)
}

/// Takes the next interaction and, `after` a while, answers `response` on its reply subject;
/// returns its headers, its subject and the endpoint's reply.
async fn answer_next(
    nats: &NatsServer,
    consumer: &jetstream::consumer::Consumer<jetstream::consumer::pull::Config>,
    response: serde_json::Value,
    after: Duration,
) -> anyhow::Result<(async_nats::HeaderMap, String, InteractionReply)> {
    let message = consumer
        .messages()
        .await?
        .next()
        .await
        .context("no interaction in the stream")?
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    message.ack().await.map_err(|e| anyhow::anyhow!("{e}"))?;
    let message_headers = message.headers.clone().context("no headers")?;
    let reply_to = message_headers
        .get(headers::REPLY_TO)
        .context("no reply subject")?
        .to_string();
    tokio::time::sleep(after).await;
    let reply = nats
        .connect()
        .await?
        .request(reply_to, serde_json::to_vec(&response)?.into())
        .await?;
    Ok((
        message_headers,
        message.subject.to_string(),
        serde_json::from_slice(&reply.payload)?,
    ))
}

#[tokio::test]
async fn a_workers_answer_in_time_is_discords_response_and_a_replay_is_refused()
-> anyhow::Result<()> {
    let nats = NatsServer::start().await?;
    let bot = BotKey::local("answers")?;
    let js = create_event_stream(&nats, &bot).await?;
    let discord = DiscordSigner::from_seed(3);
    let endpoint =
        InteractionsProcess::start(&nats, bot.as_str(), &discord.public_key_hex(), &[]).await?;
    endpoint.wait_ready(Duration::from_secs(10)).await?;

    let pong = json!({"type": 4, "data": {"content": "pong"}});
    let consumer = interaction_consumer(&js, &bot).await?;
    let worker = answer_next(&nats, &consumer, pong.clone(), Duration::ZERO);
    let body = command(42);
    let started = Instant::now();
    let (http, (message_headers, subject, reply)) =
        tokio::try_join!(endpoint.post_signed(&discord, &body), worker)?;
    assert_eq!(
        http,
        (200, pong),
        "the worker's answer is the HTTP response"
    );
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(reply, InteractionReply::Answered);
    // Published as the contract says: `http` for a shard, the id as the message id, no shard.
    assert_eq!(subject, "shardyard.answers.events.http.INTERACTION_CREATE");
    assert_eq!(
        message_headers.get(headers::MSG_ID).map(|v| v.to_string()),
        Some("interaction:42".to_owned())
    );
    assert_eq!(
        message_headers.get(headers::EVENT).map(|v| v.to_string()),
        Some("INTERACTION_CREATE".to_owned())
    );
    assert!(message_headers.get(headers::SHARD).is_none());
    assert!(message_headers.get(headers::RECEIVED_AT).is_some());

    // The same signed request again: refused, stored once.
    assert_eq!(endpoint.post_signed(&discord, &body).await?.0, 401);
    assert_eq!(stored(&js, &bot).await?, 1);
    assert_eq!(
        endpoint
            .metric("shardyard_interactions_refused_total{reason=\"replayed\"}")
            .await?,
        1.0
    );
    Ok(())
}

/// SIGTERM: `/readyz` says not ready at once, requests are still answered for the drain (a
/// Service's endpoints lag behind a terminating pod), then the process exits.
#[tokio::test]
async fn after_sigterm_requests_are_taken_for_the_drain_then_it_exits() -> anyhow::Result<()> {
    let nats = NatsServer::start().await?;
    let bot = BotKey::local("drain")?;
    create_event_stream(&nats, &bot).await?;
    let discord = DiscordSigner::from_seed(6);
    let mut endpoint = InteractionsProcess::start(
        &nats,
        bot.as_str(),
        &discord.public_key_hex(),
        &["--drain-secs", "2"],
    )
    .await?;
    endpoint.wait_ready(Duration::from_secs(10)).await?;
    let ping = br#"{"id":"1","application_id":"100","type":1,"token":"t","version":1}"#;
    endpoint.process().sigterm()?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        endpoint.admin_get("/readyz").await.is_err(),
        "not ready once terminating"
    );
    assert_eq!(
        endpoint.post_signed(&discord, ping).await?,
        (200, json!({"type": 1})),
        "still answering during the drain"
    );
    let status = endpoint
        .process()
        .wait_exit(Duration::from_secs(10))
        .await?;
    assert!(status.success(), "{status}");
    Ok(())
}

/// Two replicas behind one Service: each holds its own requests and gets the answers to them.
#[tokio::test]
async fn replicas_each_answer_the_requests_they_hold() -> anyhow::Result<()> {
    let nats = NatsServer::start().await?;
    let bot = BotKey::local("replicas")?;
    let js = create_event_stream(&nats, &bot).await?;
    let discord = DiscordSigner::from_seed(5);
    let key = discord.public_key_hex();
    let (first, second) = tokio::try_join!(
        InteractionsProcess::start(&nats, bot.as_str(), &key, &[]),
        InteractionsProcess::start(&nats, bot.as_str(), &key, &[]),
    )?;
    first.wait_ready(Duration::from_secs(10)).await?;
    second.wait_ready(Duration::from_secs(10)).await?;
    let consumer = interaction_consumer(&js, &bot).await?;
    for (n, replica) in [(30_u64, &first), (31, &second), (32, &first), (33, &second)] {
        let answer = json!({"type": 4, "data": {"content": format!("answer {n}")}});
        let body = command(n);
        let (http, (_, _, reply)) = tokio::try_join!(
            replica.post_signed(&discord, &body),
            answer_next(&nats, &consumer, answer.clone(), Duration::ZERO),
        )?;
        assert_eq!(http, (200, answer), "interaction {n}");
        assert_eq!(reply, InteractionReply::Answered);
    }
    for replica in [&first, &second] {
        assert_eq!(
            replica
                .metric("shardyard_interactions_requests_total{type=\"command\"}")
                .await?,
            2.0
        );
    }
    Ok(())
}

#[tokio::test]
async fn without_an_answer_in_time_each_type_is_deferred_as_discord_allows() -> anyhow::Result<()> {
    let nats = NatsServer::start().await?;
    let bot = BotKey::local("deferrals")?;
    let js = create_event_stream(&nats, &bot).await?;
    let discord = DiscordSigner::from_seed(4);
    let endpoint = InteractionsProcess::start(
        &nats,
        bot.as_str(),
        &discord.public_key_hex(),
        &["--answer-within-ms", "300"],
    )
    .await?;
    endpoint.wait_ready(Duration::from_secs(10)).await?;

    // Nobody answers: command → 5, component → 6, autocomplete → no choices, modal → 5.
    for (id, kind, expected) in [
        (10, 2, json!({"type": 5})),
        (11, 3, json!({"type": 6})),
        (12, 4, json!({"type": 8, "data": {"choices": []}})),
        (13, 5, json!({"type": 5})),
    ] {
        let body = serde_json::to_vec(&json!({"id": id.to_string(), "type": kind, "token": "t"}))?;
        let started = Instant::now();
        assert_eq!(
            endpoint.post_signed(&discord, &body).await?,
            (200, expected),
            "type {kind}"
        );
        assert!(started.elapsed() >= Duration::from_millis(300));
    }
    assert_eq!(stored(&js, &bot).await?, 4);

    // A worker that answers after the deferral is told so, to edit the original instead.
    let consumer = interaction_consumer(&js, &bot).await?;
    let late = answer_next(
        &nats,
        &consumer,
        json!({"type": 4, "data": {"content": "late"}}),
        Duration::from_millis(600),
    );
    let body = command(20);
    let (http, worker) = tokio::join!(endpoint.post_signed(&discord, &body), late);
    assert_eq!(http?, (200, json!({"type": 5})));
    let (_, _, reply) = worker?;
    assert_eq!(reply, InteractionReply::Deferred { deferred_with: 5 });
    assert!(
        endpoint
            .metric("shardyard_interactions_late_answers_total")
            .await?
            >= 1.0
    );
    assert_eq!(
        endpoint
            .metric("shardyard_interactions_deferred_total{type=\"component\"}")
            .await?,
        1.0
    );
    Ok(())
}

/// A whole bot whose application sends interactions to `shardyard interactions`: the simulator
/// (Discord), NATS, a gateway (it creates the stream), the REST proxy, the example bot, and the
/// endpoint, set as the application's Interactions Endpoint URL through Discord's own check.
struct HttpBot {
    nats: NatsServer,
    sim: shardyard_tests::SimProcess,
    _gateway: shardyard_tests::GatewayProcess,
    _rest: shardyard_tests::RestProcess,
    worker: shardyard_tests::WorkerProcess,
    endpoint: InteractionsProcess,
    verify_key: String,
    bot: BotKey,
}

impl HttpBot {
    async fn start(name: &str, endpoint_flags: &[&str]) -> anyhow::Result<Self> {
        use shardyard_tests::{GatewayProcess, RestProcess, SimArgs, SimProcess, WorkerProcess};
        let nats = NatsServer::start().await?;
        let sim = SimProcess::start(SimArgs {
            guilds: 4,
            ..SimArgs::default()
        })
        .await?;
        let gateway = GatewayProcess::start(&sim, &nats, name, 1, 0..1, &[]).await?;
        gateway.wait_ready(Duration::from_secs(30)).await?;
        let rest = RestProcess::start(&sim, &[]).await?;
        let worker = WorkerProcess::start_example(&nats, &rest, name, &[]).await?;
        let application =
            discord_api(&sim, reqwest::Method::GET, "/applications/@me", None).await?;
        let verify_key = application["verify_key"]
            .as_str()
            .context("no verify_key")?
            .to_owned();
        let endpoint = InteractionsProcess::start(&nats, name, &verify_key, endpoint_flags).await?;
        endpoint.wait_ready(Duration::from_secs(20)).await?;
        let bot = Self {
            nats,
            sim,
            _gateway: gateway,
            _rest: rest,
            worker,
            endpoint,
            verify_key,
            bot: BotKey::local(name)?,
        };
        bot.point_discord_at_the_endpoint().await?;
        Ok(bot)
    }

    /// `PATCH /applications/@me {"interactions_endpoint_url"}`: Discord checks the endpoint (a
    /// PING, and one badly signed that must get 401) before it saves the URL.
    async fn point_discord_at_the_endpoint(&self) -> anyhow::Result<()> {
        let url = self.endpoint.url();
        let application = discord_api(
            &self.sim,
            reqwest::Method::PATCH,
            "/applications/@me",
            Some(json!({"interactions_endpoint_url": url})),
        )
        .await
        .with_context(|| self.endpoint.log_report())?;
        anyhow::ensure!(
            application["interactions_endpoint_url"] == json!(url),
            "the URL was not saved: {application}"
        );
        Ok(())
    }

    /// Every answer the simulator recorded for interaction `id`.
    async fn answers(&self, id: &serde_json::Value) -> anyhow::Result<Vec<serde_json::Value>> {
        let all = self.sim.get_json("/_sim/rest/interactions").await?;
        Ok(all
            .as_array()
            .map(|all| all.iter().filter(|c| &c["id"] == id).cloned().collect())
            .unwrap_or_default())
    }
}

/// A request to the simulator's REST API with the bot token; the JSON answer, or an error with
/// the status and body.
async fn discord_api(
    sim: &shardyard_tests::SimProcess,
    method: reqwest::Method,
    path: &str,
    body: Option<serde_json::Value>,
) -> anyhow::Result<serde_json::Value> {
    let mut request = reqwest::Client::new()
        .request(method, format!("{}{path}", sim.api_base()))
        .header("authorization", format!("Bot {}", sim.token()));
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await?;
    let status = response.status();
    let body: serde_json::Value = response.json().await.unwrap_or_default();
    anyhow::ensure!(status.is_success(), "{path}: {status} {body}");
    Ok(body)
}

#[tokio::test]
async fn the_example_bot_answers_a_slash_command_through_the_endpoint_within_3_s()
-> anyhow::Result<()> {
    let bot = HttpBot::start("httpbot", &[]).await?;
    let issued = bot
        .sim
        .post_json("/_sim/interactions", &json!({"name": "ping"}))
        .await?;
    assert_eq!(
        issued["via"], "http",
        "Discord sends it to the endpoint: {issued}"
    );
    let answer =
        shardyard_tests::eventually(Duration::from_secs(10), "the endpoint's answer", || async {
            bot.answers(&issued["id"])
                .await?
                .into_iter()
                .find(|a| a["via"] == "endpoint")
                .context("not answered yet")
        })
        .await
        .with_context(|| bot.worker.log_report())?;
    assert_eq!(answer["status"], 200, "{answer}");
    assert_eq!(answer["type"], 4, "{answer}");
    assert_eq!(answer["data"]["content"], "pong", "{answer}");
    let response_ms = answer["response_ms"].as_u64().context("no response_ms")?;
    assert!(response_ms < 3000, "answered in {response_ms} ms");
    // The worker handled it as any interaction, and it is in the stream once, by its id.
    assert_eq!(bot.worker.handled("INTERACTION_CREATE", "ok").await?, 1);
    let js = bot.nats.jetstream().await?;
    let message = js
        .get_stream(bot.bot.stream())
        .await?
        .get_last_raw_message_by_subject(&bot.bot.http_event_subject("INTERACTION_CREATE"))
        .await?;
    assert_eq!(
        message.headers.get(headers::MSG_ID).map(|v| v.to_string()),
        Some(format!(
            "interaction:{}",
            issued["id"].as_str().unwrap_or_default()
        ))
    );
    assert_eq!(bot.sim.stats().await?["violations"], json!([]));
    assert!(!bot.endpoint.log_report().contains(bot.sim.token()));
    Ok(())
}

#[tokio::test]
async fn a_late_answer_follows_the_deferral_as_an_edit_of_the_original() -> anyhow::Result<()> {
    // The endpoint defers at once: every answer of the example bot comes late.
    let bot = HttpBot::start("slowbot", &["--answer-within-ms", "1"]).await?;
    let issued = bot
        .sim
        .post_json("/_sim/interactions", &json!({"name": "ping"}))
        .await?;
    let answers = shardyard_tests::eventually(
        Duration::from_secs(10),
        "the deferral and the edit",
        || async {
            let answers = bot.answers(&issued["id"]).await?;
            anyhow::ensure!(
                answers.iter().any(|a| a["via"] == "edit_original"),
                "no edit yet: {answers:?}"
            );
            Ok(answers)
        },
    )
    .await
    .with_context(|| bot.worker.log_report())?;
    let deferral = answers
        .iter()
        .find(|a| a["via"] == "endpoint")
        .context("no endpoint answer")?;
    assert_eq!(
        (deferral["status"].clone(), deferral["type"].clone()),
        (json!(200), json!(5))
    );
    let edit = answers
        .iter()
        .find(|a| a["via"] == "edit_original")
        .context("no edit")?;
    assert_eq!(edit["status"], 200, "{edit}");
    assert_eq!(edit["data"]["content"], "pong", "{edit}");
    assert_eq!(
        bot.endpoint
            .metric("shardyard_interactions_deferred_total{type=\"command\"}")
            .await?,
        1.0
    );
    assert_eq!(
        bot.endpoint
            .metric("shardyard_interactions_late_answers_total")
            .await?,
        1.0
    );
    assert_eq!(bot.sim.stats().await?["violations"], json!([]));
    Ok(())
}

/// Interactions go on while the endpoint is killed with `-9` and started again. Every
/// interaction the endpoint answered 200 ends answered for good: a message, or a deferral
/// followed by its edit (the worker's answer for a deferral whose endpoint died goes by
/// callback, learns it was acknowledged, and edits). Those it held when it died were never
/// answered 200 (Discord shows them as failed), and nothing answered 200 is missing from the
/// stream.
#[tokio::test]
async fn killing_the_endpoint_mid_traffic_loses_no_interaction_answered_200() -> anyhow::Result<()>
{
    // Deferring at once makes every answer late. The worker is paused while the first ones are
    // deferred and the endpoint is killed: their answers find no endpoint, and must still arrive.
    let mut bot = HttpBot::start("killbot", &["--answer-within-ms", "1"]).await?;
    let signal = |name: &str, pid: u32| {
        std::process::Command::new("kill")
            .args([name, &pid.to_string()])
            .status()
    };
    let worker_pid = bot.worker.process().pid();
    signal("-STOP", worker_pid)?;
    let mut issued = Vec::new();
    let mut orphaned = Vec::new();
    for phase in ["paused worker", "endpoint down", "endpoint restarted"] {
        for _ in 0..6 {
            let interaction = bot
                .sim
                .post_json("/_sim/interactions", &json!({"name": "ping"}))
                .await?;
            issued.push(interaction["id"].clone());
            if phase == "paused worker" {
                orphaned.push(interaction["id"].clone());
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        match phase {
            "paused worker" => {
                // Every one deferred (answered 200) before the endpoint dies.
                for id in &orphaned {
                    shardyard_tests::eventually(Duration::from_secs(5), "deferred", || async {
                        anyhow::ensure!(
                            bot.answers(id).await?.iter().any(|a| a["status"] == 200),
                            "not yet"
                        );
                        Ok(())
                    })
                    .await?;
                }
                bot.endpoint.process().kill_9()?;
                signal("-CONT", worker_pid)?;
            }
            "endpoint down" => {
                // A new process on the same address, as a restarted pod behind its Service.
                let port = bot.endpoint.port();
                bot.endpoint = InteractionsProcess::start_at(
                    &bot.nats,
                    bot.bot.as_str(),
                    &bot.verify_key,
                    port,
                    &["--answer-within-ms", "1"],
                )
                .await?;
                bot.endpoint.wait_ready(Duration::from_secs(20)).await?;
            }
            _ => {}
        }
    }
    let js = bot.nats.jetstream().await?;
    let stream = js.get_stream(bot.bot.stream()).await?;
    let mut answered_200 = 0;
    for id in &issued {
        let answers = shardyard_tests::eventually(
            Duration::from_secs(15),
            "every interaction answered 200 is answered for good",
            || async {
                let answers = bot.answers(id).await?;
                let endpoint_200 = answers
                    .iter()
                    .any(|a| a["via"] == "endpoint" && a["status"] == 200);
                let edited = answers
                    .iter()
                    .any(|a| a["via"] == "edit_original" && a["status"] == 200);
                let failed = answers
                    .iter()
                    .any(|a| a["via"] == "endpoint" && a["status"] != 200);
                anyhow::ensure!(
                    failed || (endpoint_200 && edited),
                    "interaction {id}: {answers:?}"
                );
                Ok(answers)
            },
        )
        .await
        .with_context(|| bot.worker.log_report())?;
        if answers
            .iter()
            .any(|a| a["via"] == "endpoint" && a["status"] == 200)
        {
            answered_200 += 1;
            let subject = bot.bot.http_event_subject("INTERACTION_CREATE");
            let mut found = false;
            let info = stream.clone().info().await?.state.messages;
            for sequence in 1..=info {
                if let Ok(message) = stream.get_raw_message(sequence).await
                    && message.subject.as_str() == subject
                    && message.headers.get(headers::MSG_ID).map(|v| v.to_string())
                        == Some(format!("interaction:{}", id.as_str().unwrap_or_default()))
                {
                    found = true;
                    break;
                }
            }
            assert!(
                found,
                "interaction {id} was answered 200 but is not in the stream"
            );
        }
    }
    // Before the kill and after the restart the endpoint answered.
    assert!(
        answered_200 >= 12,
        "{answered_200} of {} answered 200",
        issued.len()
    );
    // The paused worker's answers went by callback, were told "already acknowledged", and
    // became the edits checked above.
    for id in &orphaned {
        let answers = bot.answers(id).await?;
        assert!(
            answers
                .iter()
                .any(|a| a["via"] == "callback" && a["status"] == 400),
            "interaction {id} was answered by callback after the endpoint died: {answers:?}"
        );
    }
    Ok(())
}
