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
    let limits = Arc::new(Limits::new(LimitValues {
        setup_timeout_ms: 200,
        ..LimitValues::default()
    }));
    echo_under(mode, &limits)
}

/// The echo executor under `limits`, configured in `mode`.
fn echo_under(mode: &str, limits: &Arc<Limits>) -> Box<dyn Executor> {
    echo_configured(&format!(r#"{{"mode": "{mode}"}}"#), limits)
}

/// The echo executor under `limits`, configured with `config`.
fn echo_configured(config: &str, limits: &Arc<Limits>) -> Box<dyn Executor> {
    let engine = WasmEngine::new().unwrap();
    let plugin = load_file(&guest("component", "echo-executor.wasm"), &engine, limits).unwrap();
    assert_eq!(
        (plugin.info.name.as_str(), plugin.info.kind, plugin.id.form),
        ("echo", PluginKind::Executor, Form::Component)
    );
    let mut x = plugin.executor().unwrap();
    x.configure(config).unwrap();
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
fn a_looping_start_a_memory_bomb_and_a_trapping_inspect_are_stopped_and_the_instance_refuses_after()
{
    for mode in ["loop", "trap", "bomb"] {
        // On a thread, so that a call never stopped fails the test instead of hanging it.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let x = echo(mode);
            let started = Instant::now();
            let first = match mode {
                "loop" | "bomb" => x.start(&spec("e4", b"", 0)).unwrap_err().0,
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
        let reason = match mode {
            "loop" => "stopped: ",
            "bomb" => "exceeded its memory limit of 64 MiB",
            _ => "echo executor trapped on purpose",
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

/// What the host logs while `f` runs (info and above).
fn logged(f: impl FnOnce()) -> String {
    spear_tests::logs::logged_at(tracing::Level::INFO, f)
}

#[test]
fn an_executor_has_the_log_and_the_clock_only_if_granted() {
    use spear_plugin_runtime::grants::{Grant, GrantTable};
    let limits = Arc::new(Limits::new(LimitValues::default()));
    let x = echo_under("clock", &limits);
    let mut handle = String::new();
    let log = logged(|| handle = x.start(&spec("e1", b"", 0)).unwrap());
    assert!(
        !log.contains("echo starting"),
        "logged without the grant: {log}"
    );
    let result = x.wait(&handle, 5_000).unwrap().unwrap();
    assert_eq!(
        result.stdout, b"0 0",
        "a clock (host, WASI) ran without the grant"
    );

    // Granted (from the next call on): the line reaches the log, the clock reads the time.
    limits.set_grants(GrantTable::from([(
        "echo".to_owned(),
        Grant {
            http_hosts: vec![],
            clock: Some(true),
            log: Some(true),
            scratch_mb: None,
        },
    )]));
    let log = logged(|| handle = x.start(&spec("e2", b"", 0)).unwrap());
    assert!(log.contains("echo starting e2"), "{log}");
    let result = x.wait(&handle, 5_000).unwrap().unwrap();
    let text = String::from_utf8(result.stdout).unwrap();
    for clock in text.split(' ') {
        let now: u64 = clock.parse().unwrap();
        assert!(now > 1_700_000_000_000, "{text}");
    }
}

#[test]
fn a_blocking_read_of_a_stalled_http_answer_is_stopped_at_the_ceiling() {
    let server = spear_tests::http_server::HttpServer::start();
    let limits = Arc::new(Limits::new(LimitValues {
        setup_timeout_ms: 200,
        ..LimitValues::default()
    }));
    limits.set_grants(spear_plugin_runtime::grants::GrantTable::from([(
        "echo".to_owned(),
        spear_plugin_runtime::grants::Grant {
            http_hosts: vec![
                spear_plugin_runtime::grants::HttpHost::parse(&server.addr.to_string()).unwrap(),
            ],
            ..Default::default()
        },
    )]));
    // A prompt answer is read to its end: the blocking reads work.
    let config = |path: &str| {
        format!(
            r#"{{"mode": "blocking-read", "authority": "{}", "path": "{path}"}}"#,
            server.addr
        )
    };
    let x = echo_configured(&config("/big/70000/x"), &limits);
    assert_eq!(x.start(&spec("e1", b"", 0)).unwrap(), "read-70000");
    // On a thread, so that a read never stopped fails the test instead of hanging it.
    let (tx, rx) = std::sync::mpsc::channel();
    let stalled = config("/stall/30000/x");
    std::thread::spawn(move || {
        let x = echo_configured(&stalled, &limits);
        let started = Instant::now();
        let error = x.start(&spec("e2", b"", 0)).unwrap_err().0;
        tx.send((error, started.elapsed())).unwrap();
    });
    let (error, took) = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("the blocking read was never stopped");
    assert!(
        error.contains("blocked in a wasi:io/streams call past its 1000 ms wall-clock ceiling"),
        "{error}"
    );
    assert!(took < Duration::from_secs(5), "stopped in {took:?}");
}

#[test]
fn refused_hosts_are_named_at_warn_for_the_first_sixteen_of_an_instance() {
    let limits = Arc::new(Limits::new(LimitValues {
        setup_timeout_ms: 200,
        ..LimitValues::default()
    }));
    let config = |i: usize| {
        format!(r#"{{"mode": "blocking-read", "authority": "h{i}.invalid:9", "path": "/"}}"#)
    };
    let mut x = echo_configured(&config(0), &limits);
    let log = spear_tests::logs::logged_at(tracing::Level::DEBUG, || {
        for i in 0..18 {
            x.configure(&config(i)).unwrap();
            let refused = x.start(&spec(&format!("e{i}"), b"", 0)).unwrap_err().0;
            assert!(refused.to_lowercase().contains("denied"), "{refused}");
        }
        // The same host again is not named again.
        x.configure(&config(0)).unwrap();
        let _ = x.start(&spec("again", b"", 0));
    });
    let warned: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(" WARN ") && l.contains("HTTP request refused"))
        .collect();
    assert_eq!(warned.len(), 16, "{log}");
    for i in 0..16 {
        assert!(
            warned
                .iter()
                .any(|l| l.contains(&format!("h{i}.invalid:9"))),
            "h{i}: {log}"
        );
    }
    let quiet = log
        .lines()
        .filter(|l| l.contains(" DEBUG ") && l.contains("HTTP request refused"))
        .count();
    assert_eq!(quiet, 3, "h16, h17 and h0 again: {log}");
}
