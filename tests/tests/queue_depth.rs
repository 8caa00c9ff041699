//! The queue depth the workers scale on (`shardyard_operator::queue_depth`), against a real
//! nats-server: both the waiting and the unacknowledged events count; a missing stream or
//! consumer, and NATS gone, are errors rather than a number an autoscaler could act on.

use std::time::Duration;

use async_nats::jetstream::{consumer, stream};
use futures_util::StreamExt as _;
use shardyard_operator::queue_depth::{DepthError, QueueDepth, read};
use shardyard_protocol::BotKey;
use shardyard_protocol::names::worker_consumer;
use shardyard_tests::NatsServer;

#[tokio::test]
async fn pending_and_unacknowledged_events_both_count_and_a_missing_consumer_is_an_error()
-> anyhow::Result<()> {
    let mut nats = NatsServer::start().await?;
    let js = nats.jetstream().await?;
    let key = BotKey::namespaced("default", "mybot")?;

    let no_stream = read(&js, &key, None).await;
    assert_eq!(
        no_stream,
        Err(DepthError::StreamMissing {
            stream: key.stream()
        })
    );

    js.create_stream(stream::Config {
        name: key.stream(),
        subjects: vec![key.events_filter()],
        ..Default::default()
    })
    .await?;
    for n in 0..10 {
        js.publish(
            key.event_subject(n % 2, "MESSAGE_CREATE"),
            format!("{{\"n\":{n}}}").into(),
        )
        .await?
        .await?;
    }
    // Events are stored, but no worker has made its consumer: not zero, unknown.
    let no_consumer = read(&js, &key, None).await;
    assert!(
        matches!(&no_consumer, Err(DepthError::ConsumerMissing { consumer, .. }) if *consumer == worker_consumer(None)),
        "{no_consumer:?}"
    );

    let workers = js
        .create_consumer_on_stream(
            consumer::pull::Config {
                durable_name: Some(worker_consumer(None)),
                ack_policy: consumer::AckPolicy::Explicit,
                ack_wait: Duration::from_secs(60),
                ..Default::default()
            },
            key.stream(),
        )
        .await?;
    assert_eq!(
        read(&js, &key, None).await?,
        QueueDepth {
            num_pending: 10,
            num_ack_pending: 0
        }
    );

    // Three delivered and in a worker's hands: still waiting for the workers.
    let mut batch = workers.fetch().max_messages(3).messages().await?;
    let mut held = Vec::new();
    while let Some(message) = batch.next().await {
        held.push(message.map_err(|e| anyhow::anyhow!(e))?);
    }
    assert_eq!(held.len(), 3);
    let depth = read(&js, &key, None).await?;
    assert_eq!(
        depth,
        QueueDepth {
            num_pending: 7,
            num_ack_pending: 3
        }
    );
    assert_eq!(depth.pending(), 10);
    for message in &held {
        message.double_ack().await.map_err(|e| anyhow::anyhow!(e))?;
    }
    assert_eq!(read(&js, &key, None).await?.pending(), 7);

    // A named group has a consumer of its own.
    assert!(matches!(
        read(&js, &key, Some("audit")).await,
        Err(DepthError::ConsumerMissing { consumer, .. }) if consumer == "workers-audit"
    ));

    // NATS gone: an error, not the last number.
    nats.stop().await?;
    let gone = tokio::time::timeout(Duration::from_secs(30), read(&js, &key, None)).await?;
    assert!(matches!(gone, Err(DepthError::Nats(_))), "{gone:?}");
    Ok(())
}

/// Three nats-servers in a JetStream cluster, the stream and consumer on all three: the depth
/// read through a connection to any of them is the consumer leader's, and after the leader is
/// stopped, the new leader's, which is the same.
#[tokio::test]
async fn every_server_of_a_cluster_gives_the_leaders_depth_and_so_does_the_next_leader()
-> anyhow::Result<()> {
    let routes: Vec<u16> = (0..3).map(|_| shardyard_tests::free_port()).collect();
    let config = |i: usize| {
        let others: Vec<String> = routes
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, port)| format!("nats://127.0.0.1:{port}"))
            .collect();
        shardyard_tests::NatsConfig {
            extra_args: vec![
                "--cluster_name".to_owned(),
                "depth".to_owned(),
                "--cluster".to_owned(),
                format!("nats://127.0.0.1:{}", routes[i]),
                "--routes".to_owned(),
                others.join(","),
            ],
            startup_timeout: Duration::from_secs(60),
            ..Default::default()
        }
    };
    // Started together: JetStream answers only once a quorum of the three is up.
    let (a, b, c) = tokio::join!(
        NatsServer::start_with(config(0)),
        NatsServer::start_with(config(1)),
        NatsServer::start_with(config(2)),
    );
    let mut servers = vec![a?, b?, c?];
    let key = BotKey::namespaced("default", "mybot")?;
    let js = servers[0].jetstream().await?;
    js.create_stream(stream::Config {
        name: key.stream(),
        subjects: vec![key.events_filter()],
        num_replicas: 3,
        ..Default::default()
    })
    .await?;
    let workers = js
        .create_consumer_on_stream(
            consumer::pull::Config {
                durable_name: Some(worker_consumer(None)),
                ack_policy: consumer::AckPolicy::Explicit,
                ack_wait: Duration::from_secs(120),
                num_replicas: 3,
                ..Default::default()
            },
            key.stream(),
        )
        .await?;
    for n in 0..20 {
        js.publish(
            key.event_subject(0, "MESSAGE_CREATE"),
            format!("{n}").into(),
        )
        .await?
        .await?;
    }
    let mut batch = workers.fetch().max_messages(6).messages().await?;
    let mut held = Vec::new();
    while let Some(message) = batch.next().await {
        held.push(message.map_err(|e| anyhow::anyhow!(e))?);
    }
    for message in held.iter().take(2) {
        message.double_ack().await.map_err(|e| anyhow::anyhow!(e))?;
    }
    let truth = QueueDepth {
        num_pending: 14,
        num_ack_pending: 4,
    };
    for server in &servers {
        let js = server.jetstream().await?;
        assert_eq!(
            read(&js, &key, None).await?,
            truth,
            "through {}",
            server.url()
        );
    }

    // The consumer's leader goes: the others elect a new one, which knows the same.
    let info = js
        .get_stream(key.stream())
        .await?
        .consumer_info(worker_consumer(None))
        .await?;
    let leader = info
        .cluster
        .and_then(|c| c.leader)
        .ok_or_else(|| anyhow::anyhow!("no consumer leader"))?;
    // The harness names each server `shardyard-test-<client port>`.
    let index = servers
        .iter()
        .position(|s| {
            s.url()
                .ends_with(&format!(":{}", leader.rsplit('-').next().unwrap_or("")))
        })
        .ok_or_else(|| anyhow::anyhow!("leader {leader} is none of the servers"))?;
    servers[index].stop().await?;
    let survivor = &servers[(index + 1) % 3];
    let js = survivor.jetstream().await?;
    shardyard_tests::eventually(
        Duration::from_secs(30),
        "the new leader's depth",
        || async {
            anyhow::ensure!(read(&js, &key, None).await? == truth);
            Ok(())
        },
    )
    .await?;
    Ok(())
}
