//! Whether any registered node could ever hold an execution: one that runs its executable type,
//! carries its required labels, and whose total capacity covers its needs. An execution no node
//! could hold is refused at submit (`unschedulable = "refuse"`, when nodes are registered), or
//! queued with `error: "unschedulable: <why>"` (`"queue"`, the default), which is refreshed when
//! the registered nodes change and cleared when a node that fits arrives.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;

use serde::{Deserialize, Serialize};

use crate::model::{Execution, Node, Resources};
use crate::nodes::NODE_LABEL;
use crate::service::Sms;
use crate::table::NodeTable;

/// What to do with an execution that no registered node could hold.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Unschedulable {
    /// Accept it and show why it waits (nodes may still come).
    #[default]
    Queue,
    /// Refuse it with 400, naming the field (only while at least one node is registered).
    Refuse,
}

/// The prefix of an execution's `error` while no node could hold it.
pub const PREFIX: &str = "unschedulable: ";

/// Whether node `n` could ever hold `e`: it runs its executable type, carries its required
/// labels, and its total capacity covers its needs (what [`why_not`] checks, without saying why).
pub fn could_hold(n: &Node, e: &Execution) -> bool {
    n.executors.contains(&e.executable.kind)
        && e.required_labels
            .iter()
            .all(|(k, v)| n.labels.get(k) == Some(v) || (k == NODE_LABEL && &n.uuid == v))
        && spear_plugin_api::Resources::from(n.capacity).covers(&e.needs.into())
}

/// Why no node in `nodes` could ever hold `e`, as (field, reason); `None` when one could, or when
/// no node is registered.
pub fn why_not<'a>(
    e: &Execution,
    nodes: impl Iterator<Item = &'a Node>,
) -> Option<(&'static str, String)> {
    let mut nodes = nodes.peekable();
    nodes.peek()?;
    let kind = &e.executable.kind;
    let runs: Vec<&Node> = nodes.filter(|n| n.executors.contains(kind)).collect();
    if runs.is_empty() {
        return Some((
            "executable.type",
            format!("no registered node runs `{kind}` executables"),
        ));
    }
    let labelled: Vec<&Node> = runs
        .into_iter()
        .filter(|n| {
            e.required_labels
                .iter()
                .all(|(k, v)| n.labels.get(k) == Some(v) || (k == NODE_LABEL && &n.uuid == v))
        })
        .collect();
    if labelled.is_empty() {
        return Some((
            "required_labels",
            format!(
                "no registered node that runs `{kind}` carries the required labels {:?}",
                e.required_labels
            ),
        ));
    }
    let needs: spear_plugin_api::Resources = e.needs.into();
    if labelled
        .iter()
        .any(|n| spear_plugin_api::Resources::from(n.capacity).covers(&needs))
    {
        return None;
    }
    // The first dimension no fitting node has enough of; else the need is for all at once.
    let dims: [Dimension; 3] = [
        ("needs.memory_mb", "MiB of memory", |r| r.memory_mb),
        ("needs.cpu_millis", "thousandths of a core", |r| {
            r.cpu_millis
        }),
        ("needs.disk_mb", "MiB of disk", |r| r.disk_mb),
    ];
    for (field, unit, of) in dims {
        let have = labelled.iter().map(|n| of(&n.capacity)).max().unwrap_or(0);
        let want = of(&e.needs);
        if want > have {
            return Some((
                field,
                format!("needs {want} {unit}; the most any fitting node has is {have}"),
            ));
        }
    }
    Some((
        "needs",
        "no registered node has all of the needed resources at once".into(),
    ))
}

/// A resource dimension: its field, its unit, and how to read it.
type Dimension = (
    &'static str,
    &'static str,
    fn(&crate::model::Resources) -> u64,
);

/// Most answers [`FitCache`] keeps (it starts afresh past this).
pub const FIT_CACHE_ENTRIES: usize = 4096;

/// What decides an execution's fit: its executable type, required labels and needs.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Shape {
    kind: String,
    required: BTreeMap<String, String>,
    needs: Resources,
}

/// [`why_not`]'s answers by shape, for one state of the nodes (their
/// [`fit_print`](NodeTable::fit_print)): submits of the same shape ask once, not once per node
/// each. Bounded by [`FIT_CACHE_ENTRIES`].
#[derive(Debug, Default)]
pub(crate) struct FitCache {
    print: u64,
    answers: HashMap<Shape, Option<(&'static str, String)>>,
}

impl FitCache {
    /// Why no node in `nodes` could hold `e` ([`why_not`]), answered from the cache when the
    /// nodes are as they were.
    pub fn why_not(&mut self, e: &Execution, nodes: &NodeTable) -> Option<(&'static str, String)> {
        if self.print != nodes.fit_print() || self.answers.len() >= FIT_CACHE_ENTRIES {
            self.answers.clear();
            self.print = nodes.fit_print();
        }
        let shape = Shape {
            kind: e.executable.kind.clone(),
            required: e.required_labels.clone(),
            needs: e.needs,
        };
        self.answers
            .entry(shape)
            .or_insert_with(|| why_not(e, nodes.values()))
            .clone()
    }
}

impl Sms {
    /// Why no registered node could hold `e` ([`why_not`], cached by shape).
    pub(crate) async fn unfit(&self, e: &Execution) -> Option<(&'static str, String)> {
        let nodes = self.nodes.read().await;
        self.fit_cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .why_not(e, &nodes)
    }

    /// When the registered nodes changed since the last look, set or clear the `unschedulable`
    /// reason of every execution not yet placed, ready or pending (in memory; what was stored at
    /// submit is corrected the next time the execution is written).
    pub(crate) async fn refresh_unschedulable(&self) {
        let nodes = self.nodes.read().await;
        let print = nodes.fit_print();
        if self.nodes_fingerprint.swap(print, Ordering::Relaxed) == print {
            return;
        }
        let mut execs = self.executions.write().await;
        let mut cache = self.fit_cache.lock().unwrap_or_else(|p| p.into_inner());
        let changes: Vec<(String, Option<String>)> = execs
            .ready()
            .chain(execs.pending())
            .filter_map(|(id, e)| {
                let now = cache
                    .why_not(e, &nodes)
                    .map(|(_, why)| format!("{PREFIX}{why}"));
                let was = e.error.as_ref().filter(|x| x.starts_with(PREFIX));
                match (&now, was) {
                    (Some(n), Some(w)) if n == w => None,
                    (None, None) => None,
                    (Some(_), _) => Some((id.clone(), now)),
                    (None, Some(_)) => Some((id.clone(), None)),
                }
            })
            .collect();
        for (id, error) in changes {
            execs.set_error(&id, error);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::tests_support::{execution, node};

    #[test]
    fn cached_answers_follow_the_nodes_and_stay_bounded() {
        let mut nodes = NodeTable::default();
        let mut cache = FitCache::default();
        let mut e = execution();
        e.executable.kind = "process".into();
        assert_eq!(
            cache.why_not(&e, &nodes),
            None,
            "no node registered: no verdict"
        );
        nodes.insert("a".into(), node("a"));
        assert_eq!(cache.why_not(&e, &nodes), None);
        e.needs.memory_mb = 10;
        let why = cache.why_not(&e, &nodes);
        assert_eq!(why.as_ref().map(|w| w.0), Some("needs.memory_mb"));
        assert_eq!(cache.why_not(&e, &nodes), why, "asked again");
        nodes.update("a", |n| n.capacity.memory_mb = 10);
        assert_eq!(
            cache.why_not(&e, &nodes),
            None,
            "the node grew: answered anew"
        );
        e.executable.kind = "wasm".into();
        assert_eq!(
            cache.why_not(&e, &nodes).map(|w| w.0),
            Some("executable.type")
        );
        for i in 0..(FIT_CACHE_ENTRIES as u64 * 2) {
            e.needs.disk_mb = i;
            cache.why_not(&e, &nodes);
            assert!(cache.answers.len() <= FIT_CACHE_ENTRIES);
        }
    }
}
