//! What each shard is doing, and the counters `/metrics` serves. Labels stay bounded: shard ids
//! come from the process's own range, event types from Discord's set (an unknown type counts as
//! `UNKNOWN` once a hundred types were seen).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};

pub use shardyard_admin::prom::Histogram;
use shardyard_admin::prom::{LabeledCounters, header};

/// The state of one shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ShardState {
    /// Not connected yet, or between connections.
    Disconnected = 0,
    /// Connected, waiting for READY or RESUMED.
    Connecting = 1,
    /// READY or RESUMED: receiving events.
    Ready = 2,
    /// Stopped for good after a fatal close code; never retried.
    Failed = 3,
    /// Shut down on purpose.
    Stopped = 4,
}

impl ShardState {
    fn from_u8(v: u8) -> Self {
        match v {
            1 => Self::Connecting,
            2 => Self::Ready,
            3 => Self::Failed,
            4 => Self::Stopped,
            _ => Self::Disconnected,
        }
    }

    /// The label used in metrics.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Disconnected => "disconnected",
            Self::Connecting => "connecting",
            Self::Ready => "ready",
            Self::Failed => "failed",
            Self::Stopped => "stopped",
        }
    }
}

const MAX_EVENT_TYPES: usize = 100;
/// Close reasons are a fixed set in practice; the cap only guards against a bug.
const MAX_CLOSE_REASONS: usize = 64;

/// One shard's status and counters.
#[derive(Debug)]
pub struct ShardStatus {
    /// Shard id.
    pub id: u32,
    state: AtomicU8,
    /// Dispatches published and acknowledged by JetStream.
    pub published: AtomicU64,
    /// Dispatches not published because another generation is active.
    pub suppressed: AtomicU64,
    /// Dispatches dropped because they are larger than NATS' `max_payload`.
    pub oversized: AtomicU64,
    /// Times the shard reconnected.
    pub reconnects: AtomicU64,
    /// Sequence acknowledged by JetStream (what a resume starts from).
    pub acked_seq: AtomicU64,
    /// Last heartbeat round trip, in microseconds.
    pub heartbeat_rtt_us: AtomicU64,
    /// Compressed bytes received.
    pub bytes_compressed: AtomicU64,
    /// Inflated bytes received.
    pub bytes_raw: AtomicU64,
    /// Publishes awaiting JetStream's acknowledgement.
    pub window: AtomicU64,
    /// From receiving a dispatch to JetStream acknowledging it.
    pub publish_latency: Histogram,
    /// Waiting for an identify turn (the shared concurrency buckets and the daily budget).
    pub identify_wait: Histogram,
    events: LabeledCounters,
    closes: LabeledCounters,
}

impl ShardStatus {
    /// A shard that has not connected yet.
    #[must_use]
    pub fn new(id: u32) -> Self {
        Self {
            id,
            state: AtomicU8::new(ShardState::Disconnected as u8),
            published: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
            oversized: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
            acked_seq: AtomicU64::new(0),
            heartbeat_rtt_us: AtomicU64::new(0),
            bytes_compressed: AtomicU64::new(0),
            bytes_raw: AtomicU64::new(0),
            window: AtomicU64::new(0),
            publish_latency: Histogram::default(),
            identify_wait: Histogram::default(),
            events: LabeledCounters::new(MAX_EVENT_TYPES, "UNKNOWN"),
            closes: LabeledCounters::new(MAX_CLOSE_REASONS, "other"),
        }
    }

    /// The current state.
    pub fn state(&self) -> ShardState {
        ShardState::from_u8(self.state.load(Ordering::Relaxed))
    }

    /// Moves to `state`.
    pub fn set_state(&self, state: ShardState) {
        self.state.store(state as u8, Ordering::Relaxed);
    }

    /// Counts a dispatch of `event` (bounded: past 100 types, new ones count as `UNKNOWN`).
    pub fn count_event(&self, event: &str) {
        self.events.inc(event);
    }

    /// Counts a connection end by reason (a bounded set: close-code reasons and a few causes).
    pub fn count_close(&self, reason: &str) {
        self.closes.inc(reason);
    }
}

/// Every shard of the process.
#[derive(Debug)]
pub struct GatewayStatus {
    /// Shards, in id order.
    pub shards: Vec<std::sync::Arc<ShardStatus>>,
    /// The publishing connection to NATS, once started.
    pub link: std::sync::OnceLock<crate::nats_link::NatsLink>,
}

impl GatewayStatus {
    /// Ready when every shard is READY (a failed shard makes the process not ready).
    #[must_use]
    pub fn ready(&self) -> bool {
        !self.shards.is_empty() && self.shards.iter().all(|s| s.state() == ShardState::Ready)
    }

    /// Prometheus text.
    #[must_use]
    pub fn metrics(&self) -> String {
        let mut out = String::new();
        if let Some(link) = self.link.get() {
            header(
                &mut out,
                "shardyard_gateway_nats_link_up",
                "gauge",
                "1 while the publishing connection to NATS is up.",
            );
            let _ = writeln!(
                out,
                "shardyard_gateway_nats_link_up {}",
                u8::from(link.is_up())
            );
            header(
                &mut out,
                "shardyard_gateway_nats_link_connections_total",
                "counter",
                "Publishing connections to NATS made (the first one, then every reconnect).",
            );
            let _ = writeln!(
                out,
                "shardyard_gateway_nats_link_connections_total {}",
                link.connections()
            );
        }
        header(
            &mut out,
            "shardyard_gateway_shard_state",
            "gauge",
            "1 for the state each shard is in.",
        );
        for shard in &self.shards {
            let current = shard.state();
            for state in [
                ShardState::Disconnected,
                ShardState::Connecting,
                ShardState::Ready,
                ShardState::Failed,
                ShardState::Stopped,
            ] {
                let _ = writeln!(
                    out,
                    "shardyard_gateway_shard_state{{shard=\"{}\",state=\"{}\"}} {}",
                    shard.id,
                    state.name(),
                    u8::from(current == state)
                );
            }
        }
        // One value per shard, of `kind` ("counter" or "gauge").
        let per_shard = |out: &mut String,
                         kind: &str,
                         name: &str,
                         help: &str,
                         get: &dyn Fn(&ShardStatus) -> u64| {
            header(out, name, kind, help);
            for shard in &self.shards {
                let _ = writeln!(out, "{name}{{shard=\"{}\"}} {}", shard.id, get(shard));
            }
        };
        let counter =
            |out: &mut String, name: &str, help: &str, get: &dyn Fn(&ShardStatus) -> u64| {
                per_shard(out, "counter", name, help, get);
            };
        counter(
            &mut out,
            "shardyard_gateway_published_total",
            "Dispatches acknowledged by JetStream.",
            &|s| s.published.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "shardyard_gateway_suppressed_total",
            "Dispatches not published because another generation is active (--generation).",
            &|s| s.suppressed.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "shardyard_gateway_oversized_dropped_total",
            "Dispatches larger than NATS' max_payload, dropped (never publishable).",
            &|s| s.oversized.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "shardyard_gateway_reconnects_total",
            "Reconnections.",
            &|s| s.reconnects.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "shardyard_gateway_bytes_compressed_total",
            "Compressed bytes received.",
            &|s| s.bytes_compressed.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "shardyard_gateway_bytes_raw_total",
            "Inflated bytes received.",
            &|s| s.bytes_raw.load(Ordering::Relaxed),
        );
        per_shard(
            &mut out,
            "gauge",
            "shardyard_gateway_publish_window",
            "Publishes awaiting JetStream's acknowledgement.",
            &|s| s.window.load(Ordering::Relaxed),
        );
        per_shard(
            &mut out,
            "gauge",
            "shardyard_gateway_acked_sequence",
            "The session's last sequence JetStream acknowledged (or another generation's): where a resume starts.",
            &|s| s.acked_seq.load(Ordering::Relaxed),
        );
        Histogram::render_sum(
            &mut out,
            "shardyard_gateway_publish_latency_seconds",
            "From receiving a dispatch to JetStream acknowledging it.",
            self.shards.iter().map(|s| &s.publish_latency),
        );
        Histogram::render_sum(
            &mut out,
            "shardyard_gateway_identify_wait_seconds",
            "Waiting for an identify turn (concurrency buckets shared by every process, the daily budget).",
            self.shards.iter().map(|s| &s.identify_wait),
        );
        header(
            &mut out,
            "shardyard_gateway_heartbeat_rtt_seconds",
            "gauge",
            "Last heartbeat round trip.",
        );
        for shard in &self.shards {
            #[allow(clippy::cast_precision_loss)]
            let rtt = shard.heartbeat_rtt_us.load(Ordering::Relaxed) as f64 / 1e6;
            let _ = writeln!(
                out,
                "shardyard_gateway_heartbeat_rtt_seconds{{shard=\"{}\"}} {rtt}",
                shard.id
            );
        }
        header(
            &mut out,
            "shardyard_gateway_events_total",
            "counter",
            "Dispatches received, by type.",
        );
        for shard in &self.shards {
            for (event, n) in shard.events.snapshot() {
                let _ = writeln!(
                    out,
                    "shardyard_gateway_events_total{{shard=\"{}\",event=\"{event}\"}} {n}",
                    shard.id
                );
            }
        }
        header(
            &mut out,
            "shardyard_gateway_closes_total",
            "counter",
            "Connections ended, by reason.",
        );
        for shard in &self.shards {
            for (reason, n) in shard.closes.snapshot() {
                let _ = writeln!(
                    out,
                    "shardyard_gateway_closes_total{{shard=\"{}\",reason=\"{reason}\"}} {n}",
                    shard.id
                );
            }
        }
        out
    }
}
