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
use shardyard_tests::interactions::{DiscordSigner, InteractionsProcess};

/// The bot's stream, as the operator (or a gateway) creates it.
async fn create_stream(nats: &NatsServer, bot: &BotKey) -> anyhow::Result<jetstream::Context> {
    let js = nats.jetstream().await?;
    js.create_stream(jetstream::stream::Config {
        name: bot.stream(),
        subjects: vec![bot.events_filter()],
        duplicate_window: Duration::from_secs(300),
        ..Default::default()
    })
    .await?;
    Ok(js)
}

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
    let js = create_stream(&nats, &bot).await?;
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
    let js = create_stream(&nats, &bot).await?;
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

#[tokio::test]
async fn without_an_answer_in_time_each_type_is_deferred_as_discord_allows() -> anyhow::Result<()> {
    let nats = NatsServer::start().await?;
    let bot = BotKey::local("deferrals")?;
    let js = create_stream(&nats, &bot).await?;
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
