//! SMS on a storage backend loaded as a WASM component: the built-in `memory` backend built for
//! wasm32-wasip2 (its state in the instance's linear memory). A representative subset of the
//! suite: placement and a run reported back, dependencies, paging through executions, the event
//! log. The contract itself is checked operation by operation, native against component, in the
//! workspace's `tests/all/storage.rs`.

use crate::common;

use std::time::Duration;

use common::Sandbox;
use common::fake_node::{Behaviour, FakeNode};
use serde_json::{Value, json};

fn wasm(name: &str) -> Value {
    json!({"type": "wasm", "uri": "file:///tmp/x.wasm", "name": name})
}

#[tokio::test]
async fn sms_runs_on_the_memory_backend_built_as_a_component() {
    // JSON log lines, to read the storage line's fields.
    let sb = Sandbox::on_component_memory("[log]\nformat = \"json\"\n");
    let sms = sb.start_logging(&[]);
    let c = reqwest::Client::new();
    let log = std::fs::read_to_string(sb.path().join("stderr.log")).unwrap();
    let opened: Value = log
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|l| l["fields"]["message"] == "opening the storage backend")
        .unwrap_or_else(|| panic!("no storage line in: {log}"));
    let fields = &opened["fields"];
    assert_eq!(
        (&fields["plugin"], &fields["form"]),
        (&json!("memory"), &json!("component")),
        "{opened}"
    );
    assert!(
        fields["file"]
            .as_str()
            .unwrap()
            .ends_with("plugins/memory.wasm"),
        "{opened}"
    );

    let plugins = common::get_json(&c, &sms, "/api/v1/plugins").await;
    // The file overrides the built-in of its name.
    let memory: Vec<(&Value, &Value)> = plugins["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["name"] == "memory" && p["kind"] == "storage-backend")
        .map(|p| (&p["form"], &p["state"]))
        .collect();
    assert_eq!(
        memory,
        [
            (&json!("component"), &json!("standby")),
            (&json!("built-in"), &json!("overridden"))
        ],
        "{plugins}"
    );

    let node = FakeNode::start(
        &sms.grpc_url(),
        &["wasm"],
        4000,
        Behaviour::Run {
            hold: Duration::ZERO,
        },
    )
    .await;
    // A dependency chain and a batch of independent executions.
    let first = common::submit(&c, &sms, &json!({"executable": wasm("first")})).await;
    let second = common::submit(
        &c,
        &sms,
        &json!({"executable": wasm("second"), "depends_on": [first]}),
    )
    .await;
    let mut ids = vec![first.clone(), second.clone()];
    for i in 0..23 {
        ids.push(common::submit(&c, &sms, &json!({"executable": wasm(&format!("n{i}"))})).await);
    }
    for id in &ids {
        let done = common::wait_state(&c, &sms, id, "succeeded").await;
        assert_eq!(done["node_uuid"], node.uuid.as_str(), "{done}");
        assert_eq!(done["result"]["stdout"], "done\n", "{done}");
    }
    let received = node.received();
    let at = |id: &String| received.iter().position(|r| r == id).unwrap();
    assert!(
        at(&first) < at(&second),
        "the dependency ran first: {received:?}"
    );

    // Paging reads the records back through the component, page by page.
    let mut seen = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let path = match &token {
            None => "/api/v1/executions?state=succeeded&limit=10".to_owned(),
            Some(t) => format!("/api/v1/executions?state=succeeded&limit=10&page_token={t}"),
        };
        let page = common::get_json(&c, &sms, &path).await;
        let rows = page["executions"].as_array().unwrap();
        assert!(rows.len() <= 10, "{page}");
        seen.extend(
            rows.iter()
                .map(|e| e["execution_id"].as_str().unwrap().to_owned()),
        );
        match page["next_page_token"].as_str() {
            Some(t) => token = Some(t.to_owned()),
            None => break,
        }
    }
    seen.sort();
    let mut want = ids.clone();
    want.sort();
    assert_eq!(seen, want);

    // The event log, written in the same batches, is read back in order.
    let events = common::events(&c, &sms).await;
    let submitted = events
        .iter()
        .filter(|e| e["kind"] == "execution.submitted")
        .count();
    assert_eq!(submitted, ids.len(), "{events:?}");
    node.task.abort();
}
