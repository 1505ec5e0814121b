//! A node's reports on its executions: one started, or one ended (taken once per attempt, and
//! retried with back-off while attempts last).

use serde_json::json;

use crate::error::{Result, SmsError};
use crate::executions::backoff_ms;
use crate::model::{ExecResult, ExecState, Execution, now_ms};
use crate::service::Sms;

/// What a node reports when an execution ends.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// The SMS session the assignment came with.
    pub session: String,
    /// The reporting node.
    pub node_uuid: String,
    /// The execution.
    pub execution_id: String,
    /// Whether it succeeded.
    pub success: bool,
    /// Its output.
    pub result: Option<ExecResult>,
    /// Why it failed.
    pub error: String,
    /// The attempt it reports on (the assignment's); 0 when the node does not say.
    pub attempt: u32,
    /// It stopped because SMS preempted it (or its node drained): it goes back to the queue
    /// without spending an attempt ([`crate::preempt`]).
    pub preempted: bool,
    /// With `preempted`: its checkpoint directory, zipped (at most
    /// [`MAX_CHECKPOINT_BYTES`](crate::preempt::MAX_CHECKPOINT_BYTES)).
    pub checkpoint: Vec<u8>,
}

impl Sms {
    pub(crate) fn check_session(&self, session: &str) -> Result<()> {
        if session != self.session {
            return Err(SmsError::Conflict(format!(
                "stale session `{session}`: this SMS is session `{}`; drop work from the old one",
                self.session
            )));
        }
        Ok(())
    }

    /// A node reports that an execution started: `attempt` (0: not said) is the assignment's.
    /// A start told again (its answer lost) is taken once. Of an attempt other than the current
    /// one, only the start of an earlier attempt that never ended, from the node that also holds
    /// the current one unstarted, is taken (that node runs the earlier one and drops the later as
    /// already running; the same rule as for results).
    pub async fn report_state(
        &self,
        session: &str,
        node: &str,
        id: &str,
        state: &str,
        attempt: u32,
    ) -> Result<()> {
        self.check_session(session)?;
        if state != "running" {
            return Err(SmsError::invalid(
                "state",
                "only `running` can be reported; report ends with a result",
            ));
        }
        let _owned = self.exec_locks.lock(id).await;
        let mut exec = self.execution(id).await?;
        let here = exec.node_uuid.as_deref() == Some(node);
        if attempt != 0
            && here
            && exec.state == ExecState::Running
            && exec.started_attempt == attempt
        {
            return Ok(());
        }
        if !here || exec.state != ExecState::Assigned {
            return Err(SmsError::Conflict(format!(
                "execution {id} is not assigned to node {node}"
            )));
        }
        let earlier = attempt < exec.attempt && attempt > exec.ended_attempt;
        if attempt != 0 && attempt != exec.attempt && !earlier {
            return Err(SmsError::Conflict(format!(
                "execution {id} started attempt {attempt}, but it is at attempt {} (a stale \
                 start of an earlier attempt)",
                exec.attempt
            )));
        }
        exec.started_attempt = if attempt != 0 { attempt } else { exec.attempt };
        exec.state = ExecState::Running;
        exec.updated_at_ms = now_ms();
        exec.started_at_ms = exec.updated_at_ms;
        self.save(&exec, "execution.running", json!({"node_uuid": node}))
            .await
    }

    /// A node reports how an execution ended: success, or failure (retried while attempts last).
    pub async fn report_result(&self, r: Report) -> Result<Execution> {
        self.report_end(r, false).await
    }

    /// [`report_result`](Self::report_result); `started`: the node tells beside it that the
    /// execution started (a start it held back until the end), recorded in the same write.
    pub(crate) async fn report_end(&self, mut r: Report, started: bool) -> Result<Execution> {
        self.check_session(&r.session)?;
        if r.checkpoint.len() > crate::preempt::MAX_CHECKPOINT_BYTES {
            return Err(SmsError::invalid(
                "checkpoint",
                format!(
                    "{} bytes: at most {} (16 MiB)",
                    r.checkpoint.len(),
                    crate::preempt::MAX_CHECKPOINT_BYTES
                ),
            ));
        }
        // Large outputs are stored before the execution is owned (a blob write is an fsync).
        let (result, mut claims) = self.result_payloads(r.result.take()).await?;
        r.result = result;
        // So is a preempted run's checkpoint (kept only if the stop is taken as one).
        let mut checkpoint = None;
        if r.preempted && !r.checkpoint.is_empty() {
            let claim = self.blobs.put(std::mem::take(&mut r.checkpoint)).await;
            if let Err(e) = &claim {
                self.db.write_health().record(&Err::<(), _>(e));
            }
            let claim = claim?;
            checkpoint = Some(claim.blob.clone());
            claims.push(claim);
        }
        let taken = self.take_report(r, started, checkpoint).await;
        let blobs: Vec<crate::blobs::BlobRef> = claims.iter().map(|c| c.blob.clone()).collect();
        drop(claims);
        // Not taken (or a duplicate acknowledged again): its outputs may be no one's; those the
        // record names stay.
        self.release_blobs(blobs).await;
        taken
    }

    /// [`report_end`](Self::report_end) with its payloads stored.
    async fn take_report(
        &self,
        r: Report,
        started: bool,
        checkpoint: Option<crate::blobs::BlobRef>,
    ) -> Result<Execution> {
        let _owned = self.exec_locks.lock(&r.execution_id).await;
        let mut exec = self.execution(&r.execution_id).await?;
        let placed_here =
            exec.node_uuid.as_deref() == Some(r.node_uuid.as_str()) && exec.state.is_placed();
        // Work that went back to the queue while its node kept running it: that node's result
        // stands as long as no other node has taken the execution since.
        let orphan_here = exec.state == ExecState::Ready
            && exec.orphaned_on.as_deref() == Some(r.node_uuid.as_str());
        // A stop of an earlier attempt this node still ran (SMS asked before it restarted, or
        // took it back as stuck, then placed it here again: the node kept the earlier run).
        let mut earlier_stop = false;
        if r.attempt != 0 {
            // The attempt this report may be about: the one placed here, or (an orphan's) the
            // one taken back from this node (no other has been placed since).
            let current = exec.attempt;
            let here = exec.node_uuid.as_deref() == Some(r.node_uuid.as_str());
            if here && r.attempt == exec.ended_attempt && !placed_here && !orphan_here {
                // This node's report of this attempt was taken already (its answer was lost):
                // acknowledged again, not taken twice.
                return Ok(exec);
            }
            // The result of an earlier attempt that never ended here, from the node that holds
            // a later one it has not started (placed there again after an SMS restart, it kept
            // the earlier run's result, and so did not start the later one): that run is the
            // execution's.
            let earlier_here = placed_here
                && (exec.state == ExecState::Assigned
                    || (exec.state == ExecState::Running && exec.started_attempt == r.attempt))
                && r.attempt < exec.attempt
                && r.attempt > exec.ended_attempt;
            // The same run, its execution taken back from this node since its start was taken
            // (the node was lost): it ran to its end there after all.
            let earlier_orphan =
                orphan_here && r.attempt == exec.started_attempt && r.attempt > exec.ended_attempt;
            earlier_stop = earlier_here && r.preempted;
            if r.attempt != current && !earlier_here && !earlier_orphan {
                return Err(SmsError::Conflict(format!(
                    "execution {} reported for attempt {}, but it is at attempt {} (a stale \
                     report of an earlier attempt)",
                    r.execution_id, r.attempt, exec.attempt
                )));
            }
        }
        if orphan_here && r.preempted {
            // Its node was lost (or SMS restarted) while it stopped for a preemption or a drain:
            // it is queued already; the state it saved is taken.
            return self.take_late_stop(exec, &r.node_uuid, checkpoint).await;
        }
        if orphan_here {
            // It ran to its end after all: it counts again.
            exec.requeued = exec.requeued.saturating_sub(1);
            exec.orphaned_on = None;
            exec.node_uuid = Some(r.node_uuid.clone());
        } else if !placed_here {
            return Err(SmsError::Conflict(format!(
                "execution {} is not placed on node {} (it is {})",
                r.execution_id,
                r.node_uuid,
                exec.state.as_str()
            )));
        }
        let now = now_ms();
        let latency_us = u64::try_from(now - exec.assigned_at_ms).unwrap_or(0) * 1000;
        // A start told beside its result is recorded in the same write, before the end, dated
        // by the run's duration.
        let mut events = Vec::with_capacity(2);
        let attempt = if r.attempt != 0 {
            r.attempt
        } else {
            exec.attempt
        };
        // An orphan's start may have been taken before its node was lost: a node that never
        // heard so tells it again beside the result, and it is not recorded twice.
        let unstarted =
            exec.state == ExecState::Assigned || (orphan_here && exec.started_attempt != attempt);
        if started && unstarted {
            let ran = r.result.as_ref().map_or(0, |x| x.duration_ms);
            exec.started_at_ms = now
                .saturating_sub(i64::try_from(ran).unwrap_or(i64::MAX))
                .max(exec.assigned_at_ms);
            events.push(("execution.running", json!({"node_uuid": r.node_uuid})));
            exec.started_attempt = attempt;
        }
        exec.result = r.result;
        exec.ended_attempt = attempt;
        exec.updated_at_ms = now;
        // Stopped for higher-priority work (SMS asked), or handed back by a draining node: back to
        // the queue, its attempt not spent. A stop no one asked for is a failure like another.
        let asked = exec.preempting_ms > 0 || earlier_stop;
        if r.preempted && (asked || self.node_draining(&r.node_uuid).await) {
            let reason = if asked { "preempted" } else { "drained" };
            let (kind, data) =
                crate::preempt::take_stop(&mut exec, &r.node_uuid, checkpoint, now, reason);
            events.push((kind, data));
            self.save_logging(&exec, Vec::new(), events).await?;
            self.wake.notify_one();
            return Ok(exec);
        }
        exec.preempting_ms = 0;
        exec.preempt_grace_ms = 0;
        let kind = if r.success {
            exec.state = ExecState::Succeeded;
            exec.error = None;
            "execution.succeeded"
        } else if exec.spent() < exec.max_attempts {
            exec.state = ExecState::Ready;
            exec.error = Some(r.error.clone());
            exec.not_before_ms = now + backoff_ms(exec.spent());
            "execution.retrying"
        } else {
            exec.state = ExecState::Failed;
            exec.error = Some(r.error.clone());
            "execution.failed"
        };
        events.push((
            kind,
            json!({"node_uuid": r.node_uuid, "attempt": exec.attempt, "error": exec.error}),
        ));
        self.save_logging(&exec, Vec::new(), events).await?;
        self.observe(&r.node_uuid, exec.seq, r.success, latency_us)
            .await;
        self.wake.notify_one();
        Ok(exec)
    }

    /// [`take_report`](Self::take_report) of a stop reported by the node an execution was taken
    /// back from: its checkpoint is kept (when it recovers from one); it stays queued.
    async fn take_late_stop(
        &self,
        mut exec: Execution,
        node: &str,
        checkpoint: Option<crate::blobs::BlobRef>,
    ) -> Result<Execution> {
        exec.orphaned_on = None;
        // A round that picked it before this write leaves it (it changed).
        exec.updated_at_ms = now_ms();
        let saved = checkpoint.as_ref().map_or(0, |b| b.size);
        if exec.recovery.restores() && checkpoint.is_some() {
            exec.checkpoint_blob = checkpoint;
        }
        let data = json!({"node_uuid": node, "attempt": exec.attempt, "reason": "preempted",
            "late": true, "checkpoint_bytes": saved, "restores": exec.checkpoint_blob.is_some()});
        self.save_logging(&exec, Vec::new(), vec![("execution.requeued", data)])
            .await?;
        Ok(exec)
    }

    /// Whether node `uuid` is draining (its work handed back goes to the queue as preempted).
    async fn node_draining(&self, uuid: &str) -> bool {
        self.nodes
            .read()
            .await
            .get(uuid)
            .is_some_and(|n| n.status == crate::model::NodeStatus::Draining)
    }

    /// Feed an outcome back to the strategy (with the scheduler's next round).
    async fn observe(&self, node: &str, seq: u64, success: bool, latency_us: u64) {
        let Some(target) = self.target_ids.lock().await.get(node).copied() else {
            return;
        };
        self.feed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .observe(spear_plugin_api::Outcome {
                request: seq,
                target,
                success,
                latency_us,
            });
    }
}
