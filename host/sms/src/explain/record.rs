//! Recording rounds: the node mirror, the bounded ring of rounds, and the index from execution to
//! round.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use spear_config::Problems;
use spear_plugin_api::{Decision, Label, Request, Resources, Target};
use spear_plugin_runtime::Decider;

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

/// How many pieces the node view is cut into: a snapshot shares every piece (cheap to take each
/// round), and a change copies only the piece it touches (if a kept round shares it).
const SHARDS: usize = 256;

/// The node view by target id, copy-on-write by shard.
#[derive(Debug, Clone)]
pub(crate) struct NodeView {
    shards: Vec<Arc<BTreeMap<u64, Arc<Seen>>>>,
}

impl Default for NodeView {
    fn default() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Arc::default()).collect(),
        }
    }
}

impl NodeView {
    fn shard(id: u64) -> usize {
        (id % SHARDS as u64) as usize
    }

    fn insert(&mut self, id: u64, seen: Seen) {
        Arc::make_mut(&mut self.shards[Self::shard(id)]).insert(id, Arc::new(seen));
    }

    fn remove(&mut self, id: u64) {
        let shard = &mut self.shards[Self::shard(id)];
        if shard.contains_key(&id) {
            Arc::make_mut(shard).remove(&id);
        }
    }

    fn get_mut(&mut self, id: u64) -> Option<&mut Seen> {
        let shard = &mut self.shards[Self::shard(id)];
        if !shard.contains_key(&id) {
            return None;
        }
        Arc::make_mut(shard).get_mut(&id).map(Arc::make_mut)
    }

    /// Node `id`.
    pub fn get(&self, id: u64) -> Option<&Seen> {
        self.shards[Self::shard(id)].get(&id).map(|s| &**s)
    }

    /// Every node with its target id (in no particular order).
    pub fn iter(&self) -> impl Iterator<Item = (u64, &Seen)> {
        self.shards
            .iter()
            .flat_map(|s| s.iter().map(|(id, seen)| (*id, &**seen)))
    }

    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.shards.iter().all(|s| s.is_empty())
    }
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
    /// The nodes by target id, as the strategy saw them before deciding.
    pub nodes: NodeView,
}

/// The kept rounds, and the mirror of the strategy's view.
#[derive(Debug, Default)]
pub struct Recorder {
    cap: usize,
    next: u64,
    rounds: VecDeque<Arc<Round>>,
    /// Each execution (by `seq`, its request id) in a kept round: the latest round that offered
    /// it. Keyed by number, so recording a placement allocates no copy of its id.
    by_exec: HashMap<u64, u64>,
    mirror: NodeView,
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

    /// The nodes as the strategy sees them now (shared shards: O(shards) to take).
    pub(crate) fn snapshot(&self) -> NodeView {
        self.mirror.clone()
    }

    /// Keep `round` (dropping the oldest past the limit), and count its assignments as the
    /// strategy's view does (one more active, its needs claimed).
    pub(crate) fn keep(&mut self, mut round: Round, requests: &[Request]) {
        if !self.on() {
            return;
        }
        self.claim(requests, &round.decisions);
        round.no = self.next;
        self.next += 1;
        for seq in &round.seqs {
            self.by_exec.insert(*seq, round.no);
        }
        self.rounds.push_back(Arc::new(round));
        while self.rounds.len() > self.cap {
            let Some(old) = self.rounds.pop_front() else {
                break;
            };
            for seq in &old.seqs {
                if self.by_exec.get(seq) == Some(&old.no) {
                    self.by_exec.remove(seq);
                }
            }
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

    /// The latest kept round that offered the execution whose `seq` is `seq`.
    pub(crate) fn round_of(&self, seq: u64) -> Option<Arc<Round>> {
        let no = *self.by_exec.get(&seq)?;
        let first = self.rounds.front()?.no;
        self.rounds
            .get(usize::try_from(no.checked_sub(first)?).ok()?)
            .cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A round offering the executions whose seqs are `seqs`, and their requests.
    fn round(seqs: &[u64]) -> (Round, Vec<Request>) {
        let round = Round {
            no: 0,
            at_ms: 0,
            decider: Decider::default(),
            seqs: seqs.to_vec(),
            waited_ms: seqs.iter().map(|_| 0).collect(),
            decisions: seqs.iter().map(|_| Decision::Assign(1)).collect(),
            dispatch: seqs.iter().map(|_| Dispatch::Assigned).collect(),
            nodes: NodeView::default(),
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

    #[test]
    fn only_the_last_rounds_are_kept_and_an_execution_maps_to_its_latest() {
        const A: u64 = 1;
        const B: u64 = 2;
        let mut r = Recorder::new(2);
        let t = Target {
            id: 1,
            name: "n1".into(),
            labels: vec![],
            capacity: Resources::default(),
            available: Resources {
                cpu_millis: 1000,
                memory_mb: 0,
                disk_mb: 0,
            },
            active: 0,
            weight: 1,
            healthy: true,
        };
        r.follow(&[], vec![(&t, None)]);
        let before = r.snapshot();
        let (batch, requests) = round(&[A, B]);
        r.keep(batch, &requests);
        // The round's claims reach the mirror, not a snapshot taken before.
        assert_eq!(r.snapshot().get(1).unwrap().available.cpu_millis, 800);
        assert_eq!(r.snapshot().get(1).unwrap().active, 2);
        assert_eq!(before.get(1).unwrap().available.cpu_millis, 1000);
        let (batch, requests) = round(&[B]);
        r.keep(batch, &requests);
        assert_eq!(r.round_of(A).unwrap().no, 1);
        assert_eq!(
            r.round_of(B).unwrap().no,
            2,
            "the latest round that offered it"
        );
        let (batch, requests) = round(&[3]);
        r.keep(batch, &requests);
        assert!(r.round_of(A).is_none(), "round 1 dropped out");
        assert_eq!(r.round_of(B).unwrap().no, 2);
        assert_eq!(
            r.by_exec.len(),
            2,
            "the index holds only kept rounds' executions"
        );
        let mut off = Recorder::new(0);
        off.follow(&[], vec![(&t, None)]);
        let (batch, requests) = round(&[A]);
        off.keep(batch, &requests);
        assert!(off.round_of(A).is_none() && off.mirror.is_empty());
    }
}
