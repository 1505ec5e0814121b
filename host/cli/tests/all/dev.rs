//! `spear dev`: one command starts SMS (auth on, its tokens made by `spear dev`) and a Spearlet
//! from a plugin directory, prints where they listen and the admin token, hands the token to the
//! CLI for that SMS only, runs work, and stops both on Ctrl-C.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use spear_tests::guest;

/// `GET url` over a plain TCP connection, with `token` if given: (status code, body).
fn http_get(url: &str, token: Option<&str>) -> (u16, String) {
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let mut s = TcpStream::connect(host).unwrap();
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\n{auth}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let status = text.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    (status, body.to_owned())
}

fn alive(pid: u64) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// `spear` with `home` as its HOME (where `spear dev` leaves its token for the CLI).
fn spear_in(home: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_spear"));
    c.env("HOME", home).env_remove("SPEAR_TOKEN");
    c
}

/// Start `spear dev` in a sandbox with the plugins it needs, on free ports; (the process, its
/// JSON line, the sandbox, HOME).
fn start_dev(
    extra: &[&str],
) -> (
    std::process::Child,
    Value,
    tempfile::TempDir,
    tempfile::TempDir,
) {
    let dir = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("plugins");
    std::fs::create_dir(&plugins).unwrap();
    for file in [
        "redb.so",
        "memory.so",
        "process.so",
        "wasm.so",
        "container.so",
    ] {
        std::fs::copy(guest("native", file), plugins.join(file)).unwrap();
    }
    for file in [
        "least-connections.wasm",
        "round-robin.wasm",
        "idle-time.wasm",
    ] {
        std::fs::copy(guest("component", file), plugins.join(file)).unwrap();
    }
    let free = "127.0.0.1:0";
    let mut dev = spear_in(home.path())
        .args(["--output", "json", "dev", "--dir"])
        .arg(dir.path())
        .args([
            "--http-addr",
            free,
            "--grpc-addr",
            free,
            "--admin-addr",
            free,
        ])
        .args(["--spearlet-http-addr", free, "--spearlet-grpc-addr", free])
        .args(extra)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(dev.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    let started: Value = serde_json::from_str(&first)
        .unwrap_or_else(|e| panic!("spear dev printed no JSON ({e}): {first:?}"));
    (dev, started, dir, home)
}

#[test]
fn dev_starts_sms_and_a_spearlet_prints_their_addresses_and_ctrl_c_stops_both() {
    let (mut dev, started, dir, home) = start_dev(&[]);
    let token = started["token"]
        .as_str()
        .expect("the admin token")
        .to_owned();
    assert!(token.starts_with("spear."), "{started}");
    let handoff = home.path().join(".spear/dev-token.json");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&handoff).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(dir.path().join("sms.toml").is_file());
    assert!(dir.path().join("spearlet.toml").is_file());
    let sms = started["sms"].as_str().unwrap().to_owned();
    let (sms_pid, spearlet_pid) = (
        started["sms_pid"].as_u64().unwrap(),
        started["spearlet_pid"].as_u64().unwrap(),
    );
    assert!(alive(sms_pid) && alive(spearlet_pid), "{started}");

    // Every printed address answers.
    let (code, swagger) = http_get(started["swagger"].as_str().unwrap(), None);
    assert_eq!(code, 200, "{swagger}");
    let (code, metrics) = http_get(started["metrics"].as_str().unwrap(), Some(&token));
    assert_eq!(code, 200, "{metrics}");
    // Auth is on: without the token, no.
    let (code, body) = http_get(started["metrics"].as_str().unwrap(), None);
    assert_eq!(code, 401, "{body}");
    let (code, status) = http_get(started["spearlet_status"].as_str().unwrap(), None);
    assert_eq!(code, 200, "{status}");
    let (code, admin) = http_get(started["web_admin"].as_str().unwrap(), None);
    assert_eq!(code, 200, "{admin}");

    // The node registers (with the node token `spear dev` made) and runs work submitted with
    // the CLI, which finds the token `spear dev` left for this SMS.
    let deadline = Instant::now() + Duration::from_secs(60);
    let run = loop {
        let out = spear_in(home.path())
            .args([
                "--sms",
                &sms,
                "run",
                "--type",
                "process",
                "--name",
                "/bin/echo",
            ])
            .args(["--", "hello"])
            .output()
            .unwrap();
        if out.status.code() == Some(0) || Instant::now() > deadline {
            break out;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(
        (
            run.status.code(),
            String::from_utf8_lossy(&run.stdout).as_ref()
        ),
        (Some(0), "hello\n"),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let node: Value = serde_json::from_slice(
        &spear_in(home.path())
            .args(["--sms", &sms, "--output", "json", "node", "show"])
            .arg(started["node_uuid"].as_str().unwrap())
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert_eq!(node["status"], "active", "{node}");
    // Another HOME has no token for it; and the token is never sent to another SMS.
    let stranger = tempfile::tempdir().unwrap();
    let out = spear_in(stranger.path())
        .args(["--sms", &sms, "task", "list"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("needs a token"),
        "{out:?}"
    );
    let other = format!("http://{}", crate::common::closed_port());
    let out = spear_in(home.path())
        .args(["--sms", &other, "task", "list"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");

    // Ctrl-C (SIGINT to `spear` alone: the children have their own process group).
    signal(dev.id(), "-INT");
    let deadline = Instant::now() + Duration::from_secs(90);
    let status = loop {
        if let Some(s) = dev.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "spear dev did not stop");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(status.code(), Some(0));
    assert!(!alive(sms_pid), "sms outlived spear dev");
    assert!(!alive(spearlet_pid), "spearlet outlived spear dev");
    assert!(
        !handoff.exists(),
        "the token hand-off is removed at the stop"
    );
    // The tokens are kept for the next run, readable by their owner only.
    let kept = dir.path().join("data/dev-admin.token");
    assert_eq!(std::fs::read_to_string(&kept).unwrap().trim(), token);
    assert_eq!(
        std::fs::metadata(&kept).unwrap().permissions().mode() & 0o777,
        0o600
    );
}

#[test]
fn dev_with_no_auth_runs_without_tokens() {
    let (mut dev, started, _dir, home) = start_dev(&["--no-auth"]);
    assert_eq!(started["token"], Value::Null, "{started}");
    let (code, body) = http_get(started["metrics"].as_str().unwrap(), None);
    assert_eq!(code, 200, "{body}");
    assert!(!home.path().join(".spear/dev-token.json").exists());
    signal(dev.id(), "-INT");
    let deadline = Instant::now() + Duration::from_secs(90);
    while dev.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "spear dev did not stop");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn dev_without_plugins_says_how_to_get_them() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_spear"))
        .args(["dev", "--dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no plugin files in") && stderr.contains("./run-dev.sh"),
        "{stderr}"
    );
}

fn signal(pid: u32, signal: &str) {
    let ok = Command::new("kill")
        .arg(signal)
        .arg(pid.to_string())
        .status()
        .unwrap()
        .success();
    assert!(ok);
}
