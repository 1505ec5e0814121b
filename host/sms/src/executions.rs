//! Executions: submission (with dependencies), reads, cancellation and storing a changed
//! execution (a node's reports are [`crate::results`], rescheduling off lost nodes
//! [`crate::requeue`], timeouts and dependency releases [`crate::timers`]).
//!
//! Placement itself is the scheduler's ([`crate::sched`]); everything here only moves executions
//! between states, stores them, logs an event and wakes the scheduler.

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;
use serde_json::json;
use utoipa::ToSchema;

use crate::checks::{self, MAX_DEPENDS_ON, check_executable};
use crate::error::{Result, SmsError};
use crate::history::exec_ops;
use crate::model::{ExecState, Executable, Execution, Priority, Resources, now_ms};
use crate::service::Sms;

pub use crate::results::Report;

/// `POST /api/v1/executions`: a registered task, or an inline executable.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Submit {
    /// A registered task…
    #[serde(default)]
    pub task_id: Option<String>,
    /// …or an inline executable (a field it does not have is refused, naming it).
    #[serde(default, deserialize_with = "strict_executable")]
    pub executable: Option<Executable>,
    /// Urgency (default: the task's, else normal).
    #[serde(default)]
    #[schema(value_type = Option<Priority>)]
    pub priority: Option<String>,
    /// Wall-clock limit per attempt in ms (default 60000; 0: none; at most 7 days).
    #[serde(default)]
    #[schema(maximum = 604_800_000)]
    pub timeout_ms: Option<u64>,
    /// Longest wait in ms, from submission (dependencies included), for a first attempt to start;
    /// past it the execution is `timed_out` (default and 0: no limit; at most 7 days).
    #[serde(default)]
    #[schema(maximum = 604_800_000)]
    pub queue_timeout_ms: Option<u64>,
    /// By when it must have finished: RFC 3339 text, or ms since the Unix epoch (at most a year
    /// ahead; see [`crate::deadlines`]).
    #[serde(default)]
    pub deadline: Option<crate::deadlines::Deadline>,
    /// How long a run is expected to take, in ms (at most 7 days): a deadline sooner than this
    /// is infeasible, and the queue orders by `deadline − estimate_ms`.
    #[serde(default)]
    #[schema(maximum = 604_800_000)]
    pub estimate_ms: Option<u64>,
    /// Attempts allowed, 1 to 10 (default 3).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 10)]
    pub max_attempts: Option<u32>,
    /// Executions that must succeed first.
    #[serde(default)]
    pub depends_on: Vec<String>,
    /// Bytes for standard input (a string).
    #[serde(default)]
    pub stdin: String,
    /// Resources needed (default: the task's).
    #[serde(default)]
    pub needs: Option<Resources>,
    /// It saves its state in `SPEAR_CHECKPOINT_DIR`, restored when it runs again after a
    /// preemption (default: the task's `spear.checkpoint` metadata, else false).
    #[serde(default)]
    pub checkpoint: Option<bool>,
    /// How its next attempt starts after a preemption, a drain, a lost node or a failure:
    /// `restart`, `checkpoint` or `migrate` (default: the task's `spear.recovery`, else
    /// `checkpoint` when it checkpoints, `restart` otherwise).
    #[serde(default)]
    #[schema(value_type = Option<crate::model::Recovery>)]
    pub recovery: Option<String>,
}

/// An executable as a request writes it: [`Executable`]'s fields and no others.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StrictExecutable {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    uri: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
}

/// `Submit.executable`, refusing fields an executable does not have (the stored [`Executable`]
/// stays lenient, so that records written by a newer SMS can still be read).
fn strict_executable<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Executable>, D::Error> {
    let e: Option<StrictExecutable> = Deserialize::deserialize(d)?;
    Ok(e.map(|e| Executable {
        kind: e.kind,
        uri: e.uri,
        name: e.name,
        args: e.args,
        env: e.env,
    }))
}

/// Back-off before retry `attempt` (1-based): 0.5 s, 1 s, 2 s, … capped at 30 s.
pub fn backoff_ms(attempt: u32) -> i64 {
    (500i64 << attempt.saturating_sub(1).min(6)).min(30_000)
}

impl Submit {
    /// Every check that needs no state: one of `task_id` and `executable` (an empty `task_id` is
    /// none), the executable, the priority, and the ranges of docs/api.md.
    pub fn check(&mut self) -> Result<()> {
        self.task_id = self.task_id.take().filter(|t| !t.is_empty());
        match (&self.task_id, &self.executable) {
            (Some(_), None) => {}
            (None, Some(e)) => check_executable("executable", e)?,
            (Some(_), Some(_)) => {
                return Err(SmsError::invalid(
                    "executable",
                    "give task_id or executable, not both",
                ));
            }
            (None, None) => return Err(SmsError::invalid("task_id", "give task_id or executable")),
        }
        if let Some(p) = self.priority.as_deref() {
            Priority::parse(p).ok_or_else(|| {
                SmsError::invalid(
                    "priority",
                    format!("`{p}` is not one of low, normal, high, urgent"),
                )
            })?;
        }
        if !(1..=10).contains(&self.max_attempts.unwrap_or(3)) {
            return Err(SmsError::invalid(
                "max_attempts",
                "must be between 1 and 10",
            ));
        }
        if let Some(t) = self.queue_timeout_ms {
            checks::check_timeout("queue_timeout_ms", t)?;
        }
        if let Some(t) = self.timeout_ms {
            checks::check_timeout("timeout_ms", t)?;
        }
        if let Some(t) = self.estimate_ms {
            checks::check_timeout("estimate_ms", t)?;
        }
        if let Some(d) = &self.deadline {
            d.millis()?;
        }
        if let Some(n) = &self.needs {
            checks::check_resources("needs", n)?;
        }
        if let Some(r) = self.recovery.as_deref() {
            crate::model::Recovery::parse(r).ok_or_else(|| {
                SmsError::invalid(
                    "recovery",
                    format!("`{r}` is not one of restart, checkpoint, migrate"),
                )
            })?;
        }
        if self.depends_on.len() > MAX_DEPENDS_ON {
            return Err(SmsError::invalid(
                "depends_on",
                format!("at most {MAX_DEPENDS_ON} executions"),
            ));
        }
        Ok(())
    }
}

impl Sms {
    /// Submit an execution.
    pub async fn submit(&self, mut req: Submit) -> Result<Execution> {
        req.check()?;
        // Held shared to the execution's durable commit: an unregistration of the task waits for
        // it, or comes first and is seen below (table::TaskGates).
        let _gate = match &req.task_id {
            Some(id) => Some(self.task_gates.submit(id).await),
            None => None,
        };
        let task = match &req.task_id {
            Some(id) => Some(self.task(id).await.map_err(|_| {
                SmsError::invalid("task_id", format!("no task `{id}` is registered"))
            })?),
            None => None,
        };
        if let Some(t) = &task {
            if t.status == crate::model::TaskStatus::Unregistered {
                return Err(SmsError::invalid(
                    "task_id",
                    format!("task `{}` is unregistered", t.task_id),
                ));
            }
            if t.executable.is_none() {
                return Err(SmsError::invalid(
                    "task_id",
                    format!(
                        "task `{}` was registered without an executable: nothing to run",
                        t.task_id
                    ),
                ));
            }
        }
        let priority = match req.priority.as_deref().and_then(Priority::parse) {
            Some(p) => p,
            None => task.as_ref().map(|t| t.priority).unwrap_or_default(),
        };
        let max_attempts = req.max_attempts.unwrap_or(3);
        let execution_id = uuid::Uuid::now_v7().to_string();
        let mut forgetting = None;
        {
            let mut seen = BTreeSet::new();
            let mut absent = Vec::new();
            let execs = self.executions.read().await;
            for dep in &req.depends_on {
                if dep == &execution_id {
                    return Err(SmsError::invalid(
                        "depends_on",
                        "an execution cannot depend on itself",
                    ));
                }
                if !seen.insert(dep) {
                    return Err(SmsError::invalid(
                        "depends_on",
                        format!("`{dep}` is named twice"),
                    ));
                }
                if !execs.contains_key(dep) {
                    absent.push(dep.clone());
                }
            }
            drop(execs);
            // Not in memory: finished a while ago, and stored (or unknown). Retention must not
            // delete one between this look and the insert below, which makes it a waiter.
            if !absent.is_empty() {
                forgetting = Some(self.forgetting.lock().await);
            }
            for dep in absent {
                if crate::history::finished(&self.db, &dep).await?.is_none() {
                    return Err(SmsError::invalid(
                        "depends_on",
                        format!("no execution `{dep}`"),
                    ));
                }
            }
        }
        let now = now_ms();
        let (executable, labels, required, preferred, needs) = match &task {
            Some(t) => {
                let mut required = t.required_labels.clone();
                if let Some(node) = &t.node_uuid {
                    required.insert(crate::nodes::NODE_LABEL.into(), node.clone());
                }
                (
                    t.executable.clone().unwrap_or_default(),
                    t.labels.clone(),
                    required,
                    t.preferred_labels.clone(),
                    t.needs,
                )
            }
            None => (
                req.executable.clone().unwrap_or_default(),
                BTreeMap::new(),
                BTreeMap::new(),
                BTreeMap::new(),
                Resources::default(),
            ),
        };
        let mut exec = Execution {
            execution_id: execution_id.clone(),
            seq: self
                .next_seq
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            task_id: task.as_ref().map(|t| t.task_id.clone()),
            executable,
            state: if req.depends_on.is_empty() {
                ExecState::Ready
            } else {
                ExecState::Pending
            },
            priority,
            node_uuid: None,
            attempt: 0,
            requeued: 0,
            ended_attempt: 0,
            started_attempt: 0,
            max_attempts,
            timeout_ms: req.timeout_ms.unwrap_or(60_000),
            depends_on: req.depends_on,
            result: None,
            error: None,
            stdin: Vec::new(),
            stdin_blob: None,
            needs: req.needs.unwrap_or(needs),
            labels,
            required_labels: required,
            preferred_labels: preferred,
            submitted_at_ms: now,
            updated_at_ms: now,
            not_before_ms: 0,
            assigned_at_ms: 0,
            started_at_ms: 0,
            queue_timeout_ms: req.queue_timeout_ms.unwrap_or(0),
            deadline_ms: 0,
            estimate_ms: req.estimate_ms.unwrap_or(0),
            deadline_infeasible: false,
            deadline_missed: false,
            orphaned_on: None,
            checkpoint: false,
            recovery: crate::model::Recovery::Restart,
            checkpoint_blob: None,
            preemptions: 0,
            preempting_ms: 0,
            preempt_grace_ms: 0,
            checkpoint_data: Vec::new(),
        };
        (exec.checkpoint, exec.recovery) =
            crate::preempt::recovery_of(task.as_ref(), req.checkpoint, req.recovery.as_deref());
        if let Some(d) = &req.deadline {
            exec.deadline_ms = d.millis()?;
            exec.deadline_infeasible =
                crate::deadlines::check(&self.deadlines, now, exec.deadline_ms, exec.estimate_ms)?;
        }
        let unfit = self.unfit(&exec).await;
        if let Some((field, why)) = unfit {
            match self.unschedulable {
                crate::fit::Unschedulable::Refuse => return Err(SmsError::invalid(field, why)),
                crate::fit::Unschedulable::Queue => {
                    exec.error = Some(format!("{}{why}", crate::fit::PREFIX));
                }
            }
        }
        let claim = self
            .stdin_payload(&mut exec, req.stdin.into_bytes())
            .await?;
        let mut ops = exec_ops(&exec)?;
        ops.extend(crate::payloads::blob_ref_ops(&execution_id, Vec::new(), exec.blobs()).0);
        let stored = async {
            let mut queued = self.events.queue(
                ops,
                vec![(
                    "execution.submitted",
                    execution_id.clone(),
                    submitted_event(&exec),
                )],
            )?;
            queued.durable().await?;
            Ok::<_, SmsError>(queued)
        }
        .await;
        drop(claim);
        let queued = match stored {
            Ok(q) => q,
            Err(e) => {
                // Not stored: its payload is no one's.
                self.release_blobs(exec.blobs()).await;
                return Err(e);
            }
        };
        self.executions
            .write()
            .await
            .insert(execution_id.clone(), exec.clone());
        drop(forgetting);
        queued.announce();
        self.wake.notify_one();
        Ok(exec)
    }

    /// One execution: from memory, else (finished a while ago) from storage.
    pub async fn execution(&self, id: &str) -> Result<Execution> {
        let held = self.executions.read().await.get(id).cloned();
        match held {
            Some(e) => Ok(e),
            None => crate::history::finished(&self.db, id)
                .await?
                .ok_or_else(|| SmsError::not_found("execution", id)),
        }
    }

    /// Store a changed execution and log `kind`: durable first, then in memory, then announced
    /// (a subscriber who reads the execution on hearing the event sees the change).
    pub(crate) async fn save(
        &self,
        exec: &Execution,
        kind: &str,
        data: serde_json::Value,
    ) -> Result<()> {
        self.save_logging(exec, Vec::new(), vec![(kind, data)])
            .await
    }

    /// [`save`](Self::save) with several events (logged in order, in the same write).
    /// `extra`: more writes to store in the same batch.
    pub(crate) async fn save_logging(
        &self,
        exec: &Execution,
        extra: Vec<spear_plugin_api::storage::BatchOp>,
        events: Vec<(&str, serde_json::Value)>,
    ) -> Result<()> {
        let mut events: Vec<_> = events
            .into_iter()
            .map(|(kind, data)| (kind, exec.execution_id.clone(), data))
            .collect();
        // A miss is written with what it is: the deadline's own (recorded by the housekeeping,
        // `deadline_missed` already set), or a late finish, marked in the same write as the end.
        let late = crate::deadlines::finished_late(exec);
        let marked;
        let exec = match late {
            Some(late_ms) => {
                marked = Execution {
                    deadline_missed: true,
                    ..exec.clone()
                };
                events.push((
                    "execution.deadline_missed",
                    exec.execution_id.clone(),
                    json!({
                        "deadline_ms": exec.deadline_ms,
                        "state": exec.state.as_str(),
                        "late_ms": late_ms,
                    }),
                ));
                &marked
            }
            None => exec,
        };
        let missed = late.is_some()
            || events
                .iter()
                .any(|(kind, _, _)| *kind == "execution.deadline_missed");
        // The blobs it named before (its owner holds it: memory has the latest).
        let before = self
            .executions
            .read()
            .await
            .get(&exec.execution_id)
            .map(Execution::blobs)
            .unwrap_or_default();
        let (refs, dropped) =
            crate::payloads::blob_ref_ops(&exec.execution_id, before, exec.blobs());
        let mut ops = exec_ops(exec)?;
        ops.extend(refs);
        ops.extend(extra);
        let mut queued = self.events.queue(ops, events)?;
        queued.durable().await?;
        self.executions
            .write()
            .await
            .insert(exec.execution_id.clone(), exec.clone());
        queued.announce();
        if missed {
            self.metrics.deadline_misses.inc();
        }
        self.release_blobs(dropped).await;
        Ok(())
    }

    /// Cancel an execution that has not finished.
    pub async fn cancel(&self, id: &str) -> Result<Execution> {
        let _owned = self.exec_locks.lock(id).await;
        let mut exec = self.execution(id).await?;
        if exec.state.is_terminal() {
            return Err(SmsError::Conflict(format!(
                "execution {id} already {}",
                exec.state.as_str()
            )));
        }
        let was_placed = exec.state.is_placed();
        exec.state = ExecState::Cancelled;
        // Its stop is a plain cancel, whatever preemption was under way.
        exec.preempting_ms = 0;
        exec.preempt_grace_ms = 0;
        exec.updated_at_ms = now_ms();
        // Placed: its node owes a stop, stored with the cancel and sent until it lapses.
        let owed = match exec.node_uuid.clone().filter(|_| was_placed) {
            Some(node) => Some((
                node.clone(),
                crate::cancels::Owed::new(&node, &exec, exec.updated_at_ms)?,
            )),
            None => None,
        };
        let extra = owed.iter().map(|(_, (_, op))| op.clone()).collect();
        self.save_logging(&exec, extra, vec![("execution.cancelled", json!({}))])
            .await?;
        if let Some((node, (owed, _))) = owed {
            self.cancels
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(&node, owed);
            let _ = self.dispatch(&node, exec.clone(), true).await;
        }
        self.wake.notify_one();
        Ok(exec)
    }
}

/// The data of an `execution.submitted` event.
fn submitted_event(exec: &Execution) -> serde_json::Value {
    let mut data = json!({"task_id": exec.task_id, "priority": exec.priority.as_str()});
    if exec.deadline_ms > 0 {
        data["deadline_ms"] = json!(exec.deadline_ms);
        data["deadline_infeasible"] = json!(exec.deadline_infeasible);
    }
    data
}
