//! The per-token global limit: at most `per_second` requests in any sliding second, and a pause
//! of the whole token after a global 429. Interaction endpoints never come here.
//!
//! Discord counts a request when it *arrives*, which is some time between when the engine let
//! it go and when its answer came back. So a request holds its slot from its permit until one
//! second after its answer (or after its permit was dropped): then no two requests whose slots
//! did not overlap can arrive within one second of each other, however the network delays
//! them.

use std::collections::VecDeque;
use std::pin::pin;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::{MutexGuard, Notify};
use tokio::time::Instant;

use super::lock;

/// The global limit's window.
pub(crate) const GLOBAL_WINDOW: Duration = Duration::from_secs(1);

/// Requests in flight, answers of the last second and the pause, decided without awaiting.
#[derive(Debug)]
pub(crate) struct GlobalState {
    per_second: u32,
    in_flight: u32,
    /// When the answers of the last second came (at most `per_second` of them).
    released: VecDeque<Instant>,
    paused_until: Option<Instant>,
}

impl GlobalState {
    pub(crate) fn new(per_second: u32) -> Self {
        Self {
            per_second: per_second.max(1),
            in_flight: 0,
            released: VecDeque::new(),
            paused_until: None,
        }
    }

    fn expire(&mut self, now: Instant) {
        while self
            .released
            .front()
            .is_some_and(|at| now.saturating_duration_since(*at) >= GLOBAL_WINDOW)
        {
            self.released.pop_front();
        }
    }

    /// Slots in use: requests in flight and answers of the last second.
    fn used(&self) -> usize {
        usize::try_from(self.in_flight)
            .unwrap_or(usize::MAX)
            .saturating_add(self.released.len())
    }

    /// `Ok` when a request may be sent at `now`; else when to look again.
    pub(crate) fn ready(&mut self, now: Instant) -> Result<(), Instant> {
        if let Some(until) = self.paused_until {
            if now < until {
                return Err(until);
            }
            self.paused_until = None;
        }
        self.expire(now);
        let limit = usize::try_from(self.per_second).unwrap_or(usize::MAX);
        if self.used() < limit {
            return Ok(());
        }
        // Every slot in flight: an answer wakes the waiter; look again in a second anyway.
        let oldest = self.released.front().copied().unwrap_or(now);
        Err(oldest + GLOBAL_WINDOW)
    }

    /// Takes a slot for a request sent now (after [`GlobalState::ready`] said yes).
    pub(crate) fn take(&mut self) {
        self.in_flight = self.in_flight.saturating_add(1);
    }

    /// The request of a slot was answered (or given up) at `now`: its slot stays used for one
    /// more second.
    pub(crate) fn release(&mut self, now: Instant) {
        self.in_flight = self.in_flight.saturating_sub(1);
        self.released.push_back(now);
        let limit = usize::try_from(self.per_second).unwrap_or(usize::MAX);
        while self.released.len() > limit {
            self.released.pop_front();
        }
    }

    /// Requests that could be sent right now.
    pub(crate) fn available(&mut self, now: Instant) -> u32 {
        if self.paused_until.is_some_and(|until| now < until) {
            return 0;
        }
        self.expire(now);
        let used = u32::try_from(self.used()).unwrap_or(u32::MAX);
        self.per_second.saturating_sub(used)
    }

    pub(crate) fn per_second(&self) -> u32 {
        self.per_second
    }

    pub(crate) fn set_per_second(&mut self, per_second: u32) {
        self.per_second = per_second.max(1);
    }

    /// Pauses every request of the token until `until` (a global 429).
    pub(crate) fn pause(&mut self, until: Instant) {
        self.paused_until = Some(self.paused_until.map_or(until, |p| p.max(until)));
    }

    /// How long the token stays paused.
    pub(crate) fn paused_for(&self, now: Instant) -> Duration {
        self.paused_until
            .map_or(Duration::ZERO, |until| until.saturating_duration_since(now))
    }
}

/// The global limit of one token: a fair turnstile in front of [`GlobalState`].
#[derive(Debug)]
pub(crate) struct Global {
    turnstile: tokio::sync::Mutex<()>,
    pub(crate) state: Mutex<GlobalState>,
    notify: Notify,
}

impl Global {
    pub(crate) fn new(per_second: u32) -> Self {
        Self {
            turnstile: tokio::sync::Mutex::new(()),
            state: Mutex::new(GlobalState::new(per_second)),
            notify: Notify::new(),
        }
    }

    /// Waits (FIFO among the token's buckets) until a request may be sent, and returns holding
    /// the turnstile: the caller takes a slot with [`GlobalState::take`] before dropping it.
    pub(crate) async fn wait_ready(&self) -> MutexGuard<'_, ()> {
        let turn = self.turnstile.lock().await;
        loop {
            let mut notified = pin!(self.notify.notified());
            notified.as_mut().enable();
            let ready = lock(&self.state).ready(Instant::now());
            match ready {
                Ok(()) => return turn,
                Err(until) => {
                    tokio::select! {
                        () = tokio::time::sleep_until(until) => {}
                        () = notified => {}
                    }
                }
            }
        }
    }

    /// Wakes the waiter to look at the state again (a pause or a new limit).
    pub(crate) fn wake(&self) {
        self.notify.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::time::Instant;

    use super::GlobalState;

    #[test]
    fn sliding_second() {
        let t0 = Instant::now();
        let mut global = GlobalState::new(3);
        for i in 0..3 {
            let at = t0 + Duration::from_millis(100 * i);
            assert_eq!(global.ready(at), Ok(()));
            global.take();
            global.release(at);
        }
        assert_eq!(global.available(t0 + Duration::from_millis(300)), 0);
        assert_eq!(
            global.ready(t0 + Duration::from_millis(300)),
            Err(t0 + Duration::from_secs(1))
        );
        assert_eq!(global.ready(t0 + Duration::from_secs(1)), Ok(()));
        assert_eq!(global.available(t0 + Duration::from_secs(1)), 1);
    }

    #[test]
    fn a_slot_is_held_until_a_second_after_the_answer() {
        let t0 = Instant::now();
        let mut global = GlobalState::new(2);
        global.take();
        global.take();
        // Both in flight: nothing more may go, however long they take.
        assert_eq!(global.available(t0 + Duration::from_secs(5)), 0);
        assert!(global.ready(t0 + Duration::from_secs(5)).is_err());
        // The first answer comes at 5 s: its slot frees at 6 s, not earlier.
        global.release(t0 + Duration::from_secs(5));
        assert_eq!(
            global.ready(t0 + Duration::from_millis(5_999)),
            Err(t0 + Duration::from_secs(6))
        );
        assert_eq!(global.ready(t0 + Duration::from_secs(6)), Ok(()));
        assert_eq!(global.available(t0 + Duration::from_secs(6)), 1);
    }

    #[test]
    fn pause_blocks_everything() {
        let t0 = Instant::now();
        let mut global = GlobalState::new(50);
        global.pause(t0 + Duration::from_secs(2));
        global.pause(t0 + Duration::from_secs(1));
        assert_eq!(global.ready(t0), Err(t0 + Duration::from_secs(2)));
        assert_eq!(global.available(t0), 0);
        assert_eq!(global.paused_for(t0), Duration::from_secs(2));
        assert_eq!(global.ready(t0 + Duration::from_secs(2)), Ok(()));
    }
}
