//! The gateway's own connection to NATS for publishing dispatches: [`NatsLink`].
//!
//! Why not the async-nats client the rest of the gateway uses (KV, commands, the generation
//! watch): when its connection drops it keeps the publishes it had not written yet and sends
//! them after reconnecting, while the ones already written to the dead socket are gone. A shard
//! then finds event N unacknowledged and N+1.. stored, resumes from N, and Discord's replay puts
//! N into the stream after N+1: out of order. Here a lost connection takes everything not yet
//! acknowledged with it, every window in flight is failed at once, and a window only publishes on
//! a new connection after its shard has started over from its last acknowledged event. Within
//! one connection NATS keeps order, so per shard the stream holds a prefix of the dispatches,
//! then the resume's replay continues it.
//!
//! It is also the cheap path: headers are framed straight into one write buffer shared by the
//! process's shards (one socket write per batch, no header map, no per-message future), and
//! acknowledgements are parsed where they are read and handed to their window.

pub mod address;
pub mod wire;

use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Duration;

use bytes::{BufMut as _, BytesMut};
use rand::Rng as _;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

pub use address::{AddressError, ServerAddr};
use wire::ServerOp;

use crate::window::{Ack, WindowState};

/// How long connecting and the handshake (INFO, CONNECT, PING/PONG) may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the client pings; two unanswered pings end the connection.
const PING_INTERVAL: Duration = Duration::from_secs(10);
/// The longest pause between reconnect attempts.
const MAX_RECONNECT_PAUSE: Duration = Duration::from_secs(2);
/// A write buffer that grew past this (a burst) is not kept for the next batch.
const KEEP_BUFFER: usize = 1024 * 1024;
/// Framed bytes that are written at once, without waiting out the linger.
pub(crate) const FLUSH_BYTES: usize = 64 * 1024;

/// Why a connection attempt failed or a connection ended.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// Connecting, reading or writing failed.
    #[error("I/O with {addr}")]
    Io {
        /// The server.
        addr: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The handshake took longer than five seconds.
    #[error("{0} did not complete the handshake in time")]
    HandshakeTimeout(String),
    /// The server sent something that is not NATS' protocol.
    #[error("protocol error from {addr}")]
    Protocol {
        /// The server.
        addr: String,
        /// What.
        #[source]
        source: wire::WireError,
    },
    /// The server refused the connection (`-ERR` during the handshake: bad credentials).
    #[error("{addr} refused the connection: {reason}")]
    Refused {
        /// The server.
        addr: String,
        /// The server's words.
        reason: String,
    },
    /// The server cannot do what publishing needs.
    #[error("{addr} cannot be used for publishing: {why}")]
    Unsuitable {
        /// The server.
        addr: String,
        /// What is missing.
        why: &'static str,
    },
    /// TLS could not be set up (no usable root certificates, a host name that cannot be a
    /// TLS server name).
    #[error("TLS to {addr}: {why}")]
    Tls {
        /// The server.
        addr: String,
        /// What went wrong.
        why: String,
    },
    /// The server closed the connection.
    #[error("{0} closed the connection")]
    Closed(String),
    /// Two pings went unanswered.
    #[error("{0} stopped answering pings")]
    Stale(String),
    /// [`NatsLink::close`] was called.
    #[error("the link was closed")]
    Stopped,
}

/// What the link shares with its windows: the write buffer and every window's publishes in
/// flight, behind one lock (uncontended on the gateway's single thread; held for a memcpy).
#[derive(Debug)]
pub(crate) struct Shared {
    state: Mutex<State>,
    wake_writer: Notify,
    /// How long the writer gathers publishes before writing them (see [`NatsLink::start`]).
    linger: Duration,
    up: watch::Sender<bool>,
    /// `_INBOX.<nuid>.`; a publish's reply subject is this, its window's slot, `.`, its id.
    pub(crate) inbox: String,
}

#[derive(Debug)]
pub(crate) struct State {
    /// Whether a connection is up (publishes go to `out`).
    pub(crate) up: bool,
    /// Counts connections; a window publishes only on the one it started on (or one it came
    /// to with nothing in flight).
    pub(crate) epoch: u64,
    /// Framed publishes (and PINGs/PONGs) not yet written.
    pub(crate) out: BytesMut,
    /// When the oldest publish in `out` was received (`None` while `out` holds none): the
    /// linger counts from it.
    pub(crate) out_since: Option<tokio::time::Instant>,
    /// The id of the next publish, unique for the life of the link.
    pub(crate) next_id: u64,
    /// The server's `max_payload` (headers and payload together).
    pub(crate) max_payload: usize,
    pings_outstanding: u32,
    /// Publishes JetStream refused on this connection (only the first few are logged: during
    /// an outage every publish in flight is refused).
    refusals: u64,
    /// Open windows by slot.
    pub(crate) windows: Vec<Option<WindowState>>,
}

impl Shared {
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data behind, still usable.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn wake_writer(&self) {
        self.wake_writer.notify_one();
    }

    /// Whether a batch whose first publish was received at `since` has lingered long enough
    /// to be written at `now`.
    pub(crate) fn linger_over(
        &self,
        since: tokio::time::Instant,
        now: tokio::time::Instant,
    ) -> bool {
        now.saturating_duration_since(since) >= self.linger
    }

    /// The connection is gone: what was not written is dropped, and every publish in flight
    /// fails (its shard resumes from its last acknowledged event).
    fn lose_connection(&self) {
        let mut state = self.lock();
        state.up = false;
        state.out.clear();
        state.out_since = None;
        for window in state.windows.iter_mut().flatten() {
            window.fail_in_flight();
        }
        drop(state);
        self.up.send_replace(false);
    }
}

/// The publishing connection to NATS, reconnecting in the background. Clones share it.
#[derive(Debug, Clone)]
pub struct NatsLink {
    pub(crate) shared: Arc<Shared>,
    stop: CancellationToken,
}

impl NatsLink {
    /// Starts connecting to `urls` (comma-separated `nats://[user:pass@|token@]host[:port]`) in
    /// the background; `name` is the connection's name on the server.
    ///
    /// `linger`: how long a batch of publishes gathers before it is written (see `write_loop`:
    /// the first publish framed after it, [`FLUSH_BYTES`], or a timer at twice it), so the
    /// shards' publishes reach the server in one write instead of one each. nats-server's cost
    /// per stored message is mostly per write: one publish per write cost it about three times
    /// what 14 do (`BENCHMARKS.md`, "Gateway (receive path)", the 2026-12-07 run). Zero writes
    /// each publish at once.
    ///
    /// # Errors
    /// [`AddressError`] when the URLs cannot be used.
    pub fn start(urls: &str, name: &str, linger: Duration) -> Result<Self, AddressError> {
        let addrs = address::parse_list(urls)?;
        let (up, _) = watch::channel(false);
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                up: false,
                epoch: 0,
                out: BytesMut::with_capacity(64 * 1024),
                out_since: None,
                next_id: 0,
                max_payload: 1024 * 1024,
                pings_outstanding: 0,
                refusals: 0,
                windows: Vec::new(),
            }),
            wake_writer: Notify::new(),
            linger,
            up,
            inbox: format!(
                "_INBOX.{:016x}{:08x}.",
                rand::random::<u64>(),
                rand::random::<u32>()
            ),
        });
        let stop = CancellationToken::new();
        tokio::spawn(supervise(
            shared.clone(),
            addrs,
            name.to_owned(),
            stop.clone(),
        ));
        Ok(Self { shared, stop })
    }

    /// Whether a connection is up now.
    #[must_use]
    pub fn is_up(&self) -> bool {
        self.shared.lock().up
    }

    /// Waits until a connection is up; `false` when `cancel` came first.
    pub async fn wait_up(&self, cancel: &CancellationToken) -> bool {
        let mut up = self.shared.up.subscribe();
        tokio::select! {
            () = cancel.cancelled() => false,
            result = up.wait_for(|up| *up) => result.is_ok(),
        }
    }

    /// How many connections were made so far.
    #[must_use]
    pub fn connections(&self) -> u64 {
        self.shared.lock().epoch
    }

    /// Closes the connection and stops reconnecting; windows fail what is in flight.
    pub fn close(&self) {
        self.stop.cancel();
    }

    /// [`close`](Self::close)s the link when dropped.
    #[must_use]
    pub fn close_on_drop(&self) -> tokio_util::sync::DropGuard {
        self.stop.clone().drop_guard()
    }
}

/// Connects, serves the connection until it ends, and reconnects, until stopped.
async fn supervise(
    shared: Arc<Shared>,
    addrs: Vec<ServerAddr>,
    name: String,
    stop: CancellationToken,
) {
    let mut failures: u32 = 0;
    let mut next = 0;
    loop {
        let addr = &addrs[next % addrs.len()];
        let attempt = tokio::select! {
            () = stop.cancelled() => break,
            attempt = tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake(addr, &name, &shared.inbox)) => attempt,
        };
        let why = match attempt {
            Ok(Ok(connection)) => {
                failures = 0;
                {
                    let mut state = shared.lock();
                    state.up = true;
                    state.epoch += 1;
                    state.out.clear();
                    state.out_since = None;
                    state.max_payload = connection.max_payload;
                    state.pings_outstanding = 0;
                    state.refusals = 0;
                }
                shared.up.send_replace(true);
                tracing::info!(server = %addr, "publishing connection to NATS is up");
                let why = serve(&shared, addr, connection, &stop).await;
                shared.lose_connection();
                if matches!(why, LinkError::Stopped) {
                    break;
                }
                why
            }
            Ok(Err(e)) => e,
            Err(_) => LinkError::HandshakeTimeout(addr.to_string()),
        };
        failures = failures.saturating_add(1);
        next += 1;
        // The first retry is at once (a dropped connection to a live server); then backoff.
        let pause = if failures == 1 {
            Duration::ZERO
        } else {
            let base = Duration::from_millis(50) * 2u32.saturating_pow(failures.min(8));
            base.min(MAX_RECONNECT_PAUSE)
                .mul_f64(rand::rng().random_range(0.5..1.0))
        };
        tracing::warn!(error = %why, ?pause, "publishing connection to NATS failed; reconnecting");
        tokio::select! {
            () = stop.cancelled() => break,
            () = tokio::time::sleep(pause) => {}
        }
    }
    shared.lose_connection();
}

/// The reading side of a connection, plain TCP or TLS.
type Reader = Box<dyn AsyncRead + Send + Unpin>;
/// The writing side of a connection, plain TCP or TLS.
type Writer = Box<dyn AsyncWrite + Send + Unpin>;

/// A connection past its handshake.
struct Connection {
    read: Reader,
    write: Writer,
    /// Bytes read after the handshake's PONG.
    leftover: BytesMut,
    max_payload: usize,
}

/// What the server's INFO says that matters here.
#[derive(serde::Deserialize)]
struct Info {
    #[serde(default)]
    max_payload: Option<usize>,
    #[serde(default)]
    headers: bool,
    #[serde(default)]
    tls_required: bool,
    #[serde(default)]
    tls_available: bool,
}

/// The TLS client settings, made once per process: the platform's root certificates
/// (`SSL_CERT_FILE` and `SSL_CERT_DIR` honoured), as async-nats trusts for the gateway's
/// other NATS connection, so one CA bundle serves both.
/// A failure is kept too: the roots are read from files that do not change while the pod
/// runs, and every reconnect reports the same clear error.
fn tls_connector() -> Result<tokio_rustls::TlsConnector, String> {
    static CONNECTOR: OnceLock<Result<tokio_rustls::TlsConnector, String>> = OnceLock::new();
    CONNECTOR
        .get_or_init(|| {
            let found = rustls_native_certs::load_native_certs();
            let mut roots = rustls::RootCertStore::empty();
            let (added, _) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                let errors: Vec<String> = found.errors.iter().map(ToString::to_string).collect();
                return Err(format!(
                    "no usable root certificate on this machine (set SSL_CERT_FILE to a CA bundle){}",
                    if errors.is_empty() {
                        String::new()
                    } else {
                        format!(": {}", errors.join("; "))
                    }
                ));
            }
            let config = rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
            Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
        })
        .clone()
}

/// Connects, reads INFO, sends CONNECT and the reply subscription, and waits for the PONG that
/// says the server accepted them.
async fn handshake(addr: &ServerAddr, name: &str, inbox: &str) -> Result<Connection, LinkError> {
    let io = |source| LinkError::Io {
        addr: addr.to_string(),
        source,
    };
    let mut stream = TcpStream::connect((addr.host.as_str(), addr.port))
        .await
        .map_err(io)?;
    stream.set_nodelay(true).map_err(io)?;
    let mut buf = BytesMut::with_capacity(16 * 1024);
    // INFO comes in plain text, also from a server that requires TLS.
    let info = loop {
        match next_op(addr, &mut stream, &mut buf).await? {
            ServerOp::Info(json) => break json,
            ServerOp::Err(reason) => {
                return Err(LinkError::Refused {
                    addr: addr.to_string(),
                    reason,
                });
            }
            _ => {}
        }
    };
    let info: Info = serde_json::from_slice(&info).map_err(|_| LinkError::Unsuitable {
        addr: addr.to_string(),
        why: "its INFO is not JSON",
    })?;
    if addr.tls && !info.tls_required && !info.tls_available {
        return Err(LinkError::Unsuitable {
            addr: addr.to_string(),
            why: "the URL says tls:// but the server does not offer TLS",
        });
    }
    if !info.headers {
        return Err(LinkError::Unsuitable {
            addr: addr.to_string(),
            why: "it does not support message headers",
        });
    }
    let tls = addr.tls || info.tls_required;
    let (mut read, mut write): (Reader, Writer) = if tls {
        let tls_error = |why: String| LinkError::Tls {
            addr: addr.to_string(),
            why,
        };
        let connector = tls_connector().map_err(tls_error)?;
        let name = rustls::pki_types::ServerName::try_from(addr.host.clone())
            .map_err(|e| tls_error(format!("{:?} is not a TLS server name: {e}", addr.host)))?;
        let stream = connector.connect(name, stream).await.map_err(io)?;
        let (read, write) = tokio::io::split(stream);
        (Box::new(read), Box::new(write))
    } else {
        let (read, write) = stream.into_split();
        (Box::new(read), Box::new(write))
    };
    let mut hello = BytesMut::with_capacity(512);
    hello.put_slice(b"CONNECT ");
    hello.put_slice(&addr.connect_json(name, tls));
    hello.put_slice(b"\r\nSUB ");
    hello.put_slice(inbox.as_bytes());
    hello.put_slice(b"> 1\r\nPING\r\n");
    write.write_all(&hello).await.map_err(io)?;
    write.flush().await.map_err(io)?;
    loop {
        match next_op(addr, &mut read, &mut buf).await? {
            ServerOp::Pong => break,
            ServerOp::Err(reason) => {
                return Err(LinkError::Refused {
                    addr: addr.to_string(),
                    reason,
                });
            }
            ServerOp::Ping => {
                write.write_all(b"PONG\r\n").await.map_err(io)?;
                write.flush().await.map_err(io)?;
            }
            _ => {}
        }
    }
    Ok(Connection {
        read,
        write,
        leftover: buf,
        max_payload: info.max_payload.unwrap_or(1024 * 1024),
    })
}

/// Reads until one whole operation is in `buf`.
async fn next_op(
    addr: &ServerAddr,
    read: &mut (impl AsyncRead + Unpin),
    buf: &mut BytesMut,
) -> Result<ServerOp, LinkError> {
    loop {
        if let Some(op) = wire::parse(buf).map_err(|source| LinkError::Protocol {
            addr: addr.to_string(),
            source,
        })? {
            return Ok(op);
        }
        buf.reserve(4096);
        let n = read.read_buf(buf).await.map_err(|source| LinkError::Io {
            addr: addr.to_string(),
            source,
        })?;
        if n == 0 {
            return Err(LinkError::Closed(addr.to_string()));
        }
    }
}

/// Runs a connection until it fails or the link stops.
async fn serve(
    shared: &Shared,
    addr: &ServerAddr,
    connection: Connection,
    stop: &CancellationToken,
) -> LinkError {
    let Connection {
        read,
        write,
        leftover,
        ..
    } = connection;
    tokio::select! {
        () = stop.cancelled() => LinkError::Stopped,
        why = read_loop(shared, addr, read, leftover) => why,
        why = write_loop(shared, addr, write) => why,
        why = ping_loop(shared, addr) => why,
    }
}

/// Reads what the server sends: acknowledgements go to their windows, PINGs are answered.
async fn read_loop(
    shared: &Shared,
    addr: &ServerAddr,
    mut read: Reader,
    mut buf: BytesMut,
) -> LinkError {
    loop {
        loop {
            match wire::parse(&mut buf) {
                Ok(Some(op)) => handle(shared, op),
                Ok(None) => break,
                Err(source) => {
                    return LinkError::Protocol {
                        addr: addr.to_string(),
                        source,
                    };
                }
            }
        }
        buf.reserve(16 * 1024);
        match read.read_buf(&mut buf).await {
            Ok(0) => return LinkError::Closed(addr.to_string()),
            Ok(_) => {}
            Err(source) => {
                return LinkError::Io {
                    addr: addr.to_string(),
                    source,
                };
            }
        }
    }
}

fn handle(shared: &Shared, op: ServerOp) {
    match op {
        ServerOp::Msg {
            subject,
            status,
            payload,
        } => {
            let Some((slot, id)) = wire::reply_target(&subject, &shared.inbox) else {
                return;
            };
            let stored = status.is_none() && wire::is_stored(&payload);
            let mut state = shared.lock();
            let ack = if stored {
                Ack::Published
            } else {
                // A status (503: no stream listens on the subject) or a JetStream error.
                state.refusals += 1;
                let reply = String::from_utf8_lossy(&payload);
                match state.refusals {
                    1..=3 => tracing::warn!(status, %reply, "JetStream refused a publish"),
                    4 => tracing::warn!(
                        status,
                        %reply,
                        "JetStream refused a publish; more refusals on this connection are logged at debug"
                    ),
                    _ => tracing::debug!(status, %reply, "JetStream refused a publish"),
                }
                Ack::Failed
            };
            if let Some(Some(window)) = usize::try_from(slot)
                .ok()
                .and_then(|slot| state.windows.get_mut(slot))
            {
                window.record(id, ack);
            }
        }
        ServerOp::Ping => {
            shared.lock().out.put_slice(b"PONG\r\n");
            shared.wake_writer();
        }
        ServerOp::Pong => shared.lock().pings_outstanding = 0,
        ServerOp::Err(reason) => {
            // Fatal errors are followed by the server closing the connection; the others (a
            // permissions violation) leave the publish unanswered, and its timeout fails it.
            tracing::warn!(%reason, "NATS reported an error on the publishing connection");
        }
        ServerOp::Info(_) | ServerOp::Ok => {}
    }
}

/// Writes whatever the windows framed. A batch's first publish wakes it; it then waits for the
/// batch to gather (see [`Shared::linger_over`]) and writes it in one go.
///
/// What ends the wait is a publish framed once the linger is over: at a few thousand events/s
/// one comes within a fraction of a millisecond, so the runtime is already awake and no timer
/// fires. A timer at twice the linger writes the batch when traffic is too sparse for that.
/// (A timer at the linger itself fired for nearly every batch: a wake-up of the runtime each,
/// which cost the gateway more CPU per event than the fewer writes saved it.)
async fn write_loop(shared: &Shared, addr: &ServerAddr, mut write: Writer) -> LinkError {
    let mut batch = BytesMut::with_capacity(64 * 1024);
    loop {
        shared.wake_writer.notified().await;
        loop {
            let (gathered, since) = {
                let state = shared.lock();
                (state.out.len() >= FLUSH_BYTES, state.out_since)
            };
            // `None`: only PINGs or PONGs wait, and they go at once.
            let Some(since) = since else { break };
            if gathered || shared.linger_over(since, tokio::time::Instant::now()) {
                break;
            }
            tokio::select! {
                () = tokio::time::sleep_until(since + shared.linger * 2) => break,
                () = shared.wake_writer.notified() => {}
            }
        }
        {
            let mut state = shared.lock();
            if state.out.is_empty() {
                continue;
            }
            std::mem::swap(&mut state.out, &mut batch);
            state.out_since = None;
        }
        // A TLS stream may hold the last record back until flushed; for TCP it is a no-op.
        let written = async {
            write.write_all(&batch).await?;
            write.flush().await
        };
        if let Err(source) = written.await {
            return LinkError::Io {
                addr: addr.to_string(),
                source,
            };
        }
        batch.clear();
        if batch.capacity() > KEEP_BUFFER {
            batch = BytesMut::with_capacity(64 * 1024);
        }
    }
}

/// Pings the server; a connection that stopped answering is dropped.
async fn ping_loop(shared: &Shared, addr: &ServerAddr) -> LinkError {
    let mut ticks = tokio::time::interval(PING_INTERVAL);
    ticks.tick().await;
    loop {
        ticks.tick().await;
        {
            let mut state = shared.lock();
            if state.pings_outstanding >= 2 {
                return LinkError::Stale(addr.to_string());
            }
            state.pings_outstanding += 1;
            state.out.put_slice(b"PING\r\n");
        }
        shared.wake_writer();
    }
}
