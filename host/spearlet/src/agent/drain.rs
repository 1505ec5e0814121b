//! Draining: the node takes no new work, lets running executions finish for a while, hands back
//! the rest (those that checkpoint with their state), delivers every result and deregisters.

use std::sync::Arc;
use std::time::{Duration, Instant};

use spear_proto::v1;

use super::Agent;

impl Agent {
    /// Drain: take no new work, let running executions finish for up to `drain_timeout_ms`, stop
    /// and hand back the rest, deliver every result, and deregister (SMS requeues what was handed
    /// back).
    pub async fn drain(self: &Arc<Self>) {
        self.draining.send_replace(true);
        let _ = self
            .sms
            .nodes()
            .update_node(v1::UpdateNodeRequest {
                uuid: self.node.clone(),
                status: "draining".into(),
                metadata: Default::default(),
                labels: Default::default(),
            })
            .await;
        let limit = Duration::from_millis(self.config.spearlet.limits.drain_timeout_ms);
        let deadline = Instant::now() + limit;
        while !self.running().is_empty() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Invocations in flight end (or their deadline passes) before the live instances go.
        let functions = &self.config.spearlet.functions;
        while self.functions.in_flight.available_permits() < functions.max_concurrent
            && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let pools = self.clone();
        let stopped = tokio::task::spawn_blocking(move || pools.pools.stop_all())
            .await
            .unwrap_or(0);
        if stopped > 0 {
            tracing::info!(stopped, "live instances stopped at drain");
        }
        let left: Vec<(String, bool)> = self
            .running()
            .iter()
            .map(|(id, a)| (id.clone(), a.checkpoint))
            .collect();
        futures::future::join_all(left.iter().map(|(id, checkpoint)| async move {
            tracing::info!(execution = %id, checkpoint, "handed back at drain");
            // One that checkpoints saves its state and hands it back with its report; the
            // others are stopped, and SMS requeues them when the node leaves.
            if *checkpoint {
                self.hand_back(id).await;
            } else {
                self.cancel(id).await;
            }
        }))
        .await;
        // The reports of those handed back with their state are written when their runs end.
        let until = Instant::now() + Duration::from_secs(10);
        while self.running().iter().any(|(_, a)| a.preempted) && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if !self.reporter.flush(Duration::from_secs(10)).await {
            tracing::warn!(
                "some results were not delivered before exit; they are kept and sent at the next start"
            );
        }
        match self
            .sms
            .nodes()
            .delete_node(v1::NodeRef {
                uuid: self.node.clone(),
            })
            .await
        {
            Ok(_) => tracing::info!(node = %self.node, handed_back = left.len(), "deregistered"),
            Err(s) => tracing::warn!(error = %s.message(), "could not deregister"),
        }
    }
}
