//! Races between a node's reports and SMS's own housekeeping, through a real `sms` process and a
//! node speaking gRPC from this test.

use crate::common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::Sandbox;
use serde_json::json;
use spear_proto::v1;
use tokio_stream::StreamExt;

/// SMS declares an attempt timed out this long after its start (timeout + the 2 s grace).
const DEADLINE: Duration = Duration::from_millis(100 + 2000);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_acknowledged_at_the_deadline_is_never_overwritten_by_the_timeout() {
    let sb = Sandbox::new("");
    let sms = sb.start(&[]);
    let uuid = common::register_wasm_node(&sms, 1000).await;
    let (execs, mut stream) = common::open_assignments(&sms, &uuid).await;
    // Each execution: started at once, its result reported right at SMS's deadline (spread over
    // 80 ms around it), and whether SMS acknowledged that result.
    let acknowledged: Arc<Mutex<Vec<(String, bool)>>> = Arc::default();
    let total = 150;
    let node_task = {
        let acknowledged = acknowledged.clone();
        tokio::spawn(async move {
            let mut n = 0u64;
            while let Some(Ok(a)) = stream.next().await {
                if a.cancel {
                    continue;
                }
                let e = a.execution.unwrap();
                let (mut execs, acknowledged, uuid) =
                    (execs.clone(), acknowledged.clone(), uuid.clone());
                let skew = Duration::from_millis(n % 81);
                n += 1;
                tokio::spawn(async move {
                    execs
                        .report_state(v1::ReportStateRequest {
                            session: a.session.clone(),
                            node_uuid: uuid.clone(),
                            execution_id: e.execution_id.clone(),
                            state: "running".into(),
                        })
                        .await
                        .unwrap();
                    tokio::time::sleep(DEADLINE - Duration::from_millis(40) + skew).await;
                    let ok = execs
                        .report_result(v1::ReportResultRequest {
                            session: a.session,
                            node_uuid: uuid,
                            execution_id: e.execution_id.clone(),
                            success: true,
                            result: Some(v1::ExecutionResult::default()),
                            error: String::new(),
                            attempt: 0,
                        })
                        .await
                        .is_ok();
                    acknowledged.lock().unwrap().push((e.execution_id, ok));
                });
            }
        })
    };
    let c = reqwest::Client::new();
    for _ in 0..total {
        let (status, _) = common::post_json(
            &c,
            &sms,
            "/api/v1/executions",
            &json!({"executable": {"type": "wasm", "uri": "file:///x.wasm"},
                "timeout_ms": 100, "max_attempts": 1}),
        )
        .await;
        assert_eq!(status, 201);
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while acknowledged.lock().unwrap().len() < total {
        assert!(tokio::time::Instant::now() < deadline, "reports missing");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Housekeeping runs every 20 ms: let it look at every execution again.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let reports = acknowledged.lock().unwrap().clone();
    let mut late = 0;
    for (id, ok) in &reports {
        let e = common::get_json(&c, &sms, &format!("/api/v1/executions/{id}")).await;
        if *ok {
            assert_eq!(
                e["state"], "succeeded",
                "an acknowledged result was lost: {e}"
            );
        } else {
            late += 1;
            assert_eq!(e["state"], "timed_out", "{e}");
        }
    }
    // Both sides of the deadline were exercised.
    assert!(late > 0 && late < total, "{late} of {total} came too late");
    node_task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_report_of_an_earlier_attempt_is_refused_and_a_resent_one_taken_once() {
    let sb = Sandbox::new("");
    let sms = sb.start(&[]);
    let uuid = common::register_wasm_node(&sms, 4).await;
    let (mut execs, mut stream) = common::open_assignments(&sms, &uuid).await;
    let c = reqwest::Client::new();
    let (status, e) = common::post_json(
        &c,
        &sms,
        "/api/v1/executions",
        &json!({"executable": {"type": "wasm", "uri": "file:///x.wasm"}, "max_attempts": 3}),
    )
    .await;
    assert_eq!(status, 201, "{e}");
    let id = e["execution_id"].as_str().unwrap().to_owned();
    let mut next = async || {
        let a = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .expect("an assignment")
            .unwrap()
            .unwrap();
        (a.session, a.execution.unwrap().attempt)
    };
    let report = |session: &str, attempt: u32, success: bool| v1::ReportResultRequest {
        session: session.to_owned(),
        node_uuid: uuid.clone(),
        execution_id: id.clone(),
        success,
        result: Some(v1::ExecutionResult::default()),
        error: if success {
            String::new()
        } else {
            "boom".into()
        },
        attempt,
    };

    // Attempt 1 fails; the retry comes back to this node as attempt 2.
    let (session, first) = next().await;
    assert_eq!(first, 1);
    execs
        .report_result(report(&session, 1, false))
        .await
        .unwrap();
    let (session, second) = next().await;
    assert_eq!(second, 2);

    // Attempt 1's report again (late, or re-sent): not taken for attempt 2.
    let stale = execs
        .report_result(report(&session, 1, false))
        .await
        .unwrap_err();
    assert_eq!(stale.code(), tonic::Code::FailedPrecondition, "{stale:?}");
    assert!(stale.message().contains("attempt 1"), "{}", stale.message());
    let exec = common::get_json(&c, &sms, &format!("/api/v1/executions/{id}")).await;
    assert_eq!(exec["state"], "assigned", "{exec}");
    assert_eq!(exec["attempt"], 2, "{exec}");

    // Attempt 2 succeeds; its report sent again (its answer lost) is acknowledged, not taken
    // a second time.
    execs
        .report_result(report(&session, 2, true))
        .await
        .unwrap();
    execs
        .report_result(report(&session, 2, true))
        .await
        .unwrap();
    let exec = common::get_json(&c, &sms, &format!("/api/v1/executions/{id}")).await;
    assert_eq!(exec["state"], "succeeded", "{exec}");
    let ends = common::events(&c, &sms)
        .await
        .into_iter()
        .filter(|e| e["subject"] == id.as_str() && e["kind"] == "execution.succeeded")
        .count();
    assert_eq!(ends, 1);
}

/// Changes of one node or task record serialize on that record (no global lock): concurrent
/// updates of a node leave memory and storage agreeing on the last one, concurrent deletes of a
/// task remove it once, with one event, and changes of other records meanwhile all apply.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_changes_of_one_record_apply_in_one_order_in_memory_and_storage() {
    let sb = Sandbox::new("");
    let sms = sb.start(&[]);
    let c = reqwest::Client::new();
    let mut nodes = Vec::new();
    for _ in 0..3 {
        nodes.push(common::register_wasm_node(&sms, 1).await);
    }
    let task = common::post_json(
        &c,
        &sms,
        "/api/v1/tasks",
        &json!({"name": "once", "executable": {"type": "wasm", "uri": "file:///once.wasm"}}),
    )
    .await
    .1["task_id"]
        .as_str()
        .unwrap()
        .to_owned();

    let mut calls = tokio::task::JoinSet::new();
    for i in 0..30 {
        let (c, node) = (c.clone(), nodes[i % 3].clone());
        let url = sms.url(&format!("/api/v1/nodes/{node}"));
        calls.spawn(async move {
            let r = c
                .put(url)
                .json(&json!({"labels": {"n": i.to_string()}}))
                .send()
                .await
                .unwrap();
            ("update", r.status().as_u16())
        });
    }
    for _ in 0..10 {
        let (c, url) = (c.clone(), sms.url(&format!("/api/v1/tasks/{task}")));
        calls.spawn(async move {
            (
                "delete",
                c.delete(url).send().await.unwrap().status().as_u16(),
            )
        });
    }
    let (mut updated, mut deleted, mut missing) = (0, 0, 0);
    while let Some(r) = calls.join_next().await {
        match r.unwrap() {
            ("update", 200) => updated += 1,
            ("delete", s) if s < 300 => deleted += 1,
            ("delete", 404) => missing += 1,
            other => panic!("{other:?}"),
        }
    }
    assert_eq!((updated, deleted, missing), (30, 1, 9));
    let removed = common::events(&c, &sms)
        .await
        .into_iter()
        .filter(|e| e["kind"] == "task.deleted" && e["subject"] == task.as_str())
        .count();
    assert_eq!(removed, 1, "one delete, one event");

    // What memory says now is what storage holds: an SMS started again on it says the same.
    let mut labels = Vec::new();
    for node in &nodes {
        let n = common::get_json(&c, &sms, &format!("/api/v1/nodes/{node}")).await;
        labels.push(n["labels"].clone());
    }
    assert!(sms.terminate().success());
    let sms = sb.start(&[]);
    for (node, before) in nodes.iter().zip(labels) {
        let n = common::get_json(&c, &sms, &format!("/api/v1/nodes/{node}")).await;
        assert_eq!(n["labels"], before, "node {node}");
    }
}
