//! A local-strategy call that takes seconds costs only the invocation waiting for it: the
//! Spearlet's status API answers at once and its heartbeats keep reaching SMS (issue: plugin
//! containment).

use crate::common;

use std::time::{Duration, Instant};

use common::Cluster;
use serde_json::json;
use spear_tests::guest;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_strategy_call_held_for_five_seconds_stalls_neither_status_nor_heartbeats() {
    let cluster = Cluster::new();
    std::fs::copy(
        guest("component", "hostile.wasm"),
        cluster.path().join("plugins/hostile.wasm"),
    )
    .unwrap();
    let sms = cluster.sms();
    let node = cluster.spearlet(
        "n1",
        &sms,
        "call_timeout_ms = 20000\nsetup_timeout_ms = 20000\n\
         [scheduler]\nstrategy = \"hostile\"\n[scheduler.config]\nmode = \"spin\"\nspin_ms = 5000\n",
    );
    // The first run makes the task's instance (cold: no strategy call).
    let first = sms.sh("true", json!({})).await;
    let done = sms.finished(&first, Duration::from_secs(60)).await;
    assert_eq!(done["state"], "succeeded", "{done}");

    // The second run finds a Ready instance and asks the local strategy: 5 s in `place`.
    let submitted = Instant::now();
    let second = sms.sh("true", json!({})).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let heartbeat = |v: serde_json::Value| v["last_heartbeat_ms"].as_u64().unwrap_or_default();
    let node_path = format!("/api/v1/nodes/{}", node.node);
    let before = heartbeat(sms.get(&node_path).await);
    let mut worst = [Duration::ZERO; 2];
    let mut probes = 0;
    while submitted.elapsed() < Duration::from_millis(4000) {
        for (i, path) in ["/api/v1/status", "/api/v1/instances"].iter().enumerate() {
            let t = Instant::now();
            let v = node.get(path).await;
            assert!(v.is_object(), "{path}: {v}");
            worst[i] = worst[i].max(t.elapsed());
        }
        probes += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let state = sms.execution(&second).await["state"].clone();
    assert_ne!(state, "succeeded", "the call was in flight throughout");
    assert!(probes >= 10, "{probes} probes");
    // A probe that waited for the call would take until it ends: at least a second (the probes
    // run from 0.5 s to 4 s into a 5 s call). Anything below that is the machine's load (the
    // guest spins one of CI's two cores while other suites run), not a wait on the plugin.
    for (what, worst) in ["GET /api/v1/status", "GET /api/v1/instances"]
        .iter()
        .zip(worst)
    {
        assert!(
            worst < Duration::from_millis(1000),
            "{what} took {worst:?} while a plugin call was in flight"
        );
    }
    let after = heartbeat(sms.get(&node_path).await);
    assert!(
        after >= before + 1500,
        "heartbeats stopped during the call: {before} → {after}"
    );
    let done = sms.finished(&second, Duration::from_secs(60)).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    assert!(submitted.elapsed() >= Duration::from_millis(4500));
}
