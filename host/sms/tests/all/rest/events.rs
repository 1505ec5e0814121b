//! The event stream (SSE) through the REST gateway, resumed from a cursor.

use crate::common;

use common::Sandbox;
use serde_json::json;

use super::post;

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
