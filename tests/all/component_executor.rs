//! An executor loaded as a WASM component of the `executor` world: the host starts work, asks
//! where it is until it finishes (the guest never blocks), cuts its output to the cap, and
//! contains a guest that loops, traps or answers what it may not.

use std::sync::Arc;
use std::time::{Duration, Instant};

use spear_plugin_api::executor::{ExecSpec, ExecState, ExitStatus};
use spear_plugin_api::{Executor, PluginKind};
use spear_plugin_runtime::engine::WasmEngine;
use spear_plugin_runtime::{Form, LimitValues, Limits, load_file};
use spear_tests::guest;

/// The echo executor, configured in `mode`.
fn echo(mode: &str) -> Box<dyn Executor> {
    let engine = WasmEngine::new().unwrap();
    let limits = Arc::new(Limits::new(LimitValues {
        setup_timeout_ms: 200,
        ..LimitValues::default()
    }));
    let plugin = load_file(&guest("component", "echo-executor.wasm"), &engine, &limits).unwrap();
    assert_eq!(
        (plugin.info.name.as_str(), plugin.info.kind, plugin.id.form),
        ("echo", PluginKind::Executor, Form::Component)
    );
    let mut x = plugin.executor().unwrap();
    x.configure(&format!(r#"{{"mode": "{mode}"}}"#)).unwrap();
    x
}

fn spec(id: &str, stdin: &[u8], cap: u64) -> ExecSpec {
    ExecSpec {
        execution_id: id.into(),
        task: "t".into(),
        entry: "echo".into(),
        stdin: stdin.to_vec(),
        output_cap_bytes: cap,
        ..ExecSpec::default()
    }
}

#[test]
fn work_runs_to_its_result_through_start_and_inspect() {
    let x = echo("ok");
    assert_eq!(x.capabilities().executable_type, "echo");
    let handle = x.start(&spec("e1", b"hello", 0)).unwrap();
    assert_eq!(handle, "e1");
    // The first look finds it running: a wait of no time says so.
    assert_eq!(x.wait(&handle, 0).unwrap(), None);
    let result = x.wait(&handle, 5_000).unwrap().expect("finished");
    assert_eq!(result.status, ExitStatus::Exited(0));
    assert_eq!(result.stdout, b"HELLO");
    assert!(x.recover(&handle).unwrap());
    x.destroy(&handle).unwrap();
    assert_eq!(x.inspect(&handle).unwrap(), ExecState::Unknown);
    let gone = x.wait(&handle, 100).unwrap_err().0;
    assert!(gone.contains("no execution e1"), "{gone}");
}

#[test]
fn output_is_cut_to_the_cap_the_start_asked_for() {
    let x = echo("flood");
    let handle = x.start(&spec("e2", b"", 1024)).unwrap();
    let result = x.wait(&handle, 5_000).unwrap().expect("finished");
    assert_eq!(result.stdout.len(), 1024);
    assert!(result.stdout_truncated);
}

#[test]
fn a_handle_past_its_bound_is_refused() {
    let x = echo("long-handle");
    let error = x.start(&spec("e3", b"", 0)).unwrap_err().0;
    assert!(
        error.contains("executor plugin `echo` answered start wrongly: a handle of 1000 bytes"),
        "{error}"
    );
}

#[test]
fn a_looping_start_and_a_trapping_inspect_are_stopped_and_the_instance_refuses_after() {
    for mode in ["loop", "trap"] {
        // On a thread, so that a call never stopped fails the test instead of hanging it.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let x = echo(mode);
            let started = Instant::now();
            let first = match mode {
                "loop" => x.start(&spec("e4", b"", 0)).unwrap_err().0,
                _ => {
                    let handle = x.start(&spec("e4", b"", 0)).unwrap();
                    x.inspect(&handle).unwrap_err().0
                }
            };
            let took = started.elapsed();
            let after = x.start(&spec("e5", b"", 0)).unwrap_err().0;
            tx.send((first, took, after)).unwrap();
        });
        let (first, took, after) = rx
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| panic!("{mode}: the call was never stopped"));
        assert!(took < Duration::from_secs(5), "{mode}: stopped in {took:?}");
        let reason = if mode == "loop" {
            "stopped: "
        } else {
            "echo executor trapped on purpose"
        };
        assert!(first.contains(reason), "{mode}: {first}");
        assert!(after.contains("unusable"), "{mode}: {after}");
    }
}

#[test]
fn started_work_not_yet_destroyed_is_bounded() {
    let x = echo("ok");
    for i in 0..65_536 {
        x.start(&spec(&format!("w{i}"), b"", 0)).unwrap();
    }
    let error = x.start(&spec("one-more", b"", 0)).unwrap_err().0;
    assert!(
        error.contains("65536 executions not yet destroyed"),
        "{error}"
    );
    // Destroying one makes room for one.
    x.destroy("w0").unwrap();
    assert_eq!(x.start(&spec("one-more", b"", 0)).unwrap(), "one-more");
}
