//! The REST gateway through a real `sms` process on 127.0.0.1.

use crate::common;

use common::Sandbox;
use reqwest::StatusCode;
use serde_json::{Value, json};

async fn post(client: &reqwest::Client, url: String, body: Value) -> (StatusCode, Value) {
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

/// Snapshot of everything stored, to show a bad request changed nothing.
async fn snapshot(c: &reqwest::Client, sms: &common::Sms) -> Value {
    let mut all = json!({});
    for what in ["nodes", "tasks", "files", "executions"] {
        all[what] = c
            .get(sms.url(&format!("/api/v1/{what}")))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    }
    all
}

#[tokio::test]
async fn bad_input_gets_a_4xx_naming_the_field_and_changes_nothing() {
    let sb = Sandbox::new("");
    let sms = sb.start(&[]);
    let c = reqwest::Client::new();
    let (_, node) = post(
        &c,
        sms.url("/api/v1/nodes"),
        json!({"ip_address": "10.0.0.1", "port": 9000}),
    )
    .await;
    let uuid = node["uuid"].as_str().unwrap().to_owned();
    let before = snapshot(&c, &sms).await;

    let cases: Vec<(reqwest::Method, String, Option<Value>, StatusCode, &str)> = vec![
        (
            reqwest::Method::POST,
            "/api/v1/nodes".into(),
            Some(json!({"port": 80})),
            StatusCode::BAD_REQUEST,
            "ip_address",
        ),
        (
            reqwest::Method::POST,
            "/api/v1/nodes".into(),
            Some(json!({"ip_address": "x", "port": 80})),
            StatusCode::BAD_REQUEST,
            "ip_address",
        ),
        (
            reqwest::Method::POST,
            "/api/v1/nodes".into(),
            Some(json!({"ip_address": "10.0.0.2", "port": "80"})),
            StatusCode::BAD_REQUEST,
            "port",
        ),
        (
            reqwest::Method::POST,
            "/api/v1/nodes".into(),
            Some(json!({"ip_address": "10.0.0.2", "port": 70000})),
            StatusCode::BAD_REQUEST,
            "port",
        ),
        (
            reqwest::Method::POST,
            "/api/v1/nodes".into(),
            Some(json!({"ip_address": "10.0.0.2", "port": 1, "colour": "red"})),
            StatusCode::BAD_REQUEST,
            "colour",
        ),
        (
            reqwest::Method::POST,
            "/api/v1/nodes".into(),
            Some(json!({"ip_address": "10.0.0.2", "port": 1, "executors": ["http", "G P U"]})),
            StatusCode::BAD_REQUEST,
            "executors[1]",
        ),
        (
            reqwest::Method::POST,
            "/api/v1/nodes".into(),
            Some(json!({"ip_address": "10.0.0.2", "port": 1,
                        "executors": (0..65).map(|i| format!("t{i}")).collect::<Vec<_>>()})),
            StatusCode::BAD_REQUEST,
            "executors",
        ),
        (
            reqwest::Method::POST,
            format!("/api/v1/nodes/{uuid}/heartbeat"),
            Some(json!({"health_info": "fine"})),
            StatusCode::BAD_REQUEST,
            "health_info",
        ),
        (
            reqwest::Method::POST,
            "/api/v1/nodes/0f0f0f0f-0000-0000-0000-000000000000/heartbeat".into(),
            Some(json!({})),
            StatusCode::NOT_FOUND,
            "",
        ),
        (
            reqwest::Method::PUT,
            format!("/api/v1/nodes/{uuid}"),
            Some(json!({"status": "sleepy"})),
            StatusCode::BAD_REQUEST,
            "status",
        ),
        (
            reqwest::Method::PUT,
            "/api/v1/nodes/nope".into(),
            Some(json!({})),
            StatusCode::NOT_FOUND,
            "",
        ),
        (
            reqwest::Method::DELETE,
            "/api/v1/nodes/nope".into(),
            None,
            StatusCode::NOT_FOUND,
            "",
        ),
        (
            reqwest::Method::GET,
            "/api/v1/nodes?status=sleepy".into(),
            None,
            StatusCode::BAD_REQUEST,
            "status",
        ),
        (
            reqwest::Method::POST,
            "/api/v1/tasks".into(),
            Some(json!({"name": ""})),
            StatusCode::BAD_REQUEST,
            "name",
        ),
        (
            reqwest::Method::POST,
            "/api/v1/tasks".into(),
            Some(json!({"name": "t", "executable": {"uri": "file:///x"}})),
            StatusCode::BAD_REQUEST,
            "executable.type",
        ),
        (
            reqwest::Method::POST,
            "/api/v1/tasks".into(),
            Some(json!({"name": "t", "executable": {"type": "Jar!", "uri": "file:///x"}})),
            StatusCode::BAD_REQUEST,
            "executable.type",
        ),
        (
            reqwest::Method::POST,
            "/api/v1/tasks".into(),
            Some(json!({"name": "t", "executable": {"type": "wasm", "uri": "ftp://x"}})),
            StatusCode::BAD_REQUEST,
            "executable.uri",
        ),
        (
            reqwest::Method::POST,
            "/api/v1/tasks".into(),
            Some(
                json!({"name": "t", "priority": "asap", "executable": {"type": "wasm", "uri": "file:///x"}}),
            ),
            StatusCode::BAD_REQUEST,
            "priority",
        ),
        (
            reqwest::Method::POST,
            "/api/v1/tasks".into(),
            Some(
                json!({"name": "t", "node_uuid": "n1", "executable": {"type": "wasm", "uri": "file:///x"}}),
            ),
            StatusCode::BAD_REQUEST,
            "node_uuid",
        ),
        (
            reqwest::Method::GET,
            "/api/v1/tasks?priority=asap".into(),
            None,
            StatusCode::BAD_REQUEST,
            "priority",
        ),
        (
            reqwest::Method::GET,
            "/api/v1/tasks/none".into(),
            None,
            StatusCode::NOT_FOUND,
            "",
        ),
        (
            reqwest::Method::DELETE,
            "/api/v1/tasks/none".into(),
            None,
            StatusCode::NOT_FOUND,
            "",
        ),
        (
            reqwest::Method::GET,
            "/api/v1/files/abc".into(),
            None,
            StatusCode::BAD_REQUEST,
            "file_id",
        ),
        (
            reqwest::Method::GET,
            format!("/api/v1/files/{}", "a".repeat(64)),
            None,
            StatusCode::NOT_FOUND,
            "",
        ),
        (
            reqwest::Method::GET,
            "/api/v1/events?after=banana".into(),
            None,
            StatusCode::BAD_REQUEST,
            "after",
        ),
        (
            reqwest::Method::GET,
            "/api/v1/events?after=999999".into(),
            None,
            StatusCode::BAD_REQUEST,
            "after",
        ),
        (
            reqwest::Method::GET,
            "/api/v1/nowhere".into(),
            None,
            StatusCode::NOT_FOUND,
            "",
        ),
    ];
    for (method, path, body, want, field) in cases {
        let mut req = c.request(method.clone(), sms.url(&path));
        if let Some(b) = &body {
            req = req.json(b);
        }
        let r = req.send().await.unwrap();
        let status = r.status();
        let v: Value = r.json().await.unwrap_or(Value::Null);
        assert_eq!(status, want, "{method} {path} {body:?}: {v}");
        if !field.is_empty() {
            assert_eq!(v["error"]["field"], field, "{method} {path}: {v}");
            assert!(
                v["error"]["message"].as_str().unwrap().starts_with(field),
                "{v}"
            );
        }
    }
    // Malformed JSON and a missing content type.
    let r = c
        .post(sms.url("/api/v1/nodes"))
        .header("content-type", "application/json")
        .body("{oops")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let v: Value = r.json().await.unwrap();
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("malformed JSON"),
        "{v}"
    );
    let r = c
        .post(sms.url("/api/v1/tasks"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    // An upload over the limit (1 MiB here).
    let r = c
        .post(sms.url("/api/v1/files?name=big"))
        .body(vec![7u8; 1024 * 1024 + 1])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);

    assert_eq!(snapshot(&c, &sms).await, before, "nothing stored changed");
}

#[tokio::test]
async fn files_round_trip_content_addressed() {
    let sb = Sandbox::new("");
    let sms = sb.start(&[]);
    let c = reqwest::Client::new();
    let bytes = b"\0asm\x01\x00\x00\x00 pretend module".to_vec();
    let r = c
        .post(sms.url("/api/v1/files?name=hello.wasm"))
        .body(bytes.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let meta: Value = r.json().await.unwrap();
    let id = meta["file_id"].as_str().unwrap().to_owned();
    assert_eq!(id.len(), 64);
    assert_eq!(meta["uri"], format!("sms+file://{id}"));
    assert_eq!(meta["size"], bytes.len());
    let got = c
        .get(sms.url(&format!("/api/v1/files/{id}")))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(got.as_ref(), bytes.as_slice());
    assert!(sb.path().join("data/files").join(&id).is_file());
    // The same bytes again: the same file.
    let again: Value = c
        .post(sms.url("/api/v1/files?name=copy.wasm"))
        .body(bytes)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(again["file_id"], id.as_str());
    let r = c
        .delete(sms.url(&format!("/api/v1/files/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        c.get(sms.url(&format!("/api/v1/files/{id}/meta")))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn events_stream_as_sse_and_resume_from_a_cursor() {
    let sb = Sandbox::new("");
    let sms = sb.start(&[]);
    let c = reqwest::Client::new();
    for i in 0..3 {
        post(
            &c,
            sms.url("/api/v1/nodes"),
            json!({"ip_address": format!("10.0.0.{i}"), "port": 1}),
        )
        .await;
    }
    // Resume after cursor 1: events 2 and 3 from history, then a live one.
    let mut r = c
        .get(sms.url("/api/v1/events?after=1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    post(
        &c,
        sms.url("/api/v1/nodes"),
        json!({"ip_address": "10.0.0.9", "port": 1}),
    )
    .await;
    let mut text = String::new();
    while text.matches("\nid: ").count() + usize::from(text.starts_with("id: ")) < 3 {
        let chunk = tokio::time::timeout(std::time::Duration::from_secs(10), r.chunk())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    let ids: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("id: "))
        .collect();
    assert_eq!(ids, vec!["2", "3", "4"], "{text}");
    assert!(text.contains("event: node.registered"), "{text}");
    // Last-Event-ID works as the cursor too.
    let mut r = c
        .get(sms.url("/api/v1/events"))
        .header("Last-Event-ID", "3")
        .send()
        .await
        .unwrap();
    let chunk = tokio::time::timeout(std::time::Duration::from_secs(10), r.chunk())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(String::from_utf8_lossy(&chunk).contains("id: 4"));
    // follow=false: the history up to now, then the stream ends.
    let history = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        c.get(sms.url("/api/v1/events?after=1&follow=false"))
            .send()
            .await
            .unwrap()
            .text(),
    )
    .await
    .expect("follow=false ends the stream")
    .unwrap();
    let ids: Vec<&str> = history
        .lines()
        .filter_map(|l| l.strip_prefix("id: "))
        .collect();
    assert_eq!(ids, vec!["2", "3", "4"], "{history}");
}

#[tokio::test]
async fn openapi_swagger_metrics_health_and_admin_are_served() {
    let sb = Sandbox::new(
        "enable_swagger = true\nenable_web_admin = true\nweb_admin_addr = \"127.0.0.1:0\"\n",
    );
    let sms = sb.start(&[]);
    let c = reqwest::Client::new();
    let doc: Value = c
        .get(sms.url("/api/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    // Every route of the REST router is documented.
    for path in [
        "/api/v1/nodes",
        "/api/v1/nodes/{uuid}",
        "/api/v1/nodes/{uuid}/heartbeat",
        "/api/v1/tasks",
        "/api/v1/tasks/{task_id}",
        "/api/v1/executions",
        "/api/v1/executions/{execution_id}",
        "/api/v1/executions/{execution_id}/cancel",
        "/api/v1/files",
        "/api/v1/files/{file_id}",
        "/api/v1/files/{file_id}/meta",
        "/api/v1/plugins",
        "/api/v1/plugins/reload",
        "/api/v1/plugins/history",
        "/api/v1/events",
    ] {
        assert!(
            doc["paths"].get(path).is_some(),
            "{path} missing from the OpenAPI document"
        );
    }
    let ui = c.get(sms.url("/swagger-ui/")).send().await.unwrap();
    assert_eq!(ui.status(), StatusCode::OK);
    assert!(
        ui.text().await.unwrap().contains("swagger"),
        "Swagger UI is served without any network"
    );
    let health: Value = c
        .get(sms.url("/healthz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["status"], "ok");
    let metrics = common::get_text(&c, &sms, "/metrics").await;
    assert!(metrics.contains("spear_plugin_reloads_total"), "{metrics}");
    let plugins: Value = c
        .get(sms.url("/api/v1/plugins"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let names: Vec<&str> = plugins["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"redb") && names.contains(&"least-connections"),
        "{names:?}"
    );
    let report: Value = c
        .post(sms.url("/api/v1/plugins/reload"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(report["outcome"].is_string(), "{report}");
}
