//! Shard sessions saved in the bot's `shardyard_<bot>_sessions` KV bucket, so a restarted gateway
//! process resumes its shards instead of identifying them anew (which costs a session start and
//! an identify slot, and loses the events in between).
//!
//! One key per shard, [`keys::session`]`(total, shard)` = `shard.<total>.<shard>`, holding JSON:
//!
//! ```json
//! {"session_id": "…", "seq": 1234, "resume_url": "wss://…", "saved_at_ms": 1767225600000}
//! ```
//!
//! `seq` is the last sequence JetStream acknowledged (never merely received): a resume starts
//! after it, Discord replays the rest, and JetStream drops the replayed duplicates by
//! `Nats-Msg-Id`. `saved_at_ms` is the saver's wall clock in unix milliseconds, the moment the
//! session was last known alive; [`SessionStore::load`] ignores a session older than the
//! caller's `max_age` (normally [`FRESH_FOR`]).
//!
//! The bucket keeps one revision per key, on file storage, and JetStream drops entries after
//! [`BUCKET_MAX_AGE`], so the sessions of shards that no longer exist do not linger.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_nats::jetstream::{self, kv};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use shardyard_protocol::BotKey;
use shardyard_protocol::names::keys;

/// How long a saved session counts as resumable.
///
/// Discord does not document how long a session stays resumable after its connection is gone;
/// in practice it is a few minutes (the simulator uses 180 s). Two minutes covers a pod restart
/// or a rolling update with room to spare while staying inside that window. Trying a session that
/// did expire costs little: Discord answers op 9 `false`, and the shard identifies after 1–5 s,
/// as it would have anyway. Not trying one that was still alive costs a session start and a
/// replay gap, so err on the long side.
pub const FRESH_FOR: Duration = Duration::from_secs(120);

/// How long JetStream keeps a saved session that nobody updates: far beyond [`FRESH_FOR`], so it
/// only clears out sessions of shards that are gone (for example after a reshard).
pub const BUCKET_MAX_AGE: Duration = Duration::from_secs(3600);

/// A shard's session as saved in the sessions bucket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedSession {
    /// `session_id` from READY.
    pub session_id: String,
    /// The highest sequence JetStream acknowledged: a resume starts after it.
    pub seq: u64,
    /// `resume_gateway_url` from READY.
    pub resume_url: String,
    /// When this was saved (the session last known alive), unix milliseconds.
    pub saved_at_ms: u64,
}

impl SavedSession {
    /// A session saved now.
    #[must_use]
    pub fn now(session_id: impl Into<String>, seq: u64, resume_url: impl Into<String>) -> Self {
        Self {
            session_id: session_id.into(),
            seq,
            resume_url: resume_url.into(),
            saved_at_ms: unix_millis(),
        }
    }

    /// How old the record is at `now_ms`; zero when `saved_at_ms` lies in the future (clock
    /// skew between pods).
    #[must_use]
    pub fn age_at(&self, now_ms: u64) -> Duration {
        Duration::from_millis(now_ms.saturating_sub(self.saved_at_ms))
    }
}

/// Why the sessions bucket could not be used.
#[derive(Debug, thiserror::Error)]
pub enum SessionStoreError {
    /// The bucket could neither be found nor created.
    #[error("cannot open or create the KV bucket {bucket}")]
    Open {
        /// The bucket.
        bucket: String,
        /// Why.
        #[source]
        source: jetstream::context::CreateKeyValueError,
    },
    /// A session could not be written.
    #[error("cannot save the session under {key}")]
    Save {
        /// The key.
        key: String,
        /// Why.
        #[source]
        source: kv::PutError,
    },
    /// A session could not be read.
    #[error("cannot read the session under {key}")]
    Load {
        /// The key.
        key: String,
        /// Why.
        #[source]
        source: kv::EntryError,
    },
    /// The stored value is not a [`SavedSession`].
    #[error("the session under {key} is not valid JSON of a saved session")]
    Decode {
        /// The key.
        key: String,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// A session could not be serialized.
    #[error("cannot serialize the session for {key}")]
    Encode {
        /// The key.
        key: String,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// A session could not be removed.
    #[error("cannot clear the session under {key}")]
    Clear {
        /// The key.
        key: String,
        /// Why.
        #[source]
        source: kv::DeleteError,
    },
}

/// The sessions of one bot's shards, shared by every gateway process of the bot. Cheap to clone.
#[derive(Debug, Clone)]
pub struct SessionStore {
    kv: kv::Store,
}

impl SessionStore {
    /// Opens the bot's sessions bucket, creating it (history 1, file storage, max age
    /// [`BUCKET_MAX_AGE`]) when it does not exist. A bucket that exists with another
    /// configuration (for example made by the operator) is used as it is.
    ///
    /// # Errors
    /// [`SessionStoreError::Open`] when JetStream can neither find nor create it.
    pub async fn open(js: &jetstream::Context, bot: &BotKey) -> Result<Self, SessionStoreError> {
        let bucket = bot.sessions_bucket();
        let kv = open_bucket(
            js,
            kv::Config {
                bucket: bucket.clone(),
                description: "shardyard: resumable gateway sessions, one key per shard".into(),
                history: 1,
                max_age: BUCKET_MAX_AGE,
                storage: jetstream::stream::StorageType::File,
                ..Default::default()
            },
        )
        .await
        .map_err(|source| SessionStoreError::Open { bucket, source })?;
        Ok(Self { kv })
    }

    /// Saves (replaces) shard `shard` of `total`'s session.
    ///
    /// # Errors
    /// [`SessionStoreError::Save`] when JetStream did not store it.
    pub async fn save(
        &self,
        total: u32,
        shard: u32,
        session: &SavedSession,
    ) -> Result<(), SessionStoreError> {
        let key = keys::session(total, shard);
        let value = match serde_json::to_vec(session) {
            Ok(value) => Bytes::from(value),
            Err(source) => return Err(SessionStoreError::Encode { key, source }),
        };
        self.kv
            .put(&key, value)
            .await
            .map(|_| ())
            .map_err(|source| SessionStoreError::Save { key, source })
    }

    /// The saved session of shard `shard` of `total`, if there is one younger than `max_age`
    /// (by its `saved_at_ms`; pass [`FRESH_FOR`] unless you know better). A cleared or missing
    /// session is `None`.
    ///
    /// # Errors
    /// [`SessionStoreError::Load`] when the bucket cannot be read, [`SessionStoreError::Decode`]
    /// when the value is not a saved session. Either way the caller should identify anew.
    pub async fn load(
        &self,
        total: u32,
        shard: u32,
        max_age: Duration,
    ) -> Result<Option<SavedSession>, SessionStoreError> {
        let key = keys::session(total, shard);
        let entry = match self.kv.entry(key.as_str()).await {
            Ok(Some(entry)) if entry.operation == kv::Operation::Put => entry,
            Ok(_) => return Ok(None),
            Err(source) => return Err(SessionStoreError::Load { key, source }),
        };
        let session: SavedSession = serde_json::from_slice(&entry.value)
            .map_err(|source| SessionStoreError::Decode { key, source })?;
        if session.session_id.is_empty() || session.age_at(unix_millis()) >= max_age {
            return Ok(None);
        }
        Ok(Some(session))
    }

    /// Forgets shard `shard` of `total`'s session: after a new session replaced it, or after
    /// Discord invalidated it.
    ///
    /// # Errors
    /// [`SessionStoreError::Clear`] when JetStream did not store the deletion.
    pub async fn clear(&self, total: u32, shard: u32) -> Result<(), SessionStoreError> {
        let key = keys::session(total, shard);
        self.kv
            .delete(&key)
            .await
            .map_err(|source| SessionStoreError::Clear { key, source })
    }
}

/// Opens a KV bucket, creating it with `config` when it does not exist. Losing a creation race,
/// or finding the bucket made with another configuration, falls back to opening it as it is.
pub(crate) async fn open_bucket(
    js: &jetstream::Context,
    config: kv::Config,
) -> Result<kv::Store, jetstream::context::CreateKeyValueError> {
    if let Ok(store) = js.get_key_value(config.bucket.as_str()).await {
        return Ok(store);
    }
    let bucket = config.bucket.clone();
    match js.create_key_value(config).await {
        Ok(store) => Ok(store),
        Err(create) => js.get_key_value(bucket).await.map_err(|_| create),
    }
}

/// The wall clock in unix milliseconds (0 before 1970).
pub(crate) fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use shardyard_protocol::BotKey;
    use shardyard_protocol::names::keys;

    use super::{FRESH_FOR, SavedSession, SessionStore, SessionStoreError, unix_millis};

    fn bot() -> BotKey {
        BotKey::local("sessbot").unwrap()
    }

    #[tokio::test]
    async fn save_load_clear_and_freshness() -> anyhow::Result<()> {
        let nats = shardyard_tests::NatsServer::start().await?;
        let js = nats.jetstream().await?;
        let store = SessionStore::open(&js, &bot()).await?;
        // Opening again is idempotent.
        let _again = SessionStore::open(&js, &bot()).await?;

        assert_eq!(
            store.load(16, 3, FRESH_FOR).await?,
            None,
            "nothing saved yet"
        );

        let saved = SavedSession::now("abc", 42, "wss://resume.example");
        store.save(16, 3, &saved).await?;
        assert_eq!(store.load(16, 3, FRESH_FOR).await?, Some(saved.clone()));
        // Other shards, and the same shard of another shard count, are other keys.
        assert_eq!(store.load(16, 4, FRESH_FOR).await?, None);
        assert_eq!(store.load(32, 3, FRESH_FOR).await?, None);

        // A later save replaces the earlier one.
        let later = SavedSession::now("abc", 99, "wss://resume.example");
        store.save(16, 3, &later).await?;
        assert_eq!(store.load(16, 3, FRESH_FOR).await?.map(|s| s.seq), Some(99));

        // Stale sessions are not offered.
        let stale = SavedSession {
            saved_at_ms: unix_millis() - 10 * 60 * 1000,
            ..later.clone()
        };
        store.save(16, 3, &stale).await?;
        assert_eq!(store.load(16, 3, FRESH_FOR).await?, None, "10 min old");
        assert_eq!(
            store.load(16, 3, Duration::from_secs(3600)).await?,
            Some(stale),
            "fresh enough for a longer max age"
        );

        // A session saved by a clock slightly ahead still counts as fresh.
        let ahead = SavedSession {
            saved_at_ms: unix_millis() + 2000,
            ..later.clone()
        };
        store.save(16, 3, &ahead).await?;
        assert_eq!(store.load(16, 3, FRESH_FOR).await?, Some(ahead));

        store.clear(16, 3).await?;
        assert_eq!(store.load(16, 3, FRESH_FOR).await?, None, "cleared");
        // Clearing twice, or a key never written, is fine.
        store.clear(16, 3).await?;
        store.clear(16, 9).await?;

        // Saving after a clear works again.
        store.save(16, 3, &later).await?;
        assert_eq!(store.load(16, 3, FRESH_FOR).await?, Some(later));
        Ok(())
    }

    #[tokio::test]
    async fn two_stores_see_each_others_sessions() -> anyhow::Result<()> {
        let nats = shardyard_tests::NatsServer::start().await?;
        // Two connections, as two gateway processes would have.
        let a = SessionStore::open(&nats.jetstream().await?, &bot()).await?;
        let b = SessionStore::open(&nats.jetstream().await?, &bot()).await?;

        let session = SavedSession::now("from-a", 7, "wss://a");
        a.save(4, 1, &session).await?;
        assert_eq!(b.load(4, 1, FRESH_FOR).await?, Some(session));

        let newer = SavedSession::now("from-b", 8, "wss://b");
        b.save(4, 1, &newer).await?;
        assert_eq!(a.load(4, 1, FRESH_FOR).await?, Some(newer));

        b.clear(4, 1).await?;
        assert_eq!(a.load(4, 1, FRESH_FOR).await?, None);
        Ok(())
    }

    #[tokio::test]
    async fn the_bucket_follows_the_contract() -> anyhow::Result<()> {
        let nats = shardyard_tests::NatsServer::start().await?;
        let js = nats.jetstream().await?;
        let store = SessionStore::open(&js, &bot()).await?;
        store
            .save(2, 1, &SavedSession::now("s", 1, "wss://r"))
            .await?;

        let kv = js.get_key_value(bot().sessions_bucket()).await?;
        let status = kv.status().await?;
        assert_eq!(status.history(), 1);
        assert_eq!(status.max_age(), super::BUCKET_MAX_AGE);
        let raw = kv
            .get(keys::session(2, 1))
            .await?
            .ok_or_else(|| anyhow::anyhow!("no value under shard.2.1"))?;
        let json: serde_json::Value = serde_json::from_slice(&raw)?;
        let mut fields: Vec<&str> = json
            .as_object()
            .ok_or_else(|| anyhow::anyhow!("not an object: {json}"))?
            .keys()
            .map(String::as_str)
            .collect();
        fields.sort_unstable();
        assert_eq!(fields, ["resume_url", "saved_at_ms", "seq", "session_id"]);

        // A value that is not a session is reported, not taken for one.
        kv.put(keys::session(2, 0), "garbage".into()).await?;
        assert!(matches!(
            store.load(2, 0, FRESH_FOR).await,
            Err(SessionStoreError::Decode { .. })
        ));
        Ok(())
    }
}
