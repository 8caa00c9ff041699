//! Start-up hooks ([`crate::BotBuilder::on_start`]): work a bot does once per process start,
//! such as registering its application commands, run beside the consumer so that it never keeps
//! events from being handled.
//!
//! Each hook runs once, in its own task, as soon as the worker has its REST client and NATS
//! connection. An `Err` is logged as a warning; a retryable one is tried again after the
//! worker's retry backoff (`retry_base_ms` doubling up to `retry_max_ms`), up to
//! [`START_HOOK_ATTEMPTS`] attempts in all; a fatal one, or a panic, is not. Shutdown cancels a
//! hook still running or waiting. Nothing a hook does can stop the worker: Discord or the REST
//! proxy being down at start-up must not crash-loop it.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;

use futures_util::FutureExt as _;
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::context::StartContext;
use crate::error::HandlerError;

/// How many times a hook failing with a retryable error runs in all.
pub const START_HOOK_ATTEMPTS: u32 = 5;

pub(crate) type StartFuture = Pin<Box<dyn Future<Output = Result<(), HandlerError>> + Send>>;
pub(crate) type StartHook<C = StartContext> = Arc<dyn Fn(C) -> StartFuture + Send + Sync>;

/// What became of a hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HookOutcome {
    /// It returned `Ok` on this attempt.
    Done(u32),
    /// It failed for good after this many attempts.
    Failed(u32),
    /// Shutdown came first.
    Cancelled,
}

/// Runs `hook` until it succeeds, fails for good, or `stopping` is cancelled.
pub(crate) async fn run_hook<C: Clone>(
    index: usize,
    hook: StartHook<C>,
    ctx: C,
    retry: Backoff,
    stopping: CancellationToken,
) -> HookOutcome {
    let mut attempt = 1;
    loop {
        let run = AssertUnwindSafe(hook(ctx.clone())).catch_unwind();
        let result = tokio::select! {
            () = stopping.cancelled() => return HookOutcome::Cancelled,
            result = run => result,
        };
        let error = match result {
            Ok(Ok(())) => {
                tracing::info!(hook = index, attempt, "start-up hook done");
                return HookOutcome::Done(attempt);
            }
            Ok(Err(error)) => error,
            Err(_) => {
                tracing::warn!(
                    hook = index,
                    attempt,
                    "start-up hook panicked; the bot goes on without it"
                );
                return HookOutcome::Failed(attempt);
            }
        };
        if error.is_fatal() || attempt >= START_HOOK_ATTEMPTS {
            tracing::warn!(
                hook = index,
                attempt,
                %error,
                "start-up hook failed; the bot goes on without it"
            );
            return HookOutcome::Failed(attempt);
        }
        let wait = retry.delay(attempt);
        tracing::warn!(hook = index, attempt, %error, ?wait, "start-up hook failed; trying again");
        tokio::select! {
            () = stopping.cancelled() => return HookOutcome::Cancelled,
            () = tokio::time::sleep(wait) => {}
        }
        attempt += 1;
    }
}

/// Spawns every hook (see the module documentation).
pub(crate) fn spawn_hooks(
    hooks: &[StartHook],
    ctx: &StartContext,
    retry: Backoff,
    stopping: &CancellationToken,
) {
    for (index, hook) in hooks.iter().enumerate() {
        tokio::spawn(run_hook(
            index,
            Arc::clone(hook),
            ctx.clone(),
            retry,
            stopping.clone(),
        ));
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::Duration;

    use super::*;

    fn backoff() -> Backoff {
        Backoff {
            base: Duration::from_secs(1),
            max: Duration::from_secs(4),
        }
    }

    /// A hook failing its first `failures` runs with `error`, counting its runs.
    fn flaky(failures: u32, error: fn() -> HandlerError) -> (StartHook<()>, Arc<AtomicU32>) {
        let runs = Arc::new(AtomicU32::new(0));
        let counted = Arc::clone(&runs);
        let hook: StartHook<()> = Arc::new(move |()| {
            let n = counted.fetch_add(1, Ordering::SeqCst) + 1;
            Box::pin(async move { if n <= failures { Err(error()) } else { Ok(()) } })
        });
        (hook, runs)
    }

    #[tokio::test(start_paused = true)]
    async fn a_retryable_failure_is_tried_again_with_backoff() {
        let (hook, runs) = flaky(2, || HandlerError::retry("the proxy is not up yet"));
        let started = tokio::time::Instant::now();
        let outcome = run_hook(0, hook, (), backoff(), CancellationToken::new()).await;
        assert_eq!(outcome, HookOutcome::Done(3));
        assert_eq!(runs.load(Ordering::SeqCst), 3);
        assert_eq!(
            started.elapsed(),
            Duration::from_secs(1 + 2),
            "1 s, then 2 s"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn attempts_are_bounded_and_a_fatal_error_is_not_retried() {
        let (hook, runs) = flaky(u32::MAX, || HandlerError::retry("Discord is down"));
        let outcome = run_hook(0, hook, (), backoff(), CancellationToken::new()).await;
        assert_eq!(outcome, HookOutcome::Failed(START_HOOK_ATTEMPTS));
        assert_eq!(runs.load(Ordering::SeqCst), START_HOOK_ATTEMPTS);
        let (hook, runs) = flaky(u32::MAX, || HandlerError::fatal("400 Invalid Form Body"));
        let outcome = run_hook(0, hook, (), backoff(), CancellationToken::new()).await;
        assert_eq!(outcome, HookOutcome::Failed(1));
        assert_eq!(runs.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_panic_is_caught_and_shutdown_cancels_the_wait() {
        let hook: StartHook<()> = Arc::new(|()| Box::pin(async { panic!("bug in a hook") }));
        let outcome = run_hook(0, hook, (), backoff(), CancellationToken::new()).await;
        assert_eq!(outcome, HookOutcome::Failed(1));

        let (hook, runs) = flaky(u32::MAX, || HandlerError::retry("down"));
        let stopping = CancellationToken::new();
        let task = tokio::spawn(run_hook(0, hook, (), backoff(), stopping.clone()));
        tokio::time::sleep(Duration::from_millis(500)).await;
        stopping.cancel();
        assert_eq!(task.await.unwrap(), HookOutcome::Cancelled);
        assert_eq!(
            runs.load(Ordering::SeqCst),
            1,
            "cancelled while waiting to retry"
        );
    }
}
