//! Identify pacing inside one process: one IDENTIFY per concurrency bucket
//! (`shard % max_concurrency`) per 5 s plus a margin, and the daily session budget respected by
//! waiting for its reset rather than burning it. (Pacing across processes through NATS KV leases
//! comes with the coordinator.)

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use shardyard_protocol::{IDENTIFY_WINDOW_SECS, identify_bucket};
use tokio::sync::Mutex;
use tokio::time::Instant;

/// Extra wait on top of Discord's 5 s, for clock and network jitter.
pub const SAFETY_MARGIN: Duration = Duration::from_millis(500);

/// Paces the identifies of every shard of a process.
#[derive(Debug)]
pub struct IdentifyPacer {
    max_concurrency: u32,
    buckets: HashMap<u32, Arc<Mutex<Option<Instant>>>>,
    budget: Mutex<Budget>,
}

#[derive(Debug)]
struct Budget {
    remaining: u32,
    total: u32,
    reset_at: Instant,
}

impl IdentifyPacer {
    /// A pacer for `max_concurrency` buckets with `remaining` of `total` session starts left,
    /// resetting after `reset_after`.
    #[must_use]
    pub fn new(max_concurrency: u32, remaining: u32, total: u32, reset_after: Duration) -> Self {
        let max_concurrency = max_concurrency.max(1);
        Self {
            max_concurrency,
            buckets: (0..max_concurrency)
                .map(|b| (b, Arc::new(Mutex::new(None))))
                .collect(),
            budget: Mutex::new(Budget {
                remaining,
                total,
                reset_at: Instant::now() + reset_after,
            }),
        }
    }

    /// Waits until `shard` may identify, and books it. Returns how long it waited.
    pub async fn wait_turn(&self, shard: u32) -> Duration {
        let started = Instant::now();
        {
            let mut budget = self.budget.lock().await;
            if budget.remaining == 0 {
                tracing::warn!(shard, "no session starts left today: waiting for the reset");
                tokio::time::sleep_until(budget.reset_at).await;
                budget.remaining = budget.total;
                budget.reset_at = Instant::now() + Duration::from_secs(24 * 3600);
            }
            budget.remaining -= 1;
        }
        let bucket = identify_bucket(shard, self.max_concurrency);
        let Some(slot) = self.buckets.get(&bucket) else {
            return started.elapsed();
        };
        let mut last = slot.lock().await;
        if let Some(at) = *last {
            tokio::time::sleep_until(
                at + Duration::from_secs(IDENTIFY_WINDOW_SECS) + SAFETY_MARGIN,
            )
            .await;
        }
        *last = Some(Instant::now());
        started.elapsed()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::IdentifyPacer;

    #[tokio::test(start_paused = true)]
    async fn one_identify_per_bucket_per_window() {
        let pacer = IdentifyPacer::new(2, 100, 100, Duration::from_secs(86_400));
        assert_eq!(pacer.wait_turn(0).await, Duration::ZERO);
        assert_eq!(
            pacer.wait_turn(1).await,
            Duration::ZERO,
            "another bucket goes at once"
        );
        let waited = pacer.wait_turn(2).await;
        assert!(waited >= Duration::from_millis(5500), "{waited:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn an_exhausted_budget_waits_for_its_reset() {
        let pacer = IdentifyPacer::new(4, 1, 10, Duration::from_secs(60));
        pacer.wait_turn(0).await;
        let waited = pacer.wait_turn(1).await;
        assert!(waited >= Duration::from_secs(60), "{waited:?}");
    }
}
