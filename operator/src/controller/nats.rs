//! The bot's NATS resources, which the operator owns: the event stream and the dead-letter
//! stream with the spec's limits, and the KV buckets (sessions, identify, cache, control).
//! Ensured idempotently on every reconcile: a stream that exists is updated to the spec, so an
//! edited limit is applied; deleted with the bot unless `spec.nats.onDelete` is `Retain`.

use std::time::Duration;

use async_nats::jetstream::{self, kv, stream};
use shardyard_protocol::BotKey;
use shardyard_protocol::names::{ACTIVE_GENERATION_KEY, active_generation_value, keys};

use crate::plan::quantity;
use crate::resource::{DiscordBotSpec, StreamStorage};

/// JetStream's duplicate window for the event stream (DESIGN.md: five minutes), within which a
/// resume's replay and publish retries are de-duplicated by `Nats-Msg-Id`.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(5 * 60);
/// How long an unused session key is kept (the gateways' own default, `BUCKET_MAX_AGE`).
const SESSIONS_MAX_AGE: Duration = Duration::from_secs(3600);

/// Why the NATS resources could not be ensured or removed.
#[derive(Debug, thiserror::Error)]
pub enum NatsError {
    /// No connection.
    #[error("connecting to NATS at {url}")]
    Connect {
        /// The URL, without credentials.
        url: String,
        /// Why.
        #[source]
        source: async_nats::ConnectError,
    },
    /// A limit of the spec cannot be used.
    #[error("{field}: {reason}")]
    Limit {
        /// The field.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// JetStream refused.
    #[error("JetStream refused {what}: {reason}")]
    JetStream {
        /// What was asked.
        what: String,
        /// Its answer.
        reason: String,
    },
}

/// The stream configurations the spec asks for: the event stream and the dead-letter stream.
///
/// # Errors
/// [`NatsError::Limit`] for an age or size that does not parse.
pub fn stream_configs(
    bot: &BotKey,
    spec: &DiscordBotSpec,
) -> Result<(stream::Config, stream::Config), NatsError> {
    let storage = match spec.stream.storage {
        StreamStorage::File => stream::StorageType::File,
        StreamStorage::Memory => stream::StorageType::Memory,
    };
    let replicas = usize::from(spec.stream.replicas.max(1));
    let events = stream::Config {
        name: bot.stream(),
        description: Some("shardyard: every event of the bot's gateways".to_owned()),
        subjects: vec![bot.events_filter()],
        storage,
        num_replicas: replicas,
        duplicate_window: DUPLICATE_WINDOW,
        discard: stream::DiscardPolicy::Old,
        max_age: age("spec.stream.maxAge", &spec.stream.max_age)?,
        max_bytes: bytes("spec.stream.maxBytes", &spec.stream.max_bytes)?,
        ..Default::default()
    };
    let dead = stream::Config {
        name: bot.dead_letter_stream(),
        description: Some("shardyard: events the workers gave up on, with the reason".to_owned()),
        subjects: vec![bot.dead_letter_filter()],
        storage,
        num_replicas: replicas,
        discard: stream::DiscardPolicy::Old,
        max_age: age(
            "spec.stream.deadLetter.maxAge",
            &spec.stream.dead_letter.max_age,
        )?,
        max_bytes: bytes(
            "spec.stream.deadLetter.maxBytes",
            &spec.stream.dead_letter.max_bytes,
        )?,
        ..Default::default()
    };
    Ok((events, dead))
}

/// The KV buckets' configurations.
#[must_use]
pub fn bucket_configs(bot: &BotKey, spec: &DiscordBotSpec) -> Vec<kv::Config> {
    let replicas = usize::from(spec.stream.replicas.max(1));
    let bucket = |name: String, description: &str, max_age: Duration| kv::Config {
        bucket: name,
        description: description.to_owned(),
        history: 1,
        max_age,
        storage: stream::StorageType::File,
        num_replicas: replicas,
        ..Default::default()
    };
    vec![
        bucket(
            bot.sessions_bucket(),
            "shardyard: resumable gateway sessions, one key per shard",
            SESSIONS_MAX_AGE,
        ),
        bucket(
            bot.identify_bucket(),
            "shardyard: identify leases per concurrency bucket, and the daily session-start budget",
            Duration::ZERO,
        ),
        bucket(
            bot.cache_bucket(),
            "shardyard central cache",
            Duration::ZERO,
        ),
        bucket(
            bot.control_bucket(),
            "shardyard: which gateway generation publishes",
            Duration::ZERO,
        ),
    ]
}

/// A connection to the bot's NATS.
///
/// # Errors
/// [`NatsError::Connect`].
pub async fn connect(url: &str) -> Result<async_nats::Client, NatsError> {
    async_nats::ConnectOptions::new()
        .name("shardyard-operator")
        .connection_timeout(Duration::from_secs(5))
        .connect(url)
        .await
        .map_err(|source| NatsError::Connect {
            url: without_credentials(url),
            source,
        })
}

/// Creates or updates the streams and creates the buckets; names the generations that publish.
///
/// # Errors
/// [`NatsError`] when JetStream refuses (a storage limit, a replica count the cluster lacks).
pub async fn ensure(
    js: &jetstream::Context,
    bot: &BotKey,
    spec: &DiscordBotSpec,
    publishing: &[u64],
) -> Result<(), NatsError> {
    let (events, dead) = stream_configs(bot, spec)?;
    for config in [events, dead] {
        let name = config.name.clone();
        let refused = |e: &dyn std::fmt::Display| NatsError::JetStream {
            what: format!("stream {name}"),
            reason: e.to_string(),
        };
        match js.get_stream(&name).await {
            Ok(mut existing) => {
                let current = existing
                    .info()
                    .await
                    .map_err(|e| refused(&e))?
                    .config
                    .clone();
                if differs(&current, &config) {
                    js.update_stream(config).await.map_err(|e| refused(&e))?;
                    tracing::info!(stream = %name, "stream limits updated to the spec");
                }
            }
            Err(_) => {
                js.create_stream(config).await.map_err(|e| refused(&e))?;
                tracing::info!(stream = %name, "stream created");
            }
        }
    }
    for config in bucket_configs(bot, spec) {
        let name = config.bucket.clone();
        if js.get_key_value(&name).await.is_err() {
            js.create_key_value(config)
                .await
                .map_err(|e| NatsError::JetStream {
                    what: format!("bucket {name}"),
                    reason: e.to_string(),
                })?;
            tracing::info!(bucket = %name, "bucket created");
        }
    }
    let control =
        js.get_key_value(bot.control_bucket())
            .await
            .map_err(|e| NatsError::JetStream {
                what: "the control bucket".to_owned(),
                reason: e.to_string(),
            })?;
    let wanted = active_generation_value(publishing);
    let current = control
        .get(ACTIVE_GENERATION_KEY)
        .await
        .map_err(|e| NatsError::JetStream {
            what: "the active generation".to_owned(),
            reason: e.to_string(),
        })?;
    if current.as_deref() != Some(wanted.as_bytes()) {
        control
            .put(ACTIVE_GENERATION_KEY, wanted.into())
            .await
            .map_err(|e| NatsError::JetStream {
                what: "the active generation".to_owned(),
                reason: e.to_string(),
            })?;
    }
    Ok(())
}

/// How old a shard's ready key may be and still count (the gateways rewrite it every 20 s while
/// their generation waits).
pub const READY_FRESH: Duration = Duration::from_secs(60);

/// Shards of `generation` (of `total`) whose ready key is there, and with `fresh_at_ms` younger
/// than [`READY_FRESH`] then (a generation waiting to publish keeps its keys fresh; the one that
/// publishes writes them once, when a shard becomes READY, and withdraws them when it stops).
///
/// # Errors
/// [`NatsError::JetStream`] when the control bucket cannot be read.
pub async fn ready_shards(
    js: &jetstream::Context,
    bot: &BotKey,
    generation: u64,
    total: u32,
    fresh_at_ms: Option<u64>,
) -> Result<u32, NatsError> {
    let refused = |e: &dyn std::fmt::Display| NatsError::JetStream {
        what: "the shards' ready keys".to_owned(),
        reason: e.to_string(),
    };
    let control = js
        .get_key_value(bot.control_bucket())
        .await
        .map_err(|e| refused(&e))?;
    let fresh_after = fresh_at_ms
        .map(|now| now.saturating_sub(u64::try_from(READY_FRESH.as_millis()).unwrap_or(0)));
    let mut ready = 0;
    for shard in 0..total {
        let Some(value) = control
            .get(keys::generation_ready(generation, shard))
            .await
            .map_err(|e| refused(&e))?
        else {
            continue;
        };
        let value: serde_json::Value = serde_json::from_slice(&value).unwrap_or_default();
        let fresh =
            fresh_after.is_none_or(|after| value["at_ms"].as_u64().is_some_and(|at| at >= after));
        if fresh && value["total"].as_u64() == Some(u64::from(total)) {
            ready += 1;
        }
    }
    Ok(ready)
}

/// Removes the ready keys of a generation that stopped.
pub async fn forget_ready(js: &jetstream::Context, bot: &BotKey, generation: u64, total: u32) {
    if let Ok(control) = js.get_key_value(bot.control_bucket()).await {
        for shard in 0..total {
            let _ = control
                .purge(keys::generation_ready(generation, shard))
                .await;
        }
    }
}

/// Session starts left today, as the gateways keep them (the identify bucket's `budget`), when
/// they have written it.
pub async fn identify_budget(js: &jetstream::Context, bot: &BotKey) -> Option<u32> {
    let bucket = js.get_key_value(bot.identify_bucket()).await.ok()?;
    let value = bucket.get(keys::IDENTIFY_BUDGET).await.ok()??;
    let value: serde_json::Value = serde_json::from_slice(&value).ok()?;
    value["remaining"]
        .as_u64()
        .and_then(|n| u32::try_from(n).ok())
}

/// Deletes the streams and buckets (a missing one is fine).
///
/// # Errors
/// [`NatsError::JetStream`] when JetStream refuses for another reason.
pub async fn remove(js: &jetstream::Context, bot: &BotKey) -> Result<(), NatsError> {
    let buckets = [
        bot.sessions_bucket(),
        bot.identify_bucket(),
        bot.cache_bucket(),
        bot.control_bucket(),
    ];
    for name in [bot.stream(), bot.dead_letter_stream()] {
        if js.get_stream(&name).await.is_ok() {
            js.delete_stream(&name)
                .await
                .map_err(|e| NatsError::JetStream {
                    what: format!("deleting stream {name}"),
                    reason: e.to_string(),
                })?;
        }
    }
    for name in buckets {
        if js.get_key_value(&name).await.is_ok() {
            js.delete_key_value(&name)
                .await
                .map_err(|e| NatsError::JetStream {
                    what: format!("deleting bucket {name}"),
                    reason: e.to_string(),
                })?;
        }
    }
    Ok(())
}

/// Whether the limits the operator owns differ.
/// Whether the stream's configuration differs from the spec's in what the spec sets. A zero
/// duplicate window (the dead-letter stream's) leaves it to the server, which fills in its
/// default: comparing that with zero would update the stream on every reconcile.
fn differs(current: &stream::Config, wanted: &stream::Config) -> bool {
    let window_differs =
        !wanted.duplicate_window.is_zero() && current.duplicate_window != wanted.duplicate_window;
    window_differs
        || (
            &current.subjects,
            current.max_age,
            current.max_bytes,
            current.discard,
            current.num_replicas,
        ) != (
            &wanted.subjects,
            wanted.max_age,
            wanted.max_bytes,
            wanted.discard,
            wanted.num_replicas,
        )
}

fn age(field: &'static str, text: &str) -> Result<Duration, NatsError> {
    let text = text.trim();
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    let (number, unit) = text.split_at(text.len().saturating_sub(1));
    let seconds: u64 = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => 0,
    };
    number
        .parse::<u64>()
        .ok()
        .filter(|_| seconds > 0)
        .and_then(|n| n.checked_mul(seconds))
        .map(Duration::from_secs)
        .ok_or_else(|| NatsError::Limit {
            field,
            reason: format!("{text:?} is not 0 or a whole number with s, m, h or d"),
        })
}

fn bytes(
    field: &'static str,
    value: &k8s_openapi::apimachinery::pkg::api::resource::Quantity,
) -> Result<i64, NatsError> {
    let bytes = quantity::bytes(value).map_err(|reason| NatsError::Limit { field, reason })?;
    // JetStream's spelling of no limit.
    Ok(if bytes == 0 {
        -1
    } else {
        i64::try_from(bytes).unwrap_or(i64::MAX)
    })
}

/// `nats://user:pass@host` → `nats://host`, for errors and logs.
#[must_use]
pub fn without_credentials(urls: &str) -> String {
    urls.split(',')
        .map(|url| {
            let url = url.trim();
            match url.split_once("://") {
                Some((scheme, rest)) => match rest.split_once('@') {
                    Some((_, host)) => format!("{scheme}://{host}"),
                    None => url.to_owned(),
                },
                None => url.rsplit('@').next().unwrap_or(url).to_owned(),
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// The bot's NATS URL (the operator's and the metrics API's), with the credentials from `spec.nats.credentialsSecret` when it names one.
pub async fn bot_url(
    client: &kube::Client,
    namespace: &str,
    bot: &crate::DiscordBot,
) -> Result<String, String> {
    let url = bot.spec.nats.url.clone();
    let Some(reference) = &bot.spec.nats.credentials_secret else {
        return Ok(url);
    };
    let secrets: kube::Api<k8s_openapi::api::core::v1::Secret> =
        kube::Api::namespaced(client.clone(), namespace);
    let credentials = secrets
        .get_opt(&reference.name)
        .await
        .map_err(|e| format!("reading Secret {namespace}/{}: {e}", reference.name))?
        .and_then(|s| s.data)
        .and_then(|data| data.get(&reference.key).cloned())
        .and_then(|bytes| String::from_utf8(bytes.0).ok())
        .ok_or_else(|| {
            format!(
                "Secret {namespace}/{} has no key {} with the NATS credentials",
                reference.name, reference.key
            )
        })?;
    Ok(crate::plan::with_nats_credentials(&url, credentials.trim()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource::DiscordBot;

    fn spec(extra: &str) -> DiscordBotSpec {
        let yaml = format!(
            "apiVersion: shardyard.dev/v1alpha1\nkind: DiscordBot\nmetadata: {{name: b}}\nspec:\n  \
             tokenSecret: {{name: t}}\n  nats: {{url: 'nats://n:4222'}}\n{extra}"
        );
        serde_saphyr::from_str::<DiscordBot>(&yaml).unwrap().spec
    }

    #[test]
    fn what_the_server_fills_in_is_not_a_difference_but_an_edited_limit_is() {
        let bot = BotKey::namespaced("prod", "mybot").unwrap();
        let (events, dead) = stream_configs(&bot, &spec("")).unwrap();
        // As the server answers: the dead-letter stream got its default duplicate window.
        let mut stored_dead = dead.clone();
        stored_dead.duplicate_window = Duration::from_secs(120);
        assert!(!differs(&stored_dead, &dead));
        assert!(!differs(&events, &events));
        let mut stored_events = events.clone();
        stored_events.duplicate_window = Duration::from_secs(120);
        assert!(differs(&stored_events, &events));
        stored_events = events.clone();
        stored_events.max_age = Duration::from_secs(60);
        assert!(differs(&stored_events, &events));
    }

    #[test]
    fn the_spec_limits_become_stream_configs() {
        let bot = BotKey::namespaced("prod", "mybot").unwrap();
        let (events, dead) = stream_configs(&bot, &spec("")).unwrap();
        assert_eq!(events.name, "SHARDYARD_PROD_MYBOT");
        assert_eq!(events.subjects, ["shardyard.prod_mybot.events.>"]);
        assert_eq!(events.max_age, Duration::from_secs(24 * 3600));
        assert_eq!(events.max_bytes, -1);
        assert_eq!(events.duplicate_window, DUPLICATE_WINDOW);
        assert_eq!(events.discard, stream::DiscardPolicy::Old);
        assert_eq!(dead.name, "SHARDYARD_PROD_MYBOT_DEAD");
        assert_eq!(dead.max_age, Duration::from_secs(14 * 86_400));
        assert_eq!(dead.max_bytes, 1 << 30);

        let (events, _) = stream_configs(
            &bot,
            &spec("  stream: {maxAge: 90m, maxBytes: 10Gi, storage: Memory, replicas: 3}\n"),
        )
        .unwrap();
        assert_eq!(events.max_age, Duration::from_secs(90 * 60));
        assert_eq!(events.max_bytes, 10 << 30);
        assert_eq!(events.storage, stream::StorageType::Memory);
        assert_eq!(events.num_replicas, 3);
        let error = stream_configs(&bot, &spec("  stream: {maxAge: 1w}\n")).unwrap_err();
        assert!(
            error.to_string().starts_with("spec.stream.maxAge"),
            "{error}"
        );
    }

    #[test]
    fn credentials_never_show_in_urls_for_logs() {
        assert_eq!(
            without_credentials("nats://u:p@a:4222, tls://tok@b:4222,nats://c:4222"),
            "nats://a:4222,tls://b:4222,nats://c:4222"
        );
    }
}
