//! One gateway connection: its loop, its outbound framing, and the session it serves.

use std::collections::VecDeque;
use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use bytes::{Bytes, BytesMut};
use futures_util::SinkExt;
use serde::Deserialize;
use serde_json::value::RawValue;
use shardyard_protocol::{
    CloseAction, CloseCode, MAX_SEND_PAYLOAD_BYTES, OpCode, SEND_LIMIT_PER_WINDOW,
    SEND_LIMIT_WINDOW_SECS,
};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::compress::{Compression, Compressor};
use crate::bot::BotState;
use crate::session::{ConnControl, Session};
use crate::state::SimState;

/// How a connection was opened.
#[derive(Debug)]
pub(super) struct Setup {
    pub(super) compression: Compression,
    pub(super) on_resume_url: bool,
    pub(super) version_ok: bool,
    pub(super) encoding_ok: bool,
    pub(super) peer: SocketAddr,
}

/// Whether the connection loop goes on.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Flow {
    Continue,
    Stop,
}

/// Dispatches written per socket flush: large enough to amortize syscalls, small enough to keep
/// reading the client's heartbeats between batches.
const BATCH: usize = 256;

/// How long a connection lingers after RECONNECT before the simulator closes it itself.
const RECONNECT_GRACE: Duration = Duration::from_secs(5);

/// One websocket connection.
pub(super) struct Connection {
    pub(super) state: Arc<SimState>,
    pub(super) id: u64,
    pub(super) setup: Setup,
    socket: WebSocket,
    compressor: Option<Compressor>,
    frame: Vec<u8>,
    out: BytesMut,
    ack_heartbeats: bool,
    pub(super) heartbeat_interval: Duration,
    heartbeat_deadline: Instant,
    recent_sends: VecDeque<Instant>,
    pub(super) bot: Option<Arc<BotState>>,
    pub(super) session: Option<Arc<Session>>,
    /// The last sequence written to this socket.
    pub(super) cursor: u64,
    /// Sequences up to this one are a resume's replay.
    pub(super) replay_until: u64,
    /// False after RECONNECT: events wait in the session log for the resume.
    dispatching: bool,
    close_at: Option<Instant>,
    pub(super) ctl_tx: mpsc::UnboundedSender<ConnControl>,
    ctl_rx: mpsc::UnboundedReceiver<ConnControl>,
    pub(super) member_requests: std::collections::HashMap<u64, Instant>,
}

enum Step {
    Shutdown,
    Control(ConnControl),
    Incoming(Option<Result<Message, axum::Error>>),
    HeartbeatMissed,
    CloseDue,
    Dispatch,
}

#[derive(Deserialize)]
struct Incoming<'a> {
    op: i64,
    #[serde(borrow, default)]
    d: Option<&'a RawValue>,
}

impl Connection {
    pub(super) fn new(state: Arc<SimState>, socket: WebSocket, setup: Setup) -> Self {
        let heartbeat_interval = Duration::from_millis(state.config.heartbeat_interval_ms.max(1));
        let (ctl_tx, ctl_rx) = mpsc::unbounded_channel();
        Self {
            id: state.next_conn_id(),
            state,
            compressor: setup.compression.compressor(),
            setup,
            socket,
            frame: Vec::with_capacity(4096),
            out: BytesMut::new(),
            ack_heartbeats: true,
            heartbeat_interval,
            heartbeat_deadline: Instant::now() + heartbeat_grace(heartbeat_interval),
            recent_sends: VecDeque::new(),
            bot: None,
            session: None,
            cursor: 0,
            replay_until: 0,
            dispatching: true,
            close_at: None,
            ctl_tx,
            ctl_rx,
            member_requests: std::collections::HashMap::new(),
        }
    }

    pub(super) async fn run(mut self) {
        tracing::debug!(conn = self.id, peer = %self.setup.peer, compression = ?self.setup.compression, "gateway connection");
        if !self.setup.version_ok {
            self.close(CloseCode::InvalidApiVersion.code(), "Invalid API version")
                .await;
            return;
        }
        if !self.setup.encoding_ok {
            self.close(
                CloseCode::DecodeError.code(),
                "the simulator speaks encoding=json only",
            )
            .await;
            return;
        }
        let hello = format!(
            "{{\"t\":null,\"s\":null,\"op\":10,\"d\":{{\"heartbeat_interval\":{},\"_trace\":[\"[\\\"shardyard-sim\\\"]\"]}}}}",
            self.heartbeat_interval.as_millis()
        );
        if self.send_raw(hello.as_bytes()).await.is_err() {
            return;
        }
        let shutdown = self.state.shutdown.clone();
        loop {
            let step = {
                let session = self.session.as_ref().filter(|_| self.dispatching);
                let notified = async {
                    match session {
                        Some(s) => s.notify.notified().await,
                        None => std::future::pending().await,
                    }
                };
                let close_at = self.close_at;
                tokio::select! {
                    biased;
                    () = shutdown.cancelled() => Step::Shutdown,
                    Some(ctl) = self.ctl_rx.recv() => Step::Control(ctl),
                    msg = self.socket.recv() => Step::Incoming(msg),
                    () = tokio::time::sleep_until(self.heartbeat_deadline) => Step::HeartbeatMissed,
                    () = async { match close_at { Some(at) => tokio::time::sleep_until(at).await, None => std::future::pending().await } } => Step::CloseDue,
                    () = notified => Step::Dispatch,
                }
            };
            let flow = match step {
                Step::Shutdown => Flow::Stop,
                Step::Control(ctl) => self.on_control(ctl).await,
                Step::Incoming(msg) => self.on_incoming(msg).await,
                Step::HeartbeatMissed => {
                    self.close(
                        CloseCode::SessionTimedOut.code(),
                        "Session timed out: no heartbeat",
                    )
                    .await;
                    Flow::Stop
                }
                Step::CloseDue => {
                    self.close(CloseCode::UnknownError.code(), "Reconnect requested")
                        .await;
                    Flow::Stop
                }
                Step::Dispatch => self.flush_events().await,
            };
            if flow == Flow::Stop {
                break;
            }
        }
        self.detach();
    }

    /// Lets go of the session: it stays resumable unless something invalidated it.
    pub(super) fn detach(&mut self) {
        if let Some(session) = self.session.take() {
            let mut link = session.link();
            if link.conn.as_ref().is_some_and(|(id, _)| *id == self.id) {
                link.conn = None;
                link.detached_at = Some(std::time::Instant::now());
            }
        }
    }

    /// Ends the session for good.
    pub(super) fn invalidate(&mut self) {
        if let (Some(bot), Some(session)) = (&self.bot, self.session.take()) {
            bot.remove_session(&session.id);
        }
    }

    async fn on_control(&mut self, ctl: ConnControl) -> Flow {
        match ctl {
            ConnControl::Drop => {
                tracing::debug!(conn = self.id, "dropping TCP without a close frame");
                Flow::Stop
            }
            ConnControl::Close(code, reason) => {
                self.close(code, &reason).await;
                Flow::Stop
            }
            ConnControl::Reconnect => {
                self.dispatching = false;
                self.close_at = Some(Instant::now() + RECONNECT_GRACE);
                self.send_op(OpCode::Reconnect, "null").await
            }
            ConnControl::InvalidateSession(resumable) => {
                if resumable {
                    self.detach();
                } else {
                    self.invalidate();
                }
                self.send_op(
                    OpCode::InvalidSession,
                    if resumable { "true" } else { "false" },
                )
                .await
            }
            ConnControl::RequestHeartbeat => self.send_op(OpCode::Heartbeat, "null").await,
            ConnControl::AckHeartbeats(on) => {
                self.ack_heartbeats = on;
                Flow::Continue
            }
            ConnControl::CorruptNextFrame => {
                let sent = if let Some(compressor) = &self.compressor {
                    self.socket
                        .send(Message::Binary(Bytes::from_static(
                            compressor.corrupt_frame(),
                        )))
                        .await
                } else {
                    self.socket
                        .send(Message::Text("{\"op\":0,\"d\":{\"truncated".into()))
                        .await
                };
                if sent.is_ok() {
                    Flow::Continue
                } else {
                    Flow::Stop
                }
            }
        }
    }

    async fn on_incoming(&mut self, msg: Option<Result<Message, axum::Error>>) -> Flow {
        let bytes: Bytes = match msg {
            None | Some(Err(_)) => return Flow::Stop,
            Some(Ok(Message::Close(frame))) => {
                let code = frame.as_ref().map_or(1005, |f| f.code);
                tracing::debug!(conn = self.id, code, "client closed");
                if matches!(code, 1000 | 1001) {
                    self.invalidate();
                }
                return Flow::Stop;
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => return Flow::Continue,
            Some(Ok(Message::Text(text))) => Bytes::from(text),
            Some(Ok(Message::Binary(bytes))) => bytes,
        };
        if !self.count_send() {
            self.close(CloseCode::RateLimited.code(), "You are being rate limited.")
                .await;
            return Flow::Stop;
        }
        if bytes.len() > MAX_SEND_PAYLOAD_BYTES {
            self.violation(
                "gateway_payload_too_large",
                format!("{} bytes sent, limit {MAX_SEND_PAYLOAD_BYTES}", bytes.len()),
            );
            self.close(CloseCode::DecodeError.code(), "Payload too large")
                .await;
            return Flow::Stop;
        }
        let Ok(incoming) = serde_json::from_slice::<Incoming<'_>>(&bytes) else {
            self.close(
                CloseCode::DecodeError.code(),
                "Error while decoding payload",
            )
            .await;
            return Flow::Stop;
        };
        let op = u8::try_from(incoming.op)
            .ok()
            .and_then(OpCode::from_u8)
            .filter(|op| op.is_sendable());
        let data = incoming.d.map_or("null", RawValue::get);
        match op {
            Some(OpCode::Heartbeat) => self.on_heartbeat().await,
            Some(OpCode::Identify) if self.session.is_some() => {
                self.close(
                    CloseCode::AlreadyAuthenticated.code(),
                    "Already authenticated",
                )
                .await;
                Flow::Stop
            }
            Some(OpCode::Identify) => self.on_identify(data).await,
            Some(OpCode::Resume) => self.on_resume(data).await,
            Some(_) if self.session.is_none() => {
                self.close(CloseCode::NotAuthenticated.code(), "Not authenticated")
                    .await;
                Flow::Stop
            }
            Some(command) => self.on_command(command, data).await,
            None => {
                self.close(CloseCode::UnknownOpcode.code(), "Unknown opcode")
                    .await;
                Flow::Stop
            }
        }
    }

    /// Counts a client send against 120 per 60 s; false past it.
    fn count_send(&mut self) -> bool {
        let now = Instant::now();
        let window = Duration::from_secs(SEND_LIMIT_WINDOW_SECS);
        while self
            .recent_sends
            .front()
            .is_some_and(|t| now.duration_since(*t) >= window)
        {
            self.recent_sends.pop_front();
        }
        self.recent_sends.push_back(now);
        if self.recent_sends.len() > SEND_LIMIT_PER_WINDOW as usize {
            self.violation(
                "gateway_send_rate",
                format!("more than {SEND_LIMIT_PER_WINDOW} sends in {SEND_LIMIT_WINDOW_SECS} s"),
            );
            return false;
        }
        true
    }

    async fn on_heartbeat(&mut self) -> Flow {
        self.heartbeat_deadline = Instant::now() + heartbeat_grace(self.heartbeat_interval);
        self.count_command("heartbeat");
        if self.ack_heartbeats {
            self.send_op(OpCode::HeartbeatAck, "null").await
        } else {
            Flow::Continue
        }
    }

    pub(super) fn count_command(&self, name: &'static str) {
        if let Some(session) = &self.session {
            session
                .stats
                .update(|c| *c.commands.entry(name).or_default() += 1);
        }
    }

    pub(super) fn violation(&self, kind: &'static str, detail: String) {
        let bot = self.bot.as_ref().map(|b| b.config.name.as_str());
        let shard = self.session.as_ref().map(|s| s.shard);
        self.state.violations.record(kind, bot, shard, detail);
    }

    /// Sends a non-dispatch payload.
    pub(super) async fn send_op(&mut self, op: OpCode, data: &str) -> Flow {
        let payload = format!(
            "{{\"t\":null,\"s\":null,\"op\":{},\"d\":{data}}}",
            op.code()
        );
        if self.send_raw(payload.as_bytes()).await.is_ok() {
            Flow::Continue
        } else {
            Flow::Stop
        }
    }

    async fn send_raw(&mut self, payload: &[u8]) -> Result<(), axum::Error> {
        let msg = self.encode(payload);
        self.socket.send(msg).await
    }

    fn encode(&mut self, payload: &[u8]) -> Message {
        match &mut self.compressor {
            Some(compressor) => {
                // One growing buffer split per frame: an allocation per block, not per frame.
                if self.out.capacity() - self.out.len() < payload.len() {
                    self.out.reserve(64 * 1024);
                }
                compressor.compress(payload, &mut self.out);
                Message::Binary(self.out.split().freeze())
            }
            None => Message::Text(String::from_utf8_lossy(payload).into_owned().into()),
        }
    }

    /// Closes with `code`, applying what the code means to the session.
    pub(super) async fn close(&mut self, code: u16, reason: &str) {
        if let Some(session) = &self.session {
            session
                .stats
                .update(|c| *c.closes.entry(code).or_default() += 1);
        }
        let frame = CloseFrame {
            code,
            reason: reason.to_owned().into(),
        };
        let _ = self.socket.send(Message::Close(Some(frame))).await;
        let ends_session =
            CloseCode::from_u16(code).is_some_and(|c| c.action() != CloseAction::Resume);
        if ends_session {
            self.invalidate();
        }
    }

    /// Writes every event past the cursor, in batches.
    pub(super) async fn flush_events(&mut self) -> Flow {
        let Some(session) = self.session.clone() else {
            return Flow::Continue;
        };
        if !self.dispatching {
            return Flow::Continue;
        }
        if session.log().lost_after(self.cursor) {
            // Fell so far behind that events were dropped unsent: Discord ends such sessions.
            self.violation(
                "gateway_reader_too_slow",
                "the client read too slowly and the session's buffer overflowed".into(),
            );
            self.close(
                CloseCode::SessionTimedOut.code(),
                "Session timed out: reading too slowly",
            )
            .await;
            return Flow::Stop;
        }
        let batch: Vec<_> = session
            .log()
            .after(self.cursor, BATCH)
            .map(|(seq, e)| (seq, e.clone()))
            .collect();
        let Some(&(last, _)) = batch.last() else {
            return Flow::Continue;
        };
        // A frame handed to the socket may reach the client even when a later write fails (the
        // socket writes as its buffer fills), so it counts as sent from then on: the record then
        // holds everything a client can have received, and a client that dies inside a batch can
        // resume from the last event it got.
        for (i, (seq, event)) in batch.iter().enumerate() {
            self.frame.clear();
            self.frame.extend_from_slice(b"{\"t\":\"");
            self.frame.extend_from_slice(event.kind.as_bytes());
            self.frame.extend_from_slice(b"\",\"s\":");
            let _ = write!(self.frame, "{seq}");
            self.frame.extend_from_slice(b",\"op\":0,\"d\":");
            self.frame.extend_from_slice(&event.data);
            self.frame.push(b'}');
            let frame = std::mem::take(&mut self.frame);
            let msg = self.encode(&frame);
            self.frame = frame;
            if self.socket.feed(msg).await.is_err() {
                self.record_sent(&session, &batch[..=i]);
                return Flow::Stop;
            }
        }
        self.record_sent(&session, &batch);
        if self.socket.flush().await.is_err() {
            return Flow::Stop;
        }
        self.cursor = last;
        if batch.len() == BATCH {
            // More waiting: come back through the loop so heartbeats and controls interleave.
            session.notify.notify_one();
        }
        Flow::Continue
    }

    fn record_sent(&self, session: &Session, batch: &[(u64, Arc<crate::session::Event>)]) {
        let mut log = session.log();
        session.stats.update(|c| {
            for (seq, event) in batch {
                if *seq > log.max_sent {
                    log.max_sent = *seq;
                    c.last_seq = *seq;
                    c.dispatched += 1;
                    c.checksum = c.checksum.wrapping_add(event.digest);
                    *c.by_type.entry(event.kind).or_default() += 1;
                    if *seq <= self.replay_until {
                        c.first_sent_in_replay += 1;
                    }
                } else {
                    c.replayed += 1;
                }
            }
        });
    }
}

/// How long after a heartbeat (or HELLO) the next must arrive: the interval plus half of it,
/// so a client's jittered first beat and network delay never trip it.
fn heartbeat_grace(interval: Duration) -> Duration {
    interval + interval / 2 + Duration::from_millis(250)
}
