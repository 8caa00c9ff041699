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
