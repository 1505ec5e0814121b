//! `GET /api/v1/executions/{id}/watch` through a real `sms` process: the execution now, each
//! change, and the end of the stream at a final state.

use crate::common;

use std::time::Duration;

use common::Sandbox;
use reqwest::StatusCode;
use serde_json::{Value, json};

/// The executions an open watch stream sends, until it ends (or `stop` of them arrived).
async fn messages(mut r: reqwest::Response, stop: usize) -> (Vec<Value>, bool) {
    let mut text = String::new();
    let mut got = Vec::new();
    loop {
        while let Some(end) = text.find("\n\n") {
            let block: String = text.drain(..end + 2).collect();
            if block.lines().any(|l| l == "event: execution") {
                let data = block
                    .lines()
                    .find_map(|l| l.strip_prefix("data: "))
                    .unwrap();
                got.push(serde_json::from_str(data).unwrap());
            }
        }
        if got.len() >= stop {
            return (got, false);
        }
        match tokio::time::timeout(Duration::from_secs(10), r.chunk())
            .await
            .expect("the stream moves")
            .unwrap()
        {
            Some(chunk) => text.push_str(&String::from_utf8_lossy(&chunk)),
            None => return (got, true),
        }
    }
}

#[tokio::test]
async fn a_watch_sends_the_execution_then_its_changes_and_ends_at_a_final_state() {
    let sb = Sandbox::new("");
    let sms = sb.start(&[]);
    let c = reqwest::Client::new();
    // No node: it stays ready until cancelled.
    let (status, e) = common::post_json(
        &c,
        &sms,
        "/api/v1/executions",
        &json!({"executable": {"type": "process", "name": "/bin/true"}}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{e}");
    let id = e["execution_id"].as_str().unwrap();
    let r = c
        .get(sms.url(&format!("/api/v1/executions/{id}/watch")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    let watching = tokio::spawn(messages(r, usize::MAX));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, _) = common::post_json(
        &c,
        &sms,
        &format!("/api/v1/executions/{id}/cancel"),
        &json!({}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (got, ended) = watching.await.unwrap();
    assert!(ended, "the stream ends at the final state");
    let states: Vec<&str> = got.iter().map(|e| e["state"].as_str().unwrap()).collect();
    assert_eq!(states, ["ready", "cancelled"], "{got:?}");

    // Already final: that, and the end.
    let r = c
        .get(sms.url(&format!("/api/v1/executions/{id}/watch")))
        .send()
        .await
        .unwrap();
    let (got, ended) = messages(r, usize::MAX).await;
    assert!(ended);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0]["state"], "cancelled");

    // Unknown: 404 with the error shape, no stream.
    let r = c
        .get(sms.url("/api/v1/executions/nope/watch"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "not_found", "{body}");
}
