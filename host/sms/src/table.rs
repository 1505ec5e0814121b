//! The executions SMS holds in memory, with indexes of those not yet placed (`ready`, and
//! `pending` on dependencies), so that a scheduling round costs O(ready), not O(every execution
//! ever submitted).

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Deref;

use crate::model::{ExecState, Execution};

/// Executions by id, plus the ids of the `ready` and of the `pending` ones. Reads go through
/// `Deref` to the map; every write goes through [`insert`](Self::insert), which keeps the indexes
/// true.
#[derive(Debug, Default)]
pub struct ExecTable {
    all: BTreeMap<String, Execution>,
    ready: BTreeSet<String>,
    pending: BTreeSet<String>,
}

impl ExecTable {
    /// Insert or replace an execution.
    pub fn insert(&mut self, id: String, exec: Execution) {
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
}
