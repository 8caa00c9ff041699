//! Discord's REST rate limits, decided before a request is sent and learned from every answer.
//!
//! [`RateLimiter::acquire`] waits (FIFO per bucket) until a request may go and hands out a
//! [`Permit`]; the caller sends the request and gives the answer to [`Permit::complete`], which
//! says whether to retry. Dropping a permit instead (a connection error, a client gone) frees its
//! slot. See the crate's README for the rules and the decisions where Discord's docs are silent.

mod bucket;
mod error;
mod global;
mod invalid;
mod response;
mod route;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use shardyard_protocol::Token;
use tokio::time::Instant;

use bucket::{Bucket, Head, Observation, Slot, later};
use global::Global;
use invalid::InvalidLog;

pub use error::Refusal;
pub use response::{ResponseMeta, Scope, header};
pub use route::{Major, Method, Route, RouteError, RouteKind, SecretFingerprint};

/// Discord's "Unknown Webhook" error code.
const UNKNOWN_WEBHOOK: u64 = 10015;
/// Buckets a token's table holds before its first sweep of idle ones. After a sweep, the next
/// comes once the table has doubled from what the sweep kept: the walk over every bucket is
/// then paid once per that many new buckets, not by every 1,024th request (which put a few
/// hundred µs on one request in a thousand with ~8,000 buckets, all of them busy).
const FIRST_SWEEP_AT: usize = 1024;
/// Webhooks remembered as gone, at most (then the memory starts afresh).
const MAX_GONE_WEBHOOKS: usize = 65_536;

/// Locks a std mutex, ignoring poisoning: every critical section here leaves the state
/// consistent at each step, and none can panic on input.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The engine's settings. `Default` is Discord's documented numbers with margins.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Requests per second per token, unless [`RateLimiter::configure_token`] says otherwise
    /// (Discord's default is 50; larger bots get more on request). At least 1.
    pub global_per_second: u32,
    /// Invalid requests (401, 403, non-shared 429) per window at which the engine refuses
    /// locally. Discord's Cloudflare bans an IP at 10,000 per 10 minutes.
    pub invalid_request_line: u32,
    /// The invalid-request window.
    pub invalid_request_window: Duration,
    /// The wait budget of an [`RateLimiter::acquire`] called without one; `None` waits as long
    /// as it takes.
    pub default_max_wait: Option<Duration>,
    /// How long to wait after a 429 that says nothing about how long (no `retry_after`, no
    /// `Retry-After`, no `X-RateLimit-Reset-After`).
    pub fallback_retry_after: Duration,
    /// One request in flight per bucket at a time (the next goes when the previous is answered
    /// or dropped), as discord.js and twilight do: requests of a bucket then reach Discord in
    /// the order they queued. Off, a known bucket lets all its remaining requests go at once,
    /// and those race each other on the network.
    pub sequential_buckets: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            global_per_second: 50,
            invalid_request_line: 8_000,
            invalid_request_window: Duration::from_secs(600),
            default_max_wait: Some(Duration::from_secs(30)),
            fallback_retry_after: Duration::from_secs(1),
            sequential_buckets: false,
        }
    }
}

/// Settings of one token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenConfig {
    /// Requests per second (the global limit). At least 1.
    pub global_per_second: u32,
}

/// What identifies a token inside the engine: a keyed hash (random per process), never the
/// token. Fit for logs and metric labels.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TokenFingerprint(u64);

impl fmt::Debug for TokenFingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TokenFingerprint({:016x})", self.0)
    }
}

impl fmt::Display for TokenFingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// What the caller does after a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Completion {
    /// The answer stands: pass it on.
    Done,
    /// A 429: wait `after`, then acquire again and resend (the engine already holds back the
    /// bucket, or for `Scope::Global` the whole token, for that long).
    RetryAfter {
        /// How long to wait.
        after: Duration,
        /// Whose limit it was.
        scope: Scope,
    },
}

/// How long requests of one route waited in the engine.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct QueueWait {
    /// `METHOD /template` (bounded).
    pub route: String,
    /// Permits handed out.
    pub count: u64,
    /// Their waits added up.
    pub total: Duration,
    /// The longest wait.
    pub max: Duration,
}

/// One token's live numbers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenSnapshot {
    /// Which token.
    pub fingerprint: TokenFingerprint,
    /// Its global limit per second.
    pub global_limit: u32,
    /// Requests it could send right now under the global limit.
    pub global_available: u32,
    /// How long a global 429 still pauses it.
    pub paused_for: Duration,
    /// Whether a 401 locked it.
    pub locked: bool,
    /// Buckets remembered.
    pub buckets: usize,
    /// Requests queued in its buckets.
    pub waiting: usize,
    /// Requests that have joined one of its buckets' queues since the engine started
    /// (monotonic): with `waiting`, it lets an observer know a request is in line.
    pub queued: u64,
}

/// Everything the proxy exports as metrics. Labels are bounded: route templates, scopes,
/// refusal kinds, token fingerprints.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Snapshot {
    /// 429s seen, by scope (`user`, `global`, `shared`).
    pub rate_limited: Vec<(&'static str, u64)>,
    /// Requests refused locally, by [`Refusal::kind`].
    pub refused: Vec<(&'static str, u64)>,
    /// Invalid requests in the current window.
    pub invalid_requests: u32,
    /// The line at which the engine refuses.
    pub invalid_request_line: u32,
    /// Waits per route template, sorted by route.
    pub queue_waits: Vec<QueueWait>,
    /// Per token, sorted by fingerprint.
    pub tokens: Vec<TokenSnapshot>,
}

#[derive(Debug, Default)]
struct Stats {
    rate_limited: HashMap<&'static str, u64>,
    refused: HashMap<&'static str, u64>,
    waits: HashMap<String, QueueWait>,
}

/// Where a route's requests queue: a learned bucket (hash + top-level resource) or, until
/// Discord names it, the route's own provisional one.
#[derive(Clone, PartialEq, Eq, Hash)]
enum BucketId {
    Learned(Arc<str>, Major),
    Route(String, Major),
}

/// Route → bucket hash, and the buckets, of one token. `Debug` shows sizes only (bucket keys
/// hold unknown path segments verbatim).
#[derive(Default)]
struct Table {
    routes: HashMap<String, Arc<str>>,
    buckets: HashMap<BucketId, Arc<Bucket>>,
    /// The size at which the next lookup sweeps idle buckets (0: [`FIRST_SWEEP_AT`]).
    sweep_at: usize,
    /// [`Config::sequential_buckets`].
    sequential: bool,
}

impl fmt::Debug for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Table")
            .field("routes", &self.routes.len())
            .field("buckets", &self.buckets.len())
            .finish_non_exhaustive()
    }
}

impl Table {
    /// The bucket a request of `route` queues in.
    fn resolve(&mut self, route: &Route, now: Instant) -> Arc<Bucket> {
        if self.buckets.len() >= self.sweep_at.max(FIRST_SWEEP_AT) {
            self.sweep(now);
        }
        let key = route.bucket_key();
        let major = route.major();
        let provisional = BucketId::Route(key.clone(), major);
        let id = match self.routes.get(&key) {
            Some(hash) => {
                let learned = BucketId::Learned(Arc::clone(hash), major);
                // A probe of this route and resource may still be out under the provisional
                // bucket: queue behind it rather than send a second probe.
                if !self.buckets.contains_key(&learned) && self.buckets.contains_key(&provisional) {
                    provisional
                } else {
                    learned
                }
            }
            None => provisional,
        };
        let hash = match &id {
            BucketId::Learned(hash, _) => Some(Arc::clone(hash)),
            BucketId::Route(..) => None,
        };
        Arc::clone(
            self.buckets
                .entry(id)
                .or_insert_with(|| Arc::new(Bucket::new(hash, self.sequential))),
        )
    }

    /// Forgets buckets nobody holds that have nothing running, and sets when to look again.
    fn sweep(&mut self, now: Instant) {
        self.buckets
            .retain(|_, bucket| Arc::strong_count(bucket) > 1 || !lock(&bucket.state).idle(now));
        self.sweep_at = self.buckets.len().saturating_mul(2);
    }

    /// A response of `route`, sent through `from`, named bucket `hash`: remembers it and
    /// returns the bucket the request was counted in.
    fn learn(&mut self, route: &Route, from: &Arc<Bucket>, hash: &str) -> Arc<Bucket> {
        let key = route.bucket_key();
        let major = route.major();
        let hash: Arc<str> = match self.routes.get(&key) {
            Some(known) if **known == *hash => Arc::clone(known),
            _ => {
                let hash: Arc<str> = Arc::from(hash);
                self.routes.insert(key.clone(), Arc::clone(&hash));
                hash
            }
        };
        let from_hash = lock(&from.state).hash.clone();
        if from_hash.as_deref() == Some(&*hash) {
            return Arc::clone(from);
        }
        let learned = BucketId::Learned(Arc::clone(&hash), major);
        if from_hash.is_none() {
            // The route's provisional bucket: it is this bucket from now on, or, if another
            // route already knew the bucket, its waiters move there.
            let provisional = BucketId::Route(key, major);
            if self
                .buckets
                .get(&provisional)
                .is_some_and(|b| Arc::ptr_eq(b, from))
            {
                self.buckets.remove(&provisional);
            }
            match self.buckets.get(&learned) {
                None => {
                    lock(&from.state).hash = Some(hash);
                    self.buckets.insert(learned, Arc::clone(from));
                    return Arc::clone(from);
                }
                Some(existing) => {
                    let existing = Arc::clone(existing);
                    if !Arc::ptr_eq(&existing, from) {
                        lock(&from.state).migrated_to = Some(Arc::clone(&existing));
                        from.wake();
                    }
                    return existing;
                }
            }
        }
        // The route moved to another bucket: later requests queue there.
        Arc::clone(
            self.buckets
                .entry(learned)
                .or_insert_with(|| Arc::new(Bucket::new(Some(hash), self.sequential))),
        )
    }
}

/// One token's state.
#[derive(Debug)]
struct TokenState {
    fingerprint: TokenFingerprint,
    locked: AtomicBool,
    queued: AtomicU64,
    global: Global,
    table: Mutex<Table>,
}

struct Inner {
    config: Config,
    keys: RandomState,
    tokens: Mutex<HashMap<TokenFingerprint, Arc<TokenState>>>,
    /// Invalid requests of this engine's one egress. Per IP, when the proxy gets several.
    invalid: Mutex<InvalidLog>,
    gone_webhooks: Mutex<HashSet<(u64, SecretFingerprint)>>,
    stats: Mutex<Stats>,
}

/// The rate-limit engine: cheap to clone, shared by every request of every token.
#[derive(Clone)]
pub struct RateLimiter {
    inner: Arc<Inner>,
}

impl fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimiter")
            .field("config", &self.inner.config)
            .field("tokens", &lock(&self.inner.tokens).len())
            .finish_non_exhaustive()
    }
}

impl Default for RateLimiter {
    fn default() -> Self {
        Self::new(Config::default())
    }
}

/// Requests a previous keeper of a token may have had out in one bucket whose answers nobody
/// heard: the one in flight (with [`Config::sequential_buckets`], as in the proxy), and one
/// more for an answer whose report was still in the keeper's buffers when it died. Without
/// sequential buckets a window that has not reset counts as spent.
pub const TAKEOVER_MARGIN: u32 = 2;

/// What a keeper of a token last heard of one of its buckets' windows from Discord, handed to
/// the next keeper ([`RateLimiter::take_over_with`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownWindow {
    /// The route's [`Route::bucket_key`] (method and template).
    pub route: String,
    /// The route's top-level resource.
    pub major: Major,
    /// `X-RateLimit-Bucket`, if the answer named one.
    pub hash: Option<String>,
    /// `X-RateLimit-Limit`.
    pub limit: u32,
    /// `X-RateLimit-Remaining`.
    pub remaining: u32,
    /// When the window resets, on this process's clock.
    pub reset_at: Instant,
}

/// Leave to send one request. Send it, then give the answer to [`Permit::complete`]; dropping
/// the permit instead frees its slot so the queue moves on.
pub struct Permit {
    inner: Arc<Inner>,
    state: Arc<TokenState>,
    route: Route,
    slot: Slot,
    /// The global-limit slot (none for interactions), released when the permit completes or
    /// drops.
    global: Option<GlobalSlot>,
    waited: Duration,
}

/// A request's slot under its token's global limit: held from the permit until the answer (or
/// the permit's drop), then counted for one more second.
struct GlobalSlot(Arc<TokenState>);

impl Drop for GlobalSlot {
    fn drop(&mut self) {
        lock(&self.0.global.state).release(Instant::now());
        self.0.global.wake();
    }
}

impl fmt::Debug for Permit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permit")
            .field("token", &self.state.fingerprint)
            .field("route", &self.route)
            .field("waited", &self.waited)
            .finish_non_exhaustive()
    }
}

impl RateLimiter {
    /// An engine with `config`.
    #[must_use]
    pub fn new(config: Config) -> Self {
        let invalid = InvalidLog::new(config.invalid_request_window, config.invalid_request_line);
        Self {
            inner: Arc::new(Inner {
                config,
                keys: RandomState::new(),
                tokens: Mutex::new(HashMap::new()),
                invalid: Mutex::new(invalid),
                gone_webhooks: Mutex::new(HashSet::new()),
                stats: Mutex::new(Stats::default()),
            }),
        }
    }

    /// The engine's settings.
    #[must_use]
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// The fingerprint the engine knows `token` by (in logs, metrics and snapshots).
    #[must_use]
    pub fn fingerprint(&self, token: &Token) -> TokenFingerprint {
        TokenFingerprint(self.inner.keys.hash_one(token.expose()))
    }

    /// Sets `token`'s global limit, and unlocks it.
    pub fn configure_token(&self, token: &Token, config: TokenConfig) {
        let state = self.inner.token_state(self.fingerprint(token));
        lock(&state.global.state).set_per_second(config.global_per_second);
        state.locked.store(false, Ordering::Relaxed);
        state.global.wake();
    }

    /// Starts `token` afresh, as a replica does when the token's limits become its own while
    /// another replica kept them until now: every bucket is forgotten (each lets one request go
    /// alone to learn its counters from Discord), and the global limit pauses for `pause`, so
    /// the previous keeper's last requests have left Discord's sliding second before this
    /// engine sends. Routes' learned bucket hashes are kept; they do not change.
    pub fn take_over(&self, token: &Token, pause: Duration) {
        self.take_over_with(token, pause, &[]);
    }

    /// Starts `token` afresh as [`RateLimiter::take_over`] does, but with what the previous
    /// keeper last heard from Discord: each window in `known` that has not reset yet becomes
    /// its bucket's state, less [`TAKEOVER_MARGIN`] for requests the previous keeper may have
    /// had out whose answers nobody heard. A bucket the previous keeper had spent is then
    /// waited out instead of probed with a request Discord would answer 429.
    pub fn take_over_with(&self, token: &Token, pause: Duration, known: &[KnownWindow]) {
        let now = Instant::now();
        let state = self.inner.token_state(self.fingerprint(token));
        {
            let mut table = lock(&state.table);
            table.buckets.clear();
            // Without sequential buckets the previous keeper may have had a whole window's
            // requests in flight: a window not over yet counts as spent.
            let margin = if table.sequential {
                TAKEOVER_MARGIN
            } else {
                u32::MAX
            };
            for window in known.iter().filter(|w| w.reset_at > now) {
                let hash: Option<Arc<str>> = window.hash.as_deref().map(Arc::from);
                let id = match &hash {
                    Some(hash) => {
                        table.routes.insert(window.route.clone(), Arc::clone(hash));
                        BucketId::Learned(Arc::clone(hash), window.major)
                    }
                    None => BucketId::Route(window.route.clone(), window.major),
                };
                let sequential = table.sequential;
                let bucket = table
                    .buckets
                    .entry(id)
                    .or_insert_with(|| Arc::new(Bucket::new(hash, sequential)));
                lock(&bucket.state).assume(
                    window.limit,
                    window.remaining.saturating_sub(margin),
                    window.reset_at,
                    now,
                );
            }
        }
        lock(&state.global.state).pause(now + pause);
        state.global.wake();
    }

    /// Lifts a 401 lock of `token`.
    pub fn unlock(&self, token: &Token) {
        let state = self.inner.token_state(self.fingerprint(token));
        state.locked.store(false, Ordering::Relaxed);
    }

    /// Whether a 401 locked `token`.
    #[must_use]
    pub fn is_locked(&self, token: &Token) -> bool {
        lock(&self.inner.tokens)
            .get(&self.fingerprint(token))
            .is_some_and(|s| s.locked.load(Ordering::Relaxed))
    }

    /// Requests `token` could send right now under its global limit.
    #[must_use]
    pub fn global_available(&self, token: &Token) -> u32 {
        let state = self.inner.token_state(self.fingerprint(token));
        lock(&state.global.state).available(Instant::now())
    }

    /// Invalid requests (401, 403, non-shared 429) in the current window.
    #[must_use]
    pub fn invalid_requests(&self) -> u32 {
        lock(&self.inner.invalid).count(Instant::now())
    }

    /// Classifies `method` and `path` and acquires a permit for it: [`Route::parse`], then
    /// [`RateLimiter::acquire`].
    ///
    /// # Errors
    /// [`Refusal::BadRoute`] for a malformed request, else as [`RateLimiter::acquire`].
    pub async fn acquire_path(
        &self,
        token: &Token,
        method: &str,
        path: &str,
        max_wait: Option<Duration>,
    ) -> Result<Permit, Refusal> {
        let route = Route::parse(method, path).inspect_err(|_| self.inner.refused("bad_route"))?;
        self.acquire(token, &route, max_wait).await
    }

    /// Waits until a request of `route` with `token` may be sent, in FIFO order per bucket,
    /// then under the token's global limit (interaction endpoints skip it). `max_wait` is this
    /// request's budget (`None`: the configured default): a request that would wait longer is
    /// refused at once when the wait is known ahead, or when the budget runs out.
    ///
    /// Cancel-safe: dropping the future leaves the queue as if the request never came.
    ///
    /// # Errors
    /// A [`Refusal`]: [`Refusal::WouldWait`] past the budget, [`Refusal::InvalidRequestGuard`]
    /// at the invalid-request safety line, [`Refusal::TokenLocked`] after a 401,
    /// [`Refusal::WebhookGone`] after a webhook's 404.
    pub async fn acquire(
        &self,
        token: &Token,
        route: &Route,
        max_wait: Option<Duration>,
    ) -> Result<Permit, Refusal> {
        let inner = &self.inner;
        let started = Instant::now();
        let state = inner.token_state(self.fingerprint(token));
        inner.precheck(&state, route, started)?;
        let bucket = lock(&state.table).resolve(route, started);
        let budget = max_wait.or(inner.config.default_max_wait);
        if let Some(budget) = budget {
            let estimate = inner.estimate(&state, &bucket, route, started);
            if estimate > budget {
                inner.refused("would_wait");
                return Err(Refusal::WouldWait {
                    retry_after: estimate,
                });
            }
        }
        let deadline = budget.and_then(|b| started.checked_add(b));
        let turn = Arc::clone(inner).wait_turn(Arc::clone(&state), bucket, route.clone(), started);
        let permit = match (deadline, budget) {
            (Some(deadline), Some(budget)) => match tokio::time::timeout_at(deadline, turn).await {
                Ok(permit) => permit,
                Err(_elapsed) => {
                    let now = Instant::now();
                    let bucket = lock(&state.table).resolve(route, now);
                    let estimate = inner.estimate(&state, &bucket, route, now);
                    inner.refused("would_wait");
                    return Err(Refusal::WouldWait {
                        retry_after: if estimate.is_zero() { budget } else { estimate },
                    });
                }
            },
            _ => turn.await,
        }?;
        Ok(permit)
    }

    /// Live numbers for metrics.
    #[must_use]
    pub fn snapshot(&self) -> Snapshot {
        let now = Instant::now();
        let inner = &self.inner;
        let (invalid_requests, invalid_request_line) = {
            let mut invalid = lock(&inner.invalid);
            (invalid.count(now), invalid.line())
        };
        let states: Vec<Arc<TokenState>> = lock(&inner.tokens).values().cloned().collect();
        let mut tokens: Vec<TokenSnapshot> = states
            .iter()
            .map(|state| {
                let (global_limit, global_available, paused_for) = {
                    let mut global = lock(&state.global.state);
                    (
                        global.per_second(),
                        global.available(now),
                        global.paused_for(now),
                    )
                };
                let (buckets, waiting) = {
                    let table = lock(&state.table);
                    let waiting = table.buckets.values().map(|b| b.waiting()).sum();
                    (table.buckets.len(), waiting)
                };
                TokenSnapshot {
                    fingerprint: state.fingerprint,
                    global_limit,
                    global_available,
                    paused_for,
                    locked: state.locked.load(Ordering::Relaxed),
                    buckets,
                    waiting,
                    queued: state.queued.load(Ordering::Relaxed),
                }
            })
            .collect();
        tokens.sort_by_key(|t| t.fingerprint.0);
        let stats = lock(&inner.stats);
        let mut rate_limited: Vec<_> = ["user", "global", "shared"]
            .into_iter()
            .map(|scope| (scope, stats.rate_limited.get(scope).copied().unwrap_or(0)))
            .collect();
        rate_limited.sort_unstable();
        let mut refused: Vec<_> = stats.refused.iter().map(|(k, v)| (*k, *v)).collect();
        refused.sort_unstable();
        let mut queue_waits: Vec<QueueWait> = stats.waits.values().cloned().collect();
        queue_waits.sort_by(|a, b| a.route.cmp(&b.route));
        Snapshot {
            rate_limited,
            refused,
            invalid_requests,
            invalid_request_line,
            queue_waits,
            tokens,
        }
    }
}

impl Inner {
    fn token_state(&self, fingerprint: TokenFingerprint) -> Arc<TokenState> {
        let mut tokens = lock(&self.tokens);
        Arc::clone(tokens.entry(fingerprint).or_insert_with(|| {
            Arc::new(TokenState {
                fingerprint,
                locked: AtomicBool::new(false),
                queued: AtomicU64::new(0),
                global: Global::new(self.config.global_per_second),
                table: Mutex::new(Table {
                    sequential: self.config.sequential_buckets,
                    ..Table::default()
                }),
            })
        }))
    }

    fn refused(&self, kind: &'static str) {
        *lock(&self.stats).refused.entry(kind).or_default() += 1;
    }

    /// The refusals that need no waiting to decide.
    fn precheck(&self, state: &TokenState, route: &Route, now: Instant) -> Result<(), Refusal> {
        let refusal = if state.locked.load(Ordering::Relaxed) {
            Some(Refusal::TokenLocked)
        } else if let (
            true,
            Major::Webhook {
                id,
                token: Some(fp),
            },
        ) = (route.is_webhook_with_token(), route.major())
            && lock(&self.gone_webhooks).contains(&(id, fp))
        {
            Some(Refusal::WebhookGone)
        } else {
            let mut invalid = lock(&self.invalid);
            invalid
                .check(now)
                .err()
                .map(|retry_after| Refusal::InvalidRequestGuard {
                    used: invalid.count(now),
                    line: invalid.line(),
                    retry_after,
                })
        };
        match refusal {
            None => Ok(()),
            Some(refusal) => {
                self.refused(refusal.kind());
                Err(refusal)
            }
        }
    }

    /// How long a request arriving now would wait, as far as is known.
    fn estimate(
        &self,
        state: &TokenState,
        bucket: &Bucket,
        route: &Route,
        now: Instant,
    ) -> Duration {
        let global = if route.is_interaction() {
            Duration::ZERO
        } else {
            lock(&state.global.state).paused_for(now)
        };
        let ahead = bucket.waiting();
        global.max(lock(&bucket.state).estimate(now, ahead))
    }

    /// Queues for the bucket, then for the global limit, and hands out the permit.
    async fn wait_turn(
        self: Arc<Self>,
        state: Arc<TokenState>,
        mut bucket: Arc<Bucket>,
        route: Route,
        started: Instant,
    ) -> Result<Permit, Refusal> {
        let mut waiting = bucket.enter();
        state.queued.fetch_add(1, Ordering::Relaxed);
        let mut turn = bucket.turn().await;
        let mut slot = loop {
            match bucket.wait_head().await {
                Head::Slot(slot) => break slot,
                Head::Migrated(next) => {
                    // Queue in the other bucket before leaving this one, so the waiters behind
                    // follow in order.
                    let next_waiting = next.enter();
                    let next_turn = next.turn().await;
                    turn = next_turn;
                    waiting = next_waiting;
                    bucket = next;
                }
            }
        };
        let global_turn = if route.is_interaction() {
            None
        } else {
            Some(state.global.wait_ready().await)
        };
        let now = Instant::now();
        // A 401, a webhook's 404 or the invalid-request line may have come while waiting.
        self.precheck(&state, &route, now)?;
        let global = global_turn.is_some().then(|| {
            lock(&state.global.state).take();
            GlobalSlot(Arc::clone(&state))
        });
        slot.mark_sent();
        drop(global_turn);
        drop(turn);
        drop(waiting);
        let waited = now.saturating_duration_since(started);
        {
            let mut stats = lock(&self.stats);
            let label = format!("{} {}", route.method(), route.template());
            let entry = stats
                .waits
                .entry(label.clone())
                .or_insert_with(|| QueueWait {
                    route: label,
                    ..QueueWait::default()
                });
            entry.count += 1;
            entry.total = entry.total.saturating_add(waited);
            entry.max = entry.max.max(waited);
        }
        Ok(Permit {
            inner: self,
            state,
            route,
            slot,
            global,
            waited,
        })
    }

    fn record_invalid(&self, now: Instant) {
        let count = {
            let mut invalid = lock(&self.invalid);
            invalid.record(now);
            invalid.count(now)
        };
        let line = self.config.invalid_request_line;
        if count == line {
            tracing::error!(
                count,
                line,
                "invalid-request safety line reached: refusing requests locally"
            );
        }
    }
}

impl Permit {
    /// How long the request waited for this permit.
    #[must_use]
    pub fn waited(&self) -> Duration {
        self.waited
    }

    /// The route it is for.
    #[must_use]
    pub fn route(&self) -> &Route {
        &self.route
    }

    /// Learns from Discord's answer and says what to do with it: pass it on, or wait and retry
    /// (a 429).
    pub fn complete(self, response: &ResponseMeta) -> Completion {
        let Self {
            inner,
            state,
            route,
            slot,
            global,
            waited: _,
        } = self;
        let now = Instant::now();
        let status = response.status;
        let scope = (status == 429).then(|| scope_of_429(response));

        if status == 401 || status == 403 || matches!(scope, Some(Scope::User | Scope::Global)) {
            inner.record_invalid(now);
        }
        if status == 401
            && route.kind() == RouteKind::Bot
            && !state.locked.swap(true, Ordering::Relaxed)
        {
            tracing::error!(
                token = %state.fingerprint,
                route = %route,
                "Discord answered 401: the token is locked until it is unlocked or reconfigured"
            );
        }
        let webhook_gone = route.is_webhook_with_token()
            && (status == 401
                || (status == 404
                    && response
                        .error_code
                        .is_none_or(|code| code == UNKNOWN_WEBHOOK)));
        if webhook_gone
            && let Major::Webhook {
                id,
                token: Some(fp),
            } = route.major()
        {
            let mut gone = lock(&inner.gone_webhooks);
            if gone.len() >= MAX_GONE_WEBHOOKS {
                gone.clear();
            }
            gone.insert((id, fp));
        }

        let retry = scope.map(|scope| {
            let after = wait_of_429(response, inner.config.fallback_retry_after);
            *lock(&inner.stats)
                .rate_limited
                .entry(scope.as_str())
                .or_default() += 1;
            tracing::warn!(
                token = %state.fingerprint,
                route = %route,
                scope = scope.as_str(),
                retry_after = after.as_secs_f64(),
                "Discord answered 429"
            );
            (scope, after)
        });

        let observation = match (response.remaining, response.reset_after) {
            (Some(remaining), Some(reset_after)) => Some(Observation {
                limit: response.limit,
                remaining,
                reset_after,
            }),
            _ => None,
        };
        let from = Arc::clone(&slot.bucket);
        let counted_in = match &response.bucket {
            Some(hash) => lock(&state.table).learn(&route, &from, hash),
            None => Arc::clone(&from),
        };
        let same_bucket = Arc::ptr_eq(&counted_in, &from);
        let block_until = retry
            .filter(|(scope, _)| *scope != Scope::Global)
            .map(|(_, after)| later(now, after));
        let unlimited = (200..300).contains(&status) && !response.has_rate_limit_headers();
        slot.finish(|bucket, generation| {
            if !same_bucket {
                return;
            }
            if let Some(seen) = observation {
                bucket.observe(seen, Some(generation), now);
            } else if unlimited && bucket.mode == bucket::Mode::Unknown {
                bucket.mode = bucket::Mode::Unlimited;
            }
            if let Some(until) = block_until {
                bucket.block(until);
            }
        });
        if !same_bucket {
            {
                let mut bucket = lock(&counted_in.state);
                if let Some(seen) = observation {
                    bucket.observe(seen, None, now);
                }
                if let Some(until) = block_until {
                    bucket.block(until);
                }
            }
            counted_in.wake();
        }

        if let Some((Scope::Global, after)) = retry {
            lock(&state.global.state).pause(later(now, after));
        }
        // Frees the global slot (a second from now) and wakes the token's next request.
        drop(global);
        match retry {
            None => Completion::Done,
            Some((scope, after)) => Completion::RetryAfter { after, scope },
        }
    }
}

/// What an answer means for its request, as [`Permit::complete`] says it, without a permit: a
/// replica that sent a request under another replica's permit decides with it (the permit's
/// keeper learns from the same answer). `fallback` is [`Config::fallback_retry_after`].
#[must_use]
pub fn completion_of(response: &ResponseMeta, fallback: Duration) -> Completion {
    if response.status == 429 {
        Completion::RetryAfter {
            after: wait_of_429(response, fallback),
            scope: scope_of_429(response),
        }
    } else {
        Completion::Done
    }
}

/// How long a 429 says to wait: the body's `retry_after`, else the window's reset, else
/// `fallback`.
fn wait_of_429(response: &ResponseMeta, fallback: Duration) -> Duration {
    response
        .retry_after
        .or(response.reset_after)
        .unwrap_or(fallback)
}

/// Whose limit a 429 was about. Without `X-RateLimit-Scope`: `global` if it says so; a 429
/// with no rate-limit header and no JSON body is Cloudflare's, which stops the whole IP, so it
/// pauses the token like a global one; anything else is the bucket's.
fn scope_of_429(response: &ResponseMeta) -> Scope {
    if response.global || response.scope == Some(Scope::Global) {
        return Scope::Global;
    }
    match response.scope {
        Some(scope) => scope,
        None if !response.has_rate_limit_headers() && !response.json_body => Scope::Global,
        None => Scope::User,
    }
}
