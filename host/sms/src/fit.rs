//! Whether any registered node could ever hold an execution: one that runs its executable type,
//! carries its required labels, and whose total capacity covers its needs. An execution no node
//! could hold is refused at submit (`unschedulable = "refuse"`, when nodes are registered), or
//! queued with `error: "unschedulable: <why>"` (`"queue"`, the default), which is refreshed when
//! the registered nodes change and cleared when a node that fits arrives.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::atomic::Ordering;

use serde::{Deserialize, Serialize};

use crate::model::{Execution, Node};
use crate::nodes::NODE_LABEL;
use crate::service::Sms;

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

/// A fingerprint of what [`why_not`] looks at in the nodes.
fn fingerprint<'a>(nodes: impl Iterator<Item = &'a Node>) -> u64 {
    let mut h = DefaultHasher::new();
    for n in nodes {
        (&n.uuid, &n.labels, &n.executors, n.capacity).hash(&mut h);
    }
    h.finish()
}

impl Sms {
    /// When the registered nodes changed since the last look, set or clear the `unschedulable`
    /// reason of every execution not yet placed, ready or pending (in memory; what was stored at
    /// submit is corrected the next time the execution is written).
    pub(crate) async fn refresh_unschedulable(&self) {
        let nodes = self.nodes.read().await;
        let print = fingerprint(nodes.values());
        if self.nodes_fingerprint.swap(print, Ordering::Relaxed) == print {
            return;
        }
        let mut execs = self.executions.write().await;
        let changes: Vec<(String, Option<String>)> = execs
            .ready()
            .chain(execs.pending())
            .filter_map(|(id, e)| {
                let now = why_not(e, nodes.values()).map(|(_, why)| format!("{PREFIX}{why}"));
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
