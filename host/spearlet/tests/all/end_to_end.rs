//! The whole system end to end: `sms` and two `spearlet`s as separate processes on loopback, driven
//! by the `spear` CLI. WASM, process and container executions run; SMS's strategy is switched by
//! editing its config (round-robin, then least-connections), then a new strategy file
//! (`examples/`' `pack-rust`) is dropped into the plugin directory and selected — placements follow
//! each change and no execution fails; finally one Spearlet is killed with `kill -9` and its
//! executions complete on the other.
//!
//! Placements are made observable with gated executions: each runs until its own gate file appears,
//! so the load of every node is known. Before each placement that depends on load, the test waits
//! until both nodes' heartbeats report exactly the gated executions they hold (the strategy's view
//! of a node is its last heartbeat). Every wait is a poll with a deadline.

use crate::common;

use std::future::Future;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{Cluster, Sms};
use serde_json::{Value, json};
use spear_tests::guest;

const LONG: Duration = Duration::from_secs(60);

/// Generous plugin limits (a loaded machine must not push decisions into the fallback), then
/// `[scheduler]`.
fn sections(scheduler: &str) -> String {
    format!("call_timeout_ms = 1000\nsetup_timeout_ms = 5000\n[scheduler]\n{scheduler}")
}

/// Rewrite SMS's config file with another `[scheduler]` (everything before it unchanged).
fn select(c: &Cluster, scheduler: &str) {
    let text = std::fs::read_to_string(c.path().join("sms.toml")).unwrap();
    let head = &text[..text.find("call_timeout_ms").unwrap()];
    c.write("sms.toml", &format!("{head}{}", sections(scheduler)));
}

/// Poll `probe` every 100 ms until `done` holds for its answer; returns that answer.
async fn until<F, Fut>(what: &str, mut probe: F, done: impl Fn(&Value) -> bool) -> Value
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Value>,
{
    let deadline = Instant::now() + LONG;
    loop {
        let v = probe().await;
        if done(&v) {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: still {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Run an execution with `spear run` (attached); it must succeed with exit code 0.
async fn run_ok(sms: &Sms, args: &[&str]) -> Value {
    let mut all = vec!["run"];
    all.extend_from_slice(args);
    let (code, e) = sms.spear(&all).await;
    assert_eq!(code, 0, "spear {all:?}: {e}");
    assert_eq!(e["state"], "succeeded", "{e}");
    assert_eq!(e["result"]["exit_code"], 0, "{e}");
    e
}

/// A placed execution that runs until its gate file appears.
struct Gated {
    gate: String,
    id: String,
    node: String,
}

/// Submit a gated execution with `spear run --detach` and wait until it runs (on its node).
async fn gated(c: &Cluster, sms: &Sms, gate: &str) -> Gated {
    // It also ends when the sandbox is gone: a process orphaned by `kill -9` never outlives the test.
    let script = format!(
        "while [ ! -f {g} ]; do [ -d {d} ] || exit 1; sleep 0.1; done; echo {gate}",
        g = c.path().join(gate).display(),
        d = c.path().display()
    );
    let args = ["run", "--detach", "--type", "process", "--name", "/bin/sh"];
    let (code, v) = sms
        .spear(
            &[
                &args[..],
                &["--timeout-ms", "0", "--", "-c", script.as_str()],
            ]
            .concat(),
        )
        .await;
    assert_eq!(code, 0, "{v}");
    let id = v["execution_id"].as_str().unwrap().to_owned();
    let e = until(
        &format!("{gate} running"),
        || sms.execution(&id),
        |e| e["state"] == "running",
    )
    .await;
    let node = e["node_uuid"].as_str().unwrap().to_owned();
    Gated {
        gate: gate.into(),
        id,
        node,
    }
}

/// Wait until each node's heartbeat counts exactly the gated executions `open` holds on it.
async fn settle(sms: &Sms, nodes: &[String], open: &[Gated]) {
    for node in nodes {
        let want = open.iter().filter(|g| &g.node == node).count();
        let path = format!("/api/v1/nodes/{node}");
        until(
            &format!("node {node} running {want}"),
            || sms.get(&path),
            |n| n["running"] == want,
        )
        .await;
    }
}

/// Open the gates of the executions on `node` (all with `None`); wait until they succeeded there.
async fn release(c: &Cluster, sms: &Sms, open: &mut Vec<Gated>, node: Option<&str>) {
    let (done, keep): (Vec<Gated>, Vec<Gated>) = open
        .drain(..)
        .partition(|g| node.is_none_or(|n| g.node == n));
    *open = keep;
    for g in &done {
        std::fs::write(c.path().join(&g.gate), "").unwrap();
    }
    for g in &done {
        let e = sms.finished(&g.id, LONG).await;
        assert_eq!(e["state"], "succeeded", "{e}");
        assert_eq!(e["node_uuid"], g.node.as_str(), "{e}");
        assert_eq!(e["result"]["stdout"], format!("{}\n", g.gate), "{e}");
    }
}

/// Wait until SMS's active strategy is `name`; returns `GET /api/v1/plugins`.
async fn strategy(sms: &Sms, name: &str) -> Value {
    until(
        &format!("strategy {name} active"),
        || sms.get("/api/v1/plugins"),
        |p| p["scheduler"]["plugin"]["name"] == name,
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn executions_follow_strategy_swaps_and_survive_a_kill_9_of_their_node() {
    let podman = spear_tests::podman::podman();
    let c = Cluster::new();
    let sms = c.sms_with(
        "127.0.0.1:0",
        "127.0.0.1:0",
        &sections("strategy = \"round-robin\"\n"),
    );
    let container = format!(
        "[executors.config.container]\nsocket = \"{}\"\n",
        podman.socket
    );
    let mut spearlets = [
        c.spearlet("alpha", &sms, &container),
        c.spearlet("beta", &sms, &container),
    ];
    let nodes: Vec<String> = spearlets.iter().map(|s| s.node.clone()).collect();
    for n in &nodes {
        sms.node_status(n, "active", LONG).await;
    }
    strategy(&sms, "round-robin").await;

    // One execution of each executor type through `spear run`.
    let wasm = guest("component", "wasi-echo.wasm");
    let e = run_ok(
        &sms,
        &[
            "--file",
            wasm.to_str().unwrap(),
            "--stdin",
            "hello",
            "--env",
            "GREETING=hi",
            "--",
            "echo",
        ],
    )
    .await;
    let out = e["result"]["stdout"].as_str().unwrap_or_default();
    assert!(
        out.contains("stdin=hello") && out.contains("GREETING=hi"),
        "{e}"
    );
    let e = run_ok(
        &sms,
        &[
            "--type", "process", "--name", "/bin/sh", "--", "-c", "echo hi",
        ],
    )
    .await;
    assert_eq!(e["result"]["stdout"], "hi\n", "{e}");
    let image = spear_tests::podman::BUSYBOX;
    let e = run_ok(
        &sms,
        &[
            "--type",
            "container",
            "--name",
            image,
            "--",
            "sh",
            "-c",
            "echo boxed",
        ],
    )
    .await;
    assert_eq!(e["result"]["stdout"], "boxed\n", "{e}");

    // round-robin: the nodes take turns.
    let mut open = Vec::new();
    for i in 0..4 {
        open.push(gated(&c, &sms, &format!("rr{i}")).await);
    }
    let placed: Vec<&str> = open.iter().map(|g| g.node.as_str()).collect();
    let why = json!({"placed": placed, "plugins": sms.get("/api/v1/plugins").await});
    assert!(
        placed[0] != placed[1] && placed[0] == placed[2] && placed[1] == placed[3],
        "{why}"
    );
    let idle = placed[1].to_owned();

    // least-connections, by editing the config: with the other node at 2 and `idle` at 0, both go
    // to `idle` (round-robin would split them).
    release(&c, &sms, &mut open, Some(&idle)).await;
    settle(&sms, &nodes, &open).await;
    select(&c, "strategy = \"least-connections\"\n");
    strategy(&sms, "least-connections").await;
    for i in 0..2 {
        let g = gated(&c, &sms, &format!("lc{i}")).await;
        let why = json!({"placed": g.node, "plugins": sms.get("/api/v1/plugins").await});
        assert_eq!(g.node, idle, "least-connections #{i}: {why}");
        open.push(g);
        settle(&sms, &nodes, &open).await;
    }

    // A new strategy file, dropped in (by rename: never half-copied), then selected: pack-rust
    // fills one node up to max_active = 2 before it uses the other.
    release(&c, &sms, &mut open, None).await;
    settle(&sms, &nodes, &open).await;
    let plugins = c.path().join("plugins");
    let example =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/examples/pack-rust.wasm");
    assert!(
        example.is_file(),
        "{} is missing: run examples/build.sh",
        example.display()
    );
    std::fs::copy(&example, plugins.join(".pack-rust.tmp")).unwrap();
    std::fs::rename(
        plugins.join(".pack-rust.tmp"),
        plugins.join("pack-rust.wasm"),
    )
    .unwrap();
    until(
        "pack-rust registered",
        || sms.get("/api/v1/plugins"),
        |p| {
            p["plugins"]
                .as_array()
                .is_some_and(|a| a.iter().any(|p| p["name"] == "pack-rust"))
        },
    )
    .await;
    select(
        &c,
        "strategy = \"pack-rust\"\n[scheduler.config]\nmax_active = 2\n",
    );
    strategy(&sms, "pack-rust").await;
    for i in 0..4 {
        open.push(gated(&c, &sms, &format!("pack{i}")).await);
        settle(&sms, &nodes, &open).await;
    }
    let placed: Vec<&str> = open.iter().map(|g| g.node.as_str()).collect();
    let why = json!({"placed": placed, "plugins": sms.get("/api/v1/plugins").await});
    assert!(
        placed[0] == placed[1] && placed[2] == placed[3] && placed[0] != placed[2],
        "{why}"
    );

    // kill -9 the node running pack0 and pack1: both complete on the other.
    let (victim, survivor) = (placed[0].to_owned(), placed[2].to_owned());
    release(&c, &sms, &mut open, Some(&survivor)).await;
    settle(&sms, &nodes, &open).await;
    spearlets
        .iter_mut()
        .find(|s| s.node == victim)
        .unwrap()
        .kill_9();
    for g in &mut open {
        until(
            &format!("{} rescheduled from {victim} to {survivor}", g.gate),
            || sms.execution(&g.id),
            |e| e["state"] == "running" && e["node_uuid"] == survivor.as_str(),
        )
        .await;
        g.node.clone_from(&survivor);
    }
    release(&c, &sms, &mut open, None).await;

    // Nothing failed: 3 runs, 4 under round-robin, 2 under least-connections, 4 under pack-rust.
    let (code, status) = sms.spear(&["status"]).await;
    assert_eq!(code, 0, "{status}");
    assert_eq!(
        status["executions"]["by_state"],
        json!({"succeeded": 13}),
        "{status}"
    );
    // And every decision was the strategies' own: no failed call, no fallback.
    let metrics = reqwest::get(sms.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        !metrics.contains("spear_plugin_fallback_decisions_total{"),
        "{metrics}"
    );
    assert!(
        !metrics.contains("spear_plugin_failures_total{"),
        "{metrics}"
    );
}
