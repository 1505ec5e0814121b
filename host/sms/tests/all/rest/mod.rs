//! The REST gateway through a real `sms` process on 127.0.0.1: SPEAR's documented examples here,
//! the rest by concern in the modules below.

mod events;
mod files;
mod input;
mod served;

use crate::common;

use common::Sandbox;
use reqwest::StatusCode;
use serde_json::{Value, json};

pub(super) async fn post(
    client: &reqwest::Client,
    url: String,
    body: Value,
) -> (StatusCode, Value) {
    let r = client.post(url).json(&body).send().await.unwrap();
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// That `answer` holds SPEAR's whole answer `spear`: every field SPEAR's answer has, with its
/// value (fields SMS adds beside them are allowed). Seconds since the epoch that SMS chose are
/// checked to be within a minute of now, then compared as given in `spear` after replacing them.
fn assert_spear_answer(answer: &Value, spear: &Value) {
    fn walk(at: &str, got: &Value, want: &Value) {
        match want {
            Value::Object(fields) => {
                for (key, value) in fields {
                    let path = format!("{at}.{key}");
                    let Some(g) = got.get(key) else {
                        panic!("{path}: missing (SPEAR answers {value})");
                    };
                    walk(&path, g, value);
                }
            }
            Value::Array(items) => {
                let g = got
                    .as_array()
                    .unwrap_or_else(|| panic!("{at}: not a list: {got}"));
                assert_eq!(g.len(), items.len(), "{at}: {got}");
                for (i, (g, w)) in g.iter().zip(items).enumerate() {
                    walk(&format!("{at}[{i}]"), g, w);
                }
            }
            Value::String(s) if s == "<now-secs>" => {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_secs() as i64;
                let secs = got
                    .as_i64()
                    .unwrap_or_else(|| panic!("{at}: not seconds: {got}"));
                assert!((now - secs).abs() < 60, "{at}: {secs} is not now ({now})");
            }
            _ => assert_eq!(got, want, "{at}"),
        }
    }
    walk("", answer, spear);
}

#[tokio::test]
async fn spear_readme_curl_examples_work_unchanged() {
    let sb = Sandbox::new("");
    let sms = sb.start(&[]);
    let c = reqwest::Client::new();
    let (status, node) = post(
        &c,
        sms.url("/api/v1/nodes"),
        json!({"ip_address": "192.168.1.100", "port": 8080, "metadata": {"region": "us-west-1", "zone": "a"}}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{node}");
    let uuid = node["node_uuid"].as_str().unwrap().to_owned();
    assert_spear_answer(
        &node,
        &json!({"success": true, "message": "Node registered successfully", "node_uuid": uuid}),
    );
    let spear_node = |region: &str, zone: &str| {
        json!({
            "uuid": uuid, "ip_address": "192.168.1.100", "port": 8080, "status": "active",
            "last_heartbeat": "<now-secs>", "registered_at": "<now-secs>",
            "metadata": {"region": region, "zone": zone},
        })
    };
    // SMS's own fields are there too (its clients read them).
    assert_eq!(node["uuid"], uuid.as_str());

    let r = c.get(sms.url("/api/v1/nodes")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let list: Value = r.json().await.unwrap();
    assert_spear_answer(
        &list,
        &json!({"success": true, "nodes": [spear_node("us-west-1", "a")]}),
    );

    let r = c
        .get(sms.url(&format!("/api/v1/nodes/{uuid}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let one: Value = r.json().await.unwrap();
    assert_spear_answer(
        &one,
        &json!({"success": true, "node": spear_node("us-west-1", "a")}),
    );

    let (status, hb) = post(
        &c,
        sms.url(&format!("/api/v1/nodes/{uuid}/heartbeat")),
        json!({"health_info": {"cpu_usage": "45%", "memory_usage": "60%", "disk_usage": "30%"}}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_spear_answer(
        &hb,
        &json!({"success": true, "message": "Heartbeat received"}),
    );
    assert_eq!(hb["health_info"]["cpu_usage"], "45%");

    let r = c
        .put(sms.url(&format!("/api/v1/nodes/{uuid}")))
        .json(&json!({"status": "active", "metadata": {"region": "us-west-2", "zone": "b"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let updated: Value = r.json().await.unwrap();
    assert_spear_answer(
        &updated,
        &json!({"success": true, "message": "Node updated successfully"}),
    );
    assert_spear_answer(&updated["node"], &spear_node("us-west-2", "b"));

    let (status, task) = post(
        &c,
        sms.url("/api/v1/tasks"),
        json!({
            "name": "image-processing-task",
            "description": "Process images using AI models",
            "node_uuid": "93f9a7ca-e033-4bb7-8b5a-c0899f9a52b8",
            "endpoint": "http://127.0.0.1:8081/process",
            "version": "1.0.0",
            "capabilities": ["image-processing", "ai-inference"],
            "priority": "high",
            "executable": {"type": "wasm", "uri": "sms+file://<file_id>", "name": "hello.wasm", "args": [], "env": {}}
        }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{task}");
    let task_id = task["task_id"].as_str().unwrap().to_owned();
    assert_spear_answer(
        &task,
        &json!({"success": true, "task_id": task_id, "message": "Task registered successfully"}),
    );
    let spear_task = |status: &str| {
        json!({
            "task_id": task_id, "name": "image-processing-task",
            "description": "Process images using AI models", "status": status, "priority": "high",
            "node_uuid": "93f9a7ca-e033-4bb7-8b5a-c0899f9a52b8",
            "endpoint": "http://127.0.0.1:8081/process", "version": "1.0.0",
            "capabilities": ["image-processing", "ai-inference"],
            "registered_at": "<now-secs>", "last_heartbeat": "<now-secs>",
            "metadata": {}, "config": {},
        })
    };
    let get = async |path: &str| -> Value {
        let r = c.get(sms.url(path)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{path}");
        r.json().await.unwrap()
    };
    let normal = get("/api/v1/tasks?status=registered&priority=normal").await;
    assert_spear_answer(&normal, &json!({"tasks": [], "total_count": 0}));
    let high = get("/api/v1/tasks?status=registered&priority=high").await;
    assert_spear_answer(
        &high,
        &json!({"tasks": [spear_task("registered")], "total_count": 1}),
    );
    let one = get(&format!("/api/v1/tasks/{task_id}")).await;
    assert_spear_answer(&one, &spear_task("registered"));

    // SPEAR's unregistration: the task stays, unregistered.
    let r = c
        .delete(sms.url(&format!("/api/v1/tasks/{task_id}")))
        .json(&json!({"reason": "replaced by v2"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let unregistered: Value = r.json().await.unwrap();
    assert_eq!(
        unregistered,
        json!({"success": true, "message": "Task unregistered successfully"})
    );
    let one = get(&format!("/api/v1/tasks/{task_id}")).await;
    assert_spear_answer(&one, &spear_task("unregistered"));
    assert_eq!(one["unregistered_reason"], "replaced by v2");

    let deleted = c
        .delete(sms.url(&format!("/api/v1/nodes/{uuid}")))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), StatusCode::OK);
    let deleted: Value = deleted.json().await.unwrap();
    assert_eq!(
        deleted,
        json!({"success": true, "message": "Node deleted successfully"})
    );
    let gone = c
        .get(sms.url(&format!("/api/v1/nodes/{uuid}")))
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), StatusCode::NOT_FOUND);
    // SPEAR's clients test `success`; SMS's error says what and why.
    let gone: Value = gone.json().await.unwrap();
    assert_eq!(gone["success"], false, "{gone}");
    assert_eq!(gone["error"]["code"], "not_found", "{gone}");
}
