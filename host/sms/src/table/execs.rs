//! The executions SMS holds in memory, with indexes of those not yet placed (`ready` in queue
//! order, and `pending` on dependencies), so that a scheduling round reads only the batch it
//! takes, not every execution ever submitted, and the count of those placed on each node
//! (capacity-aware dispatch).

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::due::DueIndex;
use crate::model::{ExecState, Execution};

/// Executions by id, plus the ids of the `pending`, the `ready` and the placed (`assigned` or
/// `running`) ones, and the number placed on each node. Every write goes through
/// [`insert`](Self::insert), which keeps the indexes true.
#[derive(Debug, Default)]
pub struct ExecTable {
    /// By id, hashed: a round takes executions in queue order, which with deadlines is not id
    /// order, and a search of an ordered map by id in random order is a walk of string
    /// comparisons that miss the cache (it made deadlines cost 30 % of placements/s). Boxed:
    /// the map's slots stay small, and every execution is one allocation of one size.
    all: HashMap<String, Box<Execution>>,
    /// The same ids in order, for walks in id order (pages of a listing). New ids come in order
    /// (UUIDv7), so each is added at the end.
    ids: BTreeSet<String>,
    ix: Indexes,
}

/// What [`ExecTable`] keeps beside its executions, apart from them so that a write updates it
/// while holding the execution's slot in the map (one search by id per write).
#[derive(Debug, Default)]
struct Indexes {
    /// The ready ones in queue order.
    ready: BTreeSet<(QueueKey, String)>,
    pending: BTreeSet<String>,
    placed: BTreeMap<String, u32>,
    /// The placed executions of each node (what a node's reconnect and loss read: O(its own),
    /// not O(every unfinished execution)), and so every placed execution (each has its node).
    by_node: HashMap<String, BTreeSet<String>>,
    /// Nodes whose placed count changed since the last [`take_touched`](ExecTable::take_touched).
    touched: BTreeSet<String>,
    /// What the scheduler's housekeeping may have to act on.
    due: DueIndex,
    /// How many are in each state.
    counts: BTreeMap<&'static str, u64>,
    /// The finished ones, by when they finished (what [`evict`](ExecTable::evict) takes first).
    finished: BTreeSet<(i64, String)>,
    /// How many times [`evict`](ExecTable::evict) let some go.
    evictions: u64,
    /// `[deadlines] urgency_window_ms` (fixed for the table's life: the queue's order rests on it).
    urgency_window_ms: u64,
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

fn ready(e: &Execution) -> bool {
    e.state == ExecState::Ready
}

fn pending(e: &Execution) -> bool {
    e.state == ExecState::Pending
}

fn terminal(e: &Execution) -> bool {
    e.state.is_terminal()
}

/// The node an execution occupies a slot of, if any.
fn occupies(e: &Execution) -> Option<&str> {
    e.node_uuid.as_deref().filter(|_| e.state.is_placed())
}

impl Indexes {
    /// Follow the write of execution `id` from `old` (absent when new) to `new`. Each index
    /// is searched only when the write moves the execution in or out of it: with deadlines
    /// the queue hands executions out of id order, and every search by id is a walk of string
    /// comparisons that miss the cache.
    fn follow(&mut self, id: &str, old: Option<&Execution>, new: &Execution) {
        self.due.update(id, old, new);
        if let Some(n) = old.and_then(|o| self.counts.get_mut(o.state.as_str())) {
            *n -= 1;
        }
        *self.counts.entry(new.state.as_str()).or_default() += 1;
        let window = self.urgency_window_ms;
        if let Some(o) = old.filter(|o| ready(o))
            && !(ready(new) && queue_key(o, window) == queue_key(new, window))
        {
            self.ready.remove(&(queue_key(o, window), id.to_owned()));
        }
        if ready(new)
            && !old.is_some_and(|o| ready(o) && queue_key(o, window) == queue_key(new, window))
        {
            self.ready.insert((queue_key(new, window), id.to_owned()));
        }
        let before = old.and_then(occupies);
        if before != occupies(new) {
            if let Some(node) = before {
                if let Some(n) = self.placed.get_mut(node) {
                    *n -= 1;
                    if *n == 0 {
                        self.placed.remove(node);
                    }
                }
                if let Some(ids) = self.by_node.get_mut(node) {
                    ids.remove(id);
                    if ids.is_empty() {
                        self.by_node.remove(node);
                    }
                }
                if !self.touched.contains(node) {
                    self.touched.insert(node.to_owned());
                }
            }
            if let Some(node) = occupies(new) {
                *self.placed.entry(node.to_owned()).or_default() += 1;
                self.by_node
                    .entry(node.to_owned())
                    .or_default()
                    .insert(id.to_owned());
                if !self.touched.contains(node) {
                    self.touched.insert(node.to_owned());
                }
            }
        }
        match (old.is_some_and(pending), pending(new)) {
            (false, true) => {
                self.pending.insert(id.to_owned());
            }
            (true, false) => {
                self.pending.remove(id);
            }
            _ => {}
        }
        if let Some(o) = old.filter(|o| terminal(o))
            && !(terminal(new) && o.updated_at_ms == new.updated_at_ms)
        {
            self.finished.remove(&(o.updated_at_ms, id.to_owned()));
        }
        if terminal(new)
            && !old.is_some_and(|o| terminal(o) && o.updated_at_ms == new.updated_at_ms)
        {
            self.finished.insert((new.updated_at_ms, id.to_owned()));
        }
    }
}

impl ExecTable {
    /// An empty table whose queue weighs deadlines with `urgency_window_ms`
    /// ([`crate::deadlines`]); [`default`](Default::default) has none (0).
    pub fn with_urgency_window(urgency_window_ms: u64) -> Self {
        Self {
            all: HashMap::new(),
            ids: BTreeSet::new(),
            ix: Indexes {
                urgency_window_ms,
                ..Indexes::default()
            },
        }
    }

    /// Insert or replace an execution (one search of the map by id; a replaced execution's
    /// record is overwritten in place).
    pub fn insert(&mut self, id: String, exec: Execution) {
        match self.all.entry(id) {
            Entry::Occupied(mut slot) => {
                let old = std::mem::replace(&mut **slot.get_mut(), exec);
                self.ix.follow(slot.key(), Some(&old), slot.get());
            }
            Entry::Vacant(slot) => {
                self.ix.follow(slot.key(), None, &exec);
                self.ids.insert(slot.key().clone());
                slot.insert(Box::new(exec));
            }
        }
    }

    /// Let finished executions go from memory (they are in storage): those that finished before
    /// `cutoff_ms`, and beyond the newest `keep` finished ones the oldest, looking at no more than
    /// `budget`. One that pending executions wait on stays until they have looked at it.
    /// Returns how many went.
    pub fn evict(&mut self, cutoff_ms: i64, keep: usize, budget: usize) -> usize {
        let ix = &mut self.ix;
        let mut over = ix.finished.len().saturating_sub(keep);
        let mut gone = Vec::new();
        for (at, id) in ix.finished.iter().take(budget) {
            if over == 0 && *at >= cutoff_ms {
                break;
            }
            if ix.due.has_waiters(id) {
                continue;
            }
            gone.push((*at, id.clone()));
            over = over.saturating_sub(1);
        }
        if !gone.is_empty() {
            ix.evictions += 1;
        }
        for (at, id) in &gone {
            ix.finished.remove(&(*at, id.clone()));
            self.ids.remove(id);
            if let Some(e) = self.all.remove(id)
                && let Some(n) = ix.counts.get_mut(e.state.as_str())
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
        self.ix.evictions
    }

    /// Whether pending executions wait on `id`.
    pub fn has_waiters(&self, id: &str) -> bool {
        self.ix.due.has_waiters(id)
    }

    /// How many finished executions are held.
    pub fn finished_len(&self) -> usize {
        self.ix.finished.len()
    }

    /// Execution `id`.
    pub fn get(&self, id: &str) -> Option<&Execution> {
        self.all.get(id).map(|e| &**e)
    }

    /// Whether execution `id` is held.
    pub fn contains_key(&self, id: &str) -> bool {
        self.all.contains_key(id)
    }

    /// How many executions are held.
    pub fn len(&self) -> usize {
        self.all.len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.all.is_empty()
    }

    /// Every execution with its id, in id order.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = (&String, &Execution)> {
        self.ids
            .iter()
            .filter_map(|id| self.all.get_key_value(id))
            .map(|(id, e)| (id, &**e))
    }

    /// Every execution, in id order.
    pub fn values(&self) -> impl DoubleEndedIterator<Item = &Execution> {
        self.iter().map(|(_, e)| e)
    }

    /// The executions with ids in `range`, in id order.
    pub fn range(
        &self,
        range: (std::ops::Bound<String>, std::ops::Bound<String>),
    ) -> impl DoubleEndedIterator<Item = (&String, &Execution)> {
        self.ids
            .range(range)
            .filter_map(|id| self.all.get_key_value(id))
            .map(|(id, e)| (id, &**e))
    }

    /// Change an execution's `error` only (its state, and so the index, stay).
    pub fn set_error(&mut self, id: &str, error: Option<String>) {
        if let Some(e) = self.all.get_mut(id) {
            e.error = error;
        }
    }

    /// The ready executions, in queue order (see [`AGING_MS`]).
    pub fn ready(&self) -> impl Iterator<Item = (&String, &Execution)> {
        self.ix
            .ready
            .iter()
            .filter_map(|(_, id)| self.all.get_key_value(id))
            .map(|(id, e)| (id, &**e))
    }

    /// How many executions are placed (`assigned` or `running`) on each node that has any.
    pub fn placed(&self) -> &BTreeMap<String, u32> {
        &self.ix.placed
    }

    /// How many executions are in each state (states with none may be absent or 0).
    pub fn counts(&self) -> &BTreeMap<&'static str, u64> {
        &self.ix.counts
    }

    /// The nodes whose placed count changed since the last call (the scheduler's, which
    /// recounts only those).
    pub fn take_touched(&mut self) -> BTreeSet<String> {
        std::mem::take(&mut self.ix.touched)
    }

    /// The executions the scheduler's housekeeping may have to act on at `now` (see
    /// [`DueIndex::maybe_due`]).
    pub fn maybe_due(&self, now: i64, grace: i64) -> BTreeMap<String, Option<u64>> {
        self.ix.due.maybe_due(now, grace)
    }

    /// Pending `id` was looked at under `mark` and is not due (see [`DueIndex::looked_at`]).
    pub fn looked_at(&mut self, id: &str, mark: u64) {
        self.ix.due.looked_at(id, mark);
    }

    /// The executions not finished: pending, ready, assigned or running (O(those), not O(all);
    /// the placed ones are found through their node, which every placed execution has).
    pub fn unfinished(&self) -> impl Iterator<Item = &Execution> {
        self.ix
            .pending
            .iter()
            .chain(self.ix.ready.iter().map(|(_, id)| id))
            .chain(self.ix.by_node.values().flatten())
            .filter_map(|id| self.all.get(id).map(|e| &**e))
    }

    /// The executions placed (assigned or running) on `node` (O(those)).
    pub fn placed_on(&self, node: &str) -> impl Iterator<Item = &Execution> {
        self.ix
            .by_node
            .get(node)
            .into_iter()
            .flatten()
            .filter_map(|id| self.all.get(id).map(|e| &**e))
    }

    /// The executions waiting on dependencies.
    pub fn pending(&self) -> impl Iterator<Item = (&String, &Execution)> {
        self.ix
            .pending
            .iter()
            .filter_map(|id| self.all.get_key_value(id))
            .map(|(id, e)| (id, &**e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::tests_support;

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
        assert!(t.ix.by_node.is_empty(), "no empty set is left behind");
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
        // Leaving the queue (assigned to a node) takes it out of the order; only one entry per
        // execution.
        t.insert(
            "new-high".into(),
            Execution {
                state: ExecState::Assigned,
                node_uuid: Some("n".into()),
                ..ready(2, Priority::High, base + 5_000)
            },
        );
        assert_eq!(order(&t), ["ancient-low", "newer-normal", "old-normal"]);
        assert_eq!(t.unfinished().count(), 4);
    }

    /// Every index after many random writes equals the index built from scratch from the
    /// executions alone (the writes skip the searches of indexes they do not move the
    /// execution in or out of: this is what says none is skipped wrongly).
    #[test]
    fn the_indexes_equal_a_rebuild_after_random_writes() {
        const STATES: [ExecState; 8] = [
            ExecState::Pending,
            ExecState::Ready,
            ExecState::Assigned,
            ExecState::Running,
            ExecState::Succeeded,
            ExecState::Failed,
            ExecState::Cancelled,
            ExecState::TimedOut,
        ];
        let mut rng = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = |n: u64| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng % n
        };
        let mut t = ExecTable::with_urgency_window(30_000);
        for _ in 0..5_000 {
            let i = next(64);
            let e = Execution {
                execution_id: format!("e{i}"),
                seq: i,
                state: STATES[next(8) as usize],
                node_uuid: (next(4) > 0).then(|| format!("n{}", next(3))),
                priority: [
                    crate::model::Priority::Low,
                    crate::model::Priority::Normal,
                    crate::model::Priority::High,
                ][next(3) as usize],
                submitted_at_ms: next(3) as i64,
                deadline_ms: [0, 40_000][next(2) as usize],
                updated_at_ms: next(3) as i64,
                ..tests_support::execution()
            };
            t.insert(format!("e{i}"), e);
            // Now and then the finished ones leave memory (and so every index).
            if next(50) == 0 {
                t.evict(next(3) as i64, next(8) as usize, 64);
            }
            let mut fresh = ExecTable::with_urgency_window(30_000);
            for (id, e) in t.iter() {
                fresh.insert(id.clone(), e.clone());
            }
            let (a, b) = (&t.ix, &fresh.ix);
            assert_eq!(a.ready, b.ready);
            assert_eq!(a.pending, b.pending);
            assert_eq!(a.placed, b.placed);
            assert_eq!(a.by_node, b.by_node);
            assert_eq!(a.finished, b.finished);
            let nonzero = |c: &BTreeMap<&'static str, u64>| {
                c.iter()
                    .filter(|(_, n)| **n > 0)
                    .map(|(s, n)| (*s, *n))
                    .collect::<Vec<_>>()
            };
            assert_eq!(nonzero(&a.counts), nonzero(&b.counts));
        }
    }
}
