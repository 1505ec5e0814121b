//! A strategy call that takes seconds costs only the placement waiting for it: `/healthz`, the
//! plugin list and node heartbeats keep answering at once (issue: plugin containment).

use crate::common;

use std::time::{Duration, Instant};

use common::Sandbox;
use serde_json::{Value, json};
use spear_proto::v1;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_call_held_for_five_seconds_stalls_neither_the_api_nor_heartbeats() {
    // The hostile strategy computes for 5 s in every `place`, within a 20 s budget.
    let sb = Sandbox::with_plugins(
        "[scheduler]\nstrategy = \"hostile\"\n[scheduler.config]\nmode = \"spin\"\nspin_ms = 5000\n",
        "call_timeout_ms = 20000\nsetup_timeout_ms = 20000\n",
        &[("component", "hostile.wasm")],
    );
    let sms = sb.start(&[]);
    let c = reqwest::Client::new();
    let mut nodes = v1::node_service_client::NodeServiceClient::connect(sms.grpc_url())
        .await
        .unwrap();
    let node = nodes
        .register_node(v1::RegisterNodeRequest {
            ip_address: "127.0.0.1".into(),
            port: 9000,
            capacity: Some(v1::Resources {
                cpu_millis: 4000,
                memory_mb: 4096,
                disk_mb: 0,
            }),
            executors: vec!["wasm".into()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    // An open assignment stream makes the node eligible.
    let mut execs = v1::execution_service_client::ExecutionServiceClient::connect(sms.grpc_url())
        .await
        .unwrap();
    let _stream = execs
        .assignments(v1::AssignmentsRequest {
            node_uuid: node.uuid.clone(),
            after: 0,
        })
        .await
        .unwrap()
        .into_inner();

    let submitted = Instant::now();
    let response = c
        .post(sms.url("/api/v1/executions"))
        .json(&json!({"executable": {"type": "wasm", "uri": "file:///tmp/x.wasm", "name": "x"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let id = response.json::<Value>().await.unwrap()["execution_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let exec_path = format!("/api/v1/executions/{id}");
    let state = || async {
        let v = common::get_json(&c, &sms, &exec_path).await;
        v["state"].as_str().unwrap_or_default().to_owned()
    };

    // While the scheduler is inside the 5 s call: probe the API and heartbeats.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut worst = [Duration::ZERO; 3];
    let mut probes = 0;
    while submitted.elapsed() < Duration::from_millis(4000) {
        let t = Instant::now();
        let health = c.get(sms.url("/healthz")).send().await.unwrap();
        assert!(health.status().is_success());
        worst[0] = worst[0].max(t.elapsed());

        let t = Instant::now();
        let plugins = common::get_json(&c, &sms, "/api/v1/plugins").await;
        assert_eq!(plugins["scheduler"]["plugin"]["name"], "hostile");
        worst[1] = worst[1].max(t.elapsed());

        let t = Instant::now();
        nodes
            .heartbeat(v1::HeartbeatRequest {
                uuid: node.uuid.clone(),
                ..Default::default()
            })
            .await
            .unwrap();
        worst[2] = worst[2].max(t.elapsed());
        probes += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The call was really in flight throughout: the execution is placed only when it returns.
    assert_eq!(state().await, "ready");
    assert!(probes >= 10, "{probes} probes");
    for (what, worst) in ["/healthz", "GET /api/v1/plugins", "heartbeat"]
        .iter()
        .zip(worst)
    {
        assert!(
            worst < Duration::from_millis(100),
            "{what} took {worst:?} while a plugin call was in flight"
        );
    }

    // And the placement it waited for completes.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if state().await == "assigned" {
            break;
        }
        assert!(Instant::now() < deadline, "never assigned");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(submitted.elapsed() >= Duration::from_millis(4500));
}
