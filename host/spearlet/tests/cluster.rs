//! SMS and Spearlets as separate processes on loopback, driven through SMS's REST API: the node's
//! life with SMS, executions through the process executor, limits, crashes, drains, reclamation.

mod common;

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
    assert_eq!(e["attempt"], 0, "{e}");
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
async fn artifacts_come_from_sms_once_and_instances_are_reused_hot() {
    let c = Cluster::new();
    let sms = c.sms();
    let allowed = c.path().join("programs");
    std::fs::create_dir(&allowed).unwrap();
    let s = c.spearlet(
        "alpha",
        &sms,
        &format!(
            "[spearlet.artifacts]\nfile_prefixes = [\"/no/such\", {:?}]\nfetch_timeout_ms = 60000\n",
            allowed.display().to_string()
        ),
    );
    let script = b"#!/bin/sh\necho from-artifact \"$@\"\n".to_vec();
    let meta: serde_json::Value = reqwest::Client::new()
        .post(sms.url("/api/v1/files?name=hello.sh"))
        .body(script)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let uri = meta["uri"].as_str().unwrap().to_owned();
    assert!(uri.starts_with("sms+file://"), "{meta}");
    let body =
        json!({"executable": {"type": "process", "uri": uri, "args": ["one"]}, "max_attempts": 1});
    for _ in 0..2 {
        let id = sms.submit(body.clone()).await;
        let e = sms.finished(&id, LONG).await;
        assert_eq!(e["state"], "succeeded", "{e}");
        assert_eq!(e["result"]["stdout"], "from-artifact one\n");
    }
    let pools = &s.get("/api/v1/status").await["pools"];
    assert_eq!(pools["cold"], 1, "{pools}");
    assert_eq!(pools["hot"], 1, "{pools}");
    let cached = c
        .path()
        .join("alpha-data/artifacts")
        .join(meta["file_id"].as_str().unwrap());
    assert!(cached.is_file(), "{}", cached.display());

    // The same bytes over plain HTTP, pinned by their sha256: a wrong pin is refused, and so is
    // no pin at all. From the file system, only under an allowed prefix, by the real path (SMS
    // refuses `..`; a link out of the prefix is refused); through another SMS's gateway, not at
    // all.
    let sha = meta["file_id"].as_str().unwrap();
    let web = sms.url(&format!("/api/v1/files/{sha}"));
    std::fs::write(
        allowed.join("hello.sh"),
        b"#!/bin/sh\necho from-artifact \"$@\"\n",
    )
    .unwrap();
    let local = format!("file://{}", allowed.join("hello.sh").display());
    // A link inside the prefix that leads out of it: the real path is what counts.
    std::os::unix::fs::symlink("/etc", allowed.join("out")).unwrap();
    let linked_out = format!("file://{}", allowed.join("out/passwd").display());
    let cases = [
        (format!("{web}#sha256={sha}"), ""),
        (format!("{web}#sha256={}", "0".repeat(64)), "expected"),
        (web.clone(), "need a #sha256="),
        (local, ""),
        (
            "file:///etc/passwd".into(),
            "spearlet.artifacts.file_prefixes",
        ),
        (linked_out, "spearlet.artifacts.file_prefixes"),
        (
            format!("sms+file://10.255.255.1:9/{sha}"),
            "spearlet.sms_http_addr",
        ),
    ];
    for (uri, refusal) in cases {
        let body = json!({"executable": {"type": "process", "uri": uri, "args": ["web"]}, "max_attempts": 1});
        let id = sms.submit(body).await;
        let e = sms.finished(&id, LONG).await;
        if refusal.is_empty() {
            assert_eq!(e["state"], "succeeded", "{uri}: {e}");
            assert_eq!(e["result"]["stdout"], "from-artifact web\n");
        } else {
            assert_eq!(e["state"], "failed", "{uri}: {e}");
            assert!(e["error"].as_str().unwrap().contains(refusal), "{uri}: {e}");
            assert_eq!(e["started_at_ms"], 0, "it never started: {e}");
        }
    }

    // A URI the node cannot fetch fails that execution clearly; the node goes on.
    let id = sms
        .submit(json!({"executable": {"type": "process", "uri": "file:///no/such/program"}, "max_attempts": 1}))
        .await;
    let e = sms.finished(&id, LONG).await;
    assert_eq!(e["state"], "failed");
    assert!(
        e["error"].as_str().unwrap().contains("/no/such/program"),
        "{e}"
    );
    let ok = sms.sh("echo ok", json!({})).await;
    assert_eq!(sms.finished(&ok, LONG).await["state"], "succeeded");
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
    let deadline = Instant::now() + LONG;
    while sms.execution(&id).await["state"] != "running" {
        assert!(Instant::now() < deadline, "never started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
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
    assert_eq!(e["attempt"], 1, "{e}");
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
    let deadline = Instant::now() + LONG;
    while std::fs::read_to_string(&pidfile)
        .unwrap_or_default()
        .trim()
        .is_empty()
    {
        assert!(Instant::now() < deadline, "the execution never started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let pid: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
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
async fn a_fetch_that_hangs_ends_at_its_deadline_and_holds_up_no_other() {
    let c = Cluster::new();
    let sms = c.sms();
    // A server that takes connections and never answers.
    let hole = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = hole.local_addr().unwrap();
    let s = c.spearlet(
        "alpha",
        &sms,
        "[spearlet.artifacts]\nfetch_timeout_ms = 10000\n",
    );
    let stuck_uri = format!("http://{addr}/never#sha256={}", "1".repeat(64));
    let stuck = sms
        .submit(json!({"executable": {"type": "process", "uri": stuck_uri}, "max_attempts": 1}))
        .await;
    // Meanwhile another artifact is fetched (from SMS) and runs.
    let meta: serde_json::Value = reqwest::Client::new()
        .post(sms.url("/api/v1/files?name=quick.sh"))
        .body(b"#!/bin/sh\necho quick\n".to_vec())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let quick = sms
        .submit(json!({"executable": {"type": "process", "uri": meta["uri"]}, "max_attempts": 1}))
        .await;
    let e = sms.finished(&quick, LONG).await;
    assert_eq!(e["state"], "succeeded", "{e}\n{}", s.log());
    let waiting = sms.execution(&stuck).await;
    assert!(
        ["assigned", "running"].contains(&waiting["state"].as_str().unwrap()),
        "the hanging fetch is still under way: {waiting}"
    );
    // The hanging one ends at its deadline, saying so.
    let e = sms.finished(&stuck, LONG).await;
    assert_eq!(e["state"], "failed", "{e}");
    assert!(
        e["error"]
            .as_str()
            .unwrap()
            .contains("spearlet.artifacts.fetch_timeout_ms"),
        "{e}"
    );
    drop(hole);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_artifact_a_pooled_instance_uses_is_not_evicted() {
    let c = Cluster::new();
    let sms = c.sms();
    // A 1 MiB cache, and two programs of 600 KiB each: keeping the second must evict the first,
    // but the first's instance is still in the pool.
    let config = c.spearlet_config("alpha", "").replace(
        "[spearlet.storage]\n",
        "[spearlet.storage]\nmax_cache_size_mb = 1\n",
    );
    let config = c.write("alpha.toml", &config);
    let s = c.spearlet_with(
        "alpha",
        &config,
        &["--sms-addr", &sms.grpc.to_string(), "--auto-register"],
    );
    let mut shas = Vec::new();
    for name in ["first", "second"] {
        let mut script = format!("#!/bin/sh\necho {name}\nexit 0\n").into_bytes();
        script.extend(std::iter::repeat_n(b'#', 600 * 1024));
        let meta: serde_json::Value = reqwest::Client::new()
            .post(sms.url(&format!("/api/v1/files?name={name}.sh")))
            .body(script)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let id = sms
            .submit(
                json!({"executable": {"type": "process", "uri": meta["uri"]}, "max_attempts": 1}),
            )
            .await;
        let e = sms.finished(&id, LONG).await;
        assert_eq!(e["state"], "succeeded", "{e}\n{}", s.log());
        assert_eq!(e["result"]["stdout"], format!("{name}\n"));
        shas.push(meta["file_id"].as_str().unwrap().to_owned());
    }
    let cached = |sha: &str| c.path().join("alpha-data/artifacts").join(sha).is_file();
    assert!(cached(&shas[0]), "in use by a pooled instance, kept");
    assert!(cached(&shas[1]));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_process_execution_runs_in_a_private_directory_removed_at_its_end() {
    let c = Cluster::new();
    let sms = c.sms();
    let s = c.spearlet("alpha", &sms, "");
    let work = c.path().join("alpha-data/work");
    let mut seen = Vec::new();
    for _ in 0..2 {
        let id = sms
            .sh("pwd; stat -c %a .; echo data > left-behind; ls", json!({}))
            .await;
        let e = sms.finished(&id, LONG).await;
        assert_eq!(e["state"], "succeeded", "{e}\n{}", s.log());
        let out = e["result"]["stdout"].as_str().unwrap().to_owned();
        let mut lines = out.lines();
        let dir = std::path::PathBuf::from(lines.next().unwrap());
        assert!(dir.starts_with(&work), "{out}");
        assert_eq!(lines.next(), Some("700"), "{out}");
        assert_eq!(lines.next(), Some("left-behind"), "{out}");
        seen.push(dir);
    }
    assert_ne!(seen[0], seen[1], "one directory each");
    // Removed once each ended (off the async threads: allow it a moment).
    let deadline = Instant::now() + Duration::from_secs(10);
    while seen.iter().any(|d| d.exists()) {
        assert!(Instant::now() < deadline, "{seen:?} still there");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Turned off, a program runs where the Spearlet does.
    let c = Cluster::new();
    let sms = c.sms();
    let config = c.spearlet_config("beta", "").replace(
        "[spearlet.limits]\n",
        "[spearlet.limits]\nprivate_workdir = false\n",
    );
    let config = c.write("beta.toml", &config);
    let _s = c.spearlet_with(
        "beta",
        &config,
        &["--sms-addr", &sms.grpc.to_string(), "--auto-register"],
    );
    let id = sms.sh("pwd", json!({})).await;
    let e = sms.finished(&id, LONG).await;
    assert_eq!(e["state"], "succeeded", "{e}");
    let pwd = std::path::PathBuf::from(e["result"]["stdout"].as_str().unwrap().trim());
    assert_eq!(
        pwd.canonicalize().unwrap(),
        c.path().canonicalize().unwrap()
    );
}
