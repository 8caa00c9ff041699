//! Discord's `GET /gateway/bot`: how many shards a bot should run, how many may identify at once,
//! and how many session starts are left today. The token goes in the request's header and
//! nowhere else: no error or `Debug` print here repeats it.

use std::time::Duration;

use serde::Deserialize;
use shardyard_protocol::{Token, error_chain};

use crate::plan::GatewayBot;

/// How long a request may take.
const TIMEOUT: Duration = Duration::from_secs(10);

/// Discord's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GatewayBotAnswer {
    /// Recommended shards and `max_concurrency`.
    pub gateway: GatewayBot,
    /// Session starts allowed per day.
    pub session_start_total: u32,
    /// Session starts left today.
    pub session_start_remaining: u32,
    /// When the daily allowance comes back, in milliseconds from the answer.
    pub session_start_reset_after_ms: u64,
}

/// Why the answer could not be had.
#[derive(Debug, thiserror::Error)]
pub enum DiscordError {
    /// 401: the token is not valid.
    #[error("Discord refused the bot token (401): it is not a valid token")]
    InvalidToken,
    /// Discord could not be reached, or answered with an error.
    #[error("Discord's GET /gateway/bot at {api_base} could not be reached: {reason}")]
    Unreachable {
        /// The API base asked (never holds the token).
        api_base: String,
        /// What went wrong.
        reason: String,
    },
    /// An answer that is not `GET /gateway/bot`'s shape.
    #[error("Discord's GET /gateway/bot at {api_base} answered something else: {reason}")]
    BadAnswer {
        /// The API base asked.
        api_base: String,
        /// What is wrong with it.
        reason: String,
    },
}

#[derive(Deserialize)]
struct Answer {
    shards: u32,
    session_start_limit: SessionStartLimit,
}

#[derive(Deserialize)]
struct SessionStartLimit {
    total: u32,
    remaining: u32,
    reset_after: u64,
    max_concurrency: u32,
}

/// No HTTPS client could be made for Discord's API: most often no CA certificates where the system
/// keeps them (an image needs `/etc/ssl/certs/ca-certificates.crt`, or `SSL_CERT_FILE`).
#[derive(Debug, thiserror::Error)]
#[error("making an HTTPS client for Discord's API (are CA certificates installed?)")]
pub struct ClientError(#[source] reqwest::Error);

/// The HTTP client [`gateway_bot`] is asked with. reqwest's `Client::new` panics where the
/// system has no CA certificates; this says so instead.
///
/// # Errors
/// [`ClientError`].
pub fn client() -> Result<reqwest::Client, ClientError> {
    reqwest::Client::builder().build().map_err(ClientError)
}

/// Asks `GET {api_base}/gateway/bot` with `token`.
///
/// # Errors
/// [`DiscordError::InvalidToken`] on a 401, [`DiscordError::Unreachable`] when there is no
/// answer or a non-2xx one, [`DiscordError::BadAnswer`] when the body is not the documented
/// shape.
pub async fn gateway_bot(
    client: &reqwest::Client,
    api_base: &str,
    token: &Token,
) -> Result<GatewayBotAnswer, DiscordError> {
    let api_base = api_base.trim_end_matches('/').to_owned();
    let unreachable = |reason: String| DiscordError::Unreachable {
        api_base: api_base.clone(),
        reason,
    };
    let response = client
        .get(format!("{api_base}/gateway/bot"))
        .header(reqwest::header::AUTHORIZATION, token.authorization())
        .timeout(TIMEOUT)
        .send()
        .await
        // reqwest's error names the URL, which holds no token here.
        .map_err(|e| unreachable(error_chain(&e)))?;
    let status = response.status();
    if status == reqwest::StatusCode::UNAUTHORIZED {
        return Err(DiscordError::InvalidToken);
    }
    if !status.is_success() {
        return Err(unreachable(format!("it answered {status}")));
    }
    let answer: Answer = response.json().await.map_err(|e| DiscordError::BadAnswer {
        api_base: api_base.clone(),
        reason: error_chain(&e),
    })?;
    Ok(GatewayBotAnswer {
        gateway: GatewayBot {
            shards: answer.shards,
            max_concurrency: answer.session_start_limit.max_concurrency,
        },
        session_start_total: answer.session_start_limit.total,
        session_start_remaining: answer.session_start_limit.remaining,
        session_start_reset_after_ms: answer.session_start_limit.reset_after,
    })
}
