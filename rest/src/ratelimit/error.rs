//! Why the engine answers a request locally instead of letting it be sent.

use std::time::Duration;

use super::route::RouteError;

/// A request the engine refused: the proxy answers it itself (with a 429 or 503 and
/// `Retry-After` where one is given) and nothing reaches Discord. No message holds a token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The rate limit would make the request wait longer than its budget.
    #[error(
        "refused locally: the rate limit would hold this request for {:.3} s, longer than its \
         max-wait budget; retry after that",
        retry_after.as_secs_f64()
    )]
    WouldWait {
        /// How long it would have waited, as far as the engine knows.
        retry_after: Duration,
    },
    /// Too many invalid requests (401, 403, 429) went out recently; sending more risks a
    /// Cloudflare ban of the IP.
    #[error(
        "refused locally: {used} invalid requests (401, 403, 429) in the last 10 minutes \
         reached the safety line of {line} (Cloudflare bans the IP at 10,000); retry after \
         {:.3} s",
        retry_after.as_secs_f64()
    )]
    InvalidRequestGuard {
        /// Invalid requests counted in the window.
        used: u32,
        /// The configured safety line.
        line: u32,
        /// When the count falls under the line again.
        retry_after: Duration,
    },
    /// Discord answered 401 for this token; it stays refused until unlocked or reconfigured.
    #[error(
        "refused locally: Discord answered 401 Unauthorized for this token, which stays locked \
         until it is unlocked or reconfigured"
    )]
    TokenLocked,
    /// Discord answered 404 (or 401) for this webhook and token: the webhook is gone.
    #[error("refused locally: Discord answered that this webhook does not exist any more")]
    WebhookGone,
    /// Not a route of Discord's API.
    #[error("refused locally: not a Discord API route")]
    BadRoute(#[source] RouteError),
}

impl Refusal {
    /// When retrying could succeed, if it ever can.
    #[must_use]
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::WouldWait { retry_after } | Self::InvalidRequestGuard { retry_after, .. } => {
                Some(*retry_after)
            }
            Self::TokenLocked | Self::WebhookGone | Self::BadRoute(_) => None,
        }
    }

    /// A bounded label for metrics: `would_wait`, `invalid_request_guard`, `token_locked`,
    /// `webhook_gone`, `bad_route`.
    #[must_use]
    pub fn kind(&self) -> &'static str {
        match self {
            Self::WouldWait { .. } => "would_wait",
            Self::InvalidRequestGuard { .. } => "invalid_request_guard",
            Self::TokenLocked => "token_locked",
            Self::WebhookGone => "webhook_gone",
            Self::BadRoute(_) => "bad_route",
        }
    }
}

impl From<RouteError> for Refusal {
    fn from(error: RouteError) -> Self {
        Self::BadRoute(error)
    }
}
