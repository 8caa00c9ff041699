//! Discord's REST rate limits, shared by every process of a bot: the engine behind the
//! `shardyard rest` proxy. [`ratelimit`] decides when a request may be sent and learns Discord's
//! buckets from its answers; it does no HTTP itself. [`proxy`] is the HTTP proxy built on it.
#![warn(missing_docs)]
#![cfg_attr(not(test), warn(clippy::unwrap_used))]

pub mod cluster;
pub mod proxy;
pub mod ratelimit;

pub use proxy::{ProxyConfig, ProxyError, run};
pub use ratelimit::{
    Completion, Config, Permit, RateLimiter, Refusal, ResponseMeta, Route, RouteError, Scope,
    TokenConfig,
};
