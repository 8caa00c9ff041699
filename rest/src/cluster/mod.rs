//! Several proxy replicas sharing one bot's rate limits (`shardyard rest --nats`).
//!
//! Replicas find each other through NATS: each publishes an [`Announcement`] on
//! `shardyard.<bot>.rest.members` every second, and one not heard from for three seconds is
//! gone. Every token belongs to one replica, its rendezvous owner among the members
//! ([`rendezvous::owner`] of a stable hash of the token): the owner keeps all of the token's
//! limits (its buckets and its global limit) in its engine, and the other replicas borrow
//! permits from it over HTTP (`proxy::permits`). Every replica reports the rate-limit window
//! of each answer it gets ([`windows`]), so that a new owner knows what the old one spent. See
//! the crate's README ("Several replicas").

pub mod membership;
pub mod rendezvous;
pub mod windows;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt as _;
use shardyard_protocol::Token;
use shardyard_protocol::names::BotKey;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub use membership::{Announcement, Member, Members};
pub use windows::{WindowReport, Windows};

use crate::ratelimit::{KnownWindow, ResponseMeta, Route, lock};

/// How often a replica announces itself.
pub const HEARTBEAT: Duration = Duration::from_secs(1);
/// A replica not heard from for this long is gone.
pub const MEMBER_TTL: Duration = Duration::from_secs(3);
/// Windows per message answering a sync request (about 200 bytes each).
const SYNC_CHUNK: usize = 1000;
/// Window reports waiting to be published; past it, reports are dropped (NATS is away).
const REPORT_QUEUE: usize = 4096;
/// How long a replica listens for its peers before it serves (it would otherwise take every
/// token for itself for a moment).
pub const WARM_UP: Duration = Duration::from_millis(1_500);

/// Where and as whom a replica joins its peers.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// The NATS server's URL.
    pub nats_url: String,
    /// The bot whose replicas meet (`shardyard.<bot>.rest.members`).
    pub bot: BotKey,
    /// This replica's id, unique among the bot's replicas ([`ClusterConfig::random_id`]).
    pub id: String,
    /// Where peers ask for permits: `http://host:port` of this replica's listener.
    pub url: String,
}

impl ClusterConfig {
    /// A random replica id (`HOSTNAME` or `rest`, the process id, and 32 random bits).
    #[must_use]
    pub fn random_id() -> String {
        use std::hash::BuildHasher as _;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let random =
            std::collections::hash_map::RandomState::new().hash_one((nanos, std::process::id()));
        let host = std::env::var("HOSTNAME")
            .ok()
            .filter(|h| !h.is_empty() && h.len() <= 63)
            .unwrap_or_else(|| "rest".to_owned());
        format!("{host}-{}-{:08x}", std::process::id(), random as u32)
    }
}

/// Why a replica could not join its peers.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// NATS could not be reached.
    #[error("connecting to NATS")]
    Connect(#[source] async_nats::ConnectError),
    /// The members subject could not be subscribed to.
    #[error("subscribing to the members subject")]
    Subscribe(#[source] async_nats::SubscribeError),
}

/// Who sends a token's requests upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    /// This replica.
    Me,
    /// Another replica: ask it for permits.
    Peer(Member),
}

/// This replica's view of its peers, kept current by a background task.
pub struct Cluster {
    bot: BotKey,
    nats: async_nats::Client,
    members: Mutex<Members>,
    /// Bumped at every change of the view.
    generation: watch::Sender<u64>,
    /// Token keys this replica has sent requests for since it last became their owner.
    owned: Mutex<HashSet<u64>>,
    /// When this replica last heard its own heartbeat back: NATS works for it.
    heard_self: Mutex<Instant>,
    /// Shutting down: it owns nothing any more, and what waits in its queues moves on.
    leaving: AtomicBool,
    /// What every replica heard of each token's bucket windows.
    windows: Mutex<Windows>,
    /// Window reports for the publishing task.
    reports: tokio::sync::mpsc::Sender<WindowReport>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("bot", &self.bot)
            .field("members", &lock(&self.members).list().len())
            .finish_non_exhaustive()
    }
}

impl Cluster {
    /// Connects to NATS, starts announcing this replica and listening to its peers, and
    /// returns once it has listened for [`WARM_UP`]. On `shutdown` it announces it is gone.
    ///
    /// # Errors
    /// NATS cannot be reached or subscribed to.
    pub async fn join(
        config: ClusterConfig,
        shutdown: CancellationToken,
    ) -> Result<Arc<Self>, ClusterError> {
        let ClusterConfig {
            nats_url,
            bot,
            id,
            url,
        } = config;
        let nats = async_nats::ConnectOptions::new()
            .name("shardyard-rest")
            .connect(nats_url.as_str())
            .await
            .map_err(ClusterError::Connect)?;
        let subject = bot.rest_members_subject();
        let subscription = nats
            .subscribe(subject.clone())
            .await
            .map_err(ClusterError::Subscribe)?;
        let windows = nats
            .subscribe(bot.rest_windows_subject())
            .await
            .map_err(ClusterError::Subscribe)?;
        let (reports, pending_reports) = tokio::sync::mpsc::channel(REPORT_QUEUE);
        tokio::spawn(publish_reports(
            nats.clone(),
            bot.rest_windows_subject(),
            pending_reports,
        ));
        let me = Member { id, url };
        let cluster = Arc::new(Self {
            bot,
            nats,
            members: Mutex::new(Members::new(me, MEMBER_TTL)),
            generation: watch::Sender::new(0),
            owned: Mutex::new(HashSet::new()),
            heard_self: Mutex::new(Instant::now()),
            leaving: AtomicBool::new(false),
            windows: Mutex::new(Windows::default()),
            reports,
        });
        let syncs = cluster
            .nats
            .subscribe(cluster.bot.rest_windows_sync_subject())
            .await
            .map_err(ClusterError::Subscribe)?;
        tokio::spawn(Arc::clone(&cluster).hear_windows(windows));
        tokio::spawn(Arc::clone(&cluster).answer_syncs(syncs));
        tokio::spawn(Arc::clone(&cluster).announce(subject, subscription, shutdown));
        cluster.sync_windows().await;
        tracing::info!(
            members = lock(&cluster.members).list().len(),
            "joined the REST replicas"
        );
        Ok(cluster)
    }

    /// This replica.
    #[must_use]
    pub fn me(&self) -> Member {
        lock(&self.members).me().clone()
    }

    /// The members of the current view, this replica included.
    #[must_use]
    pub fn members(&self) -> Vec<Member> {
        lock(&self.members).list()
    }

    /// The key a token is owned by: a hash every replica computes alike (the engine's
    /// fingerprints are keyed per process). It never leaves the process.
    #[must_use]
    pub fn token_key(token: &Token) -> u64 {
        rendezvous::stable_hash(token.expose().as_bytes())
    }

    /// Who owns `key` in the current view.
    #[must_use]
    pub fn owner(&self, key: u64) -> Owner {
        let members = lock(&self.members);
        let mut list = members.list();
        if self.leaving.load(Ordering::Relaxed) && list.len() > 1 {
            list.retain(|member| member.id != members.me().id);
        }
        match rendezvous::owner(&list, key) {
            Some(member) if member.id != members.me().id => Owner::Peer(member.clone()),
            _ => Owner::Me,
        }
    }

    /// Records that this replica sends requests of `key`: `true` the first time since it
    /// (last) became the owner, when its engine must start the token afresh (see
    /// [`crate::ratelimit::RateLimiter::take_over`]).
    pub fn claim(&self, key: u64) -> bool {
        lock(&self.owned).insert(key)
    }

    /// Tokens this replica owns and has sent requests for.
    #[must_use]
    pub fn owned_tokens(&self) -> usize {
        lock(&self.owned).len()
    }

    /// Resolves once `key` is no longer this replica's (never while it stays so).
    pub async fn moved_away(&self, key: u64) {
        let mut changes = self.generation.subscribe();
        loop {
            if self.owner(key) != Owner::Me {
                return;
            }
            if changes.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }

    /// `member` could not be reached: it leaves this view at once, and the others are told
    /// (if it is alive after all, its next heartbeat brings it back).
    pub async fn unreachable(&self, member: &Member) {
        if lock(&self.members).remove(&member.id) {
            tracing::warn!(replica = %member.id, "a REST replica is unreachable: taking it out");
            self.changed();
        }
        let gone = Announcement {
            id: member.id.clone(),
            url: String::new(),
            gone: true,
        };
        self.publish(&gone).await;
    }

    /// Tells every replica the window of an answer this replica had from Discord for a request
    /// of `route` under the token `key`. Never waits: with NATS away, reports are dropped.
    pub fn report_window(&self, key: u64, route: &Route, meta: &ResponseMeta) {
        if let Some(report) = WindowReport::of(key, route, meta) {
            let _ = self.reports.try_send(report);
        }
    }

    /// The windows of `key`'s buckets heard from any replica that have not reset yet.
    #[must_use]
    pub fn known_windows(&self, key: u64) -> Vec<KnownWindow> {
        lock(&self.windows).known(key, Instant::now())
    }

    /// Listens for [`WARM_UP`], taking in the windows the other replicas answer a sync request
    /// with: a replica that has just started knows nothing of what was spent before, and may
    /// become a token's owner at once.
    async fn sync_windows(&self) {
        let deadline = Instant::now() + WARM_UP;
        let inbox = self.nats.new_inbox();
        let answers = match self.nats.subscribe(inbox.clone()).await {
            Ok(answers) => Some(answers),
            Err(error) => {
                tracing::warn!(%error, "cannot ask the other replicas for their windows");
                None
            }
        };
        if let Some(mut answers) = answers {
            let asked = self
                .nats
                .publish_with_reply(
                    self.bot.rest_windows_sync_subject(),
                    inbox,
                    Vec::new().into(),
                )
                .await;
            if asked.is_ok() {
                let mut heard = 0usize;
                while let Ok(Some(message)) =
                    tokio::time::timeout_at(deadline, answers.next()).await
                {
                    let Ok(reports) = serde_json::from_slice::<Vec<WindowReport>>(&message.payload)
                    else {
                        continue;
                    };
                    let now = Instant::now();
                    let mut windows = lock(&self.windows);
                    for report in reports {
                        heard += usize::from(windows.hear(report, now));
                    }
                }
                tracing::debug!(windows = heard, "took in the other replicas' windows");
            }
        }
        tokio::time::sleep_until(deadline).await;
    }

    /// Answers every sync request with the windows this replica knows, in chunks that fit a
    /// NATS message.
    async fn answer_syncs(self: Arc<Self>, mut requests: async_nats::Subscriber) {
        while let Some(request) = requests.next().await {
            let Some(reply) = request.reply else {
                continue;
            };
            let reports = lock(&self.windows).export(Instant::now());
            for chunk in reports.chunks(SYNC_CHUNK) {
                let Ok(payload) = serde_json::to_vec(chunk) else {
                    continue;
                };
                if let Err(error) = self.nats.publish(reply.clone(), payload.into()).await {
                    tracing::debug!(%error, "cannot answer a windows sync");
                    break;
                }
            }
        }
    }

    /// Takes in the window reports of every replica (its own included).
    async fn hear_windows(self: Arc<Self>, mut subscription: async_nats::Subscriber) {
        while let Some(message) = subscription.next().await {
            match serde_json::from_slice::<WindowReport>(&message.payload) {
                Ok(report) => {
                    lock(&self.windows).hear(report, Instant::now());
                }
                Err(_) => tracing::warn!("an unreadable report on the windows subject"),
            }
        }
    }

    /// Prometheus lines about the cluster.
    #[must_use]
    pub fn render_metrics(&self) -> String {
        format!(
            "# HELP shardyard_rest_cluster_members REST replicas in this replica's view, itself included.\n\
             # TYPE shardyard_rest_cluster_members gauge\n\
             shardyard_rest_cluster_members {}\n\
             # HELP shardyard_rest_cluster_owned_tokens Tokens whose limits this replica keeps and has used.\n\
             # TYPE shardyard_rest_cluster_owned_tokens gauge\n\
             shardyard_rest_cluster_owned_tokens {}\n",
            self.members().len(),
            self.owned_tokens()
        )
    }

    fn changed(&self) {
        // Tokens that moved away start afresh if they ever come back.
        {
            let members = lock(&self.members);
            let list = members.list();
            let me = members.me().id.clone();
            lock(&self.owned)
                .retain(|key| rendezvous::owner(&list, *key).is_some_and(|owner| owner.id == me));
        }
        self.generation.send_modify(|g| *g += 1);
    }

    async fn publish(&self, announcement: &Announcement) {
        let payload = match serde_json::to_vec(announcement) {
            Ok(payload) => payload,
            Err(error) => {
                tracing::error!(%error, "cannot encode an announcement");
                return;
            }
        };
        if let Err(error) = self
            .nats
            .publish(self.bot.rest_members_subject(), payload.into())
            .await
        {
            tracing::warn!(%error, "cannot announce on NATS");
        }
    }

    async fn heartbeat(&self) {
        let me = self.me();
        self.publish(&Announcement {
            id: me.id,
            url: me.url,
            gone: false,
        })
        .await;
    }

    /// Heartbeats, listens to the members subject and expires silent peers until `shutdown`,
    /// then announces this replica gone.
    async fn announce(
        self: Arc<Self>,
        subject: String,
        mut subscription: async_nats::Subscriber,
        shutdown: CancellationToken,
    ) {
        let mut beat = tokio::time::interval(HEARTBEAT);
        beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut sweep = tokio::time::interval(HEARTBEAT / 4);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                _ = beat.tick() => self.heartbeat().await,
                _ = sweep.tick() => {
                    // A peer's silence is measured up to when this replica last heard its own
                    // heartbeat come back, not up to now: when NATS is out of reach every peer
                    // falls silent at once, and each replica would take every token for
                    // itself, N times the limits. The view then stays as it is (an owner that
                    // is really gone is still found out by asking it for a permit).
                    let heard_self = *lock(&self.heard_self);
                    let expired = lock(&self.members).expire(heard_self);
                    if expired {
                        tracing::warn!("a REST replica went silent: taking it out");
                        self.changed();
                    }
                }
                message = subscription.next() => {
                    let Some(message) = message else {
                        tracing::error!(%subject, "the members subscription ended");
                        break;
                    };
                    let Ok(announcement) =
                        serde_json::from_slice::<Announcement>(&message.payload)
                    else {
                        tracing::warn!("an unreadable announcement on the members subject");
                        continue;
                    };
                    self.hear(&announcement).await;
                }
            }
        }
        // Requests still queued here move to the tokens' next owners while the server drains.
        self.leaving.store(true, Ordering::Relaxed);
        lock(&self.owned).clear();
        self.generation.send_modify(|g| *g += 1);
        let me = self.me();
        self.publish(&Announcement {
            id: me.id,
            url: String::new(),
            gone: true,
        })
        .await;
        let _ = self.nats.flush().await;
    }

    async fn hear(&self, announcement: &Announcement) {
        let me = self.me();
        if announcement.id == me.id {
            if !announcement.gone {
                *lock(&self.heard_self) = Instant::now();
            }
            if announcement.gone {
                // A peer could not reach this replica and took it out: whatever it owned has
                // been someone else's meanwhile, so it starts afresh, and it says it is here.
                tracing::warn!("a peer took this replica out: announcing it again");
                lock(&self.owned).clear();
                self.generation.send_modify(|g| *g += 1);
                self.heartbeat().await;
            }
            return;
        }
        let changed = lock(&self.members).hear(announcement, Instant::now());
        if changed {
            tracing::info!(
                replica = %announcement.id,
                gone = announcement.gone,
                members = lock(&self.members).list().len(),
                "REST replicas changed"
            );
            self.changed();
        }
    }
}

/// Publishes window reports in the order they were made.
async fn publish_reports(
    nats: async_nats::Client,
    subject: String,
    mut reports: tokio::sync::mpsc::Receiver<WindowReport>,
) {
    while let Some(report) = reports.recv().await {
        let Ok(payload) = serde_json::to_vec(&report) else {
            continue;
        };
        if let Err(error) = nats.publish(subject.clone(), payload.into()).await {
            tracing::debug!(%error, "cannot report a window on NATS");
        }
    }
}
