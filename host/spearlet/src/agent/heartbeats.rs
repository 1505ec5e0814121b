//! The node's heartbeats: its figures (load, memory, disk, running work, instances, executors),
//! sent every `spearlet.heartbeat_interval`; a node SMS does not know registers again.

use std::sync::Arc;
use std::time::Duration;

use spear_proto::v1;

use super::{Agent, until};
use crate::figures;

impl Agent {
    /// Heartbeat figures.
    fn heartbeat(&self) -> v1::HeartbeatRequest {
        let now = figures::cpu_times();
        let load = {
            let mut last = self.last_cpu.lock().unwrap_or_else(|p| p.into_inner());
            let load = figures::load_permille(*last, now);
            *last = now;
            load
        };
        let data_dir = &self.config.spearlet.storage.data_dir;
        let (mem_total, mem_avail) = figures::memory();
        let running = self.running().len();
        let counters = self.pools.counters();
        let instances = self.pools.instances();
        let health_info = [
            ("cpu_load_permille", load.to_string()),
            ("memory_total_bytes", mem_total.to_string()),
            ("memory_available_bytes", mem_avail.to_string()),
            ("instances", instances.len().to_string()),
            ("invocations_hot", counters.hot.to_string()),
            ("invocations_warm", counters.warm.to_string()),
            ("invocations_cold", counters.cold.to_string()),
            ("executors", self.executors.get().types().join(",")),
            (
                "executor_capabilities",
                serde_json::to_string(
                    &self
                        .executors
                        .get()
                        .all()
                        .map(|l| &l.capabilities)
                        .collect::<Vec<_>>(),
                )
                .unwrap_or_default(),
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        v1::HeartbeatRequest {
            uuid: self.node.clone(),
            health_info,
            available: Some(figures::available(data_dir, load)),
            running: running as u32,
        }
    }

    pub(super) async fn heartbeats(self: Arc<Self>) {
        let every = Duration::from_secs(self.config.spearlet.heartbeat_interval);
        let mut draining = self.draining.subscribe();
        loop {
            // Executable types a swap changed while SMS could not be told.
            self.register_new_types().await;
            let hb = self.heartbeat();
            match self.sms.nodes().heartbeat(hb).await {
                Ok(_) => {}
                Err(s)
                    if s.code() == tonic::Code::NotFound && self.config.spearlet.auto_register =>
                {
                    tracing::warn!(node = %self.node, "SMS does not know this node; registering again");
                    if let Err(e) = self.register().await {
                        tracing::warn!(error = %e, "re-registration failed");
                    }
                }
                Err(s) => tracing::debug!(error = %s.message(), "heartbeat not delivered"),
            }
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = until(&mut draining) => return,
            }
        }
    }
}
