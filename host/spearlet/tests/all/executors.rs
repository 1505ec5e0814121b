//! Every executor through a live cluster (SMS and a Spearlet as processes): WASM components from
//! SMS's file store, containers on a real Podman, and the errors an execution gets when its
//! executor cannot run it — without touching anything else.

use crate::common;

use std::time::Duration;

use common::{Cluster, Sms};
use serde_json::json;
use spear_tests::guest;

const LONG: Duration = Duration::from_secs(120);

async fn upload(sms: &Sms, name: &str, bytes: Vec<u8>) -> String {
    sms.upload(name, bytes).await["uri"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn wasm_components_run_from_sms_files_with_args_env_stdin_and_limits() {
    let c = Cluster::new();
    let sms = c.sms();
    let s = c.spearlet("alpha", &sms, "");
    let uri = upload(
        &sms,
        "echo.wasm",
        std::fs::read(guest("component", "wasi-echo.wasm")).unwrap(),
    )
    .await;
    let echo = json!({
        "executable": {"type": "wasm", "uri": uri, "name": "echo-app", "args": ["echo"], "env": {"GREETING": "hi"}},
        "stdin": "hello",
        "max_attempts": 1,
    });
    for _ in 0..2 {
        let id = sms.submit(echo.clone()).await;
        let e = sms.finished(&id, LONG).await;
        assert_eq!(e["state"], "succeeded", "{e}");
        let out = e["result"]["stdout"].as_str().unwrap();
        assert!(out.contains("|echo"), "{out}");
        assert!(out.contains("GREETING=hi"), "{out}");
        assert!(out.contains("stdin=hello"), "{out}");
        assert_eq!(e["result"]["stderr"], "to stderr\n");
    }
    let pools = &s.get("/api/v1/status").await["pools"];
    assert_eq!(
        (pools["cold"].as_u64(), pools["hot"].as_u64()),
        (Some(1), Some(1)),
        "{pools}"
    );

    let looping = sms
        .submit(json!({"executable": {"type": "wasm", "uri": uri, "args": ["loop"]}, "timeout_ms": 500, "max_attempts": 1}))
        .await;
    let e = sms.finished(&looping, LONG).await;
    assert_ne!(e["state"], "succeeded", "{e}");
    assert!(e["error"].as_str().unwrap().contains("timed out"), "{e}");

    // A WASI 0.2 component can only exit with success or failure (code 1).
    let exit = sms
        .submit(json!({"executable": {"type": "wasm", "uri": uri, "args": ["echo", "7"]}, "max_attempts": 1}))
        .await;
    let e = sms.finished(&exit, LONG).await;
    assert_eq!(e["state"], "failed", "{e}");
    assert_eq!(e["result"]["exit_code"], 1, "{e}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_executor_that_cannot_run_an_execution_fails_it_clearly_and_nothing_else() {
    let c = Cluster::new();
    let sms = c.sms();
    // The container executor points at an engine that is not there.
    let _s = c.spearlet(
        "alpha",
        &sms,
        "[executors.config.container]\nsocket = \"unix:///nonexistent/engine.sock\"\n",
    );
    let garbage = upload(&sms, "garbage.wasm", b"this is not wasm".to_vec()).await;
    let bad_wasm = sms
        .submit(json!({"executable": {"type": "wasm", "uri": garbage}, "max_attempts": 1}))
        .await;
    let no_engine = sms
        .submit(json!({"executable": {"type": "container", "name": "spear-busybox:latest", "args": ["true"]}, "max_attempts": 1}))
        .await;
    let fine = sms.sh("echo unaffected", json!({})).await;

    let e = sms.finished(&bad_wasm, LONG).await;
    assert_eq!(e["state"], "failed", "{e}");
    assert!(
        e["error"]
            .as_str()
            .unwrap()
            .contains("invalid configuration"),
        "{e}"
    );
    let e = sms.finished(&no_engine, LONG).await;
    assert_eq!(e["state"], "failed", "{e}");
    assert!(
        e["error"]
            .as_str()
            .unwrap()
            .contains("/nonexistent/engine.sock"),
        "{e}"
    );
    let e = sms.finished(&fine, LONG).await;
    assert_eq!(e["state"], "succeeded", "{e}");
    assert_eq!(e["result"]["stdout"], "unaffected\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn containers_run_on_podman_through_the_spearlet() {
    let podman = spear_tests::podman::podman();
    let c = Cluster::new();
    let sms = c.sms();
    let _s = c.spearlet(
        "alpha",
        &sms,
        &format!(
            "[executors.config.container]\nsocket = \"{}\"\n",
            podman.socket
        ),
    );
    let id = sms
        .submit(json!({
            "executable": {"type": "container", "name": spear_tests::podman::BUSYBOX,
                           "args": ["sh", "-c", "echo from container $GREETING; exit 4"],
                           "env": {"GREETING": "hi"}},
            "max_attempts": 1,
        }))
        .await;
    let e = sms.finished(&id, LONG).await;
    assert_eq!(e["state"], "failed", "{e}");
    assert_eq!(e["result"]["exit_code"], 4, "{e}");
    assert_eq!(e["result"]["stdout"], "from container hi\n", "{e}");
}
