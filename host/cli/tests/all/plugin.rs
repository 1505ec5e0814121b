//! `spear plugin check` and `spear plugin sim`, run as the real binary.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use spear_tests::extism_wat::{Output, extism_module, info_json};
use spear_tests::{Sandbox, guest, host_config};

fn spear() -> Command {
    Command::new(env!("CARGO_BIN_EXE_spear"))
}

#[test]
fn check_accepts_every_form_and_prints_the_plugin_info() {
    for (form, file) in [
        ("component", "least-connections.wasm"),
        ("extism", "least-connections.wasm"),
        ("native", "least-connections.so"),
    ] {
        let out = spear()
            .args(["plugin", "check"])
            .arg(guest(form, file))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{form}: {text}");
        assert!(text.contains("name:        least-connections"), "{text}");
        assert!(text.contains(&format!("form:        {form}")), "{text}");
        assert!(
            text.contains("placed 6 requests on 3 targets → [1, 2, 3, 1, 2, 3]"),
            "{text}"
        );
    }
}

#[test]
fn check_runs_a_storage_backend_through_the_contract_in_either_form() {
    for (form, file) in [("component", "memory.wasm"), ("native", "memory.so")] {
        let out = spear()
            .args(["plugin", "check"])
            .arg(guest(form, file))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{form}: {text}");
        assert!(text.contains("kind:        storage-backend"), "{text}");
        assert!(text.contains("put, got and scanned 3 keys"), "{text}");
    }
    // A component that answers scans wrongly fails the check, naming what it got wrong.
    let out = spear()
        .args(["plugin", "check", "--config", r#"{"mode": "wrong-scan"}"#])
        .arg(guest("component", "hostile-storage.wasm"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("scan failed"), "{text}");
    assert!(text.contains("answered a scan wrongly"), "{text}");
}

#[test]
fn check_configures_an_executor_in_either_form_and_runs_nothing() {
    for (form, file, config, kind) in [
        (
            "component",
            "http.wasm",
            r#"{"endpoint": "http://127.0.0.1:9/run"}"#,
            "`http`",
        ),
        ("native", "process.so", "{}", "`process` (signals"),
    ] {
        let out = spear()
            .args(["plugin", "check", "--config", config])
            .arg(guest(form, file))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{form}: {text}");
        assert!(text.contains("kind:        executor"), "{text}");
        assert!(
            text.contains(&format!("configured; runs executable type {kind}")),
            "{text}"
        );
    }
    // A configuration it refuses fails the check, naming the key.
    let out = spear()
        .args(["plugin", "check", "--config", r#"{"endpoint": "ftp://x/"}"#])
        .arg(guest("component", "http.wasm"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("configure refused: endpoint"), "{text}");
}

#[test]
fn check_refuses_with_the_reason_and_exit_code_1() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("x.wasm");
    std::fs::write(&garbage, b"definitely not wasm").unwrap();
    for (path, reason) in [
        (garbage, "unknown magic bytes"),
        (
            guest("native", "abi-mismatch.so"),
            "built against plugin ABI 4.0.0, this host speaks 3.0.0",
        ),
        (
            guest("component", "not-a-plugin.wasm"),
            "a component of no spear:plugin world",
        ),
    ] {
        let out = spear()
            .args(["plugin", "check"])
            .arg(&path)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(1), "{text}");
        assert!(
            text.starts_with(&format!("{}: refused: ", path.display())),
            "{text}"
        );
        assert!(text.contains(reason), "{text}");
    }
}

/// `spear plugin check` on a hand-written Extism module; returns (exit code, error text).
fn check_module(exports: &[(&str, Output<'_>)]) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("m.wasm");
    std::fs::write(&file, extism_module(exports)).unwrap();
    let out = spear()
        .args(["--output", "json", "plugin", "check"])
        .arg(&file)
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    (
        out.status.code(),
        v["error"].as_str().unwrap_or_default().to_owned(),
    )
}

#[test]
fn check_refuses_what_the_host_refuses() {
    // A reclamation policy naming one instance twice: the host's slot refuses that answer.
    let info = info_json("twice", "reclamation-policy", "names an instance twice");
    let (code, error) = check_module(&[
        ("spear_info", Output::Text(&info)),
        ("spear_select", Output::Text("[1,1]")),
    ]);
    assert_eq!(code, Some(1), "{error}");
    assert!(error.contains("instance 1 named twice"), "{error}");

    // A description far over the contract's one line.
    let info = info_json("long", "scheduling-strategy", &"x".repeat(300));
    let (code, error) = check_module(&[("spear_info", Output::Text(&info))]);
    assert_eq!(code, Some(1), "{error}");
    assert!(
        error.contains("description of 300 bytes: at most 256 allowed"),
        "{error}"
    );
    let info = info_json("lines", "scheduling-strategy", "two\nlines");
    let (_, error) = check_module(&[("spear_info", Output::Text(&info))]);
    assert!(error.contains("description: must be one line"), "{error}");

    // A good hand-written strategy passes, so the refusals above are about what they test.
    let info = info_json("fine", "scheduling-strategy", "assigns everything to 1");
    let (code, error) = check_module(&[
        ("spear_info", Output::Text(&info)),
        (
            "spear_place",
            Output::Text(
                r#"[{"Assign":1},{"Assign":1},{"Assign":1},{"Assign":2},{"Assign":2},{"Assign":2}]"#,
            ),
        ),
    ]);
    assert_eq!(code, Some(0), "{error}");
}

#[test]
fn check_runs_the_configuration_through_the_plugin() {
    let out = spear()
        .args([
            "--output",
            "json",
            "plugin",
            "check",
            "--config",
            r#"{"alpha": 3}"#,
        ])
        .arg(guest("component", "adaptive.wasm"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ok"], false);
    assert_eq!(v["name"], "adaptive");
    let error = v["error"].as_str().unwrap();
    assert!(
        error.contains("configure refused: returned an error: alpha must be in (0, 1]"),
        "{error}"
    );
}

#[test]
fn sim_follows_a_config_edit_while_running() {
    let sb = Sandbox::new();
    sb.install("component", "least-connections.wasm", "lc.wasm");
    sb.install("component", "round-robin.wasm", "rr.wasm");
    sb.write_config(&host_config(
        true,
        "[scheduler]\nstrategy = \"least-connections\"\n",
    ));
    let mut child = spear()
        .args([
            "--output",
            "json",
            "plugin",
            "sim",
            "--targets",
            "8",
            "--rate",
            "800",
            "--duration",
            "6",
            "--config",
        ])
        .arg(sb.config())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let start = Instant::now();
    let mut edited = false;
    let mut strategies = Vec::new();
    let mut reloads = 0;
    for line in lines {
        let v: serde_json::Value = serde_json::from_str(&line.unwrap()).unwrap();
        if let Some(s) = v.get("strategy") {
            let name = s
                .as_str()
                .unwrap_or_default()
                .split(' ')
                .next()
                .unwrap()
                .to_owned();
            assert!(v["placed"].as_u64().unwrap() > 0);
            assert_eq!(v["fallback_total"], 0, "{v}");
            strategies.push(name);
            if !edited && start.elapsed() > Duration::from_millis(1500) {
                sb.write_config(&host_config(
                    true,
                    "[scheduler]\nstrategy = \"round-robin\"\n",
                ));
                edited = true;
            }
        } else if v.get("outcome").is_some() {
            reloads += 1;
        }
    }
    assert!(child.wait().unwrap().success());
    assert_eq!(
        strategies.first().map(String::as_str),
        Some("least-connections"),
        "{strategies:?}"
    );
    assert_eq!(
        strategies.last().map(String::as_str),
        Some("round-robin"),
        "{strategies:?}"
    );
    assert!(reloads >= 1);
}

#[test]
fn keygen_sign_and_check_show_who_signed_and_refuse_what_a_signing_host_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("release.key");
    let out = spear()
        .args(["plugin", "keygen", "--out"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let public = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert_eq!(public.len(), 44, "base64 of 32 bytes: {public}");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&key).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    // An existing key is never overwritten.
    let again = spear()
        .args(["plugin", "keygen", "--out"])
        .arg(&key)
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(2), "{again:?}");

    let plugin = dir.path().join("lc.wasm");
    std::fs::copy(guest("component", "least-connections.wasm"), &plugin).unwrap();
    let check = |extra: &[&str]| {
        let out = spear()
            .args(["--output", "json", "plugin", "check"])
            .arg(&plugin)
            .args(extra)
            .output()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        (out.status.code(), v)
    };
    let trusted = format!("release={public}");
    let strict = ["--require-signed", "--trusted-key", trusted.as_str()];
    let (code, v) = check(&strict);
    assert_eq!(code, Some(1), "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("refused: unsigned"),
        "{v}"
    );

    let out = spear()
        .args(["plugin", "sign", "--key"])
        .arg(&key)
        .arg(&plugin)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let (code, v) = check(&strict);
    assert_eq!(code, Some(0), "{v}");
    assert_eq!(v["signature"]["valid"], true, "{v}");
    assert_eq!(v["signature"]["trusted_as"], "release", "{v}");
    assert_eq!(v["signature"]["key"], public.as_str(), "{v}");
    // Without trusted keys the signature is shown, the file accepted (as by a host that does not
    // require signatures).
    let (code, v) = check(&[]);
    assert_eq!(
        (code, v["signature"]["trusted_as"].clone()),
        (Some(0), serde_json::Value::Null)
    );

    // Changed content: the signature no longer holds.
    std::fs::copy(guest("extism", "least-connections.wasm"), &plugin).unwrap();
    let (code, v) = check(&strict);
    assert_eq!(code, Some(1), "{v}");
    assert_eq!(v["signature"]["valid"], false, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("the signature is for content sha256"),
        "{v}"
    );
}
