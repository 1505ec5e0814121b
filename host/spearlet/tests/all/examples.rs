//! The example plugins of `examples/` (built into `target/examples/` by `examples/build.sh`, which
//! `./run-tests.sh` runs first), each through `spear plugin check` and a live host: every `pack-*`
//! strategy places executions in a real `sms` process, `max-age` reclaims instances in a real
//! `spearlet`, `oldest-wait` sizes a real `sms`'s pool of Spearlet processes, and `kv-python`
//! holds a real `sms`'s state while a Spearlet runs its executions.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::Cluster;
use serde_json::{Value, json};
use spear_proto::v1;
use tokio_stream::StreamExt;

const LONG: Duration = Duration::from_secs(60);

/// Every `pack-*` strategy, with the memory limit (MiB) its language runtime needs (interpreters
/// start bigger). Deadlines are generous for all: a loaded test machine must not push a decision
/// into the fallback; the language's speed is measured by `cargo bench --bench examples`.
const PACKS: &[(&str, u64)] = &[
    ("pack-rust.wasm", 64),
    ("pack-rust-extism.wasm", 64),
    ("pack-native.so", 64),
    ("pack-c.wasm", 64),
    ("pack-assemblyscript.wasm", 64),
    ("pack-python.wasm", 256),
    ("pack-js.wasm", 256),
];

/// The per-call deadline given to every example, in milliseconds.
const CALL_TIMEOUT_MS: u64 = 1000;

fn example(file: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../target/examples")
        .join(file);
    assert!(
        path.is_file(),
        "{} is missing: build the examples with `examples/build.sh` (./run-tests.sh does)",
        path.display()
    );
    path
}

/// `spear`, built beside `spearlet` by `cargo test --workspace`.
fn spear_bin() -> PathBuf {
    let path = Path::new(env!("CARGO_BIN_EXE_spearlet")).with_file_name("spear");
    assert!(
        path.is_file(),
        "{} is missing: build it with `cargo build -p spear-cli` (cargo test --workspace does)",
        path.display()
    );
    path
}

/// `spear --output json plugin check FILE --config CONFIG`: (exit code, report).
fn check(file: &Path, config: &str, memory_mb: u64) -> (i32, Value) {
    let out = Command::new(spear_bin())
        .args(["--output", "json", "plugin", "check"])
        .arg(file)
        .args(["--config", config])
        .args(["--call-timeout-ms", &CALL_TIMEOUT_MS.to_string()])
        .args(["--memory-limit-mb", &memory_mb.to_string()])
        .env("SPEAR_LOG", "off")
        .output()
        .unwrap();
    let report = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{}: not JSON ({e}): {}",
            file.display(),
            String::from_utf8_lossy(&out.stdout)
        )
    });
    (out.status.code().unwrap_or(-1), report)
}

#[test]
fn every_example_passes_spear_plugin_check_and_bad_configs_are_refused() {
    let mut all: Vec<(&str, u64)> = PACKS.to_vec();
    all.push(("max-age.wasm", 64));
    all.push(("oldest-wait.wasm", 64));
    for (file, memory_mb) in all {
        let name = file.rsplit_once('.').unwrap().0;
        let (code, report) = check(&example(file), "{}", memory_mb);
        assert_eq!(code, 0, "{file}: {report}");
        assert_eq!(report["ok"], true, "{file}: {report}");
        assert_eq!(report["name"], name, "{file}: {report}");
        assert_eq!(report["version"], "0.1.0", "{file}: {report}");
        let (bad, why) = if name == "max-age" {
            (r#"{"max_age_ms": 0}"#, "max_age_ms")
        } else if name == "oldest-wait" {
            (r#"{"max_wait_ms": 0}"#, "max_wait_ms: must be at least 1")
        } else {
            (
                r#"{"max_active": 0}"#,
                "max_active: must be a positive integer",
            )
        };
        let (code, report) = check(&example(file), bad, memory_mb);
        assert_eq!(code, 1, "{file} took {bad}: {report}");
        let error = report["error"].as_str().unwrap_or_default();
        assert!(error.contains(why), "{file}: {error}");
    }
}

/// A node that registers over gRPC, heartbeats its running count and records what it receives
/// (but runs nothing), so that placements show exactly what the strategy decided.
struct FakeNode {
    uuid: String,
    received: Arc<Mutex<Vec<String>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl FakeNode {
    async fn start(grpc: &str) -> Self {
        let url = format!("http://{grpc}");
        let mut nodes = v1::node_service_client::NodeServiceClient::connect(url.clone())
            .await
            .unwrap();
        let capacity = v1::Resources {
            cpu_millis: 4000,
            memory_mb: 4096,
            disk_mb: 0,
        };
        let uuid = nodes
            .register_node(v1::RegisterNodeRequest {
                ip_address: "127.0.0.1".into(),
                port: 9000,
                capacity: Some(capacity),
                executors: vec!["process".into()],
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .uuid;
        let mut execs = v1::execution_service_client::ExecutionServiceClient::connect(url)
            .await
            .unwrap();
        let mut stream = execs
            .assignments(v1::AssignmentsRequest {
                node_uuid: uuid.clone(),
                after: 0,
            })
            .await
            .unwrap()
            .into_inner();
        let received = Arc::new(Mutex::new(Vec::new()));
        let seen = received.clone();
        let listen = tokio::spawn(async move {
            while let Some(Ok(a)) = stream.next().await {
                seen.lock().unwrap().push(a.execution.unwrap().execution_id);
            }
        });
        let (seen, id) = (received.clone(), uuid.clone());
        let beat = tokio::spawn(async move {
            loop {
                let running = seen.lock().unwrap().len() as u32;
                let _ = nodes
                    .heartbeat(v1::HeartbeatRequest {
                        uuid: id.clone(),
                        available: Some(capacity),
                        running,
                        ..Default::default()
                    })
                    .await;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        Self {
            uuid,
            received,
            tasks: vec![listen, beat],
        }
    }

    fn received(&self) -> Vec<String> {
        self.received.lock().unwrap().clone()
    }
}

impl Drop for FakeNode {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_pack_strategy_packs_executions_in_a_live_sms() {
    for &(file, memory_mb) in PACKS {
        let name = file.rsplit_once('.').unwrap().0;
        let c = Cluster::new();
        std::fs::copy(example(file), c.path().join("plugins").join(file)).unwrap();
        let sms = c.sms_with(
            "127.0.0.1:0",
            "127.0.0.1:0",
            &format!(
                "call_timeout_ms = {CALL_TIMEOUT_MS}\nsetup_timeout_ms = 10000\nmemory_limit_mb = {memory_mb}\n\
                 [scheduler]\nstrategy = \"{name}\"\n[scheduler.config]\nmax_active = 2\n"
            ),
        );
        let plugins = sms.get("/api/v1/plugins").await;
        assert!(
            plugins.to_string().contains(name),
            "{name} is not loaded: {plugins}"
        );
        let grpc = sms.grpc.to_string();
        let nodes = [FakeNode::start(&grpc).await, FakeNode::start(&grpc).await];
        // One at a time, each placed and heartbeaten before the next, so every decision sees the
        // node's real load.
        let mut placed_on = Vec::new();
        for i in 0..4 {
            let id = sms.sh("true", json!({})).await;
            let deadline = Instant::now() + LONG;
            let node = loop {
                if let Some(n) = nodes.iter().find(|n| n.received().contains(&id)) {
                    break n.uuid.clone();
                }
                let e = sms.execution(&id).await;
                assert!(Instant::now() < deadline, "{name}: #{i} never placed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            };
            placed_on.push(node);
            tokio::time::sleep(Duration::from_millis(600)).await;
        }
        // Packing: the first node takes work up to max_active, then the other.
        assert_eq!(placed_on[0], placed_on[1], "{name}: {placed_on:?}");
        assert_eq!(placed_on[2], placed_on[3], "{name}: {placed_on:?}");
        assert_ne!(placed_on[0], placed_on[2], "{name}: {placed_on:?}");
        // Both nodes are full: the fifth waits.
        let fifth = sms.sh("true", json!({})).await;
        tokio::time::sleep(Duration::from_millis(1000)).await;
        let e = sms.execution(&fifth).await;
        assert_eq!(e["state"], "ready", "{name}: {e}");
        assert!(
            nodes.iter().all(|n| n.received().len() == 2),
            "{name}: {:?}",
            nodes.iter().map(FakeNode::received).collect::<Vec<_>>()
        );
        // Every decision was the plugin's own, none the fallback's.
        let metrics = reqwest::get(sms.url("/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            !metrics.contains("spear_plugin_fallback_decisions_total{"),
            "{name}: the fallback decided: {metrics}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_max_age_policy_reclaims_instances_in_a_live_spearlet() {
    let c = Cluster::new();
    std::fs::copy(
        example("max-age.wasm"),
        c.path().join("plugins/max-age.wasm"),
    )
    .unwrap();
    let sms = c.sms();
    let s = c.spearlet(
        "alpha",
        &sms,
        "call_timeout_ms = 1000\n[scheduler]\nstrategy = \"least-connections\"\n\
         [reclaimer]\npolicy = \"max-age\"\ninterval_ms = 100\n\
         [reclaimer.config]\nmax_age_ms = 3000\n",
    );
    let plugins = s.get("/api/v1/plugins").await;
    assert!(plugins.to_string().contains("max-age"), "{plugins}");
    let id = sms.sh("exit 0", json!({})).await;
    assert_eq!(sms.finished(&id, LONG).await["state"], "succeeded");
    // The instance stays warm after its run (younger than max_age_ms), then is recycled.
    let first = s.get("/api/v1/instances").await;
    let instances = first["instances"].as_array().unwrap();
    assert_eq!(instances.len(), 1, "{first}");
    let deadline = Instant::now() + LONG;
    loop {
        let now = s.get("/api/v1/instances").await;
        if now["instances"].as_array().unwrap().is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "max-age did not reclaim: {now}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_oldest_wait_autoscaler_sizes_a_live_sms_pool() {
    use crate::autoscaler::{Started, process_alive, scale_script, status_until};
    let c = Cluster::new();
    std::fs::copy(
        example("oldest-wait.wasm"),
        c.path().join("plugins/oldest-wait.wasm"),
    )
    .unwrap();
    let dir = c.path().to_path_buf();
    let _started = Started(dir.clone());
    c.write("scale.sh", &scale_script(env!("CARGO_BIN_EXE_spearlet")));
    c.write("auto.toml", &c.spearlet_config("auto", ""));
    let sms = c.sms_full(
        "127.0.0.1:0",
        "127.0.0.1:0",
        "call_timeout_ms = 1000\n[scheduler]\nstrategy = \"least-connections\"\n",
        "[autoscaler]\npolicy = \"oldest-wait\"\ninterval_ms = 200\nmin = 0\nmax = 2\n\
         scale_down_delay_ms = 1000\ncooldown_ms = 300\n\
         [autoscaler.config]\nmax_wait_ms = 500\nstep = 1\n\
         [autoscaler.provider]\nkind = \"exec\"\ncommand = [\"/bin/sh\", \"scale.sh\"]\n",
        &[],
    );
    // No node at all: the run waits, past max_wait_ms, and the policy adds one node.
    let run = sms.sh("sleep 1; echo served", json!({})).await;
    let grown = status_until(&sms, "a node", |s| {
        s["nodes"].as_array().unwrap().len() == 1 && s["nodes"][0]["registered"] == true
    })
    .await;
    assert_eq!(grown["policy"], "oldest-wait", "{grown}");
    let node = grown["nodes"][0]["uuid"].as_str().unwrap().to_owned();
    let done = sms.finished(&run, LONG).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(done["node_uuid"], node.as_str(), "{done}");
    let waited =
        done["assigned_at_ms"].as_i64().unwrap() - done["submitted_at_ms"].as_i64().unwrap();
    assert!(waited >= 500, "it waited {waited} ms before the pool grew");
    // Idle for the delay, with `min = 0`: drained, stopped, gone.
    status_until(&sms, "an empty pool", |s| {
        s["nodes"].as_array().unwrap().is_empty()
    })
    .await;
    assert!(!process_alive(&dir, &node));
    sms.node_status(&node, "absent", LONG).await;

    // Hot reload: another policy (the built-in), and new settings of its own, while SMS runs.
    // (Written whole, by rename: the watcher never reads half a file.)
    let text = std::fs::read_to_string(c.path().join("sms.toml")).unwrap();
    c.write(
        "sms.toml",
        &text
            .replace("policy = \"oldest-wait\"", "policy = \"queue-depth\"")
            .replace("max_wait_ms = 500\nstep = 1\n", "tasks_per_node = 2\n"),
    );
    // (The config file is watched: the watcher may apply it before the request does.)
    let (status, report) = sms.post("/api/v1/plugins/reload", json!({})).await;
    assert_eq!(status, 200, "{report}");
    let history = sms.get("/api/v1/plugins/history").await;
    let report = history["reloads"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .find(|r| r["outcome"] == "applied")
        .cloned()
        .unwrap_or_else(|| panic!("no applied reload: {history}"));
    assert!(
        report["active"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["role"] == "autoscaler" && a["name"] == "queue-depth"),
        "{report}"
    );
    assert!(
        report["restart_keys"].as_array().unwrap().is_empty(),
        "the policy and its config need no restart: {report}"
    );
    let swapped = sms.get("/api/v1/autoscaler").await;
    assert_eq!(swapped["policy"], "queue-depth", "{swapped}");
    let plugins = sms.get("/api/v1/plugins").await;
    assert_eq!(
        plugins["autoscaler"]["plugin"]["name"], "queue-depth",
        "{plugins}"
    );
    assert_eq!(
        plugins["autoscaler"]["config"], "{\"tasks_per_node\":2}",
        "{plugins}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_python_storage_backend_passes_its_check_and_holds_a_live_smss_state() {
    let file = example("kv-python.wasm");
    let (code, report) = check(&file, "{}", 64);
    assert_eq!(code, 0, "{report}");
    assert_eq!(
        (&report["name"], &report["kind"], &report["form"]),
        (
            &json!("kv-python"),
            &json!("storage-backend"),
            &json!("component")
        ),
        "{report}"
    );
    assert!(
        report["smoke_test"]
            .as_str()
            .unwrap_or_default()
            .contains("compare-and-swap"),
        "{report}"
    );
    // The conformance suite's storage contract, through the runtime as a host loads it: paging
    // with start-after and limits, batches with checks, compare-and-swap.
    {
        let engine = spear_plugin_runtime::engine::WasmEngine::new().unwrap();
        let limits = Arc::new(spear_plugin_runtime::Limits::new(
            spear_plugin_runtime::LimitValues {
                setup_timeout_ms: 5_000,
                ..Default::default()
            },
        ));
        let plugin = spear_plugin_runtime::load_file(&file, &engine, &limits).unwrap();
        let mut store = plugin.storage().unwrap();
        store.open("{}").unwrap();
        spear_tests::storage_contract::keeps_the_contract("kv-python", store.as_ref());
    }
    let (code, report) = check(&file, r#"{"max_keys": 0}"#, 64);
    assert_eq!(code, 1, "{report}");
    let error = report["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("max_keys: must be a positive integer"),
        "{error}"
    );

    // SMS keeps its whole state in it: a task, an execution run by a Spearlet, its result.
    let c = Cluster::new();
    std::fs::copy(&file, c.path().join("plugins/kv-python.wasm")).unwrap();
    let sms = c.sms_from(
        "heartbeat_timeout = 2\n[http]\naddr = \"127.0.0.1:0\"\n[grpc]\naddr = \"127.0.0.1:0\"\n\
         [database]\ndb_type = \"kv-python\"\n[files]\ndir = \"sms-data/files\"\n\
         [plugins]\ndir = \"plugins\"\nmemory_limit_mb = 256\nsetup_timeout_ms = 5000\n\
         [scheduler]\nstrategy = \"least-connections\"\n",
    );
    let _node = c.spearlet("kv", &sms, "");
    let (status, task) = sms
        .post(
            "/api/v1/tasks",
            json!({"name": "greet", "executable": {"type": "process", "name": "/bin/echo",
                   "args": ["kept by python"]}}),
        )
        .await;
    assert_eq!(status, 200, "{task}");
    let id = sms.sh("echo ran; exit 0", json!({})).await;
    let done = sms.finished(&id, LONG).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(done["result"]["stdout"], "ran\n", "{done}");
    let tasks = sms.get("/api/v1/tasks").await;
    assert!(tasks.to_string().contains("kept by python"), "{tasks}");
    let listed = sms.get("/api/v1/executions").await;
    assert!(listed.to_string().contains(&id), "{listed}");
    let plugins = sms.get("/api/v1/plugins").await;
    assert!(plugins.to_string().contains("kv-python"), "{plugins}");
}
