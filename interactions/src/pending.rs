//! Interactions waiting for their worker's answer, and the ones already settled: the one place
//! that decides, under one lock, whether a worker's response still answers Discord's request or
//! comes too late (the request was deferred), so that a response arriving just as the deadline
//! passes goes one way only.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use shardyard_protocol::InteractionReply;
use tokio::sync::oneshot;

/// How long a settled interaction is remembered: an interaction's token lives 15 minutes, so a
/// worker's response after that has nothing left to edit.
const REMEMBER: Duration = Duration::from_secs(15 * 60);
/// Settled interactions remembered at most; the oldest are forgotten first beyond it.
const MAX_SETTLED: usize = 100_000;

enum State {
    /// Discord's request is held open; the response goes to the handler through `answer`.
    Waiting(oneshot::Sender<Bytes>),
    /// The worker answered in time.
    Answered,
    /// The handler answered Discord with this deferral before the worker did.
    Deferred { with: u8 },
}

/// The table of interactions one endpoint process holds.
#[derive(Default)]
pub struct Pending {
    table: Mutex<Table>,
}

/// The entries, and the settled ones in the order they settled: forgetting the oldest pops the
/// front instead of scanning the table on every request.
#[derive(Default)]
struct Table {
    entries: HashMap<String, State>,
    settled: VecDeque<(Instant, String)>,
}

impl Table {
    /// Marks `id` settled in `state` at `now`, and forgets what is older than [`REMEMBER`] or
    /// beyond [`MAX_SETTLED`].
    fn settle(&mut self, id: &str, state: State, now: Instant) {
        self.entries.insert(id.to_owned(), state);
        self.settled.push_back((now, id.to_owned()));
        while let Some((at, _)) = self.settled.front() {
            if now.duration_since(*at) < REMEMBER && self.settled.len() <= MAX_SETTLED {
                break;
            }
            if let Some((_, old)) = self.settled.pop_front() {
                self.entries.remove(&old);
            }
        }
    }
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending")
            .field("entries", &self.len())
            .finish()
    }
}

/// What became of a worker's response, for the handler's side: it has the response.
pub type Answer = oneshot::Receiver<Bytes>;

impl Pending {
    /// Entries held (waiting and remembered).
    #[must_use]
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// Whether nothing is held.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Interactions whose Discord request is held open now.
    #[must_use]
    pub fn waiting(&self) -> usize {
        let table = self.lock();
        table.entries.len() - table.settled.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts waiting for interaction `id`; `None` when it is already known (a replayed
    /// request).
    pub fn wait(&self, id: &str) -> Option<Answer> {
        let mut table = self.lock();
        if table.entries.contains_key(id) {
            return None;
        }
        let (tx, rx) = oneshot::channel();
        table.entries.insert(id.to_owned(), State::Waiting(tx));
        Some(rx)
    }

    /// The handler gives up on `id` without answering Discord (the publish failed): forgotten.
    pub fn abandon(&self, id: &str) {
        let mut table = self.lock();
        if matches!(table.entries.get(id), Some(State::Waiting(_))) {
            table.entries.remove(id);
        }
    }

    /// The deadline passed: marks `id` deferred with `with`, unless the worker's response got
    /// there first, in which case it is in the handler's [`Answer`] and `false` is returned.
    pub fn defer(&self, id: &str, with: u8) -> bool {
        let now = Instant::now();
        let mut table = self.lock();
        match table.entries.get(id) {
            Some(State::Waiting(_)) => {
                table.settle(id, State::Deferred { with }, now);
                true
            }
            _ => false,
        }
    }

    /// A worker's response for `id`: hands it to the waiting handler, or says why it cannot.
    pub fn respond(&self, id: &str, response: Bytes) -> InteractionReply {
        let now = Instant::now();
        let mut table = self.lock();
        match table.entries.remove(id) {
            Some(State::Waiting(tx)) => {
                // The handler may have just gone (Discord hung up): the response is lost with
                // the request, as it would be with Discord's own timeout.
                let delivered = tx.send(response).is_ok();
                table.settle(id, State::Answered, now);
                if delivered {
                    InteractionReply::Answered
                } else {
                    InteractionReply::Refused {
                        reason: "Discord's request was closed before the answer came".into(),
                    }
                }
            }
            Some(State::Deferred { with }) => {
                table
                    .entries
                    .insert(id.to_owned(), State::Deferred { with });
                InteractionReply::Deferred {
                    deferred_with: with,
                }
            }
            Some(State::Answered) => {
                table.entries.insert(id.to_owned(), State::Answered);
                InteractionReply::Refused {
                    reason: "the interaction was already answered".into(),
                }
            }
            None => InteractionReply::Refused {
                reason: "this endpoint does not know the interaction".into(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use shardyard_protocol::InteractionReply;

    use super::Pending;

    #[test]
    fn a_response_in_time_reaches_the_handler_once() {
        let pending = Pending::default();
        let mut answer = pending.wait("1").unwrap();
        assert!(pending.wait("1").is_none(), "a replay is refused");
        assert_eq!(
            pending.respond("1", Bytes::from_static(b"{\"type\":4}")),
            InteractionReply::Answered
        );
        assert_eq!(answer.try_recv().unwrap(), &b"{\"type\":4}"[..]);
        assert!(!pending.defer("1", 5), "answered: nothing to defer");
        assert!(matches!(
            pending.respond("1", Bytes::new()),
            InteractionReply::Refused { .. }
        ));
    }

    #[test]
    fn after_the_deadline_the_worker_is_told_to_edit() {
        let pending = Pending::default();
        let _answer = pending.wait("2").unwrap();
        assert_eq!(pending.waiting(), 1);
        assert!(pending.defer("2", 6));
        assert_eq!(pending.waiting(), 0);
        assert_eq!(
            pending.respond("2", Bytes::new()),
            InteractionReply::Deferred { deferred_with: 6 }
        );
        // Asked again (a redelivered event): the same answer.
        assert_eq!(
            pending.respond("2", Bytes::new()),
            InteractionReply::Deferred { deferred_with: 6 }
        );
    }

    #[test]
    fn a_response_racing_the_deadline_goes_one_way() {
        let pending = Pending::default();
        let mut answer = pending.wait("3").unwrap();
        assert_eq!(
            pending.respond("3", Bytes::from_static(b"{}")),
            InteractionReply::Answered
        );
        // The handler's deadline fires just after: it must use the answer, not defer.
        assert!(!pending.defer("3", 5));
        assert!(answer.try_recv().is_ok());
    }

    #[test]
    fn the_oldest_settled_are_forgotten_beyond_the_cap() {
        let pending = Pending::default();
        for id in 0..super::MAX_SETTLED + 10 {
            let id = id.to_string();
            let _answer = pending.wait(&id).unwrap();
            assert!(pending.defer(&id, 5));
        }
        let _held = pending.wait("held").unwrap();
        assert_eq!(pending.len(), super::MAX_SETTLED + 1);
        assert_eq!(pending.waiting(), 1);
        assert!(matches!(
            pending.respond("0", Bytes::new()),
            InteractionReply::Refused { .. }
        ));
        assert_eq!(
            pending.respond(&(super::MAX_SETTLED + 9).to_string(), Bytes::new()),
            InteractionReply::Deferred { deferred_with: 5 }
        );
    }

    #[test]
    fn unknown_and_abandoned_interactions_are_refused() {
        let pending = Pending::default();
        assert!(matches!(
            pending.respond("4", Bytes::new()),
            InteractionReply::Refused { .. }
        ));
        let _answer = pending.wait("5").unwrap();
        pending.abandon("5");
        assert!(pending.is_empty());
    }
}
