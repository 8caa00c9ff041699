//! Several `shardyard rest --nats` replicas in front of one simulator, sharing one bot's
//! limits through a real nats-server: whatever replica a client calls, the simulator's ground
//! truth (`/_sim/stats`) must show no limit exceeded and no 429.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use serde_json::{Value, json};
use shardyard_tests::{
    NatsServer, RestProcess, SimArgs, SimProcess, eventually, rest_busiest_second_within,
    rest_rate_limited,
};

const TOKEN: &str = "MTEwMDAwMDAwMDAwMDAwMDAwMA.cluster-test.secret-token-value-4242";
const BOT: &str = "clusterbot";

async fn sim(guilds: u32) -> anyhow::Result<SimProcess> {
    SimProcess::start(SimArgs {
        token: TOKEN.to_owned(),
        guilds,
        ..SimArgs::default()
    })
    .await
}

/// POSTs a message through the replica at `api_base`: the status, the proxy's error kind
/// (`X-Shardyard-Error`) if it answered itself, and the body.
/// Posts one message to each of `channels`, sent to the replicas in turn, all at once; every
/// answer must be 200.
async fn post_round_robin(
    replicas: &[RestProcess],
    channels: &[u64],
    tag: &str,
) -> anyhow::Result<()> {
    let bases: Vec<String> = replicas.iter().map(RestProcess::api_base).collect();
    let http = reqwest::Client::new();
    let mut sends = Vec::new();
    for (i, channel) in channels.iter().copied().enumerate() {
        let http = http.clone();
        let base = bases[i % bases.len()].clone();
        let content = format!("{tag}-{i}");
        sends.push(tokio::spawn(async move {
            post_message(&http, &base, channel, &content).await
        }));
    }
    for send in sends {
        let (status, kind, body) = send.await??;
        anyhow::ensure!(status == 200, "{status} {kind:?} {body}");
    }
    Ok(())
}

async fn post_message(
    http: &reqwest::Client,
    api_base: &str,
    channel: u64,
    content: &str,
) -> anyhow::Result<(u16, Option<String>, Value)> {
    let response = http
        .post(format!("{api_base}/channels/{channel}/messages"))
        .json(&json!({ "content": content }))
        .send()
        .await?;
    let status = response.status().as_u16();
    let kind = response
        .headers()
        .get("x-shardyard-error")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = response.json::<Value>().await.unwrap_or(Value::Null);
    Ok((status, kind, body))
}

fn assert_no_violation(stats: &Value) {
    for kind in ["bucket_limit", "global_limit", "cloudflare_ban"] {
        assert_eq!(
            stats["violations"][kind].as_u64().unwrap_or(0),
            0,
            "{kind}: {}",
            stats["violations"]
        );
    }
}

/// Which replica keeps the token's limits (`shardyard_rest_cluster_owned_tokens` is 1 on it
/// and 0 on the others), once a request went through.
async fn owner_of(replicas: &[RestProcess]) -> anyhow::Result<usize> {
    let mut owners = Vec::new();
    for (i, replica) in replicas.iter().enumerate() {
        match replica
            .metric("shardyard_rest_cluster_owned_tokens")
            .await?
        {
            0.0 => {}
            1.0 => owners.push(i),
            other => anyhow::bail!("replica {i} owns {other} tokens"),
        }
    }
    anyhow::ensure!(owners.len() == 1, "owners: {owners:?}");
    Ok(owners[0])
}

#[tokio::test]
async fn twenty_clients_on_one_channel_over_three_replicas_get_no_upstream_429()
-> anyhow::Result<()> {
    let nats = NatsServer::start().await?;
    let sim = sim(1).await?;
    let replicas = RestProcess::start_replicas(&sim, &nats, BOT, 3, &[]).await?;
    let channel = replicas[1].text_channels(&sim, 1).await?[0];
    let owner = owner_of(&replicas).await?;
    let bases: Vec<String> = replicas.iter().map(RestProcess::api_base).collect();
    let http = reqwest::Client::new();

    // 20 clients at once, each on its own replica in turn, two messages one after the other,
    // all in one bucket of 5 per 5 s.
    let mut clients = Vec::new();
    for client in 0..20 {
        let http = http.clone();
        let base = bases[client % 3].clone();
        clients.push(tokio::spawn(async move {
            for n in 0..2 {
                let (status, kind, body) =
                    post_message(&http, &base, channel, &format!("c{client}-m{n}")).await?;
                anyhow::ensure!(status == 200, "c{client}-m{n}: {status} {kind:?} {body}");
            }
            Ok::<_, anyhow::Error>(())
        }));
    }
    for client in clients {
        client.await??;
    }

    let stats = sim.stats().await?;
    assert_eq!(
        rest_rate_limited(&stats),
        (0, 0, 0),
        "no 429 at the simulator"
    );
    assert_no_violation(&stats);
    let contents: Vec<String> = sim
        .get_json(&format!("/_sim/channels/{channel}/messages"))
        .await?
        .as_array()
        .context("messages")?
        .iter()
        .filter_map(|m| m["content"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(contents.len(), 40, "{contents:?}");
    assert_eq!(contents.iter().collect::<HashSet<_>>().len(), 40);
    // Only the owner sent anything upstream; the others forwarded.
    for (i, replica) in replicas.iter().enumerate() {
        let queued = replica
            .metric("shardyard_rest_requests_queued_total{token=\"default\"}")
            .await?;
        if i == owner {
            assert!(queued >= 40.0, "the owner queued {queued}");
        } else {
            assert_eq!(queued, 0.0, "replica {i} sent upstream itself");
        }
    }
    Ok(())
}

#[tokio::test]
async fn three_hundred_channels_over_three_replicas_stay_under_the_global_limit()
-> anyhow::Result<()> {
    let nats = NatsServer::start().await?;
    let sim = sim(64).await?;
    let replicas = RestProcess::start_replicas(&sim, &nats, BOT, 3, &[]).await?;
    let channels = replicas[0].text_channels(&sim, 300).await?;
    post_round_robin(&replicas, &channels, "wide").await?;
    let stats = sim.stats().await?;
    let max = rest_busiest_second_within(&stats, 50)?;
    assert!(
        max >= 30,
        "the replicas used the limit ({max} in the busiest second)"
    );
    assert_eq!(rest_rate_limited(&stats), (0, 0, 0));
    assert_no_violation(&stats);
    Ok(())
}

#[tokio::test]
async fn killing_the_owner_under_load_exceeds_no_limit_and_survivors_keep_answering()
-> anyhow::Result<()> {
    let nats = NatsServer::start().await?;
    let sim = sim(64).await?;
    let mut replicas = RestProcess::start_replicas(&sim, &nats, BOT, 3, &[]).await?;
    let channels = replicas[0].text_channels(&sim, 300).await?;
    let owner = owner_of(&replicas).await?;
    let survivors: Vec<String> = (0..3)
        .filter(|i| *i != owner)
        .map(|i| replicas[i].api_base())
        .collect();
    let before = sim.stats().await?["rest"]["requests"]
        .as_u64()
        .context("requests")?;

    // 60 clients through the two survivors (the owner sends everything upstream), 4 messages
    // each in turn over 240 channels: about five seconds of the global limit.
    const CLIENTS: usize = 60;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()?;
    let channels = Arc::new(channels);
    let mut clients = Vec::new();
    for client in 0..CLIENTS {
        let http = http.clone();
        let base = survivors[client % 2].clone();
        let channels = Arc::clone(&channels);
        clients.push(tokio::spawn(async move {
            let mut outcomes = Vec::new();
            for n in 0..4 {
                let channel = channels[n * CLIENTS + client];
                outcomes
                    .push(post_message(&http, &base, channel, &format!("k{client}-{n}")).await?);
            }
            Ok::<_, anyhow::Error>(outcomes)
        }));
    }

    // Kill the owner once the load is well under way (not by the clock: by what reached the
    // simulator).
    eventually(
        Duration::from_secs(30),
        "the load reaches the simulator",
        || async {
            let requests = sim.stats().await?["rest"]["requests"]
                .as_u64()
                .context("requests")?;
            anyhow::ensure!(requests >= before + 60, "{} so far", requests - before);
            Ok(())
        },
    )
    .await?;
    replicas[owner].process().kill_9()?;

    let mut ok = 0usize;
    let mut lost = 0usize;
    for client in clients {
        for (status, kind, body) in client.await?? {
            match (status, kind.as_deref()) {
                (200, None) => ok += 1,
                // Forwarded to the owner and not answered when it died: the message may or
                // may not have reached Discord, and a POST is not retried.
                (502, Some("replica_lost")) => lost += 1,
                other => panic!("unexpected answer {other:?}: {body}"),
            }
        }
    }
    eprintln!("after killing the owner: {ok} answered, {lost} lost");
    assert_eq!(ok + lost, 4 * CLIENTS);
    // Lost: at most one request per client, the one it had out when the owner died.
    assert!(lost <= CLIENTS, "{lost} requests lost");
    assert!(ok >= 3 * CLIENTS, "only {ok} answered");

    // The survivors still serve, as a pair now.
    for (i, base) in survivors.iter().enumerate() {
        let survivor = replicas
            .iter()
            .find(|r| r.api_base() == *base)
            .context("survivor")?;
        survivor.wait_members(2).await?;
        let (status, kind, body) =
            post_message(&http, base, channels[0], &format!("after-{i}")).await?;
        assert_eq!(status, 200, "{kind:?} {body}");
    }

    // One survivor took the token over.
    let survivors_now: Vec<RestProcess> = {
        let mut all = replicas;
        all.remove(owner);
        all
    };
    owner_of(&survivors_now).await?;

    let stats = sim.stats().await?;
    assert_eq!(
        rest_rate_limited(&stats),
        (0, 0, 0),
        "no 429 at the simulator, across the takeover"
    );
    assert_no_violation(&stats);
    rest_busiest_second_within(&stats, 50)?;
    let mut stored = 0;
    for channel in channels.iter().take(4 * CLIENTS) {
        stored += sim
            .get_json(&format!("/_sim/channels/{channel}/messages"))
            .await?
            .as_array()
            .context("messages")?
            .iter()
            .filter(|m| m["content"].as_str().is_some_and(|c| c.starts_with('k')))
            .count();
    }
    assert!(
        stored >= ok && stored <= ok + lost,
        "{stored} messages stored for {ok} answered and {lost} lost"
    );
    Ok(())
}

#[tokio::test]
async fn replicas_keep_their_view_and_the_limits_when_nats_goes_away() -> anyhow::Result<()> {
    let mut nats = NatsServer::start().await?;
    let sim = sim(64).await?;
    let replicas = RestProcess::start_replicas(&sim, &nats, BOT, 3, &[]).await?;
    let channels = replicas[0].text_channels(&sim, 300).await?;
    nats.kill_9()?;
    // Longer than a member's time-to-live (3 s): silence alone would have left each replica
    // alone, each taking the token for itself.
    tokio::time::sleep(Duration::from_secs(5)).await;
    for replica in &replicas {
        assert_eq!(
            replica.metric("shardyard_rest_cluster_members").await?,
            3.0,
            "{}",
            replica.log_report()
        );
    }
    post_round_robin(&replicas, &channels, "cut").await?;
    let stats = sim.stats().await?;
    rest_busiest_second_within(&stats, 50)?;
    assert_eq!(rest_rate_limited(&stats), (0, 0, 0));
    assert_no_violation(&stats);
    Ok(())
}

#[tokio::test]
async fn stopping_the_owner_with_sigterm_under_load_loses_nothing() -> anyhow::Result<()> {
    let nats = NatsServer::start().await?;
    let sim = sim(64).await?;
    let mut replicas = RestProcess::start_replicas(&sim, &nats, BOT, 3, &[]).await?;
    let channels = replicas[0].text_channels(&sim, 200).await?;
    let owner = owner_of(&replicas).await?;
    let survivors: Vec<String> = (0..3)
        .filter(|i| *i != owner)
        .map(|i| replicas[i].api_base())
        .collect();
    let before = sim.stats().await?["rest"]["requests"]
        .as_u64()
        .context("requests")?;
    let http = reqwest::Client::new();
    let mut sends = Vec::new();
    for (i, channel) in channels.iter().copied().enumerate() {
        let http = http.clone();
        let base = survivors[i % 2].clone();
        sends.push(tokio::spawn(async move {
            post_message(&http, &base, channel, &format!("term-{i}")).await
        }));
    }
    eventually(
        Duration::from_secs(30),
        "the load reaches the simulator",
        || async {
            let requests = sim.stats().await?["rest"]["requests"]
                .as_u64()
                .context("requests")?;
            anyhow::ensure!(requests >= before + 50, "{} so far", requests - before);
            Ok(())
        },
    )
    .await?;
    replicas[owner].process().sigterm()?;
    for send in sends {
        let (status, kind, body) = send.await??;
        assert_eq!(status, 200, "{kind:?} {body}");
    }
    replicas[owner]
        .process()
        .wait_exit(Duration::from_secs(30))
        .await?;
    let stats = sim.stats().await?;
    assert_eq!(
        rest_rate_limited(&stats),
        (0, 0, 0),
        "no 429 across the handover"
    );
    assert_no_violation(&stats);
    rest_busiest_second_within(&stats, 50)?;
    Ok(())
}
