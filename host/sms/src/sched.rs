//! The scheduler: one serial decision-maker (as in Spider's design). Each round it
//!
//! 1. puts work from lost nodes back in the queue, times out overdue attempts, and releases
//!    executions whose dependencies succeeded (failing those whose dependencies cannot);
//! 2. takes the ready queue in its order, by priority with aging (every
//!    [`AGING_MS`](crate::table::AGING_MS) waited counts as one priority level), oldest first
//!    within a level; the table keeps that order as executions change, so a round reads only the
//!    batch it takes;
//! 3. counts each node's free places (its slots plus the prefetch, minus what is placed there:
//!    [`crate::dispatch`]) and takes no bigger a batch than they add up to;
//! 4. asks the active strategy plugin to place the batch over its incremental view of the nodes —
//!    the plugin host validates every decision (healthy, connected, resources, hard affinity,
//!    executor capability) and falls back to round-robin on any failure;
//! 5. dispatches each assignment within its node's free places to the node's bounded stream (a
//!    full node, stream or closed stream leaves the execution queued: back-pressure), and stores
//!    the round in one atomic batch.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::json;
use spear_plugin_api::{Decision, Label, Request};
use tokio::sync::watch;

use crate::error::{Result, SmsError};
use crate::executions::backoff_ms;
use crate::model::{ExecState, Execution, now_ms};
use crate::nodes::EXECUTOR_LABEL;
use crate::service::Sms;

/// How often timeouts and dependencies are checked, at most.
const MAINTENANCE_MS: i64 = 20;

/// Scheduling settings.
#[derive(Debug, Clone, Copy)]
pub struct SchedSettings {
    /// Requests per strategy call.
    pub batch: usize,
    /// Extra time past `timeout_ms` before an attempt is declared timed out.
    pub timeout_grace_ms: i64,
    /// Longest sleep between rounds when nothing wakes the scheduler.
    pub idle_tick: Duration,
}

impl Default for SchedSettings {
    fn default() -> Self {
        Self {
            batch: 256,
            timeout_grace_ms: 2_000,
            idle_tick: Duration::from_millis(50),
        }
    }
}

/// Run rounds until `stop` turns true.
pub async fn run(sms: Arc<Sms>, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = sms.wake.notified() => {}
            _ = tokio::time::sleep(sms.sched.idle_tick) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        // Keep placing while full batches are placed; then wait for news.
        loop {
            match sms.schedule_round().await {
                Ok(placed) if placed >= sms.sched.batch => continue,
                Ok(_) => break,
                Err(e) => {
                    tracing::warn!("scheduling round: {e}");
                    break;
                }
            }
        }
        sms.health.scheduler_beat();
    }
}

fn storage(e: impl std::fmt::Display) -> SmsError {
    SmsError::Storage(e.to_string())
}

fn request(e: &Execution) -> Request {
    let labels = |m: &std::collections::BTreeMap<String, String>| -> Vec<Label> {
        m.iter()
            .map(|(k, v)| Label::new(k.clone(), v.clone()))
            .collect()
    };
    let mut required = labels(&e.required_labels);
    required.push(Label::new(
        format!("{EXECUTOR_LABEL}{}", e.executable.kind),
        "true",
    ));
    Request {
        id: e.seq,
        task: e
            .task_id
            .clone()
            .unwrap_or_else(|| e.executable.name.clone()),
        labels: labels(&e.labels),
        needs: e.needs.into(),
        required,
        preferred: labels(&e.preferred_labels),
    }
}

impl Sms {
    /// One scheduling round; returns how many executions were assigned.
    pub async fn schedule_round(self: &Arc<Self>) -> Result<usize> {
        // A lost node's work that could not be requeued is tried again next round; placement
        // goes on meanwhile.
        if let Err(e) = self.requeue_lost().await {
            tracing::debug!("requeueing work of lost nodes: {e}");
        }
        if self.prune_soon.swap(false, Ordering::Relaxed) {
            self.prune_streams().await;
        }
        let now = now_ms();
        // Timeouts and dependencies are time-based: look at most every MAINTENANCE_MS.
        if now - self.last_maintenance_ms.load(Ordering::Relaxed) >= MAINTENANCE_MS {
            self.last_maintenance_ms.store(now, Ordering::Relaxed);
            self.expire_and_release().await?;
            self.refresh_unschedulable().await;
        }
        let (free, feed) = self.measure_room().await;
        if free == 0 {
            // Every node is full: nothing to place until a slot frees (an end wakes the round).
            self.feed_strategy(feed).await;
            return Ok(0);
        }
        // The batch, in queue order; those waiting out a retry backoff are passed over.
        let ready: Vec<Execution> = {
            let execs = self.executions.read().await;
            execs
                .ready()
                .filter(|(_, e)| e.not_before_ms <= now)
                .take(self.sched.batch.min(free))
                .map(|(_, e)| e.clone())
                .collect()
        };
        if ready.is_empty() {
            self.feed_strategy(feed).await;
            return Ok(0);
        }
        let requests: Vec<Request> = ready.iter().map(request).collect();
        let plugins = self.plugins.clone();
        // What changed since the last round, then the batch: one trip to a blocking thread.
        let decisions = tokio::task::spawn_blocking(move || {
            let strategy = plugins.strategy();
            crate::dispatch::feed(strategy, feed);
            strategy.place(&requests)
        })
        .await
        .map_err(storage)?;
        let mut room = self.room_for(&decisions);

        // The node of each decision (only those named: O(batch), not O(nodes)).
        let nodes: Vec<Option<(u64, String)>> = {
            let names = self.target_names.lock().await;
            decisions
                .iter()
                .map(|d| match d {
                    Decision::Assign(t) => names.get(t).map(|n| (*t, n.clone())),
                    Decision::Reject(_) => None,
                })
                .collect()
        };
        let mut round = Vec::new();
        for (picked, node) in ready.into_iter().zip(nodes) {
            let Some((target, node)) = node else {
                continue;
            };
            let id = picked.execution_id.clone();
            let _owned = self.exec_locks.lock(&id).await;
            // Look again as its owner: a cancel or a late report may have changed it since the
            // batch was picked, and every such change takes it out of `ready` (only this
            // scheduler brings one back); then it is left for the next round.
            let unchanged = self.executions.read().await.get(&id).is_some_and(|now| {
                now.state == ExecState::Ready && now.updated_at_ms == picked.updated_at_ms
            });
            // A node without a stream takes nothing (back-pressure: the execution stays
            // queued); the strategy may put more on a node in one batch than it has room for.
            if !unchanged || !self.connected(&node).await || !room.take(target) {
                continue;
            }
            let mut exec = picked.clone();
            exec.state = ExecState::Assigned;
            exec.node_uuid = Some(node.clone());
            exec.attempt += 1;
            exec.assigned_at_ms = now_ms();
            exec.updated_at_ms = exec.assigned_at_ms;
            exec.error = None;
            exec.orphaned_on = None;
            // Queued while the execution is owned, so every later write of it is stored after
            // this one; the storage commits the round's writes together, and the assignment
            // leaves SMS only once they are durable ([`crate::outbox`]). (A write that cannot
            // even be queued ends the round: what it placed so far is still sent.)
            let write = match crate::history::exec_ops(&exec).and_then(|ops| {
                self.events.queue(
                    ops,
                    vec![(
                        "execution.assigned",
                        id.clone(),
                        json!({"node_uuid": node, "attempt": exec.attempt}),
                    )],
                )
            }) {
                Ok(w) => w,
                Err(e) => {
                    self.send_later(round);
                    return Err(e);
                }
            };
            let placeable = picked.submitted_at_ms.max(picked.not_before_ms);
            self.metrics
                .placement_seconds
                .observe((exec.assigned_at_ms - placeable).max(0) as f64 / 1000.0);
            self.storing(&exec).await;
            self.executions.write().await.insert(id, exec.clone());
            round.push(crate::outbox::Stored {
                before: picked,
                assigned: exec,
                write,
            });
        }
        let n = round.len();
        if n > 0 {
            self.metrics.round_placements.observe(n as f64);
        }
        self.send_later(round);
        Ok(n)
    }

    /// Send `round` once its writes are durable, in a task of its own: the next round need not
    /// wait for this one's commit (its executions are already assigned in memory: they take
    /// room, and no round picks them again).
    fn send_later(self: &Arc<Self>, round: Vec<crate::outbox::Stored>) {
        if !round.is_empty() {
            let sms = self.clone();
            tokio::spawn(async move { sms.send_stored(round).await });
        }
    }

    /// Time out overdue attempts and executions that waited too long to start; release or fail
    /// executions waiting on dependencies.
    async fn expire_and_release(&self) -> Result<()> {
        let now = now_ms();
        let grace = self.sched.timeout_grace_ms;
        // Candidates from the table's index (past a deadline, or pending with news of a
        // dependency: O(those), not O(unfinished executions)); then each is read again and
        // decided on as its owner, so that a report, a start or a cancel that came meanwhile
        // is not overwritten.
        let candidates = self.executions.read().await.maybe_due(now, grace);
        // Pending ones looked at and not due yet: their marks are cleared after the pass.
        let mut looked = Vec::new();
        let result = self.act_on_due(candidates, now, &mut looked).await;
        if !looked.is_empty() {
            let mut execs = self.executions.write().await;
            for (id, mark) in looked {
                execs.looked_at(&id, mark);
            }
        }
        result
    }

    /// Time out, release or fail each candidate that is due, as its owner; note in `looked` the
    /// marked ones that are not.
    async fn act_on_due(
        &self,
        candidates: std::collections::BTreeMap<String, Option<u64>>,
        now: i64,
        looked: &mut Vec<(String, u64)>,
    ) -> Result<()> {
        let grace = self.sched.timeout_grace_ms;
        for (id, mark) in candidates {
            let _owned = self.exec_locks.lock(&id).await;
            let (mut exec, mut states) = {
                let execs = self.executions.read().await;
                let Some(exec) = execs.get(&id).cloned() else {
                    continue;
                };
                // A dependency's final state never changes: read without owning it.
                let states: std::collections::BTreeMap<String, ExecState> = exec
                    .depends_on
                    .iter()
                    .filter_map(|d| execs.get(d).map(|x| (d.clone(), x.state)))
                    .collect();
                (exec, states)
            };
            // One not in memory finished a while ago: its record is in storage (or it is gone).
            for dep in &exec.depends_on {
                if !states.contains_key(dep)
                    && let Some(stored) = crate::history::finished(&self.db, dep).await?
                {
                    states.insert(dep.clone(), stored.state);
                }
            }
            if !due(&exec, now, grace, |d| states.get(d).copied()) {
                if let Some(mark) = mark {
                    looked.push((id, mark));
                }
                continue;
            }
            if past_queue_timeout(&exec, now) {
                if exec.state == ExecState::Assigned {
                    let node = exec.node_uuid.clone().unwrap_or_default();
                    let _ = self.dispatch(&node, exec.clone(), true).await;
                }
                exec.state = ExecState::TimedOut;
                exec.error = Some(format!(
                    "did not start within its queue timeout of {} ms",
                    exec.queue_timeout_ms
                ));
                exec.updated_at_ms = now;
                self.save(
                    &exec,
                    "execution.timed_out",
                    json!({"queue_timeout_ms": exec.queue_timeout_ms}),
                )
                .await?;
                continue;
            }
            match exec.state {
                ExecState::Assigned | ExecState::Running if past_timeout(&exec, now, grace) => {
                    let node = exec.node_uuid.clone().unwrap_or_default();
                    let _ = self.dispatch(&node, exec.clone(), true).await;
                    exec.updated_at_ms = now;
                    exec.ended_attempt = exec.attempt;
                    exec.error = Some(format!(
                        "attempt {} ran past its {} ms timeout on node {node}",
                        exec.attempt, exec.timeout_ms
                    ));
                    let kind = if exec.spent() < exec.max_attempts {
                        exec.state = ExecState::Ready;
                        exec.not_before_ms = now + backoff_ms(exec.spent());
                        "execution.retrying"
                    } else {
                        exec.state = ExecState::TimedOut;
                        "execution.timed_out"
                    };
                    self.save(
                        &exec,
                        kind,
                        json!({"node_uuid": node, "attempt": exec.attempt}),
                    )
                    .await?;
                }
                ExecState::Pending => {
                    let blocked = exec.depends_on.iter().find(|d| {
                        matches!(
                            states.get(*d),
                            Some(ExecState::Failed | ExecState::Cancelled | ExecState::TimedOut)
                                | None
                        )
                    });
                    if let Some(dep) = blocked {
                        exec.state = ExecState::Failed;
                        exec.error = Some(if states.contains_key(dep) {
                            format!("dependency {dep} did not succeed")
                        } else {
                            format!("dependency {dep} no longer exists (retention removed it)")
                        });
                        exec.updated_at_ms = now;
                        self.save(&exec, "execution.failed", json!({"dependency": dep}))
                            .await?;
                    } else if exec
                        .depends_on
                        .iter()
                        .all(|d| states.get(d) == Some(&ExecState::Succeeded))
                    {
                        exec.state = ExecState::Ready;
                        exec.updated_at_ms = now;
                        self.save(&exec, "execution.ready", json!({})).await?;
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// Whether the scheduler's housekeeping must act on `e` at `now`: a queue timeout or an attempt's
/// timeout has passed, or (pending) every dependency ended or one is unknown (`state_of`).
fn due(
    e: &Execution,
    now: i64,
    grace: i64,
    state_of: impl Fn(&String) -> Option<ExecState>,
) -> bool {
    past_queue_timeout(e, now)
        || match e.state {
            ExecState::Assigned | ExecState::Running => past_timeout(e, now, grace),
            ExecState::Pending => {
                e.depends_on
                    .iter()
                    .all(|d| state_of(d).is_some_and(|s| s.is_terminal()))
                    || e.depends_on.iter().any(|d| state_of(d).is_none())
            }
            _ => false,
        }
}

/// Whether a running attempt has run past its timeout (plus `grace`) at `now`, counted from its
/// start (from its assignment in records stored before starts were). An assignment still waiting
/// for a slot on its node is not timed out: waiting is what `queue_timeout_ms` bounds
/// ([`past_queue_timeout`]). Saturating: a timeout near `u64::MAX` means "never", not an overflow
/// (which would panic, or wrap to "at once").
fn past_timeout(e: &Execution, now: i64, grace: i64) -> bool {
    let limit = i64::try_from(e.timeout_ms)
        .unwrap_or(i64::MAX)
        .saturating_add(grace);
    let since = if e.started_at_ms > 0 {
        e.started_at_ms
    } else {
        e.assigned_at_ms
    };
    e.timeout_ms > 0 && e.state == ExecState::Running && now.saturating_sub(since) > limit
}

/// Whether an execution that has never started has waited, since its submission, longer than its
/// `queue_timeout_ms` (0: no limit).
fn past_queue_timeout(e: &Execution, now: i64) -> bool {
    let waiting = matches!(
        e.state,
        ExecState::Pending | ExecState::Ready | ExecState::Assigned
    );
    let limit = i64::try_from(e.queue_timeout_ms).unwrap_or(i64::MAX);
    e.queue_timeout_ms > 0
        && waiting
        && e.started_at_ms == 0
        && now.saturating_sub(e.submitted_at_ms) > limit
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_saturate_instead_of_overflowing() {
        // Records stored by older versions may hold any u64.
        let mut e = crate::table::tests_support::execution();
        e.assigned_at_ms = 1_000;
        e.state = ExecState::Running;
        for huge in [i64::MAX as u64, u64::MAX] {
            e.timeout_ms = huge;
            assert!(!past_timeout(&e, i64::MAX, 5_000));
        }
        e.timeout_ms = 100;
        e.state = ExecState::Assigned;
        assert!(
            !past_timeout(&e, i64::MAX, 5_000),
            "waiting for a slot is not running"
        );
        e.state = ExecState::Running;
        // Counted from the start, however long it waited.
        e.started_at_ms = 50_000;
        assert!(!past_timeout(&e, 50_000 + 5_100, 5_000));
        assert!(past_timeout(&e, 50_000 + 5_101, 5_000));
        e.timeout_ms = 0;
        assert!(!past_timeout(&e, i64::MAX, 5_000));
    }

    #[test]
    fn the_queue_timeout_bounds_waiting_until_a_first_start() {
        let mut e = crate::table::tests_support::execution();
        e.submitted_at_ms = 1_000;
        assert!(!past_queue_timeout(&e, i64::MAX), "0: no limit");
        e.queue_timeout_ms = u64::MAX;
        assert!(!past_queue_timeout(&e, i64::MAX), "saturates");
        e.queue_timeout_ms = 500;
        for state in [ExecState::Pending, ExecState::Ready, ExecState::Assigned] {
            e.state = state;
            assert!(!past_queue_timeout(&e, 1_500));
            assert!(past_queue_timeout(&e, 1_501), "{state:?}");
        }
        e.started_at_ms = 1_200;
        assert!(!past_queue_timeout(&e, 10_000), "it started once");
        e.started_at_ms = 0;
        e.state = ExecState::Succeeded;
        assert!(!past_queue_timeout(&e, 10_000));
    }
}
