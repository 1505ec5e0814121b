//! Reclamation frees what live instances hold: 100 wasm instances of a real Spearlet, each
//! holding 3 MiB, and 20 Python workers are stopped by the `idle-time` policy; the Spearlet's
//! resident memory drops by most of what the instances held, and the workers' processes are gone.
//! (The exact figures are `cargo bench -p spear-tests --bench reclaim_memory`'s.)

use std::time::{Duration, Instant};

use serde_json::json;
use spear_proto::spearlet as pb;
use spear_proto::spearlet::function_service_client::FunctionServiceClient;
use spear_tests::guest;

use crate::common::{Cluster, Spearlet};

/// Resident memory of process `pid`, in bytes (0 when it is gone).
fn rss(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// The live children of `parent` whose command line contains `needle`.
fn children(parent: u32, needle: &str) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let Some(after) = stat.rsplit_once(')').map(|(_, a)| a.to_owned()) else {
            continue;
        };
        let fields: Vec<&str> = after.split_whitespace().collect();
        // State is field 3, the parent field 4 (after the command's closing parenthesis).
        if fields.first() == Some(&"Z") || fields.get(1) != Some(&parent.to_string().as_str()) {
            continue;
        }
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmd).contains(needle) {
            found.push(pid);
        }
    }
    found
}

async fn live(node: &Spearlet, task: &str) -> usize {
    let all = node.get("/api/v1/instances").await;
    all["instances"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["task"] == format!("fn:{task}"))
        .count()
}

/// Start `n` instances of `task` at once: `n` asynchronous invocations of `function` that each
/// hold their instance for a while, then wait for all of them.
async fn fill(node: &Spearlet, task: &str, n: usize, function: &str, payload: &[u8]) {
    let mut f = FunctionServiceClient::connect(format!("http://{}", node.grpc))
        .await
        .unwrap();
    for i in 0..n {
        f.invoke_async(pb::InvokeRequest {
            task_id: task.into(),
            function_name: function.into(),
            payload: payload.to_vec().into(),
            request_id: format!("{task}-{i}"),
            timeout_ms: 120_000,
        })
        .await
        .unwrap();
    }
    for i in 0..n {
        let end = f
            .get_result(pb::GetResultRequest {
                request_id: format!("{task}-{i}"),
                wait_ms: 60_000,
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(end.state(), pb::InvocationState::Succeeded, "{end:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn reclaiming_live_instances_returns_their_memory_and_stops_their_workers() {
    let c = Cluster::new();
    let sms = c.sms();
    let config = c
        .spearlet_config(
            "rss",
            "[reclaimer]\npolicy = \"idle-time\"\ninterval_ms = 200\n\
             [reclaimer.config]\nidle_ms = 15000\nkeep_warm = 0\n",
        )
        .replace("max_instances_per_task = 4", "max_instances_per_task = 100");
    let node = c.spearlet_from("rss", &sms, &config);
    let pid = node.child.id();
    let bytes = std::fs::read(guest("component", "function-counter.wasm")).unwrap();
    let meta = sms.upload("function-counter.wasm", bytes).await;
    let (status, t) = sms
        .post(
            "/api/v1/tasks",
            json!({"name": "holder", "executable": {"type": "wasm", "uri": meta["uri"]}}),
        )
        .await;
    assert_eq!(status, 200, "{t}");
    let wasm = t["task_id"].as_str().unwrap().to_owned();
    let worker = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/worker-python/worker.py")
        .canonicalize()
        .unwrap();
    let (status, t) = sms
        .post(
            "/api/v1/tasks",
            json!({"name": "py", "executable": {"type": "process", "name": "/usr/bin/python3",
                   "args": ["-u", worker.display().to_string()]}}),
        )
        .await;
    assert_eq!(status, 200, "{t}");
    let py = t["task_id"].as_str().unwrap().to_owned();

    let idle = rss(pid);
    // Each holds 3 MiB for 2 s: a hundred at once need a hundred instances.
    fill(&node, &wasm, 100, "hold", b"3,2000").await;
    fill(&node, &py, 20, "sleep", b"2000").await;
    let instances = live(&node, &wasm).await;
    assert!(instances >= 90, "{instances} wasm instances");
    assert_eq!(live(&node, &py).await, 20);
    let workers = children(pid, "worker.py");
    assert_eq!(workers.len(), 20, "{workers:?}");
    let full = rss(pid);
    let held = full.saturating_sub(idle);
    assert!(
        held >= 200 << 20,
        "{instances} instances holding 3 MiB each: {held} bytes more than idle"
    );

    // Idle for 15 s (long enough for both fills to end first on a busy machine), they are
    // reclaimed: their memory goes back, their processes end.
    let until = Instant::now() + Duration::from_secs(60);
    while live(&node, &wasm).await + live(&node, &py).await > 0 {
        assert!(Instant::now() < until, "not reclaimed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let until = Instant::now() + Duration::from_secs(10);
    while !children(pid, "worker.py").is_empty() {
        assert!(
            Instant::now() < until,
            "workers left: {:?}",
            children(pid, "worker.py")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let after = rss(pid);
    let freed = full.saturating_sub(after);
    eprintln!(
        "spearlet RSS: idle {} MiB, with {instances} instances {} MiB, after reclaiming {} MiB",
        idle >> 20,
        full >> 20,
        after >> 20
    );
    assert!(
        freed >= held / 2,
        "reclaiming freed {freed} of the {held} bytes the instances held"
    );
}
