//! Ground-truth counters of the REST API, served in the `rest` part of `/_sim/stats`.

use std::collections::BTreeMap;

use axum::http::StatusCode;

use super::faults::Scope;
use super::table::RouteSpec;

/// What the REST API received and answered.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    /// Every request under `/api/v10`.
    pub(crate) requests: u64,
    /// Requests counted against a bucket, by `<bucket hash>:<top-level resource id or none>`.
    pub(crate) by_bucket: BTreeMap<String, u64>,
    /// Requests by route template (`GET /channels/{channel_id}`).
    pub(crate) by_route: BTreeMap<String, u64>,
    /// Answers by status.
    pub(crate) by_status: BTreeMap<u16, u64>,
    /// 429s sent (natural and injected), by scope.
    pub(crate) user: u64,
    pub(crate) global: u64,
    pub(crate) shared: u64,
    /// Cloudflare-style 429s sent to banned IPs.
    pub(crate) cloudflare_banned: u64,
    /// Injected 5xx answers.
    pub(crate) injected_status: u64,
    /// Injected 429s.
    pub(crate) injected_rate_limit: u64,
}

impl Counters {
    /// Counts a request of `spec`.
    pub(crate) fn request(&mut self, spec: &RouteSpec) {
        self.requests += 1;
        if spec.known {
            *self.by_route.entry(spec.key()).or_default() += 1;
        }
    }

    /// Counts an answer.
    pub(crate) fn status(&mut self, status: StatusCode) {
        *self.by_status.entry(status.as_u16()).or_default() += 1;
    }

    /// Counts a 429 of `scope`.
    pub(crate) fn rate_limited(&mut self, scope: Scope) {
        match scope {
            Scope::User => self.user += 1,
            Scope::Global => self.global += 1,
            Scope::Shared => self.shared += 1,
        }
    }
}
