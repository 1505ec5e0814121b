//! `spear run`, `status`, `logs` and `cancel`: output and exit codes passed through.

use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::common::Cluster;
use crate::sh_args;

/// `spear --sms URL ARGS…`, run to its end.
fn at(url: &str, args: &[&str]) -> crate::common::Run {
    let mut c = crate::common::spear();
    c.arg("--sms").arg(url).args(args);
    crate::common::finish(&mut c)
}

#[test]
fn run_passes_output_and_exit_code_through() {
    let c = Cluster::start();
    let r = c.spear(&sh_args(&[], "echo hi; echo oops >&2; exit 3"));
    assert_eq!(r.code, Some(3), "{r:?}");
    assert_eq!(r.stdout, "hi\n", "{r:?}");
    assert_eq!(r.stderr, "oops\n", "{r:?}");

    let r = c.spear(&sh_args(&["--stdin", "from stdin"], "cat")).ok();
    assert_eq!(r.stdout, "from stdin", "{r:?}");

    // A signal is 128 + the signal.
    let r = c.spear(&sh_args(&[], "kill -9 $$"));
    assert_eq!(r.code, Some(137), "{r:?}");
    assert!(r.stderr.contains("killed by signal 9"), "{r:?}");

    // A failure without an exit code (here: a timeout) is 1, and says why.
    let r = c.spear(&sh_args(&["--timeout-ms", "300"], "sleep 5"));
    assert_eq!(r.code, Some(1), "{r:?}");
    assert!(r.stderr.contains("failed: timed out after"), "{r:?}");

    let mut json = vec!["--output", "json"];
    json.extend(sh_args(&[], "echo hi; exit 3"));
    let r = c.spear(&json);
    assert_eq!(r.code, Some(3), "{r:?}");
    let e = r.json();
    assert_eq!(e["state"], "failed", "{e}");
    assert_eq!(e["result"]["exit_code"], 3, "{e}");
    assert_eq!(e["result"]["stdout"], "hi\n", "{e}");

    let r = c.spear(&["run"]);
    assert_eq!(r.code, Some(2), "{r:?}");
    assert!(r.stderr.contains("say what to run"), "{r:?}");
}

#[test]
fn a_detached_run_is_seen_by_status_and_logs() {
    let c = Cluster::start();
    let r = c.spear(&sh_args(&["--detach"], "echo hello")).ok();
    let id = r.stdout.trim().to_owned();
    assert!(!id.is_empty() && !id.contains(char::is_whitespace), "{r:?}");
    let e = c.wait_for(&id, "succeeded", |e| e["state"] == "succeeded");
    assert_eq!(e["execution_id"], id.as_str(), "{e}");

    let r = c.spear(&["status", &id]).ok();
    assert!(r.stdout.contains("state:"), "{r:?}");
    assert!(r.stdout.contains("succeeded"), "{r:?}");

    // Why it went where it went: the round, the strategy, the one node chosen.
    let r = c.spear(&["explain", &id]).ok();
    let node = e["node_uuid"].as_str().unwrap();
    for want in [
        format!("assigned to {node}"),
        "least-connections".to_owned(),
        "chosen".to_owned(),
        "position 0".to_owned(),
    ] {
        assert!(r.stdout.contains(&want), "{want} in {r:?}");
    }
    let x = c.spear(&["--output", "json", "explain", &id]).ok().json();
    assert_eq!(x["nodes"][0]["node_uuid"], node, "{x}");

    let r = c.spear(&["logs", &id]).ok();
    for want in [
        "execution.submitted",
        "execution.succeeded",
        "── stdout ──\nhello\n",
    ] {
        assert!(r.stdout.contains(want), "no {want:?} in {r:?}");
    }
    assert!(!r.stdout.contains("node.registered"), "{r:?}");
    let lines = c
        .spear(&["--output", "json", "logs", &id])
        .ok()
        .json_lines();
    let (last, events) = lines.split_last().expect("lines");
    assert_eq!(last["execution_id"], id.as_str(), "{last}");
    assert_eq!(last["result"]["stdout"], "hello\n", "{last}");
    assert!(
        events.iter().all(|e| e["subject"] == id.as_str()),
        "{lines:?}"
    );
    assert_eq!(events.last().unwrap()["kind"], "execution.succeeded");

    // The whole log, without an id, holds the node's registration too.
    let r = c.spear(&["logs"]).ok();
    assert!(r.stdout.contains("node.registered"), "{r:?}");
    assert!(r.stdout.contains(&id), "{r:?}");

    // --follow with an id waits for the end, then prints the output.
    let r = c.spear(&sh_args(&["--detach"], "sleep 1; echo late")).ok();
    let late = r.stdout.trim().to_owned();
    let started = Instant::now();
    let r = c.spear(&["logs", &late, "--follow"]).ok();
    assert!(r.stdout.contains("── stdout ──\nlate\n"), "{r:?}");
    assert!(started.elapsed() >= Duration::from_millis(500), "{r:?}");

    let r = c.spear(&["status"]).ok();
    assert!(r.stdout.contains("1 active"), "{r:?}");
    assert!(r.stdout.contains(&late), "{r:?}");
    assert!(r.stdout.contains("least-connections"), "{r:?}");
    let s = c.json(&["status"]);
    assert_eq!(s["nodes"]["by_status"]["active"], 1, "{s}");
    assert_eq!(s["executions"]["by_state"]["succeeded"], 2, "{s}");
    assert_eq!(s["recent"][0]["execution_id"], late.as_str(), "{s}");
    let active: Vec<&str> = s["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert!(active.contains(&"least-connections"), "{s}");
}

#[test]
fn cancel_stops_a_long_execution() {
    let c = Cluster::start();
    let id = c
        .spear(&sh_args(&["--detach"], "sleep 30"))
        .ok()
        .stdout
        .trim()
        .to_owned();
    c.wait_for(&id, "running", |e| e["state"] == "running");
    let r = c.spear(&["cancel", &id]).ok();
    assert_eq!(r.stdout, format!("cancelled execution {id}\n"), "{r:?}");
    assert_eq!(c.json(&["status", &id])["state"], "cancelled");
    let r = c.spear(&["cancel", &id]);
    assert_eq!(r.code, Some(1), "{r:?}");
    assert!(
        r.stderr.contains(&format!(
            "SMS refused the request (conflict): execution {id} already cancelled"
        )),
        "{r:?}"
    );

    // An attached `spear run` whose execution is cancelled elsewhere ends with 1, saying so.
    let mut run = c.cmd(&sh_args(&[], "sleep 30"));
    let child = run
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let id = loop {
        let s = c.json(&["status"]);
        let running = s["recent"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["state"] == "running")
            .and_then(|e| e["execution_id"].as_str().map(str::to_owned));
        if let Some(id) = running {
            break id;
        }
        assert!(Instant::now() < deadline, "never running: {s}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let cancelled = c.json(&["cancel", &id]);
    assert_eq!(cancelled["state"], "cancelled", "{cancelled}");
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("execution {id} was cancelled")),
        "{stderr}"
    );
}

#[test]
fn logs_skip_what_retention_removed_with_a_warning() {
    let sms = crate::common::LoneSms::start(
        tempfile::tempdir().unwrap(),
        "[retention]\nevents_count = 3\nsweep_interval_secs = 1\n",
        &[],
    );
    let url = format!("http://{}", sms.http);
    let spear = |args: &[&str]| at(&url, args);
    // Six submissions (no node: they stay queued), six events; the newest three are kept.
    for _ in 0..6 {
        spear(&sh_args(&["--detach"], "true")).ok();
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    let kept = loop {
        let lines = spear(&["--output", "json", "logs"]).ok().json_lines();
        if lines.len() <= 3 {
            break lines;
        }
        assert!(Instant::now() < deadline, "never compacted: {lines:?}");
        std::thread::sleep(Duration::from_millis(200));
    };
    let cursors: Vec<u64> = kept.iter().map(|e| e["cursor"].as_u64().unwrap()).collect();
    assert_eq!(cursors, [4, 5, 6]);
    let r = spear(&["--output", "json", "logs", "--after", "1"]).ok();
    assert!(
        r.stderr
            .contains("removed by SMS's retention; going on from cursor 3"),
        "{r:?}"
    );
    let cursors: Vec<u64> = r
        .json_lines()
        .iter()
        .map(|e| e["cursor"].as_u64().unwrap())
        .collect();
    assert_eq!(cursors, [4, 5, 6], "{r:?}");
}

#[test]
fn run_takes_a_deadline_and_an_estimate() {
    let sms = crate::common::LoneSms::start(tempfile::tempdir().unwrap(), "", &[]);
    let url = format!("http://{}", sms.http);
    let spear = |args: &[&str]| at(&url, args);
    let now_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    // RFC 3339 text goes to SMS as text (no node: it stays queued), and is read there.
    let at = now_s + 3_600;
    let text = std::process::Command::new("date")
        .args(["-u", "-d", &format!("@{at}"), "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .unwrap();
    let text = String::from_utf8(text.stdout).unwrap().trim().to_owned();
    let r = spear(&sh_args(
        &["--detach", "--deadline", &text, "--estimate-ms", "250"],
        "true",
    ))
    .ok();
    let id = r.stdout.trim().to_owned();
    let e = spear(&["--output", "json", "status", &id]).ok().json();
    assert_eq!(e["deadline_ms"], at * 1000, "{text}: {e}");
    assert_eq!(e["estimate_ms"], 250, "{e}");
    // Milliseconds since the epoch go as a number.
    let ms = ((now_s + 60) * 1000).to_string();
    let r = spear(&sh_args(&["--detach", "--deadline", &ms], "true")).ok();
    let e = spear(&["--output", "json", "status", r.stdout.trim()])
        .ok()
        .json();
    assert_eq!(e["deadline_ms"].to_string(), ms, "{e}");
    // More than a year ahead: SMS's refusal names the field and says why.
    let r = spear(&sh_args(
        &["--detach", "--deadline", "2099-01-01T00:00:00+01:00"],
        "true",
    ));
    assert_ne!(r.code, Some(0), "{r:?}");
    assert!(r.stderr.contains("at most a year ahead"), "{r:?}");
    let r = spear(&sh_args(&["--detach", "--deadline", "1"], "true"));
    assert_ne!(r.code, Some(0), "{r:?}");
    assert!(r.stderr.contains("already past"), "{r:?}");
}

#[test]
fn run_asks_for_checkpoints_and_a_recovery() {
    use serde_json::json;
    let sms = crate::common::LoneSms::start(tempfile::tempdir().unwrap(), "", &[]);
    let url = format!("http://{}", sms.http);
    let spear = |args: &[&str]| at(&url, args);
    let status = |id: &str| spear(&["--output", "json", "status", id]).ok().json();
    let r = spear(&sh_args(&["--detach", "--checkpoint"], "true")).ok();
    let e = status(r.stdout.trim());
    assert_eq!(
        (&e["checkpoint"], &e["recovery"]),
        (&json!(true), &json!("checkpoint")),
        "{e}"
    );
    let r = spear(&sh_args(
        &["--detach", "--checkpoint", "--recovery", "restart"],
        "true",
    ))
    .ok();
    let e = status(r.stdout.trim());
    assert_eq!(
        (&e["checkpoint"], &e["recovery"]),
        (&json!(true), &json!("restart")),
        "{e}"
    );
    let r = spear(&sh_args(&["--detach"], "true")).ok();
    let e = status(r.stdout.trim());
    assert_eq!(
        (e.get("checkpoint"), &e["recovery"]),
        (None, &json!("restart")),
        "{e}"
    );
    let r = spear(&sh_args(&["--detach", "--recovery", "teleport"], "true"));
    assert_ne!(r.code, Some(0), "{r:?}");
    assert!(r.stderr.contains("restart"), "clap names the values: {r:?}");
}
