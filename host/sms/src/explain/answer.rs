//! The answer to "why did this execution go there": worked out from a recorded round.

use serde::Serialize;
use spear_plugin_api::{Decision, Request};
use utoipa::ToSchema;

use super::record::{Dispatch, Round, Seen, Unusable};
use crate::model::Resources;
use crate::nodes::{EXECUTOR_LABEL, NODE_LABEL};

/// `GET /api/v1/executions/{id}/explain`: the latest recorded round that offered the execution.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Explanation {
    /// The execution.
    pub execution_id: String,
    /// The round (numbered from 1 since SMS started).
    pub round: u64,
    /// When it ran, ms since the Unix epoch.
    pub at_ms: i64,
    /// `assigned`, `rejected` (the strategy placed it nowhere) or `left-queued` (the node chosen
    /// had no place left, or no stream, or the execution changed meanwhile: see `reason`).
    pub outcome: String,
    /// The node chosen, if one was.
    pub node_uuid: Option<String>,
    /// The strategy's reason for a rejection, or why a choice was left queued.
    pub reason: Option<String>,
    /// Its place in the queue when the round took it (0: the head).
    pub queue_position: usize,
    /// How many the round took.
    pub batch: usize,
    /// How long it had waited to be placeable, in ms.
    pub waited_ms: i64,
    /// The strategy plugin active in the round (none: no plugin was active).
    pub strategy: Option<String>,
    /// Its version.
    pub strategy_version: Option<String>,
    /// Its form (`component`, `extism`, `native`, `built-in`).
    pub strategy_form: Option<String>,
    /// Whether the built-in fallback decided instead of the plugin.
    pub fallback: bool,
    /// Why the fallback decided.
    pub fallback_reason: Option<String>,
    /// Every node the strategy knew: the chosen one first, then those offered, then those
    /// filtered out.
    pub nodes: Vec<NodeVerdict>,
}

/// One node's part in the round.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct NodeVerdict {
    /// The node.
    pub node_uuid: String,
    /// `chosen`, `offered` (it could have taken the execution) or `filtered`.
    pub verdict: String,
    /// Why it was filtered: each of `unhealthy: node is <status>`, `no stream`, `full: …`,
    /// `executor missing: <type>`, `hard affinity: lacks k=v` (or `pinned to node …`),
    /// `resources: …`.
    pub reasons: Vec<String>,
    /// Work the strategy counted on it.
    pub active: u32,
    /// Resources the strategy counted free on it.
    pub available: Resources,
}

/// Why node `seen` could not take `request` (empty: it could).
fn reasons(seen: &Seen, request: &Request) -> Vec<String> {
    let mut out = Vec::new();
    match seen.unusable {
        Some(Unusable::Status(s)) => out.push(format!("unhealthy: node is {}", s.as_str())),
        Some(Unusable::Full { placed, limit }) => out.push(format!(
            "full: {placed} of its {limit} places taken (slots + prefetch)"
        )),
        Some(Unusable::NoStream) => out.push("no stream: its assignment stream is not open".into()),
        None => {}
    }
    for l in &request.required {
        if seen.labels.iter().any(|have| have == l) {
            continue;
        }
        if let Some(kind) = l.key.strip_prefix(EXECUTOR_LABEL) {
            out.push(format!("executor missing: {kind}"));
        } else if l.key == NODE_LABEL {
            out.push(format!("hard affinity: pinned to node {}", l.value));
        } else {
            out.push(format!("hard affinity: lacks {}={}", l.key, l.value));
        }
    }
    let (need, have) = (request.needs, seen.available);
    let mut short = Vec::new();
    if have.cpu_millis < need.cpu_millis {
        short.push(format!(
            "cpu_millis {} of {}",
            have.cpu_millis, need.cpu_millis
        ));
    }
    if have.memory_mb < need.memory_mb {
        short.push(format!(
            "memory_mb {} of {}",
            have.memory_mb, need.memory_mb
        ));
    }
    if have.disk_mb < need.disk_mb {
        short.push(format!("disk_mb {} of {}", have.disk_mb, need.disk_mb));
    }
    if !short.is_empty() {
        out.push(format!("resources: has {} needed", short.join(", ")));
    }
    out
}

impl Explanation {
    /// The part in `round`, over the nodes it saw (`nodes`, by target id), of execution `id`,
    /// whose request (made again from the execution) is `request` (none if the round did not
    /// offer it).
    pub(crate) fn of(
        round: &Round,
        nodes: &[(u64, Seen)],
        id: &str,
        request: &Request,
    ) -> Option<Self> {
        let node = |t: u64| nodes.iter().find(|(n, _)| *n == t).map(|(_, s)| s);
        let i = round.seqs.iter().position(|s| *s == request.id)?;
        let decision = round.decisions.get(i)?;
        let chosen = match decision {
            Decision::Assign(t) => Some(*t),
            Decision::Reject(_) => None,
        };
        let (outcome, reason) = match (round.dispatch.get(i)?, decision) {
            (Dispatch::Assigned, _) => ("assigned", None),
            (Dispatch::Migrated { .. }, _) => (
                "assigned",
                Some(format!(
                    "the strategy chose node {}, {}: moved to the node that could hold it with \
                     the most places left",
                    chosen.and_then(node).map_or("?", |s| &*s.uuid),
                    crate::recovery::LEFT
                )),
            ),
            (_, Decision::Reject(why)) => ("rejected", Some(why.clone())),
            (Dispatch::Left(why), _) => ("left-queued", Some((*why).to_owned())),
            (Dispatch::Rejected, _) => ("left-queued", Some("the node chosen is gone".into())),
        };
        // Where it went, and the node it was moved from (the strategy's choice).
        let (placed, left) = match round.dispatch.get(i) {
            Some(Dispatch::Migrated { to }) => (Some(*to), chosen),
            _ => (chosen, None),
        };
        let mut verdicts: Vec<NodeVerdict> = nodes
            .iter()
            .map(|&(t, ref seen)| {
                let mut reasons = reasons(seen, request);
                if Some(t) == left {
                    reasons.insert(0, crate::recovery::LEFT.to_owned());
                }
                let verdict = if Some(t) == placed {
                    "chosen"
                } else if reasons.is_empty() {
                    "offered"
                } else {
                    "filtered"
                };
                NodeVerdict {
                    node_uuid: seen.uuid.to_string(),
                    verdict: verdict.into(),
                    reasons,
                    active: seen.active,
                    available: seen.available.into(),
                }
            })
            .collect();
        let rank = |v: &NodeVerdict| match v.verdict.as_str() {
            "chosen" => 0,
            "offered" => 1,
            _ => 2,
        };
        verdicts.sort_by(|a, b| {
            rank(a)
                .cmp(&rank(b))
                .then_with(|| a.node_uuid.cmp(&b.node_uuid))
        });
        let plugin = round.decider.plugin.as_ref();
        Some(Self {
            execution_id: id.to_owned(),
            round: round.no,
            at_ms: round.at_ms,
            outcome: outcome.into(),
            node_uuid: placed.and_then(node).map(|s| s.uuid.to_string()),
            reason,
            queue_position: i,
            batch: round.seqs.len(),
            waited_ms: *round.waited_ms.get(i)?,
            strategy: plugin.map(|p| p.name.clone()),
            strategy_version: plugin.map(|p| p.version.clone()),
            strategy_form: plugin.map(|p| p.form.as_str().to_owned()),
            fallback: round.decider.fallback.is_some(),
            fallback_reason: round.decider.fallback.clone(),
            nodes: verdicts,
        })
    }
}
