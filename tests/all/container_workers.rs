//! The `container` executor's live instances: containers running a worker
//! (`tests/src/bin/spear-worker-fixture.rs`, in an image made here from this machine's binary and
//! libraries) that serve invocations over their attached standard input and output (the worker
//! protocol, docs/workers.md), against the tests' real Podman.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use spear_plugin_api::Executor;
use spear_plugin_api::executor::{InstanceSpec, InvokeFailure};
use spear_plugin_runtime::engine::WasmEngine;
use spear_plugin_runtime::{LimitValues, Limits, load_file};
use spear_tests::guest;
use spear_tests::podman::{
    BUSYBOX, TEST_TASK, inspect_container, podman, podman_command, program_image,
};

fn executor() -> Box<dyn Executor> {
    let socket = &podman().socket;
    let engine = WasmEngine::new().unwrap();
    let limits = Arc::new(Limits::new(LimitValues::default()));
    let plugin = load_file(&guest("native", "container.so"), &engine, &limits).unwrap();
    let mut e = plugin.executor().unwrap();
    e.configure(&format!(r#"{{"socket": "{socket}"}}"#))
        .unwrap();
    e
}

fn worker_image() -> String {
    program_image(
        Path::new(env!("CARGO_BIN_EXE_spear-worker-fixture")),
        "spear-worker-fixture",
    )
}

fn spec(tag: &str) -> InstanceSpec {
    InstanceSpec {
        instance_id: format!("{tag}-{}", std::process::id()),
        task: TEST_TASK.into(),
        entry: worker_image(),
        args: vec!["/worker".into()],
        max_payload_bytes: 1 << 20,
        start_timeout_ms: 60_000,
        ..InstanceSpec::default()
    }
}

/// Wait until the engine no longer knows container `name`.
fn gone(name: &str) -> bool {
    let until = Instant::now() + Duration::from_secs(30);
    while Instant::now() < until {
        if inspect_container(name).is_none() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

#[test]
fn one_container_worker_serves_a_thousand_invocations_with_its_state() {
    let x = executor();
    assert!(x.capabilities().instances);
    let h = x.start_instance(&spec("count")).unwrap();
    let inspected = inspect_container(&h).expect("the worker's container");
    assert_eq!(inspected["State"]["Running"], true, "{inspected}");
    let labels = &inspected["Config"]["Labels"];
    assert_eq!(labels["spear.managed"], "true");
    assert!(
        labels["spear.worker_of"]
            .as_str()
            .unwrap()
            .ends_with(&format!(":{}", std::process::id()))
    );
    assert_eq!(inspected["HostConfig"]["NetworkMode"], "none");
    let mut last = Vec::new();
    for _ in 0..1000 {
        last = x.invoke(&h, "count", b"", 10_000).unwrap();
    }
    assert_eq!(last, b"1000", "one container kept its counter");
    // Payloads both ways, in pieces the engine forwards as it likes.
    let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    assert_eq!(x.invoke(&h, "echo", &big, 10_000).unwrap(), big);
    // A function's own error leaves the worker ready.
    assert_eq!(
        x.invoke(&h, "fail", b"abc", 10_000),
        Err(InvokeFailure::Function("failed on 3 bytes".into()))
    );
    // Refused before anything is sent: too large, a bad name.
    assert!(matches!(
        x.invoke(&h, "echo", &vec![0; (1 << 20) + 1], 10_000),
        Err(InvokeFailure::Refused(_))
    ));
    assert!(matches!(
        x.invoke(&h, "", b"", 10_000),
        Err(InvokeFailure::Refused(_))
    ));
    assert_eq!(x.invoke(&h, "count", b"", 10_000).unwrap(), b"1001");
    x.stop_instance(&h).unwrap();
    assert!(gone(&h), "a stopped worker's container is removed");
    assert!(matches!(
        x.invoke(&h, "count", b"", 10_000),
        Err(InvokeFailure::Lost(_))
    ));
}

/// A paused worker container is frozen by the engine and keeps its state; an invocation thaws
/// it first; a paused container is removed when stopped.
#[test]
fn a_container_worker_pauses_and_resumes_with_its_state() {
    let x = executor();
    assert!(x.capabilities().pause);
    let h = x.start_instance(&spec("pause")).unwrap();
    let paused =
        |h: &str| inspect_container(h).expect("the worker's container")["State"]["Paused"].clone();
    assert_eq!(x.invoke(&h, "count", b"", 10_000).unwrap(), b"1");
    x.pause_instance(&h, true).unwrap();
    x.pause_instance(&h, true).unwrap();
    assert_eq!(paused(&h), true, "frozen");
    assert_eq!(x.invoke(&h, "count", b"", 10_000).unwrap(), b"2");
    assert_eq!(paused(&h), false, "thawed by the invocation");
    x.pause_instance(&h, true).unwrap();
    x.pause_instance(&h, false).unwrap();
    assert_eq!(paused(&h), false, "resumed");
    assert_eq!(x.invoke(&h, "count", b"", 10_000).unwrap(), b"3");
    x.pause_instance(&h, true).unwrap();
    x.stop_instance(&h).unwrap();
    assert!(
        gone(&h),
        "a paused worker's container is removed when stopped"
    );
}

/// A container worker asked for pieces of output sends them before its answer (the file it waits
/// for is `/`, there at once); a piece unasked breaks the protocol.
#[test]
fn a_container_worker_streams_pieces_of_output() {
    let x = executor();
    let h = x.start_instance(&spec("stream")).unwrap();
    let mut pieces: Vec<Vec<u8>> = Vec::new();
    let rest = x
        .invoke_stream(&h, "gate", b"/", 10_000, &mut |p| {
            pieces.push(p.to_vec());
            true
        })
        .unwrap();
    assert_eq!(rest, b"end");
    assert_eq!(pieces, [b"first".to_vec(), b"second".to_vec()]);
    assert_eq!(
        x.invoke(&h, "gate", b"/", 10_000).unwrap(),
        b"firstsecondend"
    );
    let e = x.invoke(&h, "unasked", b"", 10_000).unwrap_err();
    assert!(e.to_string().contains("asked for none"), "{e}");
    assert!(gone(&h), "the lost worker's container is removed");
}

#[test]
fn a_container_worker_that_dies_breaks_the_protocol_or_hangs_is_lost_and_removed() {
    let x = executor();
    for (function, timeout_ms, what) in [
        ("exit", 10_000, "the worker died"),
        ("garbage", 10_000, "broke the protocol"),
        ("wrong-id", 10_000, "answered request"),
        ("hang", 500, "deadline"),
    ] {
        let h = x.start_instance(&spec(function)).unwrap();
        assert_eq!(x.invoke(&h, "count", b"", 10_000).unwrap(), b"1");
        let started = Instant::now();
        let e = x.invoke(&h, function, b"", timeout_ms).unwrap_err();
        assert!(e.instance_lost(), "{function}: {e:?}");
        assert!(e.to_string().contains(what), "{function}: {e}");
        if function == "hang" {
            assert!(matches!(e, InvokeFailure::Deadline(_)), "{e:?}");
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "{:?}",
                started.elapsed()
            );
        }
        assert!(
            gone(&h),
            "{function}: the lost worker's container is removed"
        );
        assert!(matches!(
            x.invoke(&h, "count", b"", 10_000),
            Err(InvokeFailure::Lost(_))
        ));
    }
}

#[test]
fn a_container_that_is_no_worker_is_refused_at_start_and_removed() {
    let x = executor();
    let cases = [
        (
            InstanceSpec {
                entry: BUSYBOX.into(),
                args: vec!["sh".into(), "-c".into(), "echo hello".into()],
                ..spec("no-worker")
            },
            "did not start",
        ),
        (
            InstanceSpec {
                env: vec![("SPEAR_WORKER_HELLO".into(), "old".into())],
                ..spec("old-hello")
            },
            "protocol 0",
        ),
        (
            InstanceSpec {
                entry: BUSYBOX.into(),
                args: vec!["sleep".into(), "600".into()],
                start_timeout_ms: 1_000,
                ..spec("silent")
            },
            "no hello within",
        ),
        (
            InstanceSpec {
                entry: "localhost/spear-no-such-image:test".into(),
                ..spec("no-image")
            },
            "is not in the container engine",
        ),
    ];
    for (s, what) in cases {
        let e = x.start_instance(&s).unwrap_err().to_string();
        assert!(e.contains(what), "{}: {e}", s.instance_id);
    }
    // None of them is left behind.
    let (status, list) = spear_tests::podman::engine(
        "GET",
        "/containers/json?all=true&filters=%7B%22label%22%3A%5B%22spear.worker_of%22%5D%7D",
    );
    assert_eq!(status, 200);
    let ours = format!(":{}", std::process::id());
    let left: Vec<_> = list
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| {
            c["Labels"]["spear.worker_of"]
                .as_str()
                .is_some_and(|o| o.ends_with(&ours))
                && ["no-worker", "old-hello", "silent", "no-image"]
                    .iter()
                    .any(|tag| c["Names"].to_string().contains(tag))
        })
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn workers_of_a_host_process_that_is_gone_are_swept_and_the_executors_go_with_it() {
    // A container labelled as the worker of a process of this machine that no longer exists.
    let dead = (2..4_000_000u32)
        .rev()
        .find(|pid| !Path::new(&format!("/proc/{pid}")).exists())
        .unwrap();
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let orphan = format!("spear-orphan-worker-{}", std::process::id());
    let out = podman_command()
        .args(["run", "-d", "--name", &orphan, "--label"])
        .arg(format!("spear.worker_of={}:{dead}", host.trim()))
        .args([BUSYBOX, "sleep", "600"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let x = executor();
    let h = x.start_instance(&spec("sweeper")).unwrap();
    assert!(gone(&orphan), "the orphan is removed at the first start");
    // Dropping the executor removes its workers.
    drop(x);
    assert!(gone(&h), "an executor's workers go with it");
}
