//! One shard's window of publishes awaiting JetStream's acknowledgement, yielded in sequence
//! order so the shard's saved sequence never passes an event JetStream has not stored.
//!
//! Publishes go out on the process's [`NatsLink`]: each is framed into the link's write
//! buffer with its reply subject (`<inbox><slot>.<id>`), the link's reader records the
//! acknowledgement in the window's state, and one timer per window watches the oldest publish.
//! When the link's connection drops, everything in flight fails at once; the window then
//! publishes on a new connection only once its shard has started over (`clear`), so nothing
//! sent after a lost event can be stored before that event's replay.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::time::Duration;

use shardyard_protocol::names::{self, headers};
use tokio::time::{Instant, Sleep};

use crate::nats_link::{FLUSH_BYTES, NatsLink, Shared, wire};

/// How long JetStream may take to acknowledge a publish before it counts as failed (the shard
/// then resumes from the last acknowledged event).
pub const ACK_TIMEOUT: Duration = Duration::from_secs(5);

/// What became of a dispatch, in sequence order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ack {
    /// JetStream acknowledged it.
    Published,
    /// Not published on purpose: another generation is active.
    Suppressed,
    /// JetStream refused it, or did not answer in time, or the connection was lost.
    Failed,
    /// Never publishable (over NATS' `max_payload`): dropped, and the shard moves past it.
    Skipped,
}

/// A dispatch whose fate is known, oldest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Acked {
    /// Its gateway sequence number.
    pub seq: u64,
    /// What became of it.
    pub ack: Ack,
    /// When it was received from Discord.
    pub received: Instant,
    /// When its fate became known (JetStream's acknowledgement was read), which can be a
    /// little before it is yielded.
    pub settled: Instant,
}

/// How long an acknowledgement may wait to be yielded while the shard has nothing else to do.
/// Acknowledgements do not wake the shard one by one (that was a task wake-up per event): the
/// shard collects them whenever it runs, and at least this often.
pub const SETTLE_TICK: Duration = Duration::from_millis(25);

/// A dispatch could not be sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// No connection to NATS, or the window's publishes in flight were on one that was lost.
    #[error("not connected to NATS")]
    Disconnected,
    /// Larger than the server's `max_payload`: it can never be published.
    #[error("{size} bytes with headers, over NATS' max_payload of {max}")]
    TooLarge {
        /// The message's size.
        size: usize,
        /// The server's limit.
        max: usize,
    },
    /// The session id cannot travel in a header (it has a line break): never from Discord.
    #[error("the session id cannot be a message id header")]
    SessionId,
}

#[derive(Debug)]
struct Pending {
    /// The publish's id (its reply subject); increasing within a window.
    id: u64,
    seq: u64,
    received: Instant,
    sent: Instant,
    ack: Option<Ack>,
    settled: Instant,
}

impl Pending {
    /// Sent now; `ack` is `Some` for a dispatch settled without a publish.
    fn new(id: u64, seq: u64, received: Instant, ack: Option<Ack>) -> Self {
        let now = Instant::now();
        Self {
            id,
            seq,
            received,
            sent: now,
            ack,
            settled: now,
        }
    }
}

/// A window's publishes in flight, kept in the link's shared state so its reader can record
/// acknowledgements.
#[derive(Debug)]
pub(crate) struct WindowState {
    /// The link connection this window publishes on.
    epoch: u64,
    pending: VecDeque<Pending>,
    waker: Option<Waker>,
    /// At this many publishes in flight the shard stops reading and waits for room: every
    /// acknowledgement wakes it.
    capacity: usize,
    /// The shard is draining (shutdown, a closing connection): every acknowledgement wakes it.
    draining: bool,
}

impl WindowState {
    /// Takes the front dispatch if its fate is known.
    fn pop_settled(&mut self) -> Option<Acked> {
        let front = self.pending.front()?;
        let ack = front.ack?;
        let acked = Acked {
            seq: front.seq,
            ack,
            received: front.received,
            settled: front.settled,
        };
        self.pending.pop_front();
        Some(acked)
    }

    /// Records the reply to publish `id`; stale ids (cleared, or of an earlier window in the
    /// slot) are ignored.
    pub(crate) fn record(&mut self, id: u64, ack: Ack) {
        // Replies come in publish order, so the front is the usual answer.
        let index = match self.pending.front() {
            Some(front) if front.id == id => 0,
            _ => match self.pending.binary_search_by_key(&id, |p| p.id) {
                Ok(index) => index,
                Err(_) => return,
            },
        };
        let pending = &mut self.pending[index];
        if pending.ack.is_none() {
            pending.ack = Some(ack);
            pending.settled = Instant::now();
        }
        // A failure is news at once; so is room in a full window, and progress of a drain.
        // Otherwise the shard collects acknowledgements when it next runs.
        if index == 0
            && (ack == Ack::Failed || self.draining || self.pending.len() >= self.capacity)
        {
            self.wake();
        }
    }

    /// The connection is lost: nothing in flight will be acknowledged.
    pub(crate) fn fail_in_flight(&mut self) {
        let now = Instant::now();
        for p in &mut self.pending {
            if p.ack.is_none() {
                p.ack = Some(Ack::Failed);
                p.settled = now;
            }
        }
        self.wake();
    }

    fn wake(&mut self) {
        if let Some(waker) = self.waker.take() {
            waker.wake();
        }
    }
}

/// A shard's publishes in flight.
pub struct PublishWindow {
    link: Arc<Shared>,
    slot: usize,
    /// `shardyard.<bot>.events.<shard>.`
    subject_prefix: String,
    shard_header: String,
    /// The header block being framed, reused.
    headers: Vec<u8>,
    /// Fires when the front publish may have timed out; re-armed only when it fires, so the
    /// timer wheel is touched once per timeout period rather than once per event.
    timeout: Pin<Box<Sleep>>,
}

impl std::fmt::Debug for PublishWindow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PublishWindow")
            .field("subject_prefix", &self.subject_prefix)
            .field("slot", &self.slot)
            .finish_non_exhaustive()
    }
}

impl Drop for PublishWindow {
    fn drop(&mut self) {
        if let Some(slot) = self.link.lock().windows.get_mut(self.slot) {
            *slot = None;
        }
    }
}

impl PublishWindow {
    /// A window for `shard` of `bot` (out of `total`) on `link`; `capacity` is how many
    /// publishes the shard keeps in flight before it waits for room.
    #[must_use]
    pub fn open(
        link: &NatsLink,
        bot: &names::BotKey,
        shard: u32,
        total: u32,
        capacity: usize,
    ) -> Self {
        let shared = link.shared.clone();
        let slot = {
            let mut state = shared.lock();
            let epoch = state.epoch;
            let fresh = WindowState {
                epoch,
                pending: VecDeque::new(),
                waker: None,
                capacity: capacity.max(1),
                draining: false,
            };
            match state.windows.iter().position(Option::is_none) {
                Some(slot) => {
                    state.windows[slot] = Some(fresh);
                    slot
                }
                None => {
                    state.windows.push(Some(fresh));
                    state.windows.len() - 1
                }
            }
        };
        Self {
            link: shared,
            slot,
            subject_prefix: bot.shard_events_prefix(shard),
            shard_header: names::shard_header(shard, total),
            headers: Vec::with_capacity(256),
            timeout: Box::pin(tokio::time::sleep(SETTLE_TICK)),
        }
    }

    /// Runs `f` on this window's state.
    fn with_state<T>(&self, f: impl FnOnce(&mut WindowState) -> T) -> Option<T> {
        with_window(&self.link, self.slot, f)
    }

    /// Publishes and acknowledgements not yet yielded by [`next`](Self::next).
    #[must_use]
    pub fn len(&self) -> usize {
        self.with_state(|w| w.pending.len()).unwrap_or(0)
    }

    /// Whether nothing is in flight.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Frames one dispatch for JetStream: subject, headers and `Nats-Msg-Id` per the contract,
    /// `data` as the payload. Its acknowledgement comes out of [`next`](Self::next) in order.
    ///
    /// # Errors
    /// [`SendError::Disconnected`] when there is no connection or this window's publishes in
    /// flight were lost with one (the shard must start over from its last acknowledged event);
    /// [`SendError::TooLarge`] when NATS would refuse it whatever happens.
    pub fn publish(
        &mut self,
        session_id: &str,
        seq: u64,
        event: &str,
        received: Instant,
        received_at_us: u64,
        data: &[u8],
    ) -> Result<(), SendError> {
        if !wire::is_header_value(session_id.as_bytes()) {
            return Err(SendError::SessionId);
        }
        let mut numbers = itoa::Buffer::new();
        let block = &mut self.headers;
        wire::begin_headers(block);
        block.extend_from_slice(headers::MSG_ID.as_bytes());
        block.extend_from_slice(b": ");
        names::write_msg_id(block, session_id, seq);
        block.extend_from_slice(b"\r\n");
        wire::header(block, headers::SHARD, self.shard_header.as_bytes());
        wire::header(block, headers::SEQ, numbers.format(seq).as_bytes());
        // `read_envelope` refuses a `t` with control characters: a valid header value.
        wire::header(block, headers::EVENT, event.as_bytes());
        wire::header(
            block,
            headers::RECEIVED_AT,
            numbers.format(received_at_us).as_bytes(),
        );
        wire::end_headers(block);
        let size = block.len() + data.len();

        let mut guard = self.link.lock();
        let state = &mut *guard;
        if !state.up {
            return Err(SendError::Disconnected);
        }
        if size > state.max_payload {
            return Err(SendError::TooLarge {
                size,
                max: state.max_payload,
            });
        }
        let Some(Some(window)) = state.windows.get_mut(self.slot) else {
            return Err(SendError::Disconnected);
        };
        if window.epoch != state.epoch {
            if !window.pending.is_empty() {
                // Those were on a lost connection: publishing this one now could store it
                // before their replay.
                return Err(SendError::Disconnected);
            }
            window.epoch = state.epoch;
        }
        let id = state.next_id;
        state.next_id += 1;
        let before = state.out.len();
        wire::write_hpub(
            &mut state.out,
            [&self.subject_prefix, names::event_subject_token(event)],
            (&self.link.inbox, self.slot as u64, id),
            block,
            data,
        );
        window
            .pending
            .push_back(Pending::new(id, seq, received, None));
        let after = state.out.len();
        // The first publish of a batch starts the writer's linger; one framed after the linger
        // is over, or crossing FLUSH_BYTES, ends it (`nats_link::write_loop`).
        let since = *state.out_since.get_or_insert(received);
        let wake = before == 0
            || (before < FLUSH_BYTES && after >= FLUSH_BYTES)
            || self.link.linger_over(since, received);
        drop(guard);
        if wake {
            self.link.wake_writer();
        }
        Ok(())
    }

    /// Records a dispatch that is done without a publish (another generation publishes it); it
    /// still comes out of [`next`](Self::next) in its place.
    pub fn suppress(&mut self, seq: u64, received: Instant) {
        self.settled(seq, received, Ack::Suppressed);
    }

    /// Records a dispatch that can never be published ([`SendError::TooLarge`]); it comes out
    /// of [`next`](Self::next) in its place, so the shard's sequence moves past it.
    pub fn skip(&mut self, seq: u64, received: Instant) {
        self.settled(seq, received, Ack::Skipped);
    }

    fn settled(&mut self, seq: u64, received: Instant, ack: Ack) {
        let mut guard = self.link.lock();
        let state = &mut *guard;
        let id = state.next_id;
        state.next_id += 1;
        if let Some(Some(window)) = state.windows.get_mut(self.slot) {
            window
                .pending
                .push_back(Pending::new(id, seq, received, Some(ack)));
        }
    }

    /// The oldest dispatch once its fate is known. Never resolves while the window is empty.
    /// Cancel-safe: nothing is lost when the future is dropped before it resolves.
    pub async fn next(&mut self) -> Acked {
        loop {
            let (link, slot) = (&self.link, self.slot);
            let known = std::future::poll_fn(|cx| {
                let found = with_window(link, slot, |w| {
                    if let Some(acked) = w.pop_settled() {
                        return Some(acked);
                    }
                    if !w.waker.as_ref().is_some_and(|k| k.will_wake(cx.waker())) {
                        w.waker = Some(cx.waker().clone());
                    }
                    None
                });
                match found.flatten() {
                    Some(acked) => Poll::Ready(acked),
                    None => Poll::Pending,
                }
            });
            tokio::select! {
                acked = known => return acked,
                () = self.timeout.as_mut() => {
                    let now = Instant::now();
                    // Fires at least every SETTLE_TICK while publishes are in flight, to collect
                    // their acknowledgements, and fails the front once it is ACK_TIMEOUT old.
                    let rearm = with_window(link, slot, |w| match w.pending.front_mut() {
                        Some(front) if front.ack.is_none() && front.sent + ACK_TIMEOUT <= now => {
                            front.ack = Some(Ack::Failed);
                            front.settled = now;
                            now + SETTLE_TICK
                        }
                        Some(front) if front.ack.is_none() => {
                            (front.sent + ACK_TIMEOUT).min(now + SETTLE_TICK)
                        }
                        _ => now + SETTLE_TICK,
                    });
                    self.timeout.as_mut().reset(rearm.unwrap_or(now + SETTLE_TICK));
                }
            }
        }
    }

    /// The oldest dispatch if its fate is known already, without waiting: after
    /// [`next`](Self::next) resolved, the shard takes the rest of a batch of acknowledgements
    /// this way instead of going round its whole loop once per event.
    pub fn try_next(&mut self) -> Option<Acked> {
        self.with_state(WindowState::pop_settled).flatten()
    }

    /// From now until [`clear`](Self::clear), every acknowledgement wakes the shard at once
    /// (it is waiting for the last ones before closing).
    pub fn start_draining(&mut self) {
        self.with_state(|w| w.draining = true);
    }

    /// Forgets everything in flight (the shard starts over; late replies are ignored) and
    /// publishes on the link's current connection from now on.
    pub fn clear(&mut self) {
        let mut guard = self.link.lock();
        let epoch = guard.epoch;
        if let Some(Some(window)) = guard.windows.get_mut(self.slot) {
            window.pending.clear();
            window.epoch = epoch;
            window.draining = false;
        }
    }
}

/// Runs `f` on the state of the window in `slot`.
fn with_window<T>(link: &Shared, slot: usize, f: impl FnOnce(&mut WindowState) -> T) -> Option<T> {
    let mut state = link.lock();
    state.windows.get_mut(slot).and_then(Option::as_mut).map(f)
}

#[cfg(test)]
pub(crate) mod tests {
    use std::time::Duration;

    use futures_util::StreamExt as _;
    use shardyard_protocol::names::{BotKey, headers};
    use tokio::time::Instant;
    use tokio_util::sync::CancellationToken;

    use super::{Ack, Acked, PublishWindow, SendError};
    use crate::nats_link::NatsLink;
    use crate::publisher::Publisher;

    /// The gateway's default: these tests see publishes gathered as in production.
    const LINGER: Duration = Duration::from_millis(2);

    async fn acked(window: &mut PublishWindow) -> anyhow::Result<(u64, Ack)> {
        let Acked { seq, ack, .. } =
            tokio::time::timeout(Duration::from_secs(10), window.next()).await?;
        Ok((seq, ack))
    }

    /// A publisher for `bot` over a link to `server`, once the link is up.
    pub(crate) async fn publisher(
        server: &shardyard_tests::NatsServer,
        bot: &str,
        total: u32,
    ) -> anyhow::Result<(Publisher, async_nats::jetstream::Context)> {
        let js = server.jetstream().await?;
        let link = NatsLink::start(&server.url(), "window-test", LINGER)?;
        let up = tokio::time::timeout(
            Duration::from_secs(10),
            link.wait_up(&CancellationToken::new()),
        )
        .await?;
        anyhow::ensure!(up, "the link did not come up");
        Ok((
            Publisher::new(js.clone(), link, BotKey::local(bot)?, total),
            js,
        ))
    }

    /// Waits until the server has another connection's subscription to `subject` (else a
    /// publish on the link finds no responders).
    async fn subscribed(server: &shardyard_tests::NatsServer, subject: &str) -> anyhow::Result<()> {
        tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                let subs = server.monitor_json("/subsz?subs=1").await?;
                if subs.to_string().contains(subject) {
                    return anyhow::Ok(());
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await?
    }

    #[tokio::test]
    async fn acknowledgements_come_back_in_order_with_the_contract_s_headers() -> anyhow::Result<()>
    {
        let server = shardyard_tests::NatsServer::start().await?;
        let (publisher, js) = publisher(&server, "windowbot", 4).await?;
        let bot = BotKey::local("windowbot")?;
        publisher.ensure_stream().await?;
        let mut window = publisher.window(3, 16);
        let now = Instant::now();
        window.publish("sess", 1, "READY", now, 11, b"{}")?;
        window.suppress(2, now);
        window.publish("sess", 3, "MESSAGE_CREATE", now, 12, b"[3]")?;
        // A replay of seq 1 (a resume): a duplicate, which is as good as stored.
        window.publish("sess", 1, "READY", now, 13, b"{}")?;
        window.skip(4, now);
        assert_eq!(window.len(), 5);
        assert_eq!(acked(&mut window).await?, (1, Ack::Published));
        assert_eq!(acked(&mut window).await?, (2, Ack::Suppressed));
        assert_eq!(acked(&mut window).await?, (3, Ack::Published));
        assert_eq!(acked(&mut window).await?, (1, Ack::Published));
        assert_eq!(acked(&mut window).await?, (4, Ack::Skipped));
        assert!(window.is_empty());

        let mut stream = js.get_stream(bot.stream()).await?;
        assert_eq!(
            stream.info().await?.state.messages,
            2,
            "the replay was deduplicated"
        );
        let message = stream.get_raw_message(2).await?;
        assert_eq!(
            message.subject.as_str(),
            bot.event_subject(3, "MESSAGE_CREATE")
        );
        assert_eq!(message.payload.as_ref(), b"[3]");
        let h = &message.headers;
        let get = |name: &str| h.get(name).map(|v| v.as_str().to_owned());
        assert_eq!(
            get(headers::MSG_ID),
            Some(shardyard_protocol::names::msg_id("sess", 3))
        );
        assert_eq!(get(headers::SHARD).as_deref(), Some("3/4"));
        assert_eq!(get(headers::SEQ).as_deref(), Some("3"));
        assert_eq!(get(headers::EVENT).as_deref(), Some("MESSAGE_CREATE"));
        assert_eq!(get(headers::RECEIVED_AT).as_deref(), Some("12"));
        Ok(())
    }

    #[tokio::test]
    async fn a_publish_nothing_stores_fails_and_stale_replies_are_ignored() -> anyhow::Result<()> {
        let server = shardyard_tests::NatsServer::start().await?;
        let client = server.connect().await?;
        // No stream: the server answers "no responders".
        let (publisher, _) = publisher(&server, "nostream", 1).await?;
        let mut window = publisher.window(0, 16);
        let now = Instant::now();
        window.publish("s", 7, "MESSAGE_CREATE", now, 0, b"")?;
        assert_eq!(acked(&mut window).await?, (7, Ack::Failed));

        // Cleared (the shard starts over) with a publish still unanswered: its late reply must
        // not acknowledge the publish that now sits at the front.
        let mut sub = client.subscribe("shardyard.nostream.events.>").await?;
        subscribed(&server, "shardyard.nostream.events.>").await?;
        window.publish("s", 8, "MESSAGE_CREATE", now, 0, b"")?;
        window.clear();
        assert!(window.is_empty());
        window.publish("s", 9, "MESSAGE_CREATE", now, 0, b"")?;
        // Both publishes reached the subject; only the second is still in the window.
        let mut seen = Vec::new();
        for _ in 0..2 {
            let m = tokio::time::timeout(Duration::from_secs(5), sub.next())
                .await?
                .ok_or_else(|| anyhow::anyhow!("subscription ended"))?;
            seen.push(
                m.headers
                    .and_then(|h| h.get(headers::SEQ).map(|v| v.as_str().to_owned())),
            );
        }
        assert_eq!(seen, [Some("8".to_owned()), Some("9".to_owned())]);
        assert_eq!(window.len(), 1);
        assert_eq!(acked(&mut window).await?, (9, Ack::Failed));
        Ok(())
    }

    #[tokio::test]
    async fn an_unanswered_publish_times_out() -> anyhow::Result<()> {
        let server = shardyard_tests::NatsServer::start().await?;
        let client = server.connect().await?;
        // A plain subscriber takes the message and never answers, as a hung JetStream would.
        let _silent = client.subscribe("shardyard.hung.events.>").await?;
        subscribed(&server, "shardyard.hung.events.>").await?;
        let (publisher, _) = publisher(&server, "hung", 1).await?;
        let mut window = publisher.window(0, 16);
        window.publish("s", 1, "MESSAGE_CREATE", Instant::now(), 0, b"")?;
        // Connected with real time; the five seconds pass on a paused clock.
        tokio::time::pause();
        let started = Instant::now();
        let Acked { seq, ack, .. } = window.next().await;
        assert_eq!((seq, ack), (1, Ack::Failed));
        assert!(started.elapsed() >= super::ACK_TIMEOUT - Duration::from_millis(1));
        Ok(())
    }

    #[tokio::test]
    async fn a_message_over_max_payload_is_refused_before_sending() -> anyhow::Result<()> {
        // nats-server's default max_payload: 1 MiB.
        let server = shardyard_tests::NatsServer::start().await?;
        let (publisher, _) = publisher(&server, "big", 1).await?;
        publisher.ensure_stream().await?;
        let mut window = publisher.window(0, 16);
        let big = vec![b'x'; 1024 * 1024];
        let refused = window.publish("s", 1, "GUILD_CREATE", Instant::now(), 0, &big);
        assert!(
            matches!(refused, Err(SendError::TooLarge { size, max: 1_048_576 }) if size > 1_048_576),
            "{refused:?}"
        );
        assert!(window.is_empty());
        // The connection is intact: the next one goes through.
        window.publish("s", 2, "GUILD_CREATE", Instant::now(), 0, b"{}")?;
        assert_eq!(acked(&mut window).await?, (2, Ack::Published));
        Ok(())
    }

    /// The ordering bug this link exists for: a NATS crash mid-traffic must not leave a later
    /// event stored before an earlier one. The loop plays a shard (a bounded window; on a
    /// failure, start over from the last acknowledged event, as Discord's resume replays).
    #[tokio::test]
    async fn a_nats_crash_mid_traffic_keeps_the_stream_in_order() -> anyhow::Result<()> {
        const EVENTS: u64 = 6_000;
        const WINDOW: usize = 200;
        let mut server = shardyard_tests::NatsServer::start().await?;
        let (publisher, js) = publisher(&server, "orderbot", 1).await?;
        publisher.ensure_stream().await?;
        let first_link = publisher.link().connections();
        let mut window = publisher.window(0, WINDOW);
        let never = CancellationToken::new();
        let mut acked_seq = 0;
        let mut next_seq = 1;
        let mut failures = 0;
        let mut crashed = false;
        while acked_seq < EVENTS {
            if !crashed && acked_seq >= EVENTS / 3 {
                // Mid-traffic, with the window full of publishes in flight.
                server.kill_9()?;
                crashed = true;
                server.start_again().await?;
            }
            if next_seq <= EVENTS && window.len() < WINDOW {
                match window.publish("s", next_seq, "MESSAGE_CREATE", Instant::now(), 0, b"{}") {
                    Ok(()) => {
                        next_seq += 1;
                        continue;
                    }
                    Err(SendError::Disconnected) => {}
                    Err(e) => anyhow::bail!("unexpected: {e}"),
                }
            } else if !window.is_empty() {
                match acked(&mut window).await? {
                    (seq, Ack::Published) => {
                        anyhow::ensure!(
                            seq == acked_seq + 1,
                            "acknowledged {seq} after {acked_seq}"
                        );
                        acked_seq = seq;
                        continue;
                    }
                    (_, Ack::Failed) => {}
                    other => anyhow::bail!("unexpected {other:?}"),
                }
            }
            // A failure: start over from the last acknowledged event once NATS answers.
            failures += 1;
            anyhow::ensure!(failures < 50, "no progress after {failures} failures");
            window.clear();
            next_seq = acked_seq + 1;
            anyhow::ensure!(
                tokio::time::timeout(
                    Duration::from_secs(30),
                    publisher.wait_until_available(&never)
                )
                .await?,
                "JetStream did not come back"
            );
        }
        assert!(
            crashed && failures > 0,
            "the crash was noticed ({failures} failures)"
        );
        assert!(
            publisher.link().connections() > first_link,
            "the link reconnected"
        );

        // The stream holds every event once, in order.
        let stream = js.get_stream(publisher_stream("orderbot")?).await?;
        let consumer = stream
            .create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig::default())
            .await?;
        let mut messages = consumer.messages().await?;
        let mut expected = 1;
        while expected <= EVENTS {
            let message = tokio::time::timeout(Duration::from_secs(10), messages.next())
                .await?
                .ok_or_else(|| anyhow::anyhow!("stream ended"))??;
            let seq: u64 = message
                .headers
                .as_ref()
                .and_then(|h| h.get(headers::SEQ))
                .ok_or_else(|| anyhow::anyhow!("no sequence header"))?
                .as_str()
                .parse()?;
            assert_eq!(seq, expected, "the stream is out of order");
            expected += 1;
        }
        let info = js
            .get_stream(publisher_stream("orderbot")?)
            .await?
            .info()
            .await?
            .state
            .messages;
        assert_eq!(info, EVENTS, "nothing more than every event once");
        Ok(())
    }

    fn publisher_stream(bot: &str) -> anyhow::Result<String> {
        Ok(BotKey::local(bot)?.stream())
    }

    #[tokio::test]
    async fn credentials_in_the_url_are_used() -> anyhow::Result<()> {
        // Its own server: the harness's readiness check connects without credentials.
        let port = shardyard_tests::free_port();
        let mut command = std::process::Command::new(shardyard_tests::nats_server_bin()?);
        command.args(["-a", "127.0.0.1", "-p", &port.to_string()]);
        command.args(["--user", "gw", "--pass", "s3cret"]);
        let _server = shardyard_tests::ProcessGuard::spawn("nats-server-auth", command)?;
        let never = CancellationToken::new();
        let good = NatsLink::start(&format!("nats://gw:s3cret@127.0.0.1:{port}"), "t", LINGER)?;
        assert!(
            tokio::time::timeout(Duration::from_secs(10), good.wait_up(&never)).await?,
            "the right password connects"
        );
        let bad = NatsLink::start(&format!("nats://gw:wrong@127.0.0.1:{port}"), "t", LINGER)?;
        assert!(
            tokio::time::timeout(Duration::from_secs(2), bad.wait_up(&never))
                .await
                .is_err(),
            "a wrong password never connects"
        );
        assert_eq!(bad.connections(), 0);
        bad.close();
        good.close();
        Ok(())
    }

    /// A relay between the link and the real server that counts the link's writes carrying
    /// publishes (a loopback write of a few KiB arrives as one read).
    async fn counting_relay(
        server: &shardyard_tests::NatsServer,
    ) -> anyhow::Result<(String, std::sync::Arc<std::sync::atomic::AtomicUsize>)> {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("nats://{}", listener.local_addr()?);
        let target = format!("127.0.0.1:{}", server.port());
        let writes = std::sync::Arc::new(AtomicUsize::new(0));
        let counted = writes.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(upstream) = tokio::net::TcpStream::connect(&target).await else {
                    return;
                };
                let (mut client_read, mut client_write) = client.into_split();
                let (mut server_read, mut server_write) = upstream.into_split();
                let counted = counted.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0; 256 * 1024];
                    while let Ok(n) = client_read.read(&mut buf).await {
                        if n == 0 || server_write.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                        if memchr::memmem::find(&buf[..n], b"HPUB").is_some() {
                            counted.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                });
                tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
                });
            }
        });
        Ok((url, writes))
    }

    #[tokio::test]
    async fn publishes_within_the_linger_go_in_one_write_and_without_it_one_each()
    -> anyhow::Result<()> {
        use std::sync::atomic::Ordering;
        let server = shardyard_tests::NatsServer::start().await?;
        let js = server.jetstream().await?;
        let never = CancellationToken::new();
        let events: u64 = 20;
        for (gathers, linger) in [(true, Duration::from_millis(300)), (false, Duration::ZERO)] {
            let (url, writes) = counting_relay(&server).await?;
            let link = NatsLink::start(&url, "linger-test", linger)?;
            anyhow::ensure!(
                tokio::time::timeout(Duration::from_secs(10), link.wait_up(&never)).await?,
                "the link did not come up"
            );
            let bot = format!("lingerbot{}", linger.as_millis());
            let publisher = Publisher::new(js.clone(), link.clone(), BotKey::local(&bot)?, 2);
            publisher.ensure_stream().await?;
            let mut windows = [publisher.window(0, 64), publisher.window(1, 64)];
            let started = Instant::now();
            for seq in 1..=events {
                let window = &mut windows[usize::try_from(seq % 2)?];
                window.publish("sess", seq, "MESSAGE_CREATE", Instant::now(), 1, b"{}")?;
                // Publishes apart in time, as events arrive: the writer gets to run between.
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            for window in &mut windows {
                for _ in 0..events / 2 {
                    assert_eq!(acked(window).await?.1, Ack::Published);
                }
            }
            let took = started.elapsed();
            let writes = writes.load(Ordering::Relaxed);
            if gathers {
                assert!(
                    writes <= 2,
                    "{events} publishes within the linger took {writes} writes"
                );
                // No publish came after the linger: the timer at twice it wrote them.
                assert!(
                    took >= linger && took < Duration::from_secs(3),
                    "acknowledged after {took:?}"
                );
            } else {
                assert!(
                    writes >= usize::try_from(events)? / 2,
                    "without a linger each publish is written at once: {writes} writes"
                );
            }
            let stored = js
                .get_stream(BotKey::local(&bot)?.stream())
                .await?
                .info()
                .await?
                .state
                .messages;
            assert_eq!(stored, events);
            link.close();
        }
        Ok(())
    }
}
