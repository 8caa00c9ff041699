//! The hot-channel scenario (issue 20), shared by `tests/hot_channel.rs` and
//! `benches/hot_channel.rs`: a bot whose users all say `!ping` in one channel at once, where
//! Discord lets the bot post 5 messages per 5 s. The ground truth is the simulator's record of
//! the messages created in that channel; the proxy's `shardyard_rest_requests_total` says how
//! many requests clients made for them.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use serde_json::{Value, json};
use tokio::task::JoinSet;
use twilight_model::id::Id;

use crate::{GatewayProcess, NatsServer, RestProcess, SimArgs, SimProcess, eventually};

/// The route template of a channel's messages, as the proxy labels it.
pub const MESSAGES_ROUTE: &str = "/channels/{channel_id}/messages";

/// A simulator with one guild's channel chosen as the hot one, a gateway publishing its events
/// into NATS and a REST proxy in front of it: everything but the workers, which each test
/// starts and stops itself.
#[derive(Debug)]
pub struct HotChannel {
    /// NATS with JetStream.
    pub nats: NatsServer,
    /// The simulator standing in for Discord.
    pub sim: SimProcess,
    /// One gateway holding the bot's one shard.
    pub gateway: GatewayProcess,
    /// The REST proxy, with default flags unless the caller chose some.
    pub rest: RestProcess,
    /// The bot's key.
    pub bot: String,
    /// The hot channel.
    pub channel: u64,
}

impl HotChannel {
    /// Starts NATS, the simulator (3 guilds, no background traffic), a gateway for `bot` and
    /// the REST proxy with `rest_flags`, and picks the hot channel.
    ///
    /// # Errors
    /// When a process does not start or the gateway is not ready within 30 s.
    pub async fn start(bot: &str, rest_flags: &[&str]) -> anyhow::Result<Self> {
        let nats = NatsServer::start().await?;
        let sim = SimProcess::start(SimArgs {
            guilds: 3,
            ..SimArgs::default()
        })
        .await?;
        let gateway = GatewayProcess::start(&sim, &nats, bot, 1, 0..1, &[]).await?;
        gateway.wait_ready(Duration::from_secs(30)).await?;
        let rest = RestProcess::start(&sim, rest_flags).await?;
        let channel = rest
            .text_channels(&sim, 1)
            .await?
            .first()
            .copied()
            .context("a text channel")?;
        Ok(Self {
            nats,
            sim,
            gateway,
            rest,
            bot: bot.to_owned(),
            channel,
        })
    }

    /// `n` users say `content` in the hot channel, evenly spread over `over`.
    ///
    /// # Errors
    /// When the simulator refuses one.
    pub async fn say(&self, content: &str, n: usize, over: Duration) -> anyhow::Result<()> {
        let pause = over / u32::try_from(n.max(1)).unwrap_or(u32::MAX);
        for i in 0..n {
            if i > 0 {
                tokio::time::sleep(pause).await;
            }
            self.sim
                .post_json(
                    "/_sim/say",
                    &json!({"content": content, "channel_id": self.channel.to_string()}),
                )
                .await?;
        }
        Ok(())
    }

    /// The messages bots created in the hot channel, oldest first (their contents).
    ///
    /// # Errors
    /// When the simulator does not answer.
    pub async fn bot_messages(&self) -> anyhow::Result<Vec<String>> {
        self.sim.channel_message_contents(self.channel).await
    }

    /// Waits until the bots created at least `n` messages in the hot channel; their count.
    ///
    /// # Errors
    /// When they did not within `timeout`.
    pub async fn wait_messages(&self, n: usize, timeout: Duration) -> anyhow::Result<usize> {
        eventually(timeout, "the bot's messages arrive", || async {
            let got = self.bot_messages().await?.len();
            anyhow::ensure!(got >= n, "{got} of {n} messages");
            Ok(got)
        })
        .await
    }

    /// The POSTs to the messages route the proxy received, by the status it answered (499: the
    /// client left before its answer).
    ///
    /// # Errors
    /// When the proxy's `/metrics` does not answer.
    pub async fn posts_by_status(&self) -> anyhow::Result<Vec<(u16, u64)>> {
        posts_by_status(&self.rest.metrics().await?)
    }

    /// All POSTs to the messages route the proxy received, whatever it answered.
    ///
    /// # Errors
    /// When the proxy's `/metrics` does not answer.
    pub async fn posts(&self) -> anyhow::Result<u64> {
        posts_at(&self.rest).await
    }

    /// The rules the simulator saw broken (`violations` of `/_sim/stats`).
    ///
    /// # Errors
    /// When the simulator does not answer.
    pub async fn violations(&self) -> anyhow::Result<Value> {
        Ok(self.sim.stats().await?["violations"].clone())
    }
}

/// The simulator (3 guilds, no background traffic) and a REST proxy in front of it with default
/// flags, without NATS or a bot: for clients of the proxy alone. Also `n` text channels.
///
/// # Errors
/// When a process does not start or the world has fewer text channels.
pub async fn proxy_alone(n: usize) -> anyhow::Result<(SimProcess, RestProcess, Vec<u64>)> {
    let sim = SimProcess::start(SimArgs {
        guilds: 3,
        ..SimArgs::default()
    })
    .await?;
    let rest = RestProcess::start(&sim, &[]).await?;
    let channels = rest.text_channels(&sim, n).await?;
    Ok((sim, rest, channels))
}

/// Posts once into `channel` through the proxy, so that it learns the channel's bucket: from
/// then on it knows ahead how long a request would queue, and refuses at once what would wait
/// past its budget.
///
/// # Errors
/// When the answer is not 200.
pub async fn teach_bucket(rest: &RestProcess, channel: u64) -> anyhow::Result<()> {
    let (status, body) = rest.post_message(channel, "warm-up").await?;
    anyhow::ensure!(status == 200, "warm-up: {status} {body}");
    Ok(())
}

/// `n` POSTs into `channel` by a client that re-sends every 429 at once and never says how long
/// it may wait: twilight-http 0.18 in proxy mode with no rate limiter of its own, used directly.
/// They run until the set is dropped or aborted.
pub fn hammer(
    rest: &RestProcess,
    channel: u64,
    n: usize,
) -> JoinSet<Result<(), twilight_http::Error>> {
    let client = Arc::new(
        twilight_http::Client::builder()
            .proxy(rest.addr().to_string(), true)
            .ratelimiter(None)
            .timeout(Duration::from_secs(300))
            .build(),
    );
    let mut tasks = JoinSet::new();
    for i in 0..n {
        let client = Arc::clone(&client);
        tasks.spawn(async move {
            client
                .create_message(Id::new(channel))
                .content(&format!("hammer-{i}"))
                .await
                .map(|_| ())
        });
    }
    tasks
}

/// All POSTs to the messages route the proxy received, whatever it answered.
///
/// # Errors
/// When the proxy's `/metrics` does not answer.
pub async fn posts_at(rest: &RestProcess) -> anyhow::Result<u64> {
    Ok(posts_by_status(&rest.metrics().await?)?
        .iter()
        .map(|(_, n)| n)
        .sum())
}

/// `shardyard_rest_requests_total{method="POST",route="/channels/{channel_id}/messages",…}`
/// by status, from a `/metrics` text.
///
/// # Errors
/// When a series of that route has a status or value that does not parse.
pub fn posts_by_status(metrics: &str) -> anyhow::Result<Vec<(u16, u64)>> {
    let prefix = format!(
        "shardyard_rest_requests_total{{method=\"POST\",route=\"{MESSAGES_ROUTE}\",status=\""
    );
    metrics
        .lines()
        .filter_map(|line| line.strip_prefix(&prefix))
        .map(|rest| {
            let (status, value) = rest.split_once("\"} ").context("a series line")?;
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            Ok((status.parse()?, value.trim().parse::<f64>()? as u64))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::posts_by_status;

    #[test]
    fn posts_are_read_by_status_and_other_routes_are_left_out() {
        let text = "shardyard_rest_requests_total{method=\"POST\",route=\"/channels/{channel_id}/messages\",status=\"200\"} 60\n\
                    shardyard_rest_requests_total{method=\"POST\",route=\"/channels/{channel_id}/messages\",status=\"499\"} 3\n\
                    shardyard_rest_requests_total{method=\"GET\",route=\"/channels/{channel_id}/messages\",status=\"200\"} 9\n\
                    shardyard_rest_requests_total{method=\"POST\",route=\"/channels/{channel_id}\",status=\"200\"} 9\n";
        assert_eq!(posts_by_status(text).unwrap(), vec![(200, 60), (499, 3)]);
    }
}
