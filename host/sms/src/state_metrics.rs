//! SMS's own state on `/metrics`, read from its tables when scraped (O(states + nodes), not
//! O(executions): the execution counts are an index the table keeps).

use std::fmt::Write;

use crate::model::NodeStatus;
use crate::service::Sms;

/// Every execution state, as `/metrics` labels it.
const STATES: [&str; 8] = [
    "pending",
    "ready",
    "assigned",
    "running",
    "succeeded",
    "failed",
    "cancelled",
    "timed_out",
];

/// Every node status.
const NODE_STATUSES: [NodeStatus; 4] = [
    NodeStatus::Active,
    NodeStatus::Unhealthy,
    NodeStatus::Draining,
    NodeStatus::Inactive,
];

impl Sms {
    /// `sms_executions{state}`, `sms_ready_queue_depth` and `sms_nodes{status}` in the
    /// Prometheus text format.
    pub async fn state_metrics(&self) -> String {
        let counts = self.executions.read().await.counts().clone();
        let mut nodes = [0u64; NODE_STATUSES.len()];
        for n in self.nodes.read().await.values() {
            if let Some(i) = NODE_STATUSES.iter().position(|s| *s == n.status) {
                nodes[i] += 1;
            }
        }
        let mut out = String::new();
        let count = |s: &str| counts.get(s).copied().unwrap_or(0);
        out.push_str("# HELP sms_executions Executions SMS holds, by state.\n");
        out.push_str("# TYPE sms_executions gauge\n");
        for s in STATES {
            let _ = writeln!(out, "sms_executions{{state=\"{s}\"}} {}", count(s));
        }
        out.push_str("# HELP sms_ready_queue_depth Executions ready and waiting for a node.\n");
        out.push_str("# TYPE sms_ready_queue_depth gauge\n");
        let _ = writeln!(out, "sms_ready_queue_depth {}", count("ready"));
        out.push_str("# HELP sms_nodes Registered nodes, by status.\n");
        out.push_str("# TYPE sms_nodes gauge\n");
        for (s, n) in NODE_STATUSES.iter().zip(nodes) {
            let _ = writeln!(out, "sms_nodes{{status=\"{}\"}} {n}", s.as_str());
        }
        out
    }
}
