//! Where the metrics API and KEDA's endpoint get a bot's queue depth: the DiscordBots from a
//! watch (every replica keeps its own, so any replica answers), one NATS connection per
//! distinct server URL, and a read of the consumer's leader per question. Each read also sets
//! the `shardyard_operator_pending_events` gauge.

use std::collections::HashMap;
use std::sync::Arc;

use kube::ResourceExt as _;
use kube::runtime::reflector::{ObjectRef, Store};
use shardyard_protocol::BotKey;
use tokio::sync::Mutex;

use crate::controller::metrics::Metrics;
use crate::controller::nats::{bot_url, connect};
use crate::queue_depth::{DepthError, QueueDepth, read};
use crate::resource::DiscordBot;

/// The bots and their NATS connections.
#[derive(Clone)]
pub struct QueueDepths {
    client: kube::Client,
    bots: Store<DiscordBot>,
    connections: Arc<Mutex<HashMap<String, async_nats::Client>>>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for QueueDepths {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueueDepths")
            .field("bots", &self.bots.len())
            .finish_non_exhaustive()
    }
}

impl QueueDepths {
    /// Over the watched `bots`.
    #[must_use]
    pub fn new(client: kube::Client, bots: Store<DiscordBot>, metrics: Arc<Metrics>) -> Self {
        Self {
            client,
            bots,
            connections: Arc::new(Mutex::new(HashMap::new())),
            metrics,
        }
    }

    /// The bots of `namespace`.
    #[must_use]
    pub fn bots_in(&self, namespace: &str) -> Vec<Arc<DiscordBot>> {
        let mut bots: Vec<Arc<DiscordBot>> = self
            .bots
            .state()
            .into_iter()
            .filter(|b| b.namespace().as_deref() == Some(namespace))
            .collect();
        bots.sort_by_key(|b| b.name_any());
        bots
    }

    /// The bot `namespace/name`, if it exists.
    #[must_use]
    pub fn bot(&self, namespace: &str, name: &str) -> Option<Arc<DiscordBot>> {
        self.bots.get(&ObjectRef::new(name).within(namespace))
    }

    /// Reads `bot`'s depth for `group` (`None`: the unnamed worker group).
    ///
    /// # Errors
    /// [`DepthError`]: NATS out of reach counts as [`DepthError::Nats`].
    pub async fn of(
        &self,
        bot: &DiscordBot,
        group: Option<&str>,
    ) -> Result<QueueDepth, DepthError> {
        let namespace = bot.namespace().unwrap_or_default();
        let name = bot.name_any();
        let key = BotKey::namespaced(&namespace, &name)
            .map_err(|e| DepthError::Nats(format!("no bot key: {e}")))?;
        let url = bot_url(&self.client, &namespace, bot)
            .await
            .map_err(DepthError::Nats)?;
        let client = self.connection(&url).await?;
        let depth = read(&async_nats::jetstream::new(client), &key, group).await;
        match &depth {
            Ok(depth) => self
                .metrics
                .set_pending(&namespace, &name, Some(depth.pending())),
            Err(_) => self.metrics.set_pending(&namespace, &name, None),
        }
        depth
    }

    /// A connection to `url`, made once and shared (async-nats reconnects it by itself).
    async fn connection(&self, url: &str) -> Result<async_nats::Client, DepthError> {
        let mut connections = self.connections.lock().await;
        if let Some(client) = connections.get(url) {
            return Ok(client.clone());
        }
        let client = connect(url)
            .await
            .map_err(|e| DepthError::Nats(e.to_string()))?;
        connections.insert(url.to_owned(), client.clone());
        Ok(client)
    }
}
