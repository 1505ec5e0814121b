//! Idle live instances are paused (`spearlet.functions.pause_idle_ms`): a Python worker idle past
//! the time is stopped by the kernel (`SIGSTOP`: state `T`), shows `paused`, and the next
//! invocation resumes it with its state; a wasm instance, which its executor cannot pause, stays
//! ready.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use spear_proto::spearlet as pb;
use spear_proto::spearlet::function_service_client::FunctionServiceClient;

use crate::common::{Cluster, Spearlet, counter_task, instances, register, sample};

fn call(task: &str, function: &str) -> pb::InvokeRequest {
    pb::InvokeRequest {
        task_id: task.into(),
        function_name: function.into(),
        payload: Default::default(),
        request_id: String::new(),
        timeout_ms: 30_000,
    }
}

/// The state letter of process `pid` (`T`: stopped).
fn proc_state(pid: u32) -> char {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    stat.rsplit_once(") ").unwrap().1.chars().next().unwrap()
}

/// The worker processes the Spearlet `parent` started (command line holding `worker.py`).
fn workers(parent: u32) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let parent_field = stat
            .rsplit_once(") ")
            .and_then(|(_, rest)| rest.split_whitespace().nth(1).map(str::to_owned));
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if parent_field == Some(parent.to_string())
            && String::from_utf8_lossy(&cmd).contains("worker.py")
        {
            found.push(pid);
        }
    }
    found
}

/// `task`'s only instance on `node` once its state is `want` (within ten seconds).
async fn only_instance(node: &Spearlet, task: &str, want: &str) -> Value {
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let all = instances(node, task).await;
        if all.len() == 1 && all[0]["state"] == want {
            return all[0].clone();
        }
        assert!(Instant::now() < until, "never one {want} instance: {all:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idle_worker_is_paused_and_the_next_invocation_resumes_it_with_its_state() {
    let c = Cluster::new();
    let sms = c.sms();
    // Rounds every 100 ms; nothing reclaimed in this test's time.
    let node = c.spearlet(
        "pause",
        &sms,
        "[reclaimer]\npolicy = \"idle-time\"\ninterval_ms = 100\n\
         [reclaimer.config]\nidle_ms = 600000\nkeep_warm = 0\n\
         [spearlet.functions]\npause_idle_ms = 400\n",
    );
    let worker = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/worker-python/worker.py")
        .canonicalize()
        .unwrap();
    let py = register(
        &sms,
        json!({"name": "py", "executable": {"type": "process", "name": "/usr/bin/python3",
               "args": ["-u", worker.display().to_string()]}}),
    )
    .await;
    let wasm = counter_task(&sms).await;
    let mut f = FunctionServiceClient::connect(format!("http://{}", node.grpc))
        .await
        .unwrap();
    for n in 1..=3 {
        let r = f.invoke(call(&py, "count")).await.unwrap().into_inner();
        assert_eq!(r.output, n.to_string().as_bytes());
    }
    f.invoke(call(&wasm, "count")).await.unwrap();
    let pids = workers(node.child.id());
    assert_eq!(pids.len(), 1, "{pids:?}");

    // Idle past 400 ms: paused, and stopped by the kernel.
    only_instance(&node, &py, "paused").await;
    // (The signal is delivered after `kill(2)` returns.)
    let until = Instant::now() + Duration::from_secs(1);
    while proc_state(pids[0]) != 'T' {
        assert!(Instant::now() < until, "the paused worker runs on");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let text = node.text("/metrics").await;
    assert!(
        sample(&text, "spearlet_instances_paused_total") >= 1.0,
        "{text}"
    );
    assert_eq!(sample(&text, "spearlet_instances_resumed_total"), 0.0);
    assert!(
        text.contains("spearlet_instances{state=\"paused\"} 1"),
        "{text}"
    );

    // The next invocation resumes it: same process, same state.
    let r = f.invoke(call(&py, "count")).await.unwrap().into_inner();
    assert_eq!(&r.output[..], b"4", "the paused worker kept its count");
    assert_eq!(r.tier, "warm");
    assert_eq!(workers(node.child.id()), pids, "the same process");
    let text = node.text("/metrics").await;
    assert_eq!(sample(&text, "spearlet_instances_resumed_total"), 1.0);
    let status = node.get("/api/v1/status").await;
    assert_eq!(status["pools"]["resumed"], 1, "{status}");
    assert!(status["pools"]["paused"].as_u64().unwrap() >= 1, "{status}");

    // A wasm instance cannot be paused: it stays ready.
    let shown = only_instance(&node, &wasm, "ready").await;
    assert_eq!(shown["executor"], "wasm");
    tokio::time::sleep(Duration::from_millis(800)).await;
    only_instance(&node, &wasm, "ready").await;

    // Paused again, then reclaimed at a drain: the process goes.
    only_instance(&node, &py, "paused").await;
    let mut node = node;
    assert!(node.terminate().success());
    assert!(
        !std::path::Path::new(&format!("/proc/{}", pids[0])).exists() || proc_state(pids[0]) == 'Z',
        "the paused worker is gone with its node"
    );
}
