//! A worker's configuration, from code or from the environment the operator injects
//! (`SHARDYARD_*`, listed in [`env`](mod@env) and in `worker/README.md`).

use std::time::Duration;

use shardyard_protocol::{BotKey, InvalidBotKey};

use crate::Backoff;

/// The environment variables a worker reads ([`WorkerConfig::from_env`]).
pub mod env {
    /// The bot's key (required).
    pub const BOT: &str = "SHARDYARD_BOT";
    /// The NATS server URL (required).
    pub const NATS_URL: &str = "SHARDYARD_NATS_URL";
    /// The REST proxy, `http://host:port` (required).
    pub const REST_URL: &str = "SHARDYARD_REST_URL";
    /// The worker group: its own durable consumer (`workers-<group>`). Default: none (`workers`).
    pub const GROUP: &str = "SHARDYARD_WORKER_GROUP";
    /// Events handled at once (default 64).
    pub const CONCURRENCY: &str = "SHARDYARD_WORKER_CONCURRENCY";
    /// Deliveries of an event before it is dead-lettered (default 5).
    pub const MAX_DELIVER: &str = "SHARDYARD_WORKER_MAX_DELIVER";
    /// Seconds an unacknowledged delivery waits before JetStream redelivers it (default 30).
    pub const ACK_WAIT: &str = "SHARDYARD_WORKER_ACK_WAIT";
    /// Milliseconds before the first retry of a failed event; doubles each time (default 1000).
    pub const RETRY_BASE_MS: &str = "SHARDYARD_WORKER_RETRY_BASE_MS";
    /// The longest wait before a retry, in milliseconds (default 60000).
    pub const RETRY_MAX_MS: &str = "SHARDYARD_WORKER_RETRY_MAX_MS";
    /// Seconds in-flight events may take to finish on shutdown (default 20).
    pub const SHUTDOWN_GRACE: &str = "SHARDYARD_WORKER_SHUTDOWN_GRACE";
    /// `all` (default: a new consumer starts at the stream's first event) or `new`.
    pub const DELIVER: &str = "SHARDYARD_WORKER_DELIVER";
    /// `true` for ordering mode (events of a guild one at a time, in stream order).
    pub const ORDERED: &str = "SHARDYARD_WORKER_ORDERED";
    /// The shard total for gateway commands until an event says it.
    pub const SHARDS: &str = "SHARDYARD_SHARDS";
    /// Seconds a REST request may wait for its turn at the proxy's rate limits (default 300).
    pub const REST_MAX_WAIT: &str = "SHARDYARD_WORKER_REST_MAX_WAIT";
}

/// [`WorkerConfig::rest_max_wait`] by default: five minutes.
pub const DEFAULT_REST_MAX_WAIT: Duration = Duration::from_secs(300);

/// Where a new durable consumer starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeliverFrom {
    /// The first event the stream holds: nothing published before the consumer existed is
    /// missed.
    #[default]
    All,
    /// Events published after the consumer was created.
    New,
}

/// How a worker connects and consumes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerConfig {
    /// The bot whose events are consumed.
    pub bot: BotKey,
    /// NATS server URL(s), comma separated.
    pub nats_url: String,
    /// The REST proxy, `http://host:port` (a path such as `/api` is ignored).
    pub rest_url: String,
    /// The worker group: `None` shares the default durable consumer `workers`.
    pub group: Option<String>,
    /// Events handled at once (and at most this many more pulled ahead).
    pub concurrency: usize,
    /// Deliveries of an event before it is dead-lettered.
    pub max_deliver: u32,
    /// How long a delivery may go unacknowledged; long handlers extend it every half of it.
    pub ack_wait: Duration,
    /// Waits before retries of a failed event.
    pub retry: Backoff,
    /// How long in-flight events may take to finish on shutdown before they are handed back.
    pub shutdown_grace: Duration,
    /// Where a new consumer starts.
    pub deliver: DeliverFrom,
    /// Ordering mode: events of one guild one at a time, in stream order.
    pub ordered: bool,
    /// The shard total for gateway commands until an event says it.
    pub shards: Option<u32>,
    /// How long a handler's REST request may wait for its turn at the proxy's rate limits
    /// (sent as `X-Shardyard-Max-Wait`). Past it the proxy answers 429, which twilight-http
    /// re-sends (paced by the proxy's refusal hold), so it should exceed any queue the bot's
    /// workers can build on one bucket: about `concurrency` × replicas × the bucket's
    /// interval between requests (1 s for a channel's messages).
    pub rest_max_wait: Duration,
}

impl WorkerConfig {
    /// The defaults for `bot`, with NATS at `nats_url` and the REST proxy at `rest_url`.
    #[must_use]
    pub fn new(bot: BotKey, nats_url: impl Into<String>, rest_url: impl Into<String>) -> Self {
        Self {
            bot,
            nats_url: nats_url.into(),
            rest_url: rest_url.into(),
            group: None,
            concurrency: 64,
            max_deliver: 5,
            ack_wait: Duration::from_secs(30),
            retry: Backoff::default(),
            shutdown_grace: Duration::from_secs(20),
            deliver: DeliverFrom::All,
            ordered: false,
            shards: None,
            rest_max_wait: DEFAULT_REST_MAX_WAIT,
        }
    }

    /// The configuration from the process environment ([`env`](mod@env)).
    ///
    /// # Errors
    /// [`ConfigError`] when a required variable is missing or one is invalid.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// The configuration from `lookup` (a variable's value by name), for tests and for
    /// sources other than the process environment.
    ///
    /// # Errors
    /// [`ConfigError`] when a required variable is missing or one is invalid.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |name: &'static str| lookup(name).filter(|v| !v.trim().is_empty());
        let required = |name: &'static str| get(name).ok_or(ConfigError::Missing(name));
        let bot = BotKey::parse(required(env::BOT)?.trim()).map_err(ConfigError::Bot)?;
        let mut config = Self::new(bot, required(env::NATS_URL)?, required(env::REST_URL)?);
        config.group = get(env::GROUP);
        if let Some(v) = get(env::CONCURRENCY) {
            config.concurrency = number(env::CONCURRENCY, &v)?;
        }
        if let Some(v) = get(env::MAX_DELIVER) {
            config.max_deliver = number(env::MAX_DELIVER, &v)?;
        }
        if let Some(v) = get(env::ACK_WAIT) {
            config.ack_wait = Duration::from_secs(number(env::ACK_WAIT, &v)?);
        }
        if let Some(v) = get(env::RETRY_BASE_MS) {
            config.retry.base = Duration::from_millis(number(env::RETRY_BASE_MS, &v)?);
        }
        if let Some(v) = get(env::RETRY_MAX_MS) {
            config.retry.max = Duration::from_millis(number(env::RETRY_MAX_MS, &v)?);
        }
        if let Some(v) = get(env::SHUTDOWN_GRACE) {
            config.shutdown_grace = Duration::from_secs(number(env::SHUTDOWN_GRACE, &v)?);
        }
        if let Some(v) = get(env::DELIVER) {
            config.deliver = match v.trim() {
                "all" => DeliverFrom::All,
                "new" => DeliverFrom::New,
                _ => return Err(invalid(env::DELIVER, &v, "use all or new")),
            };
        }
        if let Some(v) = get(env::ORDERED) {
            config.ordered = match v.trim() {
                "true" | "1" => true,
                "false" | "0" => false,
                _ => return Err(invalid(env::ORDERED, &v, "use true or false")),
            };
        }
        if let Some(v) = get(env::SHARDS) {
            config.shards = Some(number(env::SHARDS, &v)?);
        }
        if let Some(v) = get(env::REST_MAX_WAIT) {
            config.rest_max_wait = Duration::from_secs(number(env::REST_MAX_WAIT, &v)?);
        }
        config.validate()?;
        Ok(config)
    }

    /// Checks the values that must be positive.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] for a zero concurrency, `max_deliver`, `ack_wait` or shard
    /// total, or a group that is not a DNS label.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.concurrency == 0 {
            return Err(invalid(env::CONCURRENCY, "0", "at least 1"));
        }
        if self.max_deliver == 0 {
            return Err(invalid(env::MAX_DELIVER, "0", "at least 1"));
        }
        if self.ack_wait < Duration::from_secs(1) {
            return Err(invalid(env::ACK_WAIT, "0", "at least 1 second"));
        }
        if self.shards == Some(0) {
            return Err(invalid(env::SHARDS, "0", "at least 1"));
        }
        if let Some(group) = &self.group
            && !shardyard_protocol::names::is_dns_label(group)
        {
            return Err(invalid(env::GROUP, group, "use a DNS label"));
        }
        Ok(())
    }
}

fn number<T: std::str::FromStr>(name: &'static str, value: &str) -> Result<T, ConfigError> {
    value
        .trim()
        .parse()
        .map_err(|_| invalid(name, value, "not a whole number"))
}

fn invalid(name: &'static str, value: &str, reason: &'static str) -> ConfigError {
    ConfigError::Invalid {
        name,
        value: value.to_owned(),
        reason,
    }
}

/// A configuration that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A required variable is not set.
    #[error("{0} is not set")]
    Missing(&'static str),
    /// The bot key is not valid.
    #[error("SHARDYARD_BOT")]
    Bot(#[source] InvalidBotKey),
    /// A variable's value cannot be used.
    #[error("{name}={value:?}: {reason}")]
    Invalid {
        /// The variable.
        name: &'static str,
        /// Its value.
        value: String,
        /// What is wrong.
        reason: &'static str,
    },
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn lookup(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn the_environment_configures_a_worker() {
        let config = WorkerConfig::from_lookup(lookup(&[
            (env::BOT, "prod_mybot"),
            (env::NATS_URL, "nats://nats:4222"),
            (env::REST_URL, "http://mybot-rest:8080"),
            (env::GROUP, "commands"),
            (env::CONCURRENCY, "8"),
            (env::MAX_DELIVER, "3"),
            (env::RETRY_BASE_MS, "50"),
            (env::DELIVER, "new"),
            (env::ORDERED, "true"),
            (env::SHARDS, "16"),
            (env::REST_MAX_WAIT, "90"),
        ]))
        .unwrap();
        assert_eq!(config.bot.as_str(), "prod_mybot");
        assert_eq!(config.group.as_deref(), Some("commands"));
        assert_eq!((config.concurrency, config.max_deliver), (8, 3));
        assert_eq!(config.retry.base, Duration::from_millis(50));
        assert_eq!(config.retry.max, Duration::from_secs(60));
        assert_eq!(config.ack_wait, Duration::from_secs(30));
        assert_eq!(config.deliver, DeliverFrom::New);
        assert!(config.ordered);
        assert_eq!(config.shards, Some(16));
        assert_eq!(config.rest_max_wait, Duration::from_secs(90));
        let defaults = WorkerConfig::from_lookup(lookup(&[
            (env::BOT, "b"),
            (env::NATS_URL, "nats://x"),
            (env::REST_URL, "http://r"),
        ]))
        .unwrap();
        assert_eq!(defaults.rest_max_wait, DEFAULT_REST_MAX_WAIT);
    }

    #[test]
    fn missing_and_invalid_values_are_named() {
        let error = WorkerConfig::from_lookup(lookup(&[(env::BOT, "b")])).unwrap_err();
        assert_eq!(error, ConfigError::Missing(env::NATS_URL));
        let base = [
            (env::BOT, "b"),
            (env::NATS_URL, "nats://x"),
            (env::REST_URL, "http://r"),
        ];
        for (name, value) in [
            (env::CONCURRENCY, "0"),
            (env::MAX_DELIVER, "many"),
            (env::DELIVER, "latest"),
            (env::GROUP, "Not_A_Label"),
            (env::REST_MAX_WAIT, "5m"),
        ] {
            let mut pairs = base.to_vec();
            pairs.push((name, value));
            let error = WorkerConfig::from_lookup(lookup(&pairs)).unwrap_err();
            assert!(error.to_string().starts_with(name), "{error}");
        }
        let error = WorkerConfig::from_lookup(lookup(&[
            (env::BOT, "Bad Bot"),
            (env::NATS_URL, "nats://x"),
            (env::REST_URL, "http://r"),
        ]))
        .unwrap_err();
        assert!(matches!(error, ConfigError::Bot(_)));
    }
}
