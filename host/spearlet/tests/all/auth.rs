//! A cluster with SMS's auth on: a Spearlet with a node token registers, takes work, fetches its
//! artifact from SMS's file route with the token, and reports; one without a token is refused at
//! start with what to set. SMS and the Spearlet as processes on loopback.

use crate::common;

use std::time::Duration;

use common::Cluster;
use serde_json::{Value, json};

const ADMIN: &str = "bootstrap-admin-token-for-the-cluster-01";

async fn make_token(sms: &common::Sms, name: &str, role: &str) -> String {
    let (status, v) = sms
        .post("/api/v1/tokens", json!({ "name": name, "role": role }))
        .await;
    assert_eq!(status, 201, "{v}");
    v["token"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_secured_cluster_runs_work_with_node_and_operator_tokens() {
    let c = Cluster::new();
    let mut sms = c.sms_secured(ADMIN);
    let node_token = make_token(&sms, "alpha", "node").await;
    let operator = make_token(&sms, "deployer", "operator").await;

    // Without a token the Spearlet is refused at start, and says what to set.
    let config = c.write("alpha.toml", &c.spearlet_config("alpha", ""));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_spearlet"))
        .current_dir(c.path())
        .arg("--config")
        .arg(&config)
        .args(["--sms-addr", &sms.grpc.to_string(), "--auto-register"])
        .env("SPEARLET_LOG", "warn")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("registration refused"), "{err}");
    assert!(err.contains("SPEARLET_SMS_TOKEN"), "{err}");

    // With its node token (from a file) it registers and is bound to it.
    std::fs::write(c.path().join("alpha.token"), format!("{node_token}\n")).unwrap();
    let text = c.spearlet_config("alpha", "").replacen(
        "[spearlet]\n",
        &format!(
            "[spearlet]\nsms_token_file = \"alpha.token\"\nsms_http_addr = \"{}\"\n",
            sms.http
        ),
        1,
    );
    let spearlet = c.spearlet_from("alpha", &sms, &text);
    let tokens = sms.get("/api/v1/tokens").await;
    let alpha = tokens["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "alpha")
        .cloned()
        .unwrap_or(Value::Null);
    assert_eq!(alpha["node"], spearlet.node.as_str(), "{tokens}");

    // The operator submits work that comes as an artifact from SMS's file route.
    sms.token = Some(operator);
    let meta = sms
        .upload("hello.sh", b"#!/bin/sh\necho secured \"$@\"\n".to_vec())
        .await;
    let uri = meta["uri"].as_str().unwrap().to_owned();
    assert!(uri.starts_with("sms+file://"), "{meta}");
    let id = sms
        .submit(json!({
            "executable": {"type": "process", "uri": uri, "args": ["run"]},
            "max_attempts": 1,
        }))
        .await;
    let e = sms.finished(&id, Duration::from_secs(60)).await;
    assert_eq!(e["state"], "succeeded", "{e}");
    assert_eq!(e["result"]["stdout"], "secured run\n");
    assert_eq!(e["node_uuid"], spearlet.node.as_str());
    // The Spearlet's own HTTP, on loopback, answers loopback names only (no DNS rebinding).
    let status = format!("http://{}/api/v1/status", spearlet.http);
    let c = reqwest::Client::new();
    let r = c.get(&status).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = c
        .get(&status)
        .header("host", "rebound.example")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    // The operator cannot make tokens.
    let (status, _) = sms
        .post("/api/v1/tokens", json!({ "name": "x", "role": "admin" }))
        .await;
    assert_eq!(status, 403);
}
