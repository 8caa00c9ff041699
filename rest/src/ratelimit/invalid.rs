//! The invalid-request guard: 401, 403 and non-shared 429 answers counted over a sliding window
//! (Discord's Cloudflare bans an IP at 10,000 per 10 minutes). Past a safety line the engine
//! refuses locally instead of sending.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

/// Invalid requests of one egress (one IP), in a sliding window.
#[derive(Debug)]
pub(crate) struct InvalidLog {
    window: Duration,
    line: u32,
    log: VecDeque<Instant>,
}

impl InvalidLog {
    pub(crate) fn new(window: Duration, line: u32) -> Self {
        Self {
            window,
            line: line.max(1),
            log: VecDeque::new(),
        }
    }

    fn expire(&mut self, now: Instant) {
        while self
            .log
            .front()
            .is_some_and(|at| now.saturating_duration_since(*at) >= self.window)
        {
            self.log.pop_front();
        }
    }

    /// Counts an invalid answer seen at `now`.
    pub(crate) fn record(&mut self, now: Instant) {
        self.expire(now);
        self.log.push_back(now);
        // Never more than twice the line is needed to know when it is under the line again.
        let cap = usize::try_from(self.line)
            .unwrap_or(usize::MAX)
            .saturating_mul(2);
        while self.log.len() > cap {
            self.log.pop_front();
        }
    }

    /// Invalid answers in the window.
    pub(crate) fn count(&mut self, now: Instant) -> u32 {
        self.expire(now);
        u32::try_from(self.log.len()).unwrap_or(u32::MAX)
    }

    pub(crate) fn line(&self) -> u32 {
        self.line
    }

    /// `Err(until_under_the_line)` at or past the line.
    pub(crate) fn check(&mut self, now: Instant) -> Result<(), Duration> {
        let count = usize::try_from(self.count(now)).unwrap_or(usize::MAX);
        let line = usize::try_from(self.line).unwrap_or(usize::MAX);
        if count < line {
            return Ok(());
        }
        // Under the line once `count - line + 1` entries have expired.
        let expiring = self.log.get(count - line).copied().unwrap_or(now);
        Err((expiring + self.window).saturating_duration_since(now))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::time::Instant;

    use super::InvalidLog;

    #[test]
    fn trips_at_the_line_and_slides() {
        let t0 = Instant::now();
        let mut log = InvalidLog::new(Duration::from_secs(600), 3);
        for i in 0..3 {
            assert!(log.check(t0).is_ok());
            log.record(t0 + Duration::from_secs(i));
        }
        let now = t0 + Duration::from_secs(10);
        assert_eq!(log.count(now), 3);
        assert_eq!(log.check(now), Err(Duration::from_secs(590)));
        assert!(log.check(t0 + Duration::from_secs(600)).is_ok());
        assert_eq!(log.count(t0 + Duration::from_secs(602)), 0);
    }
}
