//! The executions SMS holds in memory, with indexes of those not yet placed (`ready`, and
//! `pending` on dependencies), so that a scheduling round costs O(ready), not O(every execution
//! ever submitted), and the count of those placed on each node (capacity-aware dispatch).

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Deref;

use crate::model::{ExecState, Execution};

/// Executions by id, plus the ids of the `pending`, the `ready` and the placed (`assigned` or
/// `running`) ones, and the number placed on each node. Reads go through `Deref` to the map; every write goes
/// through [`insert`](Self::insert), which keeps the indexes true.
#[derive(Debug, Default)]
pub struct ExecTable {
    all: BTreeMap<String, Execution>,
    ready: BTreeSet<String>,
    pending: BTreeSet<String>,
    placed: BTreeMap<String, u32>,
    on_nodes: BTreeSet<String>,
}

/// Locks striped by execution id: every read-modify-write of an execution holds its stripe from
/// the read to the write (its durable commit included), so it owns the execution meanwhile;
/// changes of other executions go on beside it and share the storage's group commits.
#[derive(Debug)]
pub struct ExecLocks([tokio::sync::Mutex<()>; 256]);

impl Default for ExecLocks {
    fn default() -> Self {
        Self(std::array::from_fn(|_| tokio::sync::Mutex::new(())))
    }
}

impl ExecLocks {
    /// Own execution `id` until the guard drops. Never hold two at once.
    pub async fn lock(&self, id: &str) -> tokio::sync::MutexGuard<'_, ()> {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        id.hash(&mut h);
        self.0[(h.finish() % self.0.len() as u64) as usize]
            .lock()
            .await
    }
}

/// The node an execution occupies a slot of, if any.
fn occupies(e: &Execution) -> Option<&str> {
    e.node_uuid.as_deref().filter(|_| e.state.is_placed())
}

impl ExecTable {
    /// Insert or replace an execution.
    pub fn insert(&mut self, id: String, exec: Execution) {
        if exec.state.is_placed() {
            self.on_nodes.insert(id.clone());
        } else {
            self.on_nodes.remove(&id);
        }
        let before = self.all.get(&id).and_then(occupies).map(str::to_owned);
        if before.as_deref() != occupies(&exec) {
            if let Some(node) = before
                && let Some(n) = self.placed.get_mut(&node)
            {
                *n -= 1;
                if *n == 0 {
                    self.placed.remove(&node);
                }
            }
            if let Some(node) = occupies(&exec) {
                *self.placed.entry(node.to_owned()).or_default() += 1;
            }
        }
        for (state, index) in [
            (ExecState::Ready, &mut self.ready),
            (ExecState::Pending, &mut self.pending),
        ] {
            if exec.state == state {
                index.insert(id.clone());
            } else {
                index.remove(&id);
            }
        }
        self.all.insert(id, exec);
    }

    /// Change an execution's `error` only (its state, and so the index, stay).
    pub fn set_error(&mut self, id: &str, error: Option<String>) {
        if let Some(e) = self.all.get_mut(id) {
            e.error = error;
        }
    }

    /// The ready executions.
    pub fn ready(&self) -> impl Iterator<Item = (&String, &Execution)> {
        self.ready
            .iter()
            .filter_map(|id| self.all.get_key_value(id))
    }

    /// How many executions are placed (`assigned` or `running`) on each node that has any.
    pub fn placed(&self) -> &BTreeMap<String, u32> {
        &self.placed
    }

    /// The executions not finished: pending, ready, assigned or running (O(those), not O(all)).
    pub fn unfinished(&self) -> impl Iterator<Item = &Execution> {
        self.pending
            .iter()
            .chain(&self.ready)
            .chain(&self.on_nodes)
            .filter_map(|id| self.all.get(id))
    }

    /// The executions waiting on dependencies.
    pub fn pending(&self) -> impl Iterator<Item = (&String, &Execution)> {
        self.pending
            .iter()
            .filter_map(|id| self.all.get_key_value(id))
    }
}

impl Deref for ExecTable {
    type Target = BTreeMap<String, Execution>;

    fn deref(&self) -> &Self::Target {
        &self.all
    }
}

/// A blank execution for unit tests.
#[cfg(test)]
pub(crate) mod tests_support {
    use crate::model::{ExecState, Execution};

    /// A ready execution `e` with every other field empty.
    pub(crate) fn execution() -> Execution {
        Execution {
            execution_id: "e".into(),
            seq: 1,
            task_id: None,
            executable: Default::default(),
            state: ExecState::Ready,
            priority: Default::default(),
            node_uuid: None,
            attempt: 0,
            max_attempts: 1,
            timeout_ms: 0,
            depends_on: vec![],
            result: None,
            error: None,
            stdin: vec![],
            needs: Default::default(),
            labels: Default::default(),
            required_labels: Default::default(),
            preferred_labels: Default::default(),
            submitted_at_ms: 0,
            updated_at_ms: 0,
            not_before_ms: 0,
            assigned_at_ms: 0,
            started_at_ms: 0,
            queue_timeout_ms: 0,
            orphaned_on: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_indexes_follow_every_insert() {
        let exec = |state| Execution {
            state,
            ..tests_support::execution()
        };
        let mut t = ExecTable::default();
        t.insert("e".into(), exec(ExecState::Ready));
        assert_eq!(t.ready().count(), 1);
        t.insert("e".into(), exec(ExecState::Assigned));
        assert_eq!(t.ready().count(), 0);
        t.insert("e".into(), exec(ExecState::Ready));
        assert_eq!(t.ready().count(), 1);
        t.insert("e".into(), exec(ExecState::Pending));
        assert_eq!((t.ready().count(), t.pending().count()), (0, 1));
        t.insert("e".into(), exec(ExecState::Ready));
        assert_eq!((t.ready().count(), t.pending().count()), (1, 0));
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn the_placed_counts_follow_moves_between_nodes_and_states() {
        let on = |state, node: &str| Execution {
            state,
            node_uuid: Some(node.into()),
            ..tests_support::execution()
        };
        let mut t = ExecTable::default();
        t.insert("e".into(), on(ExecState::Assigned, "a"));
        t.insert("f".into(), on(ExecState::Running, "a"));
        assert_eq!(t.placed().get("a"), Some(&2));
        t.insert("e".into(), on(ExecState::Running, "a"));
        assert_eq!(
            t.placed().get("a"),
            Some(&2),
            "assigned to running: same slot"
        );
        t.insert("e".into(), on(ExecState::Ready, "a"));
        t.insert("f".into(), on(ExecState::Assigned, "b"));
        assert_eq!(
            t.placed().get("a"),
            None,
            "back in the queue frees the slot"
        );
        assert_eq!(t.placed().get("b"), Some(&1));
        assert_eq!(t.unfinished().count(), 2);
        t.insert("f".into(), on(ExecState::Succeeded, "b"));
        assert!(t.placed().is_empty());
        assert_eq!(t.unfinished().count(), 1, "e, ready");
    }
}
