//! The shardyard operator: the `DiscordBot` custom resource ([`resource`]), the CRD generated
//! from it ([`crd`]), the pure planner ([`plan`]), the reconcile loop ([`controller`]) and the
//! queue depth the workers scale on ([`queue_depth`]). See
//! `README.md`.
#![warn(missing_docs)]
#![cfg_attr(not(test), warn(clippy::unwrap_used))]

pub mod controller;
pub mod crd;
pub mod discord;
pub mod manifest;
pub mod metrics_api;
pub mod plan;
pub mod queue_depth;
pub mod resource;
pub mod validate;

pub use resource::{
    DiscordBot, DiscordBotSpec, DiscordBotStatus, ReshardPhase, ReshardStatus, ShardCount,
};
