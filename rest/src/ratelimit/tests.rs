//! The engine's behaviour under a paused clock: every wait is exact and nothing sleeps for real.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use shardyard_protocol::Token;
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep};

use super::{
    Completion, Config, Permit, RateLimiter, Refusal, ResponseMeta, Route, Scope, TokenConfig,
};

const SECRET: &str = "MTIzNDU2Nzg5MDEyMzQ1Njc4.super-secret-token-value";

fn token() -> Token {
    Token::new(SECRET)
}

fn route(method: &str, path: &str) -> Route {
    Route::parse(method, path).unwrap()
}

fn messages(channel: u64) -> Route {
    route("POST", &format!("/channels/{channel}/messages"))
}

/// No default budget: tests that wait long say so.
fn unbudgeted() -> Config {
    Config {
        default_max_wait: None,
        ..Config::default()
    }
}

fn response(status: u16, headers: &[(&str, &str)], body: &str) -> ResponseMeta {
    ResponseMeta::from_parts(
        status,
        |name| {
            headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| *v)
        },
        body.as_bytes(),
        0.0,
    )
}

/// A 200 with bucket headers.
fn ok(bucket: &str, limit: u32, remaining: u32, reset_after: f64) -> ResponseMeta {
    let limit = limit.to_string();
    let remaining = remaining.to_string();
    let reset_after = reset_after.to_string();
    response(
        200,
        &[
            ("X-RateLimit-Bucket", bucket),
            ("X-RateLimit-Limit", &limit),
            ("X-RateLimit-Remaining", &remaining),
            ("X-RateLimit-Reset-After", &reset_after),
        ],
        "{}",
    )
}

/// Lets every spawned task run until it blocks, without moving the paused clock.
async fn settle() {
    for _ in 0..64 {
        tokio::task::yield_now().await;
    }
}

async fn permit(limiter: &RateLimiter, route: &Route) -> Permit {
    limiter.acquire(&token(), route, None).await.unwrap()
}

fn spawn_acquire(limiter: &RateLimiter, route: &Route) -> JoinHandle<Result<Permit, Refusal>> {
    let limiter = limiter.clone();
    let route = route.clone();
    tokio::spawn(async move { limiter.acquire(&token(), &route, None).await })
}

#[tokio::test(start_paused = true)]
async fn unknown_bucket_sends_its_first_request_alone() {
    let limiter = RateLimiter::new(unbudgeted());
    let route = messages(1);
    let first = permit(&limiter, &route).await;
    let second = spawn_acquire(&limiter, &route);
    let third = spawn_acquire(&limiter, &route);
    settle().await;
    sleep(Duration::from_secs(10)).await;
    assert!(
        !second.is_finished(),
        "waits for the first answer, however long"
    );
    assert!(!third.is_finished());

    assert_eq!(first.complete(&ok("h", 5, 4, 5.0)), Completion::Done);
    settle().await;
    assert!(
        second.is_finished() && third.is_finished(),
        "both fit in the 4 left"
    );
    let started = Instant::now();
    let _fourth = permit(&limiter, &route).await;
    let _fifth = permit(&limiter, &route).await;
    assert_eq!(started.elapsed(), Duration::ZERO);
    // 4 were left and 4 went: the sixth waits for the window.
    let sixth = spawn_acquire(&limiter, &route);
    settle().await;
    assert!(!sixth.is_finished());
    drop((second.await, third.await));
}

#[tokio::test(start_paused = true)]
async fn bucket_queue_is_fifo_for_20_concurrent_requests() {
    let limiter = RateLimiter::new(unbudgeted());
    let route = messages(7);
    permit(&limiter, &route).await.complete(&ok("h", 1, 0, 1.0));
    let order = Arc::new(Mutex::new(Vec::new()));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..20 {
        let limiter = limiter.clone();
        let route = route.clone();
        let order = Arc::clone(&order);
        tasks.push(tokio::spawn(async move {
            let permit = limiter.acquire(&token(), &route, None).await.unwrap();
            order.lock().unwrap().push(i);
            // Answered a little later, one per second as Discord would.
            sleep(Duration::from_millis(50)).await;
            permit.complete(&ok("h", 1, 0, 0.95));
        }));
        settle().await;
    }
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(*order.lock().unwrap(), (0..20).collect::<Vec<_>>());
    assert!(
        started.elapsed() >= Duration::from_secs(20),
        "one per window: {:?}",
        started.elapsed()
    );
}

#[tokio::test(start_paused = true)]
async fn a_request_arriving_at_the_reset_does_not_jump_the_queue() {
    let limiter = RateLimiter::new(unbudgeted());
    let route = messages(8);
    permit(&limiter, &route).await.complete(&ok("h", 1, 0, 1.0));
    let reset = Instant::now() + Duration::from_secs(1);
    let order = Arc::new(Mutex::new(Vec::new()));
    let run = |name: &'static str, at: Option<Instant>| {
        let limiter = limiter.clone();
        let route = route.clone();
        let order = Arc::clone(&order);
        tokio::spawn(async move {
            if let Some(at) = at {
                tokio::time::sleep_until(at).await;
            }
            let permit = limiter.acquire(&token(), &route, None).await.unwrap();
            order.lock().unwrap().push(name);
            sleep(Duration::from_millis(50)).await;
            permit.complete(&ok("h", 1, 0, 0.95));
        })
    };
    // Its timer is set first, so it wakes first at the reset: it must still queue behind the
    // requests already waiting.
    let latecomer = run("late", Some(reset));
    settle().await;
    let mut waiting = Vec::new();
    for name in ["w0", "w1", "w2"] {
        waiting.push(run(name, None));
        settle().await;
    }
    latecomer.await.unwrap();
    for task in waiting {
        task.await.unwrap();
    }
    assert_eq!(*order.lock().unwrap(), ["w0", "w1", "w2", "late"]);
}

#[tokio::test(start_paused = true)]
async fn remaining_zero_waits_for_reset_after() {
    let limiter = RateLimiter::new(unbudgeted());
    let route = messages(3);
    permit(&limiter, &route).await.complete(&ok("h", 5, 0, 2.5));
    let started = Instant::now();
    let next = permit(&limiter, &route).await;
    assert_eq!(started.elapsed(), Duration::from_millis(2500));
    // A fresh window: the limit's worth goes at once.
    next.complete(&ok("h", 5, 4, 5.0));
    let started = Instant::now();
    for _ in 0..4 {
        permit(&limiter, &route).await.complete(&ok("h", 5, 3, 4.0));
    }
    assert_eq!(started.elapsed(), Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn routes_sharing_a_hash_share_limits_but_resources_do_not() {
    let limiter = RateLimiter::new(unbudgeted());
    let list = route("GET", "/channels/1/messages");
    let one = route("GET", "/channels/1/messages/99");
    let other_channel = route("GET", "/channels/2/messages");

    permit(&limiter, &list)
        .await
        .complete(&ok("shared", 2, 1, 5.0));
    // `one` is not known yet: its first request goes alone, with a waiter behind it.
    let probe = permit(&limiter, &one).await;
    let behind = spawn_acquire(&limiter, &one);
    settle().await;
    assert!(!behind.is_finished());
    // Discord names the same bucket, with nothing left: the waiter joins that bucket's window.
    probe.complete(&ok("shared", 2, 0, 5.0));
    settle().await;
    assert!(!behind.is_finished(), "the shared bucket is spent");

    // `list` is spent too, and says so at once when the budget is short.
    let started = Instant::now();
    let refusal = limiter
        .acquire(&token(), &list, Some(Duration::from_secs(1)))
        .await
        .unwrap_err();
    let Refusal::WouldWait { retry_after } = refusal else {
        panic!("expected WouldWait, got {refusal:?}");
    };
    assert!(retry_after >= Duration::from_secs(4), "{retry_after:?}");
    assert_eq!(started.elapsed(), Duration::ZERO);

    // Another channel with the same route and hash has its own counter.
    let started = Instant::now();
    permit(&limiter, &other_channel)
        .await
        .complete(&ok("shared", 2, 1, 5.0));
    permit(&limiter, &other_channel).await;
    assert_eq!(started.elapsed(), Duration::ZERO);

    let waited_from = Instant::now();
    let behind = behind.await.unwrap().unwrap();
    assert_eq!(waited_from.elapsed(), Duration::from_secs(5));
    drop(behind);
}

#[tokio::test(start_paused = true)]
async fn global_limit_is_never_exceeded_over_300_channels() {
    let limiter = RateLimiter::new(unbudgeted());
    let sends = Arc::new(Mutex::new(Vec::new()));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for channel in 0..300 {
        let limiter = limiter.clone();
        let sends = Arc::clone(&sends);
        tasks.push(tokio::spawn(async move {
            let permit = limiter
                .acquire(&token(), &messages(1000 + channel), None)
                .await
                .unwrap();
            sends.lock().unwrap().push(Instant::now());
            sleep(Duration::from_millis(30)).await;
            permit.complete(&ok("create", 5, 4, 5.0));
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let mut sends = sends.lock().unwrap().clone();
    sends.sort();
    assert_eq!(sends.len(), 300);
    let busiest = sends
        .iter()
        .map(|from| {
            sends
                .iter()
                .filter(|t| **t >= *from && t.duration_since(*from) < Duration::from_secs(1))
                .count()
        })
        .max()
        .unwrap();
    assert_eq!(busiest, 50, "50 in the busiest rolling second, never more");
    let span = sends[299].duration_since(sends[0]);
    assert!(
        span >= Duration::from_secs(5),
        "300 at 50/s take 5 s: {span:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(7));
}

#[tokio::test(start_paused = true)]
async fn per_token_global_limit_is_configurable() {
    let limiter = RateLimiter::new(unbudgeted());
    limiter.configure_token(
        &token(),
        TokenConfig {
            global_per_second: 3,
        },
    );
    assert_eq!(limiter.global_available(&token()), 3);
    for channel in 0..3 {
        drop(permit(&limiter, &messages(channel)).await);
    }
    assert_eq!(limiter.global_available(&token()), 0);
    let started = Instant::now();
    drop(permit(&limiter, &messages(99)).await);
    assert_eq!(started.elapsed(), Duration::from_secs(1));
    // Another token has the default.
    assert_eq!(limiter.global_available(&Token::new("other")), 50);
}

#[tokio::test(start_paused = true)]
async fn a_global_slot_is_held_until_a_second_after_the_answer() {
    // Discord counts a request when it arrives, which may be as late as its answer: a slow
    // request must not let the next second's requests land in the same second as it.
    let limiter = RateLimiter::new(unbudgeted());
    limiter.configure_token(
        &token(),
        TokenConfig {
            global_per_second: 1,
        },
    );
    let slow = permit(&limiter, &messages(1)).await;
    let next = spawn_acquire(&limiter, &messages(2));
    sleep(Duration::from_secs(5)).await;
    assert!(!next.is_finished(), "the slow request still holds the slot");
    slow.complete(&ResponseMeta::status(200));
    let answered = Instant::now();
    drop(next.await.unwrap().unwrap());
    assert_eq!(answered.elapsed(), Duration::from_secs(1));
    // A dropped permit frees its slot a second later too.
    let started = Instant::now();
    drop(permit(&limiter, &messages(3)).await);
    assert_eq!(started.elapsed(), Duration::from_secs(1));
}

#[tokio::test(start_paused = true)]
async fn interaction_endpoints_skip_the_global_limit() {
    let limiter = RateLimiter::new(unbudgeted());
    limiter.configure_token(
        &token(),
        TokenConfig {
            global_per_second: 2,
        },
    );
    for channel in 0..2 {
        drop(permit(&limiter, &messages(channel)).await);
    }
    let blocked = spawn_acquire(&limiter, &messages(50));
    settle().await;
    assert!(!blocked.is_finished(), "the global limit is spent");

    let callback = route("POST", "/interactions/123/aW50ZXJhY3Rpb246abc/callback");
    let followup = route("POST", "/webhooks/456/aW50ZXJhY3Rpb246abc");
    let started = Instant::now();
    for i in 0..5 {
        let r = if i % 2 == 0 { &callback } else { &followup };
        let p = permit(&limiter, r).await;
        p.complete(&ResponseMeta::status(204));
    }
    assert_eq!(started.elapsed(), Duration::ZERO);
    assert_eq!(
        limiter.global_available(&token()),
        0,
        "interactions used none"
    );

    // Even a global 429 does not hold interactions back.
    let p = blocked.await.unwrap().unwrap();
    let done = p.complete(&response(
        429,
        &[
            ("X-RateLimit-Global", "true"),
            ("X-RateLimit-Scope", "global"),
        ],
        r#"{"retry_after": 30, "global": true}"#,
    ));
    assert!(matches!(
        done,
        Completion::RetryAfter {
            scope: Scope::Global,
            ..
        }
    ));
    let started = Instant::now();
    permit(&limiter, &callback).await;
    assert_eq!(started.elapsed(), Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn bucket_429_blocks_the_bucket_and_asks_for_a_retry() {
    let limiter = RateLimiter::new(unbudgeted());
    let route = messages(1);
    let p = permit(&limiter, &route).await;
    let done = p.complete(&response(
        429,
        &[
            ("X-RateLimit-Bucket", "h"),
            ("X-RateLimit-Limit", "5"),
            ("X-RateLimit-Remaining", "0"),
            ("X-RateLimit-Reset-After", "1.5"),
            ("X-RateLimit-Scope", "user"),
            ("Retry-After", "2"),
        ],
        r#"{"message": "You are being rate limited.", "retry_after": 1.5, "global": false}"#,
    ));
    assert_eq!(
        done,
        Completion::RetryAfter {
            after: Duration::from_millis(1500),
            scope: Scope::User
        }
    );
    assert_eq!(limiter.invalid_requests(), 1);
    // Another channel is not held back.
    let started = Instant::now();
    permit(&limiter, &messages(2)).await;
    assert_eq!(started.elapsed(), Duration::ZERO);
    // The retry waits the 1.5 s.
    permit(&limiter, &route).await;
    assert_eq!(started.elapsed(), Duration::from_millis(1500));
    let snapshot = limiter.snapshot();
    assert!(snapshot.rate_limited.contains(&("user", 1)));
}

#[tokio::test(start_paused = true)]
async fn global_429_pauses_the_whole_token() {
    let limiter = RateLimiter::new(unbudgeted());
    let p = permit(&limiter, &messages(1)).await;
    let done = p.complete(&response(
        429,
        &[
            ("X-RateLimit-Global", "true"),
            ("X-RateLimit-Scope", "global"),
        ],
        r#"{"message": "You are being rate limited.", "retry_after": 2.0, "global": true}"#,
    ));
    assert_eq!(
        done,
        Completion::RetryAfter {
            after: Duration::from_secs(2),
            scope: Scope::Global
        }
    );
    assert_eq!(limiter.invalid_requests(), 1);
    assert_eq!(limiter.global_available(&token()), 0);
    // Every route of the token waits, and a short budget hears it at once.
    let refusal = limiter
        .acquire(&token(), &messages(2), Some(Duration::from_secs(1)))
        .await
        .unwrap_err();
    assert_eq!(
        refusal,
        Refusal::WouldWait {
            retry_after: Duration::from_secs(2)
        }
    );
    let started = Instant::now();
    permit(&limiter, &route("GET", "/guilds/5")).await;
    assert_eq!(started.elapsed(), Duration::from_secs(2));
    // Another token is not paused.
    let other = Token::new("another-token");
    let started = Instant::now();
    limiter.acquire(&other, &messages(2), None).await.unwrap();
    assert_eq!(started.elapsed(), Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn shared_429_retries_without_counting_as_invalid() {
    let limiter = RateLimiter::new(unbudgeted());
    let route = messages(1);
    let p = permit(&limiter, &route).await;
    let done = p.complete(&response(
        429,
        &[("X-RateLimit-Scope", "shared"), ("Retry-After", "3")],
        r#"{"message": "You are being rate limited.", "retry_after": 3.0, "global": false}"#,
    ));
    assert_eq!(
        done,
        Completion::RetryAfter {
            after: Duration::from_secs(3),
            scope: Scope::Shared
        }
    );
    assert_eq!(limiter.invalid_requests(), 0);
    let started = Instant::now();
    permit(&limiter, &route).await;
    assert_eq!(
        started.elapsed(),
        Duration::from_secs(3),
        "the resource is held back"
    );
}

#[tokio::test(start_paused = true)]
async fn cloudflare_429_pauses_the_token() {
    let limiter = RateLimiter::new(unbudgeted());
    let p = permit(&limiter, &messages(1)).await;
    let done = p.complete(&response(
        429,
        &[("Retry-After", "60")],
        "<html>error code: 1015</html>",
    ));
    assert_eq!(
        done,
        Completion::RetryAfter {
            after: Duration::from_secs(60),
            scope: Scope::Global
        }
    );
    assert_eq!(limiter.invalid_requests(), 1);
}

#[tokio::test(start_paused = true)]
async fn invalid_request_guard_refuses_at_the_line() {
    let limiter = RateLimiter::new(Config {
        invalid_request_line: 5,
        ..unbudgeted()
    });
    let guild = route("GET", "/guilds/1/members");
    for _ in 0..4 {
        permit(&limiter, &guild).await.complete(&response(
            403,
            &[],
            r#"{"message": "Missing Access", "code": 50001}"#,
        ));
    }
    // A shared 429 does not count; a 404 is not invalid.
    permit(&limiter, &guild).await.complete(&response(
        429,
        &[("X-RateLimit-Scope", "shared")],
        r#"{"retry_after": 0.1, "global": false}"#,
    ));
    sleep(Duration::from_millis(100)).await;
    permit(&limiter, &guild)
        .await
        .complete(&ResponseMeta::status(404));
    assert_eq!(limiter.invalid_requests(), 4);
    permit(&limiter, &guild)
        .await
        .complete(&ResponseMeta::status(403));
    assert_eq!(limiter.invalid_requests(), 5);

    let refusal = limiter
        .acquire(&token(), &messages(9), None)
        .await
        .unwrap_err();
    let Refusal::InvalidRequestGuard {
        used,
        line,
        retry_after,
    } = refusal.clone()
    else {
        panic!("expected the guard, got {refusal:?}");
    };
    assert_eq!((used, line), (5, 5));
    assert!(retry_after > Duration::from_secs(590) && retry_after <= Duration::from_secs(600));
    assert!(refusal.to_string().contains("safety line of 5"));
    // Every token of the egress is refused.
    assert!(matches!(
        limiter
            .acquire(&Token::new("other"), &messages(9), None)
            .await,
        Err(Refusal::InvalidRequestGuard { .. })
    ));
    sleep(retry_after).await;
    assert!(limiter.acquire(&token(), &messages(9), None).await.is_ok());
    let snapshot = limiter.snapshot();
    assert!(snapshot.refused.contains(&("invalid_request_guard", 2)));
}

#[tokio::test(start_paused = true)]
async fn a_401_locks_the_token_until_unlocked() {
    let limiter = RateLimiter::new(unbudgeted());
    permit(&limiter, &route("GET", "/users/@me"))
        .await
        .complete(&response(
            401,
            &[],
            r#"{"message": "401: Unauthorized", "code": 0}"#,
        ));
    assert!(limiter.is_locked(&token()));
    assert_eq!(limiter.invalid_requests(), 1);
    for r in [messages(1), route("GET", "/users/@me")] {
        assert_eq!(
            limiter.acquire(&token(), &r, None).await.unwrap_err(),
            Refusal::TokenLocked
        );
    }
    // Other tokens are unaffected.
    assert!(
        limiter
            .acquire(&Token::new("other"), &messages(1), None)
            .await
            .is_ok()
    );
    limiter.unlock(&token());
    assert!(limiter.acquire(&token(), &messages(1), None).await.is_ok());

    // Reconfiguring unlocks too.
    permit(&limiter, &route("GET", "/gateway/bot"))
        .await
        .complete(&ResponseMeta::status(401));
    assert!(limiter.is_locked(&token()));
    limiter.configure_token(
        &token(),
        TokenConfig {
            global_per_second: 50,
        },
    );
    assert!(!limiter.is_locked(&token()));
}

#[tokio::test(start_paused = true)]
async fn a_request_queued_when_the_token_gets_locked_is_refused() {
    let limiter = RateLimiter::new(unbudgeted());
    let route = messages(1);
    let probe = permit(&limiter, &route).await;
    let queued = spawn_acquire(&limiter, &route);
    settle().await;
    probe.complete(&ResponseMeta::status(401));
    assert_eq!(queued.await.unwrap().unwrap_err(), Refusal::TokenLocked);
}

#[tokio::test(start_paused = true)]
async fn a_gone_webhook_fails_fast() {
    let limiter = RateLimiter::new(unbudgeted());
    let hook = route("POST", "/webhooks/10/webhook-token-a");
    let same_hook_message = route("PATCH", "/webhooks/10/webhook-token-a/messages/5");
    let other_hook = route("POST", "/webhooks/11/webhook-token-b");

    // An unknown message is not a gone webhook.
    permit(&limiter, &same_hook_message)
        .await
        .complete(&response(
            404,
            &[],
            r#"{"message": "Unknown Message", "code": 10008}"#,
        ));
    assert!(limiter.acquire(&token(), &hook, None).await.is_ok());

    permit(&limiter, &hook).await.complete(&response(
        404,
        &[],
        r#"{"message": "Unknown Webhook", "code": 10015}"#,
    ));
    for r in [&hook, &same_hook_message] {
        assert_eq!(
            limiter.acquire(&token(), r, None).await.unwrap_err(),
            Refusal::WebhookGone
        );
    }
    assert!(limiter.acquire(&token(), &other_hook, None).await.is_ok());
    // A webhook's 401 is about the webhook token, not the bot's.
    permit(&limiter, &other_hook)
        .await
        .complete(&ResponseMeta::status(401));
    assert!(!limiter.is_locked(&token()));
    assert_eq!(
        limiter
            .acquire(&token(), &other_hook, None)
            .await
            .unwrap_err(),
        Refusal::WebhookGone
    );
}

#[tokio::test(start_paused = true)]
async fn max_wait_refuses_at_once_when_the_wait_is_known() {
    let limiter = RateLimiter::new(Config::default());
    let route = messages(1);
    permit(&limiter, &route)
        .await
        .complete(&ok("h", 5, 0, 60.0));
    let started = Instant::now();
    let refusal = limiter
        .acquire(&token(), &route, Some(Duration::from_secs(5)))
        .await
        .unwrap_err();
    assert_eq!(
        refusal,
        Refusal::WouldWait {
            retry_after: Duration::from_secs(60)
        }
    );
    assert_eq!(refusal.retry_after(), Some(Duration::from_secs(60)));
    assert_eq!(started.elapsed(), Duration::ZERO, "answered at once");
    // The configured default (30 s) applies without a budget of its own.
    assert!(matches!(
        limiter.acquire(&token(), &route, None).await,
        Err(Refusal::WouldWait { .. })
    ));
    // A budget long enough waits.
    limiter
        .acquire(&token(), &route, Some(Duration::from_secs(61)))
        .await
        .unwrap();
    assert_eq!(started.elapsed(), Duration::from_secs(60));
}

#[tokio::test(start_paused = true)]
async fn max_wait_refuses_when_the_budget_runs_out_and_leaves_the_queue_clean() {
    let limiter = RateLimiter::new(unbudgeted());
    let route = messages(1);
    let probe = permit(&limiter, &route).await;
    // Nobody knows how long the probe takes: the budget decides.
    let started = Instant::now();
    let refusal = limiter
        .acquire(&token(), &route, Some(Duration::from_secs(2)))
        .await
        .unwrap_err();
    assert_eq!(started.elapsed(), Duration::from_secs(2));
    assert_eq!(
        refusal,
        Refusal::WouldWait {
            retry_after: Duration::from_secs(2)
        }
    );
    probe.complete(&ok("h", 5, 4, 5.0));
    let started = Instant::now();
    permit(&limiter, &route).await;
    assert_eq!(started.elapsed(), Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn a_dropped_permit_releases_the_bucket() {
    let limiter = RateLimiter::new(unbudgeted());
    let route = messages(1);
    // The probe of an unknown bucket is dropped (connection error): the next goes.
    let probe = permit(&limiter, &route).await;
    let next = spawn_acquire(&limiter, &route);
    settle().await;
    assert!(!next.is_finished());
    drop(probe);
    settle().await;
    assert!(next.is_finished());
    let next = next.await.unwrap().unwrap();
    next.complete(&ok("h", 2, 1, 5.0));

    // A known bucket's last slot, taken and dropped in flight, is not refunded (it may have
    // been sent); the queue then waits for the reset instead of forever.
    drop(permit(&limiter, &route).await);
    let started = Instant::now();
    drop(permit(&limiter, &route).await);
    assert_eq!(started.elapsed(), Duration::from_secs(5));
    // A cancelled acquire leaves no trace either.
    let cancelled = spawn_acquire(&limiter, &route);
    settle().await;
    cancelled.abort();
    let _ = cancelled.await;
    drop(permit(&limiter, &route).await);
}

#[tokio::test(start_paused = true)]
async fn spent_bucket_with_everything_dropped_probes_again() {
    let limiter = RateLimiter::new(unbudgeted());
    let route = messages(1);
    permit(&limiter, &route).await.complete(&ok("h", 2, 2, 1.0));
    sleep(Duration::from_secs(1)).await;
    // A new window starts (reset unknown) and both its slots are dropped in flight.
    let a = permit(&limiter, &route).await;
    let b = permit(&limiter, &route).await;
    let c = spawn_acquire(&limiter, &route);
    settle().await;
    assert!(!c.is_finished());
    drop((a, b));
    settle().await;
    assert!(
        c.is_finished(),
        "nothing left in flight to wait for: probe again"
    );
}

#[tokio::test(start_paused = true)]
async fn routes_without_limits_flow_freely() {
    let limiter = RateLimiter::new(unbudgeted());
    let gateway = route("GET", "/gateway");
    permit(&limiter, &gateway)
        .await
        .complete(&ResponseMeta::status(200));
    let started = Instant::now();
    let permits: Vec<_> = permits_in_a_row(&limiter, &gateway, 10).await;
    assert_eq!(permits.len(), 10);
    assert_eq!(started.elapsed(), Duration::ZERO);
}

async fn permits_in_a_row(limiter: &RateLimiter, route: &Route, n: usize) -> Vec<Permit> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(permit(limiter, route).await);
    }
    out
}

#[tokio::test(start_paused = true)]
async fn the_token_never_shows() {
    let limiter = RateLimiter::new(Config {
        invalid_request_line: 1,
        ..unbudgeted()
    });
    let p = permit(&limiter, &messages(1)).await;
    let mut printed = vec![
        format!("{limiter:?}"),
        format!("{p:?}"),
        format!(
            "{:?} {}",
            limiter.fingerprint(&token()),
            limiter.fingerprint(&token())
        ),
    ];
    p.complete(&ResponseMeta::status(401));
    printed.push(format!("{:?}", limiter.snapshot()));
    for refusal in [
        Refusal::TokenLocked,
        Refusal::WebhookGone,
        Refusal::WouldWait {
            retry_after: Duration::from_secs(1),
        },
    ] {
        printed.push(format!("{refusal} {refusal:?}"));
    }
    let err = limiter
        .acquire_path(
            &token(),
            "GET",
            "/webhooks/1/super-secret-token-value/x",
            None,
        )
        .await
        .unwrap_err();
    printed.push(format!("{err} {err:?}"));
    let err = limiter
        .acquire_path(
            &token(),
            "GET",
            "/webhooks/x/super-secret-token-value",
            None,
        )
        .await
        .unwrap_err();
    printed.push(format!("{err} {err:?}"));
    for text in printed {
        assert!(!text.contains("super-secret"), "{text}");
        assert!(!text.contains("MTIzNDU2"), "{text}");
    }
}

#[tokio::test(start_paused = true)]
async fn snapshot_reports_waits_and_budgets() {
    let limiter = RateLimiter::new(unbudgeted());
    let route = messages(1);
    permit(&limiter, &route).await.complete(&ok("h", 1, 0, 2.0));
    permit(&limiter, &route).await.complete(&ok("h", 1, 0, 2.0));
    let snapshot = limiter.snapshot();
    let wait = snapshot
        .queue_waits
        .iter()
        .find(|w| w.route == "POST /channels/{channel_id}/messages")
        .unwrap();
    assert_eq!(wait.count, 2);
    assert_eq!(wait.max, Duration::from_secs(2));
    assert_eq!(snapshot.tokens.len(), 1);
    assert_eq!(snapshot.tokens[0].global_limit, 50);
    assert_eq!(snapshot.tokens[0].global_available, 49);
    assert_eq!(snapshot.tokens[0].queued, 2);
    assert_eq!(snapshot.tokens[0].waiting, 0);
    assert_eq!(snapshot.invalid_request_line, 8_000);
    assert!(snapshot.rate_limited.contains(&("global", 0)));
}

#[tokio::test(start_paused = true)]
async fn queued_counts_a_request_as_soon_as_it_is_in_line() {
    let limiter = RateLimiter::new(unbudgeted());
    let route = messages(1);
    let first = permit(&limiter, &route).await;
    // An unknown bucket lets one request go alone: the second waits in line, and is counted
    // as queued (and waiting) before it gets its permit.
    let second = {
        let limiter = limiter.clone();
        let route = route.clone();
        tokio::spawn(async move { limiter.acquire(&token(), &route, None).await.map(drop) })
    };
    tokio::task::yield_now().await;
    let snapshot = limiter.snapshot();
    assert_eq!(snapshot.tokens[0].queued, 2);
    assert_eq!(snapshot.tokens[0].waiting, 1);
    first.complete(&ok("h", 5, 4, 1.0));
    second.await.unwrap().unwrap();
    assert_eq!(limiter.snapshot().tokens[0].waiting, 0);
    assert_eq!(limiter.snapshot().tokens[0].queued, 2);
}

#[tokio::test(start_paused = true)]
async fn idle_buckets_are_forgotten() {
    let limiter = RateLimiter::new(unbudgeted());
    limiter.configure_token(
        &token(),
        TokenConfig {
            global_per_second: 100_000,
        },
    );
    let buckets = |limiter: &RateLimiter| limiter.snapshot().tokens[0].buckets;
    for channel in 0..1024 {
        permit(&limiter, &messages(channel))
            .await
            .complete(&ok("create", 5, 4, 1.0));
    }
    assert_eq!(buckets(&limiter), 1024);
    sleep(Duration::from_secs(2)).await;
    // A lookup with 1,024 buckets remembered sweeps those whose window is over and that
    // nobody holds.
    let held = permit(&limiter, &messages(5000)).await;
    assert_eq!(buckets(&limiter), 1);
    held.complete(&ok("create", 5, 4, 1.0));

    // From then on a sweep waits for the table to double from what the last one kept
    // (1,024 at least): busy buckets are not walked again and again.
    for channel in 0..1023 {
        permit(&limiter, &messages(channel))
            .await
            .complete(&ok("create", 5, 4, 1.0));
    }
    assert_eq!(buckets(&limiter), 1024);
    // Still inside their windows: the sweep keeps them all, and the next waits for 2,048.
    let _ = permit(&limiter, &messages(6000)).await;
    assert_eq!(buckets(&limiter), 1025);
    sleep(Duration::from_secs(2)).await;
    let _ = permit(&limiter, &messages(6001)).await;
    assert_eq!(
        buckets(&limiter),
        1026,
        "not swept before the table doubles"
    );
    for channel in 7000..8022 {
        let _ = permit(&limiter, &messages(channel)).await;
    }
    assert_eq!(buckets(&limiter), 2048);
    let _ = permit(&limiter, &messages(9000)).await;
    assert_eq!(buckets(&limiter), 1, "idle ones forgotten once it doubled");
}

#[tokio::test(start_paused = true)]
async fn bad_routes_are_refused() {
    let limiter = RateLimiter::new(unbudgeted());
    let err = limiter
        .acquire_path(&token(), "GET", "/channels/not-a-number/messages", None)
        .await
        .unwrap_err();
    assert!(matches!(err, Refusal::BadRoute(_)));
    assert!(err.to_string().contains("not a Discord API route"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_tasks_on_two_threads_never_deadlock() {
    let limiter = RateLimiter::new(unbudgeted());
    let mut tasks = Vec::new();
    for i in 0..200u64 {
        let limiter = limiter.clone();
        tasks.push(tokio::spawn(async move {
            let route = messages(i % 7);
            let permit = limiter.acquire(&token(), &route, None).await.unwrap();
            match i % 4 {
                0 => drop(permit),
                1 => {
                    permit.complete(&ok("h", 100, 99, 0.05));
                }
                2 => {
                    permit.complete(&ok("other", 100, 50, 0.05));
                }
                _ => {
                    permit.complete(&ResponseMeta::status(200));
                }
            }
        }));
    }
    tokio::time::timeout(Duration::from_secs(30), async {
        for task in tasks {
            task.await.unwrap();
        }
    })
    .await
    .expect("every request got its turn");
}

#[tokio::test(start_paused = true)]
async fn a_token_taken_over_pauses_and_relearns_its_buckets() {
    let limiter = RateLimiter::new(unbudgeted());
    let token = token();
    limiter
        .acquire(&token, &messages(1), None)
        .await
        .unwrap()
        .complete(&ok("b1", 5, 4, 5.0));
    let start = Instant::now();
    limiter.take_over(&token, Duration::from_millis(1_500));
    assert_eq!(limiter.global_available(&token), 0);
    let first = limiter.acquire(&token, &messages(1), None).await.unwrap();
    assert_eq!(start.elapsed(), Duration::from_millis(1_500));
    // The bucket is unknown again: its second request waits for the first one's answer.
    let second = {
        let limiter = limiter.clone();
        let token = token.clone();
        tokio::spawn(async move { limiter.acquire(&token, &messages(1), None).await.map(drop) })
    };
    sleep(Duration::from_millis(100)).await;
    assert!(!second.is_finished());
    first.complete(&ok("b1", 5, 3, 5.0));
    second.await.unwrap().unwrap();
}

/// The window of `channel`'s messages bucket as another keeper last heard it.
fn known(channel: u64, remaining: u32, reset_in: Duration) -> super::KnownWindow {
    super::KnownWindow {
        route: messages(channel).bucket_key(),
        major: messages(channel).major(),
        hash: Some("b1".to_owned()),
        limit: 5,
        remaining,
        reset_at: Instant::now() + reset_in,
    }
}

#[tokio::test(start_paused = true)]
async fn a_takeover_waits_out_a_window_the_previous_keeper_spent() {
    let limiter = RateLimiter::new(unbudgeted());
    let token = token();
    let start = Instant::now();
    // Spent by the previous keeper, resetting in 4 s: without this, the first request would
    // go alone at once and meet Discord's 429.
    limiter.take_over_with(
        &token,
        Duration::from_millis(1_500),
        &[known(1, 0, Duration::from_secs(4))],
    );
    let first = limiter.acquire(&token, &messages(1), None).await.unwrap();
    assert_eq!(start.elapsed(), Duration::from_secs(4));
    first.complete(&ok("b1", 5, 4, 5.0));
    // The route's hash was learned with the window: another channel of it is its own bucket.
    let other = limiter.acquire(&token, &messages(2), None).await.unwrap();
    assert_eq!(
        start.elapsed(),
        Duration::from_secs(4),
        "another channel does not wait"
    );
    drop(other);
}

#[tokio::test(start_paused = true)]
async fn a_takeover_keeps_a_margin_for_answers_nobody_heard() {
    let limiter = RateLimiter::new(Config {
        sequential_buckets: true,
        ..unbudgeted()
    });
    let token = token();
    let start = Instant::now();
    // Two routes sharing the bucket, reported with different counts: the fewest wins.
    let mut shared = known(1, 4, Duration::from_secs(3));
    shared.route = route("PATCH", "/channels/1/messages/5").bucket_key();
    limiter.take_over_with(
        &token,
        Duration::ZERO,
        &[known(1, 3, Duration::from_secs(3)), shared],
    );
    // 3 remaining, less the margin of 2: one goes now (and gets no answer), the next waits
    // for the reset.
    drop(limiter.acquire(&token, &messages(1), None).await.unwrap());
    assert_eq!(start.elapsed(), Duration::ZERO);
    drop(limiter.acquire(&token, &messages(1), None).await.unwrap());
    assert_eq!(start.elapsed(), Duration::from_secs(3));
    // A window already over is not taken on: its bucket starts unknown.
    limiter.take_over_with(&token, Duration::ZERO, &[known(1, 0, Duration::ZERO)]);
    drop(limiter.acquire(&token, &messages(1), None).await.unwrap());
    assert_eq!(start.elapsed(), Duration::from_secs(3));
}

#[tokio::test(start_paused = true)]
async fn without_sequential_buckets_a_takeover_waits_out_every_open_window() {
    let limiter = RateLimiter::new(Config {
        sequential_buckets: false,
        ..unbudgeted()
    });
    let token = token();
    let start = Instant::now();
    // The previous keeper may have had all 4 in flight.
    limiter.take_over_with(
        &token,
        Duration::ZERO,
        &[known(1, 4, Duration::from_secs(2))],
    );
    drop(limiter.acquire(&token, &messages(1), None).await.unwrap());
    assert_eq!(start.elapsed(), Duration::from_secs(2));
}
