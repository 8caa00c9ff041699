//! The worker library and `shardyard worker` end to end, against a real nats-server (and, where
//! events come from Discord, the simulator, the gateway and the REST proxy): the example bot
//! answers through the proxy; a killed worker loses nothing; failures and bad payloads end on
//! the dead-letter subject with their reason; ordering mode keeps a guild's events in order.

use std::time::Duration;

use anyhow::Context as _;
use serde_json::{Value, json};
use shardyard_tests::{
    GatewayProcess, NatsServer, RestProcess, SimArgs, SimProcess, WorkerProcess, eventually,
};

fn as_u64(value: &Value) -> anyhow::Result<u64> {
    match value {
        Value::String(s) => Ok(s.parse()?),
        Value::Number(n) => n.as_u64().context("an id"),
        other => anyhow::bail!("not an id: {other}"),
    }
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
    .with_context(|| worker.log_report())?;

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
