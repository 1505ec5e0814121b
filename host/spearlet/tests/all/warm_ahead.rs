//! Instances started ahead at SMS's word (docs/functions.md, "Instances kept and started ahead"):
//! a task registered with `spear.min_instances` is warmed on the connected nodes that can run it
//! before any invocation, a node that connects later is told of it too, and a node without the
//! task's required labels is not. (Which tasks ask, by their metadata and status, is tested in
//! `spear_sms::warms`.)

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use spear_tests::guest;

use crate::common::{Cluster, Spearlet, instances, register};

const LONG: Duration = Duration::from_secs(60);

/// Wait until `node` holds `n` Ready instances of `task`.
async fn ready(node: &Spearlet, task: &str, n: usize) {
    let until = Instant::now() + LONG;
    loop {
        let now = instances(node, task).await;
        if now.len() == n && now.iter().all(|i| i["state"] == "ready") {
            return;
        }
        assert!(
            Instant::now() < until,
            "node {} never held {n} Ready instances of {task}: {now:?}\n{}",
            node.node,
            node.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `node`'s warm-up figures once every warm-up it was asked for has run.
async fn ahead(node: &Spearlet) -> Value {
    let until = Instant::now() + LONG;
    loop {
        let a = node.get("/api/v1/status").await["ahead"].clone();
        let ran = ["done", "failed", "dropped"].map(|k| a[k].as_u64().unwrap());
        if a["asked"].as_u64().unwrap() == ran.iter().sum::<u64>() {
            return a;
        }
        assert!(Instant::now() < until, "warm-ups never ran: {a}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_task_with_a_minimum_is_warmed_on_the_nodes_that_can_run_it_before_any_invocation() {
    let c = Cluster::new();
    let sms = c.sms();
    let a = c.spearlet("a", &sms, "[spearlet.labels]\nzone = \"a\"\n");
    let b = c.spearlet("b", &sms, "[spearlet.labels]\nzone = \"b\"\n");
    for n in [&a, &b] {
        sms.node_status(&n.node, "active", LONG).await;
    }
    let bytes = std::fs::read(guest("component", "function-counter.wasm")).unwrap();
    let meta = sms.upload("function-counter.wasm", bytes).await;
    let task = |zone: &str, min: &str| {
        json!({"name": format!("in-{zone}"), "metadata": {"spear.min_instances": min},
               "required_labels": {"zone": zone},
               "executable": {"type": "wasm", "uri": meta["uri"]}})
    };

    // Registered: node a (zone a) starts two instances with no invocation; node b does not.
    let in_a = register(&sms, task("a", "2")).await;
    ready(&a, &in_a, 2).await;
    // b is told of tasks in the order they are registered: once it holds the task registered
    // next, it would have been told of the first, had it been.
    let in_b = register(&sms, task("b", "1")).await;
    ready(&b, &in_b, 1).await;
    let told = ahead(&b).await;
    assert_eq!(
        (&told["asked"], &told["done"]),
        (&json!(1), &json!(1)),
        "{told}"
    );
    assert!(instances(&b, &in_a).await.is_empty());
    assert!(instances(&a, &in_b).await.is_empty());
    let status = a.get("/api/v1/status").await;
    assert_eq!(status["pools"]["warmed"], 2, "{status}");
    assert_eq!(status["pools"]["cold"], 0, "{status}");

    // The first invocation finds them: not cold, and no third instance.
    let (code, answer) = sms
        .post(
            &format!("/api/v1/tasks/{in_a}/invoke"),
            json!({"function": "count"}),
        )
        .await;
    assert_eq!(code, 200, "{answer}");
    assert_eq!(answer["node_uuid"], a.node.as_str());
    assert_ne!(answer["tier"], "cold", "{answer}");
    assert_eq!(instances(&a, &in_a).await.len(), 2);

    // A node that connects later is told of the tasks it can run.
    let late = c.spearlet("late", &sms, "[spearlet.labels]\nzone = \"a\"\n");
    ready(&late, &in_a, 2).await;
    let told = ahead(&late).await;
    assert_eq!(
        (&told["asked"], &told["done"]),
        (&json!(1), &json!(1)),
        "{told}"
    );
    assert!(instances(&late, &in_b).await.is_empty());
}
