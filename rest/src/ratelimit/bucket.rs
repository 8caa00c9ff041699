//! One bucket: a FIFO turnstile of waiting requests, and what responses taught about the bucket's
//! window. The decisions ([`BucketState::poll`], [`BucketState::observe`]) are pure functions of
//! the state and `now`; [`Bucket::wait_head`] is the only await.

use std::fmt;
use std::pin::pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, OwnedMutexGuard};
use tokio::time::Instant;

use super::lock;

/// What the engine knows about a bucket's limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Mode {
    /// No response with rate-limit headers yet: one request at a time.
    #[default]
    Unknown,
    /// A 2xx answered without any rate-limit header: Discord does not limit it per route.
    Unlimited,
    /// `limit` requests per window.
    Known {
        /// `X-RateLimit-Limit`.
        limit: u32,
    },
}

/// A bucket's counters. Only ever touched under its mutex, never across an await.
#[derive(Debug, Default)]
pub(crate) struct BucketState {
    pub(crate) mode: Mode,
    /// Requests that may still start in the current window.
    pub(crate) remaining: u32,
    /// When the current window ends; `None` right after a refill, until a response says.
    pub(crate) reset_at: Option<Instant>,
    /// The longest `Reset-After` seen: the window's length, for wait estimates.
    pub(crate) window: Duration,
    /// Counts windows, so responses from a window already left are not applied to the next.
    pub(crate) generation: u64,
    /// Permits handed out and not yet completed or dropped.
    pub(crate) in_flight: u32,
    /// A 429 (user or shared scope) blocks the bucket until then.
    pub(crate) blocked_until: Option<Instant>,
    /// The learned `X-RateLimit-Bucket`; `None` while the bucket is a route's provisional one.
    pub(crate) hash: Option<Arc<str>>,
    /// Set when this provisional bucket turned out to be another, already known one: its
    /// waiters move there.
    pub(crate) migrated_to: Option<Arc<Bucket>>,
    /// At most one request in flight (`Config::sequential_buckets`).
    pub(crate) sequential: bool,
}

/// The head of the queue's next step.
#[derive(Debug)]
pub(crate) enum Poll {
    /// Go: a slot was taken in window `generation`.
    Take { generation: u64 },
    /// Wait until then (the window resets or a 429 block ends), or until notified.
    WaitUntil(Instant),
    /// Wait for an in-flight request's response.
    WaitForResponse,
    /// Queue in that bucket instead.
    Migrated(Arc<Bucket>),
}

/// What a response said about the window.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Observation {
    pub(crate) limit: Option<u32>,
    pub(crate) remaining: u32,
    pub(crate) reset_after: Duration,
}

impl BucketState {
    /// Decides what the head of the queue does at `now`, taking a slot if it may go.
    pub(crate) fn poll(&mut self, now: Instant) -> Poll {
        if let Some(next) = &self.migrated_to {
            return Poll::Migrated(Arc::clone(next));
        }
        if let Some(until) = self.blocked_until {
            if now < until {
                return Poll::WaitUntil(until);
            }
            self.blocked_until = None;
        }
        if self.sequential && self.in_flight > 0 {
            return Poll::WaitForResponse;
        }
        match self.mode {
            Mode::Unknown if self.in_flight > 0 => Poll::WaitForResponse,
            Mode::Unknown | Mode::Unlimited => self.take(),
            Mode::Known { limit } => {
                if self.reset_at.is_some_and(|reset| now >= reset) {
                    self.remaining = limit;
                    self.reset_at = None;
                    self.generation += 1;
                }
                if self.remaining > 0 {
                    self.remaining -= 1;
                    self.take()
                } else if let Some(reset) = self.reset_at {
                    Poll::WaitUntil(reset)
                } else if self.in_flight > 0 {
                    Poll::WaitForResponse
                } else {
                    // Spent, with no reset known and nothing in flight to tell one (the permits
                    // were dropped): send one alone to find out.
                    self.take()
                }
            }
        }
    }

    fn take(&mut self) -> Poll {
        self.in_flight += 1;
        Poll::Take {
            generation: self.generation,
        }
    }

    /// A permit of window `generation` ended without a response (dropped). `refund` when the
    /// request was certainly not sent.
    pub(crate) fn release(&mut self, generation: u64, refund: bool) {
        self.in_flight = self.in_flight.saturating_sub(1);
        if refund
            && generation == self.generation
            && let Mode::Known { limit } = self.mode
        {
            self.remaining = (self.remaining + 1).min(limit);
        }
    }

    /// Applies a response's rate-limit headers, seen at `now`, from a request of window
    /// `generation` (`None`: a request counted in this bucket though it was sent through
    /// another).
    pub(crate) fn observe(&mut self, seen: Observation, generation: Option<u64>, now: Instant) {
        let reset_at = later(now, seen.reset_after);
        self.window = self.window.max(seen.reset_after);
        match self.mode {
            Mode::Unknown | Mode::Unlimited => {
                let Some(limit) = seen.limit.filter(|l| *l > 0) else {
                    return;
                };
                self.mode = Mode::Known { limit };
                // Requests still in flight were sent after the one that answered.
                self.remaining = seen.remaining.min(limit).saturating_sub(self.in_flight);
                self.reset_at = Some(reset_at);
                self.generation += 1;
            }
            Mode::Known { limit } => {
                let limit = seen.limit.filter(|l| *l > 0).unwrap_or(limit);
                self.mode = Mode::Known { limit };
                if generation.is_some_and(|g| g != self.generation) {
                    // An answer from a window already over says nothing about this one.
                    return;
                }
                self.remaining = self.remaining.min(seen.remaining);
                self.reset_at = Some(self.reset_at.map_or(reset_at, |r| r.max(reset_at)));
            }
        }
    }

    /// Takes on what another keeper of the bucket last heard from Discord: `remaining` of
    /// `limit` until `reset_at`. Several reports of one bucket (routes sharing it) keep the
    /// fewest remaining and the latest reset.
    pub(crate) fn assume(&mut self, limit: u32, remaining: u32, reset_at: Instant, now: Instant) {
        let limit = limit.max(1);
        if let Mode::Known { .. } = self.mode {
            self.remaining = self.remaining.min(remaining);
            self.reset_at = Some(self.reset_at.map_or(reset_at, |r| r.max(reset_at)));
        } else {
            self.remaining = remaining.min(limit);
            self.reset_at = Some(reset_at);
            self.generation += 1;
        }
        self.mode = Mode::Known { limit };
        self.window = self.window.max(reset_at.saturating_duration_since(now));
    }

    /// Blocks the bucket until `until` (a 429).
    pub(crate) fn block(&mut self, until: Instant) {
        self.blocked_until = Some(self.blocked_until.map_or(until, |b| b.max(until)));
    }

    /// How long a request arriving behind `ahead` others would wait, as far as is known.
    pub(crate) fn estimate(&self, now: Instant, ahead: usize) -> Duration {
        let blocked = self
            .blocked_until
            .map_or(Duration::ZERO, |b| b.saturating_duration_since(now));
        let Mode::Known { limit } = self.mode else {
            return blocked;
        };
        let (remaining, reset_in) = match self.reset_at {
            Some(reset) if reset > now => (self.remaining, reset - now),
            // Refills at the next poll; the window after that is as long as windows are.
            Some(_) => (limit, self.window),
            None => (self.remaining, self.window),
        };
        let remaining = usize::try_from(remaining).unwrap_or(usize::MAX);
        if ahead < remaining {
            return blocked;
        }
        let limit = usize::try_from(limit.max(1)).unwrap_or(usize::MAX);
        let more_windows = u32::try_from((ahead - remaining) / limit).unwrap_or(u32::MAX);
        blocked.max(reset_in.saturating_add(self.window.saturating_mul(more_windows)))
    }

    /// Nothing in flight, no block and no window running: forgetting it loses nothing but one
    /// round trip to learn it again.
    pub(crate) fn idle(&self, now: Instant) -> bool {
        self.in_flight == 0
            && self.blocked_until.is_none_or(|b| b <= now)
            && self.reset_at.is_none_or(|r| r <= now)
    }
}

/// `now + wait`, saturating far in the future instead of overflowing.
pub(crate) fn later(now: Instant, wait: Duration) -> Instant {
    now.checked_add(wait)
        .or_else(|| now.checked_add(super::response::MAX_HEADER_WAIT))
        .unwrap_or(now)
}

/// A bucket: its turnstile (tokio's mutex is fair, so the queue is FIFO), its state, and a
/// notification for the head of the queue when a response or a release changes the state.
pub(crate) struct Bucket {
    turnstile: Arc<tokio::sync::Mutex<()>>,
    pub(crate) state: Mutex<BucketState>,
    notify: Notify,
    waiting: AtomicUsize,
}

impl fmt::Debug for Bucket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bucket")
            .field("waiting", &self.waiting())
            .finish_non_exhaustive()
    }
}

/// The head of the queue got a slot, or must queue elsewhere.
#[derive(Debug)]
pub(crate) enum Head {
    Slot(Slot),
    Migrated(Arc<Bucket>),
}

impl Bucket {
    pub(crate) fn new(hash: Option<Arc<str>>, sequential: bool) -> Self {
        Self {
            turnstile: Arc::new(tokio::sync::Mutex::new(())),
            state: Mutex::new(BucketState {
                hash,
                sequential,
                ..BucketState::default()
            }),
            notify: Notify::new(),
            waiting: AtomicUsize::new(0),
        }
    }

    /// Requests queued (the head included).
    pub(crate) fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    /// Counts a request as queued until the guard drops.
    pub(crate) fn enter(self: &Arc<Self>) -> Waiting {
        self.waiting.fetch_add(1, Ordering::Relaxed);
        Waiting(Arc::clone(self))
    }

    /// Joins the FIFO queue; resolves once this request is at its head.
    pub(crate) async fn turn(&self) -> OwnedMutexGuard<()> {
        Arc::clone(&self.turnstile).lock_owned().await
    }

    /// Wakes the head of the queue to look at the state again.
    pub(crate) fn wake(&self) {
        self.notify.notify_waiters();
    }

    /// At the head of the queue (the caller holds the turn): waits until a slot can be taken.
    /// Cancel-safe: the slot is taken and wrapped in its guard without an await in between.
    pub(crate) async fn wait_head(self: &Arc<Self>) -> Head {
        loop {
            let mut notified = pin!(self.notify.notified());
            notified.as_mut().enable();
            let poll = lock(&self.state).poll(Instant::now());
            match poll {
                Poll::Take { generation } => {
                    return Head::Slot(Slot {
                        bucket: Arc::clone(self),
                        generation,
                        sent: false,
                        done: false,
                    });
                }
                Poll::Migrated(next) => return Head::Migrated(next),
                Poll::WaitUntil(until) => {
                    tokio::select! {
                        () = tokio::time::sleep_until(until) => {}
                        () = notified => {}
                    }
                }
                Poll::WaitForResponse => notified.await,
            }
        }
    }
}

/// A queued request, counted in [`Bucket::waiting`] while it lives.
#[derive(Debug)]
pub(crate) struct Waiting(Arc<Bucket>);

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A slot taken in a bucket. Dropped without [`Slot::finish`], it gives the slot back (refunded
/// if the request was never sent) and wakes the queue, so nothing waits for a response that will
/// never come.
#[derive(Debug)]
pub(crate) struct Slot {
    pub(crate) bucket: Arc<Bucket>,
    pub(crate) generation: u64,
    sent: bool,
    done: bool,
}

impl Slot {
    /// The request is about to be sent: a drop no longer refunds it.
    pub(crate) fn mark_sent(&mut self) {
        self.sent = true;
    }

    /// Ends the slot with a response; `apply` updates the bucket's state (the in-flight count is
    /// already decremented).
    pub(crate) fn finish(mut self, apply: impl FnOnce(&mut BucketState, u64)) {
        self.done = true;
        {
            let mut state = lock(&self.bucket.state);
            state.in_flight = state.in_flight.saturating_sub(1);
            apply(&mut state, self.generation);
        }
        self.bucket.wake();
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        lock(&self.bucket.state).release(self.generation, !self.sent);
        self.bucket.wake();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::time::Instant;

    use super::{BucketState, Mode, Observation, Poll};

    fn seen(limit: u32, remaining: u32, reset_ms: u64) -> Observation {
        Observation {
            limit: Some(limit),
            remaining,
            reset_after: Duration::from_millis(reset_ms),
        }
    }

    #[test]
    fn a_sequential_bucket_lets_one_go_at_a_time_even_when_known() {
        let now = Instant::now();
        let mut state = BucketState {
            sequential: true,
            ..BucketState::default()
        };
        assert!(matches!(state.poll(now), Poll::Take { .. }));
        state.in_flight -= 1;
        state.observe(seen(5, 4, 1000), Some(0), now);
        assert!(matches!(state.poll(now), Poll::Take { .. }));
        assert!(matches!(state.poll(now), Poll::WaitForResponse));
        state.in_flight -= 1;
        assert!(matches!(state.poll(now), Poll::Take { .. }));
        assert_eq!(state.remaining, 2);
    }

    #[test]
    fn unknown_bucket_lets_one_go_at_a_time() {
        let now = Instant::now();
        let mut state = BucketState::default();
        assert!(matches!(state.poll(now), Poll::Take { .. }));
        assert!(matches!(state.poll(now), Poll::WaitForResponse));
        state.in_flight -= 1;
        state.observe(seen(3, 2, 1000), Some(0), now);
        assert_eq!(state.mode, Mode::Known { limit: 3 });
        assert!(matches!(state.poll(now), Poll::Take { .. }));
        assert!(matches!(state.poll(now), Poll::Take { .. }));
        let Poll::WaitUntil(until) = state.poll(now) else {
            panic!("spent bucket must wait");
        };
        assert_eq!(until, now + Duration::from_secs(1));
        // At the reset it refills and starts a new window.
        let gen_before = state.generation;
        assert!(matches!(state.poll(until), Poll::Take { .. }));
        assert_eq!(state.generation, gen_before + 1);
        assert_eq!(state.remaining, 2);
    }

    #[test]
    fn late_answers_never_raise_remaining() {
        let now = Instant::now();
        let mut state = BucketState::default();
        let _ = state.poll(now);
        state.in_flight -= 1;
        state.observe(seen(5, 4, 5000), Some(0), now);
        let generation = state.generation;
        for _ in 0..4 {
            assert!(matches!(state.poll(now), Poll::Take { .. }));
        }
        assert_eq!(state.remaining, 0);
        // The first of the four answers says 3 left: it was counted before the other three.
        state.in_flight -= 1;
        state.observe(seen(5, 3, 4900), Some(generation), now);
        assert_eq!(state.remaining, 0);
        // An answer from an earlier window is ignored entirely.
        state.observe(seen(5, 4, 100), Some(generation - 1), now);
        assert_eq!(state.reset_at, Some(now + Duration::from_secs(5)));
    }

    #[test]
    fn refund_only_in_the_same_window() {
        let now = Instant::now();
        let mut state = BucketState {
            mode: Mode::Known { limit: 2 },
            remaining: 1,
            reset_at: Some(now + Duration::from_secs(1)),
            ..BucketState::default()
        };
        let Poll::Take { generation } = state.poll(now) else {
            panic!("one left");
        };
        state.release(generation, true);
        assert_eq!(state.remaining, 1);
        let _ = state.poll(now);
        state.release(generation + 1, true);
        assert_eq!(state.remaining, 0, "another window's slot is not refunded");
    }

    #[test]
    fn estimates_count_windows_ahead() {
        let now = Instant::now();
        let state = BucketState {
            mode: Mode::Known { limit: 5 },
            remaining: 0,
            reset_at: Some(now + Duration::from_secs(2)),
            window: Duration::from_secs(5),
            ..BucketState::default()
        };
        assert_eq!(state.estimate(now, 0), Duration::from_secs(2));
        assert_eq!(state.estimate(now, 4), Duration::from_secs(2));
        assert_eq!(state.estimate(now, 5), Duration::from_secs(7));
        assert_eq!(state.estimate(now, 12), Duration::from_secs(12));
        assert_eq!(BucketState::default().estimate(now, 100), Duration::ZERO);
    }
}
