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

use std::collections::{BTreeSet, HashMap};

use serde::{Deserialize, Serialize};
use spear_plugin_api::Decision;

use crate::feed::Batch;
use crate::model::NodeStatus;
use crate::nodes::to_target;
use crate::service::Sms;
use spear_config::Invalid;

/// `[dispatch]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
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
    pub fn validate(&self) -> Result<(), Invalid> {
        if self.prefetch > 1024 {
            return Err(Invalid::new(
                "dispatch.prefetch",
                format!("must be 0 to 1024, not {}", self.prefetch),
            ));
        }
        if !(1..=MAX_SLOTS).contains(&self.default_slots) {
            return Err(Invalid::new(
                "dispatch.default_slots",
                format!("must be 1 to {MAX_SLOTS}, not {}", self.default_slots),
            ));
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

/// What the scheduler knows of each node's fill, kept between rounds and recounted only where
/// something changed (a node's figures, or what SMS placed there), so that a round costs
/// O(changes), not O(nodes). Only the scheduler touches it.
#[derive(Debug, Default)]
pub(crate) struct Capacity {
    nodes: HashMap<u64, Fill>,
    /// Free places on active nodes, all together.
    free: usize,
}

/// One node's fill.
#[derive(Debug, Clone, Copy)]
struct Fill {
    /// Executions SMS placed there and has not heard the end of.
    holds: u32,
    /// Places left under its limit.
    free: u32,
    /// It is active (only an active node counts towards the free places).
    active: bool,
    /// What the strategy last heard: a place free (`None`: nothing yet).
    open_sent: Option<bool>,
}

impl Capacity {
    /// Record node `id`'s fill; true when the strategy has not heard whether it is open or full.
    fn set(&mut self, id: u64, holds: u32, limit: u32, active: bool) -> bool {
        let free = limit.saturating_sub(holds);
        let fill = self.nodes.entry(id).or_insert(Fill {
            holds: 0,
            free: 0,
            active: false,
            open_sent: None,
        });
        if fill.active {
            self.free -= fill.free as usize;
        }
        if active {
            self.free += free as usize;
        }
        let open = free > 0;
        let flipped = fill.open_sent != Some(open);
        *fill = Fill {
            holds,
            free,
            active,
            open_sent: Some(open),
        };
        flipped
    }

    /// Forget node `id`.
    fn remove(&mut self, id: u64) {
        if let Some(fill) = self.nodes.remove(&id)
            && fill.active
        {
            self.free -= fill.free as usize;
        }
    }

    /// Node `id`'s (placed, a place free), as last recorded.
    pub(crate) fn fill(&self, id: u64) -> Option<(u32, bool)> {
        self.nodes.get(&id).map(|f| (f.holds, f.free > 0))
    }

    /// Add to `room` the free places of the nodes in `targets` it does not count yet.
    pub fn extend_room(&self, room: &mut Room, targets: impl IntoIterator<Item = u64>) {
        for id in targets {
            room.free.entry(id).or_insert_with(|| {
                self.nodes
                    .get(&id)
                    .filter(|f| f.active)
                    .map_or(0, |f| f.free)
            });
        }
    }

    /// The free places of the nodes in `targets`, to spend in one round.
    pub fn room(&self, targets: impl IntoIterator<Item = u64>) -> Room {
        let mut room = Room::default();
        for id in targets {
            let free = self
                .nodes
                .get(&id)
                .filter(|f| f.active)
                .map_or(0, |f| f.free);
            room.free.insert(id, free);
        }
        room
    }
}

/// The free places of the nodes one round's decisions name (by target id).
#[derive(Debug, Default)]
pub(crate) struct Room {
    free: HashMap<u64, u32>,
}

impl Room {
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

    /// The places left on the node of target `id` (0: none, or not counted).
    pub fn left(&self, id: u64) -> u32 {
        self.free.get(&id).copied().unwrap_or(0)
    }
}

/// Tell `strategy` of removed and changed nodes and of outcomes, in that order.
pub(crate) fn feed(strategy: &spear_plugin_runtime::StrategySlot, batch: Batch) {
    if !batch.removes.is_empty() {
        strategy.remove(&batch.removes);
    }
    if !batch.upserts.is_empty() {
        strategy.upsert(batch.upserts);
    }
    if !batch.outcomes.is_empty() {
        strategy.observe(&batch.outcomes);
    }
}

impl Sms {
    /// Recount the fill of each node that changed since the last round and return the free
    /// places on active nodes, with what the strategy must hear before it places again: every
    /// change recorded since the last round (removed nodes, changed nodes, outcomes), each
    /// changed node's `active` set to what SMS has placed there and `healthy` false while it is
    /// full ([`feed_strategy`](Self::feed_strategy) sends it). Only the scheduler calls this.
    pub(crate) async fn measure_room(&self) -> (usize, Batch) {
        let mut batch = self.feed.lock().unwrap_or_else(|p| p.into_inner()).take();
        // Nodes that turned full or open while nothing else about them changed: sent too. (A
        // change of what a node holds alone is not sent each round: the strategy's view counts
        // its own placements, and each upsert costs a plugin call.)
        let mut refill = Vec::new();
        let free = {
            // Lock order: target ids, nodes, executions (as everywhere else).
            let ids = self.target_ids.lock().await;
            let nodes = self.nodes.read().await;
            let mut execs = self.executions.write().await;
            let mut look = execs.take_touched();
            look.extend(batch.upserts.iter().map(|t| t.name.clone()));
            let placed = execs.placed();
            let mut cap = self.capacity.lock().unwrap_or_else(|p| p.into_inner());
            for id in &batch.removes {
                cap.remove(*id);
            }
            let upserted: BTreeSet<u64> = batch.upserts.iter().map(|t| t.id).collect();
            for uuid in &look {
                // A node without a target id is gone (its removal is in the batch).
                let Some(&id) = ids.get(uuid) else { continue };
                let Some(node) = nodes.get(uuid) else {
                    cap.remove(id);
                    continue;
                };
                let holds = placed.get(uuid).copied().unwrap_or(0);
                let limit = self.dispatch.limit(node.slots);
                let active = node.status == NodeStatus::Active;
                if cap.set(id, holds, limit, active) && !upserted.contains(&id) {
                    refill.push((id, node.clone(), cap.fill(id).unwrap_or((0, false))));
                }
            }
            for t in &mut batch.upserts {
                if let Some((holds, open)) = cap.fill(t.id) {
                    t.active = holds;
                    t.healthy &= open;
                }
            }
            cap.free
        };
        for (id, node, (holds, open)) in refill {
            let mut t = to_target(id, &node, self.connected(&node.uuid).await);
            t.active = holds;
            t.healthy &= open;
            batch.upserts.push(t);
        }
        (free, batch)
    }

    /// Send the strategy what [`measure_room`](Self::measure_room) gathered, when the round
    /// places nothing (a round that places sends it in the same plugin call as its batch).
    pub(crate) async fn feed_strategy(&self, batch: Batch) {
        if !batch.is_empty() {
            let plugins = self.plugins.clone();
            let shadow = self.shadow.on(&plugins).then(|| self.shadow.clone());
            let _ = tokio::task::spawn_blocking(move || {
                if let Some(shadow) = shadow
                    && let Some(ticket) = shadow.begin(plugins.strategy())
                {
                    shadow.send(ticket, plugins.strategy(), batch.clone(), None);
                }
                feed(plugins.strategy(), batch)
            })
            .await;
        }
    }

    /// The free places of the nodes `decisions` assign to.
    /// Add the free places of the nodes in `targets` to `room` (those it does not count yet).
    pub(crate) fn extend_room(&self, room: &mut Room, targets: impl IntoIterator<Item = u64>) {
        self.capacity
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_room(room, targets);
    }

    pub(crate) fn room_for(&self, decisions: &[Decision]) -> Room {
        self.capacity
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .room(decisions.iter().filter_map(|d| match d {
                Decision::Assign(id) => Some(*id),
                _ => None,
            }))
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
    }

    #[test]
    fn the_free_total_follows_every_change_of_a_node() {
        let mut cap = Capacity::default();
        assert!(cap.set(1, 0, 3, true), "new: the strategy hears it");
        assert!(!cap.set(1, 1, 3, true), "still open");
        assert!(cap.set(2, 5, 4, true), "over its limit: full");
        assert_eq!(cap.free, 2);
        assert!(!cap.set(2, 5, 4, false));
        assert!(cap.set(3, 0, 7, false), "inactive: counts for nothing");
        assert_eq!(cap.free, 2);
        assert!(!cap.set(3, 0, 7, true), "turned active, open as before");
        assert_eq!(cap.free, 9);
        assert!(cap.set(1, 3, 3, true), "filled up");
        assert_eq!(cap.free, 7);
        cap.remove(3);
        cap.remove(3);
        assert_eq!(cap.free, 0);
        assert_eq!(cap.fill(2), Some((5, false)));
        let mut room = cap.room([1, 2, 9]);
        assert!(!room.take(1), "full");
        assert!(!room.take(9), "unknown");
        assert!(cap.set(1, 1, 3, true), "opened again");
        let mut room = cap.room([1, 1]);
        assert!(room.take(1));
        assert!(room.take(1));
        assert!(!room.take(1), "two places, taken");
    }
}
