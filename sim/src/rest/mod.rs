//! The simulated REST API: routes, rate limits, invalid-request accounting, injected faults.

use std::sync::Arc;

use axum::Router;

use crate::config::SimConfig;
use crate::state::SimState;

/// REST-side state.
#[derive(Debug)]
pub struct RestState {}

impl RestState {
    /// State for `config`.
    #[must_use]
    pub fn new(_config: &SimConfig) -> Self {
        Self {}
    }

    /// The REST part of `/_sim/stats`.
    #[must_use]
    pub fn stats_json(&self) -> serde_json::Value {
        serde_json::json!({})
    }
}

/// Routes under `/api/v10`.
pub fn router() -> Router<Arc<SimState>> {
    Router::new()
}

/// Fault-injection routes under `/_sim/rest`.
pub fn control_router() -> Router<Arc<SimState>> {
    Router::new()
}
