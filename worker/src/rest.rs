//! The REST client handlers get (`ctx.rest()`): twilight-http through the shardyard REST proxy,
//! which holds the bot token and Discord's rate limits for every process of the bot.
//!
//! In proxy mode twilight-http has no rate limiter of its own and re-sends a 429'd request at
//! once, with no delay, for as long as 429s come back. So a worker must not be answered 429
//! for a wait it could simply sit out: it tells the proxy how long each request may wait for
//! its turn (`X-Shardyard-Max-Wait`, [`WorkerConfig::rest_max_wait`]), and gives twilight-http a
//! timeout longer than that wait plus the proxy's own time upstream. A handler posting into a
//! channel whose bucket is spent then waits in the proxy's queue, in order, while the worker
//! keeps its event with in-progress acks; one request per message, no retry loop, no log line
//! per retry.

use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue};
use shardyard_protocol::names::proxy_headers;

use crate::WorkerConfig;

/// Time allowed for an answer on top of the wait budget: the proxy's own time once the request
/// has its turn (Discord's answer, the proxy's retries of a 5xx or a 429).
pub const REST_ANSWER_MARGIN: Duration = Duration::from_secs(60);

/// The twilight-http client for `config`'s REST proxy.
pub(crate) fn client(config: &WorkerConfig) -> twilight_http::Client {
    let (proxy, use_http) = proxy_address(&config.rest_url);
    twilight_http::Client::builder()
        .proxy(proxy, use_http)
        .ratelimiter(None)
        .default_headers(wait_headers(config.rest_max_wait))
        .timeout(config.rest_max_wait.saturating_add(REST_ANSWER_MARGIN))
        .build()
}

/// `X-Shardyard-Max-Wait: <seconds>`.
fn wait_headers(max_wait: Duration) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(
        HeaderName::from_static(proxy_headers::MAX_WAIT),
        HeaderValue::from(max_wait.as_secs()),
    );
    headers
}

/// The REST proxy's `host:port` and whether it speaks plain HTTP, from `http://host:port/…`.
pub(crate) fn proxy_address(url: &str) -> (String, bool) {
    let url = url.trim();
    let (use_http, rest) = match url.strip_prefix("https://") {
        Some(rest) => (false, rest),
        None => (true, url.strip_prefix("http://").unwrap_or(url)),
    };
    let host = rest.split('/').next().unwrap_or(rest);
    (host.to_owned(), use_http)
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::net::TcpListener;
    use twilight_model::id::Id;

    use super::*;

    #[test]
    fn the_rest_url_becomes_a_twilight_proxy() {
        assert_eq!(
            proxy_address("http://mybot-rest:8080"),
            ("mybot-rest:8080".to_owned(), true)
        );
        assert_eq!(
            proxy_address("http://127.0.0.1:9/api/v10/"),
            ("127.0.0.1:9".to_owned(), true)
        );
        assert_eq!(
            proxy_address("https://rest.example"),
            ("rest.example".to_owned(), false)
        );
        assert_eq!(proxy_address("rest:80"), ("rest:80".to_owned(), true));
    }

    /// Reads one HTTP/1.1 request head from a client and answers `answer` (a whole response).
    async fn answer_one(listener: &TcpListener, answer: &str) -> String {
        let (mut socket, _) = listener.accept().await.unwrap();
        let head = read_head(&mut socket).await;
        socket.write_all(answer.as_bytes()).await.unwrap();
        head
    }

    /// One HTTP/1.1 request head, lower-cased.
    async fn read_head(socket: &mut tokio::net::TcpStream) -> String {
        let mut head = Vec::new();
        let mut buf = [0u8; 4096];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = socket.read(&mut buf).await.unwrap();
            assert!(n > 0, "the client closed before its request head");
            head.extend_from_slice(&buf[..n]);
        }
        String::from_utf8_lossy(&head).to_lowercase()
    }

    fn config_for(addr: std::net::SocketAddr) -> WorkerConfig {
        let _ = rustls::crypto::ring::default_provider().install_default();
        WorkerConfig::new(
            shardyard_protocol::BotKey::parse("b").unwrap(),
            "nats://127.0.0.1:1",
            format!("http://{addr}"),
        )
    }

    #[tokio::test]
    async fn every_request_tells_the_proxy_how_long_it_may_wait() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut config = config_for(addr);
        config.rest_max_wait = Duration::from_secs(120);
        let rest = client(&config);
        let request = tokio::spawn(async move {
            rest.create_message(Id::new(1))
                .content("pong")
                .await
                .map(|r| r.status().get())
        });
        let head = answer_one(
            &listener,
            "HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n",
        )
        .await;
        assert!(
            head.starts_with("post /api/v10/channels/1/messages "),
            "{head}"
        );
        assert!(head.contains("\r\nx-shardyard-max-wait: 120\r\n"), "{head}");
        assert!(
            !head.contains("authorization"),
            "the proxy adds the token: {head}"
        );
        assert_eq!(request.await.unwrap().unwrap(), 204);
    }

    /// A handler abandoned while its request waits in the proxy's queue (the shutdown grace ran
    /// out) drops the request's future: the connection closes, so the proxy takes the request
    /// out of its queue instead of sending it for a handler that is gone.
    #[tokio::test]
    async fn an_abandoned_request_closes_its_connection() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let rest = client(&config_for(listener.local_addr().unwrap()));
        let request = tokio::spawn(async move {
            rest.create_message(Id::new(1))
                .content("pong")
                .await
                .map(|_| ())
        });
        let (mut socket, _) = listener.accept().await.unwrap();
        let head = read_head(&mut socket).await;
        assert!(head.starts_with("post "), "{head}");
        request.abort();
        // What is left of the body, then the end of the stream.
        let closed = async {
            let mut buf = [0u8; 256];
            while let Ok(n @ 1..) = socket.read(&mut buf).await {
                assert!(n <= "pong".len() + 20, "more than the body came: {n} bytes");
            }
        };
        tokio::time::timeout(Duration::from_secs(5), closed)
            .await
            .expect("the connection closes when the request is dropped");
    }
}
