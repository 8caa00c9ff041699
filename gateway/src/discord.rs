//! What the gateway asks Discord's REST API: `GET /gateway/bot`.

use serde::Deserialize;
use shardyard_protocol::Token;

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
}

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
        status => Err(DiscordError::Status { url, status }),
    }
}
