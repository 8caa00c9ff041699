//! One shard: connect, HELLO, IDENTIFY or RESUME, heartbeats, and every dispatch published to
//! JetStream before its sequence counts as done. Reconnects follow Discord's close codes: resume
//! when the session lives, identify anew when it doesn't, stop for good on fatal codes.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::{SinkExt as _, StreamExt as _};
use rand::Rng as _;
use serde::Deserialize;
use shardyard_protocol::{CloseAction, CloseCode, OpCode, RESUMABLE_CLIENT_CLOSE, read_envelope};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;

use crate::commands::{ClaimedCommand, CommandReply, CommandRequest};
use crate::config::{Compression, GatewayConfig};
use crate::coordinator::IdentifyGate;
use crate::decompress::{DecompressError, Decompressor};
use crate::generation::GenerationGate;
use crate::publisher::Publisher;
use crate::send_limit::SendLimiter;
use crate::sessions::{self, SavedSession, SessionStore};
use crate::status::{ShardState, ShardStatus};
use crate::window::{Ack, Acked, PublishWindow, SendError};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;
/// How long a connection may take to say HELLO.
const HELLO_TIMEOUT: Duration = Duration::from_secs(20);
/// How long shutdown and reconnects wait for outstanding publishes to be acknowledged.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest pause between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// Everything a shard needs, shared with its siblings.
#[derive(Debug, Clone)]
pub struct ShardContext {
    /// The process's configuration.
    pub config: Arc<GatewayConfig>,
    /// Where to connect for a new session (from `GET /gateway/bot`).
    pub gateway_url: String,
    /// Where dispatches go.
    pub publisher: Publisher,
    /// Identify turns, shared by every gateway process of the bot.
    pub gate: Arc<IdentifyGate>,
    /// Where sessions are saved for the next process.
    pub sessions: SessionStore,
    /// Whether this generation publishes.
    pub generation: GenerationGate,
    /// Cancelled on SIGTERM.
    pub shutdown: CancellationToken,
}

/// A session that can be resumed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// `session_id` from READY.
    pub id: String,
    /// `resume_gateway_url` from READY.
    pub resume_url: String,
    /// The highest sequence JetStream acknowledged: a resume starts after it.
    pub acked_seq: u64,
}

impl Session {
    fn to_saved(&self) -> SavedSession {
        SavedSession::now(self.id.clone(), self.acked_seq, self.resume_url.clone())
    }
}

/// How a connection ended, and so what the shard does next.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// Shutting down on purpose.
    Shutdown,
    /// Reconnect and resume (or identify, if there is no session yet).
    Reconnect,
    /// The session is gone: identify a new one after `delay`.
    NewSession { delay: Duration },
    /// Never reconnect: the configuration is wrong.
    Fatal(u16),
    /// Could not connect or talk: back off and try again.
    Failed(String),
    /// JetStream refused or lost a publish: wait until it takes publishes again, then resume
    /// (Discord replays what was not acknowledged).
    PublishFailed(String),
}

#[derive(Deserialize)]
struct Hello {
    heartbeat_interval: u64,
}

#[derive(Deserialize)]
struct Ready {
    session_id: String,
    resume_gateway_url: String,
}

fn unix_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// Runs shard `status.id` until shutdown or a fatal close.
pub async fn run(
    ctx: ShardContext,
    status: Arc<ShardStatus>,
    mut commands: mpsc::Receiver<CommandRequest>,
) {
    let shard = status.id;
    let total = ctx.config.total;
    // A fresh session saved by an earlier process (a restart, a rolling update) is resumed.
    let mut session: Option<Session> =
        match ctx.sessions.load(total, shard, sessions::FRESH_FOR).await {
            Ok(saved) => saved.map(|s| {
                tracing::info!(shard, seq = s.seq, "resuming the saved session");
                Session {
                    id: s.session_id,
                    resume_url: s.resume_url,
                    acked_seq: s.seq,
                }
            }),
            Err(e) => {
                tracing::warn!(shard, error = %e, "cannot read the saved session; identifying");
                None
            }
        };
    status.acked_seq.store(
        session.as_ref().map_or(0, |s| s.acked_seq),
        Ordering::Release,
    );
    let (save_tx, save_rx) = watch::channel(session.as_ref().map(Session::to_saved));
    let saver = tokio::spawn(saver(
        ctx.sessions.clone(),
        total,
        status.clone(),
        save_rx,
        ctx.shutdown.clone(),
    ));
    let mut failures: u32 = 0;
    // Counted apart from `failures`: a NATS outage says nothing about Discord, and its backoff
    // must not outlast the outage (the wait for JetStream does the waiting).
    let mut publish_failures: u32 = 0;
    let mut window = ctx
        .publisher
        .window(shard, ctx.config.publish_window.max(1));
    loop {
        if ctx.shutdown.is_cancelled() {
            break;
        }
        if session.is_none() {
            let waited = tokio::select! {
                () = ctx.shutdown.cancelled() => break,
                waited = ctx.gate.wait_turn(shard) => waited,
            };
            match waited {
                Ok(waited) => {
                    status.identify_wait.observe(waited);
                    if waited > Duration::from_millis(100) {
                        tracing::debug!(shard, ?waited, "waited for an identify turn");
                    }
                }
                Err(e) => {
                    // Never identify without a turn: that is how a token gets reset.
                    failures = failures.saturating_add(1);
                    tracing::error!(shard, error = %e, "cannot get an identify turn; retrying");
                    tokio::select! {
                        () = ctx.shutdown.cancelled() => break,
                        () = tokio::time::sleep(backoff(failures)) => continue,
                    }
                }
            }
        }
        let done_before = done(&status);
        let outcome = connection(
            &ctx,
            &status,
            &mut session,
            &save_tx,
            &mut commands,
            &mut window,
        )
        .await;
        // Whatever was not acknowledged by now is replayed by the resume.
        window.clear();
        status.window.store(0, Ordering::Relaxed);
        status.set_state(ShardState::Disconnected);
        save_tx.send_replace(session.as_ref().map(Session::to_saved));
        if done(&status) > done_before {
            publish_failures = 0;
        }
        let pause = match outcome {
            Outcome::Shutdown => break,
            Outcome::Fatal(code) => {
                let reason = CloseCode::from_u16(code).map_or("unknown", CloseCode::reason);
                tracing::error!(
                    shard,
                    code,
                    reason,
                    "fatal close code: this shard stops and will not reconnect"
                );
                status.set_state(ShardState::Failed);
                saver.abort();
                let _ =
                    tokio::time::timeout(Duration::from_secs(2), ctx.sessions.clear(total, shard))
                        .await;
                return;
            }
            Outcome::Reconnect => {
                failures = 0;
                Duration::ZERO
            }
            Outcome::NewSession { delay } => {
                failures = 0;
                session = None;
                save_tx.send_replace(None);
                delay
            }
            Outcome::PublishFailed(why) => {
                publish_failures = publish_failures.saturating_add(1);
                tracing::warn!(shard, %why, "waiting for JetStream before resuming");
                if !ctx.publisher.wait_until_available(&ctx.shutdown).await {
                    break;
                }
                backoff(publish_failures).min(MAX_PUBLISH_BACKOFF)
            }
            Outcome::Failed(why) => {
                failures = failures.saturating_add(1);
                let pause = backoff(failures);
                tracing::warn!(shard, %why, ?pause, "connection failed; retrying");
                pause
            }
        };
        status.reconnects.fetch_add(1, Ordering::Relaxed);
        tokio::select! {
            () = ctx.shutdown.cancelled() => break,
            () = tokio::time::sleep(pause) => {}
        }
    }
    // Shutting down: the final sequence goes to KV so the next process resumes right here.
    saver.abort();
    if let Some(s) = &session {
        match tokio::time::timeout(
            Duration::from_secs(2),
            ctx.sessions.save(total, shard, &s.to_saved()),
        )
        .await
        {
            Ok(Ok(())) => tracing::info!(
                shard,
                seq = s.acked_seq,
                "session saved for the next process"
            ),
            Ok(Err(e)) => tracing::warn!(shard, error = %e, "could not save the session"),
            Err(_) => tracing::warn!(shard, "saving the session timed out"),
        }
    }
    status.set_state(ShardState::Stopped);
}

/// Keeps the shard's session in KV: after every change (at most once a second) and every
/// 15 s regardless, so a quiet shard's record stays fresh; `None` clears it.
///
/// The session comes from `rx`, which changes only when the session does; its sequence is
/// read from `status.acked_seq`, which the shard moves with every acknowledgement. (A watch
/// send per batch of acknowledgements woke every waiter slot of the channel each time: a few
/// percent of the receive path, for a value read once a second.) The shard sets
/// `acked_seq` before it replaces the session, and this reads the session first, so a
/// sequence is never saved with a session newer than it.
async fn saver(
    store: SessionStore,
    total: u32,
    status: Arc<ShardStatus>,
    mut rx: watch::Receiver<Option<SavedSession>>,
    shutdown: CancellationToken,
) {
    const REFRESH: Duration = Duration::from_secs(15);
    const PAUSE: Duration = Duration::from_secs(1);
    let shard = status.id;
    loop {
        let current = rx.borrow_and_update().clone();
        let seq = status.acked_seq.load(Ordering::Acquire);
        let result = match &current {
            Some(saved) => {
                let stamped =
                    SavedSession::now(saved.session_id.clone(), seq, saved.resume_url.clone());
                store.save(total, shard, &stamped).await
            }
            None => store.clear(total, shard).await,
        };
        if let Err(e) = result {
            tracing::warn!(shard, error = %e, "saving the session to KV failed");
        }
        let refresh_at = tokio::time::Instant::now() + REFRESH;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(PAUSE) => {}
            }
            let changed = match rx.has_changed() {
                Ok(changed) => changed,
                Err(_) => return,
            };
            let moved = current.is_some() && status.acked_seq.load(Ordering::Acquire) != seq;
            if changed || moved || tokio::time::Instant::now() >= refresh_at {
                break;
            }
        }
    }
}

/// The websocket's buffers. tungstenite's default read buffer (128 KiB) is zeroed on every
/// read and stays resident per connection: with a few hundred compressed bytes per dispatch that
/// was a sixth of the gateway's CPU and over half its memory per shard. Large frames still
/// arrive whole: the buffer grows to a frame's announced length when needed.
fn websocket_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER_BYTES)
        .write_buffer_size(0)
}

/// Bytes read from the socket at a time.
const READ_BUFFER_BYTES: usize = 4 * 1024;

/// The longest pause before resuming after JetStream failed a publish and answers again (it
/// can answer stream info while still refusing publishes for a moment after a restart).
const MAX_PUBLISH_BACKOFF: Duration = Duration::from_secs(5);

/// Dispatches of the shard that are done (published or suppressed): progress since a
/// connection started means the publish path worked.
fn done(status: &ShardStatus) -> u64 {
    status.published.load(Ordering::Relaxed) + status.suppressed.load(Ordering::Relaxed)
}

/// Exponential backoff with jitter: 0.5 s, 1 s, 2 s … up to a minute, each scaled by [0.5, 1).
fn backoff(failures: u32) -> Duration {
    let base = Duration::from_millis(500)
        .saturating_mul(2u32.saturating_pow(failures.saturating_sub(1).min(7)));
    base.min(MAX_BACKOFF)
        .mul_f64(rand::rng().random_range(0.5..1.0))
}

async fn connection(
    ctx: &ShardContext,
    status: &ShardStatus,
    session: &mut Option<Session>,
    save: &watch::Sender<Option<SavedSession>>,
    commands: &mut mpsc::Receiver<CommandRequest>,
    window: &mut PublishWindow,
) -> Outcome {
    let shard = status.id;
    let config = &ctx.config;
    let base = session
        .as_ref()
        .map_or(ctx.gateway_url.as_str(), |s| s.resume_url.as_str());
    let compress = match config.compression {
        Compression::ZlibStream => "&compress=zlib-stream",
        Compression::ZstdStream => "&compress=zstd-stream",
        Compression::None => "",
    };
    let url = format!(
        "{}/?v=10&encoding=json{compress}",
        base.trim_end_matches('/')
    );
    status.set_state(ShardState::Connecting);
    let mut ws = match tokio::time::timeout(
        HELLO_TIMEOUT,
        tokio_tungstenite::connect_async_with_config(&url, Some(websocket_config()), true),
    )
    .await
    {
        Ok(Ok((ws, _))) => ws,
        Ok(Err(e)) => return Outcome::Failed(format!("connecting: {e}")),
        Err(_) => return Outcome::Failed("connecting timed out".into()),
    };
    let mut inflater = Decompressor::for_compression(config.compression);

    // HELLO.
    let hello = tokio::time::timeout(
        HELLO_TIMEOUT,
        next_payload(&mut ws, inflater.as_mut(), status),
    )
    .await;
    let hello = match &hello {
        Ok(Ok(Some(incoming))) => incoming.payload(inflater.as_ref()),
        _ => None,
    };
    let interval = hello.and_then(|payload| match read_envelope(payload) {
        Ok(env) if env.op == OpCode::Hello.code() => env
            .data_bytes(payload)
            .and_then(|d| serde_json::from_slice::<Hello>(d).ok())
            .map(|h| Duration::from_millis(h.heartbeat_interval.max(1))),
        _ => None,
    });
    let Some(interval) = interval else {
        return Outcome::Failed("no HELLO".into());
    };

    if session.is_none() {
        // The turn was granted before connecting; stamp it again now that IDENTIFY is imminent,
        // so connect time never lets two identifies of a bucket land within 5 s.
        tokio::select! {
            () = ctx.shutdown.cancelled() => return Outcome::Shutdown,
            renewed = ctx.gate.renew_turn(shard) => if let Err(e) = renewed {
                return Outcome::Failed(format!("renewing the identify turn: {e}"));
            }
        }
    }
    let mut limiter = SendLimiter::new(interval);

    // IDENTIFY or RESUME.
    let first = match session.as_ref() {
        Some(s) => {
            serde_json::json!({"op": 6, "d": {"token": config.token.expose(), "session_id": s.id, "seq": s.acked_seq}})
        }
        None => {
            let mut d = serde_json::json!({
                "token": config.token.expose(),
                "properties": {"os": std::env::consts::OS, "browser": "shardyard", "device": "shardyard"},
                "large_threshold": config.large_threshold,
                "shard": [shard, config.total],
                "intents": config.intents.bits(),
            });
            if let Some(presence) = &config.presence {
                d["presence"] = presence.clone();
            }
            serde_json::json!({"op": 2, "d": d})
        }
    };
    if ws
        .send(Message::Text(first.to_string().into()))
        .await
        .is_err()
    {
        return Outcome::Failed("sending IDENTIFY/RESUME".into());
    }
    limiter.record_other(Instant::now());
    let mut identified = false;

    let mut last_seq: Option<u64> = session.as_ref().map(|s| s.acked_seq);
    let mut next_beat = Instant::now() + interval.mul_f64(rand::rng().random_range(0.0..1.0));
    let mut beat_sent_at: Option<Instant> = None;
    let window_limit = config.publish_window.max(1);
    // Made once, not per event: a fresh timer or cancellation future every turn of the loop
    // was a measurable share of the receive path.
    let shutdown = ctx.shutdown.cancelled();
    tokio::pin!(shutdown);
    let beat = tokio::time::sleep_until(next_beat);
    tokio::pin!(beat);

    loop {
        // One look at the window (a lock) serves both guards below.
        let in_flight = window.len();
        let step = tokio::select! {
            biased;
            () = &mut shutdown => Step::Shutdown,
            acked = window.next(), if in_flight > 0 => Step::Acked(acked),
            () = &mut beat => Step::Beat,
            // Before the socket: busy traffic must not starve commands.
            Some(request) = commands.recv(), if identified => Step::Command(request),
            // Backpressure: with the window full the socket is not read, so a slow or absent
            // NATS slows the shard instead of filling memory.
            payload = next_payload(&mut ws, inflater.as_mut(), status), if in_flight < window_limit => Step::Payload(payload),
        };
        match step {
            Step::Shutdown => {
                drain(window, session, status).await;
                close(&mut ws, RESUMABLE_CLIENT_CLOSE, "shardyard restarting").await;
                return Outcome::Shutdown;
            }
            Step::Acked(first) => {
                // Acknowledgements come in batches (one read of the NATS socket): the rest of
                // the batch is taken here rather than once per turn of the loop, and the
                // window size and the session saver are updated once for all of them.
                let mut next = Some(first);
                while let Some(Acked {
                    seq,
                    ack,
                    received,
                    settled,
                }) = next
                {
                    if ack == Ack::Failed {
                        // Not acknowledged: resume from the last acknowledged event, and
                        // Discord replays the rest (JetStream drops the duplicates by id).
                        status.count_close("publish_failed");
                        close(&mut ws, RESUMABLE_CLIENT_CLOSE, "publish failed").await;
                        return Outcome::PublishFailed(
                            "JetStream did not acknowledge a publish".into(),
                        );
                    }
                    record_ack(session, status, seq, ack);
                    if ack == Ack::Published {
                        status
                            .publish_latency
                            .observe(settled.saturating_duration_since(received));
                    }
                    next = window.try_next();
                }
                // The saver reads the sequence from `status.acked_seq` (see `saver`).
                status.window.store(window.len() as u64, Ordering::Relaxed);
            }
            Step::Command(request) => {
                // `None`: the requester gave up already (it was told `unavailable`).
                let Some(ClaimedCommand {
                    payload, responder, ..
                }) = request.claim()
                else {
                    continue;
                };
                match limiter.try_command(Instant::now()) {
                    Err(wait) => responder.respond(CommandReply::retry_after(wait)),
                    Ok(()) => {
                        if ws.send(Message::Text(payload.into())).await.is_err() {
                            responder.respond(CommandReply::unavailable(format!(
                                "shard {shard} lost its connection while sending; the command may have been sent"
                            )));
                            return lost(window, session, status).await;
                        }
                        responder.respond(CommandReply::Sent);
                    }
                }
            }
            Step::Beat => {
                if beat_sent_at.is_some() {
                    // No ACK since the last beat: a zombie connection. Close with a code that
                    // keeps the session, and resume.
                    status.count_close("zombie");
                    drain(window, session, status).await;
                    close(&mut ws, RESUMABLE_CLIENT_CLOSE, "zombie connection").await;
                    return Outcome::Reconnect;
                }
                if send_heartbeat(&mut ws, last_seq).await.is_err() {
                    return lost(window, session, status).await;
                }
                limiter.record_heartbeat(Instant::now());
                beat_sent_at = Some(Instant::now());
                next_beat += interval;
                beat.as_mut().reset(next_beat);
            }
            Step::Payload(Err(e)) => {
                tracing::warn!(shard, error = %e, "unreadable frame: reconnecting");
                status.count_close("corrupt_frame");
                drain(window, session, status).await;
                close(&mut ws, RESUMABLE_CLIENT_CLOSE, "corrupt frame").await;
                return Outcome::Reconnect;
            }
            Step::Payload(Ok(None)) => return lost(window, session, status).await,
            Step::Payload(Ok(Some(Closed(code)))) => {
                let reason = CloseCode::from_u16(code).map_or("other", CloseCode::reason);
                status.count_close(reason);
                drain(window, session, status).await;
                return match shardyard_protocol::close_code::action_for(code) {
                    CloseAction::Resume => Outcome::Reconnect,
                    CloseAction::NewSession => Outcome::NewSession {
                        delay: Duration::ZERO,
                    },
                    CloseAction::Fatal => Outcome::Fatal(code),
                };
            }
            Step::Payload(Ok(Some(incoming))) => {
                let Some(payload) = incoming.payload(inflater.as_ref()) else {
                    continue;
                };
                let received = Instant::now();
                let envelope = match read_envelope(payload) {
                    Ok(envelope) => envelope,
                    Err(e) => {
                        tracing::warn!(shard, error = %e, "malformed gateway payload skipped");
                        continue;
                    }
                };
                match OpCode::from_u8(envelope.op) {
                    Some(OpCode::Dispatch) => {
                        let (Some(seq), Some(event)) = (envelope.seq, envelope.event_type) else {
                            continue;
                        };
                        let data = envelope.data_bytes(payload).unwrap_or(b"null");
                        last_seq = Some(seq);
                        if event == "READY" {
                            match serde_json::from_slice::<Ready>(data) {
                                // It becomes part of every message id (a header).
                                Ok(ready) if ready.session_id.chars().any(char::is_control) => {
                                    tracing::error!(shard, "READY with an unusable session id");
                                    return Outcome::Failed(
                                        "READY with an unusable session id".into(),
                                    );
                                }
                                Ok(ready) => {
                                    let new = Session {
                                        id: ready.session_id,
                                        resume_url: ready.resume_gateway_url,
                                        acked_seq: 0,
                                    };
                                    // Before the session: the saver must not pair the
                                    // old session's sequence with the new one.
                                    status.acked_seq.store(0, Ordering::Release);
                                    save.send_replace(Some(new.to_saved()));
                                    *session = Some(new);
                                }
                                Err(e) => {
                                    tracing::error!(shard, error = %e, "READY without a session");
                                    return Outcome::Failed("READY without a session".into());
                                }
                            }
                        }
                        if matches!(event, "READY" | "RESUMED") {
                            identified = true;
                            status.set_state(ShardState::Ready);
                            tracing::info!(shard, event, "shard ready");
                        }
                        let Some(s) = session.as_ref() else { continue };
                        status.count_event(event);
                        if !ctx.generation.is_active() {
                            // Another generation publishes this one; in order, it counts as done.
                            // With nothing in flight ahead of it (`in_flight` is the window as
                            // this turn found it, and only this branch ran since), it is done
                            // now: the window would hand it straight back.
                            if in_flight == 0 {
                                record_ack(session, status, seq, Ack::Suppressed);
                            } else {
                                window.suppress(seq, received);
                            }
                            continue;
                        }
                        // The wall clock only for the header: a suppressed dispatch needs none.
                        let received_at = unix_micros();
                        match window.publish(&s.id, seq, event, received, received_at, data) {
                            Ok(()) => {
                                status.window.store(in_flight as u64 + 1, Ordering::Relaxed);
                            }
                            Err(e @ SendError::TooLarge { .. }) => {
                                // No resume can ever publish it: retrying would stop the shard
                                // for good. It is dropped, loudly, and counted.
                                tracing::error!(shard, seq, event, error = %e, "dispatch too large for NATS: dropped (raise nats-server's max_payload)");
                                status.oversized.fetch_add(1, Ordering::Relaxed);
                                window.skip(seq, received);
                            }
                            Err(e) => {
                                tracing::warn!(shard, error = %e, "publish failed: resuming from the last acknowledged event");
                                status.count_close("publish_failed");
                                drain(window, session, status).await;
                                close(&mut ws, RESUMABLE_CLIENT_CLOSE, "publish failed").await;
                                return Outcome::PublishFailed("publish failed".into());
                            }
                        }
                    }
                    Some(OpCode::Heartbeat) => {
                        // Discord asks for a beat now; the schedule stays as it is.
                        let sent = send_heartbeat(&mut ws, last_seq).await;
                        if sent.is_err() {
                            return lost(window, session, status).await;
                        }
                        limiter.record_heartbeat(Instant::now());
                    }
                    Some(OpCode::HeartbeatAck) => {
                        if let Some(sent) = beat_sent_at.take() {
                            status.heartbeat_rtt_us.store(
                                u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX),
                                Ordering::Relaxed,
                            );
                        }
                    }
                    Some(OpCode::Reconnect) => {
                        status.count_close("reconnect_requested");
                        drain(window, session, status).await;
                        close(&mut ws, RESUMABLE_CLIENT_CLOSE, "reconnect requested").await;
                        return Outcome::Reconnect;
                    }
                    Some(OpCode::InvalidSession) => {
                        let resumable = envelope.data_bytes(payload) == Some(b"true");
                        status.count_close(if resumable {
                            "invalid_session_resumable"
                        } else {
                            "invalid_session"
                        });
                        drain(window, session, status).await;
                        close(&mut ws, RESUMABLE_CLIENT_CLOSE, "invalid session").await;
                        if resumable && session.is_some() {
                            return Outcome::Reconnect;
                        }
                        // Discord asks for a pause of 1–5 s before identifying again.
                        let delay = Duration::from_millis(rand::rng().random_range(1000..5000));
                        return Outcome::NewSession { delay };
                    }
                    _ => {}
                }
            }
        }
    }
}

enum Step {
    Command(CommandRequest),
    Shutdown,
    Acked(Acked),
    Beat,
    Payload(Result<Option<Incoming>, DecompressError>),
}

enum Incoming {
    /// A whole uncompressed payload.
    Frame(Bytes),
    /// A whole payload, in the inflater's buffer until the next frame is pushed: dispatches
    /// publish a slice of it, so nothing is copied between inflating and publishing.
    Inflated,
    Closed(u16),
}
use Incoming::{Closed, Frame, Inflated};

impl Incoming {
    /// The payload's bytes; `None` for a close.
    fn payload<'a>(&'a self, inflater: Option<&'a Decompressor>) -> Option<&'a [u8]> {
        match self {
            Frame(bytes) => Some(bytes),
            Inflated => inflater.map(Decompressor::message),
            Closed(_) => None,
        }
    }
}

/// The next whole payload: `Ok(None)` when the connection is gone without a close frame.
async fn next_payload(
    ws: &mut Socket,
    inflater: Option<&mut Decompressor>,
    status: &ShardStatus,
) -> Result<Option<Incoming>, DecompressError> {
    let mut inflater = inflater;
    loop {
        let message = match ws.next().await {
            None | Some(Err(_)) => return Ok(None),
            Some(Ok(message)) => message,
        };
        match message {
            Message::Binary(bytes) => match inflater.as_deref_mut() {
                Some(inflater) => {
                    status
                        .bytes_compressed
                        .fetch_add(bytes.len() as u64, Ordering::Relaxed);
                    if let Some(payload) = inflater.push(&bytes)? {
                        status
                            .bytes_raw
                            .fetch_add(payload.len() as u64, Ordering::Relaxed);
                        return Ok(Some(Inflated));
                    }
                }
                None => return Ok(Some(Frame(bytes))),
            },
            Message::Text(text) => {
                status
                    .bytes_raw
                    .fetch_add(text.len() as u64, Ordering::Relaxed);
                return Ok(Some(Frame(Bytes::from(text))));
            }
            Message::Close(frame) => {
                return Ok(Some(Closed(frame.map_or(1005, |f| u16::from(f.code)))));
            }
            _ => {}
        }
    }
}

async fn send_heartbeat(
    ws: &mut Socket,
    last_seq: Option<u64>,
) -> Result<(), tokio_tungstenite::tungstenite::Error> {
    let d = last_seq.map_or_else(|| "null".to_owned(), |s| s.to_string());
    ws.send(Message::Text(format!("{{\"op\":1,\"d\":{d}}}").into()))
        .await
}

async fn close(ws: &mut Socket, code: u16, reason: &str) {
    let frame = CloseFrame {
        code: code.into(),
        reason: reason.to_owned().into(),
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(Some(frame))).await;
}

/// Waits (briefly) for outstanding publishes, so the session's sequence is as far as it can be.
async fn drain(window: &mut PublishWindow, session: &mut Option<Session>, status: &ShardStatus) {
    let deadline = Instant::now() + DRAIN_TIMEOUT;
    window.start_draining();
    while !window.is_empty() {
        let Ok(Acked { seq, ack, .. }) = tokio::time::timeout_at(deadline, window.next()).await
        else {
            break;
        };
        if ack == Ack::Failed {
            break;
        }
        record_ack(session, status, seq, ack);
    }
    window.clear();
}

/// A dispatch is done (published or suppressed): the session may resume after it.
fn record_ack(session: &mut Option<Session>, status: &ShardStatus, seq: u64, ack: Ack) {
    if let Some(s) = session.as_mut() {
        s.acked_seq = s.acked_seq.max(seq);
        status.acked_seq.store(s.acked_seq, Ordering::Release);
    }
    match ack {
        Ack::Published => status.published.fetch_add(1, Ordering::Relaxed),
        Ack::Suppressed => status.suppressed.fetch_add(1, Ordering::Relaxed),
        Ack::Skipped | Ack::Failed => 0,
    };
}

async fn lost(
    window: &mut PublishWindow,
    session: &mut Option<Session>,
    status: &ShardStatus,
) -> Outcome {
    status.count_close("connection_lost");
    drain(window, session, status).await;
    Outcome::Reconnect
}
