//! Preemption: higher-priority work that cannot be placed takes the place of lower-priority
//! work that runs, as `[preemption]` allows.
//!
//! - **Who waits.** `mode = "node"`: an execution SMS sent ahead to a node (the dispatch
//!   prefetch) that has waited there [`SETTLE_MS`] for a slot while the node's slots all run
//!   other work. `mode = "cluster"`: those, and the head of SMS's queue when no node that could
//!   hold it has a free place.
//! - **The victim.** Among the running executions of the nodes that could hold the waiting one
//!   (its node, when it waits on one), those at least `min_priority_gap` levels below it and not
//!   already being preempted; the lowest priority first, then the one that started last (the
//!   least work lost).
//! - **Limits.** At most `budget_per_minute` preemptions in any minute; one preemption at a time
//!   for each waiting execution (another only once the first victim has stopped, or
//!   `grace_ms` plus [`STUCK_MS`] has passed).
//! - **The stop.** The victim is marked `preempting` (event `execution.preempted`) and its node
//!   is told to stop it: SIGTERM, `grace_ms` to save its state, then SIGKILL. It keeps its place
//!   until the node reports it stopped; then it goes back to the queue **without spending an
//!   attempt** (`preemptions` counts it), with its checkpoint when it declared one
//!   ([`recovery_of`]). A node that reconnects meanwhile is told again.
//!
//! The freed place goes to whatever the queue and the strategy put there next; the waiting
//! execution is first in line by its priority.

mod act;

pub(crate) use act::take_stop;

use std::collections::{HashMap, VecDeque};

use serde::{Deserialize, Serialize};
use spear_config::Problems;

use crate::error::{Result, SmsError};
use crate::model::{ExecState, Execution, Priority, Recovery, Task};

/// How long an execution waits (queued, or on its node) before it may preempt: a round or a
/// start report is usually quicker.
pub const SETTLE_MS: i64 = 250;
/// How often SMS looks for work to preempt for, at most.
pub const LOOK_MS: i64 = 100;
/// How long past its grace a victim may take to be reported stopped before the execution it
/// made room for may preempt another.
pub const STUCK_MS: i64 = 30_000;
/// Executions looked at per look, most urgent first.
pub const CANDIDATES: usize = 8;
/// How far into SMS's queue a look reads for them.
pub const SCAN: usize = 256;
/// The largest checkpoint a node may send (a zip of the checkpoint directory).
pub const MAX_CHECKPOINT_BYTES: usize = 16 * 1024 * 1024;
/// The task metadata key that turns checkpoints on (`"true"` or `"false"`).
pub const CHECKPOINT_KEY: &str = "spear.checkpoint";
/// The task metadata key that picks the recovery (`"restart"`, `"checkpoint"` or `"migrate"`).
pub const RECOVERY_KEY: &str = "spear.recovery";

/// Where preemption may take a place from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Never.
    #[default]
    Off,
    /// Only on the node where the waiting execution already waits.
    Node,
    /// On any node that could hold the waiting execution.
    Cluster,
}

/// `[preemption]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PreemptionConfig {
    /// Off, node or cluster.
    pub mode: Mode,
    /// Levels of priority (low, normal, high, urgent) a victim must be below (1 to 3).
    pub min_priority_gap: u8,
    /// Time a victim gets after SIGTERM to save its state (0 to 600,000 ms).
    pub grace_ms: u64,
    /// Most preemptions in any minute (1 to 10,000).
    pub budget_per_minute: u32,
}

impl Default for PreemptionConfig {
    fn default() -> Self {
        Self {
            mode: Mode::Off,
            min_priority_gap: 1,
            grace_ms: 10_000,
            budget_per_minute: 10,
        }
    }
}

impl PreemptionConfig {
    /// Add a problem for each key out of range.
    pub fn validate(&self, problems: &mut Problems) {
        if !(1..=3).contains(&self.min_priority_gap) {
            problems.invalid(
                "preemption.min_priority_gap",
                format!("must be 1 to 3, not {}", self.min_priority_gap),
            );
        }
        if self.grace_ms > 600_000 {
            problems.invalid(
                "preemption.grace_ms",
                format!(
                    "must be at most 600000 (ten minutes), not {}",
                    self.grace_ms
                ),
            );
        }
        if !(1..=10_000).contains(&self.budget_per_minute) {
            problems.invalid(
                "preemption.budget_per_minute",
                format!(
                    "must be 1 to 10000, not {} (mode = \"off\" turns preemption off)",
                    self.budget_per_minute
                ),
            );
        }
    }
}

/// A task's `spear.checkpoint` and `spear.recovery`, checked at registration.
pub fn check_task_metadata(metadata: &std::collections::BTreeMap<String, String>) -> Result<()> {
    if let Some(v) = metadata.get(CHECKPOINT_KEY)
        && !matches!(v.as_str(), "true" | "false")
    {
        return Err(SmsError::invalid(
            format!("metadata.{CHECKPOINT_KEY}"),
            format!("`{v}` is not true or false"),
        ));
    }
    if let Some(v) = metadata.get(RECOVERY_KEY)
        && Recovery::parse(v).is_none()
    {
        return Err(SmsError::invalid(
            format!("metadata.{RECOVERY_KEY}"),
            format!("`{v}` is not one of restart, checkpoint, migrate"),
        ));
    }
    Ok(())
}

/// Whether an execution checkpoints and how it recovers: what its submission says, else its
/// task's metadata, else no checkpoint; the recovery defaults to `checkpoint` for one that
/// checkpoints and `restart` otherwise (a checkpoint is restored under `checkpoint` and
/// `migrate`).
pub fn recovery_of(
    task: Option<&Task>,
    checkpoint: Option<bool>,
    recovery: Option<&str>,
) -> (bool, Recovery) {
    let meta = |k: &str| task.and_then(|t| t.metadata.get(k)).map(String::as_str);
    let checkpoint = checkpoint.unwrap_or(meta(CHECKPOINT_KEY) == Some("true"));
    let recovery = recovery
        .or(meta(RECOVERY_KEY))
        .and_then(Recovery::parse)
        .unwrap_or(if checkpoint {
            Recovery::Checkpoint
        } else {
            Recovery::Restart
        });
    (checkpoint, recovery)
}

/// The best victim among `running` for work of priority `want`: at least `gap` levels below it,
/// running and not already being preempted; the lowest priority, then the latest start.
pub fn victim<'a>(
    want: Priority,
    gap: u8,
    running: impl IntoIterator<Item = &'a Execution>,
) -> Option<&'a Execution> {
    running
        .into_iter()
        .filter(|e| e.state == ExecState::Running && e.preempting_ms == 0)
        .filter(|e| (e.priority as u8).saturating_add(gap) <= want as u8)
        .min_by_key(|e| (e.priority, std::cmp::Reverse(e.started_at_ms)))
}

/// Preemptions spent in the last minute.
#[derive(Debug, Default)]
pub(crate) struct Budget {
    spent: VecDeque<i64>,
}

impl Budget {
    /// Spend one at `now` if fewer than `per_minute` were spent in the minute before.
    pub(crate) fn try_spend(&mut self, now: i64, per_minute: u32) -> bool {
        while self.spent.front().is_some_and(|t| *t <= now - 60_000) {
            self.spent.pop_front();
        }
        if self.spent.len() >= per_minute as usize {
            return false;
        }
        self.spent.push_back(now);
        true
    }
}

/// What the preemption pass keeps between looks (the scheduler's alone).
#[derive(Debug, Default)]
pub(crate) struct State {
    pub(crate) budget: Budget,
    /// Waiting execution → (its victim, when it may preempt again).
    pub(crate) waits: HashMap<String, (String, i64)>,
    /// Victims by when they are taken back if still not reported stopped (grace + [`STUCK_MS`]
    /// after their preemption); at most the budget's worth of each minute.
    pub(crate) victims: std::collections::BTreeSet<(i64, String)>,
    pub(crate) last_look_ms: i64,
}

/// Most waiting executions remembered (each at most one look's worth of candidates a minute).
const MAX_WAITS: usize = 4096;

impl State {
    /// Forget the waits whose time is up at `now`, and the oldest past [`MAX_WAITS`]; returns
    /// the victims whose time to be reported stopped is up.
    pub(crate) fn prune(&mut self, now: i64) -> Vec<String> {
        let mut due = Vec::new();
        while let Some((at, _)) = self.victims.first()
            && *at <= now
        {
            if let Some((_, id)) = self.victims.pop_first() {
                due.push(id);
            }
        }
        self.waits.retain(|_, (_, until)| *until > now);
        if self.waits.len() > MAX_WAITS {
            let mut by_time: Vec<(String, i64)> = self
                .waits
                .iter()
                .map(|(k, (_, u))| (k.clone(), *u))
                .collect();
            by_time.sort_by_key(|(_, u)| *u);
            for (k, _) in by_time.into_iter().take(self.waits.len() - MAX_WAITS) {
                self.waits.remove(&k);
            }
        }
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn running(id: &str, p: Priority, started: i64) -> Execution {
        let mut e = crate::table::tests_support::execution();
        e.execution_id = id.into();
        e.state = ExecState::Running;
        e.priority = p;
        e.started_at_ms = started;
        e
    }

    #[test]
    fn the_victim_is_the_lowest_then_the_latest_started_within_the_gap() {
        let set = [
            running("normal-old", Priority::Normal, 1),
            running("low-old", Priority::Low, 1),
            running("low-new", Priority::Low, 5),
            running("high", Priority::High, 9),
        ];
        let v = victim(Priority::Urgent, 1, &set).unwrap();
        assert_eq!(v.execution_id, "low-new");
        let v = victim(Priority::Normal, 1, &set).unwrap();
        assert_eq!(v.execution_id, "low-new");
        assert!(
            victim(Priority::Low, 1, &set).is_none(),
            "nothing below low"
        );
        assert!(
            victim(Priority::High, 3, &set).is_none(),
            "a gap of 3 only lets urgent take low"
        );
        assert_eq!(
            victim(Priority::Urgent, 3, &set).unwrap().execution_id,
            "low-new"
        );
        let mut busy = set.clone();
        busy[2].preempting_ms = 7;
        busy[1].state = ExecState::Assigned;
        assert_eq!(
            victim(Priority::Urgent, 1, &busy).unwrap().execution_id,
            "normal-old",
            "one being preempted, or not running, is not taken"
        );
    }

    #[test]
    fn the_budget_counts_a_sliding_minute() {
        let mut b = Budget::default();
        assert!(b.try_spend(1_000, 2));
        assert!(b.try_spend(2_000, 2));
        assert!(!b.try_spend(3_000, 2));
        assert!(
            !b.try_spend(60_999, 2),
            "the first is still within the minute"
        );
        assert!(b.try_spend(61_000, 2), "the first is out");
        assert!(!b.try_spend(61_500, 2));
    }

    #[test]
    fn recovery_follows_the_submission_then_the_task() {
        assert_eq!(recovery_of(None, None, None), (false, Recovery::Restart));
        assert_eq!(
            recovery_of(None, Some(true), None),
            (true, Recovery::Checkpoint)
        );
        assert_eq!(
            recovery_of(None, Some(true), Some("restart")),
            (true, Recovery::Restart)
        );
        let task: Task = serde_json::from_value(serde_json::json!({
            "task_id": "t", "name": "t", "description": "", "status": "registered",
            "priority": "normal", "node_uuid": null, "endpoint": "", "version": "",
            "capabilities": [], "executable": {"type": "process", "uri": "sms+file://x"},
            "metadata": {CHECKPOINT_KEY: "true"}, "labels": {},
            "needs": {"cpu_millis": 0, "memory_mb": 0, "disk_mb": 0},
            "required_labels": {}, "preferred_labels": {}, "registered_at_ms": 0,
        }))
        .unwrap();
        assert_eq!(
            recovery_of(Some(&task), None, None),
            (true, Recovery::Checkpoint)
        );
        assert_eq!(
            recovery_of(Some(&task), Some(false), None),
            (false, Recovery::Restart)
        );
        assert_eq!(
            recovery_of(None, None, Some("migrate")),
            (false, Recovery::Migrate)
        );
        let mut bad = std::collections::BTreeMap::new();
        bad.insert(RECOVERY_KEY.to_string(), "teleport".to_string());
        assert!(check_task_metadata(&bad).is_err());
        bad.clear();
        bad.insert(CHECKPOINT_KEY.to_string(), "yes".to_string());
        assert!(check_task_metadata(&bad).is_err());
    }
}
