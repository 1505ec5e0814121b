//! Capacity-aware dispatch. A node runs at most `slots` executions at once (a Spearlet reports its
//! `max_concurrent` when it registers); SMS places on it no more than its slots plus a small
//! prefetch (`[dispatch] prefetch`, to hide the round trip), counting what it has placed there and
//! not yet heard the end of. So the queue stays in SMS, where priority, aging and the strategy
//! decide, and a node's own queue never holds more than the prefetch.
//!
//! Each round the scheduler tells the strategy, through its target view, which nodes are full
//! (`healthy: false` while no slot is free; sent when a node turns full or open) and, with every
//! other change of a node, how much it holds (`active`), then caps the strategy's decisions by the
//! free slots it counted.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::config::ConfigError;
use crate::model::NodeStatus;
use crate::nodes::to_target;
use crate::service::Sms;

/// `[dispatch]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DispatchConfig {
    /// Assignments a node may hold beyond its slots (0 to 1024).
    pub prefetch: u32,
    /// Slots of a node that registers without saying (1 to 65536).
    pub default_slots: u32,
}

impl Default for DispatchConfig {
    fn default() -> Self {
        Self {
            prefetch: 2,
            default_slots: 64,
        }
    }
}

/// Most slots a node may declare.
pub const MAX_SLOTS: u32 = 65_536;

impl DispatchConfig {
    /// The keys out of range, named.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.prefetch > 1024 {
            return Err(ConfigError(format!(
                "dispatch.prefetch: must be 0 to 1024, not {}",
                self.prefetch
            )));
        }
        if !(1..=MAX_SLOTS).contains(&self.default_slots) {
            return Err(ConfigError(format!(
                "dispatch.default_slots: must be 1 to {MAX_SLOTS}, not {}",
                self.default_slots
            )));
        }
        Ok(())
    }

    /// How many executions SMS may place on a node with `slots` slots (0: not declared).
    pub fn limit(&self, slots: u32) -> u32 {
        let slots = if slots == 0 {
            self.default_slots
        } else {
            slots
        };
        slots.saturating_add(self.prefetch)
    }
}

/// The free places of each active node (by target id) in one scheduling round.
#[derive(Debug, Default)]
pub(crate) struct Room {
    free: std::collections::HashMap<u64, u32>,
}

impl Room {
    /// Free places on active nodes, all together.
    pub fn total(&self) -> usize {
        self.free.values().map(|n| *n as usize).sum()
    }

    /// Take one place on the node of target `id`; false when it has none left.
    pub fn take(&mut self, id: u64) -> bool {
        match self.free.get_mut(&id) {
            Some(n) if *n > 0 => {
                *n -= 1;
                true
            }
            _ => false,
        }
    }
}

impl Sms {
    /// Count each node's free places, and send the strategy every change recorded since the last
    /// round (removed nodes, changed nodes, outcomes) with each node's `active` set to what SMS
    /// has placed there and `healthy` false while it is full. Only the scheduler calls this.
    pub(crate) async fn measure_room(&self) -> Room {
        let mut batch = self.feed.lock().unwrap_or_else(|p| p.into_inner()).take();
        let mut room = Room::default();
        // Nodes that turned full or open while nothing else about them changed: sent too. (A
        // change of what a node holds alone is not sent each round: the strategy's view counts
        // its own placements, and each upsert costs a plugin call.)
        let mut refill = Vec::new();
        {
            // Lock order: target ids, nodes, executions (as everywhere else).
            let ids = self.target_ids.lock().await;
            let nodes = self.nodes.read().await;
            let execs = self.executions.read().await;
            let placed = execs.placed();
            let mut sent = self.sent_fill.lock().unwrap_or_else(|p| p.into_inner());
            for id in &batch.removes {
                sent.remove(id);
            }
            let upserted: BTreeSet<u64> = batch.upserts.iter().map(|t| t.id).collect();
            for (uuid, node) in nodes.iter() {
                let Some(&id) = ids.get(uuid) else { continue };
                let limit = self.dispatch.limit(node.slots);
                let holds = placed.get(uuid).copied().unwrap_or(0);
                let free = limit.saturating_sub(holds);
                if node.status == NodeStatus::Active {
                    room.free.insert(id, free);
                }
                let fill = (holds, free > 0);
                let flipped = sent.insert(id, fill).is_none_or(|(_, open)| open != fill.1);
                if flipped && !upserted.contains(&id) {
                    refill.push((id, node.clone(), fill));
                }
            }
            let sent = &*sent;
            for t in &mut batch.upserts {
                if let Some(&(holds, open)) = sent.get(&t.id) {
                    t.active = holds;
                    t.healthy &= open;
                }
            }
        }
        for (id, node, (holds, open)) in refill {
            let mut t = to_target(id, &node, self.connected(&node.uuid).await);
            t.active = holds;
            t.healthy &= open;
            batch.upserts.push(t);
        }
        if !batch.is_empty() {
            let plugins = self.plugins.clone();
            let _ = tokio::task::spawn_blocking(move || {
                let strategy = plugins.strategy();
                if !batch.removes.is_empty() {
                    strategy.remove(&batch.removes);
                }
                if !batch.upserts.is_empty() {
                    strategy.upsert(batch.upserts);
                }
                if !batch.outcomes.is_empty() {
                    strategy.observe(&batch.outcomes);
                }
            })
            .await;
        }
        room
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_and_room() {
        let d = DispatchConfig::default();
        assert_eq!(d.limit(16), 18);
        assert_eq!(d.limit(0), 66, "undeclared: the default slots");
        assert_eq!(d.limit(u32::MAX), u32::MAX, "saturates");
        assert!(
            DispatchConfig {
                prefetch: 1025,
                ..d
            }
            .validate()
            .is_err()
        );
        assert!(
            DispatchConfig {
                default_slots: 0,
                ..d
            }
            .validate()
            .is_err()
        );
        let mut room = Room::default();
        room.free.insert(1, 1);
        room.free.insert(2, 0);
        assert_eq!(room.total(), 1);
        assert!(room.take(1));
        assert!(!room.take(1));
        assert!(!room.take(2));
        assert!(!room.take(3), "unknown");
    }
}
