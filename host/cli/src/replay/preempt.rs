//! `spear sim --preemption`: SMS's `[preemption]`, in virtual time.
//!
//! The simulator preempts as SMS's cluster mode does (`host/sms/src/preempt`): at most every
//! [`LOOK_MS`], up to [`CANDIDATES`] executions from the first [`SCAN`] of the queue that have
//! waited [`SETTLE_MS`], have no victim stopping for them already, and find no free place on a
//! node that could hold them, each take one victim: among the running work of those nodes, at
//! least `min_priority_gap` levels below, the lowest priority, then the one that started last.
//! The victim keeps its place for `grace_ms`, then goes back to the queue without spending an
//! attempt, placeable [`RESTART_MS`] later: from where it stopped when it checkpoints, from the
//! beginning (its run so far lost) when it does not. At most `budget_per_minute` preemptions in
//! any minute. SMS's node mode acts on executions sent ahead to a node, which the simulator does
//! not model: only `off` and `cluster` are offered.

use std::collections::VecDeque;

use crate::error::{CliError, Result};

/// How long an execution waits before it may preempt (SMS's).
pub const SETTLE_MS: u64 = 250;
/// How often the scheduler looks for work to preempt for, at most (SMS's).
pub const LOOK_MS: u64 = 100;
/// Executions looked at per look (SMS's).
pub const CANDIDATES: usize = 8;
/// How far into the queue a look reads (SMS's).
pub const SCAN: usize = 256;
/// How long after its stop a preempted execution may be placed again (SMS's).
pub const RESTART_MS: u64 = 500;

/// Where preemption may take a place from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// Never.
    #[default]
    Off,
    /// On any node that could hold the waiting execution.
    Cluster,
}

/// The `[preemption]` settings a replay uses (flags named as SMS's keys).
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct PreemptArgs {
    /// Preemption, as SMS's `[preemption] mode` (`node` needs dispatch prefetch, not simulated).
    #[arg(long = "preemption", value_enum, default_value_t = Mode::Off)]
    pub mode: Mode,
    /// Priority levels a victim must be below (1 to 3).
    #[arg(long, default_value_t = 1)]
    pub min_priority_gap: u8,
    /// Time a victim keeps its place to save its state, ms (0 to 600,000).
    #[arg(long, default_value_t = 10_000)]
    pub grace_ms: u64,
    /// Most preemptions in any minute (1 to 10,000).
    #[arg(long, default_value_t = 10)]
    pub budget_per_minute: u32,
}

impl PreemptArgs {
    /// Refuse a value SMS would refuse, naming its flag.
    pub fn validate(&self) -> Result<()> {
        let bad = |flag: &str, why: String| Err(CliError::Usage(format!("--{flag}: {why}")));
        if !(1..=3).contains(&self.min_priority_gap) {
            return bad(
                "min-priority-gap",
                format!("must be 1 to 3, not {}", self.min_priority_gap),
            );
        }
        if self.grace_ms > 600_000 {
            return bad(
                "grace-ms",
                format!(
                    "must be at most 600000 (ten minutes), not {}",
                    self.grace_ms
                ),
            );
        }
        if !(1..=10_000).contains(&self.budget_per_minute) {
            return bad(
                "budget-per-minute",
                format!(
                    "must be 1 to 10000, not {} (--preemption off turns preemption off)",
                    self.budget_per_minute
                ),
            );
        }
        Ok(())
    }
}

/// The preemptions of the last minute.
#[derive(Debug, Default)]
pub struct Budget {
    spent: VecDeque<u64>,
}

impl Budget {
    /// Spend one at `now` if fewer than `per_minute` were spent in the minute before it.
    pub fn try_spend(&mut self, now: u64, per_minute: u32) -> bool {
        while self
            .spent
            .front()
            .is_some_and(|t| t.saturating_add(60_000) <= now)
        {
            self.spent.pop_front();
        }
        if self.spent.len() >= per_minute as usize {
            return false;
        }
        self.spent.push_back(now);
        true
    }

    /// When the next one may be spent, once the budget is spent.
    pub fn next_free(&self) -> u64 {
        self.spent.front().map_or(0, |t| t.saturating_add(60_000))
    }
}
