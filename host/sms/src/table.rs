//! The tables SMS holds in memory: the nodes, with a fingerprint of what decides whether any of
//! them could hold an execution ([`crate::fit`]), kept as they change; and the executions, with
//! indexes of those not yet placed (`ready` in queue order, and `pending` on dependencies), so
//! that a scheduling round reads only the batch it takes, not every execution ever submitted,
//! and the count of those placed on each node (capacity-aware dispatch).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Deref;

use crate::due::DueIndex;
use crate::model::{ExecState, Execution, Node};

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

/// Executions by id, plus the ids of the `pending`, the `ready` and the placed (`assigned` or
/// `running`) ones, and the number placed on each node. Reads go through `Deref` to the map; every write goes
/// through [`insert`](Self::insert), which keeps the indexes true.
#[derive(Debug, Default)]
pub struct ExecTable {
    /// Boxed: the map's nodes stay small, and every execution is one allocation of one size
    /// (a table that lets the oldest go as new ones come keeps its nodes half full; inline, the
    /// 640-byte records would make that half a lot of memory).
    all: BTreeMap<String, Box<Execution>>,
    /// The ready ones in queue order.
    ready: BTreeSet<(QueueKey, String)>,
    pending: BTreeSet<String>,
    placed: BTreeMap<String, u32>,
    on_nodes: BTreeSet<String>,
    /// The placed executions of each node (what a node's reconnect and loss read: O(its own),
    /// not O(every unfinished execution)).
    by_node: HashMap<String, BTreeSet<String>>,
    /// Nodes whose placed count changed since the last [`take_touched`](Self::take_touched).
    touched: BTreeSet<String>,
    /// What the scheduler's housekeeping may have to act on.
    due: DueIndex,
    /// How many are in each state.
    counts: BTreeMap<&'static str, u64>,
    /// The finished ones, by when they finished (what [`evict`](Self::evict) takes first).
    finished: BTreeSet<(i64, String)>,
    /// How many times [`evict`](Self::evict) let some go.
    evictions: u64,
    /// `[deadlines] urgency_window_ms` (fixed for the table's life: the queue's order rests on it).
    urgency_window_ms: u64,
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

/// Waiting this long raises a ready execution by one priority level.
pub const AGING_MS: i64 = 10_000;

/// Where a ready execution stands in the queue: higher priority first, where every
/// [`AGING_MS`] waited counts as one level, then the older. The score of an execution is
/// `priority × AGING_MS + (now − since)`; `now` is the same for all, so the order is that of
/// `priority × AGING_MS − since`, which does not change while the execution waits. An execution
/// with a deadline waits "since" its latest start less the urgency window
/// ([`crate::deadlines::queue_since`]).
type QueueKey = (std::cmp::Reverse<i64>, u64);

fn queue_key(e: &Execution, urgency_window_ms: u64) -> QueueKey {
    let since = crate::deadlines::queue_since(
        e.submitted_at_ms.max(e.not_before_ms),
        e.deadline_ms,
        e.estimate_ms,
        urgency_window_ms,
    );
    (
        std::cmp::Reverse(
            (e.priority as i64)
                .saturating_mul(AGING_MS)
                .saturating_sub(since),
        ),
        e.seq,
    )
}

/// The node an execution occupies a slot of, if any.
fn occupies(e: &Execution) -> Option<&str> {
    e.node_uuid.as_deref().filter(|_| e.state.is_placed())
}

impl ExecTable {
    /// An empty table whose queue weighs deadlines with `urgency_window_ms`
    /// ([`crate::deadlines`]); [`default`](Default::default) has none (0).
    pub fn with_urgency_window(urgency_window_ms: u64) -> Self {
        Self {
            urgency_window_ms,
            ..Self::default()
        }
    }

    /// Insert or replace an execution.
    pub fn insert(&mut self, id: String, exec: Execution) {
        self.due.update(&id, self.all.get(&id).map(|e| &**e), &exec);
        if let Some(old) = self.all.get(&id)
            && let Some(n) = self.counts.get_mut(old.state.as_str())
        {
            *n -= 1;
        }
        *self.counts.entry(exec.state.as_str()).or_default() += 1;
        if exec.state.is_placed() {
            self.on_nodes.insert(id.clone());
        } else {
            self.on_nodes.remove(&id);
        }
        if let Some(old) = self.all.get(&id)
            && old.state == ExecState::Ready
        {
            self.ready
                .remove(&(queue_key(old, self.urgency_window_ms), id.clone()));
        }
        if exec.state == ExecState::Ready {
            self.ready
                .insert((queue_key(&exec, self.urgency_window_ms), id.clone()));
        }
        let before = self.get(&id).and_then(occupies).map(str::to_owned);
        if before.as_deref() != occupies(&exec) {
            if let Some(node) = before {
                if let Some(n) = self.placed.get_mut(&node) {
                    *n -= 1;
                    if *n == 0 {
                        self.placed.remove(&node);
                    }
                }
                if let Some(ids) = self.by_node.get_mut(&node) {
                    ids.remove(&id);
                    if ids.is_empty() {
                        self.by_node.remove(&node);
                    }
                }
                self.touched.insert(node);
            }
            if let Some(node) = occupies(&exec) {
                *self.placed.entry(node.to_owned()).or_default() += 1;
                self.by_node
                    .entry(node.to_owned())
                    .or_default()
                    .insert(id.clone());
                if !self.touched.contains(node) {
                    self.touched.insert(node.to_owned());
                }
            }
        }
        if exec.state == ExecState::Pending {
            self.pending.insert(id.clone());
        } else {
            self.pending.remove(&id);
        }
        if let Some(old) = self.all.get(&id)
            && old.state.is_terminal()
        {
            self.finished.remove(&(old.updated_at_ms, id.clone()));
        }
        if exec.state.is_terminal() {
            self.finished.insert((exec.updated_at_ms, id.clone()));
        }
        self.all.insert(id, Box::new(exec));
    }

    /// Let finished executions go from memory (they are in storage): those that finished before
    /// `cutoff_ms`, and beyond the newest `keep` finished ones the oldest, looking at no more than
    /// `budget`. One that pending executions wait on stays until they have looked at it.
    /// Returns how many went.
    pub fn evict(&mut self, cutoff_ms: i64, keep: usize, budget: usize) -> usize {
        let mut over = self.finished.len().saturating_sub(keep);
        let mut gone = Vec::new();
        for (at, id) in self.finished.iter().take(budget) {
            if over == 0 && *at >= cutoff_ms {
                break;
            }
            if self.due.has_waiters(id) {
                continue;
            }
            gone.push((*at, id.clone()));
            over = over.saturating_sub(1);
        }
        if !gone.is_empty() {
            self.evictions += 1;
        }
        for (at, id) in &gone {
            self.finished.remove(&(*at, id.clone()));
            if let Some(e) = self.all.remove(id)
                && let Some(n) = self.counts.get_mut(e.state.as_str())
            {
                *n -= 1;
            }
        }
        gone.len()
    }

    /// Changes each time finished executions leave memory: a reader that read storage before
    /// taking the table compares it to know whether one may have left memory meanwhile (after
    /// it had read storage, before it finished there: in neither).
    pub fn eviction_epoch(&self) -> u64 {
        self.evictions
    }

    /// Whether pending executions wait on `id`.
    pub fn has_waiters(&self, id: &str) -> bool {
        self.due.has_waiters(id)
    }

    /// How many finished executions are held.
    pub fn finished_len(&self) -> usize {
        self.finished.len()
    }

    /// Execution `id`.
    pub fn get(&self, id: &str) -> Option<&Execution> {
        self.all.get(id).map(|e| &**e)
    }

    /// Every execution, in id order.
    pub fn values(&self) -> impl DoubleEndedIterator<Item = &Execution> {
        self.all.values().map(|e| &**e)
    }

    /// The executions with ids in `range`, in id order.
    pub fn range(
        &self,
        range: (std::ops::Bound<String>, std::ops::Bound<String>),
    ) -> impl DoubleEndedIterator<Item = (&String, &Execution)> {
        self.all.range(range).map(|(id, e)| (id, &**e))
    }

    /// Change an execution's `error` only (its state, and so the index, stay).
    pub fn set_error(&mut self, id: &str, error: Option<String>) {
        if let Some(e) = self.all.get_mut(id) {
            e.error = error;
        }
    }

    /// The ready executions, in queue order (see [`AGING_MS`]).
    pub fn ready(&self) -> impl Iterator<Item = (&String, &Execution)> {
        self.ready
            .iter()
            .filter_map(|(_, id)| self.all.get_key_value(id))
            .map(|(id, e)| (id, &**e))
    }

    /// How many executions are placed (`assigned` or `running`) on each node that has any.
    pub fn placed(&self) -> &BTreeMap<String, u32> {
        &self.placed
    }

    /// How many executions are in each state (states with none may be absent or 0).
    pub fn counts(&self) -> &BTreeMap<&'static str, u64> {
        &self.counts
    }

    /// The nodes whose placed count changed since the last call (the scheduler's, which
    /// recounts only those).
    pub fn take_touched(&mut self) -> BTreeSet<String> {
        std::mem::take(&mut self.touched)
    }

    /// The executions the scheduler's housekeeping may have to act on at `now` (see
    /// [`DueIndex::maybe_due`]).
    pub fn maybe_due(&self, now: i64, grace: i64) -> BTreeMap<String, Option<u64>> {
        self.due.maybe_due(now, grace)
    }

    /// Pending `id` was looked at under `mark` and is not due (see [`DueIndex::looked_at`]).
    pub fn looked_at(&mut self, id: &str, mark: u64) {
        self.due.looked_at(id, mark);
    }

    /// The executions not finished: pending, ready, assigned or running (O(those), not O(all)).
    pub fn unfinished(&self) -> impl Iterator<Item = &Execution> {
        self.pending
            .iter()
            .chain(self.ready.iter().map(|(_, id)| id))
            .chain(&self.on_nodes)
            .filter_map(|id| self.all.get(id).map(|e| &**e))
    }

    /// The executions placed (assigned or running) on `node` (O(those)).
    pub fn placed_on(&self, node: &str) -> impl Iterator<Item = &Execution> {
        self.by_node
            .get(node)
            .into_iter()
            .flatten()
            .filter_map(|id| self.all.get(id).map(|e| &**e))
    }

    /// The executions waiting on dependencies.
    pub fn pending(&self) -> impl Iterator<Item = (&String, &Execution)> {
        self.pending
            .iter()
            .filter_map(|id| self.all.get_key_value(id))
            .map(|(id, e)| (id, &**e))
    }
}

impl Deref for ExecTable {
    type Target = BTreeMap<String, Box<Execution>>;

    fn deref(&self) -> &Self::Target {
        &self.all
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
        assert_eq!(t.take_touched(), BTreeSet::from(["a".to_owned()]));
        t.insert("e".into(), on(ExecState::Running, "a"));
        assert!(t.take_touched().is_empty(), "same slot: nothing to recount");
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
        let on_b: Vec<&str> = t.placed_on("b").map(|e| e.state.as_str()).collect();
        assert_eq!(on_b, ["assigned"], "f moved to b");
        assert_eq!(t.placed_on("a").count(), 0, "e back in the queue, f gone");
        assert_eq!(
            t.take_touched(),
            BTreeSet::from(["a".to_owned(), "b".to_owned()]),
            "the node left and the node joined"
        );
        assert_eq!(t.unfinished().count(), 2);
        t.insert("f".into(), on(ExecState::Succeeded, "b"));
        assert!(t.placed().is_empty());
        assert!(t.by_node.is_empty(), "no empty set is left behind");
        assert_eq!(t.unfinished().count(), 1, "e, ready");
    }

    #[test]
    fn eviction_takes_the_longest_finished_first_and_keeps_what_pending_ones_wait_on() {
        let finished = |at| Execution {
            state: ExecState::Succeeded,
            updated_at_ms: at,
            ..tests_support::execution()
        };
        let mut t = ExecTable::default();
        for (id, at) in [("a", 10), ("b", 20), ("c", 30), ("d", 40)] {
            t.insert(id.into(), finished(at));
        }
        t.insert("r".into(), tests_support::execution());
        t.insert(
            "p".into(),
            Execution {
                state: ExecState::Pending,
                depends_on: vec!["a".into()],
                ..tests_support::execution()
            },
        );
        // By count: keep the newest 2; `a` is waited on, so `b` and `c` go.
        assert_eq!(t.evict(0, 2, 100), 2);
        assert!(t.contains_key("a") && t.contains_key("d"));
        assert!(!t.contains_key("b") && !t.contains_key("c"));
        assert_eq!(t.counts().get("succeeded"), Some(&2));
        assert_eq!(t.finished_len(), 2);
        // By age: finished before 45, once nothing waits on `a`.
        t.insert(
            "p".into(),
            Execution {
                state: ExecState::Ready,
                ..tests_support::execution()
            },
        );
        assert_eq!(t.evict(45, 100, 100), 2);
        assert_eq!(t.finished_len(), 0);
        assert_eq!(t.len(), 2, "the unfinished stay");
        // A re-inserted finished execution is counted once.
        t.insert("e".into(), finished(50));
        t.insert("e".into(), finished(60));
        assert_eq!(t.finished_len(), 1);
        assert_eq!(t.evict(55, 100, 100), 0, "finished at 60 now");
    }

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

    #[test]
    fn the_ready_queue_is_kept_in_priority_order_with_aging() {
        use crate::model::Priority;
        let ready = |seq, priority, submitted| Execution {
            seq,
            priority,
            submitted_at_ms: submitted,
            ..tests_support::execution()
        };
        let mut t = ExecTable::default();
        let base = 1_000_000;
        t.insert("old-normal".into(), ready(1, Priority::Normal, base));
        t.insert("new-high".into(), ready(2, Priority::High, base + 5_000));
        t.insert("newer-normal".into(), ready(3, Priority::Normal, base + 1));
        // Waited more than one level's worth longer: ahead of a newer high.
        t.insert("ancient-low".into(), ready(4, Priority::Low, base - 25_000));
        let order = |t: &ExecTable| t.ready().map(|(id, _)| id.clone()).collect::<Vec<_>>();
        assert_eq!(
            order(&t),
            ["ancient-low", "new-high", "old-normal", "newer-normal"]
        );
        // A retry waits from its backoff's end: behind the others of its level.
        let mut retried = ready(1, Priority::Normal, base);
        retried.not_before_ms = base + 2;
        t.insert("old-normal".into(), retried);
        assert_eq!(
            order(&t),
            ["ancient-low", "new-high", "newer-normal", "old-normal"]
        );
        // Leaving the queue takes it out of the order; only one entry per execution.
        t.insert(
            "new-high".into(),
            Execution {
                state: ExecState::Assigned,
                ..ready(2, Priority::High, base + 5_000)
            },
        );
        assert_eq!(order(&t), ["ancient-low", "newer-normal", "old-normal"]);
        assert_eq!(t.unfinished().count(), 4);
    }
}
