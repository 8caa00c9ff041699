//! The simulated gateway: `ws://ADDR/gateway` and `ws://ADDR/resume`, JSON with optional
//! zlib-stream or zstd-stream, HELLO and heartbeats, IDENTIFY and RESUME checked like Discord, commands, and the
//! faults `/_sim/` injects.

mod commands;
mod compress;
mod connection;
mod handshake;
pub mod zlib;
pub mod zstd;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use crate::state::SimState;

/// The query string of a gateway connection.
#[derive(Debug, Deserialize)]
pub struct GatewayParams {
    v: Option<String>,
    encoding: Option<String>,
    compress: Option<String>,
}

/// Upgrades `GET /gateway` to a websocket.
pub async fn gateway(
    state: State<Arc<SimState>>,
    peer: ConnectInfo<SocketAddr>,
    params: Query<GatewayParams>,
    ws: WebSocketUpgrade,
) -> Response {
    upgrade(state, peer, params, ws, false)
}

/// Upgrades `GET /resume` (the `resume_gateway_url`) to a websocket.
pub async fn resume(
    state: State<Arc<SimState>>,
    peer: ConnectInfo<SocketAddr>,
    params: Query<GatewayParams>,
    ws: WebSocketUpgrade,
) -> Response {
    upgrade(state, peer, params, ws, true)
}

fn upgrade(
    State(state): State<Arc<SimState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Query(params): Query<GatewayParams>,
    ws: WebSocketUpgrade,
    on_resume_url: bool,
) -> Response {
    let compression = match params.compress.as_deref() {
        None | Some("") => compress::Compression::None,
        Some("zlib-stream") => compress::Compression::ZlibStream,
        Some("zstd-stream") => compress::Compression::ZstdStream,
        Some(other) => {
            return (
                StatusCode::BAD_REQUEST,
                format!(
                    "the simulator supports compress=zlib-stream or zstd-stream, not {other:?}"
                ),
            )
                .into_response();
        }
    };
    let version_ok = matches!(params.v.as_deref(), Some("10" | "9"));
    let encoding_ok = matches!(params.encoding.as_deref(), None | Some("json"));
    ws.max_message_size(1 << 20)
        .on_upgrade(move |socket| async move {
            let setup = connection::Setup {
                compression,
                on_resume_url,
                version_ok,
                encoding_ok,
                peer,
            };
            connection::Connection::new(state, socket, setup)
                .run()
                .await;
        })
}
