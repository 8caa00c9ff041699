//! A faithful Discord simulator: the gateway (zlib-stream, heartbeats, identify limits, resume
//! with replay) and the REST API (routes bots use, per-bucket and global rate limits, invalid
//! request accounting), with fault injection and ground-truth counters under `/_sim/`.
//!
//! Everything else in shardyard is tested against it, so it follows Discord's documented rules
//! rather than any one client's expectations.
#![cfg_attr(not(test), warn(clippy::unwrap_used))]

pub mod bot;
pub mod commands;
pub mod config;
pub mod control;
pub mod gateway;
pub mod health;
mod json;
pub mod model;
pub mod payload;
pub mod rest;
pub mod server;
pub mod session;
pub mod snowflake;
pub mod state;
pub mod stats;
pub mod traffic;
pub mod world;

pub use config::{BotConfig, SimConfig};
pub use server::Simulator;
pub use state::SimState;
pub use stats::payload_digest;
