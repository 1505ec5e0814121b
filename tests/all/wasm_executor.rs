//! The `wasm` executor, loaded as the Spearlet will load it (a native plugin through the runtime),
//! running real Rust WASI programs (`tests/fixtures/wasi-echo`) built both as a wasip1 core module
//! and as a wasip2 component.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use spear_plugin_api::Executor;
use spear_plugin_api::executor::{ExecResult, ExecSpec, ExecState, ExitStatus};
use spear_plugin_runtime::engine::WasmEngine;
use spear_plugin_runtime::{LimitValues, Limits, load_file};
use spear_tests::guest;

pub(crate) fn executor() -> Box<dyn Executor> {
    let engine = WasmEngine::new().unwrap();
    let limits = Arc::new(Limits::new(LimitValues::default()));
    let plugin = load_file(&guest("native", "wasm.so"), &engine, &limits).unwrap();
    assert_eq!(plugin.info.kind, spear_plugin_api::PluginKind::Executor);
    assert_eq!(plugin.info.name, "wasm");
    let mut e = plugin.executor().unwrap();
    e.configure(r#"{"pool_instances": 16, "max_memory_mb": 256, "cache_entries": 8}"#)
        .unwrap();
    assert_eq!(e.capabilities().executable_type, "wasm");
    e
}

/// The fixture in both forms: (form, path).
pub(crate) fn forms() -> [(&'static str, PathBuf); 2] {
    [
        ("wasip1 module", guest("wasip1", "wasi-echo.wasm")),
        ("wasip2 component", guest("component", "wasi-echo.wasm")),
    ]
}

pub(crate) fn spec(id: &str, artifact: &std::path::Path, args: &[&str]) -> ExecSpec {
    ExecSpec {
        execution_id: id.into(),
        task: "echo-task".into(),
        artifact: Some(artifact.display().to_string()),
        args: args.iter().map(|a| a.to_string()).collect(),
        ..ExecSpec::default()
    }
}

/// The plugin's own message (the runtime passes it on as it is).
fn message(e: impl std::fmt::Display) -> String {
    let e = e.to_string();
    assert!(!e.starts_with("returned an error: "), "{e}");
    e
}

/// The exit code the executor reports for a guest that exits with `code`: a WASI 0.2 component
/// exits through `wasi:cli/exit.exit(result)`, which carries success or failure only (Rust's std
/// does not use the unstable `exit-with-code`), so any failure code arrives as 1.
fn reported(form: &str, code: i32) -> i32 {
    if form.contains("component") {
        i32::from(code != 0)
    } else {
        code
    }
}

pub(crate) fn run(x: &dyn Executor, s: &ExecSpec) -> ExecResult {
    let h = x.start(s).unwrap();
    x.wait(&h, 60_000).unwrap().expect("finished")
}

#[test]
fn runs_both_forms_with_args_env_stdin_output_and_exit_code() {
    let x = executor();
    for (form, path) in forms() {
        let mut s = spec(&format!("echo {form}"), &path, &["echo", "3"]);
        s.env = vec![
            ("GREETING".into(), "hello".into()),
            ("EMPTY".into(), String::new()),
        ];
        s.stdin = b"from stdin".to_vec();
        let r = run(&*x, &s);
        assert_eq!(
            r.status,
            ExitStatus::Exited(reported(form, 3)),
            "{form}: {r:?}"
        );
        assert_eq!(
            String::from_utf8(r.stdout).unwrap(),
            "args=echo-task|echo|3\nenv=EMPTY=|GREETING=hello\nstdin=from stdin\n",
            "{form}"
        );
        assert_eq!(r.stderr, b"to stderr\n", "{form}");
        assert!(!r.stdout_truncated && !r.stderr_truncated);

        // No arguments, no environment, no input: exit 0, and argv[0] falls back to the entry.
        let mut s = spec(&format!("plain {form}"), &path, &[]);
        s.task = String::new();
        s.entry = "the-entry".into();
        let r = run(&*x, &s);
        assert_eq!(r.status, ExitStatus::Exited(0), "{form}: {r:?}");
        assert_eq!(
            String::from_utf8(r.stdout).unwrap(),
            "args=the-entry\nenv=\nstdin=\n",
            "{form}"
        );
        assert!(matches!(
            x.inspect(&s.execution_id).unwrap(),
            ExecState::Finished(_)
        ));
        x.destroy(&s.execution_id).unwrap();
        assert_eq!(x.inspect(&s.execution_id).unwrap(), ExecState::Unknown);
    }
}

#[test]
fn a_guest_that_loops_times_out_and_the_executor_stays_usable() {
    let x = executor();
    for (form, path) in forms() {
        let mut s = spec(&format!("loop {form}"), &path, &["loop"]);
        s.timeout_ms = 300;
        let started = Instant::now();
        let r = run(&*x, &s);
        assert_eq!(r.status, ExitStatus::TimedOut, "{form}: {r:?}");
        assert!(started.elapsed() >= Duration::from_millis(300));
        assert!(started.elapsed() < Duration::from_secs(10), "{form}");
        let r = run(&*x, &spec(&format!("after {form}"), &path, &["echo", "0"]));
        assert_eq!(r.status, ExitStatus::Exited(0), "{form}: {r:?}");
    }
}

#[test]
fn a_guest_past_its_cpu_limit_fails_and_one_that_sleeps_does_not() {
    let engine = WasmEngine::new().unwrap();
    let limits = Arc::new(Limits::new(LimitValues::default()));
    let plugin = load_file(&guest("native", "wasm.so"), &engine, &limits).unwrap();
    let mut x = plugin.executor().unwrap();
    x.configure(r#"{"pool_instances": 4, "max_cpu_ms": 300}"#)
        .unwrap();
    for (form, path) in forms() {
        // No time limit: the CPU limit alone ends the loop.
        let started = Instant::now();
        let r = run(&*x, &spec(&format!("spin {form}"), &path, &["loop"]));
        assert!(
            matches!(&r.status, ExitStatus::Failed(m) if m.starts_with("cpu limit") && m.contains("300 ms")),
            "{form}: {r:?}"
        );
        assert!(started.elapsed() >= Duration::from_millis(300), "{form}");
        assert!(started.elapsed() < Duration::from_secs(20), "{form}");
        // Sleeping three times the CPU limit uses next to no CPU.
        let r = run(&*x, &spec(&format!("nap {form}"), &path, &["sleep", "900"]));
        assert_eq!(r.status, ExitStatus::Exited(0), "{form}: {r:?}");
        assert_eq!(r.stdout, b"awake\n");
    }
    let err = x
        .configure(r#"{"max_cpu_ms": 86400001}"#)
        .unwrap_err()
        .to_string();
    assert!(err.contains("max_cpu_ms"), "{err}");
}

#[test]
fn a_working_directory_is_preopened_only_where_the_node_allows() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("note.txt"), "from the host\n").unwrap();
    let x = executor();
    for (form, path) in forms() {
        let mut s = spec(&format!("cat {form}"), &path, &["cat", "note.txt"]);
        s.working_dir = Some(dir.path().display().to_string());
        let err = message(x.start(&s).unwrap_err());
        assert!(err.contains("preopen_working_dir"), "{form}: {err}");
        // Without one the guest sees no directory at all.
        let r = run(
            &*x,
            &spec(&format!("blind {form}"), &path, &["cat", "note.txt"]),
        );
        assert_ne!(r.status, ExitStatus::Exited(0), "{form}: {r:?}");
    }
    let engine = WasmEngine::new().unwrap();
    let limits = Arc::new(Limits::new(LimitValues::default()));
    let plugin = load_file(&guest("native", "wasm.so"), &engine, &limits).unwrap();
    let mut x = plugin.executor().unwrap();
    x.configure(r#"{"pool_instances": 4, "preopen_working_dir": true}"#)
        .unwrap();
    for (form, path) in forms() {
        let mut s = spec(&format!("cat ok {form}"), &path, &["cat", "note.txt"]);
        s.working_dir = Some(dir.path().display().to_string());
        let r = run(&*x, &s);
        assert_eq!(r.status, ExitStatus::Exited(0), "{form}: {r:?}");
        assert_eq!(r.stdout, b"from the host\n");
    }
}

#[test]
fn output_past_the_cap_is_dropped_and_flagged_without_failing_the_guest() {
    let x = executor();
    for (form, path) in forms() {
        let mut s = spec(&format!("flood {form}"), &path, &["flood", "100000000"]);
        s.output_cap_bytes = 1024 * 1024;
        let r = run(&*x, &s);
        assert_eq!(r.status, ExitStatus::Exited(0), "{form}: {:?}", r.status);
        assert_eq!(r.stdout.len(), 1024 * 1024, "{form}");
        assert!(r.stdout_truncated, "{form}");
        assert_eq!(r.stderr, b"done\n", "{form}");
        assert!(!r.stderr_truncated, "{form}");
    }
}

#[test]
fn memory_limits_fail_a_hog_and_let_a_modest_guest_run() {
    let x = executor();
    for (form, path) in forms() {
        let mut s = spec(&format!("hog {form}"), &path, &["hog", "200"]);
        s.memory_limit_mb = 64;
        let r = run(&*x, &s);
        assert_ne!(r.status, ExitStatus::Exited(0), "{form}: {r:?}");
        assert!(
            !String::from_utf8_lossy(&r.stdout).contains("survived"),
            "{form}"
        );
        match &r.status {
            ExitStatus::Failed(m) => assert!(m.contains("memory limit"), "{form}: {m}"),
            other => panic!("{form}: {other:?}"),
        }

        let mut s = spec(&format!("modest {form}"), &path, &["hog", "16"]);
        s.memory_limit_mb = 64;
        let r = run(&*x, &s);
        assert_eq!(r.status, ExitStatus::Exited(0), "{form}: {r:?}");
        assert_eq!(r.stdout, b"survived 16\n", "{form}");
    }
    // Past the executor's maximum, a spec is refused outright.
    let (_, path) = &forms()[0];
    let mut s = spec("greedy", path, &["noop"]);
    s.memory_limit_mb = 100_000;
    let e = message(x.start(&s).unwrap_err());
    assert!(
        e.starts_with("invalid configuration:") && e.contains("max_memory_mb"),
        "{e}"
    );
}

#[test]
fn traps_and_panics_fail_with_the_trap_message() {
    let x = executor();
    for (form, path) in forms() {
        let r = run(&*x, &spec(&format!("trap {form}"), &path, &["trap"]));
        match &r.status {
            ExitStatus::Failed(m) => {
                assert!(m.starts_with("trap: "), "{form}: {m}");
                assert!(m.contains("unreachable"), "{form}: {m}");
            }
            other => panic!("{form}: {other:?}"),
        }
        let r = run(&*x, &spec(&format!("panic {form}"), &path, &["panic"]));
        assert!(
            matches!(&r.status, ExitStatus::Failed(m) if m.starts_with("trap: ")),
            "{form}: {:?}",
            r.status
        );
        assert!(
            String::from_utf8_lossy(&r.stderr).contains("deliberate panic"),
            "{form}"
        );
    }
}

#[test]
fn garbage_and_wasm_that_is_not_a_command_are_configuration_errors() {
    let x = executor();
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.wasm");
    std::fs::write(&junk, b"this is not WebAssembly at all").unwrap();
    let cases = [
        (junk, "not a WebAssembly binary"),
        // A core module without `_start` (an Extism plugin).
        (guest("extism", "round-robin.wasm"), "_start"),
        // A component of another world (a SPEAR strategy): no `wasi:cli/run`.
        (guest("component", "round-robin.wasm"), "wasi:cli/run"),
        // A native library.
        (guest("native", "process.so"), "not a WebAssembly binary"),
        (dir.path().join("missing.wasm"), "cannot be read"),
    ];
    for (i, (path, reason)) in cases.iter().enumerate() {
        let e = message(x.start(&spec(&format!("bad{i}"), path, &[])).unwrap_err());
        assert!(e.starts_with("invalid configuration:"), "{e}");
        assert!(e.contains(&path.display().to_string()), "{e}");
        assert!(e.contains(reason), "{reason}: {e}");
        assert_eq!(x.inspect(&format!("bad{i}")).unwrap(), ExecState::Unknown);
    }
    let mut s = spec("no-artifact", std::path::Path::new("/unused"), &[]);
    s.artifact = None;
    let e = message(x.start(&s).unwrap_err());
    assert!(e.starts_with("invalid configuration: artifact"), "{e}");
    // Nothing else is affected.
    let (_, path) = &forms()[1];
    assert_eq!(
        run(&*x, &spec("fine", path, &["noop"])).status,
        ExitStatus::Exited(0)
    );
}

#[test]
fn stop_signal_stats_and_destroy_act_on_a_running_guest() {
    let x = executor();
    for (form, path) in forms() {
        let id = format!("spin {form}");
        let h = x.start(&spec(&id, &path, &["loop"])).unwrap();
        assert!(x.wait(&h, 50).unwrap().is_none());
        assert_eq!(x.inspect(&h).unwrap(), ExecState::Running);
        let stats = x.stats(&h).unwrap();
        assert!(stats.memory_bytes >= 64 * 1024, "{form}: {stats:?}");
        assert!(
            x.start(&spec(&id, &path, &["noop"])).is_err(),
            "duplicate id"
        );
        x.stop(&h, 2_000).unwrap();
        let r = x.wait(&h, 5_000).unwrap().expect("stopped");
        assert_eq!(r.status, ExitStatus::Signaled(15), "{form}");
        assert!(!x.recover(&h).unwrap());

        let h = x
            .start(&spec(&format!("sig {form}"), &path, &["loop"]))
            .unwrap();
        x.signal(&h, 0).unwrap();
        assert!(x.wait(&h, 50).unwrap().is_none(), "signal 0 only probes");
        x.signal(&h, 2).unwrap();
        let r = x.wait(&h, 5_000).unwrap().expect("interrupted");
        assert_eq!(r.status, ExitStatus::Signaled(2), "{form}");

        let h = x
            .start(&spec(&format!("doomed {form}"), &path, &["loop"]))
            .unwrap();
        x.destroy(&h).unwrap();
        assert_eq!(x.inspect(&h).unwrap(), ExecState::Unknown);
        assert!(x.wait(&h, 10).is_err());
    }
}

#[test]
fn many_guests_from_several_threads_at_once() {
    let x: Arc<dyn Executor> = Arc::from(executor());
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let x = x.clone();
            std::thread::spawn(move || {
                for i in 0..25 {
                    let (form, path) = &forms()[(t + i) % 2];
                    let mut s = spec(&format!("many-{t}-{i}"), path, &["echo", &format!("{i}")]);
                    s.stdin = format!("{t}/{i}").into_bytes();
                    let r = run(&*x, &s);
                    assert_eq!(r.status, ExitStatus::Exited(reported(form, i as i32)));
                    let out = String::from_utf8(r.stdout).unwrap();
                    assert!(out.ends_with(&format!("stdin={t}/{i}\n")), "{out}");
                    x.destroy(&s.execution_id).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

/// The shared binary, observed through the rlib's documented `cache_stats` (the plugin ABI has no
/// place for it): every execution of one binary after the first is a cache hit.
#[test]
fn executions_of_the_same_binary_share_one_compilation() {
    let x = spear_executor_wasm::WasmExecutor::default();
    let dir = tempfile::tempdir().unwrap();
    for (form, path) in forms() {
        // The same bytes under another name are the same binary.
        let copy = dir.path().join(format!("copy of {form}.wasm"));
        std::fs::copy(&path, &copy).unwrap();
        for (i, p) in [&path, &path, &copy].into_iter().enumerate() {
            let r = run(&x, &spec(&format!("{form} {i}"), p, &["noop"]));
            assert_eq!(r.status, ExitStatus::Exited(0), "{form}: {r:?}");
        }
    }
    let s = x.cache_stats();
    assert_eq!((s.misses, s.hits, s.entries), (2, 4, 2), "{s:?}");
}

/// A pool of one fits either form (the per-guest budget of the pooling allocator is enough for a
/// real Rust guest), and a start past it fails at once with a clear error.
#[test]
fn a_pool_of_one_runs_either_form_and_refuses_a_second_guest() {
    let x = spear_executor_wasm::WasmExecutor::with_config(spear_executor_wasm::Config {
        pool_instances: 1,
        ..spear_executor_wasm::Config::default()
    })
    .unwrap();
    for (form, path) in forms() {
        let r = run(&x, &spec(&format!("one {form}"), &path, &["echo", "0"]));
        assert_eq!(r.status, ExitStatus::Exited(0), "{form}: {r:?}");
        let h = x
            .start(&spec(&format!("busy {form}"), &path, &["loop"]))
            .unwrap();
        let e = x
            .start(&spec(&format!("extra {form}"), &path, &["noop"]))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("pool is exhausted") && e.contains("pool_instances = 1"),
            "{e}"
        );
        x.stop(&h, 5_000).unwrap();
        let r = run(&x, &spec(&format!("again {form}"), &path, &["noop"]));
        assert_eq!(r.status, ExitStatus::Exited(0), "{form}: {r:?}");
    }
}

/// A guest runs even if nobody waits for it (the workers pick it up), and `wait` then returns its
/// result at once.
#[test]
fn a_guest_nobody_waits_for_still_runs() {
    let x = executor();
    for (form, path) in forms() {
        let h = x
            .start(&spec(&format!("unwatched {form}"), &path, &["echo", "0"]))
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while x.inspect(&h).unwrap() == ExecState::Running {
            assert!(Instant::now() < deadline, "{form}: never ran");
            std::thread::sleep(Duration::from_millis(5));
        }
        let r = x.wait(&h, 0).unwrap().expect("finished");
        assert_eq!(r.status, ExitStatus::Exited(0), "{form}: {r:?}");
        assert!(r.stdout.starts_with(b"args=echo-task|echo|0\n"), "{form}");
    }
}
