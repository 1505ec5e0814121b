//! `recovery = "migrate"`: the next attempt of an execution runs on another node than the one
//! its last attempt left.
//!
//! An execution back in the queue after an attempt (preempted, handed back by a draining node,
//! taken from a lost node, or retried after a failure) keeps that attempt's node in `node_uuid`
//! while it waits. When it recovers by migrating and the strategy chooses that node again, the
//! round moves the decision to the active, connected node that could hold it (executor, labels,
//! capacity, and the resources it reports free) with the most places left in the round (ties:
//! the first by uuid). An attempt taken back without its end heard (`orphaned_on`) does not
//! count as having left its node (see [`left_node`]). When none has a
//! place left it stays queued for a later round; when no other node could ever hold it, it runs
//! where the strategy chose: a fresh node is preferred, never a reason not to run. Its
//! checkpoint goes with it, as with `recovery = "checkpoint"`.

use std::collections::HashSet;

use spear_plugin_api::Resources;

use crate::dispatch::Room;
use crate::model::{Execution, NodeStatus, Recovery};
use crate::service::Sms;

/// Why a decision left its execution queued when no other node had a place.
pub(crate) const NO_PLACE: &str = "recovery = migrate: the node chosen is the one its last \
                                   attempt left, and no other node that could hold it had a place left";

/// Why the node an execution's last attempt left was passed over (explain).
pub(crate) const LEFT: &str = "the node its last attempt left (recovery = migrate)";

/// Where a decision goes.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Away {
    /// Where the strategy chose.
    Stays,
    /// To this target (id, node uuid) instead.
    To(u64, String),
    /// Nowhere this round.
    Wait,
}

/// The node `e`'s last attempt left, when it recovers by migrating. An attempt SMS took back
/// without hearing its end (its node was lost, SMS restarted, a preempted run was not reported
/// stopped: `orphaned_on`) may still run there, and its result is still taken from there: that
/// node is not avoided, or the work could run twice.
pub(crate) fn left_node(e: &Execution) -> Option<&str> {
    if e.recovery == Recovery::Migrate && e.attempt > 0 && e.orphaned_on.is_none() {
        e.node_uuid.as_deref()
    } else {
        None
    }
}

impl Sms {
    /// Where `e`, which the strategy placed on node `chosen`, goes (see the module).
    pub(crate) async fn migrate_away(&self, e: &Execution, chosen: &str, room: &mut Room) -> Away {
        if left_node(e) != Some(chosen) {
            return Away::Stays;
        }
        let others: HashSet<String> = {
            let nodes = self.nodes.read().await;
            nodes
                .values()
                .filter(|n| {
                    n.uuid != chosen
                        && n.status == NodeStatus::Active
                        && crate::fit::could_hold(n, e)
                        && Resources::from(n.available).covers(&e.needs.into())
                })
                .map(|n| n.uuid.clone())
                .collect()
        };
        if others.is_empty() {
            return Away::Stays;
        }
        let mut targets: Vec<(u64, String)> = {
            let names = self.target_names.lock().await;
            names
                .iter()
                .filter(|(_, uuid)| others.contains(*uuid))
                .map(|(t, uuid)| (*t, uuid.clone()))
                .collect()
        };
        targets.sort_by(|a, b| a.1.cmp(&b.1));
        self.extend_room(room, targets.iter().map(|(t, _)| *t));
        let mut best: Option<(u32, usize)> = None;
        for (i, (t, uuid)) in targets.iter().enumerate() {
            let left = room.left(*t);
            if left == 0 || best.is_some_and(|(most, _)| most >= left) {
                continue;
            }
            if self.connected(uuid).await {
                best = Some((left, i));
            }
        }
        match best {
            Some((_, i)) => {
                let (t, uuid) = targets.swap_remove(i);
                Away::To(t, uuid)
            }
            None => Away::Wait,
        }
    }
}
