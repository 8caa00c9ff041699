//! The gateway's outgoing rate limit, per connection: Discord allows
//! [`SEND_LIMIT_PER_WINDOW`] sends per [`SEND_LIMIT_WINDOW_SECS`] seconds, heartbeats included,
//! and closes the connection (4008) past it.
//!
//! [`SendLimiter`] is a sliding-window log of every send on one connection. Commands from
//! workers may fill the window only up to a *command budget*; the rest is reserved for the sends
//! the connection itself must make: the heartbeats that fit in a window at the connection's
//! interval, IDENTIFY or RESUME, and one heartbeat Discord asks for with op 1:
//!
//! ```text
//! reserved = max(3, ceil(window / heartbeat_interval) + 2)
//! budget   = 120 − reserved            (41.25 s interval: reserved 4, budget 116)
//! ```
//!
//! Heartbeats and IDENTIFY/RESUME are only recorded, never refused: they always get a slot.
//! A command is admitted only while the window ending now holds fewer than `budget` commands,
//! so no window ever holds more than `budget` commands, and the reserve covers the rest. To be
//! safe as well, a command is also refused while the window holds `limit − 1` sends of any kind
//! (only reachable if Discord asks for many extra heartbeats), so a heartbeat always finds room.
//! `try_command`'s retry-after is the later of the two waits.
//!
//! The window is [`SEND_WINDOW_GUARD`] longer than Discord's, so that network jitter of up to
//! a second cannot make two sends a window apart here arrive less than a window apart at
//! Discord.
//!
//! The limiter is pure: every method takes `now`, so it is tested with explicit instants.

use std::collections::VecDeque;
use std::time::Duration;

use shardyard_protocol::{SEND_LIMIT_PER_WINDOW, SEND_LIMIT_WINDOW_SECS};
use tokio::time::Instant;

/// How much longer than Discord's window a send is remembered.
pub const SEND_WINDOW_GUARD: Duration = Duration::from_secs(1);

/// The fewest sends reserved for the connection's own heartbeats, IDENTIFY and RESUME.
pub const MIN_RESERVED: u32 = 3;

/// The send limit of one gateway connection. Make a new one for every connection.
#[derive(Debug, Clone)]
pub struct SendLimiter {
    /// When each send of the current window happened, oldest first.
    sends: VecDeque<Instant>,
    /// When each command of the current window was sent, oldest first.
    commands: VecDeque<Instant>,
    window: Duration,
    limit: usize,
    budget: usize,
    reserved: u32,
}

impl SendLimiter {
    /// A limiter for a connection whose HELLO said `heartbeat_interval`, with Discord's limit
    /// (120 per 60 s) and [`SEND_WINDOW_GUARD`].
    #[must_use]
    pub fn new(heartbeat_interval: Duration) -> Self {
        Self::with_limit(
            heartbeat_interval,
            SEND_LIMIT_PER_WINDOW,
            Duration::from_secs(SEND_LIMIT_WINDOW_SECS) + SEND_WINDOW_GUARD,
        )
    }

    /// A limiter allowing `limit` sends per `window`.
    ///
    /// With a heartbeat interval so short that the reserve takes the whole limit, commands are
    /// never admitted (the heartbeats alone would break Discord's limit anyway).
    #[must_use]
    pub fn with_limit(heartbeat_interval: Duration, limit: u32, window: Duration) -> Self {
        let interval = heartbeat_interval.max(Duration::from_millis(1));
        let beats = window.as_nanos().div_ceil(interval.as_nanos());
        let reserved = u32::try_from(beats)
            .unwrap_or(u32::MAX)
            .saturating_add(2)
            .max(MIN_RESERVED);
        let budget = usize::try_from(limit.saturating_sub(reserved)).unwrap_or(0);
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        Self {
            sends: VecDeque::with_capacity(limit.min(1024)),
            commands: VecDeque::with_capacity(budget.min(1024)),
            window,
            limit,
            budget,
            reserved,
        }
    }

    /// Takes a slot for a command: `Ok` when it may be sent now (the send is recorded), else
    /// `Err(retry_after)`, how long until a slot frees (assuming no other sends meanwhile).
    ///
    /// # Errors
    /// The wait, when the command budget of the window is used up.
    pub fn try_command(&mut self, now: Instant) -> Result<(), Duration> {
        let now = self.prune(now);
        if self.budget == 0 {
            return Err(self.window);
        }
        // Room for budget commands, and for a heartbeat after this command.
        let commands_free = frees_at(&self.commands, self.budget, self.window);
        let sends_free = frees_at(&self.sends, self.limit.saturating_sub(1), self.window);
        match commands_free.max(sends_free) {
            None => {
                self.commands.push_back(now);
                self.sends.push_back(now);
                Ok(())
            }
            Some(at) => Err(at.saturating_duration_since(now)),
        }
    }

    /// Records a heartbeat (scheduled, or asked for by Discord). Never refused.
    pub fn record_heartbeat(&mut self, now: Instant) {
        self.record(now);
    }

    /// Records any other send the connection makes on its own (IDENTIFY, RESUME). Never refused.
    pub fn record_other(&mut self, now: Instant) {
        self.record(now);
    }

    /// Sends of every kind in the window ending at `now`.
    pub fn sends_in_window(&mut self, now: Instant) -> usize {
        self.prune(now);
        self.sends.len()
    }

    /// Commands in the window ending at `now`.
    pub fn commands_in_window(&mut self, now: Instant) -> usize {
        self.prune(now);
        self.commands.len()
    }

    /// How many commands a window may hold.
    #[must_use]
    pub const fn command_budget(&self) -> usize {
        self.budget
    }

    /// How many sends of a window are kept for heartbeats, IDENTIFY and RESUME.
    #[must_use]
    pub const fn reserved(&self) -> u32 {
        self.reserved
    }

    /// The window a send is remembered for.
    #[must_use]
    pub const fn window(&self) -> Duration {
        self.window
    }

    fn record(&mut self, now: Instant) {
        let now = self.prune(now);
        self.sends.push_back(now);
    }

    /// Forgets sends a whole window old and returns `now`, never earlier than the last send (so
    /// the log stays in order even if a caller's clock readings arrive out of order).
    fn prune(&mut self, now: Instant) -> Instant {
        let now = self.sends.back().map_or(now, |last| now.max(*last));
        for log in [&mut self.sends, &mut self.commands] {
            while log
                .front()
                .is_some_and(|sent| now.saturating_duration_since(*sent) >= self.window)
            {
                log.pop_front();
            }
        }
        now
    }
}

/// When a (pruned) log of sends holds fewer than `cap` again: `None` if it does now, else when
/// its `(len − cap)`th send leaves the window.
fn frees_at(log: &VecDeque<Instant>, cap: usize, window: Duration) -> Option<Instant> {
    let excess = log.len().checked_sub(cap)?;
    log.get(excess).map(|sent| *sent + window)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DISCORD_WINDOW: Duration = Duration::from_secs(SEND_LIMIT_WINDOW_SECS);

    /// The most sends in any window of `window` (half-open, as Discord counts): for each send,
    /// the sends in `[t, t + window)`.
    fn max_in_any_window(sends: &[Instant], window: Duration) -> usize {
        let mut sorted = sends.to_vec();
        sorted.sort();
        let mut best = 0;
        let mut end = 0;
        for start in 0..sorted.len() {
            while end < sorted.len() && sorted[end] < sorted[start] + window {
                end += 1;
            }
            best = best.max(end - start);
        }
        best
    }

    #[test]
    fn reserve_covers_the_heartbeats_of_a_window() {
        // Discord's usual interval: 2 beats fit in 61 s, plus IDENTIFY/RESUME and one op 1.
        let limiter = SendLimiter::new(Duration::from_millis(41_250));
        assert_eq!(limiter.reserved(), 4);
        assert_eq!(limiter.command_budget(), 116);
        assert_eq!(limiter.window(), Duration::from_secs(61));
        // A very long interval still keeps the minimum.
        let limiter = SendLimiter::new(Duration::from_secs(600));
        assert_eq!(limiter.reserved(), 3);
        assert_eq!(limiter.command_budget(), 117);
        // The simulator's fast interval in tests: 61 beats a window.
        let limiter = SendLimiter::new(Duration::from_secs(1));
        assert_eq!(limiter.reserved(), 63);
        assert_eq!(limiter.command_budget(), 57);
        // Heartbeats alone would break the limit: no commands at all.
        let mut limiter = SendLimiter::new(Duration::from_millis(100));
        assert_eq!(limiter.command_budget(), 0);
        assert_eq!(
            limiter.try_command(Instant::now()),
            Err(Duration::from_secs(61))
        );
        // A zero interval does not divide by zero.
        assert_eq!(SendLimiter::new(Duration::ZERO).command_budget(), 0);
    }

    #[test]
    fn a_burst_takes_the_budget_then_waits_for_the_oldest_send() {
        let t0 = Instant::now();
        let mut limiter = SendLimiter::new(Duration::from_millis(41_250));
        let mut admitted = 0;
        let mut refused = Vec::new();
        for i in 0..200u64 {
            let now = t0 + Duration::from_millis(i);
            match limiter.try_command(now) {
                Ok(()) => admitted += 1,
                Err(retry) => refused.push((now, retry)),
            }
        }
        assert_eq!(admitted, 116);
        assert_eq!(refused.len(), 84);
        // The first send (at t0) frees the first slot, 61 s after it.
        for (now, retry) in &refused {
            assert_eq!(*now + *retry, t0 + Duration::from_secs(61));
        }
        // Just before: still refused, by exactly the remaining nanosecond.
        let almost = t0 + Duration::from_secs(61) - Duration::from_nanos(1);
        assert_eq!(limiter.try_command(almost), Err(Duration::from_nanos(1)));
        // Then one slot per freed send: t0 + 61 s frees the send of t0, and so on.
        assert_eq!(limiter.try_command(t0 + Duration::from_secs(61)), Ok(()));
        assert_eq!(
            limiter.try_command(t0 + Duration::from_secs(61)),
            Err(Duration::from_millis(1))
        );
        assert_eq!(
            limiter.try_command(t0 + Duration::from_secs(61) + Duration::from_millis(1)),
            Ok(())
        );
    }

    #[test]
    fn heartbeats_do_not_use_the_command_budget() {
        let t0 = Instant::now();
        let mut limiter = SendLimiter::new(Duration::from_millis(41_250));
        // IDENTIFY and a heartbeat first, then commands until the budget is used up.
        limiter.record_other(t0);
        limiter.record_heartbeat(t0 + Duration::from_secs(1));
        for i in 0..116u64 {
            assert_eq!(
                limiter.try_command(t0 + Duration::from_secs(2) + Duration::from_millis(i)),
                Ok(())
            );
        }
        let now = t0 + Duration::from_secs(10);
        assert_eq!(limiter.sends_in_window(now), 118);
        assert_eq!(limiter.commands_in_window(now), 116);
        // The first command's slot frees first, at t0 + 2 s + 61 s.
        assert_eq!(limiter.try_command(now), Err(Duration::from_secs(53)));
        // Heartbeats are never refused, even with the budget used up.
        limiter.record_heartbeat(now);
        assert_eq!(limiter.sends_in_window(now), 119);
        // With 119 sends in the window a command would leave no room for a heartbeat: it must
        // wait for a send of any kind to leave (IDENTIFY's, at t0 + 61 s) and for a command
        // slot (t0 + 63 s), whichever is later.
        assert_eq!(limiter.try_command(now), Err(Duration::from_secs(53)));
        assert_eq!(
            limiter.try_command(t0 + Duration::from_secs(63) - Duration::from_nanos(1)),
            Err(Duration::from_nanos(1))
        );
        assert_eq!(limiter.try_command(t0 + Duration::from_secs(63)), Ok(()));
    }

    #[test]
    fn many_extra_heartbeats_hold_commands_back() {
        // Discord asking for a beat again and again fills the window with heartbeats: commands
        // wait until a heartbeat leaves the window, even with command budget left.
        let t0 = Instant::now();
        let mut limiter = SendLimiter::new(Duration::from_millis(41_250));
        for i in 0..119u64 {
            limiter.record_heartbeat(t0 + Duration::from_millis(i));
        }
        assert_eq!(limiter.commands_in_window(t0), 0);
        let now = t0 + Duration::from_secs(30);
        assert_eq!(limiter.try_command(now), Err(Duration::from_secs(31)));
        assert_eq!(limiter.try_command(t0 + Duration::from_secs(61)), Ok(()));
    }

    /// 200 commands in a burst, each refused one retried when told, beside heartbeats at the
    /// interval: no window of 60 s (nor of 61 s) ever holds more than 120 sends.
    #[test]
    fn a_burst_with_heartbeats_never_breaks_discords_limit() {
        for interval_ms in [41_250u64, 30_000, 20_000, 5_000, 1_000] {
            for jitter in [0.0, 0.3, 0.99] {
                let interval = Duration::from_millis(interval_ms);
                let t0 = Instant::now();
                let mut limiter = SendLimiter::new(interval);
                let mut sends = vec![t0];
                limiter.record_other(t0); // IDENTIFY
                let end = t0 + Duration::from_secs(600);
                let mut next_beat = t0 + interval.mul_f64(jitter);
                // When each waiting command is tried next: 200 at once, 50 ms after IDENTIFY.
                let mut queue: Vec<Instant> = vec![t0 + Duration::from_millis(50); 200];
                let mut commands_sent = Vec::new();
                loop {
                    let next_command = queue.iter().min().copied();
                    let now = match next_command {
                        Some(c) if c < next_beat => c,
                        _ => next_beat,
                    };
                    if now > end {
                        break;
                    }
                    if Some(now) == next_command {
                        let i = queue.iter().position(|c| *c == now).unwrap_or(0);
                        match limiter.try_command(now) {
                            Ok(()) => {
                                sends.push(now);
                                queue.swap_remove(i);
                                commands_sent.push(now);
                            }
                            Err(retry) => {
                                assert!(retry > Duration::ZERO);
                                queue[i] = now + retry;
                            }
                        }
                    } else {
                        limiter.record_heartbeat(now);
                        sends.push(now);
                        next_beat += interval;
                    }
                }
                assert_eq!(commands_sent.len(), 200, "interval {interval_ms} ms");
                let worst = max_in_any_window(&sends, DISCORD_WINDOW);
                assert!(
                    worst <= SEND_LIMIT_PER_WINDOW as usize,
                    "{worst} sends in 60 s at interval {interval_ms} ms, jitter {jitter}"
                );
                let worst_guarded = max_in_any_window(&sends, limiter.window());
                assert!(worst_guarded <= SEND_LIMIT_PER_WINDOW as usize);
                // And the budget is used: the first window holds every command it may.
                let first_window = commands_sent
                    .iter()
                    .filter(|t| **t < t0 + DISCORD_WINDOW)
                    .count();
                assert_eq!(first_window, limiter.command_budget());
            }
        }
    }

    #[test]
    fn discord_asked_heartbeats_also_fit() {
        // Discord asks for a beat (op 1) right after a full burst, beside the scheduled beats.
        let interval = Duration::from_millis(41_250);
        let t0 = Instant::now();
        let mut limiter = SendLimiter::new(interval);
        let mut sends = vec![t0];
        limiter.record_other(t0);
        let mut now = t0;
        while limiter.try_command(now).is_ok() {
            sends.push(now);
            now += Duration::from_millis(10);
        }
        for beat in [
            now,
            t0 + Duration::from_secs(20),
            t0 + Duration::from_millis(61_250),
        ] {
            limiter.record_heartbeat(beat);
            sends.push(beat);
        }
        assert!(max_in_any_window(&sends, DISCORD_WINDOW) <= 120);
    }

    #[test]
    fn out_of_order_instants_keep_the_log_ordered() {
        let t0 = Instant::now();
        let mut limiter =
            SendLimiter::with_limit(Duration::from_secs(600), 5, Duration::from_secs(10));
        assert_eq!(limiter.command_budget(), 2);
        assert_eq!(limiter.try_command(t0 + Duration::from_secs(5)), Ok(()));
        // An earlier reading counts as the latest one.
        assert_eq!(limiter.try_command(t0), Ok(()));
        assert_eq!(
            limiter.try_command(t0 + Duration::from_secs(6)),
            Err(Duration::from_secs(9))
        );
        assert_eq!(limiter.sends_in_window(t0 + Duration::from_secs(15)), 0);
    }
}
