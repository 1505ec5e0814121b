//! Explain on a real `sms` with fake Spearlets: every node's verdict and why, who decided, and
//! the queue position and wait.

use crate::common;

use std::time::Duration;

use common::Sandbox;
use common::fake_node::{Behaviour, FakeNode};
use serde_json::{Value, json};

const RUN: Behaviour = Behaviour::Run {
    hold: Duration::ZERO,
};

fn verdict<'a>(x: &'a Value, node: &str) -> &'a Value {
    x["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["node_uuid"] == node)
        .unwrap_or_else(|| panic!("{node} is not in {x}"))
}

fn reasons(x: &Value, node: &str) -> String {
    verdict(x, node)["reasons"].to_string()
}

#[tokio::test]
async fn explain_names_the_chosen_node_and_why_each_other_was_filtered() {
    let sb = Sandbox::new("[scheduler]\nstrategy = \"least-connections\"\n");
    let sms = sb.start(&[]);
    let c = reqwest::Client::new();
    let grpc = sms.grpc_url();
    let good = FakeNode::start_labelled(&grpc, &["wasm"], 64_000, &[("zone", "a")], RUN).await;
    let spare = FakeNode::start_labelled(&grpc, &["wasm"], 64_000, &[("zone", "a")], RUN).await;
    let no_wasm =
        FakeNode::start_labelled(&grpc, &["process"], 64_000, &[("zone", "a")], RUN).await;
    let small = FakeNode::start_labelled(&grpc, &["wasm"], 500, &[("zone", "a")], RUN).await;
    let elsewhere = FakeNode::start_labelled(&grpc, &["wasm"], 64_000, &[("zone", "b")], RUN).await;
    let off = FakeNode::start_labelled(&grpc, &["wasm"], 64_000, &[("zone", "a")], RUN).await;
    let (status, answer) = {
        let r = c
            .put(sms.url(&format!("/api/v1/nodes/{}", off.uuid)))
            .json(&json!({"status": "inactive"}))
            .send()
            .await
            .unwrap();
        (r.status(), r.text().await.unwrap())
    };
    assert_eq!(status, 200, "{answer}");
    // Registered, never opened its assignment stream.
    let silent = common::register_wasm_node(&sms, 4).await;
    // The spare node takes a first execution, so least-connections prefers `good` next.
    let first = common::submit(
        &c,
        &sms,
        &json!({"executable": {"type": "wasm", "uri": "file:///tmp/x.wasm", "name": "warm"}}),
    )
    .await;
    common::wait_state(&c, &sms, &first, "succeeded").await;
    let (status, task) = common::post_json(
        &c,
        &sms,
        "/api/v1/tasks",
        &json!({
            "name": "zoned",
            "executable": {"type": "wasm", "uri": "file:///tmp/x.wasm", "name": "zoned"},
            "required_labels": {"zone": "a"},
            "needs": {"cpu_millis": 1000, "memory_mb": 64, "disk_mb": 0},
        }),
    )
    .await;
    assert_eq!(status, 200, "{task}");
    let id = common::submit(&c, &sms, &json!({"task_id": task["task_id"]})).await;
    let done = common::wait_state(&c, &sms, &id, "succeeded").await;
    let chosen = done["node_uuid"].as_str().unwrap().to_owned();
    assert!(chosen == good.uuid || chosen == spare.uuid, "{done}");

    let x = common::get_json(&c, &sms, &format!("/api/v1/executions/{id}/explain")).await;
    assert_eq!(x["execution_id"], id.as_str(), "{x}");
    assert_eq!(x["outcome"], "assigned", "{x}");
    assert_eq!(x["node_uuid"], chosen.as_str(), "{x}");
    assert_eq!(x["strategy"], "least-connections", "{x}");
    assert_eq!(x["strategy_form"], "component", "{x}");
    assert_eq!(x["fallback"], false, "{x}");
    assert_eq!(x["queue_position"], 0, "{x}");
    assert!(x["waited_ms"].as_i64().unwrap() >= 0, "{x}");
    assert!(x["round"].as_u64().unwrap() >= 2, "{x}");
    assert_eq!(
        x["nodes"][0]["node_uuid"],
        chosen.as_str(),
        "the chosen first: {x}"
    );
    assert_eq!(verdict(&x, &chosen)["verdict"], "chosen");
    let other = if chosen == good.uuid { &spare } else { &good };
    assert_eq!(verdict(&x, &other.uuid)["verdict"], "offered", "{x}");
    for (node, why) in [
        (&no_wasm.uuid, "executor missing: wasm"),
        (&small.uuid, "resources: has cpu_millis 500 of 1000 needed"),
        (&elsewhere.uuid, "hard affinity: lacks zone=a"),
        (&off.uuid, "unhealthy: node is inactive"),
        (&silent, "no stream"),
    ] {
        assert_eq!(verdict(&x, node)["verdict"], "filtered", "{node}: {x}");
        assert!(reasons(&x, node).contains(why), "{why} for {node}: {x}");
    }
    assert_eq!(x["nodes"].as_array().unwrap().len(), 7, "every node: {x}");

    // The CLI-facing errors: an unknown execution, and explain turned off.
    let r = c
        .get(sms.url("/api/v1/executions/nope/explain"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    drop(sms);
    let sb = Sandbox::new("[explain]\nrounds = 0\n");
    let sms = sb.start(&[]);
    let id = common::submit(
        &c,
        &sms,
        &json!({"executable": {"type": "wasm", "uri": "file:///tmp/x.wasm", "name": "x"}}),
    )
    .await;
    let r = c
        .get(sms.url(&format!("/api/v1/executions/{id}/explain")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    let body: Value = r.json().await.unwrap();
    assert!(body.to_string().contains("rounds = 0"), "{body}");
}

#[tokio::test]
async fn a_round_without_a_place_for_a_request_explains_the_rejection() {
    let sb = Sandbox::new("");
    let sms = sb.start(&[]);
    let c = reqwest::Client::new();
    let node = FakeNode::start(&sms.grpc_url(), &["process"], 64_000, RUN).await;
    let id = common::submit(
        &c,
        &sms,
        &json!({"executable": {"type": "wasm", "uri": "file:///tmp/x.wasm", "name": "x"}}),
    )
    .await;
    // Offered each round (a node has room) and placed nowhere: no node runs wasm.
    let start = std::time::Instant::now();
    let x = loop {
        let r = c
            .get(sms.url(&format!("/api/v1/executions/{id}/explain")))
            .send()
            .await
            .unwrap();
        if r.status() == 200 {
            break r.json::<Value>().await.unwrap();
        }
        assert!(start.elapsed() < Duration::from_secs(10), "never explained");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(x["outcome"], "rejected", "{x}");
    assert!(x["node_uuid"].is_null(), "{x}");
    assert!(
        reasons(&x, &node.uuid).contains("executor missing: wasm"),
        "{x}"
    );
}
