//! One simulated bot: its world, its live sessions, its identify budget and its counters.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::{Duration, Instant};

use serde::Serialize;
use shardyard_protocol::{IDENTIFY_WINDOW_SECS, Intents, identify_bucket, shard_for_guild};
use tokio::sync::watch;

use crate::config::BotConfig;
use crate::session::{Event, Session};
use crate::snowflake::now_ms;
use crate::stats::ShardStats;
use crate::world::{World, WorldSpec};

/// How long Discord's session start budget lasts.
const BUDGET_PERIOD: Duration = Duration::from_secs(24 * 3600);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A dispatch on its way to every session that should receive it.
#[derive(Debug, Clone)]
pub struct Dispatch {
    /// The guild it happened in; `None` for direct messages (shard 0).
    pub guild: Option<u64>,
    /// Sessions need one of these intents to receive it; empty for events every session gets.
    pub intents: Intents,
    /// The event.
    pub event: Arc<Event>,
    /// The event as sessions without MESSAGE_CONTENT see it, where that differs.
    pub without_content: Option<Arc<Event>>,
}

#[derive(Debug, Default)]
struct Registry {
    by_id: HashMap<String, Arc<Session>>,
    by_shard: HashMap<(u32, u32), Vec<Arc<Session>>>,
    totals: BTreeMap<u32, usize>,
    without_message_content: usize,
}

/// Why an IDENTIFY was refused by the identify limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdentifyRefusal {
    /// Another identify in the same concurrency bucket within 5 s.
    TooFast,
    /// `session_start_limit.remaining` is 0.
    BudgetExhausted,
}

#[derive(Debug)]
struct IdentifyBook {
    remaining: u32,
    reset_at: Instant,
    last_per_bucket: HashMap<u32, Instant>,
    timestamps: BTreeMap<u32, Vec<u64>>,
}

/// `session_start_limit` as `/gateway/bot` reports it.
#[derive(Debug, Clone, Serialize)]
pub struct SessionStartLimit {
    /// Per day.
    pub total: u32,
    /// Left today.
    pub remaining: u32,
    /// Milliseconds until `remaining` resets.
    pub reset_after: u64,
    /// Identifies allowed per 5 s.
    pub max_concurrency: u32,
}

/// One bot.
#[derive(Debug)]
pub struct BotState {
    /// Its configuration.
    pub config: BotConfig,
    /// Its guilds and everything in them.
    pub world: Mutex<World>,
    /// Background traffic rate, in events per second.
    pub traffic: watch::Sender<f64>,
    registry: RwLock<Registry>,
    identify: Mutex<IdentifyBook>,
    shard_stats: Mutex<BTreeMap<(u32, u32), Arc<ShardStats>>>,
}

impl BotState {
    /// A bot with a freshly generated world.
    #[must_use]
    pub fn new(config: BotConfig, seed: u64) -> Self {
        let world = World::generate(&WorldSpec {
            guilds: config.guilds,
            members_per_guild: config.members_per_guild,
            seed,
            application_id: config.application_id,
            bot_name: format!("{}-bot", config.name),
        });
        let (traffic, _) = watch::channel(config.events_per_second);
        Self {
            identify: Mutex::new(IdentifyBook {
                remaining: config.session_start_total,
                reset_at: Instant::now() + BUDGET_PERIOD,
                last_per_bucket: HashMap::new(),
                timestamps: BTreeMap::new(),
            }),
            config,
            world: Mutex::new(world),
            traffic,
            registry: RwLock::default(),
            shard_stats: Mutex::default(),
        }
    }

    /// The world, locked. Never hold it across an `.await`.
    pub fn world(&self) -> MutexGuard<'_, World> {
        lock(&self.world)
    }

    /// The shard count Discord would recommend: one per 1,000 guilds.
    #[must_use]
    pub fn recommended_shards(&self) -> u32 {
        let guilds = u32::try_from(self.world().guilds.len()).unwrap_or(u32::MAX);
        guilds.div_ceil(1000).max(1)
    }

    /// The session start budget now.
    pub fn session_start_limit(&self) -> SessionStartLimit {
        let mut book = lock(&self.identify);
        self.refill(&mut book);
        SessionStartLimit {
            total: self.config.session_start_total,
            remaining: book.remaining,
            reset_after: u64::try_from(
                book.reset_at
                    .saturating_duration_since(Instant::now())
                    .as_millis(),
            )
            .unwrap_or(u64::MAX),
            max_concurrency: self.config.max_concurrency,
        }
    }

    fn refill(&self, book: &mut IdentifyBook) {
        if Instant::now() >= book.reset_at {
            book.remaining = self.config.session_start_total;
            book.reset_at = Instant::now() + BUDGET_PERIOD;
        }
    }

    /// Books an identify of `shard`: checks the per-bucket rate and the daily budget, and on
    /// success takes one session start. Every attempt's time is recorded per bucket.
    ///
    /// # Errors
    /// The rule the identify broke.
    pub fn book_identify(&self, shard: u32) -> Result<(), IdentifyRefusal> {
        let bucket = identify_bucket(shard, self.config.max_concurrency);
        let mut book = lock(&self.identify);
        self.refill(&mut book);
        book.timestamps.entry(bucket).or_default().push(now_ms());
        let now = Instant::now();
        if let Some(last) = book.last_per_bucket.get(&bucket)
            && now.duration_since(*last) < Duration::from_secs(IDENTIFY_WINDOW_SECS)
        {
            return Err(IdentifyRefusal::TooFast);
        }
        if book.remaining == 0 {
            return Err(IdentifyRefusal::BudgetExhausted);
        }
        book.remaining -= 1;
        book.last_per_bucket.insert(bucket, now);
        Ok(())
    }

    /// Unix-ms timestamps of every identify attempt, per concurrency bucket.
    #[must_use]
    pub fn identify_timestamps(&self) -> BTreeMap<u32, Vec<u64>> {
        lock(&self.identify).timestamps.clone()
    }

    /// The counters of shard `id` of `total`, created on first use.
    pub fn shard_stats(&self, id: u32, total: u32) -> Arc<ShardStats> {
        lock(&self.shard_stats)
            .entry((total, id))
            .or_insert_with(|| Arc::new(ShardStats::new(&self.config.name, id, total)))
            .clone()
    }

    /// Every shard's counters, by `(total, id)`.
    #[must_use]
    pub fn all_shard_stats(&self) -> Vec<Arc<ShardStats>> {
        lock(&self.shard_stats).values().cloned().collect()
    }

    /// Registers a new session so dispatches reach it.
    pub fn add_session(&self, session: Arc<Session>) {
        let mut registry = self
            .registry
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        registry.by_id.insert(session.id.clone(), session.clone());
        *registry.totals.entry(session.total).or_default() += 1;
        if !session.intents.contains(Intents::MESSAGE_CONTENT) {
            registry.without_message_content += 1;
        }
        registry
            .by_shard
            .entry((session.total, session.shard))
            .or_default()
            .push(session);
    }

    /// Forgets a session: it gets no more dispatches and cannot be resumed.
    pub fn remove_session(&self, id: &str) {
        let mut registry = self
            .registry
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let Some(session) = registry.by_id.remove(id) else {
            return;
        };
        session.link().invalid = true;
        if !session.intents.contains(Intents::MESSAGE_CONTENT) {
            registry.without_message_content -= 1;
        }
        if let Some(list) = registry.by_shard.get_mut(&(session.total, session.shard)) {
            list.retain(|s| s.id != id);
        }
        if let Some(count) = registry.totals.get_mut(&session.total) {
            *count -= 1;
            if *count == 0 {
                registry.totals.remove(&session.total);
            }
        }
    }

    /// A live session by id.
    #[must_use]
    pub fn session(&self, id: &str) -> Option<Arc<Session>> {
        self.registry
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .by_id
            .get(id)
            .cloned()
    }

    /// Every live session.
    #[must_use]
    pub fn sessions(&self) -> Vec<Arc<Session>> {
        self.registry
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .by_id
            .values()
            .cloned()
            .collect()
    }

    /// Sessions of shard `id`, of any total.
    #[must_use]
    pub fn sessions_of_shard(&self, id: u32) -> Vec<Arc<Session>> {
        let registry = self.registry.read().unwrap_or_else(PoisonError::into_inner);
        registry
            .by_shard
            .iter()
            .filter(|((_, shard), _)| *shard == id)
            .flat_map(|(_, list)| list.iter().cloned())
            .collect()
    }

    /// Whether any live session lacks MESSAGE_CONTENT, so messages need a content-less copy.
    #[must_use]
    pub fn needs_content_stripped(&self) -> bool {
        self.registry
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .without_message_content
            > 0
    }

    /// Drops sessions that were disconnected longer than `window` or invalidated.
    pub fn prune_sessions(&self, window: Duration) {
        let dead: Vec<String> = self
            .sessions()
            .into_iter()
            .filter(|s| !s.is_alive(window))
            .map(|s| s.id.clone())
            .collect();
        for id in dead {
            self.remove_session(&id);
        }
    }

    /// Appends a dispatch to every session that covers its guild and has its intents; returns how
    /// many sessions got it.
    pub fn dispatch(&self, dispatch: &Dispatch) -> usize {
        let registry = self.registry.read().unwrap_or_else(PoisonError::into_inner);
        let mut reached = 0;
        for total in registry.totals.keys() {
            let shard = dispatch.guild.map_or(0, |g| shard_for_guild(g, *total));
            let Some(sessions) = registry.by_shard.get(&(*total, shard)) else {
                continue;
            };
            for session in sessions {
                if dispatch.intents.bits() != 0 && !session.intents.intersects(dispatch.intents) {
                    continue;
                }
                let event = match &dispatch.without_content {
                    Some(stripped) if !session.intents.contains(Intents::MESSAGE_CONTENT) => {
                        stripped.clone()
                    }
                    _ => dispatch.event.clone(),
                };
                session.push(event);
                reached += 1;
            }
        }
        reached
    }
}
