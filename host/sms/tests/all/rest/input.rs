//! Bad input through the REST gateway: a 4xx naming the field, and nothing changed.

use crate::common;

use common::Sandbox;
use reqwest::StatusCode;
use serde_json::{Value, json};

use super::post;

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
