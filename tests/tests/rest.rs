//! `shardyard rest` end to end: the proxy as a process in front of the simulator, whose ground
//! truth (`/_sim/stats`, `/_sim/channels/{id}/messages`) says what reached "Discord".

use std::collections::HashSet;
use std::time::Duration;

use anyhow::Context as _;
use serde_json::{Value, json};
use shardyard_tests::{
    RestArgs, RestProcess, SimArgs, SimProcess, eventually, rest_busiest_second_within,
    rest_rate_limited,
};

/// Distinctive, so a leak is found by searching for it.
const TOKEN: &str = "MTEwMDAwMDAwMDAwMDAwMDAwMA.proxy-test.secret-token-value-4242";

async fn sim(guilds: u32, extra: &[&str]) -> anyhow::Result<SimProcess> {
    SimProcess::start(SimArgs {
        token: TOKEN.to_owned(),
        guilds,
        extra: extra.iter().map(|s| (*s).to_owned()).collect(),
        ..SimArgs::default()
    })
    .await
}

/// The token appears nowhere in the proxy's log (it runs at debug level) or metrics.
async fn assert_no_token_leak(rest: &RestProcess) -> anyhow::Result<()> {
    let log = rest.log();
    let metrics = rest.metrics().await?;
    for secret in [TOKEN, "secret-token-value"] {
        anyhow::ensure!(!log.contains(secret), "the token is in the proxy's log");
        anyhow::ensure!(!metrics.contains(secret), "the token is in /metrics");
    }
    Ok(())
}

#[tokio::test]
async fn twenty_clients_on_one_channel_get_no_upstream_429_and_keep_their_order()
-> anyhow::Result<()> {
    let sim = sim(1, &[]).await?;
    let rest = std::sync::Arc::new(RestProcess::start(&sim, &[]).await?);
    let channel = rest.text_channels(&sim, 1).await?[0];
    let before = sim.stats().await?;

    // 20 clients at once, each sending 2 messages one after the other (the second once the
    // first is answered), all in one bucket of 5 per 5 s.
    let mut clients = Vec::new();
    for client in 0..20 {
        let rest = std::sync::Arc::clone(&rest);
        clients.push(tokio::spawn(async move {
            for n in 0..2 {
                let (status, body) = rest
                    .post_message(channel, &format!("c{client}-m{n}"))
                    .await?;
                anyhow::ensure!(
                    (200..300).contains(&status),
                    "c{client}-m{n}: {status} {body}"
                );
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
        rest_rate_limited(&before),
        "no 429 reached a client of Discord"
    );
    assert_eq!(
        stats["violations"]["bucket_limit"].as_u64().unwrap_or(0),
        0,
        "{}",
        stats["violations"]
    );
    let contents = sim.channel_message_contents(channel).await?;
    assert_eq!(contents.len(), 40, "{contents:?}");
    assert_eq!(
        contents.iter().collect::<HashSet<_>>().len(),
        40,
        "no duplicates"
    );
    // What order can be asserted honestly: a client sent its second message only after the
    // first was answered, so each client's messages must appear in its order; how the clients
    // interleave depends on when their requests arrived (FIFO is tested on its own below).
    for client in 0..20 {
        let first = contents.iter().position(|c| *c == format!("c{client}-m0"));
        let second = contents.iter().position(|c| *c == format!("c{client}-m1"));
        assert!(first < second, "client {client}: {contents:?}");
    }
    assert_eq!(
        rest.metric("shardyard_rest_rate_limited_total{scope=\"user\"}")
            .await?,
        0.0
    );
    assert_eq!(
        rest.metric("shardyard_rest_requests_total{method=\"POST\",route=\"/channels/{channel_id}/messages\",status=\"200\"}")
            .await?,
        40.0
    );
    assert_no_token_leak(&rest).await
}

#[tokio::test]
async fn requests_reach_discord_in_the_order_they_queued() -> anyhow::Result<()> {
    let sim = sim(1, &[]).await?;
    let rest = std::sync::Arc::new(RestProcess::start(&sim, &[]).await?);
    let channel = rest.text_channels(&sim, 1).await?[0];
    // Each request is sent only once the proxy counts it in a queue (its queued counter), so
    // the order they joined the bucket's queue is known; the simulator must see that order.
    let queued = "shardyard_rest_requests_queued_total{token=\"default\"}";
    let baseline = rest.metric(queued).await?;
    let mut sends = Vec::new();
    for k in 0..10 {
        let rest2 = std::sync::Arc::clone(&rest);
        sends.push(tokio::spawn(async move {
            rest2.post_message(channel, &format!("fifo-{k}")).await
        }));
        eventually(Duration::from_secs(10), "the request is queued", || async {
            let n = rest.metric(queued).await?;
            anyhow::ensure!(n >= baseline + f64::from(k + 1), "{n} queued");
            Ok(())
        })
        .await?;
    }
    for send in sends {
        let (status, body) = send.await??;
        assert_eq!(status, 200, "{body}");
    }
    let expected: Vec<String> = (0..10).map(|k| format!("fifo-{k}")).collect();
    assert_eq!(sim.channel_message_contents(channel).await?, expected);
    assert_eq!(rest_rate_limited(&sim.stats().await?), (0, 0, 0));
    Ok(())
}

#[tokio::test]
async fn three_hundred_channels_stay_under_the_global_limit() -> anyhow::Result<()> {
    let sim = sim(64, &[]).await?;
    let rest = std::sync::Arc::new(RestProcess::start(&sim, &[]).await?);
    let channels = rest.text_channels(&sim, 300).await?;
    let mut sends = Vec::new();
    for (i, channel) in channels.iter().copied().enumerate() {
        let rest = std::sync::Arc::clone(&rest);
        sends.push(tokio::spawn(async move {
            rest.post_message(channel, &format!("wide-{i}")).await
        }));
    }
    for send in sends {
        let (status, body) = send.await??;
        assert_eq!(status, 200, "{body}");
    }
    let stats = sim.stats().await?;
    let max = rest_busiest_second_within(&stats, 50)?;
    assert!(
        max >= 40,
        "the proxy used the limit ({max} in the busiest second)"
    );
    assert_eq!(rest_rate_limited(&stats), (0, 0, 0));
    for channel in [channels[0], channels[299]] {
        assert_eq!(sim.channel_message_contents(channel).await?.len(), 1);
    }
    Ok(())
}

#[tokio::test]
async fn injected_429s_of_every_scope_are_retried_and_counted() -> anyhow::Result<()> {
    let sim = sim(1, &[]).await?;
    let rest = RestProcess::start(&sim, &[]).await?;
    let channel = rest.text_channels(&sim, 1).await?[0];
    for (n, scope) in ["user", "shared", "global"].into_iter().enumerate() {
        sim.post_json(
            "/_sim/rest/faults",
            &json!({"rate_limit": {"scope": scope, "retry_after": 0.3, "count": 1, "route": "/channels"}}),
        )
        .await?;
        let (status, body) = rest
            .post_message(channel, &format!("after-{scope}"))
            .await?;
        assert_eq!(status, 200, "{scope}: {body}");
        let stats = sim.stats().await?;
        assert_eq!(stats["rest"]["injected"]["rate_limit"], n + 1);
        assert_eq!(
            rest.metric(&format!(
                "shardyard_rest_rate_limited_total{{scope=\"{scope}\"}}"
            ))
            .await?,
            1.0,
            "{scope}"
        );
    }
    assert_eq!(
        sim.channel_message_contents(channel).await?,
        ["after-user", "after-shared", "after-global"]
    );
    assert_eq!(
        rest.metric("shardyard_rest_retries_total{reason=\"rate_limited\"}")
            .await?,
        3.0
    );
    // user and global 429s count toward the invalid-request budget, shared ones do not.
    assert_eq!(rest.metric("shardyard_rest_invalid_requests").await?, 2.0);
    assert_eq!(sim.stats().await?["rest"]["invalid_requests"], 2);
    assert_no_token_leak(&rest).await
}

#[tokio::test]
async fn upstream_5xx_is_retried_for_get_and_502_for_post() -> anyhow::Result<()> {
    let sim = sim(1, &[]).await?;
    let rest = RestProcess::start(&sim, &[]).await?;
    let channel = rest.text_channels(&sim, 1).await?[0];

    sim.post_json(
        "/_sim/rest/faults",
        &json!({"status": 503, "count": 2, "route": "/channels"}),
    )
    .await?;
    let response = rest
        .http()
        .get(format!("{}/channels/{channel}", rest.api_base()))
        .send()
        .await?;
    assert_eq!(response.status(), 200, "GET is retried past two 503s");
    assert_eq!(sim.stats().await?["rest"]["injected"]["status"], 2);

    sim.post_json(
        "/_sim/rest/faults",
        &json!({"status": 500, "count": 1, "route": "/channels"}),
    )
    .await?;
    let response = rest
        .http()
        .post(format!("{}/channels/{channel}/messages", rest.api_base()))
        .json(&json!({"content": "not twice"}))
        .send()
        .await?;
    assert_eq!(response.status(), 502);
    assert_eq!(response.headers()["x-shardyard-error"], "upstream_5xx");
    let body: Value = response.json().await?;
    assert_eq!(body["upstream_status"], 500);
    assert!(
        body["message"].as_str().unwrap_or("").contains("500"),
        "{body}"
    );
    assert!(
        sim.channel_message_contents(channel).await?.is_empty(),
        "POST was not retried"
    );
    assert_eq!(sim.stats().await?["rest"]["injected"]["status"], 3);
    assert_eq!(
        rest.metric("shardyard_rest_retries_total{reason=\"upstream_5xx\"}")
            .await?,
        2.0
    );
    assert_no_token_leak(&rest).await
}

#[tokio::test]
async fn upstream_unreachable_is_502_and_slow_upstream_is_504() -> anyhow::Result<()> {
    let sim = sim(1, &[]).await?;
    // Nothing listens on this port.
    let closed = format!("http://127.0.0.1:{}/api", shardyard_tests::free_port());
    let dead = RestProcess::start_with(
        &sim,
        RestArgs {
            upstream: Some(closed),
            ..RestArgs::for_sim(&sim, &[])
        },
    )
    .await?;
    let response = dead
        .http()
        .get(format!("{}/users/@me", dead.api_base()))
        .send()
        .await?;
    assert_eq!(response.status(), 502);
    assert_eq!(
        response.headers()["x-shardyard-error"],
        "upstream_unreachable"
    );
    let body: Value = response.json().await?;
    assert!(
        body["message"]
            .as_str()
            .unwrap_or("")
            .contains("3 attempts"),
        "{body}"
    );
    assert_eq!(
        dead.metric("shardyard_rest_retries_total{reason=\"connect\"}")
            .await?,
        2.0
    );
    let response = dead
        .http()
        .post(format!("{}/channels/1/messages", dead.api_base()))
        .json(&json!({"content": "x"}))
        .send()
        .await?;
    assert_eq!(response.status(), 502);
    let body: Value = response.json().await?;
    assert!(
        body["message"]
            .as_str()
            .unwrap_or("")
            .contains("not idempotent"),
        "{body}"
    );

    let rest = RestProcess::start(&sim, &["--upstream-timeout", "0.5"]).await?;
    sim.post_json("/_sim/rest/faults", &json!({"latency_ms": 1500}))
        .await?;
    let response = rest
        .http()
        .get(format!("{}/users/@me", rest.api_base()))
        .send()
        .await?;
    assert_eq!(response.status(), 504);
    assert_eq!(response.headers()["x-shardyard-error"], "upstream_timeout");
    assert_no_token_leak(&rest).await?;
    assert_no_token_leak(&dead).await
}

#[tokio::test]
async fn the_invalid_request_guard_trips_before_the_simulator_bans() -> anyhow::Result<()> {
    let sim = sim(1, &["--invalid-request-limit", "20"]).await?;
    let rest = RestProcess::start(&sim, &["--invalid-request-line", "10"]).await?;
    // Clients with wrong tokens: each one's first request reaches Discord and is a 401; the
    // second is refused locally (the token is locked) and reaches nothing.
    for n in 0..10 {
        let response = rest
            .http()
            .get(format!("{}/users/@me", rest.api_base()))
            .header("Authorization", format!("Bot wrong-token-{n}"))
            .send()
            .await?;
        assert_eq!(response.status(), 401, "wrong token {n}");
        assert!(response.headers().get("x-shardyard-refused").is_none());
        let again = rest
            .http()
            .get(format!("{}/users/@me", rest.api_base()))
            .header("Authorization", format!("Bot wrong-token-{n}"))
            .send()
            .await?;
        assert_eq!(again.status(), 401);
        if n < 9 {
            assert_eq!(again.headers()["x-shardyard-refused"], "token_locked");
        }
    }
    // At the line, everything is refused locally, even the good token.
    let response = rest
        .http()
        .get(format!("{}/users/@me", rest.api_base()))
        .send()
        .await?;
    assert_eq!(response.status(), 503);
    assert_eq!(
        response.headers()["x-shardyard-refused"],
        "invalid_request_guard"
    );
    assert!(response.headers().contains_key("retry-after"));
    let body: Value = response.json().await?;
    assert!(body["retry_after"].as_f64().unwrap_or(0.0) > 0.0, "{body}");

    let stats = sim.stats().await?;
    assert_eq!(stats["rest"]["invalid_requests"], 10);
    assert_eq!(stats["rest"]["cloudflare_banned"], 0);
    assert_eq!(stats["rest"]["banned_ips"], json!([]));
    assert_eq!(rest.metric("shardyard_rest_invalid_requests").await?, 10.0);
    assert_eq!(
        rest.metric("shardyard_rest_invalid_request_line").await?,
        10.0
    );
    assert_no_token_leak(&rest).await
}

/// Writes `request` on a new connection and reads until the proxy closes it (or 5 s).
async fn raw(rest: &RestProcess, request: &[u8]) -> anyhow::Result<String> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut socket = tokio::net::TcpStream::connect(rest.addr()).await?;
    socket.write_all(request).await?;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), socket.read_to_end(&mut answer)).await;
    Ok(String::from_utf8_lossy(&answer).into_owned())
}

async fn send(
    rest: &RestProcess,
    request: reqwest::RequestBuilder,
) -> anyhow::Result<(u16, Option<String>, Value)> {
    let response = request.send().await.with_context(|| rest.log_report())?;
    let status = response.status().as_u16();
    let kind = response
        .headers()
        .get("x-shardyard-error")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = response.json::<Value>().await.unwrap_or(Value::Null);
    Ok((status, kind, body))
}

#[tokio::test]
async fn bad_input_is_answered_locally_and_never_crashes_the_proxy() -> anyhow::Result<()> {
    let sim = sim(1, &[]).await?;
    let rest = RestProcess::start(
        &sim,
        &["--max-json-bytes", "65536", "--max-upload-bytes", "200000"],
    )
    .await?;
    let channel = rest.text_channels(&sim, 1).await?[0];
    let http = rest.http();
    let api = rest.api_base();
    let requests_before = sim.stats().await?["rest"]["requests"]
        .as_u64()
        .context("requests")?;

    let cases: Vec<(&str, reqwest::RequestBuilder, u16, &str)> = vec![
        (
            "no version",
            http.get(rest.url("/api/users/@me")),
            400,
            "bad_path",
        ),
        (
            "not the API",
            http.get(rest.url("/index.html")),
            400,
            "bad_path",
        ),
        (
            "empty segment",
            http.get(format!("{api}/channels//messages")),
            400,
            "bad_path",
        ),
        (
            "bad snowflake",
            http.get(format!("{api}/channels/abc/messages")),
            400,
            "bad_path",
        ),
        (
            "bad method",
            http.request(reqwest::Method::OPTIONS, format!("{api}/users/@me")),
            400,
            "bad_method",
        ),
        (
            "odd method",
            http.request(
                reqwest::Method::from_bytes(b"BREW")?,
                format!("{api}/users/@me"),
            ),
            400,
            "bad_method",
        ),
        (
            "bad max wait",
            http.get(format!("{api}/users/@me"))
                .header("X-Shardyard-Max-Wait", "soon"),
            400,
            "bad_max_wait",
        ),
        (
            "JSON too large",
            http.post(format!("{api}/channels/{channel}/messages"))
                .header("Content-Type", "application/json")
                .body(vec![b' '; 70_000]),
            413,
            "body_too_large",
        ),
        (
            "upload too large",
            http.post(format!("{api}/channels/{channel}/messages"))
                .header("Content-Type", "multipart/form-data; boundary=x")
                .body(vec![b'a'; 250_000]),
            413,
            "body_too_large",
        ),
        (
            "non-ASCII authorization",
            http.get(format!("{api}/users/@me")).header(
                "Authorization",
                reqwest::header::HeaderValue::from_bytes(b"Bot \xff\xfe")?,
            ),
            400,
            "bad_authorization",
        ),
    ];
    for (name, request, status, kind) in cases {
        let (got, got_kind, body) = send(&rest, request).await?;
        assert_eq!(got, status, "{name}: {body}");
        assert_eq!(got_kind.as_deref(), Some(kind), "{name}");
        assert_eq!(body["code"], 0, "{name}: {body}");
        assert!(
            body["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("shardyard: ")),
            "{name}: {body}"
        );
    }
    // None of them reached the simulator.
    assert_eq!(
        sim.stats().await?["rest"]["requests"].as_u64(),
        Some(requests_before)
    );

    // A chunked body (no Content-Length) over the limit is cut off as it streams in.
    {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let mut socket = tokio::net::TcpStream::connect(rest.addr()).await?;
        let head = format!(
            "POST /api/v10/channels/{channel}/messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        );
        socket.write_all(head.as_bytes()).await?;
        let chunk = format!("2000\r\n{}\r\n", " ".repeat(0x2000));
        for _ in 0..20 {
            if socket.write_all(chunk.as_bytes()).await.is_err() {
                break;
            }
        }
        let _ = socket.write_all(b"0\r\n\r\n").await;
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), socket.read_to_end(&mut answer)).await;
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
        assert!(answer.contains("body_too_large"), "{answer}");
    }

    // Dot segments would climb out of /api/v10 upstream (with the bot token): refused. Sent
    // raw, since HTTP clients resolve them before sending.
    for path in [
        "/api/v10/channels/../../oauth2/x",
        "/api/v10/users/%2e%2E/x",
        "/api/v10/./users/@me",
    ] {
        let answer = raw(
            &rest,
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await?;
        assert!(answer.starts_with("HTTP/1.1 400"), "{path}: {answer}");
        assert!(
            answer.contains("x-shardyard-error: bad_path"),
            "{path}: {answer}"
        );
    }

    // Raw garbage on the socket: the proxy answers (with the status given) or closes, and
    // stays up.
    for (garbage, answer) in [
        (
            &b"GET /api/v10/users/@me HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n"[..],
            "",
        ),
        (b"\x00\x01\x02 garbage\r\n\r\n", ""),
        (
            b"GET /api/v10/%ff%fe/x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            "HTTP/1.1 404",
        ),
        (
            b"GET /api/v10/users/@me HTTP/1.1\r\nHost: x\r\nAuthorization: Bot a\r\nAuthorization: Bot b\r\nConnection: close\r\n\r\n",
            "HTTP/1.1 400",
        ),
    ] {
        let got = raw(&rest, garbage).await?;
        assert!(got.starts_with(answer), "{got}");
    }
    rest.admin_get("/healthz").await?;

    // A spent bucket and no patience: an immediate local 429 in Discord's shape.
    for n in 0..5 {
        let (status, body) = rest.post_message(channel, &format!("fill-{n}")).await?;
        assert_eq!(status, 200, "{body}");
    }
    let response = http
        .post(format!("{api}/channels/{channel}/messages"))
        .header("X-Shardyard-Max-Wait", "0")
        .json(&json!({"content": "impatient"}))
        .send()
        .await?;
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["x-shardyard-refused"], "would_wait");
    let retry_after: u64 = response.headers()["retry-after"].to_str()?.parse()?;
    assert!((1..=5).contains(&retry_after), "{retry_after}");
    let body: Value = response.json().await?;
    assert_eq!(body["global"], false);
    assert!(
        body["retry_after"]
            .as_f64()
            .is_some_and(|s| s > 0.0 && s <= 5.0),
        "{body}"
    );
    assert_eq!(rest_rate_limited(&sim.stats().await?), (0, 0, 0));
    assert!(
        !sim.channel_message_contents(channel)
            .await?
            .contains(&"impatient".to_owned())
    );
    // A client that asked for no wait gets its refusal at once: it is not held.
    assert_eq!(
        rest.metric("shardyard_rest_held_refusals_total").await?,
        0.0
    );
    // One that may wait a little, but not long enough, and does not say so gets its refusal
    // held for the proxy's refusal hold (1 s), with the retry-after shortened by as much.
    let asked = std::time::Instant::now();
    let response = http
        .post(format!("{api}/channels/{channel}/messages"))
        .header("X-Shardyard-Max-Wait", "1.5")
        .json(&json!({"content": "a little patient"}))
        .send()
        .await?;
    let held_for = asked.elapsed();
    assert_eq!(response.status(), 429);
    assert_eq!(
        rest.metric("shardyard_rest_held_refusals_total").await?,
        1.0
    );
    assert!(
        held_for >= Duration::from_millis(990),
        "answered after {held_for:?}"
    );
    let body: Value = response.json().await?;
    assert!(
        body["retry_after"].as_f64().is_some_and(|s| s < 4.1),
        "the retry-after counts the hold: {body}"
    );
    assert_eq!(
        rest.metric("shardyard_rest_refused_total{kind=\"would_wait\"}")
            .await?,
        2.0
    );
    assert_eq!(
        rest.metric(
            "shardyard_rest_requests_total{method=\"GET\",route=\"invalid\",status=\"400\"}"
        )
        .await?,
        7.0
    );
    assert_no_token_leak(&rest).await
}

#[tokio::test]
async fn headers_pass_through_and_the_client_token_is_its_own() -> anyhow::Result<()> {
    let sim = sim(1, &[]).await?;
    // No bot token: clients bring their own.
    let rest = RestProcess::start_with(
        &sim,
        RestArgs {
            token: None,
            ..RestArgs::for_sim(&sim, &[])
        },
    )
    .await?;
    let channel = rest.text_channels(&sim, 1).await?[0];
    let (status, kind, _) = send(
        &rest,
        rest.http().get(format!("{}/users/@me", rest.api_base())),
    )
    .await?;
    assert_eq!((status, kind.as_deref()), (401, Some("no_token")));

    let boundary = "shardyard-boundary";
    let multipart = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"payload_json\"\r\nContent-Type: application/json\r\n\r\n{{\"content\": \"with a file\"}}\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"files[0]\"; filename=\"a.txt\"\r\nContent-Type: text/plain\r\n\r\nhello\r\n--{boundary}--\r\n"
    );
    let response = rest
        .http()
        .post(format!("{}/channels/{channel}/messages", rest.api_base()))
        .header("Authorization", format!("Bot {TOKEN}"))
        .header(
            "Content-Type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .header("X-Audit-Log-Reason", "testing%20the%20proxy")
        .header("Connection", "keep-alive, X-Hop")
        .header("X-Hop", "must not pass")
        .body(multipart)
        .send()
        .await?;
    assert_eq!(response.status(), 200);
    assert!(
        response.headers().contains_key("x-ratelimit-bucket"),
        "rate-limit headers come back"
    );
    let message: Value = response.json().await?;
    assert_eq!(message["content"], "with a file");
    assert_eq!(
        sim.channel_message_contents(channel).await?,
        ["with a file"]
    );
    let metrics = rest.metrics().await?;
    assert!(
        !metrics.contains("token=\"default\""),
        "no default token: {metrics}"
    );
    assert_no_token_leak(&rest).await
}

#[tokio::test]
async fn interaction_callbacks_are_exempt_from_the_global_limit_and_templated() -> anyhow::Result<()>
{
    let sim = sim(1, &[]).await?;
    let rest = RestProcess::start(&sim, &["--global-per-second", "1"]).await?;
    let interaction = sim
        .post_json("/_sim/interactions", &json!({"name": "ping"}))
        .await?;
    let id = interaction["id"].as_str().context("id")?;
    let token = interaction["token"].as_str().context("token")?;
    // The global limit (1/s here) is spent by this request for a second; the callback, exempt,
    // must not wait for it (the simulator wants it within 3 s, and the budget says 0 s).
    let response = rest
        .http()
        .get(format!("{}/users/@me", rest.api_base()))
        .send()
        .await?;
    assert_eq!(response.status(), 200);
    let response = rest
        .http()
        .post(format!(
            "{}/interactions/{id}/{token}/callback",
            rest.api_base()
        ))
        .header("X-Shardyard-Max-Wait", "0")
        .json(&json!({"type": 4, "data": {"content": "pong"}}))
        .send()
        .await?;
    assert_eq!(response.status(), 204);
    let callbacks = sim.get_json("/_sim/rest/interactions").await?;
    assert_eq!(callbacks[0]["id"], id);
    assert_eq!(callbacks[0]["status"], 204);
    let metrics = rest.metrics().await?;
    assert!(
        metrics.contains("route=\"/interactions/{interaction_id}/{interaction_token}/callback\""),
        "templated, the interaction token is not a label: {metrics}"
    );
    assert!(!metrics.contains(token) && !rest.log().contains(token));
    assert_no_token_leak(&rest).await
}
