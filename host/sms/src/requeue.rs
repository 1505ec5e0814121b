//! Rescheduling off lost nodes: the executions placed on a node that went unhealthy, was removed,
//! or cannot be sent its work go back to the queue, each as its owner, without spending an
//! attempt. One that cannot be stored stays placed (and is tried again next round); the others go
//! on.

use serde_json::json;

use crate::error::Result;
use crate::model::{ExecState, now_ms};
use crate::service::Sms;

impl Sms {
    /// Put every execution placed on `node` back in the queue (the node is lost). The attempt does
    /// not count against the execution. Returns how many were requeued; an error when one could
    /// not be stored (it stays placed; the others are requeued all the same).
    pub async fn requeue_node(&self, node: &str, why: &str) -> Result<usize> {
        let lost: Vec<String> = self
            .executions
            .read()
            .await
            .placed_on(node)
            .map(|e| e.execution_id.clone())
            .collect();
        let mut requeued = 0;
        let mut failed = None;
        for id in lost {
            // One that cannot be stored stays placed on the lost node (and is tried again);
            // the others go on.
            match self.requeue_one(&id, node, why).await {
                Ok(true) => requeued += 1,
                Ok(false) => {}
                Err(e) => failed = failed.or(Some(e)),
            }
        }
        if requeued > 0 {
            self.wake.notify_one();
        }
        match failed {
            Some(e) => Err(e),
            None => Ok(requeued),
        }
    }

    /// Put execution `id` back in the queue if it is still placed on `node` (which is lost, or
    /// cannot be sent it): true when it was. The attempt does not count against it.
    pub(crate) async fn requeue_one(&self, id: &str, node: &str, why: &str) -> Result<bool> {
        let _owned = self.exec_locks.lock(id).await;
        // Read again as its owner: a report may have finished it meanwhile.
        let Ok(mut exec) = self.execution(id).await else {
            return Ok(false);
        };
        if !(exec.state.is_placed() && exec.node_uuid.as_deref() == Some(node)) {
            return Ok(false);
        }
        exec.state = ExecState::Ready;
        exec.requeued += 1;
        exec.preempting_ms = 0;
        exec.preempt_grace_ms = 0;
        exec.error = Some(format!("node {node} lost: {why}"));
        exec.orphaned_on = Some(node.to_owned());
        exec.updated_at_ms = now_ms();
        self.save(
            &exec,
            "execution.rescheduled",
            json!({"from_node": node, "reason": why}),
        )
        .await?;
        Ok(true)
    }

    /// Executions placed on nodes lost since the last round (unhealthy or removed) go back to the
    /// queue. A node whose work could not all be stored as requeued is kept for the next round;
    /// one that is back (a heartbeat revived it) keeps its work, which it is running.
    pub(crate) async fn requeue_lost(&self) -> Result<()> {
        let taken = std::mem::take(&mut *self.lost_nodes.lock().unwrap_or_else(|p| p.into_inner()));
        let mut lost = Vec::with_capacity(taken.len());
        for (node, why) in taken {
            if !self.node_active(&node).await {
                lost.push((node, why));
            }
        }
        // Their callers first: requeueing writes to storage, which may be slow or failing.
        for (node, why) in &lost {
            let answered = self.invocations.node_lost(node, why);
            if answered > 0 {
                tracing::warn!(node = %node, answered, "invocations on a lost node answered unavailable");
            }
        }
        let mut failed = None;
        let mut again = Vec::new();
        for (node, why) in lost {
            // Back meanwhile (a heartbeat revived it): it keeps its work.
            if self.node_active(&node).await {
                continue;
            }
            if let Err(e) = self.requeue_node(&node, why).await {
                failed = failed.or(Some(e));
                again.push((node, why));
            }
        }
        if !again.is_empty() {
            self.lost_nodes
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend(again);
        }
        failed.map_or(Ok(()), Err)
    }

    /// Note that `node` is lost; the scheduler requeues its work in its next round.
    pub(crate) fn node_lost(&self, node: &str, why: &'static str) {
        self.lost_nodes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((node.to_owned(), why));
        self.wake.notify_one();
    }
}
