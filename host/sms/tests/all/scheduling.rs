//! Scheduling end to end: a real `sms` process and fake Spearlets speaking its gRPC API.

use crate::common;

use std::time::{Duration, Instant};

use common::Sandbox;
use common::fake_node::{Behaviour, FakeNode};
use serde_json::{Value, json};

async fn submit(c: &reqwest::Client, sms: &common::Sms, body: Value) -> Value {
    let (status, answer) = common::post_json(c, sms, "/api/v1/executions", &body).await;
    assert_eq!(status, reqwest::StatusCode::CREATED, "{body}: {answer}");
    answer
}

use common::{state_of, wait_state};

fn wasm(name: &str) -> Value {
    json!({"type": "wasm", "uri": "file:///tmp/x.wasm", "name": name})
}

#[tokio::test]
async fn an_execution_is_placed_run_and_reported() {
    let sb = Sandbox::new("[scheduler]\nstrategy = \"least-connections\"\n");
    let sms = sb.start(&[]);
    let c = reqwest::Client::new();
    let node = FakeNode::start(
        &sms.grpc_url(),
        &["wasm"],
        4000,
        Behaviour::Run {
            hold: Duration::ZERO,
        },
    )
    .await;
    let e = submit(&c, &sms, json!({"executable": wasm("hello")})).await;
    let id = e["execution_id"].as_str().unwrap();
    let done = wait_state(&c, &sms, id, "succeeded").await;
    assert_eq!(done["node_uuid"], node.uuid.as_str());
    assert_eq!(done["attempt"], 1);
    assert_eq!(done["result"]["stdout"], "done\n");
    assert_eq!(node.received(), vec![id.to_owned()]);
    let listed: Value = c
        .get(sms.url("/api/v1/executions?state=succeeded"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["executions"].as_array().unwrap().len(), 1);
    node.task.abort();
}

#[tokio::test]
async fn dependencies_order_work_and_a_failed_dependency_fails_its_dependents() {
    let sb = Sandbox::new("");
    let sms = sb.start(&[]);
    let c = reqwest::Client::new();
    let a = submit(&c, &sms, json!({"executable": wasm("a")})).await;
    let a_id = a["execution_id"].as_str().unwrap().to_owned();
    let b = submit(
        &c,
        &sms,
        json!({"executable": wasm("b"), "depends_on": [a_id]}),
    )
    .await;
    let b_id = b["execution_id"].as_str().unwrap().to_owned();
    assert_eq!(b["state"], "pending");
    let bad = c
        .post(sms.url("/api/v1/executions"))
        .json(&json!({"executable": wasm("c"), "depends_on": ["nope"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), reqwest::StatusCode::BAD_REQUEST);
    assert_eq!(
        bad.json::<Value>().await.unwrap()["error"]["field"],
        "depends_on"
    );

    let node = FakeNode::start(
        &sms.grpc_url(),
        &["wasm"],
        4000,
        Behaviour::Run {
            hold: Duration::from_millis(100),
        },
    )
    .await;
    wait_state(&c, &sms, &b_id, "succeeded").await;
    assert_eq!(
        node.received(),
        vec![a_id.clone(), b_id.clone()],
        "b ran after a"
    );

    // A dependency that is cancelled fails its dependents.
    let x = submit(
        &c,
        &sms,
        json!({"executable": {"type": "process", "name": "/bin/true"}}),
    )
    .await;
    let x_id = x["execution_id"].as_str().unwrap().to_owned();
    let y = submit(
        &c,
        &sms,
        json!({"executable": wasm("y"), "depends_on": [x_id]}),
    )
    .await;
    c.post(sms.url(&format!("/api/v1/executions/{x_id}/cancel")))
        .send()
        .await
        .unwrap();
    let failed = wait_state(&c, &sms, y["execution_id"].as_str().unwrap(), "failed").await;
    assert!(
        failed["error"]
            .as_str()
            .unwrap()
            .contains("did not succeed"),
        "{failed}"
    );
    node.task.abort();
}

#[tokio::test]
async fn the_queue_is_ordered_by_priority() {
    let sb = Sandbox::new("");
    let sms = sb.start(&[]);
    let c = reqwest::Client::new();
    // One execution fits the node at a time.
    let needs = json!({"cpu_millis": 1000, "memory_mb": 1, "disk_mb": 0});
    let mut ids = Vec::new();
    for p in ["low", "normal", "urgent", "high"] {
        let e = submit(
            &c,
            &sms,
            json!({"executable": wasm(p), "priority": p, "needs": needs}),
        )
        .await;
        ids.push(e["execution_id"].as_str().unwrap().to_owned());
    }
    let node = FakeNode::start(
        &sms.grpc_url(),
        &["wasm"],
        1000,
        Behaviour::Run {
            hold: Duration::from_millis(50),
        },
    )
    .await;
    wait_state(&c, &sms, &ids[0], "succeeded").await;
    assert_eq!(
        node.received(),
        vec![
            ids[2].clone(),
            ids[3].clone(),
            ids[1].clone(),
            ids[0].clone()
        ]
    );
    node.task.abort();
}

#[tokio::test]
async fn work_on_a_lost_node_is_rescheduled_on_another() {
    let sb = Sandbox::new("heartbeat_timeout = 1\ncleanup_interval = 60\n");
    let sms = sb.start(&[]);
    let c = reqwest::Client::new();
    let lost = FakeNode::start(&sms.grpc_url(), &["wasm"], 4000, Behaviour::Silent).await;
    let e = submit(
        &c,
        &sms,
        json!({"executable": wasm("survivor"), "timeout_ms": 0}),
    )
    .await;
    let id = e["execution_id"].as_str().unwrap().to_owned();
    wait_state(&c, &sms, &id, "assigned").await;
    let start = Instant::now();
    while lost.received().is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the assignment never arrived"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(lost.received(), vec![id.clone()]);
    // The node dies: its stream closes and its heartbeats stop.
    lost.task.abort();
    let good = FakeNode::start(
        &sms.grpc_url(),
        &["wasm"],
        4000,
        Behaviour::Run {
            hold: Duration::ZERO,
        },
    )
    .await;
    let done = wait_state(&c, &sms, &id, "succeeded").await;
    assert_eq!(done["node_uuid"], good.uuid.as_str());
    // A lost node does not use up an attempt: the second placement is attempt 2 (attempt ids
    // are never reused), the first counted as requeued, not spent.
    assert_eq!(done["attempt"], 2, "{done}");
    assert_eq!(
        done["requeued"], 1,
        "a lost node does not use up an attempt: {done}"
    );
    let node: Value = c
        .get(sms.url(&format!("/api/v1/nodes/{}", lost.uuid)))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(node["status"], "unhealthy");
    good.task.abort();
}

#[tokio::test]
async fn huge_timeouts_mean_never_and_do_not_stop_scheduling() {
    let sb = Sandbox::new("");
    let sms = sb.start(&[]);
    let c = reqwest::Client::new();
    let node = FakeNode::start(&sms.grpc_url(), &["wasm"], 4000, Behaviour::Silent).await;
    // These overflowed `timeout_ms + grace` in the scheduler (a panic in a debug build, "timed
    // out" at once in a release build); now they are refused at submit, naming the field.
    for timeout in [i64::MAX as u64, u64::MAX] {
        let body = json!({"executable": wasm("long"), "timeout_ms": timeout});
        let (status, answer) = common::post_json(&c, &sms, "/api/v1/executions", &body).await;
        assert_eq!(status, reqwest::StatusCode::BAD_REQUEST);
        assert_eq!(answer["error"]["field"], "timeout_ms", "{answer}");
    }
    // The largest accepted (7 days) is placed and does not fire.
    let mut huge = Vec::new();
    let e = submit(
        &c,
        &sms,
        json!({"executable": wasm("long"), "timeout_ms": 604_800_000u64, "max_attempts": 1}),
    )
    .await;
    huge.push(e["execution_id"].as_str().unwrap().to_owned());
    // Scheduling goes on: a later execution is placed.
    let later = submit(&c, &sms, json!({"executable": wasm("later")})).await;
    let later = later["execution_id"].as_str().unwrap().to_owned();
    wait_state(&c, &sms, &later, "assigned").await;
    // And the huge timeouts do not fire (the scheduler looks at timeouts every 20 ms).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for id in &huge {
        let e = state_of(&c, &sms, id).await;
        assert_eq!(e["state"], "assigned", "{e}");
    }
    node.task.abort();
}

#[tokio::test]
async fn an_attempt_past_its_timeout_is_cancelled_and_retried_until_attempts_run_out() {
    let sb = Sandbox::new("");
    let sms = sb.start(&[]);
    let c = reqwest::Client::new();
    let node = FakeNode::start(&sms.grpc_url(), &["wasm"], 4000, Behaviour::Hang).await;
    let e = submit(
        &c,
        &sms,
        json!({"executable": wasm("slow"), "timeout_ms": 100, "max_attempts": 2}),
    )
    .await;
    let id = e["execution_id"].as_str().unwrap().to_owned();
    let done = wait_state(&c, &sms, &id, "timed_out").await;
    assert_eq!(done["attempt"], 2);
    assert!(done["started_at_ms"].as_i64().unwrap() > 0, "{done}");
    let got = node.received();
    assert_eq!(got.iter().filter(|r| **r == id).count(), 2, "{got:?}");
    assert_eq!(
        got.iter().filter(|r| r.starts_with("cancel:")).count(),
        2,
        "{got:?}"
    );
    node.task.abort();
}

#[tokio::test]
async fn an_assignment_that_never_starts_is_bounded_by_its_queue_timeout_not_its_timeout() {
    let sb = Sandbox::new("");
    let sms = sb.start(&[]);
    let c = reqwest::Client::new();
    // Takes the assignment and never starts it (as a node whose slots are all busy).
    let node = FakeNode::start(&sms.grpc_url(), &["wasm"], 4000, Behaviour::Silent).await;
    let waits = submit(
        &c,
        &sms,
        json!({"executable": wasm("w"), "timeout_ms": 100}),
    )
    .await;
    let bounded = submit(
        &c,
        &sms,
        json!({"executable": wasm("b"), "timeout_ms": 100, "queue_timeout_ms": 1500}),
    )
    .await;
    let bounded_id = bounded["execution_id"].as_str().unwrap();
    let done = wait_state(&c, &sms, bounded_id, "timed_out").await;
    assert_eq!(
        done["attempt"], 1,
        "no retry: waiting longer would not help"
    );
    assert!(
        done["error"].as_str().unwrap().contains("queue timeout"),
        "{done}"
    );
    // Well past its timeout and the grace (100 ms + 2 s) since it was assigned.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let waits_id = waits["execution_id"].as_str().unwrap();
    let still = state_of(&c, &sms, waits_id).await;
    assert_eq!(
        still["state"], "assigned",
        "its timeout has not started: {still}"
    );
    let got = node.received();
    assert!(got.contains(&format!("cancel:{bounded_id}")), "{got:?}");
    assert!(!got.contains(&format!("cancel:{waits_id}")), "{got:?}");
    node.task.abort();
}

#[tokio::test]
async fn cancel_and_capabilities() {
    let sb = Sandbox::new("");
    let sms = sb.start(&[]);
    let c = reqwest::Client::new();
    // Only a process node: a wasm execution waits.
    let proc_node = FakeNode::start(
        &sms.grpc_url(),
        &["process"],
        4000,
        Behaviour::Run {
            hold: Duration::ZERO,
        },
    )
    .await;
    let w = submit(&c, &sms, json!({"executable": wasm("w")})).await;
    let w_id = w["execution_id"].as_str().unwrap().to_owned();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(state_of(&c, &sms, &w_id).await["state"], "ready");
    assert!(proc_node.received().is_empty());
    let wasm_node = FakeNode::start(
        &sms.grpc_url(),
        &["wasm"],
        4000,
        Behaviour::Run {
            hold: Duration::ZERO,
        },
    )
    .await;
    let done = wait_state(&c, &sms, &w_id, "succeeded").await;
    assert_eq!(done["node_uuid"], wasm_node.uuid.as_str());

    let x = submit(
        &c,
        &sms,
        json!({"executable": {"type": "container", "name": "busybox"}}),
    )
    .await;
    let x_id = x["execution_id"].as_str().unwrap();
    let r = c
        .post(sms.url(&format!("/api/v1/executions/{x_id}/cancel")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["state"], "cancelled");
    let again = c
        .post(sms.url(&format!("/api/v1/executions/{x_id}/cancel")))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), reqwest::StatusCode::CONFLICT);
    proc_node.task.abort();
    wasm_node.task.abort();
}

#[tokio::test]
async fn a_strategy_swap_under_a_stream_of_submissions_fails_no_placement() {
    let sb = Sandbox::new("[scheduler]\nstrategy = \"least-connections\"\n");
    let sms = sb.start(&[]);
    let c = reqwest::Client::new();
    let nodes = [
        FakeNode::start(
            &sms.grpc_url(),
            &["wasm"],
            64_000,
            Behaviour::Run {
                hold: Duration::ZERO,
            },
        )
        .await,
        FakeNode::start(
            &sms.grpc_url(),
            &["wasm"],
            64_000,
            Behaviour::Run {
                hold: Duration::ZERO,
            },
        )
        .await,
    ];
    let mut ids = Vec::new();
    for i in 0..120 {
        let e = submit(&c, &sms, json!({"executable": wasm("s")})).await;
        ids.push(e["execution_id"].as_str().unwrap().to_owned());
        if i % 30 == 15 {
            let strategy = if (i / 30) % 2 == 0 {
                "round-robin"
            } else {
                "least-connections"
            };
            sb.write_config(&format!("[scheduler]\nstrategy = \"{strategy}\"\n"));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for id in &ids {
        wait_state(&c, &sms, id, "succeeded").await;
    }
    let history: Value = c
        .get(sms.url("/api/v1/plugins/history"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let swaps = history["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "activated")
        .count();
    assert!(swaps >= 4, "the strategy was swapped: {swaps}");
    let metrics = common::get_text(&c, &sms, "/metrics").await;
    assert!(
        !metrics.contains("spear_plugin_fallback_decisions_total{role=\"scheduler\"}"),
        "{metrics}"
    );
    assert!(
        !metrics.contains("spear_plugin_failures_total{"),
        "{metrics}"
    );
    let total: usize = nodes.iter().map(|n| n.received().len()).sum();
    assert_eq!(total, 120);
    for n in nodes {
        n.task.abort();
    }
}
