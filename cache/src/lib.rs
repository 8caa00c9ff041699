//! shardyard's central cache: applies a bot's cache-relevant events, strictly in stream order, to
//! the bot's NATS KV bucket, where anything (a dashboard, a worker in any language) can read it.
//!
//! - [`apply`]: the pure part, from an event to KV writes (unit-tested without NATS);
//! - [`schema`]: the keys and the JSON values stored under them;
//! - [`service`]: the consumer loop (`shardyard cache`);
//! - [`CacheReader`]: typed lookups for readers in Rust;
//! - [`http`]: the read-only HTTP API for dashboards.
//!
//! See `cache/README.md` for the schema, the guarantees and the flags.

pub mod apply;
pub mod http;
mod reader;
pub mod schema;
pub mod service;

pub use apply::{ApplyError, Resource, Resources};
pub use reader::{CacheReader, ReadError};
pub use service::{CacheConfig, CacheStatus, ServiceError, run};
