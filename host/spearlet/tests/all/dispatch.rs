//! Capacity-aware dispatch through real `sms` and `spearlet` processes: SMS hands a node no more
//! work than its free slots (plus a small prefetch), so the queue stays in SMS and a timeout
//! counts from the start of the run, not from a wait in a node's queue.

use crate::common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{Cluster, Sms, Spearlet};
use futures::StreamExt;
use serde_json::json;

/// Spearlet `name` with `slots` slots (its `max_concurrent`).
fn node(cluster: &Cluster, name: &str, sms: &Sms, slots: u32) -> Spearlet {
    let text = cluster
        .spearlet_config(name, "")
        .replace("max_concurrent = 8", &format!("max_concurrent = {slots}"));
    let config = cluster.write(&format!("{name}.toml"), &text);
    cluster.spearlet_with(
        name,
        &config,
        &["--sms-addr", &sms.grpc.to_string(), "--auto-register"],
    )
}

/// Counts of the executions by state, as SMS keeps them (a list answers a page at a time).
async fn states(sms: &Sms) -> BTreeMap<String, usize> {
    let list = sms.get("/api/v1/executions?limit=1").await;
    list["counts"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(state, n)| (state.clone(), n.as_u64().unwrap() as usize))
        .filter(|(_, n)| *n > 0)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_thousand_short_runs_with_a_two_second_timeout_all_succeed_on_sixteen_slots() {
    let cluster = Cluster::new();
    let sms = cluster.sms();
    let node = node(&cluster, "a", &sms, 16);
    let total = 3000;
    let client = reqwest::Client::new();
    let body = json!({"executable": {"type": "process", "name": "/bin/true"},
        "timeout_ms": 2000, "max_attempts": 1});
    // 32 submissions in flight at a time.
    let answers: Vec<u16> = futures::stream::iter(0..total)
        .map(|_| {
            let (client, url, body) = (client.clone(), sms.url("/api/v1/executions"), &body);
            async move {
                client
                    .post(url)
                    .json(body)
                    .send()
                    .await
                    .unwrap()
                    .status()
                    .as_u16()
            }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    assert!(answers.iter().all(|s| *s == 201), "a submission failed");
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let counts = states(&sms).await;
        let done: usize = ["succeeded", "failed", "cancelled", "timed_out"]
            .iter()
            .filter_map(|s| counts.get(*s))
            .sum();
        if done == total {
            assert_eq!(counts.get("succeeded"), Some(&total), "{counts:?}");
            break;
        }
        assert!(Instant::now() < deadline, "still {counts:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Each result went once: none was sent again after SMS had taken it (a scan of the node's
    // store finds an answered report until its forgetting lands, and must pass over it).
    let log = node.log();
    assert!(!log.contains("SMS refused the result"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_is_spread_by_free_slots_and_the_rest_waits_in_sms() {
    let cluster = Cluster::new();
    let sms = cluster.sms_with(
        "127.0.0.1:0",
        "127.0.0.1:0",
        "[scheduler]\nstrategy = \"least-connections\"\n[dispatch]\nprefetch = 1\n",
    );
    let small = node(&cluster, "small", &sms, 2);
    let large = node(&cluster, "large", &sms, 6);
    for n in [&small, &large] {
        sms.node_status(&n.node, "active", Duration::from_secs(10))
            .await;
    }
    // Each runs until the test lets them all go, however slow the machine (a fixed sleep let
    // some finish before the count under load).
    let go = cluster.path().join("go");
    let script = format!("until [ -e {} ]; do sleep 0.05; done", go.display());
    let mut ids = Vec::new();
    for _ in 0..16 {
        ids.push(sms.sh(&script, json!({"timeout_ms": 30000})).await);
    }
    // Let the scheduler place what it can.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let list = sms.get("/api/v1/executions").await;
    let mut on: BTreeMap<String, usize> = BTreeMap::new();
    let mut ready = 0;
    for e in list["executions"].as_array().unwrap() {
        match e["state"].as_str().unwrap() {
            "assigned" | "running" => {
                *on.entry(e["node_uuid"].as_str().unwrap().to_owned())
                    .or_default() += 1;
            }
            "ready" => ready += 1,
            other => panic!("{other}: {e}"),
        }
    }
    let prefetch = 1;
    assert_eq!(on.get(&small.node), Some(&(2 + prefetch)), "{on:?}");
    assert_eq!(on.get(&large.node), Some(&(6 + prefetch)), "{on:?}");
    assert_eq!(ready, 16 - 8 - 2 * prefetch, "the rest waits in SMS");
    // Everything runs in the end.
    std::fs::write(&go, "").unwrap();
    for id in &ids {
        let e = sms.finished(id, Duration::from_secs(60)).await;
        assert_eq!(e["state"], "succeeded", "{e}");
    }
}
