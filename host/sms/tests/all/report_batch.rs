//! A node's batched reports (`ReportBatch`), through a real `sms` process and a node speaking
//! gRPC from this test: each item is answered on its own, starts go before results, and a stale
//! session or an oversized batch refuses the whole call.

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_is_answered_item_by_item_and_refused_whole_only_for_its_session_or_size() {
    let sb = Sandbox::new("");
    let sms = sb.start(&[]);
    let uuid = common::register_wasm_node(&sms, 100).await;
    let (mut execs, mut stream) = common::open_assignments(&sms, &uuid).await;
    let c = reqwest::Client::new();
    for _ in 0..3 {
        let (status, _) = common::post_json(
            &c,
            &sms,
            "/api/v1/executions",
            &json!({"executable": {"type": "wasm", "uri": "file:///x.wasm"}}),
        )
        .await;
        assert_eq!(status, 201);
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
