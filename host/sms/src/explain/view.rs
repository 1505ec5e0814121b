//! The strategy's view of the nodes, versioned: each kept round names a version, and the view as
//! it was at that version can be read back while the round is kept.
//!
//! Each node keeps its recent states, each stamped with the version from which it holds. Taking a
//! view ([`Versioned::take`]) only ends the current version: O(1), nothing copied. A change after
//! it adds a state stamped with the new version (a clone of the node's record: two shared
//! pointers, its counts and why it is unusable), and further changes in the same version change
//! that state in place. States no kept view reads are dropped when the node next changes, those
//! of a view taken but never kept when the next view is taken ([`Versioned::abandon`]), and a
//! node gone from every kept view is forgotten: a node keeps at most one state per kept view, plus
//! its latest.

use std::collections::{BTreeSet, VecDeque};

use rustc_hash::FxHashMap;

use super::record::Seen;

/// A node's states, oldest first: each holds from its version until the next one's (`None`: the
/// node is gone).
type History = VecDeque<(u64, Option<Seen>)>;

/// The node view by target id, with its recent versions.
#[derive(Debug)]
pub(crate) struct Versioned {
    /// The version changes are stamped with now (a view taken now reads it).
    version: u64,
    /// By target id (numbers SMS hands out, so a fast hash is safe).
    nodes: FxHashMap<u64, History>,
    /// Nodes gone (the version they went in, and their id), forgotten once no kept view sees
    /// them.
    gone: BTreeSet<(u64, u64)>,
    /// The oldest version a kept round reads (a round about to be kept reads a newer one).
    oldest: u64,
}

impl Default for Versioned {
    fn default() -> Self {
        Self {
            version: 1,
            nodes: FxHashMap::default(),
            gone: BTreeSet::new(),
            oldest: 1,
        }
    }
}

/// Drop the states of `h` that no view from version `oldest` on reads: every one before the last
/// state stamped at or before `oldest`.
fn trim(h: &mut History, oldest: u64) {
    while h.len() >= 2 && h[1].0 <= oldest {
        h.pop_front();
    }
}

impl Versioned {
    /// End the current version and answer it: the view as it is now, to read with
    /// [`Versioned::at`] while the version is at least [`Versioned::keep_from`]'s.
    pub fn take(&mut self) -> u64 {
        let v = self.version;
        self.version += 1;
        v
    }

    /// No view older than version `oldest` will be read again: let go of what only those read.
    pub fn keep_from(&mut self, oldest: u64) {
        self.oldest = self.oldest.max(oldest.min(self.version));
        while let Some(&(went, id)) = self.gone.first() {
            if went > self.oldest {
                break;
            }
            self.gone.pop_first();
            // Forgotten only if still gone (a node that came back keeps its history).
            if let Some(h) = self.nodes.get_mut(&id) {
                trim(h, self.oldest);
                if matches!(h.back(), Some((_, None))) && h.len() == 1 {
                    self.nodes.remove(&id);
                }
            }
        }
    }

    /// View `version` (taken, never to be kept) will not be read, and no view is taken between it
    /// and `next` (the next view anyone may read): drop the states only it reads. O(nodes).
    pub fn abandon(&mut self, version: u64, next: u64) {
        for h in self.nodes.values_mut() {
            let i = h.partition_point(|(v, _)| *v < version);
            // Read by views from `version` up to the next state's: only by `version` if the next
            // state holds by `next`.
            if h.get(i).is_some_and(|(v, _)| *v == version)
                && h.get(i + 1).is_some_and(|(v, _)| *v <= next)
            {
                let _ = h.remove(i);
            }
        }
    }

    /// The last state of `h`, in version `version`, to change: a new state if the last one
    /// belongs to a view already taken (states only views older than `oldest` read dropped).
    fn current(h: &mut History, version: u64, oldest: u64) -> &mut Option<Seen> {
        if h.back().is_none_or(|(v, _)| *v != version) {
            let now = h.back().and_then(|(_, s)| s.clone());
            h.push_back((version, now));
            trim(h, oldest);
        }
        &mut h.back_mut().expect("a state was just made").1
    }

    /// Node `id` as it is now.
    pub fn get(&self, id: u64) -> Option<&Seen> {
        self.nodes.get(&id)?.back()?.1.as_ref()
    }

    /// Set node `id` to `seen`.
    pub fn insert(&mut self, id: u64, seen: Seen) {
        let h = self.nodes.entry(id).or_default();
        *Self::current(h, self.version, self.oldest) = Some(seen);
    }

    /// Node `id` as it is now, to change in place (none if it is not there).
    pub fn get_mut(&mut self, id: u64) -> Option<&mut Seen> {
        let h = self.nodes.get_mut(&id)?;
        if h.back().is_none_or(|(_, s)| s.is_none()) {
            return None;
        }
        Self::current(h, self.version, self.oldest).as_mut()
    }

    /// Node `id` is gone.
    pub fn remove(&mut self, id: u64) {
        let Some(h) = self.nodes.get_mut(&id) else {
            return;
        };
        if h.back().is_none_or(|(_, s)| s.is_none()) {
            return;
        }
        *Self::current(h, self.version, self.oldest) = None;
        if h.len() == 1 {
            // No view taken saw it: nothing to keep.
            self.nodes.remove(&id);
        } else {
            self.gone.insert((self.version, id));
        }
    }

    /// The nodes in view `version` (one [`Versioned::take`] answered, not older than
    /// [`Versioned::keep_from`]'s), by target id in no particular order.
    pub fn at(&self, version: u64) -> Vec<(u64, Seen)> {
        self.nodes
            .iter()
            .filter_map(|(id, h)| {
                let i = h.partition_point(|(v, _)| *v <= version).checked_sub(1)?;
                h[i].1.clone().map(|s| (*id, s))
            })
            .collect()
    }

    /// How many states are kept, over every node (for tests of the bound).
    #[cfg(test)]
    pub fn states(&self) -> usize {
        self.nodes.values().map(VecDeque::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use spear_plugin_api::Resources;

    use super::*;

    fn seen(active: u32) -> Seen {
        Seen {
            uuid: Arc::from("n"),
            labels: Arc::from(Vec::new()),
            available: Resources::default(),
            active,
            unusable: None,
        }
    }

    /// Node id → active, in view `v`.
    fn actives(view: &Versioned, v: u64) -> Vec<(u64, u32)> {
        let mut out: Vec<(u64, u32)> = view.at(v).iter().map(|(id, s)| (*id, s.active)).collect();
        out.sort_unstable();
        out
    }

    #[test]
    fn a_view_taken_reads_back_as_it_was_while_later_changes_go_on() {
        let mut view = Versioned::default();
        view.insert(1, seen(0));
        view.insert(2, seen(0));
        let first = view.take();
        view.get_mut(1).unwrap().active = 1;
        view.remove(2);
        view.insert(3, seen(5));
        let second = view.take();
        view.get_mut(1).unwrap().active = 2;
        view.get_mut(1).unwrap().active = 3;
        assert_eq!(actives(&view, first), [(1, 0), (2, 0)]);
        assert_eq!(actives(&view, second), [(1, 1), (3, 5)]);
        assert_eq!(view.get(1).unwrap().active, 3);
        assert!(view.get(2).is_none());
        assert!(view.get_mut(2).is_none(), "a gone node is not brought back");
        // Changes in one version share one state.
        assert_eq!(view.nodes[&1].len(), 3);
    }

    #[test]
    fn states_no_kept_view_reads_are_dropped_and_gone_nodes_forgotten() {
        let mut view = Versioned::default();
        for id in 0..10 {
            view.insert(id, seen(0));
        }
        // 100 rounds, each taking a view and changing every node; only the last 4 views kept.
        let mut taken = VecDeque::new();
        for round in 1..=100u32 {
            taken.push_back(view.take());
            while taken.len() > 4 {
                taken.pop_front();
            }
            view.keep_from(taken[0]);
            for id in 0..10 {
                view.get_mut(id).unwrap().active = round;
            }
        }
        // Each node: the state the oldest kept view reads, one per later kept view, its latest.
        assert_eq!(view.states(), 10 * 5);
        for (v, active) in taken.iter().zip(96..) {
            let all = actives(&view, *v);
            assert_eq!(all.len(), 10);
            assert!(all.iter().all(|(_, a)| *a == active), "view {v}: {all:?}");
        }
        // Gone nodes: kept while a view sees them, forgotten after.
        for id in 0..10 {
            view.remove(id);
        }
        assert_eq!(actives(&view, *taken.back().unwrap()).len(), 10);
        for _ in 0..5 {
            taken.push_back(view.take());
            taken.pop_front();
            view.keep_from(taken[0]);
        }
        assert_eq!(view.states(), 0, "every node gone from every kept view");
        assert!(view.gone.is_empty());
        // A node gone before any view saw it leaves nothing behind.
        view.insert(42, seen(0));
        view.remove(42);
        assert_eq!(view.states(), 0);
    }

    #[test]
    fn a_view_never_kept_leaves_no_states_behind() {
        let mut view = Versioned::default();
        view.insert(1, seen(0));
        let kept = view.take();
        view.get_mut(1).unwrap().active = 1;
        // Rounds that take a view and fail before keeping it, while the node changes.
        let mut last = None;
        for round in 2..100u32 {
            if let Some(p) = last {
                view.abandon(p, view.version);
            }
            last = Some(view.take());
            view.get_mut(1).unwrap().active = round;
        }
        // The kept view's state, the one the last (still pending) view reads, and the latest.
        assert_eq!(view.states(), 3, "{:?}", view.nodes[&1]);
        assert_eq!(actives(&view, kept), [(1, 0)]);
        assert_eq!(actives(&view, last.unwrap()), [(1, 98)]);
        assert_eq!(view.get(1).unwrap().active, 99);
    }

    #[test]
    fn a_node_gone_again_and_again_in_one_version_is_listed_once() {
        let mut view = Versioned::default();
        view.insert(7, seen(0));
        let _seen_it = view.take();
        for _ in 0..100 {
            view.remove(7);
            view.insert(7, seen(1));
        }
        view.remove(7);
        assert_eq!(view.gone.len(), 1);
        assert_eq!(view.states(), 2);
    }
}
