//! What the scheduling strategy has not heard yet: changed nodes, removed nodes, outcomes.
//!
//! API handlers (heartbeats, node updates and deletes, result reports) only record here, under a
//! mutex that guards nothing but these collections; the scheduler — the strategy's one caller in
//! SMS — sends it all, on a blocking thread, before each placement. So no handler ever waits for a
//! plugin call, and the strategy hears of every change in order.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use spear_plugin_api::{Outcome, Target};

/// Outcomes kept for the strategy between rounds; older ones are dropped past this (they only
/// tune adaptive strategies).
pub const MAX_OUTCOMES: usize = 4096;

/// Changes waiting for the strategy.
#[derive(Debug, Default)]
pub struct StrategyFeed {
    upserts: BTreeMap<u64, Target>,
    removes: BTreeSet<u64>,
    outcomes: VecDeque<Outcome>,
}

/// One round's worth of changes, in the order they are sent.
#[derive(Debug, Default, Clone)]
pub struct Batch {
    /// Targets gone.
    pub removes: Vec<u64>,
    /// Targets new or changed (latest figures).
    pub upserts: Vec<Target>,
    /// Outcomes of finished executions.
    pub outcomes: Vec<Outcome>,
}

impl Batch {
    /// Nothing to send.
    pub fn is_empty(&self) -> bool {
        self.removes.is_empty() && self.upserts.is_empty() && self.outcomes.is_empty()
    }
}

impl StrategyFeed {
    /// A target is new or changed.
    pub fn upsert(&mut self, target: Target) {
        self.removes.remove(&target.id);
        self.upserts.insert(target.id, target);
    }

    /// A target is gone.
    pub fn remove(&mut self, id: u64) {
        self.upserts.remove(&id);
        self.removes.insert(id);
    }

    /// An execution finished.
    pub fn observe(&mut self, outcome: Outcome) {
        if self.outcomes.len() == MAX_OUTCOMES {
            self.outcomes.pop_front();
        }
        self.outcomes.push_back(outcome);
    }

    /// Everything recorded since the last take.
    pub fn take(&mut self) -> Batch {
        let taken = std::mem::take(self);
        Batch {
            removes: taken.removes.into_iter().collect(),
            upserts: taken.upserts.into_values().collect(),
            outcomes: taken.outcomes.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(id: u64) -> Target {
        Target {
            id,
            name: format!("n{id}"),
            labels: vec![],
            capacity: Default::default(),
            available: Default::default(),
            active: 0,
            weight: 1,
            healthy: true,
        }
    }

    #[test]
    fn the_latest_change_of_a_target_wins_and_outcomes_are_bounded() {
        let mut feed = StrategyFeed::default();
        feed.upsert(target(1));
        feed.remove(1);
        feed.remove(2);
        feed.upsert(target(2));
        for i in 0..(MAX_OUTCOMES as u64 + 10) {
            feed.observe(Outcome {
                request: i,
                target: 2,
                success: true,
                latency_us: 1,
            });
        }
        let batch = feed.take();
        assert_eq!(batch.removes, vec![1]);
        assert_eq!(
            batch.upserts.iter().map(|t| t.id).collect::<Vec<_>>(),
            vec![2]
        );
        assert_eq!(batch.outcomes.len(), MAX_OUTCOMES);
        assert_eq!(batch.outcomes[0].request, 10, "the oldest are dropped");
        assert!(feed.take().is_empty());
    }
}
