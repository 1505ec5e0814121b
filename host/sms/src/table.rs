//! The tables SMS holds in memory: the nodes, with a fingerprint of what decides whether any of
//! them could hold an execution ([`crate::fit`]), kept as they change; and the executions
//! ([`ExecTable`]), with the indexes the scheduler reads. Beside them, the striped locks by which
//! each read-modify-write owns its record.

use std::collections::BTreeMap;
use std::ops::Deref;

use crate::model::Node;

mod execs;

pub use execs::{AGING_MS, ExecTable};

/// Nodes by uuid, plus a fingerprint of the fields [`crate::fit::why_not`] reads (uuid, labels,
/// executors, capacity) over all of them, kept true by every write: reads go through `Deref`,
/// writes through [`insert`](Self::insert), [`update`](Self::update) and [`remove`](Self::remove).
#[derive(Debug, Default)]
pub struct NodeTable {
    all: BTreeMap<String, Node>,
    fit: u64,
}

/// What the fit of one node depends on, hashed.
fn fit_hash(n: &Node) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (&n.uuid, &n.labels, &n.executors, n.capacity).hash(&mut h);
    h.finish()
}

impl NodeTable {
    /// Insert or replace a node.
    pub fn insert(&mut self, uuid: String, node: Node) {
        self.fit = self.fit.wrapping_add(fit_hash(&node));
        if let Some(old) = self.all.insert(uuid, node) {
            self.fit = self.fit.wrapping_sub(fit_hash(&old));
        }
    }

    /// Change node `uuid` in place; `None` when there is none.
    pub fn update<R>(&mut self, uuid: &str, change: impl FnOnce(&mut Node) -> R) -> Option<R> {
        let node = self.all.get_mut(uuid)?;
        let before = fit_hash(node);
        let r = change(node);
        self.fit = self.fit.wrapping_sub(before).wrapping_add(fit_hash(node));
        Some(r)
    }

    /// Remove a node.
    pub fn remove(&mut self, uuid: &str) -> Option<Node> {
        let old = self.all.remove(uuid)?;
        self.fit = self.fit.wrapping_sub(fit_hash(&old));
        Some(old)
    }

    /// A fingerprint of what decides the fit of executions: equal while no node came, went, or
    /// changed its labels, executors or capacity (O(1)).
    pub fn fit_print(&self) -> u64 {
        self.fit
    }
}

impl FromIterator<(String, Node)> for NodeTable {
    fn from_iter<I: IntoIterator<Item = (String, Node)>>(iter: I) -> Self {
        let mut t = Self::default();
        for (uuid, node) in iter {
            t.insert(uuid, node);
        }
        t
    }
}

impl Deref for NodeTable {
    type Target = BTreeMap<String, Node>;

    fn deref(&self) -> &Self::Target {
        &self.all
    }
}

/// Locks striped by record id (an execution's, a node's, a task's, a file's content): every
/// read-modify-write of a record holds its stripe from the read to the write (its durable commit
/// included), so it owns the record meanwhile; changes of other records go on beside it and share
/// the storage's group commits.
#[derive(Debug)]
pub struct KeyLocks([tokio::sync::Mutex<()>; 256]);

impl Default for KeyLocks {
    fn default() -> Self {
        Self(std::array::from_fn(|_| tokio::sync::Mutex::new(())))
    }
}

impl KeyLocks {
    /// Own record `id` until the guard drops. Never hold two of one set at once.
    pub async fn lock(&self, id: &str) -> tokio::sync::MutexGuard<'_, ()> {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        id.hash(&mut h);
        self.0[(h.finish() % self.0.len() as u64) as usize]
            .lock()
            .await
    }
}

/// Gates striped by task id: a submit of a task's execution holds its stripe shared from the
/// look at the task to the execution's durable commit, and a change that stops a task taking
/// executions (its unregistration) holds it exclusively around its own commit. So an execution
/// is either committed before the unregistration (and its submit answered first) or refused;
/// submits of one task still share group commits.
#[derive(Debug)]
pub struct TaskGates([tokio::sync::RwLock<()>; 64]);

impl Default for TaskGates {
    fn default() -> Self {
        Self(std::array::from_fn(|_| tokio::sync::RwLock::new(())))
    }
}

impl TaskGates {
    fn stripe(&self, id: &str) -> &tokio::sync::RwLock<()> {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        id.hash(&mut h);
        &self.0[(h.finish() % self.0.len() as u64) as usize]
    }

    /// For a submit: shared.
    pub async fn submit(&self, id: &str) -> tokio::sync::RwLockReadGuard<'_, ()> {
        self.stripe(id).read().await
    }

    /// For an unregistration: exclusive (waits for the submits in flight).
    pub async fn close(&self, id: &str) -> tokio::sync::RwLockWriteGuard<'_, ()> {
        self.stripe(id).write().await
    }
}

/// A blank execution for unit tests.
#[cfg(test)]
pub(crate) mod tests_support {
    use crate::model::{ExecState, Execution};

    /// An active node `uuid` that runs processes, with every other field empty.
    pub(crate) fn node(uuid: &str) -> crate::model::Node {
        crate::model::Node {
            uuid: uuid.into(),
            ip_address: "127.0.0.1".into(),
            port: 1,
            status: crate::model::NodeStatus::Active,
            metadata: Default::default(),
            labels: Default::default(),
            capacity: Default::default(),
            available: Default::default(),
            executors: vec!["process".into()],
            running: 0,
            slots: 1,
            health_info: Default::default(),
            registered_at_ms: 0,
            last_heartbeat_ms: 0,
            resource: None,
            held_by: None,
        }
    }

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
            requeued: 0,
            ended_attempt: 0,
            started_attempt: 0,
            max_attempts: 1,
            timeout_ms: 0,
            depends_on: vec![],
            result: None,
            error: None,
            stdin: vec![],
            stdin_blob: None,
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
            deadline_ms: 0,
            estimate_ms: 0,
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
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fit_print_changes_with_what_decides_fit_and_only_that() {
        let node = tests_support::node;
        let empty = NodeTable::default().fit_print();
        let mut t = NodeTable::default();
        t.insert("a".into(), node("a"));
        let one = t.fit_print();
        assert_ne!(one, empty);
        t.insert("b".into(), node("b"));
        let two = t.fit_print();
        let other_order: NodeTable = [("b".into(), node("b")), ("a".into(), node("a"))]
            .into_iter()
            .collect();
        assert_eq!(
            other_order.fit_print(),
            two,
            "independent of the order of writes"
        );
        t.update("a", |n| {
            n.running = 5;
            n.last_heartbeat_ms = 9;
            n.status = crate::model::NodeStatus::Unhealthy;
        });
        assert_eq!(t.fit_print(), two, "heartbeat figures do not decide fit");
        t.update("a", |n| {
            n.labels.insert("zone".into(), "x".into());
        });
        assert_ne!(t.fit_print(), two, "labels do");
        t.update("a", |n| n.labels.clear());
        assert_eq!(t.fit_print(), two);
        let mut bigger = node("b");
        bigger.capacity.memory_mb = 1;
        t.insert("b".into(), bigger);
        assert_ne!(t.fit_print(), two, "a replaced node's capacity does");
        t.remove("b");
        assert_eq!(t.fit_print(), one);
        assert!(t.update("b", |_| ()).is_none());
        t.remove("a");
        assert_eq!(t.fit_print(), empty);
    }
}
