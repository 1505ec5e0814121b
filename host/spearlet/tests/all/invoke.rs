//! Invocations through SMS (`POST /api/v1/tasks/{id}/invoke`, `spear.v1.TaskService/Invoke`,
//! `spear invoke`) on a cluster of a real SMS and two Spearlets: the strategy spreads them over
//! the nodes, each node's live instance keeps its own state, the answers come back, and the event
//! log records each invocation.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use spear_proto::v1;
use spear_proto::v1::task_service_client::TaskServiceClient;

use crate::common::{Cluster, Sms, counter_task};

const LONG: Duration = Duration::from_secs(60);

async fn invoke(sms: &Sms, task: &str, body: Value) -> (u16, Value) {
    sms.post(&format!("/api/v1/tasks/{task}/invoke"), body)
        .await
}

/// `spear --output json ARGS` (or text with `json` false): exit code, stdout, stderr.
async fn spear(sms: &Sms, json: bool, args: &[&str]) -> (i32, Vec<u8>, String) {
    let bin = Path::new(env!("CARGO_BIN_EXE_spearlet")).with_file_name("spear");
    let mut cmd = tokio::process::Command::new(bin);
    cmd.args(["--sms", &sms.url("")]);
    if json {
        cmd.args(["--output", "json"]);
    }
    let out = tokio::time::timeout(
        LONG,
        cmd.args(args)
            .env("SPEAR_LOG", "off")
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("spear ends")
    .unwrap();
    (
        out.status.code().unwrap_or(-1),
        out.stdout,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn invocations_through_sms_spread_over_two_nodes_and_come_back() {
    let c = Cluster::new();
    let sms = c.sms_with(
        "127.0.0.1:0",
        "127.0.0.1:0",
        "[scheduler]\nstrategy = \"round-robin\"\n",
    );
    let nodes = [c.spearlet("alpha", &sms, ""), c.spearlet("beta", &sms, "")];
    for n in &nodes {
        sms.node_status(&n.node, "active", LONG).await;
    }
    let task = counter_task(&sms).await;

    // Twenty invocations: both nodes serve them, each from its own live instance, whose
    // counter goes 1, 2, 3… on that node.
    let mut counts: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for _ in 0..20 {
        let (status, a) = invoke(&sms, &task, json!({"function": "count"})).await;
        assert_eq!(status, 200, "{a}");
        let n: u64 = a["output"].as_str().unwrap().parse().unwrap();
        counts
            .entry(a["node_uuid"].as_str().unwrap().to_owned())
            .or_default()
            .push(n);
        assert!(a["instance"].as_str().unwrap().starts_with(&task), "{a}");
    }
    assert_eq!(counts.len(), 2, "round-robin uses both nodes: {counts:?}");
    for (node, seen) in &counts {
        let expected: Vec<u64> = (1..=seen.len() as u64).collect();
        assert_eq!(seen, &expected, "node {node} kept its instance's state");
        assert!(seen.len() >= 5, "spread: {counts:?}");
    }

    // Binary payloads travel as base64 and come back whole.
    let blob: Vec<u8> = (0..=255u8).collect();
    let b64 = base64_encode(&blob);
    let (status, a) = invoke(
        &sms,
        &task,
        json!({"function": "echo", "payload_base64": b64, "timeout_ms": 5000}),
    )
    .await;
    assert_eq!(status, 200, "{a}");
    assert_eq!(a["output_base64"], b64);
    assert_eq!(a["output"], Value::Null, "not UTF-8");

    // `spear invoke`: the output as it is on stdout; JSON with --output json; a file payload.
    let (code, out, err) =
        spear(&sms, false, &["invoke", &task, "-f", "echo", "-d", "hello"]).await;
    assert_eq!((code, &out[..]), (0, &b"hello"[..]), "{err}");
    assert!(err.contains("invocation"), "{err}");
    let file = c.write("payload.bin", "from a file");
    let at = format!("@{}", file.display());
    let (code, out, err) = spear(
        &sms,
        true,
        &["invoke", &task, "--function", "echo", "--data", &at],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["output"], "from a file", "{v}");
    let (code, _, err) = spear(&sms, false, &["invoke", &task, "-f", "fail", "-d", "abc"]).await;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("failed on 3 bytes"), "{err}");

    // gRPC.
    let mut grpc = TaskServiceClient::connect(format!("http://{}", sms.grpc))
        .await
        .unwrap();
    let a = grpc
        .invoke(v1::InvokeTaskRequest {
            task_id: task.clone(),
            function_name: "echo".into(),
            payload: b"over grpc".to_vec(),
            timeout_ms: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(a.output, b"over grpc");
    assert!(counts.contains_key(&a.node_uuid), "{a:?}");

    // Failures, each with its status and code.
    let (status, e) = invoke(&sms, &task, json!({"function": "fail", "payload": "xy"})).await;
    assert_eq!(
        (status, e["error"]["code"].as_str()),
        (422, Some("function_failed")),
        "{e}"
    );
    assert!(e.to_string().contains("failed on 2 bytes"), "{e}");
    let (status, e) = invoke(&sms, &task, json!({"function": "trap"})).await;
    assert_eq!(
        (status, e["error"]["code"].as_str()),
        (502, Some("instance_lost")),
        "{e}"
    );
    let (status, e) = invoke(&sms, &task, json!({"function": "spin", "timeout_ms": 300})).await;
    assert_eq!(
        (status, e["error"]["code"].as_str()),
        (504, Some("deadline_exceeded")),
        "{e}"
    );
    let (status, e) = invoke(&sms, "no-such-task", json!({"function": "count"})).await;
    assert_eq!(status, 404, "{e}");
    for (body, field) in [
        (json!({"function": ""}), "function"),
        (
            json!({"function": "echo", "payload": "a", "payload_base64": "YQ=="}),
            "payload",
        ),
        (
            json!({"function": "echo", "payload_base64": "not base64!"}),
            "payload_base64",
        ),
        (
            json!({"function": "echo", "timeout_ms": 300001}),
            "timeout_ms",
        ),
        (json!({"function": "echo", "surprise": 1}), "surprise"),
    ] {
        let (status, e) = invoke(&sms, &task, body.clone()).await;
        assert_eq!(status, 400, "{body}: {e}");
        assert!(e.to_string().contains(field), "{body}: {e}");
    }

    // The event log has each invocation, with its node and outcome.
    let events = sms.events().await;
    let invoked: Vec<&Value> = events
        .iter()
        .filter(|e| e["kind"] == "task.invoked" && e["subject"] == task.as_str())
        .collect();
    assert!(invoked.len() >= 20, "{} task.invoked events", invoked.len());
    assert!(invoked.iter().any(|e| e["data"]["ok"] == false));
    assert!(
        invoked
            .iter()
            .all(|e| counts.contains_key(e["data"]["node_uuid"].as_str().unwrap_or_default()))
    );
}

fn base64_encode(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A node killed while it runs an invocation: the caller is answered `UNAVAILABLE` (503) as soon
/// as SMS finds the node lost (its heartbeats stop: 2 s here), not at the invocation's deadline.
#[tokio::test(flavor = "multi_thread")]
async fn an_invocation_whose_node_dies_is_answered_when_the_node_is_lost() {
    let c = Cluster::new();
    let sms = c.sms();
    let mut node = c.spearlet("alpha", &sms, "");
    sms.node_status(&node.node, "active", LONG).await;
    let task = counter_task(&sms).await;
    // Its instance started, so that the next invocation is running when the node is killed.
    let (status, a) = invoke(&sms, &task, json!({"function": "count"})).await;
    assert_eq!(status, 200, "{a}");

    let started = std::time::Instant::now();
    let sleeping = invoke(
        &sms,
        &task,
        json!({"function": "sleep", "payload": "100", "timeout_ms": 120_000}),
    );
    let kill = async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        node.kill_9();
    };
    let ((status, answer), ()) = tokio::join!(sleeping, kill);
    assert_eq!(status, 503, "{answer}");
    assert!(answer.to_string().contains("lost"), "{answer}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "answered after {:?}, not when the node was found lost",
        started.elapsed()
    );
    // The event log says so too (recorded once the caller has its answer).
    let until = std::time::Instant::now() + LONG;
    loop {
        let events = sms.events().await;
        if events
            .iter()
            .any(|e| e["kind"] == "task.invoked" && e["data"]["ok"] == false)
        {
            break;
        }
        assert!(std::time::Instant::now() < until, "{events:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
