//! A hot channel (issue 20): many users say `!ping` in one channel at once, and Discord lets the
//! bot post 5 messages per 5 s there, so 60 pongs take about a minute. The example worker must
//! wait its turn at the REST proxy instead of storming it: every ping gets its pong, at most
//! three POSTs per pong reach the proxy, and the worker's log stays bounded, also when the
//! worker is killed half-way. A client that ignores retry-after cannot make the proxy spend a
//! core, and @discordjs/rest on its defaults stays bounded too.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde_json::json;
use shardyard_tests::bench::cpu_secs;
use shardyard_tests::discordjs::{DiscordjsOptions, post_messages};
use shardyard_tests::hot_channel::{HotChannel, hammer, posts_at, proxy_alone, teach_bucket};
use shardyard_tests::{WorkerProcess, rest_rate_limited};

/// Pings said in the hot channel, within [`SAID_WITHIN`].
const PINGS: usize = 60;
const SAID_WITHIN: Duration = Duration::from_secs(9);
/// POSTs per pong the proxy may see at most.
const MAX_POSTS_PER_PONG: usize = 3;
/// Lines a worker's log may hold at most after the scenario.
const MAX_LOG_LINES: usize = 1000;

fn only_pongs(messages: &[String]) -> anyhow::Result<()> {
    anyhow::ensure!(
        messages.iter().all(|m| m == "pong"),
        "the bot posted something else: {messages:?}"
    );
    Ok(())
}

#[tokio::test]
async fn sixty_pings_in_one_channel_get_their_pongs_without_a_request_storm() -> anyhow::Result<()>
{
    let hot = HotChannel::start("hotbot", &[]).await?;
    let worker = WorkerProcess::start_example(&hot.nats, &hot.rest, &hot.bot, &[]).await?;

    hot.say("!ping", PINGS, SAID_WITHIN).await?;
    hot.wait_messages(PINGS, Duration::from_secs(120))
        .await
        .with_context(|| worker.log_report())?;
    // Give a storm, had there been one, a moment to show in the counts.
    tokio::time::sleep(Duration::from_secs(1)).await;

    let messages = hot.bot_messages().await?;
    only_pongs(&messages)?;
    assert_eq!(messages.len(), PINGS, "one pong per ping");
    let posts = hot.posts_by_status().await?;
    let total: u64 = posts.iter().map(|(_, n)| n).sum();
    assert!(
        total <= (MAX_POSTS_PER_PONG * PINGS) as u64,
        "{total} POSTs reached the proxy: {posts:?}"
    );
    // Each handler waited its turn in the proxy's queue: one request per pong, none refused.
    assert_eq!(
        posts,
        vec![(200, PINGS as u64)],
        "{}",
        hot.rest.log_report()
    );
    let log_lines = worker.log().lines().count();
    assert!(
        log_lines < MAX_LOG_LINES,
        "{log_lines} lines in the worker's log:\n{}",
        worker.log_report()
    );
    assert_eq!(
        worker.handled("MESSAGE_CREATE", "retry").await.unwrap_or(0),
        0
    );
    assert_eq!(hot.violations().await?, json!([]));
    Ok(())
}

#[tokio::test]
async fn a_worker_killed_half_way_through_a_hot_channel_leaves_its_pongs_to_the_next()
-> anyhow::Result<()> {
    let hot = HotChannel::start("hotkill", &[]).await?;
    // A short ack wait, so the survivor gets the dead worker's events within seconds.
    let env = [("SHARDYARD_WORKER_ACK_WAIT", "10")];
    let mut first = WorkerProcess::start_example(&hot.nats, &hot.rest, &hot.bot, &env).await?;

    hot.say("!ping", PINGS, SAID_WITHIN).await?;
    hot.wait_messages(PINGS / 2, Duration::from_secs(90))
        .await
        .with_context(|| first.log_report())?;
    first.process().kill_9()?;
    let second = WorkerProcess::start_example(&hot.nats, &hot.rest, &hot.bot, &env).await?;

    hot.wait_messages(PINGS, Duration::from_secs(120))
        .await
        .with_context(|| second.log_report())?;
    // Redeliveries of events the first worker had handled but not acknowledged may still come.
    tokio::time::sleep(Duration::from_secs(12)).await;

    let messages = hot.bot_messages().await?;
    only_pongs(&messages)?;
    // At least once: a pong the first worker had sent but not yet acknowledged is sent again
    // by the second (with one request per bucket in flight, one or two at most).
    assert!(
        (PINGS..=PINGS + 3).contains(&messages.len()),
        "{} pongs for {PINGS} pings",
        messages.len()
    );
    let posts = hot.posts_by_status().await?;
    let total: u64 = posts.iter().map(|(_, n)| n).sum();
    assert!(
        total <= (MAX_POSTS_PER_PONG * PINGS) as u64,
        "{total} POSTs reached the proxy: {posts:?}"
    );
    // The dead worker's queued requests left the proxy's queue with it (499) instead of being
    // sent after all, which would have posted those pongs twice.
    let gone = posts.iter().find(|(s, _)| *s == 499).map_or(0, |(_, n)| *n);
    assert!(
        gone > 0,
        "no request of the killed worker was dropped: {posts:?}"
    );
    let log_lines = second.log().lines().count();
    assert!(
        log_lines < MAX_LOG_LINES,
        "{log_lines} lines in the second worker's log"
    );
    assert_eq!(hot.violations().await?, json!([]));
    Ok(())
}

/// A client that re-sends every 429 at once and never says how long it may wait (twilight-http
/// in proxy mode with no rate limiter of its own, used directly) hammers a hot channel: the
/// proxy paces it with held refusals instead of answering as fast as it can, and keeps serving
/// other channels within Discord's limits.
#[tokio::test]
async fn a_client_ignoring_retry_after_cannot_make_the_proxy_spend_a_core() -> anyhow::Result<()> {
    const HAMMERING: usize = 60;
    const WINDOW: Duration = Duration::from_secs(15);
    let (sim, mut rest, channels) = proxy_alone(4).await?;
    let (hot, others) = channels.split_first().context("channels")?;
    teach_bucket(&rest, *hot).await?;

    let before = cpu_secs(rest.process().pid())?;
    let posts_before = posts_at(&rest).await?;
    let started = Instant::now();
    let mut hammering = hammer(&rest, *hot, HAMMERING);

    // Meanwhile a well-behaved client posts five messages in each of three other channels.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for channel in others {
        for n in 0..5 {
            let sent = Instant::now();
            let (status, body) = rest.post_message(*channel, &format!("calm-{n}")).await?;
            anyhow::ensure!(status == 200, "another channel's POST: {status} {body}");
            anyhow::ensure!(
                sent.elapsed() < Duration::from_secs(5),
                "another channel's POST waited {:?} behind the hammering",
                sent.elapsed()
            );
        }
    }
    tokio::time::sleep(WINDOW.saturating_sub(started.elapsed())).await;
    let cpu = cpu_secs(rest.process().pid())? - before;
    let wall = started.elapsed().as_secs_f64();
    // Those of the other channels are in the same route's count.
    let requests = posts_at(&rest).await? - posts_before - 5 * others.len() as u64;
    hammering.abort_all();

    let share = cpu / wall;
    eprintln!(
        "proxy: {cpu:.2} s CPU in {wall:.1} s ({:.1} % of a core), {requests} POSTs to the hot \
         channel",
        share * 100.0
    );
    // Unpaced, the proxy answered refusals as fast as it could: one core, tens of thousands of
    // requests in the window. Paced, each hammering request comes back once per held refusal.
    assert!(
        share < 0.25,
        "the proxy spent {:.0} % of a core",
        share * 100.0
    );
    #[allow(clippy::cast_precision_loss)]
    let rate = requests as f64 / wall;
    assert!(
        rate < (2 * HAMMERING) as f64,
        "{rate:.0} requests/s to the hot channel"
    );
    let held = rest.metric("shardyard_rest_held_refusals_total").await?;
    assert!(held > 0.0, "no refusal was held");
    let stats = sim.stats().await?;
    assert_eq!(stats["violations"], json!([]), "limits broken upstream");
    assert_eq!(
        rest_rate_limited(&stats),
        (0, 0, 0),
        "no 429 reached the simulator"
    );
    for channel in others {
        assert_eq!(sim.channel_message_contents(*channel).await?.len(), 5);
    }
    Ok(())
}

/// The same hot channel through @discordjs/rest on its defaults (its own queue per bucket, 3
/// retries, a 15 s timeout): it learns the bucket from the answers the proxy passes on and waits
/// for it, so every message arrives with a bounded number of requests.
#[tokio::test]
async fn discordjs_rest_on_its_defaults_posts_into_a_hot_channel_with_bounded_requests()
-> anyhow::Result<()> {
    let (sim, rest, channels) = proxy_alone(1).await?;
    let channel = channels[0];
    let sent = post_messages(
        &rest,
        channel,
        "djs",
        PINGS as u32,
        None,
        DiscordjsOptions::Defaults,
        Duration::from_secs(150),
    )
    .await?;
    assert_eq!(
        sent["contents"].as_array().map(Vec::len),
        Some(PINGS),
        "{sent}"
    );
    let requests = posts_at(&rest).await?;
    eprintln!("@discordjs/rest: {requests} POSTs for {PINGS} messages");
    assert!(
        requests <= (MAX_POSTS_PER_PONG * PINGS) as u64,
        "{requests} POSTs for {PINGS} messages"
    );
    assert_eq!(sim.channel_message_contents(channel).await?.len(), PINGS);
    assert_eq!(sim.stats().await?["violations"], json!([]));
    Ok(())
}
