//! Scheduling end to end: a real `sms` process and fake Spearlets speaking its gRPC API.

use crate::common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::Sandbox;
use serde_json::{Value, json};
use spear_proto::v1;
use tokio_stream::StreamExt;

/// How a fake Spearlet treats assignments.
#[derive(Clone, Copy, PartialEq)]
enum Behaviour {
    /// Report running, hold for `hold`, report success, heartbeat its full capacity back.
    Run { hold: Duration },
    /// Report running, then never finish (a hung workload on a live node).
    Hang,
    /// Accept and never answer.
    Silent,
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

struct FakeNode {
    uuid: String,
    /// Execution ids received, in order (cancels prefixed with `cancel:`).
    received: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeNode {
    async fn start(grpc: &str, executors: &[&str], cpu: u64, behaviour: Behaviour) -> Self {
        let mut nodes = v1::node_service_client::NodeServiceClient::connect(grpc.to_owned())
            .await
            .unwrap();
        let capacity = v1::Resources {
            cpu_millis: cpu,
            memory_mb: 4096,
            disk_mb: 0,
        };
        let node = nodes
            .register_node(v1::RegisterNodeRequest {
                ip_address: "127.0.0.1".into(),
                port: 9000,
                capacity: Some(capacity),
                executors: executors.iter().map(|e| e.to_string()).collect(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let uuid = node.uuid.clone();
        let mut execs =
            v1::execution_service_client::ExecutionServiceClient::connect(grpc.to_owned())
                .await
                .unwrap();
        let mut stream = execs
            .assignments(v1::AssignmentsRequest {
                node_uuid: uuid.clone(),
                after: 0,
            })
            .await
            .unwrap()
            .into_inner();
        let received = Arc::new(Mutex::new(Vec::new()));
        let (seen, id) = (received.clone(), uuid.clone());
        // A live node heartbeats; a silent one (a dead machine) does not.
        let heartbeats = (behaviour != Behaviour::Silent).then(|| {
            let (mut nodes, id) = (nodes.clone(), uuid.clone());
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_millis(250)).await;
                    let _ = nodes
                        .heartbeat(v1::HeartbeatRequest {
                            uuid: id.clone(),
                            ..Default::default()
                        })
                        .await;
                }
            })
        });
        let task = tokio::spawn(async move {
            let _heartbeats = heartbeats.map(AbortOnDrop);
            while let Some(Ok(a)) = stream.next().await {
                let e = a.execution.unwrap();
                if a.cancel {
                    seen.lock()
                        .unwrap()
                        .push(format!("cancel:{}", e.execution_id));
                    continue;
                }
                seen.lock().unwrap().push(e.execution_id.clone());
                if behaviour == Behaviour::Silent {
                    continue;
                }
                execs
                    .report_state(v1::ReportStateRequest {
                        session: a.session.clone(),
                        node_uuid: id.clone(),
                        execution_id: e.execution_id.clone(),
                        state: "running".into(),
                        attempt: e.attempt,
                    })
                    .await
                    .unwrap();
                let Behaviour::Run { hold } = behaviour else {
                    continue;
                };
                tokio::time::sleep(hold).await;
                execs
                    .report_result(v1::ReportResultRequest {
                        session: a.session,
                        node_uuid: id.clone(),
                        execution_id: e.execution_id,
                        success: true,
                        result: Some(v1::ExecutionResult {
                            stdout: b"done\n".to_vec(),
                            ..Default::default()
                        }),
                        error: String::new(),
                        attempt: 0,
                    })
                    .await
                    .unwrap();
                nodes
                    .heartbeat(v1::HeartbeatRequest {
                        uuid: id.clone(),
                        available: Some(capacity),
                        ..Default::default()
                    })
                    .await
                    .unwrap();
            }
        });
        FakeNode {
            uuid,
            received,
            task,
        }
    }

    fn received(&self) -> Vec<String> {
        self.received.lock().unwrap().clone()
    }
}

async fn submit(c: &reqwest::Client, sms: &common::Sms, body: Value) -> Value {
    let (status, answer) = common::post_json(c, sms, "/api/v1/executions", &body).await;
    assert_eq!(status, reqwest::StatusCode::CREATED, "{body}: {answer}");
    answer
}

async fn state_of(c: &reqwest::Client, sms: &common::Sms, id: &str) -> Value {
    common::get_json(c, sms, &format!("/api/v1/executions/{id}")).await
}

async fn wait_state(c: &reqwest::Client, sms: &common::Sms, id: &str, want: &str) -> Value {
    let start = Instant::now();
    loop {
        let e = state_of(c, sms, id).await;
        if e["state"] == want {
            return e;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{id} never became {want}: {e}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

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
