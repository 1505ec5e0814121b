//! SMS preempts an execution here: it gets SIGTERM and the grace SMS gives to save its state,
//! then SIGKILL; its run ends with a report that says it was preempted, with its checkpoint
//! ([`crate::checkpoint`]). SMS puts it back in its queue without spending an attempt.

use std::sync::Arc;

use spear_proto::v1;

use crate::agent::Agent;
use crate::store::PendingReport;

impl Agent {
    /// Stop execution `exec` for SMS's preemption, giving it `grace_ms` after SIGTERM.
    pub async fn preempt(self: &Arc<Self>, exec: &v1::Execution, grace_ms: u64) {
        let id = exec.execution_id.as_str();
        let found = {
            let mut running = self.running();
            running.get_mut(id).map(|a| {
                a.preempted = true;
                a.grace_ms = grace_ms;
                (a.executor.clone(), a.handle.clone())
            })
        };
        match found {
            Some((Some(loaded), Some(handle))) => {
                tracing::info!(execution = %id, grace_ms, "preempted: stopping it");
                // Off the stream's task: the grace may be long, and the stream goes on meanwhile.
                tokio::task::spawn_blocking(move || loaded.executor.stop(&handle, grace_ms));
            }
            // Not started yet: its run sees the mark and reports it preempted without starting
            // (or, starting, stops it with the grace).
            Some(_) => {}
            None => self.preempted_elsewhere(exec).await,
        }
    }

    /// Stop execution `id` at a drain, as a preemption: it saves its state in the node's stop
    /// grace and is reported preempted with its checkpoint (SMS takes that from a draining node).
    pub async fn hand_back(&self, id: &str) {
        let found = {
            let mut running = self.running();
            running.get_mut(id).map(|a| {
                a.preempted = true;
                a.grace_ms = self.config.spearlet.limits.stop_grace_ms;
                (a.executor.clone(), a.handle.clone())
            })
        };
        if let Some((Some(loaded), Some(handle))) = found {
            let grace = self.config.spearlet.limits.stop_grace_ms;
            let _ = tokio::task::spawn_blocking(move || loaded.executor.stop(&handle, grace)).await;
        }
    }

    /// SMS preempts an execution this node does not run (it ended, and its result is on its
    /// way; or this node restarted and lost it): one with no result here is reported stopped,
    /// so that SMS does not wait for it.
    async fn preempted_elsewhere(&self, exec: &v1::Execution) {
        let id = &exec.execution_id;
        if self.reporter.pending(id).await.unwrap_or(true)
            || (exec.attempt != 0 && self.reporter.answered(id, exec.attempt))
        {
            return;
        }
        let report = PendingReport {
            execution_id: id.clone(),
            success: false,
            result: None,
            error: "preempted: it was not running on this node".into(),
            start_untold: false,
            attempt: exec.attempt,
            preempted: true,
            checkpoint: Vec::new(),
        };
        if let Err(e) = self.reporter.submit(report).await {
            tracing::error!(execution = %id, error = %e, "cannot persist the report");
        }
    }
}
