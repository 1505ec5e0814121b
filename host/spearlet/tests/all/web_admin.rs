//! The web admin with a real Spearlet, in a real browser: `tests/browser/admin_e2e.mjs`
//! (Playwright driving Debian's chromium; `tests/browser/setup.sh`, which `run-tests.sh` calls,
//! installs both) against an SMS run as SPEAR's README runs it (auth off, the admin behind
//! `SMS_WEB_ADMIN_TOKEN`). The Spearlet starts once the page is open and waiting for it.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::common::Cluster;

#[test]
fn the_web_admin_shows_a_spearlet_live_and_runs_an_uploaded_script_on_it() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/browser");
    assert!(
        dir.join("node_modules/playwright-core/package.json")
            .is_file(),
        "playwright-core is missing: run tests/browser/setup.sh (run-tests.sh does)"
    );
    let token = "spear-web-admin-token-e2e-0123456789";
    let cluster = Cluster::new();
    let sms = cluster.sms_full(
        "127.0.0.1:0",
        "127.0.0.1:0",
        "[scheduler]\nstrategy = \"least-connections\"\n",
        "",
        &[
            ("SMS_ENABLE_WEB_ADMIN", "true"),
            ("SMS_WEB_ADMIN_ADDR", "127.0.0.1:0"),
            ("SMS_WEB_ADMIN_TOKEN", token),
        ],
    );
    let admin = sms.admin.expect("the web admin is served");
    let mut script = Command::new("node")
        .current_dir(&dir)
        .arg("admin_e2e.mjs")
        .arg(format!("http://{admin}"))
        .arg(token)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("node runs");
    let (tx, rx) = mpsc::channel();
    let stdout = script.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut lines = Vec::new();
    let mut spearlet = None;
    // Lines until the script's output ends (it exits); the Spearlet starts at `ready:`.
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(240)) {
        if line.starts_with("ready:") && spearlet.is_none() {
            spearlet = Some(cluster.spearlet("admin-node", &sms, ""));
        }
        lines.push(line);
    }
    let out = script.wait_with_output().expect("node ends");
    let stdout = lines.join("\n");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let log = spearlet.as_ref().map(|s| s.log()).unwrap_or_default();
    assert!(
        out.status.success(),
        "admin_e2e.mjs failed\nstdout:\n{stdout}\nstderr:\n{stderr}\nspearlet log:\n{log}"
    );
    assert!(spearlet.is_some(), "the page never waited for a Spearlet");
    assert_eq!(stdout.matches("ok: ").count(), 8, "{stdout}");
}
