//! Instances started ahead of invocations (docs/functions.md, "Instances kept and started
//! ahead"): a task whose metadata sets `spear.min_instances` is warmed on every connected node
//! that can run it as soon as it is registered, and a node whose assignment stream opens is told
//! of every such task it can run.
//!
//! A warm is a hint, sent only into room to spare: it never waits for a stream and never takes
//! an execution's place (a stream that opens has room for every execution placed on the node and
//! more than [`MAX_ON_CONNECT`] places besides; later, a warm is sent only while more than
//! [`MAX_ON_CONNECT`] places are free). A hint that is not sent costs nothing but a cold first invocation: the node
//! still starts its instances up to the minimum at an invocation that finds it below.

use spear_plugin_api::Label;
use spear_proto::v1;
use tokio::sync::mpsc;

use crate::model::{Node, NodeStatus, Task, TaskStatus};
use crate::nodes::{EXECUTOR_LABEL, to_target};
use crate::outbox::{OUTBOX_CAPACITY, Outgoing};
use crate::service::Sms;

/// The task metadata key that asks for instances kept on each node.
pub const MIN_INSTANCES: &str = "spear.min_instances";

/// Warms sent to a node when its stream opens, at most.
pub const MAX_ON_CONNECT: usize = OUTBOX_CAPACITY / 8;

/// Whether `task` asks for instances ahead: registered, with an executable, and a
/// `spear.min_instances` of at least 1 (the node checks the value against its own limits).
pub fn wants_warm(task: &Task) -> bool {
    task.status == TaskStatus::Registered
        && task.executable.is_some()
        && task
            .metadata
            .get(MIN_INSTANCES)
            .and_then(|v| v.parse::<u32>().ok())
            .is_some_and(|n| n >= 1)
}

/// Whether `node` can run `task`: it takes work (active, or unhealthy until its next
/// heartbeat; not draining or set aside), runs the task's executable type and carries every
/// label the task requires (the rules a placement follows, less the resources: an idle
/// instance books none).
pub fn can_run(node: &Node, task: &Task) -> bool {
    let Some(executable) = &task.executable else {
        return false;
    };
    if matches!(node.status, NodeStatus::Draining | NodeStatus::Inactive) {
        return false;
    }
    let target = to_target(0, node, true);
    target.has_label(&Label::new(
        format!("{EXECUTOR_LABEL}{}", executable.kind),
        "true",
    )) && task
        .required_labels
        .iter()
        .all(|(k, v)| target.has_label(&Label::new(k.clone(), v.clone())))
}

fn warm(task: &Task) -> v1::Warm {
    v1::Warm {
        task_id: task.task_id.clone(),
    }
}

impl Sms {
    /// Tell every connected node that can run `task` to start its instances ahead, if it asks
    /// for them (called once the task is registered).
    pub(crate) async fn warm_task(&self, task: &Task) {
        if !wants_warm(task) {
            return;
        }
        let eligible: Vec<String> = self
            .nodes
            .read()
            .await
            .values()
            .filter(|n| can_run(n, task))
            .map(|n| n.uuid.clone())
            .collect();
        let outboxes = self.outboxes.lock().await;
        for uuid in eligible {
            let Some(outbox) = outboxes.boxes.get(&uuid) else {
                continue;
            };
            // Only into room to spare: a warm never takes an execution's place.
            if outbox.tx.capacity() <= MAX_ON_CONNECT
                || outbox
                    .tx
                    .try_send(Box::new(Outgoing::Warm(warm(task))))
                    .is_err()
            {
                tracing::info!(task = %task.task_id, node = %uuid,
                    "warm not sent: the node's stream is full or closed (its first invocation starts them)");
            }
        }
    }

    /// The warms for node `node` whose stream opens: every task it can run that asks for
    /// instances ahead, at most [`MAX_ON_CONNECT`].
    pub(crate) async fn warms_for(&self, node: &Node) -> Vec<v1::Warm> {
        let tasks = self.tasks.read().await;
        let mut wanted = tasks.values().filter(|t| wants_warm(t) && can_run(node, t));
        let warms: Vec<v1::Warm> = wanted.by_ref().take(MAX_ON_CONNECT).map(warm).collect();
        let left = wanted.count();
        if left > 0 {
            tracing::info!(node = %node.uuid, left,
                "more tasks ask for instances ahead than a connecting node is told of ({MAX_ON_CONNECT}); \
                 the others start theirs at their first invocation");
        }
        warms
    }
}

/// Queue `warms` on a stream that just opened, while there is room.
pub(crate) fn send_all(tx: &mpsc::Sender<Box<Outgoing>>, warms: Vec<v1::Warm>) {
    for w in warms {
        if tx.try_send(Box::new(Outgoing::Warm(w))).is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::tests_support::node;

    fn task(metadata: serde_json::Value, required: serde_json::Value) -> Task {
        serde_json::from_value(serde_json::json!({
            "task_id": "t", "name": "t", "description": "", "status": "registered",
            "priority": "normal", "node_uuid": null, "endpoint": "", "version": "",
            "capabilities": [], "executable": {"type": "wasm", "uri": "sms+file://x"},
            "metadata": metadata, "labels": {}, "needs": {"cpu_millis": 0, "memory_mb": 0, "disk_mb": 0},
            "required_labels": required, "preferred_labels": {}, "registered_at_ms": 0,
        }))
        .unwrap()
    }

    #[test]
    fn only_a_registered_task_with_an_executable_and_a_minimum_of_one_or_more_asks() {
        let none = serde_json::json!({});
        assert!(wants_warm(&task(
            serde_json::json!({MIN_INSTANCES: "2"}),
            none.clone()
        )));
        // As the node reads it: a whole number, nothing around it.
        for v in ["0", "", "x", "-1", "1.5", " 1 ", "99999999999"] {
            let t = task(serde_json::json!({MIN_INSTANCES: v}), none.clone());
            assert!(!wants_warm(&t), "{v}");
        }
        assert!(!wants_warm(&task(none.clone(), none.clone())));
        let mut gone = task(serde_json::json!({MIN_INSTANCES: "2"}), none.clone());
        gone.status = TaskStatus::Unregistered;
        assert!(!wants_warm(&gone));
        let mut bare = task(serde_json::json!({MIN_INSTANCES: "2"}), none);
        bare.executable = None;
        assert!(!wants_warm(&bare));
    }

    #[test]
    fn a_node_can_run_a_task_of_an_executor_it_has_with_every_label_it_requires() {
        let mut n = node("n");
        n.executors = vec!["wasm".into()];
        n.labels.insert("zone".into(), "a".into());
        let none = serde_json::json!({});
        assert!(can_run(&n, &task(none.clone(), none.clone())));
        assert!(can_run(
            &n,
            &task(none.clone(), serde_json::json!({"zone": "a"}))
        ));
        assert!(!can_run(
            &n,
            &task(none.clone(), serde_json::json!({"zone": "b"}))
        ));
        assert!(!can_run(
            &n,
            &task(none.clone(), serde_json::json!({"zone": "a", "gpu": "yes"}))
        ));
        for status in [NodeStatus::Draining, NodeStatus::Inactive] {
            let mut aside = n.clone();
            aside.status = status;
            assert!(!can_run(&aside, &task(none.clone(), none.clone())));
        }
        n.status = NodeStatus::Unhealthy;
        assert!(can_run(&n, &task(none.clone(), none.clone())));
        n.executors = vec!["process".into()];
        assert!(!can_run(&n, &task(none.clone(), none)));
    }
}
