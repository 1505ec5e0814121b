//! A node's assignment stream opened again: every execution placed on the node is sent again,
//! however many (a node may hold more than a stream's usual capacity); and a cancel made while
//! the node was away is sent when it is back, even after SMS restarted.

use crate::common;

use std::time::Duration;

use common::Sandbox;
use futures::StreamExt;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reopened_stream_gets_every_execution_placed_on_its_node_again() {
    let sb = Sandbox::new("");
    let sms = sb.start(&[]);
    let uuid = common::register_wasm_node(&sms, 2_000).await;
    let (_execs, mut stream) = common::open_assignments(&sms, &uuid).await;
    let total = 1_300;
    let c = reqwest::Client::new();
    let submitted: Vec<reqwest::StatusCode> = futures::stream::iter(0..total)
        .map(|_| {
            let (c, sms) = (&c, &sms);
            async move {
                common::post_json(
                    c,
                    sms,
                    "/api/v1/executions",
                    &json!({"executable": {"type": "wasm", "uri": "file:///x.wasm"}}),
                )
                .await
                .0
            }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    assert!(submitted.iter().all(|s| *s == 201), "a submission failed");
    let mut first = std::collections::HashSet::new();
    while first.len() < total {
        let a = tokio::time::timeout(Duration::from_secs(60), stream.next())
            .await
            .expect("every submission is assigned to the one node")
            .unwrap()
            .unwrap();
        first.insert(a.execution.unwrap().execution_id);
    }
    drop(stream);
    // The node comes back (none of its work started): all of it again.
    let (_execs, mut again) = common::open_assignments(&sms, &uuid).await;
    let mut second = std::collections::HashSet::new();
    while second.len() < total {
        let a = tokio::time::timeout(Duration::from_secs(10), again.next())
            .await
            .unwrap_or_else(|_| panic!("{} of {total} sent again", second.len()))
            .unwrap()
            .unwrap();
        second.insert(a.execution.unwrap().execution_id);
    }
    assert_eq!(first, second);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_made_while_the_node_was_away_reaches_it_when_it_is_back() {
    let sb = Sandbox::new("");
    let sms = sb.start(&[]);
    let uuid = common::register_wasm_node(&sms, 4).await;
    let (execs, mut stream) = common::open_assignments(&sms, &uuid).await;
    let c = reqwest::Client::new();
    let body = json!({"executable": {"type": "wasm", "uri": "file:///x.wasm"}});
    let id = common::submit(&c, &sms, &body).await;
    let a = tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(a.execution.unwrap().execution_id, id);
    // The node goes away; its work is cancelled meanwhile.
    drop((execs, stream));
    tokio::time::sleep(Duration::from_millis(200)).await;
    common::cancel(&c, &sms, &id).await;
    // Back (even to a restarted SMS): the stop comes first.
    assert!(sms.terminate().success());
    let sms = sb.start(&[]);
    for _ in 0..2 {
        let (_execs, mut stream) = common::open_assignments(&sms, &uuid).await;
        let a = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .expect("the cancel is sent")
            .unwrap()
            .unwrap();
        assert!(a.cancel, "{a:?}");
        assert_eq!(a.execution.unwrap().execution_id, id);
        // And on each reconnection until it lapses.
    }
}
