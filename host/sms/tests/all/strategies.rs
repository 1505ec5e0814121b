//! The built-in strategies added for the scheduler issue, selected by config on a real `sms` with
//! fake Spearlets (their decisions, form by form, are checked in `tests/all/conformance.rs`).

use crate::common;

use std::time::Duration;

use common::Sandbox;
use common::fake_node::{Behaviour, FakeNode};
use serde_json::json;

const RUN: Behaviour = Behaviour::Run {
    hold: Duration::ZERO,
};

async fn run_all(c: &reqwest::Client, sms: &common::Sms, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..n {
        let body = json!({"executable": {"type": "wasm", "uri": "file:///tmp/x.wasm", "name": format!("w{i}")}});
        ids.push(common::submit(c, sms, &body).await);
    }
    for id in &ids {
        common::wait_state(c, sms, id, "succeeded").await;
    }
    ids
}

#[tokio::test]
async fn weighted_round_robin_shares_work_by_the_nodes_weight_labels() {
    let sb = Sandbox::new("[scheduler]\nstrategy = \"weighted-round-robin\"\n");
    let sms = sb.start(&[]);
    let c = reqwest::Client::new();
    let heavy =
        FakeNode::start_labelled(&sms.grpc_url(), &["wasm"], 64_000, &[("weight", "3")], RUN).await;
    let light =
        FakeNode::start_labelled(&sms.grpc_url(), &["wasm"], 64_000, &[("weight", "1")], RUN).await;
    let idle =
        FakeNode::start_labelled(&sms.grpc_url(), &["wasm"], 64_000, &[("weight", "0")], RUN).await;
    run_all(&c, &sms, 40).await;
    assert_eq!(
        (
            heavy.received().len(),
            light.received().len(),
            idle.received().len()
        ),
        (30, 10, 0),
        "3:1, and weight 0 takes nothing"
    );
}

#[tokio::test]
async fn random_places_everything_over_every_node() {
    let sb = Sandbox::new(
        "[scheduler]\nstrategy = \"random\"\n[scheduler.config]\nseed = 11\npower_of_two = true\n",
    );
    let sms = sb.start(&[]);
    let c = reqwest::Client::new();
    let mut nodes = Vec::new();
    for _ in 0..3 {
        nodes.push(FakeNode::start(&sms.grpc_url(), &["wasm"], 64_000, RUN).await);
    }
    run_all(&c, &sms, 30).await;
    let got: Vec<usize> = nodes.iter().map(|n| n.received().len()).collect();
    assert_eq!(got.iter().sum::<usize>(), 30);
    assert!(got.iter().all(|n| *n > 0), "every node drawn: {got:?}");
}
