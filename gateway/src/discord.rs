//! What the gateway asks Discord's REST API: `GET /gateway/bot`.
//!
//! In a cluster the operator points `--api-base` at the bot's REST proxy, so that the pods of a
//! generation starting together share the route's bucket (5 per 5 s on Discord) with each other
//! and with the workers instead of each spending it blind.

use std::time::Duration;

use serde::Deserialize;
use shardyard_protocol::Token;
use shardyard_protocol::names::proxy_headers;

/// `GET /gateway/bot`'s answer.
#[derive(Debug, Clone, Deserialize)]
pub struct GatewayBot {
    /// The websocket URL to connect to.
    pub url: String,
    /// Recommended shard count.
    pub shards: u32,
    /// Identify budget.
    pub session_start_limit: SessionStartLimit,
}

/// `session_start_limit`.
#[derive(Debug, Clone, Deserialize)]
pub struct SessionStartLimit {
    /// Per day.
    pub total: u32,
    /// Left now.
    pub remaining: u32,
    /// Milliseconds until `remaining` resets.
    pub reset_after: u64,
    /// Identifies allowed per 5 s.
    pub max_concurrency: u32,
}

/// Why `GET /gateway/bot` failed. Never carries the token.
#[derive(Debug, thiserror::Error)]
pub enum DiscordError {
    /// 401: the token is wrong; retrying cannot help.
    #[error("Discord refused the bot token (401 Unauthorized)")]
    InvalidToken,
    /// 429: asked too often; `retry_after` is when to ask again, when the answer said.
    #[error("GET {url} was rate limited (429)")]
    RateLimited {
        /// The URL asked.
        url: String,
        /// From the body's `retry_after` or the `Retry-After` header.
        retry_after: Option<Duration>,
    },
    /// Another status.
    #[error("GET {url} answered {status}")]
    Status {
        /// The URL asked.
        url: String,
        /// Its status.
        status: u16,
    },
    /// No answer, or an unreadable one.
    #[error("GET {url} failed")]
    Request {
        /// The URL asked.
        url: String,
        /// Why.
        #[source]
        source: reqwest::Error,
    },
}

impl DiscordError {
    /// Whether asking again later may work.
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        !matches!(self, Self::InvalidToken)
    }

    /// How long the answer asked us to wait before asking again, if it said.
    #[must_use]
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::RateLimited { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// The seconds the proxy may hold the request for its turn in the bucket (`X-Shardyard-Max-Wait`),
/// under the client's 15 s timeout. Discord ignores the header.
const PROXY_MAX_WAIT_SECONDS: &str = "10";

/// The longest wait a 429 is taken at its word for.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

/// Asks `{api_base}/gateway/bot`.
///
/// # Errors
/// [`DiscordError`] as above.
pub async fn gateway_bot(
    client: &reqwest::Client,
    api_base: &str,
    token: &Token,
) -> Result<GatewayBot, DiscordError> {
    let url = format!("{}/gateway/bot", api_base.trim_end_matches('/'));
    let response = client
        .get(&url)
        .header("Authorization", token.authorization())
        .header(proxy_headers::MAX_WAIT, PROXY_MAX_WAIT_SECONDS)
        .send()
        .await
        .map_err(|source| DiscordError::Request {
            url: url.clone(),
            source: source.without_url(),
        })?;
    match response.status().as_u16() {
        200 => response
            .json()
            .await
            .map_err(|source| DiscordError::Request {
                url,
                source: source.without_url(),
            }),
        401 => Err(DiscordError::InvalidToken),
        429 => {
            let header = response
                .headers()
                .get("Retry-After")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<f64>().ok());
            let body = response
                .json::<serde_json::Value>()
                .await
                .ok()
                .and_then(|b| b.get("retry_after").and_then(serde_json::Value::as_f64));
            Err(DiscordError::RateLimited {
                url,
                retry_after: body.or(header).and_then(retry_after),
            })
        }
        status => Err(DiscordError::Status { url, status }),
    }
}

fn retry_after(seconds: f64) -> Option<Duration> {
    (seconds.is_finite() && seconds >= 0.0)
        .then(|| Duration::from_secs_f64(seconds.min(MAX_RETRY_AFTER.as_secs_f64())))
}
