//! Shadow evaluation on a real `sms` with fake Spearlets: the shadow strategy's decisions are
//! recorded and compared, and never applied; a hostile shadow cannot touch scheduling.

use crate::common;

use std::time::Duration;

use common::Sandbox;
use common::fake_node::{Behaviour, FakeNode};
use serde_json::{Value, json};

const RUN: Behaviour = Behaviour::Run {
    hold: Duration::ZERO,
};

/// Run `n` executions one after another on 4 nodes; the index of the node each went to (by
/// registration order), and the SMS (still running) with its nodes.
async fn placements(sb: &Sandbox, n: usize) -> (Vec<usize>, common::Sms, Vec<FakeNode>) {
    let sms = sb.start(&[]);
    let c = reqwest::Client::new();
    let mut nodes = Vec::new();
    for _ in 0..4 {
        nodes.push(FakeNode::start(&sms.grpc_url(), &["wasm"], 64_000, RUN).await);
    }
    let mut got = Vec::new();
    for i in 0..n {
        let body = json!({"executable": {"type": "wasm", "uri": "file:///tmp/x.wasm", "name": format!("s{i}")}});
        let id = common::submit(&c, &sms, &body).await;
        let e = common::wait_state(&c, &sms, &id, "succeeded").await;
        let node = e["node_uuid"].as_str().unwrap();
        got.push(nodes.iter().position(|f| f.uuid == node).unwrap());
    }
    (got, sms, nodes)
}

#[tokio::test]
async fn a_shadow_never_changes_a_placement_and_its_decisions_are_compared() {
    let without = Sandbox::new("[scheduler]\nstrategy = \"round-robin\"\n");
    let (plain, sms, _nodes) = placements(&without, 24).await;
    drop(sms);
    // The candidate: seeded random, which disagrees with round-robin most of the time.
    let with = Sandbox::with_plugins(
        "[scheduler]\nstrategy = \"round-robin\"\nshadow = \"random\"\n[scheduler.shadow_config]\nseed = 3\n",
        "",
        &[("component", "random.wasm")],
    );
    let (shadowed, sms, nodes) = placements(&with, 24).await;
    assert_eq!(
        plain, shadowed,
        "placements identical with and without a shadow"
    );
    assert_eq!(
        plain[..4]
            .iter()
            .collect::<std::collections::BTreeSet<_>>()
            .len(),
        4,
        "{plain:?}"
    );

    let c = reqwest::Client::new();
    // The shadow decides on its own thread: wait for it to have seen every round.
    let start = std::time::Instant::now();
    let r = loop {
        let r = common::get_json(&c, &sms, "/api/v1/plugins/shadow").await;
        if r["compared"].as_u64().unwrap_or(0) >= 24 {
            break r;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "{r}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(r["shadow"]["name"], "random", "{r}");
    assert_eq!(r["active"]["name"], "round-robin", "{r}");
    assert!(r["compared"].as_u64().unwrap() >= 24, "{r}");
    let rate = r["agreement_rate"].as_f64().unwrap();
    assert!(rate < 0.9, "random rarely agrees with round-robin: {r}");
    assert!(r["latency_us"]["calls"].as_u64().unwrap() >= 24, "{r}");
    assert_eq!(r["failed_requests"], 0, "{r}");
    let spread = r["spread"]["nodes"].as_array().unwrap();
    assert_eq!(spread.len(), 4, "{r}");
    let active: u64 = spread.iter().map(|n| n["active"].as_u64().unwrap()).sum();
    let shadow: u64 = spread.iter().map(|n| n["shadow"].as_u64().unwrap()).sum();
    assert_eq!((active, shadow), (24, 24), "{r}");
    for n in spread {
        assert!(nodes.iter().any(|f| f.uuid == n["node_uuid"]), "{n}");
    }
    assert_eq!(r["spread"]["active_cv"], 0.0, "round-robin: 6 each: {r}");
    let list = common::get_json(&c, &sms, "/api/v1/plugins").await;
    let state = list["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "random" && p["form"] == "component")
        .map(|p| p["state"].clone());
    assert_eq!(state, Some(json!("shadow")), "{list}");
    let metrics = common::get_text(&c, &sms, "/metrics").await;
    assert!(
        metrics.contains("sms_shadow_decisions_total{result=\"disagreed\"}"),
        "{metrics}"
    );

    // Dropped from the config: the report says so at once, without waiting for a round.
    with.write_config("[scheduler]\nstrategy = \"round-robin\"\n");
    let start = std::time::Instant::now();
    loop {
        let r = common::get_json(&c, &sms, "/api/v1/plugins/shadow").await;
        if r["shadow"].is_null() {
            assert_eq!(r["compared"], 0, "figures start over: {r}");
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "still shadowing: {r}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_hostile_shadow_is_contained_and_scheduling_goes_on() {
    let sb = Sandbox::with_plugins(
        "[scheduler]\nstrategy = \"least-connections\"\nshadow = \"hostile\"\n[scheduler.shadow_config]\nmode = \"loop\"\n",
        "call_timeout_ms = 50\nquarantine_after = 2\n",
        &[("component", "hostile.wasm")],
    );
    let sms = sb.start(&[]);
    let c = reqwest::Client::new();
    let _node = FakeNode::start(&sms.grpc_url(), &["wasm"], 64_000, RUN).await;
    let mut ids = Vec::new();
    for i in 0..20 {
        let body = json!({"executable": {"type": "wasm", "uri": "file:///tmp/x.wasm", "name": format!("h{i}")}});
        ids.push(common::submit(&c, &sms, &body).await);
    }
    for id in &ids {
        common::wait_state(&c, &sms, id, "succeeded").await;
    }
    // The shadow works through its queue on its own thread (each failing call takes its whole
    // budget, longer on a busy machine): wait for it to have been quarantined.
    let start = std::time::Instant::now();
    let r: Value = loop {
        let r = common::get_json(&c, &sms, "/api/v1/plugins/shadow").await;
        if r["failed_batches"]["quarantined"].as_u64().unwrap_or(0) >= 1 {
            break r;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "never quarantined: {r}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(r["shadow"]["name"], "hostile", "{r}");
    assert_eq!(r["compared"], 0, "it never decided: {r}");
    assert_eq!(
        r["failed_batches"]["deadline"], 2,
        "two calls past their deadline: {r}"
    );
    assert!(
        r["failed_batches"]["quarantined"].as_u64().unwrap_or(0) >= 1,
        "{r}"
    );
    let list = common::get_json(&c, &sms, "/api/v1/plugins").await;
    assert_eq!(
        list["scheduler"]["plugin"]["name"], "least-connections",
        "{list}"
    );
    assert_eq!(list["scheduler"]["quarantined"], false, "{list}");
    let metrics = common::get_text(&c, &sms, "/metrics").await;
    assert!(
        !metrics.contains("spear_plugin_fallback_decisions_total{role=\"scheduler\"}"),
        "the active strategy decided every placement: {metrics}"
    );
    assert!(
        metrics.contains("spear_plugin_fallback_decisions_total{role=\"shadow\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("sms_shadow_decisions_total{result=\"failed\"}"),
        "{metrics}"
    );
}
