//! The web admin's node stream (`/admin/api/nodes/stream`) on a real SMS: a burst of node
//! registrations is a few snapshots, not one each, and the snapshot after the burst counts all.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::Sandbox;

#[tokio::test]
async fn a_burst_of_node_changes_is_a_few_snapshots_and_the_last_counts_them_all() {
    let sb = Sandbox::new("enable_web_admin = true\nweb_admin_addr = \"127.0.0.1:0\"\n");
    let sms = sb.start(&[]);
    let admin = sms.admin.expect("the web admin is served");
    let mut stream = reqwest::get(format!("http://{admin}/admin/api/nodes/stream"))
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    // Snapshots as they come, read in the background.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Value>();
    tokio::spawn(async move {
        let mut text = String::new();
        while let Ok(Some(chunk)) = stream.chunk().await {
            text.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = text.find("\n\n") {
                let block: String = text.drain(..end + 2).collect();
                if block.contains("event: snapshot")
                    && let Some(data) = block.lines().find_map(|l| l.strip_prefix("data: "))
                {
                    let _ = tx.send(serde_json::from_str(data).unwrap());
                }
            }
        }
    });
    let first = rx.recv().await.unwrap();
    assert_eq!(first["count"], 0, "{first}");

    let c = reqwest::Client::new();
    let started = Instant::now();
    let registrations = (0..100).map(|i| {
        c.post(sms.url("/api/v1/nodes"))
            .json(&json!({"ip_address": "10.9.0.1", "port": 2000 + i}))
            .send()
    });
    for r in futures::future::join_all(registrations).await {
        assert_eq!(r.unwrap().status(), 201);
    }
    let burst = started.elapsed();
    // Well past the coalescing, not yet at the 5 s period.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut snapshots = Vec::new();
    while let Ok(s) = rx.try_recv() {
        snapshots.push(s);
    }
    let last = snapshots
        .last()
        .expect("a snapshot after the registrations");
    assert_eq!(last["count"], 100, "{last}");
    assert_eq!(last["online_count"], 100, "{last}");
    // One per 250 ms of burst at most (plus the one after it), far from one per node.
    let most = 2 + (burst.as_millis() / 250) as usize;
    assert!(
        snapshots.len() <= most.min(20),
        "{} snapshots for 100 registrations over {burst:?}",
        snapshots.len()
    );
}
