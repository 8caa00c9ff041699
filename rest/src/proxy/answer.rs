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

    /// The kind of [`Local::moved`], which the sending replica recognizes.
    pub(crate) const MOVED: &'static str = "replica_moved";

    /// To a replica that asked for a permit (or forwarded a request) here: this replica's view
    /// gives the token to another replica (views differ for a moment after a change); the
    /// sender asks again.
    pub(crate) fn moved() -> Self {
        Self {
            retry_after: Some(Duration::from_secs(1)),
            ..Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                Self::MOVED,
                "shardyard: this replica does not keep this token's limits (the replicas' views \
                 differ for a moment)",
            )
        }
    }

    /// The replicas kept sending the request to each other, or none could be reached: nothing
    /// was sent upstream; try again in a second.
    pub(crate) fn unsettled() -> Self {
        Self {
            retry_after: Some(Duration::from_secs(1)),
            ..Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "cluster_unsettled",
                "shardyard: the replica keeping this token's limits could not be found; try again",
            )
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_map_to_documented_statuses() {
        let cases = [
            (
                Refusal::WouldWait {
                    retry_after: Duration::from_millis(1_200),
                },
                429,
                "would_wait",
                0,
            ),
            (
                Refusal::InvalidRequestGuard {
                    used: 10,
                    line: 10,
                    retry_after: Duration::from_secs(600),
                },
                503,
                "invalid_request_guard",
                0,
            ),
            (Refusal::TokenLocked, 401, "token_locked", 0),
            (Refusal::WebhookGone, 404, "webhook_gone", 10015),
        ];
        for (refusal, status, kind, code) in cases {
            let local = Local::from_refusal(&refusal);
            assert_eq!(local.status.as_u16(), status, "{kind}");
            assert_eq!(local.kind, kind);
            assert_eq!(local.code, code);
            assert!(local.refused);
            let response = local.into_response();
            assert_eq!(response.headers()[headers::REFUSED], kind);
            assert_eq!(response.headers()[headers::ERROR], kind);
        }
    }

    #[tokio::test]
    async fn a_local_429_says_when_in_discords_shape() {
        let response = Local::from_refusal(&Refusal::WouldWait {
            retry_after: Duration::from_millis(1_200),
        })
        .into_response();
        assert_eq!(response.headers()[header::RETRY_AFTER], "2");
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["retry_after"], 1.2);
        assert_eq!(body["global"], false);
        assert_eq!(body["code"], 0);
        assert!(body["message"].as_str().unwrap().starts_with("shardyard: "));
    }
}
