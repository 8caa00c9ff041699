//! `shardyard rest` as a drop-in for client libraries nobody here wrote: twilight-http 0.18 in
//! proxy mode and @discordjs/rest with `api` pointed at the proxy send messages that arrive at
//! the simulator, with or without their own token; a login's first question (the current
//! application) is answered through the proxy.

use std::time::Duration;

use anyhow::Context as _;
use serde_json::Value;
use shardyard_tests::discordjs::{DiscordjsOptions, post_messages};
use shardyard_tests::{RestProcess, SimArgs, SimProcess};
use twilight_model::id::Id;

const TOKEN: &str = "MTEwMDAwMDAwMDAwMDAwMDAwMA.client-test.secret-token-value-4343";

async fn start() -> anyhow::Result<(SimProcess, RestProcess, u64)> {
    let sim = SimProcess::start(SimArgs {
        token: TOKEN.to_owned(),
        guilds: 1,
        ..SimArgs::default()
    })
    .await?;
    let rest = RestProcess::start(&sim, &[]).await?;
    let guilds = rest
        .http()
        .get(format!("{}/users/@me/guilds", rest.api_base()))
        .send()
        .await?
        .json::<Value>()
        .await?;
    let guild = guilds[0]["id"].as_str().context("a guild")?;
    let state = sim.get_json(&format!("/_sim/guilds/{guild}")).await?;
    let channel = state["channels"]
        .as_array()
        .context("channels")?
        .iter()
        .find(|c| c["type"] == 0)
        .and_then(|c| c["id"].as_str())
        .context("a text channel")?
        .parse()?;
    Ok((sim, rest, channel))
}

fn no_429s(stats: &Value) -> bool {
    ["user", "global", "shared"]
        .iter()
        .all(|scope| stats["rest"]["rate_limited"][scope] == 0)
}

#[tokio::test]
async fn twilight_http_in_proxy_mode_sends_messages_through_the_proxy() -> anyhow::Result<()> {
    let (sim, rest, channel) = start().await?;
    // No token and no rate limiter of its own: the proxy holds both.
    let client = twilight_http::Client::builder()
        .proxy(rest.addr().to_string(), true)
        .ratelimiter(None)
        .build();
    let sends = (0..7).map(|n| {
        let client = &client;
        async move {
            client
                .create_message(Id::new(channel))
                .content(&format!("twilight-{n}"))
                .await
                .with_context(|| format!("twilight-{n}"))?
                .model()
                .await
                .context("Message deserializes")
        }
    });
    // Seven at once into a bucket of five per five seconds: the proxy queues the last two.
    let messages = futures_util::future::try_join_all(sends).await?;
    assert_eq!(messages.len(), 7);

    // A second bot's client with its own token, through the same proxy.
    let own = twilight_http::Client::builder()
        .proxy(rest.addr().to_string(), true)
        .ratelimiter(None)
        .token(format!("Bot {TOKEN}"))
        .build();
    let me = own.current_user().await?.model().await?;
    assert!(me.bot);

    // What a client library's login asks for first: the current application, on both routes.
    let application = client.current_user_application().await?.model().await?;
    assert_eq!(application.id, me.id.cast());
    assert_eq!(application.verify_key.len(), 64);
    let oauth2: Value = rest
        .http()
        .get(format!("{}/oauth2/applications/@me", rest.api_base()))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    assert_eq!(oauth2["id"], application.id.to_string());
    assert_eq!(oauth2["verify_key"], application.verify_key);

    let got = sim.channel_message_contents(channel).await?;
    assert_eq!(got.len(), 7, "{got:?}");
    for n in 0..7 {
        assert!(got.contains(&format!("twilight-{n}")), "{got:?}");
    }
    assert!(no_429s(&sim.stats().await?), "no 429 reached the simulator");
    assert!(!rest.log().contains(TOKEN));
    Ok(())
}

async fn discordjs(
    rest: &RestProcess,
    channel: u64,
    prefix: &str,
    count: u32,
    token: Option<&str>,
) -> anyhow::Result<Value> {
    post_messages(
        rest,
        channel,
        prefix,
        count,
        token,
        DiscordjsOptions::Strict,
        Duration::from_secs(60),
    )
    .await
}

#[tokio::test]
async fn discordjs_rest_with_the_proxy_as_api_sends_messages() -> anyhow::Result<()> {
    let (sim, rest, channel) = start().await?;
    // Without a token (the proxy injects its own), then with the library's own token.
    let first = discordjs(&rest, channel, "djs-proxy-token", 3, None).await?;
    assert_eq!(
        first["contents"].as_array().map(Vec::len),
        Some(3),
        "{first}"
    );
    let second = discordjs(&rest, channel, "djs-own-token", 3, Some(TOKEN)).await?;
    assert_eq!(
        second["contents"].as_array().map(Vec::len),
        Some(3),
        "{second}"
    );

    let got = sim.channel_message_contents(channel).await?;
    let expected: Vec<String> = (0..3)
        .map(|n| format!("djs-proxy-token-{n}"))
        .chain((0..3).map(|n| format!("djs-own-token-{n}")))
        .collect();
    // discord.js queues a bucket's requests in call order, and the proxy keeps that order.
    assert_eq!(got, expected);
    assert!(no_429s(&sim.stats().await?), "no 429 reached the simulator");
    assert!(!rest.log().contains(TOKEN));
    assert!(!rest.metrics().await?.contains(TOKEN));
    Ok(())
}
