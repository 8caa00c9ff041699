//! What every reconcile shares: the Kubernetes client, the operator's defaults, Discord's
//! answers cached for a minute (so `GET /gateway/bot` is never called in a hot loop), the Event
//! recorder and the metrics.

use std::collections::HashMap;
use std::hash::{Hash as _, Hasher as _};
use std::sync::Mutex;
use std::time::Duration;

use kube::Client;
use kube::runtime::events::Recorder;
use shardyard_protocol::Token;
use tokio::time::Instant;

use super::metrics::Metrics;
use crate::discord::{DiscordError, GatewayBotAnswer, gateway_bot};
use crate::plan::OperatorDefaults;

/// How long Discord's answer is reused.
pub const DISCORD_CACHE: Duration = Duration::from_secs(60);

/// Shared by every reconcile.
pub struct Context {
    /// The API server.
    pub client: Client,
    /// The operator's flags.
    pub defaults: OperatorDefaults,
    /// Events on the bots.
    pub recorder: Recorder,
    /// Reconciles, failures, durations.
    pub metrics: std::sync::Arc<Metrics>,
    http: reqwest::Client,
    answers: Mutex<HashMap<(String, u64), (Instant, CachedAnswer)>>,
    /// Consecutive failed reconciles per bot (`namespace/name`), for the backoff.
    failures: Mutex<HashMap<String, u32>>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("defaults", &self.defaults)
            .finish_non_exhaustive()
    }
}

/// A cached answer: 401s are cached too, so a bad token is not asked about every reconcile.
#[derive(Debug, Clone, Copy)]
enum CachedAnswer {
    Ok(GatewayBotAnswer),
    InvalidToken,
}

impl Context {
    /// A context over `client`.
    ///
    /// # Errors
    /// When no HTTPS client can be made for Discord's API ([`crate::discord::client`]).
    pub fn new(
        client: Client,
        defaults: OperatorDefaults,
        recorder: Recorder,
    ) -> Result<Self, crate::discord::ClientError> {
        Ok(Self {
            client,
            defaults,
            recorder,
            metrics: std::sync::Arc::new(Metrics::default()),
            http: crate::discord::client()?,
            answers: Mutex::new(HashMap::new()),
            failures: Mutex::new(HashMap::new()),
        })
    }

    /// One more failure of `bot`: how long to wait before trying again (5 s, doubling, at most
    /// five minutes).
    pub fn failed(&self, bot: &str) -> Duration {
        let mut failures = self
            .failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let count = failures.entry(bot.to_owned()).or_insert(0);
        *count = count.saturating_add(1);
        backoff(*count)
    }

    /// `bot` reconciled: its backoff starts over.
    pub fn succeeded(&self, bot: &str) {
        self.failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(bot);
    }

    /// Discord's `GET /gateway/bot` for `token` at `api_base`, from the cache when it is younger
    /// than [`DISCORD_CACHE`]. Keyed by a hash of the token, which is not kept.
    ///
    /// # Errors
    /// As [`gateway_bot`]; other errors than a 401 are not cached.
    pub async fn gateway_bot(
        &self,
        api_base: &str,
        token: &Token,
    ) -> Result<GatewayBotAnswer, DiscordError> {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        token.expose().hash(&mut hasher);
        let key = (api_base.to_owned(), hasher.finish());
        let cached = self
            .answers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&key)
            .filter(|(at, _)| at.elapsed() < DISCORD_CACHE)
            .map(|(_, answer)| *answer);
        match cached {
            Some(CachedAnswer::Ok(answer)) => return Ok(answer),
            Some(CachedAnswer::InvalidToken) => return Err(DiscordError::InvalidToken),
            None => {}
        }
        self.metrics.discord_requests.inc();
        let answer = gateway_bot(&self.http, api_base, token).await;
        let cache = match &answer {
            Ok(answer) => Some(CachedAnswer::Ok(*answer)),
            Err(DiscordError::InvalidToken) => Some(CachedAnswer::InvalidToken),
            Err(_) => None,
        };
        if let Some(cache) = cache {
            self.answers
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .insert(key, (Instant::now(), cache));
        }
        answer
    }

    /// Forgets Discord's answers for `api_base` (a token Secret changed).
    pub fn forget(&self, api_base: &str) {
        self.answers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .retain(|(base, _), _| base != api_base);
    }
}

/// The wait after `failures` consecutive failures: 5 s, doubling, at most five minutes.
#[must_use]
pub fn backoff(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(6);
    (Duration::from_secs(5) * 2u32.pow(doublings)).min(Duration::from_secs(300))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_back_off_from_five_seconds_to_five_minutes() {
        let waits: Vec<u64> = (1..=9).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(waits, [5, 10, 20, 40, 80, 160, 300, 300, 300]);
        assert_eq!(backoff(u32::MAX).as_secs(), 300);
    }
}
