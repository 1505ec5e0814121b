//! SMS and Spearlets as separate processes on loopback, driven through SMS's REST API: the node's
//! life with SMS, executions through the process executor, limits, crashes, drains, reclamation.

use crate::common;

use std::time::{Duration, Instant};

use common::Cluster;
use serde_json::json;

const LONG: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread")]
async fn a_spearlet_registers_heartbeats_figures_and_runs_process_executions() {
    let c = Cluster::new();
    let sms = c.sms();
    let s = c.spearlet("alpha", &sms, "");
    let node = sms.node_status(&s.node, "active", LONG).await;
    assert_eq!(node["metadata"]["name"], "alpha", "{node}");
    let executors: Vec<&str> = node["executors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap())
        .collect();
    assert!(executors.contains(&"process"), "{node}");
    assert!(
        node["capacity"]["cpu_millis"].as_u64().unwrap() >= 1000,
        "{node}"
    );
    assert!(
        node["capacity"]["memory_mb"].as_u64().unwrap() > 0,
        "{node}"
    );

    let failing = sms
        .sh(
            "read line; echo \"got $line\"; echo oops >&2; exit 3",
            json!({"stdin": "abc\n"}),
        )
        .await;
    let e = sms.finished(&failing, LONG).await;
    assert_eq!(e["state"], "failed", "{e}");
    assert_eq!(e["node_uuid"], s.node.as_str());
    assert_eq!(e["result"]["exit_code"], 3, "{e}");
    assert_eq!(e["result"]["stdout"], "got abc\n", "{e}");
    assert_eq!(e["result"]["stderr"], "oops\n", "{e}");
    assert!(
        e["error"].as_str().unwrap().contains("exited with code 3"),
        "{e}"
    );

    let ok = sms.sh("echo fine", json!({})).await;
    let e = sms.finished(&ok, LONG).await;
    assert_eq!(e["state"], "succeeded", "{e}");
    assert_eq!(e["result"]["stdout"], "fine\n");

    // Heartbeats carry real figures.
    let deadline = Instant::now() + LONG;
    loop {
        let node = sms.get(&format!("/api/v1/nodes/{}", s.node)).await;
        if node["available"]["memory_mb"].as_u64().unwrap_or(0) > 0
            && node["last_heartbeat_ms"].as_i64() > node["registered_at_ms"].as_i64()
        {
            break;
        }
        assert!(Instant::now() < deadline, "no heartbeat figures: {node}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let deadline = Instant::now() + LONG;
    loop {
        let status = s.get("/api/v1/status").await;
        assert_eq!(status["connected"], true, "{status}");
        if status["reports_pending"] == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "acknowledged reports kept: {status}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_looping_task_is_killed_at_its_timeout_and_a_flood_is_capped() {
    let c = Cluster::new();
    let sms = c.sms();
    let s = c.spearlet("alpha", &sms, "");
    let started = Instant::now();
    let looping = sms
        .sh("while :; do :; done", json!({"timeout_ms": 500}))
        .await;
    let e = sms.finished(&looping, LONG).await;
    assert_ne!(e["state"], "succeeded", "{e}");
    assert!(e["error"].as_str().unwrap().contains("timed out"), "{e}");
    assert!(started.elapsed() < Duration::from_secs(30));

    // 100 MB of output against a 1 MiB cap: kept up to the cap, flagged, the node unaffected.
    let flood = sms
        .sh(
            "head -c 100000000 /dev/zero | tr '\\0' x; echo done >&2",
            json!({}),
        )
        .await;
    let e = sms.finished(&flood, LONG).await;
    assert_eq!(e["state"], "succeeded", "{e}");
    assert_eq!(e["result"]["stdout_truncated"], true, "{e}");
    assert_eq!(e["result"]["stdout"].as_str().unwrap().len(), 1024 * 1024);
    assert_eq!(e["result"]["stderr"], "done\n");
    // An execution's memory need is its limit on the node.
    let hog = sms
        .submit(json!({
            "executable": {"type": "process", "name": "python3",
                           "args": ["-c", "b = bytearray(512 * 1024 * 1024); print('allocated')"]},
            "needs": {"cpu_millis": 0, "memory_mb": 64, "disk_mb": 0},
            "max_attempts": 1,
        }))
        .await;
    let e = sms.finished(&hog, LONG).await;
    assert_eq!(e["state"], "failed", "{e}");
    assert!(
        !e["result"]["stdout"]
            .as_str()
            .unwrap_or("")
            .contains("allocated"),
        "{e}"
    );

    let after = sms.sh("echo still here", json!({})).await;
    assert_eq!(sms.finished(&after, LONG).await["state"], "succeeded");
    assert_eq!(s.get("/api/v1/status").await["running"], json!([]));
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_of_a_spearlet_reschedules_its_executions_and_its_restart_cleans_up() {
    let c = Cluster::new();
    let sms = c.sms();
    let mut a = c.spearlet("alpha", &sms, "");
    sms.node_status(&a.node, "active", LONG).await;
    let pidfile = c.path().join("orphan.pid");
    let marker = c.path().join("marker");
    // First attempt: leaves a process behind and never ends. Second: succeeds.
    let script = format!(
        "if [ -f {m} ]; then echo second; exit 0; fi; touch {m}; echo $$ > {p}; sleep 120",
        m = marker.display(),
        p = pidfile.display()
    );
    let id = sms
        .sh(&script, json!({"max_attempts": 2, "timeout_ms": 0}))
        .await;
    let deadline = Instant::now() + LONG;
    while !pidfile.is_file() || std::fs::read_to_string(&pidfile).unwrap().trim().is_empty() {
        assert!(Instant::now() < deadline, "the first attempt never started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let orphan: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    a.kill_9();
    assert!(alive(orphan), "the workload outlives a SIGKILLed agent");

    let b = c.spearlet("beta", &sms, "");
    let e = sms.finished(&id, LONG).await;
    assert_eq!(e["state"], "succeeded", "{e}");
    assert_eq!(e["node_uuid"], b.node.as_str(), "{e}");
    assert_eq!(e["result"]["stdout"], "second\n");

    // The restarted Spearlet keeps its identity and kills what its previous run left.
    let config = c.path().join("alpha.toml");
    let sms_addr = sms.grpc.to_string();
    let a2 = c.spearlet_with(
        "alpha",
        &config,
        &["--sms-addr", &sms_addr, "--auto-register"],
    );
    assert_eq!(a2.node, a.node, "the node UUID persists across restarts");
    let deadline = Instant::now() + LONG;
    while alive(orphan) {
        assert!(
            Instant::now() < deadline,
            "process {orphan} left by the killed agent survived its restart"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    sms.node_status(&a2.node, "active", LONG).await;
}

fn alive(pid: i32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    !stat.is_empty() && !stat.contains(") Z")
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_drains_finishes_short_work_hands_back_long_work_and_deregisters() {
    let c = Cluster::new();
    let sms = c.sms();
    let mut a = c.spearlet("alpha", &sms, "");
    sms.node_status(&a.node, "active", LONG).await;
    let go = c.path().join("go");
    let short = sms
        .sh(
            &format!(
                "while [ ! -f {} ]; do sleep 0.05; done; echo finished",
                go.display()
            ),
            json!({"timeout_ms": 0}),
        )
        .await;
    let long = sms
        .sh("sleep 120", json!({"timeout_ms": 0, "max_attempts": 1}))
        .await;
    let deadline = Instant::now() + LONG;
    while sms.execution(&long).await["state"] != "running"
        || sms.execution(&short).await["state"] != "running"
    {
        assert!(Instant::now() < deadline, "executions never started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The short one finishes during the drain; the long one is still running when it ends.
    std::fs::write(&go, "").unwrap();
    let status = a.terminate();
    assert!(status.success(), "{status:?}");
    let e = sms.finished(&short, Duration::from_secs(5)).await;
    assert_eq!(e["state"], "succeeded", "{e}");
    assert_eq!(e["result"]["stdout"], "finished\n");
    // The node is gone and the long execution is back in the queue, its attempt not spent.
    sms.node_status(&a.node, "absent", LONG).await;
    let e = sms.execution(&long).await;
    assert!(
        ["ready", "pending"].contains(&e["state"].as_str().unwrap()),
        "{e}"
    );
    assert_eq!(e["attempt"], 1, "{e}");
    assert_eq!(e["requeued"], 1, "{e}");
}

#[tokio::test(flavor = "multi_thread")]
async fn with_sms_addr_an_unreachable_sms_is_fatal_at_start() {
    let c = Cluster::new();
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = free.local_addr().unwrap().to_string();
    drop(free);
    let config = c.write("lonely.toml", &c.spearlet_config("lonely", ""));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_spearlet"))
        .current_dir(c.path())
        .args(["--config", config.to_str().unwrap(), "--sms-addr", &addr])
        .args(["--sms-connect-timeout-ms", "500"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot connect") && err.contains(&addr),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reclamation_policy_swap_in_the_config_changes_which_instances_are_stopped() {
    let c = Cluster::new();
    let sms = c.sms();
    let policy = |section: &str| {
        format!(
            "[scheduler]\nstrategy = \"least-connections\"\n[reclaimer]\ninterval_ms = 100\n{section}"
        )
    };
    let s = c.spearlet(
        "alpha",
        &sms,
        &policy("policy = \"error-rate\"\n[reclaimer.config]\nmax_error_rate = 0.5\nmin_invocations = 2\n"),
    );
    // Two tasks: one always fails, one always succeeds, each run twice (one instance each).
    for _ in 0..2 {
        let bad = sms.sh("exit 1", json!({})).await;
        let good = sms.sh("exit 0", json!({})).await;
        sms.finished(&bad, LONG).await;
        assert_eq!(sms.finished(&good, LONG).await["state"], "succeeded");
    }
    let tasks = |v: serde_json::Value| -> Vec<(String, u64)> {
        v["instances"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| {
                (
                    i["task"].as_str().unwrap().to_owned(),
                    i["errors"].as_u64().unwrap(),
                )
            })
            .collect()
    };
    // error-rate stops the failing task's instance and keeps the healthy one.
    let deadline = Instant::now() + LONG;
    loop {
        let now = tasks(s.get("/api/v1/instances").await);
        if now.len() == 1 && now[0].1 == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "error-rate did not reclaim: {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        tasks(s.get("/api/v1/instances").await).len(),
        1,
        "the healthy instance stays"
    );

    // Swap to idle-time in the config: now the idle healthy instance is stopped too.
    c.write(
        "alpha.toml",
        &c.spearlet_config(
            "alpha",
            &policy("policy = \"idle-time\"\n[reclaimer.config]\nidle_ms = 200\nkeep_warm = 0\n"),
        ),
    );
    let deadline = Instant::now() + LONG;
    loop {
        let now = tasks(s.get("/api/v1/instances").await);
        if now.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "idle-time did not reclaim: {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let status = s.get("/api/v1/status").await;
    assert_eq!(status["reclaimer"]["name"], "idle-time", "{status}");
    assert_eq!(status["pools"]["reclaimed"], 2, "{status}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cancelled_execution_is_stopped_on_its_node() {
    let c = Cluster::new();
    let sms = c.sms();
    let _s = c.spearlet("alpha", &sms, "");
    let pidfile = c.path().join("victim.pid");
    let id = sms
        .sh(
            &format!("echo $$ > {}; sleep 120", pidfile.display()),
            json!({"timeout_ms": 0}),
        )
        .await;
    let deadline = Instant::now() + LONG;
    while sms.execution(&id).await["state"] != "running" || !pidfile.is_file() {
        assert!(Instant::now() < deadline, "never started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let pid: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let (code, e) = sms
        .post(&format!("/api/v1/executions/{id}/cancel"), json!({}))
        .await;
    assert_eq!(code, 200, "{e}");
    let deadline = Instant::now() + LONG;
    while alive(pid) {
        assert!(
            Instant::now() < deadline,
            "cancelled process {pid} still runs"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(sms.execution(&id).await["state"], "cancelled");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_result_finished_while_sms_is_down_is_delivered_after_it_returns() {
    let c = Cluster::new();
    let (grpc, http) = (
        spear_tests::process::free_addr(),
        spear_tests::process::free_addr(),
    );
    let sms = c.sms_on(&grpc, &http);
    let s = c.spearlet("alpha", &sms, "");
    sms.node_status(&s.node, "active", LONG).await;
    let go = c.path().join("go");
    let id = sms
        .sh(
            &format!(
                "echo run >> {}; while [ ! -f {} ]; do sleep 0.05; done; echo delivered",
                c.path().join("runs").display(),
                go.display()
            ),
            json!({"timeout_ms": 0}),
        )
        .await;
    sms.running(&id, LONG).await;
    sms.kill_9();
    // The execution finishes while SMS is away: its result waits in the Spearlet's store.
    std::fs::write(&go, "").unwrap();
    let deadline = Instant::now() + LONG;
    while s.get("/api/v1/status").await["reports_pending"] != 1 {
        assert!(Instant::now() < deadline, "the result was not kept");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let sms = c.sms_on(&grpc, &http);
    let e = sms.finished(&id, LONG).await;
    assert_eq!(e["state"], "succeeded", "{e}");
    assert_eq!(e["result"]["stdout"], "delivered\n");
    assert_eq!(e["node_uuid"], s.node.as_str());
    // Delivered, not run again.
    let runs = std::fs::read_to_string(c.path().join("runs")).unwrap();
    assert_eq!(runs.lines().count(), 1, "{runs}");
    // One attempt spent (a placement made after the restart, which the node did not start since
    // it held the result, is not counted).
    let spent = e["attempt"].as_u64().unwrap() - e["requeued"].as_u64().unwrap();
    assert_eq!(spent, 1, "{e}");
}

fn signal(pid: u32, sig: &str) {
    let ok = std::process::Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{sig} {pid}");
}

/// The pid a workload writes to `pidfile` once it starts (waiting up to [`LONG`]).
async fn pid_in(pidfile: &std::path::Path) -> i32 {
    let deadline = Instant::now() + LONG;
    loop {
        let text = std::fs::read_to_string(pidfile).unwrap_or_default();
        if let Ok(pid) = text.trim().parse() {
            return pid;
        }
        assert!(Instant::now() < deadline, "the execution never started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn runs(log: &std::path::Path) -> Vec<u32> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_that_wakes_from_a_stall_does_not_start_work_already_moved() {
    let c = Cluster::new();
    let sms = c.sms();
    let mut alpha = c.spearlet("alpha", &sms, "");
    sms.node_status(&alpha.node, "active", LONG).await;
    let log = c.path().join("ran.log");
    // 24 executions on a node that runs 8 at once: 16 wait in its queue.
    let mut ids = Vec::new();
    for i in 0..24 {
        let script = format!("echo {i} >> {}; sleep 2", log.display());
        ids.push(sms.sh(&script, json!({"max_attempts": 3})).await);
    }
    let deadline = Instant::now() + LONG;
    while runs(&log).len() < 8 {
        assert!(Instant::now() < deadline, "alpha never started 8");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Stop alpha while work waits in its queue; what it had started by then may run again
    // elsewhere (it is lost with its node), nothing else may.
    signal(alpha.child.id(), "STOP");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started_before_stop: std::collections::BTreeSet<u32> = runs(&log).into_iter().collect();

    let _beta = c.spearlet("beta", &sms, "");
    sms.node_status(&alpha.node, "unhealthy", LONG).await;
    for id in &ids {
        let e = sms.finished(id, LONG).await;
        assert_eq!(e["state"], "succeeded", "{e}");
    }
    // Alpha wakes up with the old assignments queued, and must not start them.
    signal(alpha.child.id(), "CONT");
    sms.node_status(&alpha.node, "active", LONG).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let all = runs(&log);
    for i in 0..24u32 {
        let n = all.iter().filter(|r| **r == i).count();
        if started_before_stop.contains(&i) {
            assert!((1..=2).contains(&n), "execution {i} ran {n} times");
        } else {
            assert_eq!(
                n, 1,
                "execution {i} (queued at the stall) ran {n} times: {all:?}"
            );
        }
    }
    let status = alpha.get("/api/v1/status").await;
    assert!(status["stalls"].as_u64().unwrap() >= 1, "{status}");
    alpha.kill_9();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cancel_sent_while_a_node_stood_still_still_stops_the_work() {
    let c = Cluster::new();
    let sms = c.sms();
    let mut alpha = c.spearlet("alpha", &sms, "");
    sms.node_status(&alpha.node, "active", LONG).await;
    let pidfile = c.path().join("long.pid");
    let script = format!("echo $$ > {}; sleep 300", pidfile.display());
    let id = sms.sh(&script, json!({"timeout_ms": 0})).await;
    let pid = pid_in(&pidfile).await;
    // Cancelled while its node stands still: the cancel may be lost with the old stream, which
    // the node reopens after the stall; it must stop the work anyway.
    signal(alpha.child.id(), "STOP");
    let (status, e) = sms
        .post(&format!("/api/v1/executions/{id}/cancel"), json!({}))
        .await;
    assert_eq!(status, 200, "{e}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    signal(alpha.child.id(), "CONT");
    let deadline = Instant::now() + LONG;
    while alive(pid) {
        assert!(
            Instant::now() < deadline,
            "the cancelled workload {pid} still runs"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    alpha.kill_9();
}

#[tokio::test(flavor = "multi_thread")]
async fn with_a_reconnect_limit_the_spearlet_outlasts_it_while_work_runs_then_exits_3() {
    let c = Cluster::new();
    let sms = c.sms();
    let config = c.spearlet_config("limited", "").replace(
        "[spearlet]\n",
        "[spearlet]\nreconnect_total_timeout_ms = 500\n",
    );
    let mut s = c.spearlet_from("limited", &sms, &config);
    sms.node_status(&s.node, "active", LONG).await;
    let go = c.path().join("go");
    let id = sms
        .sh(
            &format!("while [ ! -f {} ]; do sleep 0.05; done", go.display()),
            json!({"timeout_ms": 0}),
        )
        .await;
    sms.running(&id, LONG).await;
    sms.kill_9();
    // SMS is away four times the limit: the Spearlet stays while its execution runs.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        s.child.try_wait().unwrap().is_none(),
        "exited while work ran:\n{}",
        s.log()
    );
    // The work ends: now it gives up, with status 3.
    std::fs::write(&go, "").unwrap();
    let deadline = Instant::now() + LONG;
    let status = loop {
        if let Some(status) = s.child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "never gave up:\n{}", s.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(status.code(), Some(3), "{}", s.log());
}

/// A cancel SMS cannot deliver (its node has no stream: the network between them is down, the
/// node itself runs on) is stored: an SMS killed and started again still owes it, and sends it
/// when the node's stream comes back, which stops the work.
#[tokio::test(flavor = "multi_thread")]
async fn a_cancel_owed_to_a_node_outlives_an_sms_restart_and_stops_the_work() {
    let c = Cluster::new();
    let (grpc, http) = (
        spear_tests::process::free_addr(),
        spear_tests::process::free_addr(),
    );
    let sms = c.sms_on(&grpc, &http);
    // The node reaches SMS through a proxy: the network between them.
    let network = spear_tests::h2proxy::H2Proxy::start(&grpc);
    let config = c.write("alpha.toml", &c.spearlet_config("alpha", ""));
    let via = network.url().trim_start_matches("http://").to_owned();
    let mut alpha = c.spearlet_with("alpha", &config, &["--sms-addr", &via, "--auto-register"]);
    sms.node_status(&alpha.node, "active", LONG).await;
    let pidfile = c.path().join("owed.pid");
    let script = format!("echo $$ > {}; sleep 300", pidfile.display());
    let id = sms.sh(&script, json!({"timeout_ms": 0})).await;
    sms.running(&id, LONG).await;
    let pid = pid_in(&pidfile).await;
    // The network goes down: the node's stream breaks, and the cancel can only be stored.
    network.set_down(true);
    let (status, e) = sms
        .post(&format!("/api/v1/executions/{id}/cancel"), json!({}))
        .await;
    assert_eq!(status, 200, "{e}");
    // SMS dies with the cancel owed, and comes back; then the network does.
    sms.kill_9();
    let sms = c.sms_on(&grpc, &http);
    assert_eq!(sms.execution(&id).await["state"], "cancelled");
    assert!(alive(pid), "nothing has told the node yet");
    network.set_down(false);
    let deadline = Instant::now() + LONG;
    while alive(pid) {
        assert!(
            Instant::now() < deadline,
            "the cancelled workload {pid} still runs after its node came back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    alpha.kill_9();
}
