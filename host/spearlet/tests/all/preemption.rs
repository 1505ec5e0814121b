//! Preemption and checkpoints through real `sms` and `spearlet` processes: a low-priority
//! program counting in its checkpoint directory is preempted for urgent work that only its node
//! can run, saves its counter on SIGTERM, goes back to the queue without spending an attempt,
//! and finishes on another node from the counter it saved.

use crate::common;

use std::time::{Duration, Instant};

use common::{Cluster, Sms, Spearlet, register};
use serde_json::json;

const LONG: Duration = Duration::from_secs(30);

/// Spearlet `name` with one slot and `extra` config.
fn node(cluster: &Cluster, name: &str, sms: &Sms, extra: &str) -> Spearlet {
    let text = cluster
        .spearlet_config(name, extra)
        .replace("max_concurrent = 8", "max_concurrent = 1");
    let config = cluster.write(&format!("{name}.toml"), &text);
    cluster.spearlet_with(
        name,
        &config,
        &["--sms-addr", &sms.grpc.to_string(), "--auto-register"],
    )
}

/// A program that counts to `to` from the counter in its checkpoint directory, one step each
/// 100 ms (each 10 ms once restored, so a resumed run ends soon); it writes its progress to
/// `progress` as it goes, and its counter to the checkpoint directory only when told to stop
/// (SIGTERM), taking 300 ms of its grace to do so, then exits with `exit`.
fn counter_script(progress: &str, to: u32, exit: u8) -> String {
    format!(
        r#"d="$SPEAR_CHECKPOINT_DIR"
[ -d "$d" ] || {{ echo "no checkpoint directory"; exit 2; }}
n=$(cat "$d/counter" 2>/dev/null || echo 0)
from=$n
step=0.1
[ "$from" -gt 0 ] && step=0.01
trap 'sleep 0.3; echo $n > "$d/counter"; echo "saved $n" >> {progress}; exit {exit}' TERM
while [ $n -lt {to} ]; do
  n=$((n+1))
  echo "$n" >> {progress}
  sleep $step
done
echo "resumed from $from, finished at $n""#
    )
}

/// Wait until the counter writing to `path` has counted to 3.
async fn counted(path: &std::path::Path) {
    let until = Instant::now() + LONG;
    while progress(path) < 3 {
        assert!(Instant::now() < until, "the counter never counted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The counter it saved, as its progress file says.
fn saved(path: &std::path::Path) -> u64 {
    let log = std::fs::read_to_string(path).unwrap();
    log.lines()
        .find_map(|l| l.strip_prefix("saved ")?.parse().ok())
        .unwrap_or_else(|| panic!("it never saved its counter:\n{log}"))
}

/// The last number the counter wrote to `progress`.
fn progress(path: &std::path::Path) -> u64 {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .rev()
        .find_map(|l| l.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_preempted_run_saves_its_counter_and_finishes_on_another_node_from_it() {
    let cluster = Cluster::new();
    let sms = cluster.sms_full(
        "127.0.0.1:0",
        "127.0.0.1:0",
        "[scheduler]\nstrategy = \"least-connections\"\n",
        "[dispatch]\nprefetch = 0\n[preemption]\nmode = \"cluster\"\ngrace_ms = 3000\n",
        &[],
    );
    let a = node(&cluster, "a", &sms, "[spearlet.labels]\nzone = \"a\"\n");
    sms.node_status(&a.node, "active", LONG).await;
    let progress_file = cluster.path().join("progress");
    let counter = sms
        .sh(
            &counter_script(&progress_file.display().to_string(), 150, 143),
            json!({"priority": "low", "checkpoint": true, "timeout_ms": 60_000}),
        )
        .await;
    sms.running(&counter, LONG).await;
    counted(&progress_file).await;
    // A second node, free; but the urgent work can only run on the first.
    let b = node(&cluster, "b", &sms, "");
    sms.node_status(&b.node, "active", LONG).await;
    let only_a = register(
        &sms,
        json!({"name": "urgent-in-a", "priority": "urgent", "required_labels": {"zone": "a"},
               "executable": {"type": "process", "name": "/bin/sh", "args": ["-c", "sleep 3; echo urgent"]}}),
    )
    .await;
    let urgent = sms
        .submit(json!({"task_id": only_a, "max_attempts": 1}))
        .await;

    // (The urgent run holds the first node for 3 s: the counter's place is elsewhere.)
    let done = sms.finished(&urgent, LONG).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(done["node_uuid"], a.node.as_str());
    let done = sms.finished(&counter, LONG).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(done["node_uuid"], b.node.as_str(), "it moved: {done}");
    assert_eq!(done["preemptions"], 1, "{done}");
    assert_eq!(
        (&done["attempt"], &done["max_attempts"]),
        (&json!(2), &json!(1)),
        "its one attempt was not spent by the preemption: {done}"
    );
    let saved = saved(&progress_file);
    assert!(saved >= 3, "saved {saved}");
    let stdout = done["result"]["stdout"].as_str().unwrap();
    assert_eq!(
        stdout.trim(),
        format!("resumed from {saved}, finished at 150"),
        "{done}"
    );
    let events = sms.events().await;
    let preempted = events
        .iter()
        .find(|e| e["kind"] == "execution.preempted" && e["subject"] == counter.as_str())
        .unwrap_or_else(|| panic!("no execution.preempted: {events:?}"));
    assert_eq!(preempted["data"]["for"], urgent.as_str(), "{preempted}");
    assert_eq!(preempted["data"]["node_uuid"], a.node.as_str());
    let requeued = events
        .iter()
        .find(|e| e["kind"] == "execution.requeued" && e["subject"] == counter.as_str())
        .unwrap_or_else(|| panic!("no execution.requeued: {events:?}"));
    assert_eq!(requeued["data"]["reason"], "preempted");
    assert!(requeued["data"]["checkpoint_bytes"].as_u64().unwrap() > 0);
    let metrics = reqwest::get(sms.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        common::sample(&metrics, "sms_preemptions_total{result=\"preempted\"}"),
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_node_hands_a_checkpointing_run_back_with_its_state() {
    let cluster = Cluster::new();
    let sms = cluster.sms();
    // Drains wait 3 s for runs to end (the common config), then stop them with 3 s of grace.
    let text = cluster
        .spearlet_config("a", "")
        .replace("max_concurrent = 8", "max_concurrent = 1")
        .replace("stop_grace_ms = 500", "stop_grace_ms = 3000");
    let config = cluster.write("a.toml", &text);
    let mut a = cluster.spearlet_with(
        "a",
        &config,
        &["--sms-addr", &sms.grpc.to_string(), "--auto-register"],
    );
    sms.node_status(&a.node, "active", LONG).await;
    let progress_file = cluster.path().join("progress");
    let counter = sms
        .sh(
            // It exits 0 once saved: still it did not finish, and it is handed back.
            &counter_script(&progress_file.display().to_string(), 150, 0),
            json!({"checkpoint": true, "timeout_ms": 60_000}),
        )
        .await;
    sms.running(&counter, LONG).await;
    counted(&progress_file).await;
    assert!(a.terminate().success(), "{}", a.log());
    let saved = saved(&progress_file);
    assert!(saved >= 3, "saved {saved}");
    let b = node(&cluster, "b", &sms, "");
    let done = sms.finished(&counter, LONG).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(done["node_uuid"], b.node.as_str(), "{done}");
    assert_eq!(
        (&done["attempt"], &done["max_attempts"]),
        (&json!(2), &json!(1)),
        "handed back, its attempt not spent: {done}"
    );
    assert!(
        done.get("preemptions").is_none(),
        "not a preemption: {done}"
    );
    assert_eq!(
        done["result"]["stdout"].as_str().unwrap().trim(),
        format!("resumed from {saved}, finished at 150"),
        "{done}"
    );
    let events = sms.events().await;
    let requeued = events
        .iter()
        .find(|e| e["kind"] == "execution.requeued" && e["subject"] == counter.as_str())
        .unwrap_or_else(|| panic!("no execution.requeued: {events:?}"));
    assert_eq!(requeued["data"]["reason"], "drained", "{requeued}");
}

/// Submit a run of a task preferring zone `a` that fails its first attempt (leaving `marker`)
/// and succeeds its second, recovering as `recovery`; wait for its end.
async fn retried(sms: &Sms, marker: &std::path::Path, recovery: &str) -> serde_json::Value {
    let script = format!(
        "if [ -e {m} ]; then echo second; else touch {m}; exit 3; fi",
        m = marker.display()
    );
    let task = register(
        sms,
        json!({"name": format!("prefers-a-{recovery}"), "preferred_labels": {"zone": "a"},
               "executable": {"type": "process", "name": "/bin/sh", "args": ["-c", script]}}),
    )
    .await;
    let id = sms
        .submit(json!({"task_id": task, "max_attempts": 2, "recovery": recovery}))
        .await;
    sms.finished(&id, LONG).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_migrating_run_starts_its_next_attempt_on_another_node() {
    let cluster = Cluster::new();
    let sms = cluster.sms_full(
        "127.0.0.1:0",
        "127.0.0.1:0",
        "[scheduler]\nstrategy = \"affinity\"\n",
        "[dispatch]\nprefetch = 0\n",
        &[],
    );
    let a = node(&cluster, "a", &sms, "[spearlet.labels]\nzone = \"a\"\n");
    let b = node(&cluster, "b", &sms, "[spearlet.labels]\nzone = \"b\"\n");
    sms.node_status(&a.node, "active", LONG).await;
    sms.node_status(&b.node, "active", LONG).await;

    // The control: restarting, the strategy's choice stands, and both attempts run on `a`.
    let restart = retried(&sms, &cluster.path().join("restart"), "restart").await;
    assert_eq!(restart["state"], "succeeded", "{restart}");
    assert_eq!(restart["attempt"], 2, "{restart}");
    assert_eq!(restart["node_uuid"], a.node.as_str(), "{restart}");

    // Migrating: the second attempt leaves the node the first one ran on.
    let migrate = retried(&sms, &cluster.path().join("migrate"), "migrate").await;
    assert_eq!(migrate["state"], "succeeded", "{migrate}");
    assert_eq!(migrate["attempt"], 2, "{migrate}");
    assert_eq!(migrate["recovery"], "migrate", "{migrate}");
    assert_eq!(migrate["node_uuid"], b.node.as_str(), "it moved: {migrate}");
    let id = migrate["execution_id"].as_str().unwrap();
    let events = sms.events().await;
    let assigned: Vec<&serde_json::Value> = events
        .iter()
        .filter(|e| e["kind"] == "execution.assigned" && e["subject"] == id)
        .collect();
    assert_eq!(assigned.len(), 2, "{assigned:?}");
    assert_eq!(assigned[0]["data"]["node_uuid"], a.node.as_str());
    assert_eq!(assigned[1]["data"]["migrated_from"], a.node.as_str());
    let why = sms.get(&format!("/api/v1/executions/{id}/explain")).await;
    assert_eq!(why["outcome"], "assigned", "{why}");
    assert_eq!(why["node_uuid"], b.node.as_str(), "{why}");
    assert!(
        why["reason"].as_str().unwrap_or_default().ends_with(
            "(recovery = migrate): moved to the node that could hold it with the most places \
                 left"
        ),
        "{why}"
    );
    let left = why["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["node_uuid"] == a.node.as_str())
        .unwrap_or_else(|| panic!("{why}"));
    assert_eq!(left["verdict"], "filtered", "{why}");
    assert!(
        left["reasons"][0]
            .as_str()
            .unwrap()
            .contains("its last attempt left"),
        "{why}"
    );

    // A value outside the three is refused, naming the field.
    let (status, body) = sms
        .post(
            "/api/v1/executions",
            json!({"executable": {"type": "process", "name": "/bin/true"}, "recovery": "teleport"}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body.to_string().contains("restart, checkpoint, migrate"),
        "{body}"
    );
}
