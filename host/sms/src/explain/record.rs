//! Recording rounds: the mirror of the strategy's node view, and the bounded ring of rounds.

use std::collections::VecDeque;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use spear_config::Problems;
use spear_plugin_api::{Decision, Label, Request, Resources, Target};
use spear_plugin_runtime::Decider;

use super::view::Versioned;
use crate::model::NodeStatus;

/// The most rounds `[explain] rounds` may keep.
const MAX_ROUNDS: usize = 4096;

/// `[explain]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ExplainConfig {
    /// Rounds kept (0: explain is off; at most 4096).
    pub rounds: usize,
}

impl Default for ExplainConfig {
    fn default() -> Self {
        Self { rounds: 64 }
    }
}

impl ExplainConfig {
    /// Add a problem for each key out of range.
    pub fn validate(&self, problems: &mut Problems) {
        if self.rounds > MAX_ROUNDS {
            problems.invalid(
                "explain.rounds",
                format!("must be at most {MAX_ROUNDS} (0: off)"),
            );
        }
    }
}

/// Why the strategy could not use a node (its target was not `healthy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unusable {
    /// The node is not active.
    Status(NodeStatus),
    /// Every place is taken: `placed` of `limit`.
    Full { placed: u32, limit: u32 },
    /// Active with room, but its assignment stream is not open.
    NoStream,
}

/// A node as a round's strategy saw it.
#[derive(Debug, Clone)]
pub(crate) struct Seen {
    pub uuid: Arc<str>,
    pub labels: Arc<[Label]>,
    pub available: Resources,
    pub active: u32,
    pub unusable: Option<Unusable>,
}

/// What became of one decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Dispatch {
    /// Assigned to the node the strategy chose.
    Assigned,
    /// The strategy rejected it (its reason is in the decision).
    Rejected,
    /// Chosen a node, but left queued: why.
    Left(&'static str),
    /// Not to the node chosen, the one its last attempt left, but to target `to`
    /// ([`crate::recovery`]).
    Migrated {
        /// The node it went to.
        to: u64,
    },
}

/// One recorded round.
#[derive(Debug)]
pub(crate) struct Round {
    pub no: u64,
    pub at_ms: i64,
    pub decider: Decider,
    /// The batch: each execution's `seq` (its request's id). The requests themselves are not
    /// kept: an execution's request is made of fields fixed at its submission, and is made
    /// again from the execution when asked (keeping 64 rounds of them cost placements).
    pub seqs: Vec<u64>,
    /// How long each execution had waited to be placeable, in ms.
    pub waited_ms: Vec<i64>,
    pub decisions: Vec<Decision>,
    pub dispatch: Vec<Dispatch>,
    /// The version of the node view the strategy decided over ([`Versioned::take`]).
    pub view: u64,
}

/// The kept rounds, and the mirror of the strategy's view.
#[derive(Debug, Default)]
pub struct Recorder {
    cap: usize,
    next: u64,
    rounds: VecDeque<Arc<Round>>,
    mirror: Versioned,
    /// The view of the round being decided: taken, not yet kept.
    pending: Option<u64>,
}

impl Recorder {
    /// Keep the last `rounds` rounds (0: record nothing).
    pub fn new(rounds: usize) -> Self {
        Self {
            cap: rounds.min(MAX_ROUNDS),
            next: 1,
            ..Self::default()
        }
    }

    /// Whether rounds are recorded.
    pub fn on(&self) -> bool {
        self.cap > 0
    }

    /// How many rounds are kept at most.
    pub fn capacity(&self) -> usize {
        self.cap
    }

    /// Follow what the strategy is fed: targets gone, and targets new or changed with why each
    /// is unusable (if it is).
    pub(crate) fn follow(&mut self, removes: &[u64], upserts: Vec<(&Target, Option<Unusable>)>) {
        if !self.on() {
            return;
        }
        for id in removes {
            self.mirror.remove(*id);
        }
        for (t, unusable) in upserts {
            // A node that turned full or open is sent again with the same name and labels:
            // share those of the node already seen rather than copy them.
            let (uuid, labels) = match self.mirror.get(t.id) {
                Some(was) if *was.uuid == *t.name && *was.labels == *t.labels => {
                    (was.uuid.clone(), was.labels.clone())
                }
                _ => (t.name.as_str().into(), t.labels.clone().into()),
            };
            self.mirror.insert(
                t.id,
                Seen {
                    uuid,
                    labels,
                    available: t.available,
                    active: t.active,
                    unusable,
                },
            );
        }
    }

    /// The nodes as the strategy sees them now: a version of the view to record in the round
    /// ([`Round::view`]), O(1) to take.
    ///
    /// A round that took one and ended before it was kept (a storage error) leaves nothing behind:
    /// its view's own states go when the next is taken.
    pub(crate) fn snapshot(&mut self) -> u64 {
        let next = self.mirror.take();
        if let Some(p) = self.pending.replace(next) {
            self.mirror.abandon(p, next);
        }
        next
    }

    /// Keep `round` (dropping the oldest past the limit), and count its assignments as the
    /// strategy's view does (one more active, its needs claimed).
    pub(crate) fn keep(&mut self, mut round: Round, requests: &[Request]) {
        if !self.on() {
            return;
        }
        self.claim(requests, &round.decisions);
        // Only the latest view taken is kept: one given up (a round that took another view
        // meanwhile) may have lost states. So kept rounds' views rise with their numbers.
        if self.pending != Some(round.view) {
            return;
        }
        self.pending = None;
        round.no = self.next;
        self.next += 1;
        self.rounds.push_back(Arc::new(round));
        while self.rounds.len() > self.cap {
            self.rounds.pop_front();
        }
        if let Some(oldest) = self.rounds.front() {
            self.mirror.keep_from(oldest.view);
        }
    }

    /// Count assignments as the strategy's view does: one more active, the needs claimed.
    pub(crate) fn claim(&mut self, requests: &[Request], decisions: &[Decision]) {
        if !self.on() {
            return;
        }
        for (r, d) in requests.iter().zip(decisions) {
            if let Decision::Assign(id) = d
                && let Some(seen) = self.mirror.get_mut(*id)
            {
                seen.active = seen.active.saturating_add(1);
                seen.available = seen.available.saturating_sub(&r.needs);
            }
        }
    }

    /// The kept rounds, oldest first (shared: to search without holding the recorder).
    pub(crate) fn rounds(&self) -> Vec<Arc<Round>> {
        self.rounds.iter().cloned().collect()
    }

    /// The nodes as `round` saw them, if it is still kept (by target id, in no particular
    /// order). O(nodes): only an explanation asks.
    pub(crate) fn nodes_of(&self, round: &Round) -> Option<Vec<(u64, Seen)>> {
        let first = self.rounds.front()?;
        (round.no >= first.no && round.view >= first.view).then(|| self.mirror.at(round.view))
    }
}

/// The latest of `rounds` (oldest first) that offered the execution whose `seq` is `seq`.
pub(crate) fn latest_with(rounds: &[Arc<Round>], seq: u64) -> Option<&Arc<Round>> {
    rounds.iter().rev().find(|r| r.seqs.contains(&seq))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A round over node view `view` offering the executions whose seqs are `seqs`, each placed
    /// on target 1, and their requests.
    fn round(view: u64, seqs: &[u64]) -> (Round, Vec<Request>) {
        let round = Round {
            no: 0,
            at_ms: 0,
            decider: Decider::default(),
            seqs: seqs.to_vec(),
            waited_ms: seqs.iter().map(|_| 0).collect(),
            decisions: seqs.iter().map(|_| Decision::Assign(1)).collect(),
            dispatch: seqs.iter().map(|_| Dispatch::Assigned).collect(),
            view,
        };
        let requests = seqs
            .iter()
            .map(|&seq| Request {
                id: seq,
                task: "t".into(),
                labels: vec![],
                needs: Resources {
                    cpu_millis: 100,
                    memory_mb: 0,
                    disk_mb: 0,
                },
                required: vec![],
                preferred: vec![],
            })
            .collect();
        (round, requests)
    }

    /// Target 1, `n1`, with `cpu_millis` free and nothing active.
    fn node_one(cpu_millis: u64) -> Target {
        Target {
            id: 1,
            name: "n1".into(),
            labels: vec![],
            capacity: Resources::default(),
            available: Resources {
                cpu_millis,
                memory_mb: 0,
                disk_mb: 0,
            },
            active: 0,
            weight: 1,
            healthy: true,
        }
    }

    /// Target 1's free CPU and active count as kept round `no` saw it.
    fn seen_by(r: &Recorder, no: u64) -> Option<(u64, u32)> {
        let rounds = r.rounds();
        let round = rounds.iter().find(|k| k.no == no)?;
        let nodes = r.nodes_of(round)?;
        let (_, seen) = nodes.iter().find(|(id, _)| *id == 1)?;
        Some((seen.available.cpu_millis, seen.active))
    }

    #[test]
    fn only_the_last_rounds_are_kept_each_with_its_view_and_an_execution_maps_to_its_latest() {
        const A: u64 = 1;
        const B: u64 = 2;
        let mut r = Recorder::new(2);
        let t = node_one(1000);
        r.follow(&[], vec![(&t, None)]);
        let view = r.snapshot();
        let (batch, requests) = round(view, &[A, B]);
        r.keep(batch, &requests);
        let view = r.snapshot();
        let (batch, requests) = round(view, &[B]);
        r.keep(batch, &requests);
        // Each round reads the view it decided over: the earlier round's claims reach the
        // later one's, not its own.
        assert_eq!(seen_by(&r, 1), Some((1000, 0)));
        assert_eq!(seen_by(&r, 2), Some((800, 2)));
        assert_eq!(r.mirror.get(1).unwrap().active, 3);
        let rounds = r.rounds();
        assert_eq!(latest_with(&rounds, A).unwrap().no, 1);
        assert_eq!(
            latest_with(&rounds, B).unwrap().no,
            2,
            "the latest round that offered it"
        );
        let view = r.snapshot();
        let (batch, requests) = round(view, &[3]);
        r.keep(batch, &requests);
        let rounds = r.rounds();
        assert!(latest_with(&rounds, A).is_none(), "round 1 dropped out");
        assert_eq!(latest_with(&rounds, B).unwrap().no, 2);
        assert_eq!(seen_by(&r, 2), Some((800, 2)), "still read as it was");
        let dropped = Round {
            no: 1,
            ..round(1, &[]).0
        };
        assert!(
            r.nodes_of(&dropped).is_none(),
            "a dropped round is not read"
        );
        let mut off = Recorder::new(0);
        off.follow(&[], vec![(&t, None)]);
        let view = off.snapshot();
        let (batch, requests) = round(view, &[A]);
        off.keep(batch, &requests);
        assert!(off.rounds().is_empty() && off.mirror.get(1).is_none());
    }

    #[test]
    fn a_round_that_took_a_view_and_failed_is_not_kept_and_leaves_nothing() {
        let mut r = Recorder::new(4);
        let t = node_one(0);
        r.follow(&[], vec![(&t, None)]);
        let view = r.snapshot();
        let (batch, requests) = round(view, &[1]);
        r.keep(batch, &requests);
        // Rounds that took a view and ended before keeping it, the node changing in each.
        let mut late = None;
        for active in 10..50 {
            let view = r.snapshot();
            late.get_or_insert(view);
            let moved = Target {
                active,
                ..t.clone()
            };
            r.follow(&[], vec![(&moved, None)]);
        }
        assert!(
            r.mirror.states() <= 4,
            "{} states for one node",
            r.mirror.states()
        );
        // A round whose view a later one superseded is not kept (its view may be gone).
        let (batch, requests) = round(late.unwrap(), &[2]);
        r.keep(batch, &requests);
        assert_eq!(r.rounds().len(), 1);
        let view = r.snapshot();
        let (batch, requests) = round(view, &[3]);
        r.keep(batch, &requests);
        assert_eq!(r.rounds().len(), 2);
        assert_eq!(seen_by(&r, 1), Some((0, 0)));
        // Active 49 as last followed, plus the unkept round's claim: the strategy counted it.
        assert_eq!(seen_by(&r, 2), Some((0, 50)));
    }
}
