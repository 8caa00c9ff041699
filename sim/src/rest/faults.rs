//! Injected REST faults: added latency, 5xx answers and 429s of any scope, each for the next N
//! requests whose path starts with a prefix. Driven through `/_sim/rest/faults`.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use crate::state::SimState;

/// The scope of a 429, as `X-RateLimit-Scope` says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Scope {
    /// A per-route bucket of this token.
    User,
    /// The per-token global limit.
    Global,
    /// A limit shared by everyone on the resource; does not count as an invalid request.
    Shared,
}

impl Scope {
    /// The header value.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Global => "global",
            Self::Shared => "shared",
        }
    }
}

/// The next `remaining` matching requests get `status`.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct StatusFault {
    status: u16,
    remaining: u32,
    route: Option<String>,
}

/// The next `remaining` matching requests get a 429 of `scope`.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct RateLimitFault {
    scope: Scope,
    retry_after: f64,
    remaining: u32,
    route: Option<String>,
}

/// Every active fault, in the order they apply (the first matching entry of a kind is used).
#[derive(Debug, Default, Clone, Serialize)]
pub(crate) struct Faults {
    latency_ms: u64,
    status: Vec<StatusFault>,
    rate_limit: Vec<RateLimitFault>,
}

/// `POST /_sim/rest/faults`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FaultRequest {
    #[serde(default)]
    clear: bool,
    latency_ms: Option<u64>,
    status: Option<u16>,
    count: Option<u32>,
    route: Option<String>,
    rate_limit: Option<RateLimitRequest>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RateLimitRequest {
    scope: Scope,
    retry_after: f64,
    count: Option<u32>,
    route: Option<String>,
}

/// An injected 429.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct InjectedRateLimit {
    pub(crate) scope: Scope,
    pub(crate) retry_after: Duration,
}

/// Normalizes a route prefix: relative to `/api/v10`, with a leading slash.
fn prefix(route: Option<String>) -> Option<String> {
    let route = route?;
    let route = route.strip_prefix("/api/v10").unwrap_or(&route);
    if route.is_empty() || route == "/" {
        return None;
    }
    Some(if route.starts_with('/') {
        route.to_owned()
    } else {
        format!("/{route}")
    })
}

fn matches(route: Option<&String>, path: &str) -> bool {
    route.is_none_or(|r| path.starts_with(r.as_str()))
}

impl Faults {
    /// Applies a request; on error nothing changed.
    pub(crate) fn apply(&mut self, req: FaultRequest) -> Result<(), String> {
        if req.status.is_none() && (req.count.is_some() || req.route.is_some()) {
            return Err("`count` and `route` at the top level go with `status`".into());
        }
        if let Some(status) = req.status
            && !(500..=599).contains(&status)
        {
            return Err(format!(
                "status must be a 5xx (500, 502, 503 or 504), not {status}"
            ));
        }
        if let Some(rl) = &req.rate_limit
            && !(rl.retry_after.is_finite() && rl.retry_after >= 0.0 && rl.retry_after <= 86_400.0)
        {
            return Err("rate_limit.retry_after must be between 0 and 86400 seconds".into());
        }
        if req.clear {
            *self = Self::default();
        }
        if let Some(latency) = req.latency_ms {
            self.latency_ms = latency;
        }
        if let Some(status) = req.status {
            let count = req.count.unwrap_or(1);
            if count > 0 {
                self.status.push(StatusFault {
                    status,
                    remaining: count,
                    route: prefix(req.route),
                });
            }
        }
        if let Some(rl) = req.rate_limit {
            let count = rl.count.unwrap_or(1);
            if count > 0 {
                self.rate_limit.push(RateLimitFault {
                    scope: rl.scope,
                    retry_after: rl.retry_after,
                    remaining: count,
                    route: prefix(rl.route),
                });
            }
        }
        Ok(())
    }

    /// The added latency.
    pub(crate) fn latency(&self) -> Duration {
        Duration::from_millis(self.latency_ms)
    }

    /// Takes one injected status for a request to `path` (relative to `/api/v10`).
    pub(crate) fn take_status(&mut self, path: &str) -> Option<u16> {
        let i = self
            .status
            .iter()
            .position(|f| matches(f.route.as_ref(), path))?;
        let fault = &mut self.status[i];
        let status = fault.status;
        fault.remaining -= 1;
        if fault.remaining == 0 {
            self.status.remove(i);
        }
        Some(status)
    }

    /// Takes one injected 429 for a request to `path` (relative to `/api/v10`).
    pub(crate) fn take_rate_limit(&mut self, path: &str) -> Option<InjectedRateLimit> {
        let i = self
            .rate_limit
            .iter()
            .position(|f| matches(f.route.as_ref(), path))?;
        let fault = &mut self.rate_limit[i];
        let injected = InjectedRateLimit {
            scope: fault.scope,
            retry_after: Duration::from_secs_f64(fault.retry_after),
        };
        fault.remaining -= 1;
        if fault.remaining == 0 {
            self.rate_limit.remove(i);
        }
        Some(injected)
    }
}

fn control_error(message: String) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(serde_json::json!({ "error": message })),
    )
        .into_response()
}

/// `GET /_sim/rest/faults`.
pub(crate) async fn get_faults(State(state): State<Arc<SimState>>) -> Response {
    let faults = state.rest.faults().clone();
    Json(faults).into_response()
}

/// `POST /_sim/rest/faults`.
pub(crate) async fn post_faults(State(state): State<Arc<SimState>>, body: Bytes) -> Response {
    let req: FaultRequest = match serde_json::from_slice(&body) {
        Ok(req) => req,
        Err(e) => return control_error(format!("invalid fault request: {e}")),
    };
    match state.rest.update_faults(req) {
        Ok(faults) => Json(faults).into_response(),
        Err(e) => control_error(e),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{Faults, Scope};

    fn apply(faults: &mut Faults, json: &str) -> Result<(), String> {
        faults.apply(serde_json::from_str(json).unwrap())
    }

    #[test]
    fn status_faults_count_down_and_match_prefixes() {
        let mut f = Faults::default();
        apply(
            &mut f,
            r#"{"status": 503, "count": 2, "route": "/api/v10/channels"}"#,
        )
        .unwrap();
        assert_eq!(f.take_status("/users/@me"), None);
        assert_eq!(f.take_status("/channels/1/messages"), Some(503));
        assert_eq!(f.take_status("/channels/2"), Some(503));
        assert_eq!(f.take_status("/channels/2"), None);
    }

    #[test]
    fn rate_limit_faults_and_clear() {
        let mut f = Faults::default();
        apply(
            &mut f,
            r#"{"latency_ms": 20, "rate_limit": {"scope": "shared", "retry_after": 1.5}}"#,
        )
        .unwrap();
        assert_eq!(f.latency(), Duration::from_millis(20));
        let rl = f.take_rate_limit("/gateway/bot").unwrap();
        assert_eq!(rl.scope, Scope::Shared);
        assert_eq!(rl.retry_after, Duration::from_millis(1500));
        assert!(f.take_rate_limit("/gateway/bot").is_none());
        apply(&mut f, r#"{"status": 500, "count": 9}"#).unwrap();
        apply(&mut f, r#"{"clear": true}"#).unwrap();
        assert_eq!(f.latency(), Duration::ZERO);
        assert!(f.take_status("/x").is_none());
    }

    #[test]
    fn bad_requests_change_nothing() {
        let mut f = Faults::default();
        assert!(apply(&mut f, r#"{"status": 404}"#).is_err());
        assert!(apply(&mut f, r#"{"count": 3}"#).is_err());
        assert!(
            apply(
                &mut f,
                r#"{"latency_ms": 5, "rate_limit": {"scope": "user", "retry_after": -1}}"#
            )
            .is_err()
        );
        assert_eq!(f.latency(), Duration::ZERO);
        assert!(serde_json::from_str::<super::FaultRequest>(r#"{"sttus": 500}"#).is_err());
    }
}
