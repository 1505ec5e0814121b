//! Listing executions a page at a time, over REST and gRPC, through a real `sms` process.

use crate::common;

use common::Sandbox;
use serde_json::{Value, json};
use spear_proto::v1;

/// Submit `n` inline executions (no node: they stay queued); their ids, in submission order.
pub(crate) async fn submit(
    c: &reqwest::Client,
    sms: &common::Sms,
    n: usize,
    task: &str,
) -> Vec<String> {
    let mut ids = Vec::new();
    for _ in 0..n {
        let (status, e) = common::post_json(
            c,
            sms,
            "/api/v1/executions",
            &json!({"executable": {"type": "wasm", "uri": format!("file:///{task}.wasm")}}),
        )
        .await;
        assert_eq!(status, 201, "{e}");
        ids.push(e["execution_id"].as_str().unwrap().to_owned());
    }
    ids
}

pub(crate) fn ids_of(page: &Value) -> Vec<String> {
    page["executions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["execution_id"].as_str().unwrap().to_owned())
        .collect()
}

/// Every page of `query`, followed by its tokens; the ids in order.
pub(crate) async fn follow(
    c: &reqwest::Client,
    sms: &common::Sms,
    query: &str,
) -> (Vec<String>, usize) {
    let (mut all, mut pages, mut token) = (Vec::new(), 0, None::<String>);
    loop {
        let path = match &token {
            Some(t) => format!("/api/v1/executions?{query}&page_token={t}"),
            None => format!("/api/v1/executions?{query}"),
        };
        let page = common::get_json(c, sms, &path).await;
        pages += 1;
        all.extend(ids_of(&page));
        match page["next_page_token"].as_str() {
            Some(t) => token = Some(t.to_owned()),
            None => return (all, pages),
        }
    }
}

#[tokio::test]
async fn executions_are_listed_a_page_at_a_time_in_submission_order() {
    let sb = Sandbox::new("");
    let sms = sb.start(&[]);
    let c = reqwest::Client::new();
    let first = submit(&c, &sms, 12, "a").await;
    let since = common::get_json(&c, &sms, &format!("/api/v1/executions/{}", first[11]))
        .await["submitted_at_ms"]
        .as_i64()
        .unwrap()
        + 1;
    // A later batch, surely submitted after `since`.
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let second = submit(&c, &sms, 13, "b").await;
    let everything: Vec<String> = first.iter().chain(&second).cloned().collect();

    // Pages of 10: 10, 10, 5, each naming where the next starts; together, all in order.
    let page = common::get_json(&c, &sms, "/api/v1/executions?limit=10").await;
    assert_eq!(ids_of(&page), everything[..10]);
    assert_eq!(page["counts"]["ready"], 25, "{}", page["counts"]);
    // The same counts on /metrics, with the nodes by status.
    common::register_wasm_node(&sms, 1).await;
    let metrics = common::get_text(&c, &sms, "/metrics").await;
    for line in [
        "sms_executions{state=\"ready\"} 25",
        "sms_executions{state=\"succeeded\"} 0",
        "sms_ready_queue_depth 25",
        "sms_nodes{status=\"active\"} 1",
        "sms_nodes{status=\"unhealthy\"} 0",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in:\n{metrics}");
    }
    let (all, pages) = follow(&c, &sms, "limit=10").await;
    assert_eq!(all, everything);
    assert_eq!(pages, 3);

    // Newest first.
    let (all, _) = follow(&c, &sms, "limit=7&order=desc").await;
    assert_eq!(all, everything.iter().rev().cloned().collect::<Vec<_>>());

    // Filters hold across pages: one task's, and those submitted since a time.
    let (all, _) = follow(&c, &sms, "limit=4&task_id=").await;
    assert_eq!(all, everything, "an empty filter is no filter");
    let (all, _) = follow(&c, &sms, &format!("limit=4&since={since}")).await;
    assert_eq!(all, second);
    let (all, _) = follow(&c, &sms, &format!("limit=5&order=desc&since={since}")).await;
    assert_eq!(all, second.iter().rev().cloned().collect::<Vec<_>>());

    // Without a limit, one page holds them all (up to 500).
    let page = common::get_json(&c, &sms, "/api/v1/executions").await;
    assert_eq!(ids_of(&page), everything);
    assert!(page.get("next_page_token").is_none(), "{page}");

    // Bad requests name their parameter.
    for (query, field) in [
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("order=sideways", "order"),
        ("state=lost", "state"),
        ("state=", "state"),
    ] {
        let r = c
            .get(sms.url(&format!("/api/v1/executions?{query}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{query}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"]["field"], field, "{query}: {body}");
    }
    let long = "x".repeat(129);
    let r = c
        .get(sms.url(&format!("/api/v1/executions?page_token={long}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);

    // gRPC pages the same way.
    let mut execs = v1::execution_service_client::ExecutionServiceClient::connect(sms.grpc_url())
        .await
        .unwrap();
    let (mut all, mut token) = (Vec::new(), String::new());
    loop {
        let page = execs
            .list_executions(v1::ListExecutionsRequest {
                limit: 6,
                page_token: token.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(page.executions.len() <= 6);
        all.extend(page.executions.into_iter().map(|e| e.execution_id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(all, everything);
}
