//! What the gateway reports on its admin address (served by [`shardyard_admin`]): ready when
//! every owned shard is READY or RESUMED, and the shards' metrics.

use shardyard_admin::Status;

use crate::status::{GatewayStatus, ShardState};

impl Status for GatewayStatus {
    fn readiness(&self) -> Result<(), String> {
        if self.ready() {
            return Ok(());
        }
        let waiting: Vec<String> = self
            .shards
            .iter()
            .filter(|s| s.state() != ShardState::Ready)
            .map(|s| format!("shard {} {}", s.id, s.state().name()))
            .collect();
        Err(waiting.join(", "))
    }

    fn render_metrics(&self, out: &mut String) {
        out.push_str(&self.metrics());
    }
}
