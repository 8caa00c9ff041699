//! Answers the proxy makes itself, in Discord's error shape so client libraries understand them:
//! `{"message": …, "code": …}`, plus `retry_after` and `global` on 429s, with `Retry-After` and
//! `X-Shardyard-Error` (and `X-Shardyard-Refused` for refusals) headers.

use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::headers;
use crate::ratelimit::Refusal;

/// Discord's "Unknown Webhook" error code, for a webhook known to be gone.
const UNKNOWN_WEBHOOK: u64 = 10015;

/// A local answer: nothing (more) reached Discord for this request.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Local {
    pub(crate) status: StatusCode,
    /// Bounded label, sent as `X-Shardyard-Error` and used in metrics.
    pub(crate) kind: &'static str,
    /// Whether this is a refusal (`X-Shardyard-Refused`), not an error.
    pub(crate) refused: bool,
    pub(crate) message: String,
    pub(crate) code: u64,
    pub(crate) retry_after: Option<Duration>,
    /// For 502s: the status upstream answered, if it answered.
    pub(crate) upstream_status: Option<u16>,
}

impl Local {
    pub(crate) fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            kind,
            refused: false,
            message: message.into(),
            code: 0,
            retry_after: None,
            upstream_status: None,
        }
    }

    pub(crate) fn bad_request(kind: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, kind, message)
    }

    /// A refusal before anything was sent.
    pub(crate) fn refusal(
        status: StatusCode,
        kind: &'static str,
        message: impl Into<String>,
    ) -> Self {
        Self {
            refused: true,
            ..Self::new(status, kind, message)
        }
    }

    /// The rate-limit engine's refusal: 429 for a wait past the budget, 503 at the
    /// invalid-request guard, 401 for a locked token, 404 (code 10015) for a gone webhook, 400
    /// for a bad route.
    pub(crate) fn from_refusal(refusal: &Refusal) -> Self {
        let message = format!("shardyard: {refusal}");
        let (status, code) = match refusal {
            Refusal::WouldWait { .. } => (StatusCode::TOO_MANY_REQUESTS, 0),
            Refusal::InvalidRequestGuard { .. } => (StatusCode::SERVICE_UNAVAILABLE, 0),
            Refusal::TokenLocked => (StatusCode::UNAUTHORIZED, 0),
            Refusal::WebhookGone => (StatusCode::NOT_FOUND, UNKNOWN_WEBHOOK),
            Refusal::BadRoute(_) => (StatusCode::BAD_REQUEST, 0),
        };
        Self {
            status,
            kind: refusal.kind(),
            refused: !matches!(refusal, Refusal::BadRoute(_)),
            message,
            code,
            retry_after: refusal.retry_after(),
            upstream_status: None,
        }
    }
}

impl IntoResponse for Local {
    fn into_response(self) -> Response {
        let mut body = json!({"message": self.message, "code": self.code});
        if let Some(after) = self.retry_after {
            // Whole milliseconds, rounded up, as Discord's float seconds.
            let millis = u64::try_from(after.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX);
            body["retry_after"] = json!(Duration::from_millis(millis).as_secs_f64());
            body["global"] = json!(false);
        }
        if let Some(status) = self.upstream_status {
            body["upstream_status"] = json!(status);
        }
        let mut response = (self.status, axum::Json(body)).into_response();
        let headers = response.headers_mut();
        headers.insert(headers::ERROR, HeaderValue::from_static(self.kind));
        if self.refused {
            headers.insert(headers::REFUSED, HeaderValue::from_static(self.kind));
        }
        if let Some(after) = self.retry_after {
            let whole = after.as_secs() + u64::from(after.subsec_nanos() > 0);
            headers.insert(header::RETRY_AFTER, HeaderValue::from(whole));
        }
        response
    }
}
