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
                            attempt: e.attempt,
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
                            ..Default::default()
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
        ..Default::default()
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
    // Ten deletes at once: one unregisters the task, one removes it, the rest find none.
    assert_eq!((updated, deleted, missing), (30, 2, 8));
    let events = common::events(&c, &sms).await;
    let count = |kind: &str| {
        events
            .iter()
            .filter(|e| e["kind"] == kind && e["subject"] == task.as_str())
            .count()
    };
    assert_eq!(
        (count("task.unregistered"), count("task.deleted")),
        (1, 1),
        "one unregistration, one removal, one event each"
    );

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

/// Starts carry their attempt: a start told again is taken once, a stale one (of an earlier
/// attempt, from a node that does not hold it) is refused, and the start of an earlier attempt
/// that never ended, from the node that also holds the later one unstarted, is that run's: its
/// result is then taken too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_carries_its_attempt_taken_once_and_a_stale_one_refused() {
    let sb = Sandbox::new("");
    let sms = sb.start(&[]);
    let uuid = common::register_wasm_node(&sms, 4).await;
    let (mut execs, mut stream) = common::open_assignments(&sms, &uuid).await;
    let c = reqwest::Client::new();
    let body = json!({"executable": {"type": "wasm", "uri": "file:///x.wasm"}, "max_attempts": 3});
    let id = common::submit(&c, &sms, &body).await;
    let next = async |stream: &mut tonic::Streaming<v1::Assignment>| {
        let a = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .expect("an assignment")
            .unwrap()
            .unwrap();
        let e = a.execution.unwrap();
        (a.session, e.execution_id, e.attempt)
    };
    let start = |session: &str, id: &str, attempt: u32| v1::ReportStateRequest {
        session: session.to_owned(),
        node_uuid: uuid.clone(),
        execution_id: id.to_owned(),
        state: "running".into(),
        attempt,
    };
    let state = async |id: &str| {
        let e = common::get_json(&c, &sms, &format!("/api/v1/executions/{id}")).await;
        (
            e["state"].as_str().unwrap().to_owned(),
            e["started_attempt"].as_u64().unwrap(),
        )
    };

    let (session, _, first) = next(&mut stream).await;
    assert_eq!(first, 1);
    execs.report_state(start(&session, &id, 1)).await.unwrap();
    // Told again (its answer lost): acknowledged, taken once.
    execs.report_state(start(&session, &id, 1)).await.unwrap();
    assert_eq!(state(&id).await, ("running".into(), 1));
    let starts = common::events(&c, &sms)
        .await
        .into_iter()
        .filter(|e| e["subject"] == id.as_str() && e["kind"] == "execution.running")
        .count();
    assert_eq!(starts, 1);

    // Attempt 1 fails; attempt 2 comes to this node. A late start of attempt 1 is refused.
    execs
        .report_result(v1::ReportResultRequest {
            session: session.clone(),
            node_uuid: uuid.clone(),
            execution_id: id.clone(),
            error: "boom".into(),
            attempt: 1,
            ..Default::default()
        })
        .await
        .unwrap();
    let (session, _, second) = next(&mut stream).await;
    assert_eq!(second, 2);
    let stale = execs
        .report_state(start(&session, &id, 1))
        .await
        .unwrap_err();
    assert_eq!(stale.code(), tonic::Code::FailedPrecondition, "{stale:?}");
    assert!(stale.message().contains("attempt 1"), "{}", stale.message());
    assert_eq!(state(&id).await, ("assigned".into(), 1));
    // Attempt 2's start, in a batch.
    let batch = |running: Vec<String>, running_attempts: Vec<u32>| v1::ReportBatchRequest {
        session: session.clone(),
        node_uuid: uuid.clone(),
        running,
        running_attempts,
        results: vec![],
    };
    let answer = execs
        .report_batch(batch(vec![id.clone()], vec![2]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.running[0].code, 0, "{answer:?}");
    assert_eq!(state(&id).await, ("running".into(), 2));
    let extra = execs
        .report_batch(batch(vec![], vec![2]))
        .await
        .unwrap_err();
    assert_eq!(extra.code(), tonic::Code::InvalidArgument);
    assert!(extra.message().contains("running_attempts"), "{extra:?}");
    execs
        .report_result(v1::ReportResultRequest {
            session: session.clone(),
            node_uuid: uuid.clone(),
            execution_id: id.clone(),
            success: true,
            result: Some(v1::ExecutionResult::default()),
            attempt: 2,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(state(&id).await, ("succeeded".into(), 2));

    // Another execution's attempt 1 is placed here, then the node is removed (its work goes
    // back to the queue) and comes back under the same id: attempt 2 is placed here too. The
    // node ran attempt 1 all along: its start and result are that run's.
    let other = common::submit(&c, &sms, &body).await;
    let (_, placed, one) = next(&mut stream).await;
    assert_eq!((placed.as_str(), one), (other.as_str(), 1));
    let remove = async || {
        let removed = c
            .delete(sms.url(&format!("/api/v1/nodes/{uuid}")))
            .send()
            .await
            .unwrap();
        assert!(removed.status().is_success(), "{removed:?}");
        // Back in the queue before the node comes back (a node that is back keeps its work).
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while state(&other).await.0 != "ready" {
            assert!(std::time::Instant::now() < deadline, "never requeued");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    remove().await;
    v1::node_service_client::NodeServiceClient::connect(sms.grpc_url())
        .await
        .unwrap()
        .register_node(v1::RegisterNodeRequest {
            uuid: uuid.clone(),
            ip_address: "127.0.0.1".into(),
            port: 9000,
            capacity: Some(v1::Resources {
                cpu_millis: 1_000_000,
                memory_mb: 1 << 20,
                disk_mb: 0,
            }),
            executors: vec!["wasm".into()],
            slots: 4,
            ..Default::default()
        })
        .await
        .unwrap();
    let (_, mut stream) = common::open_assignments(&sms, &uuid).await;
    let (session, placed, two) = next(&mut stream).await;
    assert_eq!((placed.as_str(), two), (other.as_str(), 2));
    execs
        .report_state(start(&session, &other, 1))
        .await
        .unwrap();
    assert_eq!(state(&other).await, ("running".into(), 1));
    // The node is lost again while it runs attempt 1, which then ends there: its result is the
    // execution's.
    remove().await;
    execs
        .report_result(v1::ReportResultRequest {
            session,
            node_uuid: uuid.clone(),
            execution_id: other.clone(),
            success: true,
            result: Some(v1::ExecutionResult::default()),
            attempt: 1,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(state(&other).await.0, "succeeded");
}

/// Submits of a task racing its unregistration: each submit is either committed before the
/// unregistration (its event first in the log) or refused; none is accepted after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_submit_racing_an_unregistration_is_committed_before_it_or_refused() {
    let sb = Sandbox::new("");
    let sms = sb.start(&[]);
    let c = reqwest::Client::new();
    for round in 0..5 {
        let task = common::post_json(
            &c,
            &sms,
            "/api/v1/tasks",
            &json!({"name": format!("gate-{round}"), "executable": {"type": "wasm", "uri": "file:///g.wasm"}}),
        )
        .await
        .1["task_id"]
            .as_str()
            .unwrap()
            .to_owned();
        let mut calls = tokio::task::JoinSet::new();
        for i in 0..40 {
            let (c, url, task) = (c.clone(), sms.url("/api/v1/executions"), task.clone());
            calls.spawn(async move {
                // Spread the submits around the unregistration.
                tokio::time::sleep(Duration::from_millis(i % 8)).await;
                let r = c
                    .post(url)
                    .json(&json!({"task_id": task}))
                    .send()
                    .await
                    .unwrap();
                let status = r.status().as_u16();
                let body: serde_json::Value = r.json().await.unwrap();
                (status, body)
            });
        }
        tokio::time::sleep(Duration::from_millis(3)).await;
        let r = c
            .delete(sms.url(&format!("/api/v1/tasks/{task}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let mut accepted = Vec::new();
        while let Some(r) = calls.join_next().await {
            let (status, body) = r.unwrap();
            match status {
                201 => accepted.push(body["execution_id"].as_str().unwrap().to_owned()),
                400 => assert!(
                    body["error"]["message"]
                        .as_str()
                        .unwrap()
                        .contains("is unregistered"),
                    "{body}"
                ),
                other => panic!("{other}: {body}"),
            }
        }
        let events = common::events(&c, &sms).await;
        let cursor_of = |kind: &str, subject: &str| {
            events
                .iter()
                .find(|e| e["kind"] == kind && e["subject"] == subject)
                .and_then(|e| e["cursor"].as_u64())
                .unwrap_or_else(|| panic!("no {kind} of {subject}"))
        };
        let unregistered = cursor_of("task.unregistered", &task);
        for id in &accepted {
            assert!(
                cursor_of("execution.submitted", id) < unregistered,
                "round {round}: execution {id} was accepted after its task's unregistration"
            );
        }
    }
}
