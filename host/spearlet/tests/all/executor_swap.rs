//! Executors swap live (issue 13): a config reload that changes `[executors]` puts a new
//! executor in force without a restart. An invocation running meanwhile finishes on the old one;
//! the next starts a new instance on the new one, which has the new configuration. A reload whose
//! executor configuration is refused is rejected, naming the key, and changes nothing.

use std::time::Duration;

use serde_json::{Value, json};
use spear_proto::spearlet as pb;
use spear_proto::spearlet::function_service_client::FunctionServiceClient;

use crate::common::{Cluster, Sms, Spearlet, instances};

fn python_worker() -> String {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/worker-python/worker.py")
        .canonicalize()
        .unwrap()
        .display()
        .to_string()
}

fn executors(env_allow: &str) -> String {
    format!(
        "[executors]\nenabled = [\"process\"]\n[executors.config.process]\nenv_allow = {env_allow}\n"
    )
}

async fn reload(node: &Spearlet) -> Value {
    let r = reqwest::Client::new()
        .post(format!("http://{}/api/v1/plugins/reload", node.http))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    r.json().await.unwrap()
}

/// The number of `task`'s instances once it is `want`, or after five seconds.
async fn instances_become(node: &Spearlet, task: &str, want: usize) -> usize {
    let mut count = usize::MAX;
    for _ in 0..50 {
        let all = node.get("/api/v1/instances").await;
        count = all["instances"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|i| i["task"] == format!("fn:{task}"))
            .count();
        if count == want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    count
}

fn call(task: &str, function: &str, payload: &[u8]) -> pb::InvokeRequest {
    pb::InvokeRequest {
        task_id: task.into(),
        function_name: function.into(),
        payload: payload.to_vec().into(),
        timeout_ms: 20_000,
        ..Default::default()
    }
}

/// A Spearlet `name` whose only executor is `process` letting `allow` through, and the Python
/// worker registered as a task at its SMS.
async fn python_task_on(name: &str, allow: &str) -> (Cluster, Sms, Spearlet, String) {
    let c = Cluster::new();
    let sms = c.sms();
    let config = c.spearlet_config(name, &executors(&format!("[\"{allow}\"]")));
    let node = c.spearlet_from(name, &sms, &config);
    let (status, v) = sms
        .post(
            "/api/v1/tasks",
            json!({"name": "py", "executable": {"type": "process", "name": "/usr/bin/python3",
                   "args": ["-u", python_worker()]}}),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let task = v["task_id"].as_str().unwrap().to_owned();
    (c, sms, node, task)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_config_reload_swaps_the_process_executor_live() {
    let (c, _sms, node, task) = python_task_on("swap", "LANG").await;
    let mut f = FunctionServiceClient::connect(format!("http://{}", node.grpc))
        .await
        .unwrap();
    let before = f
        .invoke(call(&task, "env", b"PATH"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(&before.output[..], b"", "PATH is not let through yet");
    // An invocation that runs across the swap.
    let mut slow = f.clone();
    let long = call(&task, "sleep", b"4000");
    let running = tokio::spawn(async move { slow.invoke(long).await });
    tokio::time::sleep(Duration::from_millis(300)).await;

    std::fs::write(
        c.path().join("swap.toml"),
        c.spearlet_config("swap", &executors("[\"PATH\"]")),
    )
    .unwrap();
    // The config file is watched: the reload may be the watcher's or this one.
    reload(&node).await;
    let report = node.reloaded("swapped live").await;
    assert_eq!(report["outcome"], "applied", "{report}");
    // Meanwhile its instance is cooling down: it serves no new invocation and stops after this.
    let until = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let all = instances(&node, &task).await;
        if let Some(i) = all.iter().find(|i| i["state"] == "cooling-down") {
            assert_eq!(
                (&i["state"], &i["function"]),
                (&json!("cooling-down"), &json!("sleep")),
                "{all:?}"
            );
            break;
        }
        assert!(
            std::time::Instant::now() < until,
            "never cooling down: {all:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let slept = running
        .await
        .unwrap()
        .expect("the running invocation finishes on the old executor");
    assert_eq!(&slept.into_inner().output[..], b"slept");
    let after = f
        .invoke(call(&task, "env", b"PATH"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        after.output,
        std::env::var("PATH").unwrap().as_bytes(),
        "a new instance on the new executor"
    );
    assert_ne!(after.instance, before.instance);
    assert_eq!(after.tier, "cold");
    // The old executor's instances are gone (the one that slept, once it was given back).
    assert_eq!(instances_become(&node, &task, 1).await, 1);

    // A configuration the executor refuses rejects the reload, and the executor in force stays.
    std::fs::write(
        c.path().join("swap.toml"),
        c.spearlet_config("swap", &executors("[\"A=B\"]")),
    )
    .unwrap();
    reload(&node).await;
    let report = node.reloaded("executors.config.process").await;
    assert_eq!(report["outcome"], "rejected", "{report}");
    assert!(
        report["error"].to_string().contains("env_allow"),
        "{report}"
    );
    let again = f
        .invoke(call(&task, "env", b"PATH"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.output, std::env::var("PATH").unwrap().as_bytes());
    assert_eq!(again.instance, after.instance, "nothing was swapped");
}

/// A replaced executor file is swapped in within seconds (the plugin directory is watched): new
/// invocations start on it, the idle instance of the old one is stopped.
#[tokio::test(flavor = "multi_thread")]
async fn a_replaced_executor_file_is_swapped_in_live() {
    let (c, _sms, node, task) = python_task_on("drop", "PATH").await;
    let mut f = FunctionServiceClient::connect(format!("http://{}", node.grpc))
        .await
        .unwrap();
    let first = f
        .invoke(call(&task, "count", b""))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(&first.output[..], b"1");
    let sha = |status: &Value| {
        status["executors"][0]["sha256"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let built_in = sha(&node.get("/api/v1/status").await);

    // Another build of the executor: the same library with bytes appended (another sha256).
    let mut other = std::fs::read(spear_tests::guest("native", "process.so")).unwrap();
    other.extend_from_slice(b"\0another build of the process executor");
    let tmp = c.path().join("process.so.new");
    std::fs::write(&tmp, &other).unwrap();
    std::fs::rename(&tmp, c.path().join("plugins/process.so")).unwrap();
    let mut swapped = String::new();
    for _ in 0..100 {
        swapped = sha(&node.get("/api/v1/status").await);
        if swapped != built_in {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_ne!(
        swapped,
        built_in,
        "the file's executor is in force: {}\n{}",
        node.get("/api/v1/plugins").await,
        node.log()
    );
    // The built-in's idle worker is stopped by the swap, before any invocation.
    assert_eq!(
        instances_become(&node, &task, 0).await,
        0,
        "the old executor's idle instance is stopped"
    );
    let next = f
        .invoke(call(&task, "count", b""))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(&next.output[..], b"1", "a new worker on the new executor");
    assert_ne!(next.instance, first.instance);
}
