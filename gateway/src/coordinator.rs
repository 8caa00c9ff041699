//! The identify coordinator: Discord's identify limits honoured by every gateway process of a
//! bot together, through leases in the bot's `shardyard_<bot>_identify` KV bucket.
//!
//! Discord allows `max_concurrency` IDENTIFYs per 5 s, one per concurrency bucket
//! (`shard % max_concurrency`), across *all* of a bot's connections, and
//! `session_start_limit.remaining` session starts until the daily reset. Breaking the first gets
//! sessions invalidated; burning the second gets the token reset. So a shard never identifies
//! without a lease, and NATS errors are retried with backoff rather than skipped.
//!
//! # Keys and values (JSON)
//!
//! - [`keys::identify_lease`]`(bucket)` = `bucket.<n>`: the last grant of concurrency bucket `n`,
//!   a [`Lease`]: `{"granted_at_ms": 1767225600000, "holder": "<process>/<shard>"}`. A lease is
//!   taken by compare-and-set on the key's revision (`update(key, value, revision)`; revision 0
//!   when the key does not exist), so of two processes seeing the same expired lease exactly one
//!   wins; the loser re-reads and waits. A grant counts from the later of `granted_at_ms` (the
//!   holder's clock) and the entry's server timestamp, and lasts the window ([`IDENTIFY_WINDOW`]:
//!   5 s plus [`SAFETY_MARGIN`]). Wall clocks are compared across pods: they are assumed to be
//!   NTP-synchronized to well within the margin.
//! - [`BUDGET_KEY`] = `budget`: the day's session starts, a [`Budget`]:
//!   `{"remaining": 998, "total": 1000, "reset_at_ms": 1767312000000, "by": "<process>/<shard>"}`,
//!   seeded from `GET /gateway/bot` ([`Coordinator::seed_budget`]) and decremented by
//!   compare-and-set before each lease. At 0 a shard waits for `reset_at_ms` (re-reading every
//!   30 s, in case another process re-seeded it) instead of identifying; once past it the next
//!   identify refills it to `total` and sets the next reset 24 h on.
//!
//! # Order
//!
//! Within a process the shards of a concurrency bucket identify lowest id first: only the lowest
//! waiting shard of a bucket contends for its lease, the others wait behind it. Across processes
//! the order is whoever wins the compare-and-set once a lease expires: best effort, not strict.
//!
//! # The gap between the grant and the IDENTIFY
//!
//! [`Coordinator::wait_turn`] is meant to be awaited before connecting (its waits can be long:
//! until the daily reset). Connecting and HELLO take time; to make the 5 s count from the IDENTIFY
//! itself, call [`Coordinator::renew_turn`] right before sending it: while the shard still holds
//! the lease it restamps it (one compare-and-set), and if someone else took it meanwhile it waits
//! for the next free slot. [`IdentifyGate`] offers both over this coordinator and the in-process
//! [`IdentifyPacer`].
//!
//! A `wait_turn` dropped after it took from the budget (on shutdown) wastes that session start:
//! the budget is counted conservatively.

use std::collections::BTreeSet;
use std::pin::pin;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use async_nats::jetstream::{self, kv};
use bytes::Bytes;
use rand::Rng as _;
use serde::{Deserialize, Serialize};
use shardyard_protocol::names::keys;
use shardyard_protocol::{BotKey, IDENTIFY_WINDOW_SECS, identify_bucket};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::discord::SessionStartLimit;
use crate::pacer::{IdentifyPacer, SAFETY_MARGIN};
use crate::sessions::{open_bucket, unix_millis};

/// How long a grant holds its concurrency bucket: Discord's 5 s plus [`SAFETY_MARGIN`].
pub const IDENTIFY_WINDOW: Duration =
    Duration::from_secs(IDENTIFY_WINDOW_SECS).saturating_add(SAFETY_MARGIN);

/// The key of the shared daily session-start budget in the identify bucket.
pub const BUDGET_KEY: &str = shardyard_protocol::names::keys::IDENTIFY_BUDGET;

/// How long Discord's session-start budget lasts once reset.
pub const BUDGET_PERIOD: Duration = Duration::from_secs(24 * 3600);

/// How often a shard waiting for the budget's reset reads it again.
const BUDGET_POLL: Duration = Duration::from_secs(30);
/// Two budgets whose resets are this close describe the same day.
const SAME_DAY_TOLERANCE: Duration = Duration::from_secs(600);
/// The longest pause between retries after a NATS error.
const MAX_RETRY_PAUSE: Duration = Duration::from_secs(5);

/// The value under `bucket.<n>`: the last grant of a concurrency bucket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// When it was granted (or renewed), the holder's wall clock in unix milliseconds.
    pub granted_at_ms: u64,
    /// `<process>/<shard>`.
    pub holder: String,
}

/// The value under [`BUDGET_KEY`]: the bot's session starts left until the reset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Budget {
    /// Session starts left.
    pub remaining: u32,
    /// Session starts per day.
    pub total: u32,
    /// When `remaining` resets to `total`, unix milliseconds.
    pub reset_at_ms: u64,
    /// Who wrote it last: `<process>/<shard>`, or `<process>` when seeding.
    #[serde(default)]
    pub by: String,
}

/// How a [`Coordinator`] runs.
#[derive(Debug, Clone)]
pub struct CoordinatorConfig {
    /// `session_start_limit.max_concurrency`.
    pub max_concurrency: u32,
    /// `session_start_limit.remaining`, seeding the shared budget.
    pub remaining: u32,
    /// `session_start_limit.total`.
    pub total: u32,
    /// `session_start_limit.reset_after`.
    pub reset_after: Duration,
    /// How long a grant holds its bucket: [`IDENTIFY_WINDOW`] (tests shorten it).
    pub window: Duration,
    /// This process in lease values: unique per process run ([`default_holder`]).
    pub holder: String,
}

impl CoordinatorConfig {
    /// A configuration from `GET /gateway/bot`'s `session_start_limit`, with the standard window
    /// and [`default_holder`].
    #[must_use]
    pub fn new(limit: &SessionStartLimit) -> Self {
        Self {
            max_concurrency: limit.max_concurrency,
            remaining: limit.remaining,
            total: limit.total,
            reset_after: Duration::from_millis(limit.reset_after),
            window: IDENTIFY_WINDOW,
            holder: default_holder(),
        }
    }

    /// With another window (for tests; production keeps [`IDENTIFY_WINDOW`]).
    #[must_use]
    pub fn with_window(mut self, window: Duration) -> Self {
        self.window = window;
        self
    }

    /// With another holder name.
    #[must_use]
    pub fn with_holder(mut self, holder: impl Into<String>) -> Self {
        self.holder = holder.into();
        self
    }
}

/// `<hostname>-<pid>-<random>`: the pod's name under Kubernetes (`HOSTNAME`), made unique per
/// run since a restarted container keeps both hostname and pid.
#[must_use]
pub fn default_holder() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "gateway".to_owned());
    let nonce: u32 = rand::rng().random();
    format!("{host}-{}-{nonce:08x}", std::process::id())
}

/// Why the coordinator failed. Transient NATS errors are retried, not returned.
#[derive(Debug, thiserror::Error)]
pub enum CoordinatorError {
    /// The identify bucket could neither be found nor created.
    #[error("cannot open or create the KV bucket {bucket}")]
    Open {
        /// The bucket.
        bucket: String,
        /// Why.
        #[source]
        source: jetstream::context::CreateKeyValueError,
    },
    /// A key could not be read, for a reason retrying cannot fix.
    #[error("cannot read {key} in the identify bucket")]
    Read {
        /// The key.
        key: String,
        /// Why.
        #[source]
        source: kv::EntryError,
    },
    /// A key could not be written, for a reason retrying cannot fix.
    #[error("cannot write {key} in the identify bucket")]
    Write {
        /// The key.
        key: String,
        /// Why.
        #[source]
        source: kv::UpdateError,
    },
    /// A value could not be serialized.
    #[error("cannot serialize the value of {key}")]
    Encode {
        /// The key.
        key: String,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
}

/// A turn to identify.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant {
    /// How long the call waited.
    pub waited: Duration,
    /// The shard's concurrency bucket.
    pub bucket: u32,
    /// The lease's `granted_at_ms`.
    pub granted_at_ms: u64,
    /// The lease's KV revision.
    pub revision: u64,
}

/// Paces the identifies of a bot's shards across every process through KV leases. Share it
/// (in an `Arc`) among the process's shards.
#[derive(Debug)]
pub struct Coordinator {
    kv: kv::Store,
    max_concurrency: u32,
    window: Duration,
    holder: String,
    /// The budget as last read or written: recreates the key should it vanish.
    known_budget: Mutex<Budget>,
    /// This process's shards take from the budget one at a time: all at once they conflict on
    /// the one key and retry, O(n²) round trips for n shards starting together (a 1,000-shard
    /// process took twice as long as twilight to be READY).
    budget_turn: tokio::sync::Mutex<()>,
    buckets: Vec<LocalBucket>,
}

/// This process's view of one concurrency bucket.
#[derive(Debug, Default)]
struct LocalBucket {
    /// Shards of this process waiting for the bucket.
    waiting: Mutex<BTreeSet<u32>>,
    /// Signalled when `waiting` shrinks.
    changed: Notify,
    /// The lease this process holds, if it was the last to take it.
    held: Mutex<Option<Held>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Held {
    shard: u32,
    revision: u64,
}

/// A shard's place in its bucket's local queue; leaving (or being dropped) wakes the others.
struct Place<'a> {
    bucket: &'a LocalBucket,
    shard: u32,
}

impl Drop for Place<'_> {
    fn drop(&mut self) {
        lock(&self.bucket.waiting).remove(&self.shard);
        self.bucket.changed.notify_waiters();
    }
}

impl LocalBucket {
    fn enqueue(&self, shard: u32) -> Place<'_> {
        lock(&self.waiting).insert(shard);
        Place {
            bucket: self,
            shard,
        }
    }

    /// Waits until `shard` is the lowest waiting shard of the bucket.
    async fn first_in_line(&self, shard: u32) {
        loop {
            let mut changed = pin!(self.changed.notified());
            changed.as_mut().enable();
            if lock(&self.waiting)
                .first()
                .is_none_or(|&first| first >= shard)
            {
                return;
            }
            changed.await;
        }
    }

    fn held(&self) -> Option<Held> {
        *lock(&self.held)
    }

    fn set_held(&self, held: Held) {
        *lock(&self.held) = Some(held);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A key as read: revision 0 when it never existed; no value when deleted.
struct Current {
    revision: u64,
    value: Option<Bytes>,
    created_ms: u64,
}

/// What a read-modify-write step decided.
enum Plan<T> {
    /// Finished without writing.
    Done(T),
    /// Read again after this long.
    Wait(Duration),
    /// Write this by compare-and-set; on success the result is `T`.
    Write(Bytes, T),
}

impl Coordinator {
    /// Opens (creating when missing: history 1, file storage, no expiry) the bot's identify
    /// bucket and seeds the shared budget from `config` ([`seed_budget`](Self::seed_budget)).
    ///
    /// # Errors
    /// [`CoordinatorError::Open`] when the bucket cannot be had; the others as
    /// [`seed_budget`](Self::seed_budget).
    pub async fn open(
        js: &jetstream::Context,
        bot: &BotKey,
        config: CoordinatorConfig,
    ) -> Result<Self, CoordinatorError> {
        let bucket = bot.identify_bucket();
        let kv = open_bucket(
            js,
            kv::Config {
                bucket: bucket.clone(),
                description: "shardyard: identify leases per concurrency bucket, and the daily \
                              session-start budget"
                    .into(),
                history: 1,
                storage: jetstream::stream::StorageType::File,
                ..Default::default()
            },
        )
        .await
        .map_err(|source| CoordinatorError::Open { bucket, source })?;
        let max_concurrency = config.max_concurrency.max(1);
        let seed = Budget {
            remaining: config.remaining,
            total: config.total,
            reset_at_ms: reset_at(config.reset_after),
            by: config.holder.clone(),
        };
        let coordinator = Self {
            kv,
            max_concurrency,
            window: config.window,
            holder: config.holder,
            known_budget: Mutex::new(seed),
            budget_turn: tokio::sync::Mutex::new(()),
            buckets: (0..max_concurrency)
                .map(|_| LocalBucket::default())
                .collect(),
        };
        coordinator
            .seed_budget(config.remaining, config.total, config.reset_after)
            .await?;
        Ok(coordinator)
    }

    /// Merges a fresh `session_start_limit` into the shared budget and returns the result. When
    /// the stored budget describes the same day (resets within 10 min of each other), the lower
    /// `remaining` wins, since identifies by other processes may postdate Discord's answer, and
    /// Discord's reset time is taken; otherwise (no budget, an unreadable one, one past its
    /// reset, another day) Discord's answer replaces it. Call it again after re-asking
    /// `GET /gateway/bot`.
    ///
    /// # Errors
    /// [`CoordinatorError`] on errors retrying cannot fix.
    pub async fn seed_budget(
        &self,
        remaining: u32,
        total: u32,
        reset_after: Duration,
    ) -> Result<Budget, CoordinatorError> {
        let tolerance = millis(SAME_DAY_TOLERANCE);
        let (budget, _) = self
            .transact(BUDGET_KEY, |current| {
                let now = unix_millis();
                let stored = current
                    .value
                    .as_deref()
                    .and_then(|v| serde_json::from_slice::<Budget>(v).ok());
                let mut merged = Budget {
                    remaining,
                    total,
                    reset_at_ms: reset_at(reset_after),
                    by: self.holder.clone(),
                };
                if let Some(stored) = &stored
                    && stored.reset_at_ms > now
                    && stored.reset_at_ms.abs_diff(merged.reset_at_ms) <= tolerance
                {
                    merged.remaining = merged.remaining.min(stored.remaining);
                    if stored.remaining == merged.remaining
                        && stored.total == merged.total
                        && stored.reset_at_ms == merged.reset_at_ms
                    {
                        return Ok(Plan::Done(stored.clone()));
                    }
                }
                Ok(Plan::Write(encode(BUDGET_KEY, &merged)?, merged))
            })
            .await?;
        *lock(&self.known_budget) = budget.clone();
        Ok(budget)
    }

    /// The shared budget as stored now (one read, no retries).
    ///
    /// # Errors
    /// [`CoordinatorError::Read`] when it cannot be read.
    pub async fn budget(&self) -> Result<Option<Budget>, CoordinatorError> {
        match self.kv.entry(BUDGET_KEY).await {
            Ok(Some(entry)) if entry.operation == kv::Operation::Put => {
                Ok(serde_json::from_slice(&entry.value).ok())
            }
            Ok(_) => Ok(None),
            Err(source) => Err(CoordinatorError::Read {
                key: BUDGET_KEY.to_owned(),
                source,
            }),
        }
    }

    /// Waits until `shard` may identify: behind the lower waiting shards of its concurrency
    /// bucket in this process, then for a session start from the shared budget (until its reset
    /// if none are left), then for its bucket's lease. NATS errors are retried with backoff, so
    /// this only returns once the lease is taken, or with an error retrying cannot fix.
    ///
    /// # Errors
    /// [`CoordinatorError`] on errors retrying cannot fix (never a lease not taken).
    pub async fn wait_turn(&self, shard: u32) -> Result<Grant, CoordinatorError> {
        let started = Instant::now();
        let bucket = identify_bucket(shard, self.max_concurrency);
        let local = self.local(bucket);
        let place = local.enqueue(shard);
        local.first_in_line(shard).await;
        self.take_budget(shard).await?;
        let (granted_at_ms, revision) = self.take_lease(bucket, shard, false).await?;
        drop(place);
        Ok(Grant {
            waited: started.elapsed(),
            bucket,
            granted_at_ms,
            revision,
        })
    }

    /// Call right before sending IDENTIFY, after [`wait_turn`](Self::wait_turn): restamps the
    /// shard's lease to now if it still holds it (so the window counts from the IDENTIFY, not from
    /// before connecting), or, if another shard took the bucket meanwhile, waits for a new lease.
    /// Takes nothing from the budget.
    ///
    /// # Errors
    /// As [`wait_turn`](Self::wait_turn).
    pub async fn renew_turn(&self, shard: u32) -> Result<Grant, CoordinatorError> {
        let started = Instant::now();
        let bucket = identify_bucket(shard, self.max_concurrency);
        let (granted_at_ms, revision) = self.take_lease(bucket, shard, true).await?;
        Ok(Grant {
            waited: started.elapsed(),
            bucket,
            granted_at_ms,
            revision,
        })
    }

    fn local(&self, bucket: u32) -> &LocalBucket {
        // identify_bucket is below max_concurrency, the number of local buckets.
        let index = usize::try_from(bucket).unwrap_or(usize::MAX);
        &self.buckets[index.min(self.buckets.len() - 1)]
    }

    /// Takes one session start from the shared budget, waiting for its reset when none are left.
    async fn take_budget(&self, shard: u32) -> Result<(), CoordinatorError> {
        let _turn = self.budget_turn.lock().await;
        let by = format!("{}/{shard}", self.holder);
        let mut warned = false;
        let (budget, _) = self
            .transact(BUDGET_KEY, |current| {
                let now = unix_millis();
                let mut budget = match current.value.as_deref().map(serde_json::from_slice) {
                    Some(Ok(budget)) => budget,
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "unreadable identify budget: replacing it with the last known one");
                        lock(&self.known_budget).clone()
                    }
                    None => lock(&self.known_budget).clone(),
                };
                if now >= budget.reset_at_ms {
                    budget.remaining = budget.total;
                    budget.reset_at_ms = now.saturating_add(millis(BUDGET_PERIOD));
                }
                if budget.remaining == 0 {
                    let reset_in = Duration::from_millis(budget.reset_at_ms.saturating_sub(now));
                    if !warned {
                        warned = true;
                        tracing::warn!(shard, ?reset_in, "no session starts left today: waiting for the reset");
                    }
                    *lock(&self.known_budget) = budget;
                    return Ok(Plan::Wait(reset_in.min(BUDGET_POLL)));
                }
                budget.remaining -= 1;
                budget.by.clone_from(&by);
                Ok(Plan::Write(encode(BUDGET_KEY, &budget)?, budget))
            })
            .await?;
        *lock(&self.known_budget) = budget;
        Ok(())
    }

    /// Takes `bucket`'s lease for `shard` once it is free. With `renew`, a lease this process
    /// granted `shard` and nobody replaced counts as free. Returns `(granted_at_ms, revision)`.
    async fn take_lease(
        &self,
        bucket: u32,
        shard: u32,
        renew: bool,
    ) -> Result<(u64, u64), CoordinatorError> {
        let key = keys::identify_lease(bucket);
        let local = self.local(bucket);
        let window = millis(self.window);
        let holder = format!("{}/{shard}", self.holder);
        let (granted_at_ms, revision) = self
            .transact(&key, |current| {
                let now = unix_millis();
                let ours = renew
                    && local.held()
                        == Some(Held {
                            shard,
                            revision: current.revision,
                        });
                if !ours && let Some(value) = &current.value {
                    // The later of the holder's and the server's clock, though never more than a
                    // window past the server's: a holder's clock far ahead must not block the
                    // bucket for long.
                    let granted = match serde_json::from_slice::<Lease>(value) {
                        Ok(lease) => lease
                            .granted_at_ms
                            .min(current.created_ms.saturating_add(window))
                            .max(current.created_ms),
                        Err(_) => current.created_ms,
                    };
                    let expires = granted.saturating_add(window);
                    if now < expires {
                        return Ok(Plan::Wait(Duration::from_millis(expires - now)));
                    }
                }
                let lease = Lease {
                    granted_at_ms: now,
                    holder: holder.clone(),
                };
                Ok(Plan::Write(encode(&key, &lease)?, now))
            })
            .await?;
        local.set_held(Held { shard, revision });
        Ok((granted_at_ms, revision))
    }

    /// Read-modify-write of `key` by compare-and-set until `plan` is done or its write wins.
    /// Returns the plan's result and the key's revision. Transient NATS errors are retried with
    /// backoff; after an unacknowledged write, finding the written bytes counts as success.
    async fn transact<T>(
        &self,
        key: &str,
        mut plan: impl FnMut(&Current) -> Result<Plan<T>, CoordinatorError>,
    ) -> Result<(T, u64), CoordinatorError> {
        let mut failures: u32 = 0;
        let mut pending: Option<(Bytes, T)> = None;
        loop {
            let current = match self.kv.entry(key).await {
                Ok(None) => Current {
                    revision: 0,
                    value: None,
                    created_ms: 0,
                },
                Ok(Some(entry)) => Current {
                    revision: entry.revision,
                    created_ms: u64::try_from(entry.created.unix_timestamp_nanos() / 1_000_000)
                        .unwrap_or(0),
                    value: (entry.operation == kv::Operation::Put).then_some(entry.value),
                },
                Err(source) if source.kind() == kv::EntryErrorKind::InvalidKey => {
                    return Err(CoordinatorError::Read {
                        key: key.to_owned(),
                        source,
                    });
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    let pause = retry_pause(failures);
                    tracing::warn!(key, error = %e, ?pause, "reading the identify bucket failed; retrying");
                    tokio::time::sleep(pause).await;
                    continue;
                }
            };
            if let Some((bytes, result)) = pending.take()
                && current.value.as_ref() == Some(&bytes)
            {
                // The write that looked failed had landed.
                return Ok((result, current.revision));
            }
            let (bytes, result) = match plan(&current)? {
                Plan::Done(result) => return Ok((result, current.revision)),
                Plan::Wait(pause) => {
                    tokio::time::sleep(pause).await;
                    continue;
                }
                Plan::Write(bytes, result) => (bytes, result),
            };
            match self.kv.update(key, bytes.clone(), current.revision).await {
                Ok(revision) => return Ok((result, revision)),
                Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                    // Someone else wrote first: read again.
                    failures = 0;
                }
                Err(source) if source.kind() == kv::UpdateErrorKind::InvalidKey => {
                    return Err(CoordinatorError::Write {
                        key: key.to_owned(),
                        source,
                    });
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    let pause = retry_pause(failures);
                    tracing::warn!(key, error = %e, ?pause, "writing the identify bucket failed; retrying");
                    pending = Some((bytes, result));
                    tokio::time::sleep(pause).await;
                }
            }
        }
    }
}

/// Paces identifies through one API, whether within the process or across processes.
#[derive(Debug)]
pub enum IdentifyGate {
    /// Within this process only ([`IdentifyPacer`]): a single gateway process.
    Local(IdentifyPacer),
    /// Across every process of the bot, through NATS KV ([`Coordinator`]; boxed, it is large).
    Nats(Box<Coordinator>),
}

impl IdentifyGate {
    /// Waits until `shard` may identify and books it; returns how long it waited. Await it
    /// before connecting.
    ///
    /// # Errors
    /// [`CoordinatorError`] from the NATS coordinator, on errors retrying cannot fix.
    pub async fn wait_turn(&self, shard: u32) -> Result<Duration, CoordinatorError> {
        match self {
            Self::Local(pacer) => Ok(pacer.wait_turn(shard).await),
            Self::Nats(coordinator) => Ok(coordinator.wait_turn(shard).await?.waited),
        }
    }

    /// Right before sending IDENTIFY: makes the turn taken by [`wait_turn`](Self::wait_turn)
    /// count from now (the coordinator restamps its lease, or waits for a new one if it was
    /// taken meanwhile); a no-op for the local pacer. Returns how long it waited.
    ///
    /// # Errors
    /// As [`wait_turn`](Self::wait_turn).
    pub async fn renew_turn(&self, shard: u32) -> Result<Duration, CoordinatorError> {
        match self {
            Self::Local(_) => Ok(Duration::ZERO),
            Self::Nats(coordinator) => Ok(coordinator.renew_turn(shard).await?.waited),
        }
    }
}

fn encode<T: Serialize>(key: &str, value: &T) -> Result<Bytes, CoordinatorError> {
    serde_json::to_vec(value)
        .map(Bytes::from)
        .map_err(|source| CoordinatorError::Encode {
            key: key.to_owned(),
            source,
        })
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The unix time in ms `reset_after` from now, rounded up so a wait for it is never short.
fn reset_at(reset_after: Duration) -> u64 {
    unix_millis()
        .saturating_add(millis(reset_after))
        .saturating_add(1)
}

/// 100 ms, 200 ms, 400 ms … up to [`MAX_RETRY_PAUSE`], each scaled by [0.5, 1).
fn retry_pause(failures: u32) -> Duration {
    Duration::from_millis(100)
        .saturating_mul(2u32.saturating_pow(failures.saturating_sub(1).min(10)))
        .min(MAX_RETRY_PAUSE)
        .mul_f64(rand::rng().random_range(0.5..1.0))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;
    use std::time::Duration;

    use futures_util::StreamExt as _;
    use shardyard_protocol::BotKey;
    use tokio::time::Instant;

    use super::{BUDGET_KEY, Coordinator, CoordinatorConfig, Grant, IdentifyGate, Lease};
    use crate::discord::SessionStartLimit;

    const WINDOW: Duration = Duration::from_millis(500);

    fn bot() -> BotKey {
        BotKey::local("idbot").unwrap()
    }

    fn config(holder: &str, remaining: u32, reset_after_ms: u64) -> CoordinatorConfig {
        CoordinatorConfig::new(&SessionStartLimit {
            total: 1000,
            remaining,
            reset_after: reset_after_ms,
            max_concurrency: 4,
        })
        .with_window(WINDOW)
        .with_holder(holder)
    }

    fn nanos_to_ms(nanos: i128) -> i128 {
        nanos / 1_000_000
    }

    /// Two processes, 16 shards each, 4 concurrency buckets: every shard gets a turn, no bucket
    /// is granted twice within the window (by the coordinators' own clocks and by the server's
    /// timestamps), the shared budget counts every turn, and within a process each bucket's
    /// shards go lowest first.
    #[tokio::test]
    async fn two_processes_share_the_buckets_and_the_budget() -> anyhow::Result<()> {
        let nats = shardyard_tests::NatsServer::start().await?;
        let a = Arc::new(
            Coordinator::open(
                &nats.jetstream().await?,
                &bot(),
                config("a", 1000, 3_600_000),
            )
            .await?,
        );
        let b = Arc::new(
            Coordinator::open(
                &nats.jetstream().await?,
                &bot(),
                config("b", 1000, 3_600_000),
            )
            .await?,
        );
        let js = nats.jetstream().await?;
        let kv = js.get_key_value(bot().identify_bucket()).await?;
        let mut writes = kv.watch_all().await?;

        let started = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for shard in 0..32u32 {
            let coordinator = if shard < 16 { a.clone() } else { b.clone() };
            tasks.spawn(async move {
                let grant = coordinator.wait_turn(shard).await?;
                anyhow::Ok((shard, grant))
            });
        }
        let mut grants: Vec<(u32, Grant)> = Vec::new();
        while let Some(done) = tasks.join_next().await {
            grants.push(done??);
        }
        let elapsed = started.elapsed();

        let mut shards: Vec<u32> = grants.iter().map(|(s, _)| *s).collect();
        shards.sort_unstable();
        assert_eq!(
            shards,
            (0..32).collect::<Vec<_>>(),
            "every shard got a turn"
        );

        // By the grants' own times: no bucket twice within the window.
        let mut by_bucket: BTreeMap<u32, Vec<(u64, u32)>> = BTreeMap::new();
        for (shard, grant) in &grants {
            assert_eq!(grant.bucket, shard % 4);
            by_bucket
                .entry(grant.bucket)
                .or_default()
                .push((grant.granted_at_ms, *shard));
        }
        for (bucket, times) in &mut by_bucket {
            times.sort_unstable();
            assert_eq!(times.len(), 8, "bucket {bucket}: {times:?}");
            for pair in times.windows(2) {
                assert!(
                    pair[1].0 - pair[0].0 >= 500,
                    "bucket {bucket} granted twice within the window: {times:?}"
                );
            }
            // Lowest shard first within each process.
            for process in [0..16, 16..32] {
                let order: Vec<u32> = times
                    .iter()
                    .map(|&(_, s)| s)
                    .filter(|s| process.contains(s))
                    .collect();
                let mut sorted = order.clone();
                sorted.sort_unstable();
                assert_eq!(order, sorted, "bucket {bucket}: {times:?}");
            }
        }

        // By the server's timestamps of every lease written.
        let mut server: BTreeMap<String, Vec<i128>> = BTreeMap::new();
        let mut seen = 0;
        while seen < 32 {
            let entry = tokio::time::timeout(Duration::from_secs(5), writes.next())
                .await?
                .ok_or_else(|| anyhow::anyhow!("watch ended"))??;
            if entry.key == BUDGET_KEY {
                continue;
            }
            let lease: Lease = serde_json::from_slice(&entry.value)?;
            assert!(
                lease.holder.starts_with("a/") || lease.holder.starts_with("b/"),
                "{lease:?}"
            );
            server
                .entry(entry.key.clone())
                .or_default()
                .push(nanos_to_ms(entry.created.unix_timestamp_nanos()));
            seen += 1;
        }
        assert_eq!(server.len(), 4, "{server:?}");
        for (key, times) in &server {
            for pair in times.windows(2) {
                assert!(
                    pair[1] - pair[0] >= 500,
                    "{key} written twice within the window: {times:?}"
                );
            }
        }

        let budget = a
            .budget()
            .await?
            .ok_or_else(|| anyhow::anyhow!("no budget"))?;
        assert_eq!(budget.remaining, 1000 - 32, "{budget:?}");
        assert_eq!(b.budget().await?, Some(budget));
        // 8 turns per bucket take at least 7 windows, and not much more.
        assert!(elapsed >= WINDOW * 7, "{elapsed:?}");
        assert!(elapsed < Duration::from_secs(8), "{elapsed:?}");
        Ok(())
    }

    #[tokio::test]
    async fn an_exhausted_budget_waits_for_its_reset() -> anyhow::Result<()> {
        let nats = shardyard_tests::NatsServer::start().await?;
        let started = Instant::now();
        let coordinator =
            Coordinator::open(&nats.jetstream().await?, &bot(), config("a", 0, 1000)).await?;
        let grant = coordinator.wait_turn(0).await?;
        assert!(started.elapsed() >= Duration::from_secs(1), "{grant:?}");
        assert!(grant.waited >= Duration::from_millis(900), "{grant:?}");
        let budget = coordinator
            .budget()
            .await?
            .ok_or_else(|| anyhow::anyhow!("no budget"))?;
        assert_eq!(
            budget.remaining, 999,
            "refilled to the total, less this turn"
        );
        Ok(())
    }

    #[tokio::test]
    async fn a_second_process_merges_its_budget_with_the_stored_one() -> anyhow::Result<()> {
        let nats = shardyard_tests::NatsServer::start().await?;
        let a = Coordinator::open(
            &nats.jetstream().await?,
            &bot(),
            config("a", 500, 3_600_000),
        )
        .await?;
        a.wait_turn(0).await?;
        // Discord told b more than is left now (a identified since): the lower count wins.
        let b = Coordinator::open(
            &nats.jetstream().await?,
            &bot(),
            config("b", 500, 3_600_000),
        )
        .await?;
        assert_eq!(b.budget().await?.map(|b| b.remaining), Some(499));
        // Discord knows of fewer (identifies outside shardyard): the lower count wins.
        b.seed_budget(300, 1000, Duration::from_secs(3600)).await?;
        assert_eq!(a.budget().await?.map(|b| b.remaining), Some(300));
        // Another day (a reset far from the stored one): Discord's answer replaces it.
        b.seed_budget(1000, 1000, Duration::from_secs(20 * 3600))
            .await?;
        assert_eq!(a.budget().await?.map(|b| b.remaining), Some(1000));
        Ok(())
    }

    #[tokio::test]
    async fn within_a_process_the_lowest_waiting_shard_goes_first() -> anyhow::Result<()> {
        let nats = shardyard_tests::NatsServer::start().await?;
        let coordinator = Arc::new(
            Coordinator::open(
                &nats.jetstream().await?,
                &bot(),
                config("a", 1000, 3_600_000),
            )
            .await?,
        );
        coordinator.wait_turn(1).await?;
        // Shard 1 waits for its own lease to expire; 13, 9 and 5 (bucket 1 too) queue behind it
        // in that order, and go lowest first.
        let order = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut tasks = tokio::task::JoinSet::new();
        for shard in [1u32, 13, 9, 5] {
            let coordinator = coordinator.clone();
            let order = order.clone();
            tasks.spawn(async move {
                coordinator.wait_turn(shard).await?;
                order.lock().unwrap().push(shard);
                anyhow::Ok(())
            });
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        while let Some(done) = tasks.join_next().await {
            done??;
        }
        assert_eq!(*order.lock().unwrap(), [1, 5, 9, 13]);
        Ok(())
    }

    #[tokio::test]
    async fn renewing_restamps_a_held_lease_and_delays_the_next() -> anyhow::Result<()> {
        let nats = shardyard_tests::NatsServer::start().await?;
        let a = Arc::new(
            Coordinator::open(
                &nats.jetstream().await?,
                &bot(),
                config("a", 1000, 3_600_000),
            )
            .await?,
        );
        let b = Coordinator::open(
            &nats.jetstream().await?,
            &bot(),
            config("b", 1000, 3_600_000),
        )
        .await?;
        let first = a.wait_turn(0).await?;
        let next = tokio::spawn(async move { b.wait_turn(4).await });
        tokio::time::sleep(Duration::from_millis(300)).await;
        // Still a's: renewing is immediate and moves the window.
        let renewed = a.renew_turn(0).await?;
        assert!(renewed.waited < Duration::from_millis(200), "{renewed:?}");
        assert!(renewed.granted_at_ms >= first.granted_at_ms + 300);
        let next = next.await??;
        assert!(
            next.granted_at_ms >= renewed.granted_at_ms + 500,
            "{renewed:?} then {next:?}"
        );
        // Now b holds bucket 0: a's renewal must wait for b's window.
        let again = a.renew_turn(0).await?;
        assert!(
            again.granted_at_ms >= next.granted_at_ms + 500,
            "{next:?} then {again:?}"
        );
        // Renewals take nothing from the budget: 2 turns were taken.
        assert_eq!(a.budget().await?.map(|b| b.remaining), Some(998));
        Ok(())
    }

    #[tokio::test]
    async fn a_turn_waits_out_a_nats_outage() -> anyhow::Result<()> {
        let mut nats = shardyard_tests::NatsServer::start().await?;
        let coordinator = Coordinator::open(
            &nats.jetstream().await?,
            &bot(),
            config("a", 1000, 3_600_000),
        )
        .await?;
        let gate = Arc::new(IdentifyGate::Nats(Box::new(coordinator)));
        nats.stop().await?;
        let turn = tokio::spawn({
            let gate = gate.clone();
            async move { gate.wait_turn(2).await }
        });
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert!(!turn.is_finished(), "no turn without NATS");
        nats.start_again().await?;
        tokio::time::timeout(Duration::from_secs(15), turn).await???;
        let IdentifyGate::Nats(coordinator) = &*gate else {
            unreachable!()
        };
        assert_eq!(coordinator.budget().await?.map(|b| b.remaining), Some(999));
        Ok(())
    }

    #[tokio::test(start_paused = true)]
    async fn the_local_gate_paces_too() -> anyhow::Result<()> {
        let gate = IdentifyGate::Local(crate::pacer::IdentifyPacer::new(
            1,
            10,
            10,
            Duration::from_secs(3600),
        ));
        assert_eq!(gate.wait_turn(0).await?, Duration::ZERO);
        assert_eq!(gate.renew_turn(0).await?, Duration::ZERO);
        assert!(gate.wait_turn(1).await? >= super::IDENTIFY_WINDOW);
        Ok(())
    }
}
