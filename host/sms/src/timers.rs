//! The scheduler's housekeeping, driven by the table's indexes (not by scanning every
//! execution): attempts past their timeout are timed out (retried with back-off while attempts
//! last), executions that waited past their `queue_timeout_ms` are failed, and executions waiting
//! on dependencies are released once every dependency succeeded, or failed once one cannot; a
//! deadline passed before the execution finished is recorded as missed.
//! Each candidate is decided on as its owner (its [`KeyLocks`](crate::table::KeyLocks) stripe),
//! so a report, a start or a cancel that came meanwhile is never overwritten.

use serde_json::json;

use crate::error::Result;
use crate::executions::backoff_ms;
use crate::model::{ExecState, Execution, now_ms};
use crate::service::Sms;

impl Sms {
    /// Time out overdue attempts and executions that waited too long to start; release or fail
    /// executions waiting on dependencies.
    pub(crate) async fn expire_and_release(&self) -> Result<()> {
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
            if let Some(deadline) = crate::due::deadline_at(&exec).filter(|t| *t < now) {
                self.record_miss(&mut exec, deadline, now).await?;
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
                    // A timeout ends a preemption under way too: its stop is a plain cancel.
                    exec.preempting_ms = 0;
                    exec.preempt_grace_ms = 0;
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

impl Sms {
    /// Record that `exec` (owned by the caller, not finished) was not finished by its
    /// `deadline` ([`crate::deadlines`]): once, in the record, the event log and the counter
    /// ([`save_logging`](Self::save_logging) counts it). `updated_at_ms` stays: the miss changes
    /// no state, and an assignment waiting for its write to be durable is sent only if the
    /// execution is unchanged since. (The scheduler's next batch is read after this pass, so it
    /// carries the mark.)
    async fn record_miss(&self, exec: &mut Execution, deadline: i64, now: i64) -> Result<()> {
        exec.deadline_missed = true;
        self.save(
            exec,
            "execution.deadline_missed",
            json!({
                "deadline_ms": deadline,
                "state": exec.state.as_str(),
                "late_ms": now.saturating_sub(deadline),
            }),
        )
        .await
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
        || crate::due::deadline_at(e).is_some_and(|t| t < now)
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
