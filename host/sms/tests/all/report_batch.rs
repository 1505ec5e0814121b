//! A node's batched reports (`ReportBatch`), through a real `sms` process and a node speaking
//! gRPC from this test: each item is answered on its own, starts go before results, and a stale
//! session or an oversized batch refuses the whole call; a start told again beside an orphan's
//! result is not recorded twice.

use crate::common;

use common::Sandbox;
use serde_json::json;
use spear_proto::v1;
use tokio_stream::StreamExt;

fn ended(id: &str) -> v1::ReportedResult {
    v1::ReportedResult {
        execution_id: id.into(),
        success: true,
        result: Some(v1::ExecutionResult {
            stdout: id.as_bytes().to_vec(),
            ..Default::default()
        }),
        error: String::new(),
        attempt: 0,
        ..Default::default()
    }
}

/// Submit one wasm execution through REST.
async fn submit(c: &reqwest::Client, sms: &common::Sms) {
    let (status, _) = common::post_json(
        c,
        sms,
        "/api/v1/executions",
        &json!({"executable": {"type": "wasm", "uri": "file:///x.wasm"}}),
    )
    .await;
    assert_eq!(status, 201);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_is_answered_item_by_item_and_refused_whole_only_for_its_session_or_size() {
    let sb = Sandbox::new("");
    let sms = sb.start(&[]);
    let uuid = common::register_wasm_node(&sms, 100).await;
    let (mut execs, mut stream) = common::open_assignments(&sms, &uuid).await;
    let c = reqwest::Client::new();
    for _ in 0..3 {
        submit(&c, &sms).await;
    }
    let (mut ids, mut session) = (Vec::new(), String::new());
    while ids.len() < 3 {
        let a = stream.next().await.unwrap().unwrap();
        session = a.session;
        ids.push(a.execution.unwrap().execution_id);
    }
    let (a, b, c_id) = (ids[0].clone(), ids[1].clone(), ids[2].clone());

    // a starts and ends in the same batch; b only starts; c ends without a start being told.
    let answer = execs
        .report_batch(v1::ReportBatchRequest {
            session: session.clone(),
            node_uuid: uuid.clone(),
            running: vec![a.clone(), b.clone(), "no-such-execution".into()],
            results: vec![ended(&a), ended(&c_id), ended("no-such-execution")],
            running_attempts: vec![],
        })
        .await
        .unwrap()
        .into_inner();
    let codes = |o: &[v1::ReportOutcome]| o.iter().map(|x| x.code).collect::<Vec<_>>();
    let not_found = tonic::Code::NotFound as i32;
    assert_eq!(codes(&answer.running), vec![0, 0, not_found]);
    assert_eq!(codes(&answer.results), vec![0, 0, not_found]);
    for (id, state) in [(&a, "succeeded"), (&b, "running"), (&c_id, "succeeded")] {
        let e = common::get_json(&c, &sms, &format!("/api/v1/executions/{id}")).await;
        assert_eq!(e["state"], state, "{e}");
    }
    let e = common::get_json(&c, &sms, &format!("/api/v1/executions/{a}")).await;
    assert!(
        e["started_at_ms"].as_i64().unwrap() > 0,
        "the start went first: {e}"
    );
    // a's start went with its result (one write: the two events adjacent); c's was never told,
    // so c has no start.
    let log = common::events(&c, &sms).await;
    let of = |id: &str| -> Vec<(u64, String)> {
        log.iter()
            .filter(|v| v["subject"] == id)
            .map(|v| {
                (
                    v["cursor"].as_u64().unwrap(),
                    v["kind"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    };
    let kinds = |e: &[(u64, String)]| e.iter().map(|(_, k)| k.clone()).collect::<Vec<_>>();
    let of_a = of(&a);
    assert_eq!(
        kinds(&of_a),
        [
            "execution.submitted",
            "execution.assigned",
            "execution.running",
            "execution.succeeded"
        ],
        "{of_a:?}"
    );
    assert_eq!(of_a[3].0, of_a[2].0 + 1, "{of_a:?}");
    let of_c = of(&c_id);
    assert_eq!(
        kinds(&of_c),
        [
            "execution.submitted",
            "execution.assigned",
            "execution.succeeded"
        ],
        "{of_c:?}"
    );
    let e = common::get_json(&c, &sms, &format!("/api/v1/executions/{c_id}")).await;
    assert_eq!(e["started_at_ms"], 0, "{e}");

    // The same result again is refused on its own (the execution is no longer placed), and the
    // batch still takes b's.
    let answer = execs
        .report_batch(v1::ReportBatchRequest {
            session: session.clone(),
            node_uuid: uuid.clone(),
            running: vec![],
            results: vec![ended(&a), ended(&b)],
            running_attempts: vec![],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        codes(&answer.results),
        vec![tonic::Code::FailedPrecondition as i32, 0]
    );
    assert!(
        answer.results[0].message.contains("not placed"),
        "{answer:?}"
    );
    let e = common::get_json(&c, &sms, &format!("/api/v1/executions/{b}")).await;
    assert_eq!(e["state"], "succeeded", "{e}");

    // Refused whole: an old session, and more items than a batch may carry.
    let stale = execs
        .report_batch(v1::ReportBatchRequest {
            session: "an-older-session".into(),
            node_uuid: uuid.clone(),
            running: vec![],
            results: vec![ended(&a)],
            running_attempts: vec![],
        })
        .await
        .unwrap_err();
    assert_eq!(stale.code(), tonic::Code::FailedPrecondition);
    assert!(stale.message().contains("stale session"), "{stale:?}");
    let big = execs
        .report_batch(v1::ReportBatchRequest {
            session,
            node_uuid: uuid,
            running: vec!["x".into(); 1025],
            results: vec![],
            running_attempts: vec![],
        })
        .await
        .unwrap_err();
    assert_eq!(big.code(), tonic::Code::InvalidArgument);
    assert!(big.message().contains("running"), "{big:?}");
}

/// SMS took a run's start, then lost its node (the execution requeued, orphaned on that node);
/// the node, which never heard that its start was taken, tells it again beside the run's result.
/// The result is taken; the start is not recorded a second time (same start time, one
/// `execution.running` event).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_told_again_beside_an_orphans_result_is_not_recorded_twice() {
    let sb = Sandbox::new("heartbeat_timeout = 1\n");
    let sms = sb.start(&[]);
    let uuid = common::register_wasm_node(&sms, 1).await;
    let (mut execs, mut stream) = common::open_assignments(&sms, &uuid).await;
    let c = reqwest::Client::new();
    submit(&c, &sms).await;
    let a = stream.next().await.unwrap().unwrap();
    let (session, id) = (a.session, a.execution.unwrap().execution_id);
    let batch = |running: Vec<String>, results: Vec<v1::ReportedResult>| v1::ReportBatchRequest {
        session: session.clone(),
        node_uuid: uuid.clone(),
        running_attempts: vec![1; running.len()],
        running,
        results,
    };
    let answer = execs
        .report_batch(batch(vec![id.clone()], vec![]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.running[0].code, 0, "{answer:?}");
    let url = format!("/api/v1/executions/{id}");
    let e = common::get_json(&c, &sms, &url).await;
    assert_eq!(e["state"], "running", "{e}");
    let started_at = e["started_at_ms"].as_i64().unwrap();
    assert!(started_at > 0, "{e}");
    // No heartbeat: the node turns unhealthy after 1 s and its work goes back to the queue.
    let give_up = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let e = common::get_json(&c, &sms, &url).await;
        if e["state"] == "ready" {
            assert_eq!(e["orphaned_on"], uuid.as_str(), "{e}");
            break;
        }
        assert!(std::time::Instant::now() < give_up, "never requeued: {e}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let result = v1::ReportedResult {
        attempt: 1,
        ..ended(&id)
    };
    let answer = execs
        .report_batch(batch(vec![id.clone()], vec![result]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.running[0].code, 0, "{answer:?}");
    assert_eq!(answer.results[0].code, 0, "{answer:?}");
    let e = common::get_json(&c, &sms, &url).await;
    assert_eq!(e["state"], "succeeded", "{e}");
    assert_eq!(
        e["started_at_ms"], started_at,
        "the start kept its time: {e}"
    );
    let kinds: Vec<String> = common::events(&c, &sms)
        .await
        .iter()
        .filter(|v| v["subject"] == id.as_str())
        .map(|v| v["kind"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        kinds,
        [
            "execution.submitted",
            "execution.assigned",
            "execution.running",
            "execution.rescheduled",
            "execution.succeeded"
        ]
    );
}
