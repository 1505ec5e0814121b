//! SMS on the `etcd` storage backend: its state lives in the etcd cluster (an SMS started in
//! another directory finds it after a `kill -9`), and losing an etcd member, the leader of the
//! cluster even, changes nothing for its users.

use crate::common;
use crate::paging::submit;
use crate::retention::{succeeding_node, wait_for};

use common::Sandbox;
use serde_json::json;
use spear_proto::v1;
use spear_tests::etcd::EtcdCluster;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sms_keeps_its_state_in_etcd_and_rides_out_a_lost_member() {
    let mut cluster = EtcdCluster::start(3);
    let endpoints = cluster.endpoints();
    let sb = Sandbox::on_etcd("", &endpoints, "sms-test/");
    let sms = sb.start(&[]).leading().await;
    let c = reqwest::Client::new();
    let node = succeeding_node(&sms, v1::ExecutionResult::default(), None).await;
    let task = common::post_json(
        &c,
        &sms,
        "/api/v1/tasks",
        &json!({"name": "kept", "executable": {"type": "wasm", "uri": "file:///kept.wasm"}}),
    )
    .await;
    assert_eq!(task.0, 200, "{}", task.1);

    // Executions run to success: their submits, placements and results are etcd transactions.
    let mut ids = submit(&c, &sms, 40, "before").await;
    let last = ids.last().unwrap().clone();
    wait_for(&c, &sms, &format!("/api/v1/executions/{last}"), |e| {
        e["state"] == "succeeded"
    })
    .await;

    // The etcd leader is lost: submits, placements and results go on.
    cluster.kill(cluster.leader());
    let more = submit(&c, &sms, 20, "after").await;
    let last = more.last().unwrap().clone();
    wait_for(&c, &sms, &format!("/api/v1/executions/{last}"), |e| {
        e["state"] == "succeeded"
    })
    .await;
    ids.extend(more);
    common::assert_states(&c, &sms, &ids, "succeeded").await;
    node.abort();
    // Three that no node runs stay queued.
    let queued: Vec<String> = {
        let mut q = Vec::new();
        for _ in 0..3 {
            let body = json!({"executable": {"type": "process", "uri": "file:///bin/true"}});
            q.push(common::submit(&c, &sms, &body).await);
        }
        q
    };
    sms.kill_9();

    // Another SMS, in another directory (nothing of the first's on its disk), on the same
    // cluster with a member still down: everything is there.
    let elsewhere = Sandbox::on_etcd("", &endpoints, "sms-test/");
    let sms = elsewhere.start(&[]).leading().await;
    common::assert_states(&c, &sms, &ids, "succeeded").await;
    common::assert_states(&c, &sms, &queued, "ready").await;
    let tasks = common::get_json(&c, &sms, "/api/v1/tasks").await;
    assert!(
        tasks
            .to_string()
            .contains(task.1["task_id"].as_str().unwrap()),
        "{tasks}"
    );
    // Another namespace on the same cluster is another SMS's state: empty.
    let other = Sandbox::on_etcd("", &endpoints, "another/");
    let empty = other.start(&[]).leading().await;
    let list = common::get_json(&c, &empty, "/api/v1/executions").await;
    assert_eq!(list["executions"].as_array().unwrap().len(), 0, "{list}");
}

/// A write whose outcome etcd leaves unknown (no member answered it: it may apply later) leaves
/// SMS's memory perhaps unlike storage: SMS answers the request with an error and stops, and an
/// SMS started again serves from what storage holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sms_stops_when_a_writes_outcome_is_unknown_and_starts_again_from_storage() {
    let cluster = EtcdCluster::start(1);
    let proxy = spear_tests::h2proxy::H2Proxy::start(&cluster.endpoints()[0]);
    // A long lease, so that the lease does not run out first (that would stop it too).
    let sb = Sandbox::on_etcd("[ha]\nlease_ttl_secs = 30\n", &[proxy.url()], "unsure/");
    let mut sms = sb.start_logging(&[]).leading().await;
    let c = reqwest::Client::new();
    let body = json!({"executable": {"type": "process", "uri": "file:///bin/true"}});
    common::submit(&c, &sms, &body).await;

    proxy.hold();
    let answer = c
        .post(sms.url("/api/v1/executions"))
        .json(&body)
        .send()
        .await;
    // A failure says what SMS logged (this test once failed on a loaded CI machine only).
    let log = || std::fs::read_to_string(sb.path().join("stderr.log")).unwrap_or_default();
    let answer = answer.unwrap_or_else(|e| panic!("no answer: {e}; SMS logged:\n{}", log()));
    let status = answer.status();
    let text = answer.text().await.unwrap_or_default();
    assert_eq!(status, 503, "{text}; SMS logged:\n{}", log());
    assert!(
        text.contains("outcome unknown"),
        "{text}; SMS logged:\n{}",
        log()
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let exit = loop {
        if let Some(status) = sms.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "SMS is still running; it logged:\n{}",
            log()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(exit.code(), Some(3), "SMS logged:\n{}", log());
    assert!(log().contains("outcome is unknown"), "{}", log());

    // The held write reaches etcd now, late; an SMS started again serves what storage holds
    // (its lease revoked, as an operator would, rather than waited out).
    proxy.release();
    for lease in cluster.etcdctl(&["lease", "list"]).lines().skip(1) {
        cluster.etcdctl(&["lease", "revoke", lease.trim()]);
    }
    let again = Sandbox::on_etcd("", &cluster.endpoints(), "unsure/");
    let sms = again.start(&[]).leading().await;
    let list = common::get_json(&c, &sms, "/api/v1/executions").await;
    let n = list["executions"].as_array().map_or(0, Vec::len);
    assert!((1..=2).contains(&n), "{list}");
}
