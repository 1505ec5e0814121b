//! The `container` executor, loaded as the Spearlet will load it (a native plugin through the
//! runtime), against a real Podman serving the Docker Engine API (set up by
//! `tests/podman/setup.sh`, see `spear_tests::podman`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use spear_plugin_api::Executor;
use spear_plugin_api::executor::{ExecSpec, ExecState, ExitStatus};
use spear_plugin_runtime::engine::WasmEngine;
use spear_plugin_runtime::{LimitValues, Limits, load_file};
use spear_tests::guest;
use spear_tests::podman::{
    BUSYBOX, TEST_TASK, engine_json, inspect_container, podman, remove_container, remove_image,
};

/// The executor, configured for the test Podman with `extra` settings (JSON members).
fn executor_with(extra: &str) -> Box<dyn Executor> {
    let socket = &podman().socket;
    let engine = WasmEngine::new().unwrap();
    let limits = Arc::new(Limits::new(LimitValues::default()));
    let plugin = load_file(&guest("native", "container.so"), &engine, &limits).unwrap();
    assert_eq!(plugin.info.kind, spear_plugin_api::PluginKind::Executor);
    assert_eq!(plugin.info.name, "container");
    let mut e = plugin.executor().unwrap();
    e.configure(&format!(
        r#"{{"socket": "{socket}", "stop_grace_ms": 300{extra}}}"#
    ))
    .unwrap();
    e
}

fn executor() -> Box<dyn Executor> {
    executor_with("")
}

/// An execution id unique to this test process (leftovers of an aborted run never collide).
fn id(tag: &str) -> String {
    format!("{tag}-{}", std::process::id())
}

/// A busybox `sh -c script` spec; the container left by an earlier, aborted run is removed.
fn sh(tag: &str, script: &str) -> ExecSpec {
    let execution_id = id(tag);
    remove_container(&format!("spear-{execution_id}"));
    ExecSpec {
        execution_id,
        task: TEST_TASK.into(),
        entry: BUSYBOX.into(),
        args: vec!["sh".into(), "-c".into(), script.into()],
        ..ExecSpec::default()
    }
}

#[test]
fn runs_busybox_with_args_env_stdin_and_working_dir_and_removes_it_on_destroy() {
    let x = executor();
    let caps = x.capabilities();
    assert_eq!(caps.executable_type, "container");
    assert!(caps.recover && caps.memory_limit && caps.cpu_limit && caps.network_isolation);
    let mut s = sh(
        "hello",
        "read line; echo \"$GREETING $0 $line\"; pwd; cat; echo oops >&2; exit 3",
    );
    s.args.push("world".into());
    s.env = vec![("GREETING".into(), "hello".into())];
    s.stdin = b"from stdin\nand the rest\n".to_vec();
    s.working_dir = Some("/tmp".into());
    let h = x.start(&s).unwrap();
    assert_eq!(h, format!("spear-{}", s.execution_id));
    let r = x.wait(&h, 60_000).unwrap().expect("finished");
    assert_eq!(r.status, ExitStatus::Exited(3), "{r:?}");
    assert_eq!(
        String::from_utf8_lossy(&r.stdout),
        "hello world from stdin\n/tmp\nand the rest\n"
    );
    assert_eq!(r.stderr, b"oops\n");
    assert!(!r.stdout_truncated && !r.stderr_truncated);
    assert!(matches!(x.inspect(&h).unwrap(), ExecState::Finished(_)));
    let labels = &inspect_container(&h).expect("still there before destroy")["Config"]["Labels"];
    assert_eq!(labels["spear.managed"], "true");
    assert_eq!(labels["spear.execution"], s.execution_id.as_str());
    x.destroy(&h).unwrap();
    assert!(matches!(x.inspect(&h).unwrap(), ExecState::Unknown));
    assert!(
        inspect_container(&h).is_none(),
        "destroy removes the container"
    );
}

#[test]
fn a_looping_container_is_stopped_at_its_timeout() {
    let x = executor();
    let mut s = sh("loop", "while :; do :; done");
    s.timeout_ms = 500;
    let start = Instant::now();
    let h = x.start(&s).unwrap();
    let r = x.wait(&h, 60_000).unwrap().expect("finished");
    assert_eq!(r.status, ExitStatus::TimedOut);
    // PID 1 ignores SIGTERM: the KILL after the 300 ms grace ends it.
    assert!(
        start.elapsed() < Duration::from_secs(15),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(
        inspect_container(&h).unwrap()["State"]["Running"],
        false,
        "stopped"
    );
    x.destroy(&h).unwrap();
    assert!(inspect_container(&h).is_none());
}

#[test]
fn output_past_the_cap_is_dropped_and_flagged_and_the_agent_is_unaffected() {
    let x = executor();
    let mut s = sh("flood", "head -c 100000000 /dev/zero; echo done >&2");
    s.output_cap_bytes = 1024 * 1024;
    let h = x.start(&s).unwrap();
    let r = x.wait(&h, 120_000).unwrap().expect("finished");
    assert_eq!(r.status, ExitStatus::Exited(0));
    assert_eq!(r.stdout.len(), 1024 * 1024);
    assert!(r.stdout.iter().all(|b| *b == 0));
    assert!(r.stdout_truncated);
    assert!(!r.stderr_truncated);
    assert_eq!(r.stderr, b"done\n");
    x.destroy(&h).unwrap();
    // The executor carries on.
    let h = x.start(&sh("after-flood", "echo still here")).unwrap();
    let r = x.wait(&h, 60_000).unwrap().expect("finished");
    assert_eq!(r.stdout, b"still here\n");
    x.destroy(&h).unwrap();
}

#[test]
fn limits_are_applied_and_there_is_no_network_by_default() {
    let x = executor();
    let mut s = sh(
        "limits",
        "cat /proc/net/dev; exec dd if=/dev/zero of=/dev/null bs=64M count=1",
    );
    s.memory_limit_mb = 32;
    s.cpu_millis = 500;
    let h = x.start(&s).unwrap();
    let r = x.wait(&h, 60_000).unwrap().expect("finished");
    let host = &inspect_container(&h).unwrap()["HostConfig"];
    assert_eq!(host["Memory"], 32 * 1024 * 1024);
    assert_eq!(host["NanoCpus"], 500_000_000);
    assert_eq!(host["NetworkMode"], "none");
    // Only the loopback interface.
    let out = String::from_utf8_lossy(&r.stdout);
    let interfaces: Vec<&str> = out
        .lines()
        .skip(2)
        .filter_map(|l| l.split(':').next())
        .map(str::trim)
        .collect();
    assert_eq!(interfaces, ["lo"], "{out}");
    // A 64 MiB buffer does not fit in 32 MiB: the kernel kills dd.
    assert!(
        matches!(&r.status, ExitStatus::Signaled(9))
            || matches!(&r.status, ExitStatus::Failed(m) if m.starts_with("out of memory")),
        "{r:?}"
    );
    x.destroy(&h).unwrap();
}

#[test]
fn an_image_is_loaded_from_a_tarball_artifact() {
    let tarball = &podman().tarball;
    remove_image("spear-busybox-tar:latest");
    let x = executor();
    let s = ExecSpec {
        execution_id: id("tarball"),
        task: TEST_TASK.into(),
        entry: String::new(),
        artifact: Some(tarball.display().to_string()),
        args: vec!["echo".into(), "from the tarball".into()],
        ..ExecSpec::default()
    };
    remove_container(&format!("spear-{}", s.execution_id));
    let h = x.start(&s).unwrap();
    let r = x.wait(&h, 60_000).unwrap().expect("finished");
    assert_eq!(r.status, ExitStatus::Exited(0), "{r:?}");
    assert_eq!(r.stdout, b"from the tarball\n");
    // It runs by the image's id, not by the tag inside the tarball; the image also carries the
    // executor's own tag.
    let image = inspect_container(&h).unwrap()["Image"].clone();
    let image_id = image
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:")
        .to_owned();
    let (status, tags) = engine_json("GET", &format!("/images/{image_id}/json"), "");
    assert_eq!(status, 200, "{tags}");
    assert!(
        tags["RepoTags"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t.as_str().unwrap().starts_with("localhost/spear-artifact:")),
        "{tags}"
    );
    x.destroy(&h).unwrap();

    // Another image takes the tarball's tag (as another task's tarball naming it would): this
    // artifact still runs its own image, from the cache and after a fresh load alike.
    let marker = sh("hijacker", "touch /hijacked");
    let h = x.start(&marker).unwrap();
    x.wait(&h, 60_000).unwrap().expect("finished");
    let (status, v) = engine_json(
        "POST",
        &format!("/commit?container={h}&repo=spear-busybox-tar&tag=latest"),
        "{}",
    );
    assert!((200..300).contains(&status), "commit: HTTP {status}: {v}");
    x.destroy(&h).unwrap();
    for x in [x, executor()] {
        let s = ExecSpec {
            execution_id: id("tarball-again"),
            args: vec!["sh".into(), "-c".into(), "test ! -e /hijacked".into()],
            ..s.clone()
        };
        remove_container(&format!("spear-{}", s.execution_id));
        let h = x.start(&s).unwrap();
        let r = x.wait(&h, 60_000).unwrap().expect("finished");
        assert_eq!(
            r.status,
            ExitStatus::Exited(0),
            "the hijacking image ran: {r:?}"
        );
        x.destroy(&h).unwrap();
    }
    remove_image("spear-busybox-tar:latest");
}

#[test]
fn containers_get_no_capabilities_no_new_privileges_and_bounded_processes() {
    let x = executor();
    let s = sh(
        "hardened",
        "grep -E '^(CapEff|NoNewPrivs)' /proc/self/status; touch /rootfs-writable && echo writable",
    );
    let h = x.start(&s).unwrap();
    let r = x.wait(&h, 60_000).unwrap().expect("finished");
    let out = String::from_utf8_lossy(&r.stdout);
    assert!(out.contains("CapEff:\t0000000000000000"), "{out}");
    assert!(out.contains("NoNewPrivs:\t1"), "{out}");
    assert!(
        out.contains("writable"),
        "the root is writable by default: {out}"
    );
    let host = &inspect_container(&h).unwrap()["HostConfig"];
    assert_eq!(host["PidsLimit"], 512);
    assert_eq!(
        host["Memory"],
        512 * 1024 * 1024,
        "the default memory limit"
    );
    x.destroy(&h).unwrap();

    // Loosened and tightened by configuration: a capability back, a read-only root, 20 processes.
    let x = executor_with(
        r#", "cap_add": ["NET_BIND_SERVICE"], "read_only_rootfs": true, "pids_limit": 20"#,
    );
    let s = sh(
        "hardened-config",
        "grep CapEff /proc/self/status; touch /x 2>&1; \
         for i in $(seq 40); do sleep 3 & done 2>&1; wait",
    );
    let h = x.start(&s).unwrap();
    let r = x.wait(&h, 60_000).unwrap().expect("finished");
    let out = String::from_utf8_lossy(&r.stdout).to_lowercase()
        + &String::from_utf8_lossy(&r.stderr).to_lowercase();
    assert!(
        out.contains("capeff:\t0000000000000400"),
        "NET_BIND_SERVICE only: {out}"
    );
    assert!(out.contains("read-only file system"), "{out}");
    assert!(
        out.contains("fork"),
        "forks past the pids limit fail: {out}"
    );
    x.destroy(&h).unwrap();
    for bad in [r#", "pids_limit": -1"#, r#", "cap_add": ["net admin"]"#] {
        let engine = WasmEngine::new().unwrap();
        let limits = Arc::new(Limits::new(LimitValues::default()));
        let plugin = load_file(&guest("native", "container.so"), &engine, &limits).unwrap();
        let mut e = plugin.executor().unwrap();
        let err = e
            .configure(&format!(r#"{{"socket": "{}"{bad}}}"#, podman().socket))
            .unwrap_err()
            .to_string();
        assert!(err.contains("invalid configuration"), "{bad}: {err}");
    }
}

#[test]
fn a_missing_image_an_unreachable_engine_and_bad_settings_are_clear_errors() {
    let x = executor();
    let mut s = sh("missing", "true");
    s.entry = "spear-no-such-image:latest".into();
    let err = x.start(&s).unwrap_err().to_string();
    assert!(
        err.contains("image `spear-no-such-image:latest` is not in the container engine")
            && err.contains("load"),
        "{err}"
    );
    assert!(matches!(
        x.inspect(&s.execution_id).unwrap(),
        ExecState::Unknown
    ));

    let mut s = sh("not-a-tarball", "true");
    s.artifact = Some("/etc/hostname".into());
    let err = x.start(&s).unwrap_err().to_string();
    assert!(err.contains("is not an image tarball"), "{err}");

    let engine = WasmEngine::new().unwrap();
    let limits = Arc::new(Limits::new(LimitValues::default()));
    let plugin = load_file(&guest("native", "container.so"), &engine, &limits).unwrap();
    let mut e = plugin.executor().unwrap();
    e.configure(r#"{"socket": "unix:///nonexistent/podman.sock"}"#)
        .unwrap();
    let err = e.start(&sh("unreachable", "true")).unwrap_err().to_string();
    assert!(
        err.contains("cannot reach the container engine at unix:///nonexistent/podman.sock")
            && err.contains("podman system service"),
        "{err}"
    );
    let err = e.configure(r#"{"sockets": "x"}"#).unwrap_err().to_string();
    assert!(err.contains("unknown field `sockets`"), "{err}");
    let err = e
        .configure(r#"{"socket": "tcp://localhost:2375"}"#)
        .unwrap_err()
        .to_string();
    assert!(err.contains("only unix sockets"), "{err}");
}

#[test]
fn signals_stop_and_stats() {
    let x = executor();
    let s = sh("sleeper", "trap 'exit 143' TERM; sleep 30 & wait");
    let h = x.start(&s).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert!(matches!(x.inspect(&h).unwrap(), ExecState::Running));
    let stats = x.stats(&h).unwrap();
    assert!(stats.memory_bytes > 0, "{stats:?}");
    x.stop(&h, 5_000).unwrap();
    let r = x.wait(&h, 10_000).unwrap().expect("stopped");
    assert_eq!(r.status, ExitStatus::Signaled(15), "{r:?}");
    x.destroy(&h).unwrap();
    assert!(
        x.wait("nope", 10)
            .unwrap_err()
            .to_string()
            .contains("no execution nope")
    );
}

#[test]
fn recover_reattaches_through_a_new_executor_and_collects_finished_ones() {
    // Running containers outlive their executor (the agent "restarts")...
    let first = executor();
    let running = sh(
        "recover-running",
        "trap 'echo after >&2; exit 7' TERM; echo before; sleep 60 & wait",
    );
    let h = first.start(&running).unwrap();
    let mut limited = sh("recover-deadline", "while :; do sleep 1; done");
    limited.timeout_ms = 3_000;
    let h3 = first.start(&limited).unwrap();
    let ended = sh("recover-ended", "echo finished early");
    let h2 = first.start(&ended).unwrap();
    first.wait(&h2, 60_000).unwrap().expect("finished");
    std::thread::sleep(Duration::from_millis(300));
    drop(first);

    // ...and a new one takes them over: output, signals and the time limit carry on.
    let second = executor();
    assert!(matches!(second.inspect(&h).unwrap(), ExecState::Unknown));
    assert!(second.recover(&h).unwrap());
    assert!(second.recover(&h3).unwrap());
    assert!(matches!(second.inspect(&h).unwrap(), ExecState::Running));
    second.signal(&h, 15).unwrap();
    let r = second.wait(&h, 60_000).unwrap().expect("finished");
    assert_eq!(r.status, ExitStatus::Exited(7), "{r:?}");
    assert_eq!(r.stdout, b"before\n");
    assert_eq!(r.stderr, b"after\n");
    second.destroy(&h).unwrap();
    assert!(inspect_container(&h).is_none());
    let r = second.wait(&h3, 60_000).unwrap().expect("finished");
    assert_eq!(r.status, ExitStatus::TimedOut, "{r:?}");
    second.destroy(&h3).unwrap();

    // A container that ended meanwhile: its result is collected at once.
    assert!(second.recover(&h2).unwrap());
    match second.inspect(&h2).unwrap() {
        ExecState::Finished(r) => {
            assert_eq!(r.status, ExitStatus::Exited(0));
            assert_eq!(r.stdout, b"finished early\n");
        }
        other => panic!("{other:?}"),
    }
    second.destroy(&h2).unwrap();

    // Gone is gone.
    assert!(!second.recover(&h2).unwrap());
    assert!(!second.recover("spear-never-was").unwrap());
}

#[test]
fn leftovers_are_removed_by_destroy_without_recovering() {
    let first = executor();
    let s = sh("leftover", "sleep 30");
    let h = first.start(&s).unwrap();
    drop(first);
    let second = executor();
    second.destroy(&h).unwrap();
    assert!(inspect_container(&h).is_none());
    // A container that is not ours is left alone.
    second.destroy("spear-not-a-container").unwrap();
}
