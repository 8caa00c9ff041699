//! A blue/green reshard end to end (issue 14): the operator on the real control plane, the
//! simulator as Discord with traffic, real NATS, and each gateway generation's pods run as
//! processes with the arguments the StatefulSet gives them (a control plane without a node;
//! `in_cluster.rs` reshards pods).
//! From 2 to 4 shards: the identify budget holds it back until the day's starts cover it; the
//! new generation starts beside the old one; the operator is killed mid-way and its successor
//! carries on; the new generation takes over with an overlap; the old one is retired. The
//! stream is then compared with what the simulator dispatched to every session: nothing a
//! publishing generation received is missing, each generation's run is unbroken, and no event
//! both received falls between them.

use std::time::Duration;

use anyhow::Context as _;
use k8s_openapi::api::apps::v1::StatefulSet;
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::json;
use shardyard_operator::{DiscordBot, ReshardPhase};
use shardyard_protocol::BotKey;
use shardyard_protocol::names::{ACTIVE_GENERATION_KEY, keys};
use shardyard_tests::ground_truth::{check_handover, read_stream_events, session_logs};
use shardyard_tests::operator::{OperatorProcess, start_pods};
use shardyard_tests::{
    KubeCluster, NatsServer, RestProcess, SimArgs, SimProcess, admin_get, eventually, metric_value,
};

/// The bot's `Resharding` condition: (status, reason).
fn resharding(bot: &DiscordBot) -> Option<(String, String)> {
    bot.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == "Resharding")
        .map(|c| (c.status.clone(), c.reason.clone()))
}

#[tokio::test]
async fn a_reshard_hands_over_without_a_gap_through_a_budget_hold_and_an_operator_restart()
-> anyhow::Result<()> {
    let cluster = KubeCluster::start().await?;
    cluster.apply_discordbot_crd().await?;
    let nats = NatsServer::start().await?;
    let sim = SimProcess::start(SimArgs {
        guilds: 40,
        max_concurrency: 2,
        events_per_second: 100.0,
        ..SimArgs::default()
    })
    .await?;
    // The bot's REST proxy, which the gateways ask `GET /gateway/bot` through.
    let rest = RestProcess::start(&sim, &[]).await?;
    let services = [("big-rest.default.svc:8080", rest.addr())];
    let client = cluster.client().await?;
    let mut operator = OperatorProcess::start(&cluster, "op-a", &sim.api_base(), &[]).await?;
    cluster
        .token_secret("default", "big-token", sim.token())
        .await?;
    let manifest = |shards: u32| {
        format!(
            "apiVersion: shardyard.dev/v1alpha1\nkind: DiscordBot\nmetadata: {{name: big, namespace: default}}\n\
             spec:\n  tokenSecret: {{name: big-token}}\n  shards: {shards}\n  shardsPerPod: 2\n  \
             intents: [GUILDS, GUILD_MESSAGES, GUILD_MESSAGE_REACTIONS, GUILD_MESSAGE_TYPING]\n  \
             discord: {{apiBase: '{}'}}\n  nats: {{url: '{}'}}\n",
            sim.api_base(),
            nats.url()
        )
    };
    cluster.apply(&manifest(2)).await?;
    let bots: Api<DiscordBot> = Api::namespaced(client.clone(), "default");
    let sets: Api<StatefulSet> = Api::namespaced(client.clone(), "default");
    eventually(Duration::from_secs(60), "generation 1 planned", || async {
        sets.get("big-gateway-g1").await?;
        Ok(())
    })
    .await
    .with_context(|| operator.log_report())?;
    let mut old_pods = start_pods(&client, "default", "big-gateway-g1", &services).await?;
    eventually(Duration::from_secs(60), "generation 1 is READY", || async {
        for pod in &old_pods {
            pod.admin_get("/readyz").await?;
        }
        Ok(())
    })
    .await?;

    // The budget: the gateways' key says too few session starts are left for 4 new shards.
    let bot_key = BotKey::namespaced("default", "big")?;
    let js = nats.jetstream().await?;
    let identify = js.get_key_value(bot_key.identify_bucket()).await?;
    let budget = |remaining: u32| {
        json!({"remaining": remaining, "total": 1000, "reset_at_ms": 4_102_444_800_000u64, "by": "test"})
            .to_string()
    };
    identify
        .put(keys::IDENTIFY_BUDGET, budget(3).into())
        .await?;
    bots.patch(
        "big",
        &PatchParams::apply("test").force(),
        &Patch::Apply(serde_saphyr::from_str::<serde_json::Value>(&manifest(4))?),
    )
    .await?;
    eventually(
        Duration::from_secs(60),
        "held back by the budget",
        || async {
            let bot = bots.get("big").await?;
            anyhow::ensure!(
                resharding(&bot) == Some(("True".into(), "IdentifyBudgetLow".into())),
                "{:?}",
                resharding(&bot)
            );
            Ok(())
        },
    )
    .await
    .with_context(|| operator.log_report())?;
    assert!(
        sets.get_opt("big-gateway-g2").await?.is_none(),
        "no new generation while held"
    );

    // The allowance comes back: the new generation starts beside the old one.
    identify
        .put(keys::IDENTIFY_BUDGET, budget(990).into())
        .await?;
    eventually(Duration::from_secs(90), "generation 2 starts", || async {
        let bot = bots.get("big").await?;
        anyhow::ensure!(
            resharding(&bot) == Some(("True".into(), "StartingGeneration".into())),
            "{:?}",
            resharding(&bot)
        );
        sets.get("big-gateway-g2").await?;
        Ok(())
    })
    .await
    .with_context(|| operator.log_report())?;
    let control = js.get_key_value(bot_key.control_bucket()).await?;
    let active = control
        .get(ACTIVE_GENERATION_KEY)
        .await?
        .context("active")?;
    assert_eq!(&active[..], b"1", "the new generation does not publish yet");

    // The operator dies mid-reshard; its successor reads where it was from the status.
    operator.process().kill_9()?;
    let operator = OperatorProcess::start(&cluster, "op-b", &sim.api_base(), &[]).await?;
    let new_pods = start_pods(&client, "default", "big-gateway-g2", &services).await?;
    assert_eq!(new_pods.len(), 2, "4 shards at 2 per pod");

    eventually(
        Duration::from_secs(120),
        "generation 2 takes over",
        || async {
            let bot = bots.get("big").await?;
            let status = bot.status.clone().context("status")?;
            if let Some(reshard) = &status.reshard {
                anyhow::ensure!(
                    reshard.phase != ReshardPhase::Starting || reshard.generation == 2,
                    "{reshard:?}"
                );
            }
            anyhow::ensure!(
                status.gateway_generation == Some(2) && status.reshard.is_none(),
                "{:?}",
                status
            );
            anyhow::ensure!(
                sets.get_opt("big-gateway-g1").await?.is_none(),
                "g1 still there"
            );
            Ok(())
        },
    )
    .await
    .with_context(|| operator.log_report())?;
    let active = control
        .get(ACTIVE_GENERATION_KEY)
        .await?
        .context("active")?;
    assert_eq!(&active[..], b"2");
    let bot = bots.get("big").await?;
    assert_eq!(bot.status.as_ref().and_then(|s| s.shards), Some(4));
    eventually(
        Duration::from_secs(20),
        "the new shards count as ready",
        || async {
            let ready = bots.get("big").await?.status.and_then(|s| s.ready_shards);
            anyhow::ensure!(ready == Some(4), "{ready:?}");
            Ok(())
        },
    )
    .await?;
    assert_eq!(resharding(&bot), Some(("False".into(), "Stable".into())));
    for shard in 0..2 {
        assert!(
            control
                .get(keys::generation_ready(1, shard))
                .await?
                .is_none(),
            "the old generation's ready keys are gone"
        );
    }

    // The old generation's StatefulSet is gone, so Kubernetes would stop its pods.
    for pod in &mut old_pods {
        pod.process().terminate(Duration::from_secs(15)).await?;
    }
    sim.post_json("/_sim/traffic", &json!({"events_per_second": 0}))
        .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;

    let logs = session_logs(&sim).await?;
    let stored = eventually(Duration::from_secs(20), "the stream settles", || async {
        read_stream_events(&js, &bot_key).await
    })
    .await?;
    let report = check_handover(&logs, &stored, 2, 4);
    eprintln!(
        "hand-over: {} stored events, {} events both generations received, {} stored twice \
         (the overlap)",
        stored.len(),
        report.shared,
        report.duplicates
    );
    assert!(report.problems.is_empty(), "{:#?}", report.problems);
    assert!(
        report.shared > 0,
        "the generations overlapped in what they received"
    );
    let stats = sim.stats().await?;
    assert_eq!(
        stats["violations"],
        json!([]),
        "Discord's rules held throughout"
    );
    // Each pod of both generations (1 + 2) asked for the gateway through the bot's proxy.
    let metrics = admin_get(rest.admin_addr(), "/metrics").await?;
    let asked = metric_value(
        &metrics,
        r#"shardyard_rest_requests_total{method="GET",route="/gateway/bot",status="200"}"#,
    );
    assert!(
        asked >= Some(3.0),
        "GET /gateway/bot through the proxy: {asked:?}"
    );
    drop(new_pods);
    Ok(())
}
