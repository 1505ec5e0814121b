//! What the scheduler's housekeeping must look at, kept as executions change so that a pass
//! reads only those that may be due, not every unfinished execution (a backlog of thousands
//! queued would otherwise be walked every [`MAINTENANCE_MS`](crate::sched)):
//!
//! - deadlines in time order: when a never-started execution's queue timeout passes, and when
//!   a running attempt's timeout passes (the scheduler adds its grace when it asks);
//! - deadlines ([`crate::deadlines`]) of unfinished executions in time order, until a miss is
//!   recorded;
//! - for each execution that pending ones depend on, those pending ones; when it ends they are
//!   marked to be looked at, as is a pending execution when it becomes pending (its
//!   dependencies may have ended already).
//!
//! [`ExecTable`](crate::table::ExecTable) updates this on every write; the scheduler decides,
//! as each execution's owner, whether it is really due.

use std::collections::{BTreeMap, BTreeSet};

use crate::model::{ExecState, Execution};

/// The housekeeping index of the unfinished executions.
#[derive(Debug, Default)]
pub struct DueIndex {
    /// Never-started executions by the end of their queue timeout.
    queue: BTreeSet<(i64, String)>,
    /// Running attempts by the end of their timeout (before grace).
    run: BTreeSet<(i64, String)>,
    /// Executions by their deadline, while a miss may still have to be recorded.
    deadline: BTreeSet<(i64, String)>,
    /// For an execution that pending ones depend on: those pending ones.
    waiters: BTreeMap<String, BTreeSet<String>>,
    /// Pending executions to look at, each with the mark it was last given.
    marked: BTreeMap<String, u64>,
    marks: u64,
}

fn millis(ms: u64) -> i64 {
    i64::try_from(ms).unwrap_or(i64::MAX)
}

/// When a never-started execution's queue timeout ends (it is timed out once past it).
fn queue_deadline(e: &Execution) -> Option<i64> {
    let waiting = matches!(
        e.state,
        ExecState::Pending | ExecState::Ready | ExecState::Assigned
    );
    (e.queue_timeout_ms > 0 && waiting && e.started_at_ms == 0)
        .then(|| e.submitted_at_ms.saturating_add(millis(e.queue_timeout_ms)))
}

/// When a running attempt's timeout ends, counted from its start (from its assignment in
/// records stored before starts were); grace comes on top.
fn run_deadline(e: &Execution) -> Option<i64> {
    let since = if e.started_at_ms > 0 {
        e.started_at_ms
    } else {
        e.assigned_at_ms
    };
    (e.timeout_ms > 0 && e.state == ExecState::Running)
        .then(|| since.saturating_add(millis(e.timeout_ms)))
}

/// An unfinished execution's deadline while no miss is recorded (one that finishes late is
/// marked in the write that ends it: [`crate::deadlines::finished_late`]).
pub fn deadline_at(e: &Execution) -> Option<i64> {
    (e.deadline_ms > 0 && !e.deadline_missed && !e.state.is_terminal()).then_some(e.deadline_ms)
}

/// Move `id`'s entry in `set` from `old` to `new`.
fn follow(set: &mut BTreeSet<(i64, String)>, id: &str, old: Option<i64>, new: Option<i64>) {
    if old != new {
        if let Some(t) = old {
            set.remove(&(t, id.to_owned()));
        }
        if let Some(t) = new {
            set.insert((t, id.to_owned()));
        }
    }
}

impl DueIndex {
    /// Follow the write of execution `id` from `old` (absent when new) to `new`.
    pub fn update(&mut self, id: &str, old: Option<&Execution>, new: &Execution) {
        follow(
            &mut self.queue,
            id,
            old.and_then(queue_deadline),
            queue_deadline(new),
        );
        follow(
            &mut self.run,
            id,
            old.and_then(run_deadline),
            run_deadline(new),
        );
        follow(
            &mut self.deadline,
            id,
            old.and_then(deadline_at),
            deadline_at(new),
        );
        if let Some(o) = old.filter(|o| o.state == ExecState::Pending) {
            for dep in &o.depends_on {
                if let Some(w) = self.waiters.get_mut(dep) {
                    w.remove(id);
                    if w.is_empty() {
                        self.waiters.remove(dep);
                    }
                }
            }
            self.marked.remove(id);
        }
        if new.state == ExecState::Pending {
            for dep in &new.depends_on {
                self.waiters
                    .entry(dep.clone())
                    .or_default()
                    .insert(id.to_owned());
            }
            self.mark(id);
        }
        let ended = new.state.is_terminal() && !old.is_some_and(|o| o.state.is_terminal());
        if ended && let Some(waiting) = self.waiters.get(id) {
            let waiting: Vec<String> = waiting.iter().cloned().collect();
            for w in waiting {
                self.mark(&w);
            }
        }
    }

    fn mark(&mut self, id: &str) {
        self.marks += 1;
        self.marked.insert(id.to_owned(), self.marks);
    }

    /// The executions the housekeeping may have to act on at `now`: past their queue deadline,
    /// running past their timeout plus `grace`, or pending and marked (with the mark, to hand
    /// back to [`looked_at`](Self::looked_at) when one is not due yet).
    pub fn maybe_due(&self, now: i64, grace: i64) -> BTreeMap<String, Option<u64>> {
        let mut out = BTreeMap::new();
        let past = |(t, _): &&(i64, String), extra: i64| t.saturating_add(extra) < now;
        for (_, id) in self.queue.iter().take_while(|e| past(e, 0)) {
            out.insert(id.clone(), None);
        }
        for (_, id) in self.run.iter().take_while(|e| past(e, grace)) {
            out.insert(id.clone(), None);
        }
        for (_, id) in self.deadline.iter().take_while(|e| past(e, 0)) {
            out.insert(id.clone(), None);
        }
        for (id, mark) in &self.marked {
            out.insert(id.clone(), Some(*mark));
        }
        out
    }

    /// Pending `id` was looked at and is not due: forget its mark, unless it was marked again
    /// since (a dependency ended meanwhile).
    pub fn looked_at(&mut self, id: &str, mark: u64) {
        if self.marked.get(id) == Some(&mark) {
            self.marked.remove(id);
        }
    }

    /// Whether pending executions wait on `id`.
    pub fn has_waiters(&self, id: &str) -> bool {
        self.waiters.contains_key(id)
    }

    /// Whether the index holds nothing (it empties as executions end).
    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.queue.is_empty()
            && self.run.is_empty()
            && self.deadline.is_empty()
            && self.waiters.is_empty()
            && self.marked.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::tests_support::execution;

    fn exec(state: ExecState) -> Execution {
        Execution {
            state,
            ..execution()
        }
    }

    #[test]
    fn deadlines_come_due_in_time_and_leave_when_the_execution_moves_on() {
        let mut ix = DueIndex::default();
        let mut e = exec(ExecState::Ready);
        e.submitted_at_ms = 1_000;
        e.queue_timeout_ms = 500;
        ix.update("q", None, &e);
        assert!(
            ix.maybe_due(1_500, 0).is_empty(),
            "at the deadline: not past"
        );
        assert_eq!(ix.maybe_due(1_501, 0).get("q"), Some(&None));
        let mut running = e.clone();
        running.state = ExecState::Running;
        running.started_at_ms = 1_200;
        running.timeout_ms = 100;
        ix.update("q", Some(&e), &running);
        assert!(
            ix.maybe_due(1_600, 0).contains_key("q"),
            "ran past its timeout; the queue timeout no longer counts once started"
        );
        assert!(ix.maybe_due(1_600, 1_000).is_empty(), "within grace");
        assert!(ix.maybe_due(2_301, 1_000).contains_key("q"));
        let mut done = running.clone();
        done.state = ExecState::Succeeded;
        ix.update("q", Some(&running), &done);
        assert!(ix.maybe_due(i64::MAX, 0).is_empty());
        assert!(ix.is_empty());
        let mut forever = exec(ExecState::Running);
        forever.timeout_ms = u64::MAX;
        forever.started_at_ms = 5;
        ix.update("f", None, &forever);
        assert!(ix.maybe_due(i64::MAX, i64::MAX).is_empty(), "saturates");
    }

    #[test]
    fn a_deadline_comes_due_unless_the_execution_finished_in_time() {
        let mut ix = DueIndex::default();
        let mut e = exec(ExecState::Ready);
        e.deadline_ms = 1_000;
        ix.update("d", None, &e);
        assert!(
            ix.maybe_due(1_000, 0).is_empty(),
            "at the deadline: not past"
        );
        assert!(ix.maybe_due(1_001, 0).contains_key("d"));
        // Recorded: nothing more to do.
        let mut recorded = e.clone();
        recorded.deadline_missed = true;
        ix.update("d", Some(&e), &recorded);
        assert!(ix.is_empty());
        // Finished (in time or not: a late end is marked in its own write): gone.
        ix.update("l", None, &e);
        let mut done = e.clone();
        done.state = ExecState::Succeeded;
        ix.update("l", Some(&e), &done);
        assert!(ix.is_empty());
    }

    #[test]
    fn a_pending_execution_is_marked_when_it_comes_and_when_a_dependency_ends() {
        let mut ix = DueIndex::default();
        let mut p = exec(ExecState::Pending);
        p.depends_on = vec!["a".into(), "b".into()];
        ix.update("p", None, &p);
        let first = ix.maybe_due(0, 0)["p"].expect("marked when it became pending");
        ix.looked_at("p", first);
        assert!(ix.maybe_due(0, 0).is_empty());
        let a = exec(ExecState::Running);
        ix.update("a", None, &a);
        assert!(ix.maybe_due(0, 0).is_empty(), "a dependency still running");
        ix.update("a", Some(&a), &exec(ExecState::Succeeded));
        let second = ix.maybe_due(0, 0)["p"].unwrap();
        // `b` ends while `p` is being looked at: the later mark survives the earlier look.
        ix.update("b", None, &exec(ExecState::Failed));
        ix.looked_at("p", second);
        assert!(ix.maybe_due(0, 0).contains_key("p"));
        ix.update("p", Some(&p), &exec(ExecState::Failed));
        assert!(ix.is_empty(), "no waiter or mark is left behind");
    }
}
