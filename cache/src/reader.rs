//! [`CacheReader`]: typed, read-only lookups in a bot's cache bucket.

use std::time::Duration;

use async_nats::jetstream::{self, kv};
use bytes::Bytes;
use futures_util::{StreamExt as _, TryStreamExt as _};
use serde::de::DeserializeOwned;
use shardyard_protocol::names::BotKey;
use shardyard_protocol::names::keys::{self, cache_kind};

use crate::schema::{Channel, Counts, Guild, Member, Role, User, VoiceState};

/// How many values are read at once for a list (a guild's channels or roles).
const CONCURRENT_GETS: usize = 32;

/// How long a key listing may wait for the next key before giving up.
const LISTING_STALL: Duration = Duration::from_secs(5);

/// Reading the cache failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The bucket could not be opened (it is created by `shardyard cache`).
    #[error("opening the cache bucket {bucket}")]
    Open {
        /// The bucket.
        bucket: String,
        /// Why.
        #[source]
        source: async_nats::Error,
    },
    /// NATS did not answer a read.
    #[error("reading {key} from the cache")]
    Kv {
        /// The key or filter.
        key: String,
        /// Why.
        #[source]
        source: async_nats::Error,
    },
    /// A stored value is not what the schema says.
    #[error("the cached value of {key} does not match its schema")]
    Decode {
        /// The key.
        key: String,
        /// What serde said.
        #[source]
        source: serde_json::Error,
    },
}

/// Typed lookups over a bot's cache bucket (see [`crate::schema`] for what each value is). Cheap
/// to clone; every method is one or a few KV reads.
///
/// ```no_run
/// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
/// use shardyard_cache::CacheReader;
/// use shardyard_protocol::BotKey;
///
/// let client = async_nats::connect("nats://127.0.0.1:4222").await?;
/// let jetstream = async_nats::jetstream::new(client);
/// let cache = CacheReader::open(&jetstream, &BotKey::local("mybot")?).await?;
/// if let Some(guild) = cache.guild(81384788765712384).await? {
///     println!("{:?} has {} members", guild.name, guild.member_count);
///     for channel in cache.channels(guild.id.0).await?.unwrap_or_default() {
///         println!("  #{}", channel.name.unwrap_or_default());
///     }
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct CacheReader {
    kv: kv::Store,
}

impl CacheReader {
    /// A reader over an open bucket.
    #[must_use]
    pub fn new(kv: kv::Store) -> Self {
        Self { kv }
    }

    /// Opens `bot`'s cache bucket.
    ///
    /// # Errors
    /// [`ReadError::Open`] when the bucket does not exist (yet) or NATS does not answer.
    pub async fn open(jetstream: &jetstream::Context, bot: &BotKey) -> Result<Self, ReadError> {
        let bucket = bot.cache_bucket();
        let kv = jetstream
            .get_key_value(&bucket)
            .await
            .map_err(|e| ReadError::Open {
                bucket,
                source: e.into(),
            })?;
        Ok(Self::new(kv))
    }

    /// The bucket.
    #[must_use]
    pub fn store(&self) -> &kv::Store {
        &self.kv
    }

    /// The raw JSON stored at `key`.
    ///
    /// # Errors
    /// [`ReadError::Kv`] when NATS does not answer.
    pub async fn raw(&self, key: &str) -> Result<Option<Bytes>, ReadError> {
        self.kv.get(key).await.map_err(|e| ReadError::Kv {
            key: key.to_owned(),
            source: e.into(),
        })
    }

    async fn typed<T: DeserializeOwned>(&self, key: String) -> Result<Option<T>, ReadError> {
        match self.raw(&key).await? {
            None => Ok(None),
            Some(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|source| ReadError::Decode { key, source }),
        }
    }

    /// A guild (`guild.<id>`).
    ///
    /// # Errors
    /// [`ReadError`] when NATS does not answer or the value is not a guild.
    pub async fn guild(&self, id: u64) -> Result<Option<Guild>, ReadError> {
        self.typed(keys::guild(id)).await
    }

    /// A channel or thread (`channel.<id>`).
    ///
    /// # Errors
    /// [`ReadError`] when NATS does not answer or the value is not a channel.
    pub async fn channel(&self, id: u64) -> Result<Option<Channel>, ReadError> {
        self.typed(keys::channel(id)).await
    }

    /// A role of a guild (`role.<guild>.<id>`).
    ///
    /// # Errors
    /// [`ReadError`] when NATS does not answer or the value is not a role.
    pub async fn role(&self, guild: u64, id: u64) -> Result<Option<Role>, ReadError> {
        self.typed(keys::role(guild, id)).await
    }

    /// A member (`member.<guild>.<user>`).
    ///
    /// # Errors
    /// [`ReadError`] when NATS does not answer or the value is not a member.
    pub async fn member(&self, guild: u64, user: u64) -> Result<Option<Member>, ReadError> {
        self.typed(keys::member(guild, user)).await
    }

    /// A user (`user.<id>`).
    ///
    /// # Errors
    /// [`ReadError`] when NATS does not answer or the value is not a user.
    pub async fn user(&self, id: u64) -> Result<Option<User>, ReadError> {
        self.typed(keys::user(id)).await
    }

    /// A user's voice state in a guild (`voice.<guild>.<user>`).
    ///
    /// # Errors
    /// [`ReadError`] when NATS does not answer or the value is not a voice state.
    pub async fn voice_state(
        &self,
        guild: u64,
        user: u64,
    ) -> Result<Option<VoiceState>, ReadError> {
        self.typed(keys::voice_state(guild, user)).await
    }

    /// A guild's emojis (`emojis.<guild>`), as Discord's emoji objects.
    ///
    /// # Errors
    /// [`ReadError`] when NATS does not answer or the value is not a list.
    pub async fn emojis(&self, guild: u64) -> Result<Option<Vec<serde_json::Value>>, ReadError> {
        self.typed(keys::emojis(guild)).await
    }

    /// A guild's channels and threads, in id order; `None` when the guild is not cached.
    ///
    /// # Errors
    /// [`ReadError`] when NATS does not answer or a value does not match its schema.
    pub async fn channels(&self, guild: u64) -> Result<Option<Vec<Channel>>, ReadError> {
        let Some(g) = self.guild(guild).await? else {
            return Ok(None);
        };
        self.many(g.channel_ids.iter().map(|id| keys::channel(id.0)))
            .await
            .map(Some)
    }

    /// A guild's roles, in id order; `None` when the guild is not cached.
    ///
    /// # Errors
    /// [`ReadError`] when NATS does not answer or a value does not match its schema.
    pub async fn roles(&self, guild: u64) -> Result<Option<Vec<Role>>, ReadError> {
        let Some(g) = self.guild(guild).await? else {
            return Ok(None);
        };
        self.many(g.role_ids.iter().map(|id| keys::role(guild, id.0)))
            .await
            .map(Some)
    }

    /// The user ids of a guild's cached members, ascending (a key listing: its cost grows with
    /// the guild's member count).
    ///
    /// # Errors
    /// [`ReadError::Kv`] when NATS does not answer.
    pub async fn member_ids(&self, guild: u64) -> Result<Vec<u64>, ReadError> {
        let mut ids: Vec<u64> = self
            .keys(&keys::members_of(guild))
            .await?
            .iter()
            .filter_map(|k| k.rsplit('.').next()?.parse().ok())
            .collect();
        ids.sort_unstable();
        Ok(ids)
    }

    /// Values of `keys`, skipping keys without one (a value deleted between two reads).
    async fn many<T: DeserializeOwned>(
        &self,
        keys: impl Iterator<Item = String>,
    ) -> Result<Vec<T>, ReadError> {
        let values: Vec<Option<T>> = futures_util::stream::iter(keys.map(|k| self.typed(k)))
            .buffered(CONCURRENT_GETS)
            .try_collect()
            .await?;
        Ok(values.into_iter().flatten().collect())
    }

    /// Every existing key matching a filter (`member.<guild>.*`, `guild.*`, `>` for all),
    /// unordered. Reads only headers, one message per key.
    ///
    /// # Errors
    /// [`ReadError::Kv`] when NATS does not answer.
    pub async fn keys(&self, filter: &str) -> Result<Vec<String>, ReadError> {
        let error = |source: async_nats::Error| ReadError::Kv {
            key: filter.to_owned(),
            source,
        };
        let consumer = self
            .kv
            .stream
            .create_consumer(jetstream::consumer::pull::OrderedConfig {
                filter_subject: format!("{}{filter}", self.kv.prefix),
                headers_only: true,
                deliver_policy: jetstream::consumer::DeliverPolicy::LastPerSubject,
                ..Default::default()
            })
            .await
            .map_err(|e| error(e.into()))?;
        let mut keys = Vec::new();
        if consumer.cached_info().num_pending == 0 {
            return Ok(keys);
        }
        let mut messages = consumer.messages().await.map_err(|e| error(e.into()))?;
        loop {
            let message = match tokio::time::timeout(LISTING_STALL, messages.next()).await {
                Ok(Some(message)) => message.map_err(|e| error(e.into()))?,
                Ok(None) => break,
                Err(_) => return Err(error("the key listing stalled".into())),
            };
            let pending = message.info().map_err(&error)?.pending;
            let deleted = message
                .headers
                .as_ref()
                .and_then(|h| h.get("KV-Operation"))
                .is_some_and(|op| op.as_str() == "DEL" || op.as_str() == "PURGE");
            if !deleted && let Some(key) = message.subject.strip_prefix(self.kv.prefix.as_str()) {
                keys.push(key.to_owned());
            }
            if pending == 0 {
                break;
            }
        }
        Ok(keys)
    }

    /// How many keys of each kind the cache holds (a listing of every key: its cost grows with
    /// the cache's size; meant for dashboards, not hot paths).
    ///
    /// # Errors
    /// [`ReadError::Kv`] when NATS does not answer.
    pub async fn counts(&self) -> Result<Counts, ReadError> {
        let mut counts = Counts::default();
        for key in self.keys(">").await? {
            let counter = match keys::kind_of(&key) {
                cache_kind::GUILD => &mut counts.guilds,
                cache_kind::CHANNEL => &mut counts.channels,
                cache_kind::ROLE => &mut counts.roles,
                cache_kind::MEMBER => &mut counts.members,
                cache_kind::USER => &mut counts.users,
                cache_kind::VOICE => &mut counts.voice_states,
                cache_kind::PRESENCE => &mut counts.presences,
                cache_kind::EMOJIS => &mut counts.emoji_lists,
                _ => continue,
            };
            *counter += 1;
        }
        Ok(counts)
    }
}
