//! SMS on a disk that fills: a real tmpfs of a few MiB under its data directory (root only, as the
//! CI runs). Writes answer 503, `/healthz` says unhealthy naming the storage, the failures are
//! logged at warn once per burst, and reads keep working.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::Sandbox;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio_stream::StreamExt;

/// A tmpfs mounted for the test, unmounted on drop.
struct Mount(PathBuf);

impl Mount {
    fn tmpfs(at: &Path, size: &str) -> Option<Self> {
        std::fs::create_dir_all(at).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Self(at.to_owned()))
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}

#[tokio::test]
async fn a_full_disk_makes_writes_fail_healthz_unhealthy_and_one_warning_per_burst() {
    if !is_root() {
        eprintln!("skipped: mounting a tmpfs needs root");
        return;
    }
    let sb = Sandbox::new("[log]\nlevel = \"warn\"");
    let _mount = Mount::tmpfs(&sb.path().join("data"), "4m").expect("mount a tmpfs");
    let mut sms = sb.start_logging(&[]);
    let c = reqwest::Client::new();
    let health = common::get_json(&c, &sms, "/healthz").await;
    assert_eq!(health["status"], "ok", "{health}");

    // 256 KiB of environment a submission (stored with the execution's record) fills 4 MiB in
    // about 16.
    let body = json!({"executable": {"type": "process", "name": "/bin/true", "env": large_env(4)}});
    let mut accepted = 0;
    let mut refused = 0;
    for _ in 0..200 {
        let r = c
            .post(sms.url("/api/v1/executions"))
            .json(&body)
            .send()
            .await
            .unwrap();
        match r.status() {
            StatusCode::CREATED => accepted += 1,
            StatusCode::SERVICE_UNAVAILABLE => {
                let answer: Value = r.json().await.unwrap();
                assert_eq!(answer["error"]["code"], "unavailable", "{answer}");
                refused += 1;
                if refused == 20 {
                    break;
                }
            }
            other => panic!("{other}: {}", r.text().await.unwrap()),
        }
    }
    assert!(accepted > 0, "nothing was stored before the disk filled");
    assert_eq!(refused, 20, "the disk never filled ({accepted} accepted)");
    // A large input (kept in the blob store) finds no room either: refused the same way.
    let large = json!({"executable": {"type": "process", "name": "/bin/true"},
        "stdin": "y".repeat(300 * 1024)});
    let r = c
        .post(sms.url("/api/v1/executions"))
        .json(&large)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    let answer: Value = r.json().await.unwrap();
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("cannot store a payload"),
        "{answer}"
    );

    let r = c.get(sms.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    let health: Value = r.json().await.unwrap();
    assert_eq!(health["status"], "unhealthy", "{health}");
    assert!(
        health["storage"].as_str().unwrap().starts_with("failing: "),
        "{health}"
    );
    // Reads keep working.
    let list = common::get_json(&c, &sms, "/api/v1/executions").await;
    assert!(list["executions"].as_array().unwrap().len() >= accepted);
    assert!(sms.child.try_wait().unwrap().is_none(), "SMS died");

    // Twenty failed writes within the burst window: one warning.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let log = std::fs::read_to_string(sb.path().join("stderr.log")).unwrap();
    let warnings: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("a storage write failed"))
        .collect();
    assert_eq!(warnings.len(), 1, "{log}");
}

/// An executable's environment of `n` variables of 64 KiB each (the most one may hold): it is
/// stored inside the execution's record (unlike a large stdin, which goes to the blob store).
fn large_env(n: usize) -> Value {
    (0..n)
        .map(|i| (format!("FILL_{i}"), Value::from("x".repeat(64 * 1024))))
        .collect::<serde_json::Map<_, _>>()
        .into()
}

/// Submit an execution whose record is larger than any room the store keeps allocated ahead, so
/// that storing it needs free space; its id.
async fn submit_large(c: &reqwest::Client, sms: &common::Sms) -> String {
    let (status, submitted) = common::post_json(
        c,
        sms,
        "/api/v1/executions",
        &json!({"executable": {"type": "wasm", "uri": "file:///x.wasm", "env": large_env(8)}}),
    )
    .await;
    assert_eq!(status, 201, "{submitted}");
    submitted["execution_id"].as_str().unwrap().to_owned()
}

/// Fill the filesystem of `filler` until not one more byte can be written.
fn fill(filler: &Path) {
    use std::io::Write;
    let mut f = std::fs::File::create(filler).unwrap();
    for size in [64 * 1024, 4096, 1] {
        let chunk = vec![0u8; size];
        while f.write_all(&chunk).and_then(|()| f.sync_all()).is_ok() {}
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_assignment_whose_write_fails_never_leaves_sms_and_goes_once_space_returns() {
    if !is_root() {
        eprintln!("skipped: mounting a tmpfs needs root");
        return;
    }
    let sb = Sandbox::new("");
    let data = sb.path().join("data");
    let _mount = Mount::tmpfs(&data, "16m").expect("mount a tmpfs");
    let sms = sb.start(&[]);
    let c = reqwest::Client::new();
    let uuid = common::register_wasm_node(&sms, 4).await;
    let id = submit_large(&c, &sms).await;

    // The disk fills before the node connects: the round that places the execution cannot
    // store it, so the node must not be sent it (it would run work SMS has no record of).
    let filler = data.join("filler");
    fill(&filler);
    let (_execs, mut stream) = common::open_assignments(&sms, &uuid).await;
    let early = tokio::time::timeout(Duration::from_millis(1500), stream.next()).await;
    assert!(early.is_err(), "sent before it was stored: {early:?}");
    // Back in the queue after each failed round. (While a round's write is on its way the
    // execution reads as assigned: SMS shows a placement before it is durable; see the notes.)
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let exec = common::get_json(&c, &sms, &format!("/api/v1/executions/{id}")).await;
        if exec["state"] == "ready" {
            break;
        }
        assert_eq!(exec["state"], "assigned", "{exec}");
        assert!(tokio::time::Instant::now() < deadline, "never back: {exec}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Space returns: the next rounds store it and send it.
    std::fs::remove_file(&filler).unwrap();
    let sent = tokio::time::timeout(Duration::from_secs(20), stream.next())
        .await
        .unwrap_or_else(|_| {
            let ls = Command::new("ls").arg("-la").arg(&data).output().unwrap();
            panic!(
                "not sent once space returned: {}",
                String::from_utf8_lossy(&ls.stdout)
            )
        })
        .expect("the stream is open")
        .expect("an assignment");
    assert_eq!(sent.execution.unwrap().execution_id, id);
    let exec = common::get_json(&c, &sms, &format!("/api/v1/executions/{id}")).await;
    assert_eq!(exec["state"], "assigned", "{exec}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_nodes_work_that_cannot_be_requeued_is_requeued_once_space_returns() {
    if !is_root() {
        eprintln!("skipped: mounting a tmpfs needs root");
        return;
    }
    let sb = Sandbox::new("heartbeat_timeout = 2");
    let data = sb.path().join("data");
    let _mount = Mount::tmpfs(&data, "16m").expect("mount a tmpfs");
    let sms = sb.start(&[]);
    let c = reqwest::Client::new();
    let uuid = common::register_wasm_node(&sms, 4).await;
    let (_execs, mut stream) = common::open_assignments(&sms, &uuid).await;
    let ids = [submit_large(&c, &sms).await, submit_large(&c, &sms).await];
    for _ in 0..2 {
        tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .expect("assigned")
            .unwrap()
            .unwrap();
    }

    // The disk fills, then the node misses its heartbeats (it sends none): its work cannot be
    // stored as requeued while the disk is full.
    let filler = data.join("filler");
    fill(&filler);
    tokio::time::sleep(Duration::from_secs(4)).await;
    for id in &ids {
        let exec = common::get_json(&c, &sms, &format!("/api/v1/executions/{id}")).await;
        assert_eq!(exec["state"], "assigned", "{exec}");
    }

    // Space returns: every execution of the lost node is requeued, none left behind.
    std::fs::remove_file(&filler).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    for id in &ids {
        loop {
            let exec = common::get_json(&c, &sms, &format!("/api/v1/executions/{id}")).await;
            if exec["state"] == "ready" {
                assert_eq!(exec["orphaned_on"], uuid.as_str(), "{exec}");
                assert_eq!(exec["requeued"], 1, "not spent: {exec}");
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "never requeued: {exec}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
