//! SMS preempts an execution here: it gets SIGTERM and the grace SMS gives to save its state,
//! then SIGKILL; its run ends with a report that says it was preempted, with its checkpoint
//! ([`crate::checkpoint`]). SMS puts it back in its queue without spending an attempt.

use std::sync::Arc;

use spear_proto::v1;

use crate::agent::Agent;
use crate::executors::Loaded;
use crate::store::PendingReport;

/// How an execution stands when SMS preempts it.
enum Mark {
    /// Running: stop it.
    Started(Loaded, String),
    /// Not started yet.
    NotStarted,
    /// Already being stopped for a preemption.
    Already,
    /// Not here.
    Absent,
}

impl Agent {
    /// Stop execution `exec` for SMS's preemption, giving it `grace_ms` after SIGTERM.
    pub async fn preempt(self: &Arc<Self>, exec: &v1::Execution, grace_ms: u64) {
        let id = exec.execution_id.as_str();
        match self.mark_preempted(id, grace_ms) {
            Mark::Started(loaded, handle) => {
                tracing::info!(execution = %id, grace_ms, "preempted: stopping it");
                // Off the stream's task: the grace may be long, and the stream goes on meanwhile.
                let (agent, id) = (self.clone(), id.to_owned());
                tokio::task::spawn_blocking(move || agent.stop_preempted(&id, &loaded, &handle));
            }
            // Not started yet: its run sees the mark and reports it preempted without starting
            // (or, starting, stops it with the grace). Already being stopped: nothing more (a
            // second SIGTERM could cut its save short).
            Mark::NotStarted | Mark::Already => {}
            Mark::Absent => self.preempted_elsewhere(exec).await,
        }
    }

    /// Mark execution `id` preempted, with `grace_ms`, and say how it stands.
    fn mark_preempted(&self, id: &str, grace_ms: u64) -> Mark {
        let mut running = self.running();
        let Some(a) = running.get_mut(id) else {
            return Mark::Absent;
        };
        if a.preempted {
            return Mark::Already;
        }
        a.preempted = true;
        a.grace_ms = grace_ms;
        match (a.executor.clone(), a.handle.clone()) {
            (Some(loaded), Some(handle)) => Mark::Started(loaded, handle),
            _ => Mark::NotStarted,
        }
    }

    /// SIGTERM, the grace, then SIGKILL, for a preempted run (on a blocking thread). A run still
    /// going when it is told is noted as stopped by it: however it ends (a program that saves
    /// its state and exits 0 too) it is reported preempted.
    pub(crate) fn stop_preempted(&self, id: &str, loaded: &Loaded, handle: &str) {
        use spear_plugin_api::executor::ExecState;
        let grace = self.running().get(id).map_or(0, |a| a.grace_ms);
        if matches!(loaded.executor.inspect(handle), Ok(ExecState::Running))
            && let Some(a) = self.running().get_mut(id)
        {
            a.signalled = true;
        }
        let _ = loaded.executor.stop(handle, grace);
    }

    /// Stop execution `id` at a drain, as a preemption: it saves its state in the node's stop
    /// grace and is reported preempted with its checkpoint (SMS takes that from a draining node).
    pub async fn hand_back(self: &Arc<Self>, id: &str) {
        let grace = self.config.spearlet.limits.stop_grace_ms;
        if let Mark::Started(loaded, handle) = self.mark_preempted(id, grace) {
            let (agent, id) = (self.clone(), id.to_owned());
            let _ =
                tokio::task::spawn_blocking(move || agent.stop_preempted(&id, &loaded, &handle))
                    .await;
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
