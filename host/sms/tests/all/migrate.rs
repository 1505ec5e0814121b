//! `sms storage migrate`: a redb store moved to etcd, and back, whole; refused into a store that
//! is not empty and out of one an SMS replica leads on. (And `sms token` refuses etcd.)

use crate::common::{self, Sandbox};
use crate::paging::submit;
use crate::retention::{succeeding_node, wait_for};

use std::process::{Command, Output};

use serde_json::json;
use spear_proto::v1;
use spear_tests::etcd::EtcdCluster;

/// `sms storage migrate ARGS` with the plugins and config of `sb`.
fn migrate(sb: &Sandbox, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sms"))
        .current_dir(sb.path())
        .arg("--config")
        .arg(sb.config())
        .args(["storage", "migrate"])
        .args(args)
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redb_store_moves_to_etcd_and_back_whole() {
    let cluster = EtcdCluster::start(1);
    let endpoints = cluster.endpoints();
    let etcd = format!("etcd:{}", endpoints.join(","));
    // State on redb: executions finished and queued, a task.
    let sb = Sandbox::new("");
    let sms = sb.start(&[]);
    let c = reqwest::Client::new();
    let node = succeeding_node(&sms, v1::ExecutionResult::default(), None).await;
    let done = submit(&c, &sms, 5, "moved").await;
    let last = done.last().unwrap().clone();
    wait_for(&c, &sms, &format!("/api/v1/executions/{last}"), |e| {
        e["state"] == "succeeded"
    })
    .await;
    node.abort();
    let body = json!({"executable": {"type": "process", "uri": "file:///bin/true"}});
    let queued = vec![common::submit(&c, &sms, &body).await];
    let task = common::post_json(
        &c,
        &sms,
        "/api/v1/tasks",
        &json!({"name": "moved-task", "executable": {"type": "wasm", "uri": "file:///t.wasm"}}),
    )
    .await;
    assert_eq!(task.0, 200);
    assert!(sms.terminate().success());
    let redb = format!("redb:{}", sb.path().join("data/sms.redb").display());

    // redb → etcd, with the plugins of a sandbox that has both.
    let on_etcd = Sandbox::on_etcd("", &endpoints, "moved/");
    let out = migrate(
        &on_etcd,
        &["--from", &redb, "--to", &etcd, "--to-prefix", "moved/"],
    );
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && said.contains("copied"), "{said}");
    // Not twice: the target is no longer empty.
    let again = migrate(
        &on_etcd,
        &["--from", &redb, "--to", &etcd, "--to-prefix", "moved/"],
    );
    let said = String::from_utf8_lossy(&again.stderr);
    assert!(
        !again.status.success() && said.contains("not empty"),
        "{said}"
    );

    // `sms token` works on a stopped SMS's own store: on etcd, replicas run on: refused.
    let tokens = Command::new(env!("CARGO_BIN_EXE_sms"))
        .current_dir(on_etcd.path())
        .arg("--config")
        .arg(on_etcd.config())
        .args(["token", "list"])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&tokens.stderr);
    assert!(
        !tokens.status.success() && said.contains("spear token"),
        "{said}"
    );

    let sms = on_etcd.start(&[]).leading().await;
    common::assert_states(&c, &sms, &done, "succeeded").await;
    common::assert_states(&c, &sms, &queued, "ready").await;
    let tasks = common::get_json(&c, &sms, "/api/v1/tasks").await;
    assert!(tasks.to_string().contains("moved-task"), "{tasks}");
    // Out of a store an SMS leads on: refused.
    let back = Sandbox::new("");
    let back_redb = format!("redb:{}", back.path().join("data/back.redb").display());
    let args = [
        "--from",
        etcd.as_str(),
        "--from-prefix",
        "moved/",
        "--to",
        back_redb.as_str(),
    ];
    let refused = migrate(&on_etcd, &args);
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && said.contains("leads on it"),
        "{said}"
    );
    // Stopped (its lease revoked), the store moves back to redb whole.
    assert!(sms.terminate().success());
    let out = migrate(&on_etcd, &args);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{said}");
    std::fs::rename(
        back.path().join("data/back.redb"),
        back.path().join("data/sms.redb"),
    )
    .unwrap();
    let sms = back.start(&[]);
    common::assert_states(&c, &sms, &done, "succeeded").await;
    common::assert_states(&c, &sms, &queued, "ready").await;
}
