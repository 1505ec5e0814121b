//! The preemption pass (each scheduling round) and what a victim's stop report does.

use std::cmp::Reverse;
use std::collections::HashSet;
use std::sync::Arc;

use serde_json::json;

use super::{CANDIDATES, LOOK_MS, Mode, SCAN, SETTLE_MS, STUCK_MS, victim};
use crate::blobs::BlobRef;
use crate::model::{ExecState, Execution, NodeStatus};
use crate::service::Sms;

/// How long after its stop a preempted execution may be placed again.
const RESTART_MS: i64 = 500;

/// One preemption to make: for `want`, stop `victim` on `node`.
struct Plan {
    want: Execution,
    node: String,
    victim: String,
}

/// Take a victim's stop, reported by its node (or a run a draining node handed back): back to
/// the queue without spending an attempt, with the checkpoint it saved (`checkpoint`, stored
/// already) when it recovers from one.
/// Returns the event to log.
pub(crate) fn take_stop(
    exec: &mut Execution,
    node: &str,
    checkpoint: Option<BlobRef>,
    now: i64,
    reason: &'static str,
) -> (&'static str, serde_json::Value) {
    // Asked by SMS (`preempted`), or handed back by a draining node (`drained`).
    if reason == "preempted" {
        exec.preemptions += 1;
    }
    exec.state = ExecState::Ready;
    exec.requeued += 1;
    exec.preempting_ms = 0;
    exec.preempt_grace_ms = 0;
    // Queued as from now (not ahead of what it made room for by its age), after a moment: its
    // node acknowledges the stop before it can be sent the execution again.
    exec.not_before_ms = now.saturating_add(RESTART_MS);
    exec.orphaned_on = None;
    exec.updated_at_ms = now;
    exec.error = Some(format!("{reason} on node {node}: waiting to run again"));
    let saved = checkpoint.as_ref().map_or(0, |b| b.size);
    if !exec.recovery.restores() {
        exec.checkpoint_blob = None;
    } else if checkpoint.is_some() {
        // A stop that saved nothing keeps the checkpoint before it.
        exec.checkpoint_blob = checkpoint;
    }
    (
        "execution.requeued",
        json!({
            "node_uuid": node,
            "attempt": exec.attempt,
            "reason": reason,
            "checkpoint_bytes": saved,
            "restores": exec.checkpoint_blob.is_some(),
        }),
    )
}

impl Sms {
    /// Look for work waiting on lower-priority work and preempt for it, as `[preemption]`
    /// allows (each round; at most every [`LOOK_MS`]).
    pub(crate) async fn preempt_pass(self: &Arc<Self>, now: i64) {
        if self.preemption.mode == Mode::Off {
            return;
        }
        let due = {
            let mut st = self.preempt_state();
            if now - st.last_look_ms < LOOK_MS {
                return;
            }
            st.last_look_ms = now;
            st.prune(now)
        };
        for victim in due {
            self.requeue_stuck(&victim, now).await;
        }
        for plan in self.preempt_plans(now).await {
            if !self.connected(&plan.node).await {
                continue;
            }
            if !self.preempt_one(&plan, now).await {
                break;
            }
        }
    }

    /// A victim not reported stopped long past its grace (its stop was lost, or its node does
    /// not know preemption) is taken back from its node, as from a lost one: queued again
    /// (its attempt not spent) and its node told to cancel the run.
    async fn requeue_stuck(&self, id: &str, now: i64) {
        let _owned = self.exec_locks.lock(id).await;
        let Ok(mut exec) = self.execution(id).await else {
            return;
        };
        let grace = i64::try_from(exec.preempt_grace_ms).unwrap_or(i64::MAX);
        let due = exec
            .preempting_ms
            .saturating_add(grace)
            .saturating_add(STUCK_MS);
        let Some(node) = exec.node_uuid.clone() else {
            return;
        };
        if !(exec.state.is_placed() && exec.preempting_ms > 0 && now >= due) {
            return;
        }
        exec.preempting_ms = 0;
        exec.preempt_grace_ms = 0;
        // A plain cancel (no longer preempting): the run is stopped and not reported.
        let cancel = exec.clone();
        let why = "it was not reported stopped within its grace after a preemption";
        exec.state = ExecState::Ready;
        exec.requeued += 1;
        exec.orphaned_on = Some(node.clone());
        exec.not_before_ms = now.saturating_add(RESTART_MS);
        exec.updated_at_ms = now;
        exec.error = Some(format!("taken back from node {node}: {why}"));
        let data = json!({"from_node": node, "reason": why});
        if let Err(e) = self.save(&exec, "execution.rescheduled", data).await {
            tracing::warn!(execution = %id, "cannot requeue: {e}");
            return;
        }
        let _ = self.dispatch(&node, cancel, true).await;
        self.wake.notify_one();
    }

    fn preempt_state(&self) -> std::sync::MutexGuard<'_, super::State> {
        self.preempt_state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The preemptions to make now, most urgent waiting work first, one victim each.
    async fn preempt_plans(&self, now: i64) -> Vec<Plan> {
        let cfg = self.preemption;
        let nodes = self.nodes.read().await;
        let execs = self.executions.read().await;
        let mut wanting: Vec<(Execution, Option<String>)> = Vec::new();
        // Sent ahead to a node whose slots all run other work, and waiting there.
        for (uuid, n) in nodes.iter() {
            if n.status != NodeStatus::Active || !execs.placed().contains_key(uuid) {
                continue;
            }
            let slots = if n.slots == 0 {
                self.dispatch.default_slots
            } else {
                n.slots
            };
            // No more placed than its slots: nothing waits there for one.
            if execs.placed().get(uuid).copied().unwrap_or(0) <= slots {
                continue;
            }
            let placed: Vec<&Execution> = execs.placed_on(uuid).collect();
            let running = placed
                .iter()
                .filter(|e| e.state == ExecState::Running)
                .count();
            if running < slots as usize {
                continue;
            }
            wanting.extend(
                placed
                    .iter()
                    .filter(|e| {
                        e.state == ExecState::Assigned && now - e.assigned_at_ms >= SETTLE_MS
                    })
                    .map(|e| ((*e).clone(), Some(uuid.clone()))),
            );
        }
        // Those whose victim stopped may preempt again (if they still wait).
        let waits = {
            let mut st = self.preempt_state();
            st.waits.retain(|_, (victim, _)| {
                execs
                    .get(victim)
                    .is_some_and(|v| v.preempting_ms > 0 && v.state.is_placed())
            });
            st.waits.clone()
        };
        // The head of SMS's queue: those that could preempt anything.
        if cfg.mode == Mode::Cluster {
            wanting.extend(
                execs
                    .ready()
                    .take(SCAN)
                    .filter(|(id, e)| {
                        e.not_before_ms <= now
                            && now - e.updated_at_ms >= SETTLE_MS
                            && (e.priority as u8) >= cfg.min_priority_gap
                            && !waits.contains_key(*id)
                    })
                    .take(CANDIDATES)
                    .map(|(_, e)| (e.clone(), None)),
            );
        }
        wanting.sort_by_key(|(e, _)| Reverse(e.priority));
        let mut taken = HashSet::new();
        let mut plans = Vec::new();
        for (want, on) in wanting {
            if plans.len() >= CANDIDATES {
                break;
            }
            if (want.priority as u8) < cfg.min_priority_gap
                || waits.contains_key(&want.execution_id)
            {
                continue;
            }
            let candidates: Vec<&String> = match &on {
                Some(uuid) => vec![uuid],
                None => {
                    let mut fit = Vec::new();
                    let mut free = false;
                    for (u, n) in nodes.iter() {
                        if n.status != NodeStatus::Active || !crate::fit::could_hold(n, &want) {
                            continue;
                        }
                        // A place free where it fits: the strategy places it, no one need stop.
                        if execs.placed().get(u).copied().unwrap_or(0)
                            < self.dispatch.limit(n.slots)
                        {
                            free = true;
                            break;
                        }
                        fit.push(u);
                    }
                    if free {
                        continue;
                    }
                    fit
                }
            };
            let best = candidates
                .into_iter()
                .filter_map(|u| {
                    let running = execs
                        .placed_on(u)
                        .filter(|e| !taken.contains(&e.execution_id));
                    victim(want.priority, cfg.min_priority_gap, running).map(|v| (u, v))
                })
                .min_by_key(|(_, v)| (v.priority, Reverse(v.started_at_ms)));
            if let Some((node, v)) = best {
                taken.insert(v.execution_id.clone());
                plans.push(Plan {
                    node: node.clone(),
                    victim: v.execution_id.clone(),
                    want,
                });
            }
        }
        plans
    }

    /// Preempt `plan.victim` if it still runs there and the budget allows; false when the budget
    /// is spent (nothing more this look).
    async fn preempt_one(&self, plan: &Plan, now: i64) -> bool {
        let cfg = self.preemption;
        let _owned = self.exec_locks.lock(&plan.victim).await;
        let Ok(mut v) = self.execution(&plan.victim).await else {
            return true;
        };
        if v.state != ExecState::Running
            || v.node_uuid.as_deref() != Some(plan.node.as_str())
            || v.preempting_ms != 0
        {
            return true;
        }
        if !self
            .preempt_state()
            .budget
            .try_spend(now, cfg.budget_per_minute)
        {
            self.metrics
                .preemptions
                .with_label_values(&["over_budget"])
                .inc();
            return false;
        }
        v.preempting_ms = now;
        v.preempt_grace_ms = cfg.grace_ms;
        v.updated_at_ms = now;
        let data = json!({
            "node_uuid": plan.node,
            "attempt": v.attempt,
            "for": plan.want.execution_id,
            "for_priority": plan.want.priority.as_str(),
            "grace_ms": cfg.grace_ms,
        });
        if let Err(e) = self.save(&v, "execution.preempted", data).await {
            tracing::warn!(execution = %plan.victim, "cannot store its preemption: {e}");
            return true;
        }
        let stuck_at = now
            .saturating_add(i64::try_from(cfg.grace_ms).unwrap_or(i64::MAX))
            .saturating_add(STUCK_MS);
        {
            let mut st = self.preempt_state();
            st.waits.insert(
                plan.want.execution_id.clone(),
                (plan.victim.clone(), stuck_at),
            );
            st.victims.insert((stuck_at, plan.victim.clone()));
        }
        self.metrics
            .preemptions
            .with_label_values(&["preempted"])
            .inc();
        tracing::info!(
            execution = %plan.victim, node = %plan.node, r#for = %plan.want.execution_id,
            "preempted"
        );
        let _ = self.dispatch(&plan.node, v, true).await;
        true
    }
}
