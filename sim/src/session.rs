//! Gateway sessions: the ordered log of dispatches a session received, which makes live
//! dispatch and resume replay one mechanism (a connection sends everything past its cursor).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use shardyard_protocol::Intents;
use tokio::sync::{Notify, mpsc};

use crate::stats::{ShardStats, payload_digest};

/// One dispatch: its type and the bytes of `d`, shared by every session that receives it.
#[derive(Debug)]
pub struct Event {
    /// `t`.
    pub kind: &'static str,
    /// The JSON of `d`.
    pub data: Bytes,
    /// [`payload_digest`] of `data`.
    pub digest: u64,
}

impl Event {
    /// An event of `kind` with payload `data`.
    #[must_use]
    pub fn new(kind: &'static str, data: impl Into<Bytes>) -> Arc<Self> {
        let data = data.into();
        let digest = payload_digest(&data);
        Arc::new(Self { kind, data, digest })
    }

    /// An event whose payload is `value` serialized.
    ///
    /// # Panics
    /// Never for the simulator's own types: their serialization cannot fail.
    #[must_use]
    pub fn json(kind: &'static str, value: &impl serde::Serialize) -> Arc<Self> {
        let data = serde_json::to_vec(value).expect("simulator payloads always serialize");
        Self::new(kind, data)
    }
}

/// Instructions from outside (fault injection, takeover) to the connection serving a session.
#[derive(Debug, Clone)]
pub enum ConnControl {
    /// Drop the TCP connection without a close frame.
    Drop,
    /// Close with this code.
    Close(u16, String),
    /// Send op 7 RECONNECT.
    Reconnect,
    /// Send op 9 with this `d`.
    InvalidateSession(bool),
    /// Send op 1, asking for an immediate heartbeat.
    RequestHeartbeat,
    /// Stop or resume answering heartbeats.
    AckHeartbeats(bool),
    /// Corrupt the next compressed frame.
    CorruptNextFrame,
}

/// Where a session's connection is.
#[derive(Debug, Default)]
pub struct Link {
    /// The connection serving the session, if any.
    pub conn: Option<(u64, mpsc::UnboundedSender<ConnControl>)>,
    /// When the session lost its connection.
    pub detached_at: Option<Instant>,
    /// Invalidated: can never be resumed.
    pub invalid: bool,
}

/// The dispatch log of a session.
#[derive(Debug)]
pub struct SessionLog {
    /// Sequence number of `events[0]`.
    pub first_seq: u64,
    /// Retained dispatches, oldest first.
    pub events: VecDeque<Arc<Event>>,
    /// The highest sequence ever written to a socket.
    pub max_sent: u64,
    capacity: usize,
    bytes: usize,
    capacity_bytes: usize,
}

impl SessionLog {
    /// The sequence number the next event gets.
    #[must_use]
    pub fn next_seq(&self) -> u64 {
        self.first_seq + self.events.len() as u64
    }

    /// The last sequence number assigned (0 before any).
    #[must_use]
    pub fn last_seq(&self) -> u64 {
        self.next_seq() - 1
    }

    /// Events after `cursor`, at most `max` of them, with their sequence numbers.
    pub fn after(&self, cursor: u64, max: usize) -> impl Iterator<Item = (u64, &Arc<Event>)> {
        let start = cursor.saturating_add(1).max(self.first_seq);
        let skip = usize::try_from(start - self.first_seq).unwrap_or(usize::MAX);
        self.events
            .iter()
            .skip(skip)
            .take(max)
            .enumerate()
            .map(move |(i, e)| (start + i as u64, e))
    }

    fn over(&self, factor: usize) -> bool {
        self.events.len() > self.capacity.saturating_mul(factor)
            || self.bytes > self.capacity_bytes.saturating_mul(factor)
    }

    /// Whether events after `cursor` were dropped before being sent: the reader fell too far
    /// behind to be served without loss.
    #[must_use]
    pub fn lost_after(&self, cursor: u64) -> bool {
        cursor + 1 < self.first_seq
    }

    /// Whether a client that has seen up to `seq` can still be replayed everything after it.
    #[must_use]
    pub fn can_resume_from(&self, seq: u64) -> bool {
        seq + 1 >= self.first_seq && seq <= self.max_sent
    }
}

/// How much of its past a session keeps for replay: the tighter limit applies.
#[derive(Debug, Clone, Copy)]
pub struct ReplayLimits {
    /// Events.
    pub events: usize,
    /// Bytes of payload.
    pub bytes: usize,
}

/// A gateway session of one shard.
#[derive(Debug)]
pub struct Session {
    /// `session_id`.
    pub id: String,
    /// Shard id.
    pub shard: u32,
    /// Shard count.
    pub total: u32,
    /// Intents from IDENTIFY.
    pub intents: Intents,
    /// `large_threshold` from IDENTIFY.
    pub large_threshold: usize,
    /// Where counters go.
    pub stats: Arc<ShardStats>,
    /// Wakes the connection when events arrive.
    pub notify: Notify,
    log: Mutex<SessionLog>,
    link: Mutex<Link>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Session {
    /// A new session keeping up to `capacity` events, and `capacity_bytes` of payload, for replay.
    #[must_use]
    pub fn new(
        id: String,
        shard: u32,
        total: u32,
        intents: Intents,
        large_threshold: usize,
        stats: Arc<ShardStats>,
        limits: ReplayLimits,
    ) -> Self {
        Self {
            id,
            shard,
            total,
            intents,
            large_threshold,
            stats,
            notify: Notify::new(),
            log: Mutex::new(SessionLog {
                first_seq: 1,
                events: VecDeque::new(),
                max_sent: 0,
                capacity: limits.events.max(16),
                bytes: 0,
                capacity_bytes: limits.bytes,
            }),
            link: Mutex::new(Link::default()),
        }
    }

    /// Appends a dispatch; returns its sequence number.
    pub fn push(&self, event: Arc<Event>) -> u64 {
        let seq = {
            let mut log = lock(&self.log);
            let seq = log.next_seq();
            log.bytes += event.data.len();
            log.events.push_back(event);
            // Keep at least 16 events whatever their size, so a resume right after a big
            // GUILD_CREATE burst still works. Events not yet sent are kept up to four times the
            // limits (a reader that falls further behind loses its session, as on Discord).
            while log.events.len() > 16 && log.over(1) {
                let unsent = log.first_seq > log.max_sent;
                if unsent && !log.over(4) {
                    break;
                }
                if let Some(old) = log.events.pop_front() {
                    log.bytes -= old.data.len();
                    log.first_seq += 1;
                }
            }
            seq
        };
        self.notify.notify_one();
        seq
    }

    /// The log, locked.
    pub fn log(&self) -> MutexGuard<'_, SessionLog> {
        lock(&self.log)
    }

    /// The link, locked.
    pub fn link(&self) -> MutexGuard<'_, Link> {
        lock(&self.link)
    }

    /// Sends `control` to the connection serving the session, if any.
    pub fn control(&self, control: ConnControl) -> bool {
        match &self.link().conn {
            Some((_, tx)) => tx.send(control).is_ok(),
            None => false,
        }
    }

    /// Whether the session can still be resumed (or is connected).
    #[must_use]
    pub fn is_alive(&self, resume_window: Duration) -> bool {
        let link = self.link();
        !link.invalid
            && link
                .detached_at
                .is_none_or(|at| at.elapsed() < resume_window)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use shardyard_protocol::Intents;

    use super::{Event, ReplayLimits, Session};
    use crate::stats::ShardStats;

    fn session(capacity: usize) -> Session {
        Session::new(
            "s".into(),
            0,
            1,
            Intents::GUILDS,
            50,
            Arc::new(ShardStats::new("b", 0, 1)),
            ReplayLimits {
                events: capacity,
                bytes: usize::MAX,
            },
        )
    }

    #[test]
    fn log_hands_out_events_after_a_cursor() {
        let s = session(100);
        for _ in 0..5 {
            s.push(Event::new("X", &b"{}"[..]));
        }
        let log = s.log();
        let seqs: Vec<u64> = log.after(2, 10).map(|(seq, _)| seq).collect();
        assert_eq!(seqs, vec![3, 4, 5]);
        assert_eq!(
            log.after(0, 2).map(|(seq, _)| seq).collect::<Vec<_>>(),
            vec![1, 2]
        );
        assert_eq!(log.last_seq(), 5);
    }

    #[test]
    fn log_is_bounded_by_bytes_too() {
        let s = Session::new(
            "s".into(),
            0,
            1,
            Intents::GUILDS,
            50,
            Arc::new(ShardStats::new("b", 0, 1)),
            ReplayLimits {
                events: 1000,
                bytes: 100 * 20,
            },
        );
        s.log().max_sent = u64::MAX; // everything counts as sent
        for _ in 0..100 {
            s.push(Event::new("X", vec![b'x'; 100]));
        }
        let log = s.log();
        assert_eq!(log.events.len(), 20);
        assert_eq!(log.first_seq, 81);
    }

    #[test]
    fn unsent_events_are_kept_past_the_limit_until_four_times_it() {
        let s = Session::new(
            "s".into(),
            0,
            1,
            Intents::GUILDS,
            50,
            Arc::new(ShardStats::new("b", 0, 1)),
            ReplayLimits {
                events: 20,
                bytes: usize::MAX,
            },
        );
        for _ in 0..60 {
            s.push(Event::new("X", &b"{}"[..]));
        }
        assert_eq!(
            s.log().first_seq,
            1,
            "nothing sent yet: nothing dropped below 4x"
        );
        for _ in 0..40 {
            s.push(Event::new("X", &b"{}"[..]));
        }
        let log = s.log();
        assert_eq!(log.events.len(), 80);
        assert!(
            log.lost_after(0),
            "a reader that never read has lost events"
        );
    }

    #[test]
    fn trimmed_log_cannot_resume_from_before_its_start() {
        let s = session(16);
        s.log().max_sent = u64::MAX;
        for _ in 0..20 {
            s.push(Event::new("X", &b"{}"[..]));
        }
        let mut log = s.log();
        log.max_sent = 20;
        assert_eq!(log.first_seq, 5);
        assert!(log.can_resume_from(4));
        assert!(!log.can_resume_from(3));
        assert!(log.can_resume_from(20));
        assert!(!log.can_resume_from(21), "cannot resume past what was sent");
    }
}
