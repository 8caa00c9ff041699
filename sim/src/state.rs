//! The simulator's shared state: every bot, the REST side, the violations list.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::bot::BotState;
use crate::config::SimConfig;
use crate::rest::RestState;
use crate::stats::Violations;

/// Everything the simulator's handlers share.
#[derive(Debug)]
pub struct SimState {
    /// The configuration it started with.
    pub config: SimConfig,
    /// Every bot, in configuration order.
    pub bots: Vec<Arc<BotState>>,
    /// Rules clients broke.
    pub violations: Violations,
    /// Rate limits, invalid-request accounting and injected faults of the REST API.
    pub rest: RestState,
    /// Where the simulator listens.
    pub addr: SocketAddr,
    /// Cancelled when the simulator shuts down.
    pub shutdown: CancellationToken,
    next_conn: AtomicU64,
}

impl SimState {
    /// State for `config`, served at `addr`.
    #[must_use]
    pub fn new(config: SimConfig, addr: SocketAddr) -> Self {
        let bots = config
            .bots
            .iter()
            .enumerate()
            .map(|(i, bot)| {
                Arc::new(BotState::new(
                    bot.clone(),
                    config.seed.wrapping_add(i as u64 * 7919),
                ))
            })
            .collect();
        Self {
            rest: RestState::new(&config),
            config,
            bots,
            violations: Violations::default(),
            addr,
            shutdown: CancellationToken::new(),
            next_conn: AtomicU64::new(1),
        }
    }

    /// The bot a token belongs to (with or without the `Bot ` prefix).
    #[must_use]
    pub fn bot_by_token(&self, token: &str) -> Option<&Arc<BotState>> {
        let token = shardyard_protocol::Token::new(token);
        self.bots.iter().find(|b| b.config.token == token)
    }

    /// A bot by name, or the first bot when `name` is `None`.
    #[must_use]
    pub fn bot_by_name(&self, name: Option<&str>) -> Option<&Arc<BotState>> {
        match name {
            None => self.bots.first(),
            Some(name) => self.bots.iter().find(|b| b.config.name == name),
        }
    }

    /// `ws://ADDR/gateway`, the URL `/gateway/bot` hands out (ADDR the advertised address when
    /// there is one).
    #[must_use]
    pub fn gateway_url(&self) -> String {
        format!("{}/gateway", self.websocket_base())
    }

    /// `ws://ADDR/resume`, the `resume_gateway_url` READY hands out.
    #[must_use]
    pub fn resume_url(&self) -> String {
        format!("{}/resume", self.websocket_base())
    }

    /// `ws://ADDR` (`wss://` for an advertised `https://` URL).
    fn websocket_base(&self) -> String {
        match self.config.advertise_url.as_deref() {
            Some(url) => {
                let url = url.trim_end_matches('/');
                match url.split_once("://") {
                    Some(("https" | "wss", rest)) => format!("wss://{rest}"),
                    Some((_, rest)) => format!("ws://{rest}"),
                    None => format!("ws://{url}"),
                }
            }
            None => format!("ws://{}", self.addr),
        }
    }

    /// How long a disconnected session stays resumable.
    #[must_use]
    pub fn resume_window(&self) -> Duration {
        Duration::from_secs(self.config.resume_window_secs)
    }

    /// A new connection id.
    pub fn next_conn_id(&self) -> u64 {
        self.next_conn.fetch_add(1, Ordering::Relaxed)
    }
}
