//! Tasks, nodes, files and plugins; the SMS address and the errors.

use std::io::Read;
use std::process::Stdio;

use crate::common::{Cluster, closed_port, finish, spear};
use serde_json::Value;
use spear_tests::guest;

#[test]
fn tasks_register_list_show_run_and_delete() {
    let c = Cluster::start();
    let t = c.json(&[
        "task",
        "register",
        "greeter",
        "--type",
        "process",
        "--name",
        "/bin/sh",
        "--env",
        "WHO=world",
        "--priority",
        "high",
        "--label",
        "team=a",
        "--description",
        "says hello",
        "--",
        "-c",
        "echo hello $WHO",
    ]);
    let tid = t["task_id"].as_str().expect("task_id").to_owned();
    assert_eq!(t["name"], "greeter", "{t}");
    assert_eq!(t["priority"], "high", "{t}");
    assert_eq!(t["labels"]["team"], "a", "{t}");
    assert_eq!(t["executable"]["env"]["WHO"], "world", "{t}");
    assert_eq!(t["executable"]["args"][1], "echo hello $WHO", "{t}");

    let r = c.spear(&["task", "list"]).ok();
    assert!(
        r.stdout.contains(&tid) && r.stdout.contains("greeter"),
        "{r:?}"
    );
    let list = c.json(&["task", "list", "--priority", "high"]);
    assert_eq!(list["tasks"][0]["task_id"], tid.as_str(), "{list}");
    assert_eq!(
        c.json(&["task", "list", "--priority", "low"])["tasks"],
        Value::Array(vec![])
    );
    let r = c.spear(&["task", "show", &tid]).ok();
    assert!(r.stdout.contains("says hello"), "{r:?}");
    assert_eq!(c.json(&["task", "show", &tid])["task_id"], tid.as_str());

    let r = c.spear(&["run", &tid]).ok();
    assert_eq!(r.stdout, "hello world\n", "{r:?}");

    // The first delete unregisters (SPEAR's meaning): the task stays, takes no new runs.
    let r = c.spear(&["task", "delete", &tid]).ok();
    assert_eq!(
        r.stdout,
        format!(
            "unregistered task {tid} (it takes no new executions; delete it again to remove it)\n"
        ),
        "{r:?}"
    );
    assert_eq!(c.json(&["task", "show", &tid])["status"], "unregistered");
    let r = c.spear(&["run", &tid]);
    assert_eq!(r.code, Some(1), "{r:?}");
    assert!(r.stderr.contains("is unregistered"), "{r:?}");
    // The second removes it.
    let r = c.spear(&["task", "delete", &tid]).ok();
    assert_eq!(r.stdout, format!("removed task {tid}\n"), "{r:?}");
    let r = c.spear(&["task", "show", &tid]);
    assert_eq!(r.code, Some(1), "{r:?}");
    assert_eq!(
        r.stderr,
        format!("spear: error: no task `{tid}`; list them with `spear task list`\n")
    );

    // SMS's refusal names the field and the flag that sets it.
    let r = c.spear(&["task", "register", "bad", "--type", "process"]);
    assert_eq!(r.code, Some(1), "{r:?}");
    assert!(
        r.stderr.contains("SMS refused `executable.uri`: ") && r.stderr.contains("--uri"),
        "{r:?}"
    );
    // A missing --type is caught before asking SMS.
    let r = c.spear(&["task", "register", "bad", "--name", "/bin/true"]);
    assert_eq!(r.code, Some(2), "{r:?}");
    assert!(r.stderr.contains("--type"), "{r:?}");
}

#[test]
fn nodes_list_and_show_the_spearlet_and_spear_sms_is_the_fallback_address() {
    let c = Cluster::start();
    let r = c.spear(&["node", "list"]).ok();
    let row = r.stdout.lines().find(|l| l.starts_with(&c.node));
    assert!(
        row.is_some_and(|l| l.contains("active") && l.contains("alpha")),
        "{r:?}"
    );
    let nodes = c.json(&["node", "list"]);
    assert_eq!(nodes["nodes"][0]["uuid"], c.node.as_str(), "{nodes}");
    let n = c.json(&["node", "show", &c.node]);
    assert_eq!(n["uuid"], c.node.as_str(), "{n}");
    assert_eq!(n["metadata"]["name"], "alpha", "{n}");
    let r = c.spear(&["node", "show", &c.node]).ok();
    assert!(
        r.stdout.contains("executors:") && r.stdout.contains("process"),
        "{r:?}"
    );

    let no_file = "0".repeat(64);
    for (args, what, id, list) in [
        (
            vec!["node", "show", "nope"],
            "node",
            "nope",
            "spear node list",
        ),
        (vec!["status", "nope"], "execution", "nope", "spear status"),
        (vec!["cancel", "nope"], "execution", "nope", "spear status"),
        (vec!["logs", "nope"], "execution", "nope", "spear status"),
        (
            vec!["task", "delete", "nope"],
            "task",
            "nope",
            "spear task list",
        ),
        (
            vec!["file", "download", &no_file],
            "file",
            &no_file,
            "spear file list",
        ),
    ] {
        let r = c.spear(&args);
        assert_eq!(r.code, Some(1), "{args:?}: {r:?}");
        assert_eq!(
            r.stderr,
            format!("spear: error: no {what} `{id}`; list them with `{list}`\n"),
            "{args:?}"
        );
    }

    // SPEAR_SMS (host:port, no scheme) is used when --sms is absent…
    let r = finish(
        spear()
            .env("SPEAR_SMS", c.http.to_string())
            .args(["node", "list"]),
    );
    assert_eq!(r.code, Some(0), "{r:?}");
    assert!(r.stdout.contains(&c.node), "{r:?}");
    // …and --sms wins over it.
    let closed = closed_port();
    let r = finish(c.cmd(&["node", "list"]).env("SPEAR_SMS", &closed));
    assert!(r.stdout.contains(&c.node), "{r:?}");
}

#[test]
fn an_unreachable_sms_is_named_with_the_fix() {
    let closed = closed_port();
    let want = format!(
        "spear: error: cannot reach SMS at http://{closed}: connection refused; is it running? \
         start one with ./run-dev.sh, or point --sms / SPEAR_SMS at it\n"
    );
    for cmd in [
        spear().args(["--sms", &format!("http://{closed}"), "status"]),
        spear().args(["status"]).env("SPEAR_SMS", &closed),
    ] {
        let r = finish(cmd);
        assert_eq!(r.code, Some(2), "{r:?}");
        assert_eq!(r.stderr, want);
        assert_eq!(r.stdout, "");
    }
}

#[test]
fn files_round_trip_byte_for_byte_and_run_as_wasm() {
    let c = Cluster::start();
    let dir = tempfile::tempdir().unwrap();
    let bytes: Vec<u8> = (0..70_000u32).map(|i| (i * 7 % 256) as u8).collect();
    let src = dir.path().join("blob.bin");
    std::fs::write(&src, &bytes).unwrap();
    let meta = c.json(&["file", "upload", src.to_str().unwrap(), "--name", "my blob"]);
    let fid = meta["file_id"].as_str().expect("file_id").to_owned();
    assert_eq!(meta["uri"], format!("sms+file://{fid}"), "{meta}");
    assert_eq!(meta["size"], bytes.len(), "{meta}");
    assert_eq!(meta["name"], "my blob", "{meta}");

    let dst = dir.path().join("back.bin");
    let r = c
        .spear(&["file", "download", &fid, "-o", dst.to_str().unwrap()])
        .ok();
    assert!(r.stdout.contains("wrote 70000 bytes"), "{r:?}");
    assert!(
        std::fs::read(&dst).unwrap() == bytes,
        "downloaded bytes differ"
    );
    let mut child = c
        .cmd(&["file", "download", &fid])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut piped = Vec::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_end(&mut piped)
        .unwrap();
    assert!(child.wait().unwrap().success());
    assert!(piped == bytes, "bytes on stdout differ");
    let r = c.spear(&["file", "list"]).ok();
    assert!(
        r.stdout.contains(&fid) && r.stdout.contains("my blob"),
        "{r:?}"
    );

    // --file uploads, then runs the file as wasm from its sms+file:// uri.
    let wasm = guest("component", "wasi-echo.wasm");
    let r = c
        .spear(&[
            "run",
            "--file",
            wasm.to_str().unwrap(),
            "--env",
            "GREETING=hi",
            "--stdin",
            "hello",
            "--max-attempts",
            "1",
            "--",
            "echo",
        ])
        .ok();
    assert!(
        r.stdout.contains("stdin=hello") && r.stdout.contains("GREETING=hi"),
        "{r:?}"
    );
    assert_eq!(r.stderr, "to stderr\n", "{r:?}");
}

#[test]
fn plugins_list_reload_and_history() {
    let c = Cluster::start();
    let r = c.spear(&["plugin", "list"]).ok();
    let row = r
        .stdout
        .lines()
        .find(|l| l.starts_with("least-connections"));
    assert!(row.is_some_and(|l| l.contains("active")), "{r:?}");
    assert!(r.stdout.contains("scheduler: least-connections"), "{r:?}");
    let list = c.json(&["plugin", "list"]);
    let lc = list["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "least-connections")
        .cloned();
    assert_eq!(
        lc.map(|p| p["state"].clone()),
        Some("active".into()),
        "{list}"
    );

    let api_reloads = |h: &Value| {
        h["reloads"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["trigger"] == "api")
            .count()
    };
    assert_eq!(api_reloads(&c.json(&["plugin", "history"])), 0);
    let report = c.json(&["plugin", "reload"]);
    assert_eq!(report["trigger"], "api", "{report}");
    assert_eq!(report["outcome"], "unchanged", "{report}");
    let r = c.spear(&["plugin", "reload"]).ok();
    assert!(r.stdout.starts_with("reload: unchanged\n"), "{r:?}");

    let h = c.json(&["plugin", "history"]);
    // A reload reports the directory rescan and the config re-read separately.
    assert!(api_reloads(&h) >= 2, "{h}");
    assert!(!h["events"].as_array().unwrap().is_empty(), "{h}");
    let r = c.spear(&["plugin", "history"]).ok();
    assert!(
        r.stdout.contains("reloads:") && r.stdout.contains("api"),
        "{r:?}"
    );
    assert!(r.stdout.contains("activated"), "{r:?}");
}
