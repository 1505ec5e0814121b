//! Cancels owed to nodes. Cancelling an execution placed on a node stores, with the execution's
//! write, that the node owes a stop (`cancel/<node>/<id>`); the cancel is sent on the node's
//! stream at once if it is connected, and again each time it (re)connects, so a node that was
//! away when its work was cancelled still stops it. The debt lapses when the run must have ended
//! anyway: its timeout (a day when it has none) and a minute of grace past the cancel.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use spear_plugin_api::storage::BatchOp;

use crate::db::{Db, put_op};
use crate::error::Result;
use crate::model::Execution;
use crate::service::Sms;

/// Where owed cancels are stored.
pub const PREFIX: &str = "cancel/";

/// How long past the cancel a run with no timeout is taken to go on at most.
const NO_TIMEOUT_MS: i64 = 24 * 3600 * 1000;
/// Grace past the run's timeout.
const GRACE_MS: i64 = 60_000;

/// One cancel a node owes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Owed {
    /// The execution as cancelled.
    pub execution: Execution,
    /// When the debt lapses (ms since the epoch).
    pub until_ms: i64,
}

/// The cancels owed, by node then execution.
#[derive(Debug, Default)]
pub struct Cancels {
    by_node: BTreeMap<String, BTreeMap<String, Owed>>,
}

fn key(node: &str, id: &str) -> String {
    format!("{PREFIX}{node}/{id}")
}

impl Owed {
    /// What `node` owes for `execution`, cancelled at `now`, and the write that stores it.
    pub fn new(node: &str, execution: &Execution, now: i64) -> Result<(Self, BatchOp)> {
        let run = match i64::try_from(execution.timeout_ms) {
            Ok(0) | Err(_) => NO_TIMEOUT_MS,
            Ok(ms) => ms,
        };
        let owed = Self {
            execution: execution.clone(),
            until_ms: now.saturating_add(run).saturating_add(GRACE_MS),
        };
        let op = put_op(key(node, &execution.execution_id), &owed)?;
        Ok((owed, op))
    }
}

impl Cancels {
    /// Every cancel stored (at start: they are live state, bounded by their lapse).
    pub async fn load(db: &Db) -> Result<Self> {
        let mut c = Self::default();
        for owed in db.load_all::<Owed>(PREFIX).await? {
            if let Some(node) = owed.execution.node_uuid.clone() {
                c.insert(&node, owed);
            }
        }
        Ok(c)
    }

    /// Note that `node` owes `owed`.
    pub fn insert(&mut self, node: &str, owed: Owed) {
        self.by_node
            .entry(node.to_owned())
            .or_default()
            .insert(owed.execution.execution_id.clone(), owed);
    }

    /// The executions `node` owes a stop for.
    pub fn owed_by(&self, node: &str) -> Vec<Execution> {
        self.by_node
            .get(node)
            .map(|m| m.values().map(|o| o.execution.clone()).collect())
            .unwrap_or_default()
    }

    /// The debts lapsed at `now`, as (node, execution).
    fn lapsed(&self, now: i64) -> Vec<(String, String)> {
        self.by_node
            .iter()
            .flat_map(|(node, m)| {
                m.iter()
                    .filter(|(_, o)| o.until_ms <= now)
                    .map(|(id, _)| (node.clone(), id.clone()))
            })
            .collect()
    }

    fn remove(&mut self, node: &str, id: &str) {
        if let Some(m) = self.by_node.get_mut(node) {
            m.remove(id);
            if m.is_empty() {
                self.by_node.remove(node);
            }
        }
    }
}

impl Sms {
    /// Delete the cancels that lapsed by `now` (storage first); returns how many.
    pub(crate) async fn expire_cancels(&self, now: i64) -> Result<usize> {
        let lapsed = self
            .cancels
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .lapsed(now);
        if lapsed.is_empty() {
            return Ok(0);
        }
        let ops = lapsed
            .iter()
            .map(|(node, id)| BatchOp::Delete {
                key: key(node, id).into_bytes(),
            })
            .collect();
        self.db.write_each(ops).await?;
        let mut cancels = self.cancels.lock().unwrap_or_else(|p| p.into_inner());
        for (node, id) in &lapsed {
            cancels.remove(node, id);
        }
        Ok(lapsed.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_debt_lapses_once_the_run_must_have_ended() {
        let mut e = crate::table::tests_support::execution();
        e.node_uuid = Some("n".into());
        e.timeout_ms = 1_000;
        let (owed, _) = Owed::new("n", &e, 10_000).unwrap();
        assert_eq!(owed.until_ms, 10_000 + 1_000 + GRACE_MS);
        let mut c = Cancels::default();
        c.insert("n", owed);
        assert_eq!(c.owed_by("n").len(), 1);
        assert!(c.owed_by("m").is_empty());
        assert!(c.lapsed(10_000 + 1_000 + GRACE_MS - 1).is_empty());
        assert_eq!(
            c.lapsed(10_000 + 1_000 + GRACE_MS),
            [("n".into(), "e".into())]
        );
        c.remove("n", "e");
        assert!(c.owed_by("n").is_empty() && c.by_node.is_empty());
        e.timeout_ms = 0;
        let (forever, _) = Owed::new("n", &e, 0).unwrap();
        assert_eq!(
            forever.until_ms,
            NO_TIMEOUT_MS + GRACE_MS,
            "no timeout: a day"
        );
    }
}
