//! One shard's window of publishes awaiting JetStream's acknowledgement, yielded in sequence
//! order so the shard's saved sequence never passes an event JetStream has not stored.
//!
//! Why not `jetstream::Context::publish`: it makes an inbox, a oneshot, a timer and a boxed ack
//! future per message, and the shard then polls a `FuturesOrdered` of them. Here each shard has
//! one reply subscription (`<inbox>.<publish id>`), acknowledgements are matched by id into a
//! queue, and one timer watches the oldest publish. Same guarantees (every ack checked, in
//! order, with a timeout), about a third less CPU per event on the receive path.

use std::collections::VecDeque;
use std::pin::Pin;
use std::time::Duration;

use async_nats::{Client, HeaderMap, HeaderName, HeaderValue, Subject, Subscriber};
use bytes::Bytes;
use futures_util::StreamExt as _;
use serde::Deserialize;
use shardyard_protocol::names::{self, headers};
use tokio::time::{Instant, Sleep};

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
    /// JetStream refused it, or did not answer in time.
    Failed,
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
}

/// A dispatch could not be sent.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The NATS client is closed.
    #[error("cannot send to NATS")]
    Nats(#[source] async_nats::PublishError),
    /// The session id cannot travel in a header (it has a line break): never from Discord.
    #[error("the session id cannot be a message id header")]
    SessionId,
}

/// The reply subscription could not be made.
#[derive(Debug, thiserror::Error)]
#[error("cannot subscribe to JetStream acknowledgements")]
pub struct SubscribeError(#[source] async_nats::SubscribeError);

const MSG_ID: HeaderName = HeaderName::from_static(headers::MSG_ID);
const SHARD: HeaderName = HeaderName::from_static(headers::SHARD);
const SEQ: HeaderName = HeaderName::from_static(headers::SEQ);
const EVENT: HeaderName = HeaderName::from_static(headers::EVENT);
const RECEIVED_AT: HeaderName = HeaderName::from_static(headers::RECEIVED_AT);

struct Pending {
    seq: u64,
    received: Instant,
    sent: Instant,
    ack: Option<Ack>,
}

/// A shard's publishes in flight.
pub struct PublishWindow {
    client: Client,
    replies: Subscriber,
    /// `<inbox>.`: a publish's reply subject is this and its id.
    reply_prefix: String,
    /// `shardyard.<bot>.events.<shard>.`
    subject_prefix: String,
    shard_header: String,
    /// In publish order; the front has id `front_id`, the next ones count up.
    pending: VecDeque<Pending>,
    front_id: u64,
    /// Fires when the front publish may have timed out; re-armed only when it fires, so the
    /// timer wheel is touched once per timeout period rather than once per event.
    timeout: Pin<Box<Sleep>>,
}

impl std::fmt::Debug for PublishWindow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PublishWindow")
            .field("subject_prefix", &self.subject_prefix)
            .field("in_flight", &self.pending.len())
            .finish_non_exhaustive()
    }
}

impl PublishWindow {
    /// A window for `shard` of `bot` (out of `total`), with its own reply subscription.
    ///
    /// # Errors
    /// [`SubscribeError`] when NATS refuses the subscription.
    pub async fn open(
        client: Client,
        bot: &names::BotKey,
        shard: u32,
        total: u32,
    ) -> Result<Self, SubscribeError> {
        let inbox = client.new_inbox();
        let replies = client
            .subscribe(format!("{inbox}.*"))
            .await
            .map_err(SubscribeError)?;
        Ok(Self {
            client,
            replies,
            reply_prefix: format!("{inbox}."),
            subject_prefix: bot.shard_events_prefix(shard),
            shard_header: names::shard_header(shard, total),
            pending: VecDeque::new(),
            front_id: 0,
            timeout: Box::pin(tokio::time::sleep(ACK_TIMEOUT)),
        })
    }

    /// Publishes and acknowledgements not yet yielded by [`next`](Self::next).
    #[must_use]
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    /// Whether nothing is in flight.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    fn next_id(&self) -> u64 {
        self.front_id + self.pending.len() as u64
    }

    /// Sends one dispatch to JetStream: subject, headers and `Nats-Msg-Id` per the contract,
    /// `data` as the payload. Its acknowledgement comes out of [`next`](Self::next) in order.
    ///
    /// # Errors
    /// [`SendError`] when the NATS client is closed.
    pub async fn publish(
        &mut self,
        session_id: &str,
        seq: u64,
        event: &str,
        received: Instant,
        received_at_us: u64,
        data: Bytes,
    ) -> Result<(), SendError> {
        let token = names::event_subject_token(event);
        let mut subject = String::with_capacity(self.subject_prefix.len() + token.len());
        subject.push_str(&self.subject_prefix);
        subject.push_str(token);
        let mut reply = String::with_capacity(self.reply_prefix.len() + 20);
        reply.push_str(&self.reply_prefix);
        reply.push_str(itoa::Buffer::new().format(self.next_id()));
        let mut h = HeaderMap::new();
        let msg_id = names::msg_id(session_id, seq)
            .parse::<HeaderValue>()
            .map_err(|_| SendError::SessionId)?;
        h.insert(MSG_ID, msg_id);
        h.insert(SHARD, HeaderValue::from(self.shard_header.clone()));
        h.insert(SEQ, HeaderValue::from(itoa::Buffer::new().format(seq)));
        // `read_envelope` refuses a `t` with control characters, so this cannot panic.
        h.insert(EVENT, HeaderValue::from(event));
        h.insert(
            RECEIVED_AT,
            HeaderValue::from(itoa::Buffer::new().format(received_at_us)),
        );
        self.client
            .publish_with_reply_and_headers(Subject::from(subject), Subject::from(reply), h, data)
            .await
            .map_err(SendError::Nats)?;
        self.pending.push_back(Pending {
            seq,
            received,
            sent: Instant::now(),
            ack: None,
        });
        Ok(())
    }

    /// Records a dispatch that is done without a publish (another generation publishes it); it
    /// still comes out of [`next`](Self::next) in its place.
    pub fn suppress(&mut self, seq: u64, received: Instant) {
        self.pending.push_back(Pending {
            seq,
            received,
            sent: Instant::now(),
            ack: Some(Ack::Suppressed),
        });
    }

    /// The oldest dispatch once its fate is known. Never resolves while the window is empty.
    /// Cancel-safe: nothing is lost when the future is dropped before it resolves.
    pub async fn next(&mut self) -> Acked {
        loop {
            if let Some(front) = self.pending.front()
                && let Some(ack) = front.ack
            {
                let (seq, received) = (front.seq, front.received);
                self.pending.pop_front();
                self.front_id += 1;
                return Acked { seq, ack, received };
            }
            tokio::select! {
                reply = self.replies.next() => match reply {
                    Some(reply) => self.record(&reply),
                    // The client is gone: nothing in flight will be acknowledged.
                    None => self.pending.iter_mut().for_each(|p| {
                        p.ack.get_or_insert(Ack::Failed);
                    }),
                },
                () = self.timeout.as_mut() => {
                    let now = Instant::now();
                    match self.pending.front_mut() {
                        Some(front) if front.sent + ACK_TIMEOUT <= now => {
                            front.ack.get_or_insert(Ack::Failed);
                        }
                        Some(front) => {
                            let deadline = front.sent + ACK_TIMEOUT;
                            self.timeout.as_mut().reset(deadline);
                        }
                        None => self.timeout.as_mut().reset(now + ACK_TIMEOUT),
                    }
                }
            }
        }
    }

    /// Applies one reply from JetStream to the publish it answers.
    fn record(&mut self, reply: &async_nats::Message) {
        let Some(id) = reply
            .subject
            .as_str()
            .strip_prefix(self.reply_prefix.as_str())
            .and_then(|id| id.parse::<u64>().ok())
        else {
            return;
        };
        // Replies to publishes of an earlier connection (cleared) are stale: ignore them.
        let Some(index) = id
            .checked_sub(self.front_id)
            .and_then(|i| usize::try_from(i).ok())
        else {
            return;
        };
        let Some(pending) = self.pending.get_mut(index) else {
            return;
        };
        let ack = if reply.status.is_none() && is_stored(&reply.payload) {
            Ack::Published
        } else {
            // A status (503: no stream listens on the subject) or a JetStream error.
            tracing::warn!(seq = pending.seq, reply = %String::from_utf8_lossy(&reply.payload), "JetStream refused a publish");
            Ack::Failed
        };
        pending.ack.get_or_insert(ack);
    }

    /// Forgets everything in flight (a new connection starts; late replies are ignored).
    pub fn clear(&mut self) {
        self.front_id = self.next_id();
        self.pending.clear();
    }
}

/// A publish acknowledgement: `{"stream":"…","seq":N}`, maybe `"duplicate":true` (a replay
/// JetStream already holds, which is as good as stored). An error reply has `error` instead.
fn is_stored(payload: &[u8]) -> bool {
    #[derive(Deserialize)]
    struct PubAck {
        stream: Option<serde::de::IgnoredAny>,
        seq: Option<u64>,
        error: Option<serde::de::IgnoredAny>,
    }
    serde_json::from_slice::<PubAck>(payload)
        .is_ok_and(|a| a.error.is_none() && a.stream.is_some() && a.seq.is_some())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;
    use futures_util::StreamExt as _;
    use shardyard_protocol::names::{BotKey, headers};
    use tokio::time::Instant;

    use super::{Ack, Acked, PublishWindow, is_stored};
    use crate::publisher::Publisher;

    async fn acked(window: &mut PublishWindow) -> anyhow::Result<(u64, Ack)> {
        let Acked { seq, ack, .. } =
            tokio::time::timeout(Duration::from_secs(10), window.next()).await?;
        Ok((seq, ack))
    }

    #[tokio::test]
    async fn acknowledgements_come_back_in_order_with_the_contract_s_headers() -> anyhow::Result<()>
    {
        let server = shardyard_tests::NatsServer::start().await?;
        let client = server.connect().await?;
        let js = async_nats::jetstream::new(client.clone());
        let bot = BotKey::local("windowbot")?;
        let publisher = Publisher::new(js.clone(), bot.clone(), 4);
        publisher.ensure_stream().await?;
        let mut window = publisher.window(3).await?;
        let now = Instant::now();
        window
            .publish("sess", 1, "READY", now, 11, Bytes::from_static(b"{}"))
            .await?;
        window.suppress(2, now);
        window
            .publish(
                "sess",
                3,
                "MESSAGE_CREATE",
                now,
                12,
                Bytes::from_static(b"[3]"),
            )
            .await?;
        // A replay of seq 1 (a resume): a duplicate, which is as good as stored.
        window
            .publish("sess", 1, "READY", now, 13, Bytes::from_static(b"{}"))
            .await?;
        assert_eq!(window.len(), 4);
        assert_eq!(acked(&mut window).await?, (1, Ack::Published));
        assert_eq!(acked(&mut window).await?, (2, Ack::Suppressed));
        assert_eq!(acked(&mut window).await?, (3, Ack::Published));
        assert_eq!(acked(&mut window).await?, (1, Ack::Published));
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
        assert_eq!(get(headers::MSG_ID).as_deref(), Some("sess:3"));
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
        let js = async_nats::jetstream::new(client.clone());
        // No stream: the server answers "no responders".
        let publisher = Publisher::new(js, BotKey::local("nostream")?, 1);
        let mut window = publisher.window(0).await?;
        let now = Instant::now();
        window
            .publish("s", 7, "MESSAGE_CREATE", now, 0, Bytes::new())
            .await?;
        assert_eq!(acked(&mut window).await?, (7, Ack::Failed));

        // Cleared (a new connection) with a publish still unanswered: its late reply must not
        // acknowledge the publish that now sits at the front.
        let mut sub = client.subscribe("shardyard.nostream.events.>").await?;
        window
            .publish("s", 8, "MESSAGE_CREATE", now, 0, Bytes::new())
            .await?;
        window.clear();
        assert!(window.is_empty());
        window
            .publish("s", 9, "MESSAGE_CREATE", now, 0, Bytes::new())
            .await?;
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
        let publisher = Publisher::new(
            async_nats::jetstream::new(client),
            BotKey::local("hung")?,
            1,
        );
        let mut window = publisher.window(0).await?;
        window
            .publish("s", 1, "MESSAGE_CREATE", Instant::now(), 0, Bytes::new())
            .await?;
        // Connected with real time; the five seconds pass on a paused clock.
        tokio::time::pause();
        let started = Instant::now();
        let Acked { seq, ack, .. } = window.next().await;
        assert_eq!((seq, ack), (1, Ack::Failed));
        assert!(started.elapsed() >= super::ACK_TIMEOUT - Duration::from_millis(1));
        Ok(())
    }

    #[test]
    fn acknowledgements_are_told_from_errors() {
        assert!(is_stored(br#"{"stream":"S","seq":7}"#));
        assert!(is_stored(br#"{"stream":"S","seq":7,"duplicate":true}"#));
        assert!(!is_stored(
            br#"{"error":{"code":503,"err_code":10077,"description":"maximum messages exceeded"},"stream":"S","seq":0}"#
        ));
        assert!(!is_stored(br#"{"error":{"code":400}}"#));
        assert!(!is_stored(b""));
        assert!(!is_stored(b"not json"));
    }
}
