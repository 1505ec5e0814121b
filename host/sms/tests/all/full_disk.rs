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

    // 256 KiB of stdin a submission (stored with the execution) fills 4 MiB in about 16.
    let stdin = "x".repeat(256 * 1024);
    let body = json!({"executable": {"type": "process", "name": "/bin/true"}, "stdin": stdin});
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
