//! Long-lived instances through the executor ABI (`start_instance`, `invoke`, `stop_instance`),
//! with the `wasm` and `process` executors loaded as the Spearlet loads them: native plugin files
//! through the runtime, every call crossing the abi_stable boundary.

use std::sync::Arc;

use spear_plugin_api::Executor;
use spear_plugin_api::executor::{InstanceSpec, InvokeFailure};
use spear_plugin_runtime::engine::WasmEngine;
use spear_plugin_runtime::{LimitValues, Limits, load_file};
use spear_tests::guest;

fn executor(file: &str, config: &str) -> Box<dyn Executor> {
    let engine = WasmEngine::new().unwrap();
    let limits = Arc::new(Limits::new(LimitValues::default()));
    let plugin = load_file(&guest("native", file), &engine, &limits).unwrap();
    let mut e = plugin.executor().unwrap();
    e.configure(config).unwrap();
    assert!(e.capabilities().instances, "{file} keeps instances");
    e
}

fn counter() -> InstanceSpec {
    InstanceSpec {
        instance_id: "counter#1".into(),
        task: "counter".into(),
        artifact: Some(
            guest("component", "function-counter.wasm")
                .display()
                .to_string(),
        ),
        ..InstanceSpec::default()
    }
}

fn worker() -> InstanceSpec {
    InstanceSpec {
        instance_id: "worker#1".into(),
        task: "worker".into(),
        entry: env!("CARGO_BIN_EXE_spear-worker-fixture").into(),
        ..InstanceSpec::default()
    }
}

/// Both executors: a thousand invocations on one instance keep its state; a function error keeps
/// it; a second instance has its own state; a stopped instance answers no more.
#[test]
fn instances_keep_state_across_a_thousand_invocations_in_both_executors() {
    for (file, spec) in [("wasm.so", counter()), ("process.so", worker())] {
        let x = executor(file, "{}");
        let a = x.start_instance(&spec).unwrap();
        let mut last = Vec::new();
        for _ in 0..1000 {
            last = x.invoke(&a, "count", b"", 5_000).unwrap();
        }
        assert_eq!(last, b"1000", "{file}: the counter lives in the instance");
        assert_eq!(x.invoke(&a, "echo", b"hi", 5_000).unwrap(), b"hi");
        let err = x.invoke(&a, "fail", b"abc", 5_000).unwrap_err();
        assert!(
            matches!(&err, InvokeFailure::Function(m) if m.contains("3 bytes")),
            "{file}: {err:?}"
        );
        assert!(!err.instance_lost());
        assert_eq!(x.invoke(&a, "count", b"", 5_000).unwrap(), b"1001");
        let b = x.start_instance(&spec).unwrap();
        assert_ne!(a, b);
        assert_eq!(x.invoke(&b, "count", b"", 5_000).unwrap(), b"1");
        x.stop_instance(&a).unwrap();
        let gone = x.invoke(&a, "count", b"", 5_000).unwrap_err();
        assert!(matches!(gone, InvokeFailure::Lost(_)), "{file}: {gone:?}");
        assert!(x.stop_instance(&a).is_err(), "{file}: stopped twice");
        assert_eq!(x.invoke(&b, "count", b"", 5_000).unwrap(), b"2");
        x.stop_instance(&b).unwrap();
    }
}

/// A trap (wasm) or a death (worker) loses that instance only; a deadline loses it too, and
/// says so.
#[test]
fn a_trap_a_death_or_a_deadline_loses_only_that_instance() {
    for (file, spec, kill) in [
        ("wasm.so", counter(), "trap"),
        ("process.so", worker(), "exit"),
    ] {
        let x = executor(file, "{}");
        let (a, b) = (
            x.start_instance(&spec).unwrap(),
            x.start_instance(&spec).unwrap(),
        );
        x.invoke(&b, "count", b"", 5_000).unwrap();
        let err = x.invoke(&a, kill, b"", 5_000).unwrap_err();
        assert!(matches!(err, InvokeFailure::Lost(_)), "{file}: {err:?}");
        let gone = x.invoke(&a, "count", b"", 5_000).unwrap_err();
        assert!(matches!(gone, InvokeFailure::Lost(_)), "{file}: {gone:?}");
        assert_eq!(x.invoke(&b, "count", b"", 5_000).unwrap(), b"2");
        let hang = if file == "wasm.so" { "spin" } else { "hang" };
        let err = x.invoke(&b, hang, b"", 200).unwrap_err();
        assert!(
            matches!(&err, InvokeFailure::Deadline(m) if m.contains("deadline")),
            "{file}: {err:?}"
        );
        assert!(err.instance_lost());
    }
}

/// The state letter of process `pid` (`/proc/PID/stat`): `T` when stopped; `None` once reaped.
fn proc_state(pid: &str) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the command's closing parenthesis (a command may hold spaces).
    stat.rsplit_once(") ")
        .and_then(|(_, rest)| rest.chars().next())
}

/// Whether process `pid` is stopped (`T`) within a second: a signal is delivered after
/// `kill(2)` returns.
fn stops(pid: &str) -> bool {
    let until = std::time::Instant::now() + std::time::Duration::from_secs(1);
    while std::time::Instant::now() < until {
        if proc_state(pid) == Some('T') {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    false
}

/// A worker process paused is stopped (`T`) and keeps its state; an invocation resumes it, as
/// an explicit resume does; pausing twice or resuming a running one does nothing; a paused
/// worker stops and is reaped. The wasm executor says it cannot pause, and refuses to.
#[test]
fn a_worker_process_pauses_and_resumes_with_its_state() {
    let x = executor("process.so", "{}");
    assert!(x.capabilities().pause);
    let h = x.start_instance(&worker()).unwrap();
    let pid = h
        .rsplit_once('@')
        .expect("the handle ends with the pid")
        .1
        .to_owned();
    assert_eq!(x.invoke(&h, "count", b"", 5_000).unwrap(), b"1");
    x.pause_instance(&h, true).unwrap();
    x.pause_instance(&h, true).unwrap();
    assert!(stops(&pid), "paused: stopped");
    // An invocation on a paused worker resumes it first.
    assert_eq!(x.invoke(&h, "count", b"", 5_000).unwrap(), b"2");
    assert_ne!(proc_state(&pid), Some('T'));
    x.pause_instance(&h, true).unwrap();
    assert!(stops(&pid));
    x.pause_instance(&h, false).unwrap();
    x.pause_instance(&h, false).unwrap();
    assert_ne!(proc_state(&pid), Some('T'), "resumed");
    assert_eq!(x.invoke(&h, "count", b"", 5_000).unwrap(), b"3");
    // Paused, then stopped: the process is killed and reaped all the same.
    x.pause_instance(&h, true).unwrap();
    x.stop_instance(&h).unwrap();
    assert_eq!(proc_state(&pid), None, "killed and reaped");
    assert!(x.pause_instance(&h, false).is_err(), "no such instance now");
    let wasm = executor("wasm.so", "{}");
    assert!(!wasm.capabilities().pause);
    let a = wasm.start_instance(&counter()).unwrap();
    assert!(
        wasm.pause_instance(&a, true).is_err(),
        "the wasm executor pauses nothing"
    );
    assert_eq!(wasm.invoke(&a, "count", b"", 5_000).unwrap(), b"1");
}

/// A worker asked for pieces of output sends them as the function makes them: the second piece
/// comes only after the first reached the caller (which makes the file the worker waits for). A
/// caller that wants no more gets none; a worker that sends a piece unasked broke the protocol.
/// The wasm executor hands its whole output over at the end.
#[test]
fn a_worker_streams_pieces_of_output_as_the_function_makes_them() {
    let x = executor("process.so", "{}");
    let h = x.start_instance(&worker()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let gate = dir.path().join("gate");
    let path = gate.display().to_string();
    let mut pieces: Vec<Vec<u8>> = Vec::new();
    let rest = x
        .invoke_stream(&h, "gate", path.as_bytes(), 30_000, &mut |piece| {
            if piece == b"first" {
                std::fs::write(&gate, b"").unwrap();
            }
            pieces.push(piece.to_vec());
            true
        })
        .unwrap();
    assert_eq!(
        rest, b"end",
        "the first piece arrived while the function ran"
    );
    assert_eq!(pieces, [b"first".to_vec(), b"second".to_vec()]);
    // Not asked for pieces: the whole output in the answer.
    assert_eq!(
        x.invoke(&h, "gate", path.as_bytes(), 30_000).unwrap(),
        b"firstsecondend"
    );
    // A caller that wants no more after the first piece gets no more.
    std::fs::remove_file(&gate).unwrap();
    let mut got = 0;
    let rest = x
        .invoke_stream(&h, "gate", path.as_bytes(), 30_000, &mut |_| {
            std::fs::write(&gate, b"").unwrap();
            got += 1;
            false
        })
        .unwrap();
    assert_eq!((got, &rest[..]), (1, &b"end"[..]));
    assert_eq!(x.invoke(&h, "count", b"", 5_000).unwrap(), b"1");
    // A piece nobody asked for breaks the protocol: the worker is lost.
    let e = x.invoke(&h, "unasked", b"", 5_000).unwrap_err();
    assert!(
        matches!(&e, InvokeFailure::Lost(m) if m.contains("asked for none")),
        "{e:?}"
    );
}

/// A wasm function emits pieces of its output (`spear:function/output`): a streaming caller gets
/// them while the function runs (one that wants no more after the first stops the function's
/// loop, which would otherwise emit 400, 5 ms apart); any other gets them before the result; more
/// than the instance's payload limit fails the invocation, and the instance serves on.
#[test]
fn a_wasm_function_emits_pieces_of_its_output() {
    let x = executor("wasm.so", "{}");
    let a = x.start_instance(&counter()).unwrap();
    let mut pieces: Vec<Vec<u8>> = Vec::new();
    let out = x
        .invoke_stream(&a, "emit", b"3", 5_000, &mut |p| {
            pieces.push(p.to_vec());
            true
        })
        .unwrap();
    assert_eq!(out, b"emitted 3");
    assert_eq!(pieces, [b"0;".to_vec(), b"1;".to_vec(), b"2;".to_vec()]);
    let mut got = 0;
    let out = x
        .invoke_stream(&a, "emit", b"400", 30_000, &mut |_| {
            got += 1;
            false
        })
        .unwrap();
    let wanted: u32 = String::from_utf8(out).unwrap()["emitted ".len()..]
        .parse()
        .unwrap();
    assert_eq!(got, 1);
    assert!(
        wanted < 100,
        "the function heard it was wanted no more: {wanted}"
    );
    assert_eq!(
        x.invoke(&a, "emit", b"3", 5_000).unwrap(),
        b"0;1;2;emitted 3"
    );
    let small = x
        .start_instance(&InstanceSpec {
            max_payload_bytes: 8,
            ..counter()
        })
        .unwrap();
    let e = x.invoke(&small, "emit", b"10", 5_000).unwrap_err();
    assert!(
        matches!(&e, InvokeFailure::Function(m) if m.contains("more than 8 bytes")),
        "{e:?}"
    );
    assert_eq!(x.invoke(&small, "count", b"", 5_000).unwrap(), b"1");
}

/// Bad specs are refused with the field named; a component that is not a function is refused.
#[test]
fn bad_instance_specs_are_refused_with_a_reason() {
    let wasm = executor("wasm.so", "{}");
    let none = InstanceSpec {
        artifact: None,
        ..counter()
    };
    let err = wasm.start_instance(&none).unwrap_err().to_string();
    assert!(err.contains("artifact"), "{err}");
    let big = InstanceSpec {
        memory_limit_mb: 100_000,
        ..counter()
    };
    let err = wasm.start_instance(&big).unwrap_err().to_string();
    assert!(err.contains("memory_limit_mb"), "{err}");
    let command = InstanceSpec {
        artifact: Some(guest("component", "wasi-echo.wasm").display().to_string()),
        ..counter()
    };
    let err = wasm.start_instance(&command).unwrap_err().to_string();
    assert!(err.contains("not a function component"), "{err}");

    let process = executor("process.so", "{}");
    let not_a_worker = InstanceSpec {
        entry: "/bin/true".into(),
        ..worker()
    };
    let err = process
        .start_instance(&not_a_worker)
        .unwrap_err()
        .to_string();
    assert!(err.contains("did not start"), "{err}");
}

/// `function_instances` bounds the instances alive at once (a stop frees a place);
/// `function_binaries` of 0 and unknown keys are refused.
#[test]
fn the_wasm_executors_function_limits_act() {
    let x = executor(
        "wasm.so",
        r#"{"function_instances": 1, "function_binaries": 1}"#,
    );
    let a = x.start_instance(&counter()).unwrap();
    let err = x.start_instance(&counter()).unwrap_err().to_string();
    assert!(err.contains("did not start"), "{err}");
    x.stop_instance(&a).unwrap();
    let b = x.start_instance(&counter()).unwrap();
    assert_eq!(x.invoke(&b, "count", b"", 5_000).unwrap(), b"1");

    let engine = WasmEngine::new().unwrap();
    let limits = Arc::new(Limits::new(LimitValues::default()));
    let plugin = load_file(&guest("native", "wasm.so"), &engine, &limits).unwrap();
    for bad in [
        r#"{"function_binaries": 0}"#,
        r#"{"function_instances": 0}"#,
    ] {
        let mut e = plugin.executor().unwrap();
        let err = e.configure(bad).unwrap_err().to_string();
        assert!(err.contains("function_"), "{bad}: {err}");
    }
}
