//! The built-in `http` executor, a WASM component, against a real HTTP server on 127.0.0.1: it
//! runs executions by POSTing them to the endpoint its host granted it, maps answers to results,
//! and is refused (before anything is sent) every host it was not granted. Its clock reads zero
//! unless granted.

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use spear_plugin_api::executor::{ExecSpec, ExecState, ExitStatus};
use spear_plugin_api::{Executor, PluginKind};
use spear_plugin_runtime::engine::WasmEngine;
use spear_plugin_runtime::grants::{Grant, GrantTable, HttpHost};
use spear_plugin_runtime::{Form, LimitValues, Limits, load_file};
use spear_tests::guest;
use spear_tests::http_server::HttpServer;

/// Limits granting the `http` plugin `hosts` (and the clock if `clock`).
fn limits(hosts: &[&str], clock: bool) -> Arc<Limits> {
    let limits = Arc::new(Limits::new(LimitValues::default()));
    limits.set_grants(grants(hosts, clock));
    limits
}

fn grants(hosts: &[&str], clock: bool) -> GrantTable {
    GrantTable::from([(
        "http".to_owned(),
        Grant {
            http_hosts: hosts.iter().map(|h| HttpHost::parse(h).unwrap()).collect(),
            clock: Some(clock),
            log: None,
            scratch_mb: None,
        },
    )])
}

/// The http executor under `limits`, configured with `config`.
fn http(limits: &Arc<Limits>, config: &str) -> Box<dyn Executor> {
    let engine = WasmEngine::new().unwrap();
    let plugin = load_file(&guest("component", "http.wasm"), &engine, limits).unwrap();
    assert_eq!(
        (plugin.info.name.as_str(), plugin.info.kind, plugin.id.form),
        ("http", PluginKind::Executor, Form::Component)
    );
    let mut x = plugin.executor().unwrap();
    x.configure(config).unwrap();
    assert_eq!(x.capabilities().executable_type, "http");
    x
}

fn spec(id: &str, entry: &str, stdin: &[u8], cap: u64) -> ExecSpec {
    ExecSpec {
        execution_id: id.into(),
        task: "thumbnails".into(),
        entry: entry.into(),
        args: vec!["--fast".into()],
        env: vec![("MODE".into(), "test".into())],
        stdin: stdin.to_vec(),
        output_cap_bytes: cap,
        ..ExecSpec::default()
    }
}

#[test]
fn an_execution_is_posted_to_the_endpoint_and_the_answer_is_its_result() {
    let server = HttpServer::start();
    let limits = limits(&[&server.addr.to_string()], true);
    let x = http(
        &limits,
        &format!(
            r#"{{"endpoint": "{}/echo/{{entry}}?v=1", "headers": {{"Authorization": "Bearer t0k"}}}}"#,
            server.url()
        ),
    );
    let handle = x.start(&spec("e1", "resize", b"picture", 0)).unwrap();
    assert_eq!(handle, "e1");
    let result = x.wait(&handle, 10_000).unwrap().expect("finished");
    assert_eq!(result.status, ExitStatus::Exited(0), "{result:?}");
    // The echo endpoint answers the request body: the execution as JSON.
    let body: serde_json::Value = serde_json::from_slice(&result.stdout).unwrap();
    assert_eq!(body["execution_id"], "e1");
    assert_eq!(body["task"], "thumbnails");
    assert_eq!(body["entry"], "resize");
    assert_eq!(body["args"][0], "--fast");
    assert_eq!(body["env"]["MODE"], "test");
    let stdin = base64::engine::general_purpose::STANDARD
        .decode(body["stdin"].as_str().unwrap())
        .unwrap();
    assert_eq!(stdin, b"picture");
    let seen = server.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        (seen[0].method.as_str(), seen[0].path.as_str()),
        ("POST", "/echo/resize?v=1")
    );
    assert_eq!(seen[0].header("authorization"), Some("Bearer t0k"));
    assert_eq!(seen[0].header("content-type"), Some("application/json"));
    x.destroy(&handle).unwrap();
    assert_eq!(x.inspect(&handle).unwrap(), ExecState::Unknown);
}

#[test]
fn answers_map_to_exit_codes_and_output_is_cut_to_the_cap() {
    let server = HttpServer::start();
    let limits = limits(&[&server.addr.to_string()], true);
    let raw = |path: &str| {
        http(
            &limits,
            &format!(
                r#"{{"endpoint": "{}/{path}", "format": "raw"}}"#,
                server.url()
            ),
        )
    };
    let upper = raw("upper/x");
    let h = upper.start(&spec("e1", "x", b"hello", 0)).unwrap();
    let r = upper.wait(&h, 10_000).unwrap().unwrap();
    assert_eq!(
        (r.status, r.stdout),
        (ExitStatus::Exited(0), b"HELLO".to_vec())
    );
    let seen = server.seen();
    assert_eq!(seen[0].header("x-spear-execution-id"), Some("e1"));
    assert_eq!(seen[0].header("x-spear-task"), Some("thumbnails"));

    let failing = raw("fail/x");
    let h = failing.start(&spec("e2", "x", b"", 0)).unwrap();
    let r = failing.wait(&h, 10_000).unwrap().unwrap();
    assert_eq!(r.status, ExitStatus::Exited(1));
    assert_eq!(r.stderr, b"HTTP 503: busy");

    let coded = raw("code/7/x");
    let h = coded.start(&spec("e3", "x", b"", 0)).unwrap();
    let r = coded.wait(&h, 10_000).unwrap().unwrap();
    assert_eq!(
        (r.status, r.stdout),
        (ExitStatus::Exited(7), b"coded".to_vec())
    );

    let big = raw("big/300000/x");
    let h = big.start(&spec("e4", "x", b"", 1000)).unwrap();
    let r = big.wait(&h, 10_000).unwrap().unwrap();
    assert_eq!(r.status, ExitStatus::Exited(0));
    assert_eq!(r.stdout.len(), 1000);
    assert!(r.stdout_truncated);
}

#[test]
fn a_host_not_granted_is_refused_before_anything_is_sent_and_a_grant_applies_at_the_next_call() {
    let server = HttpServer::start();
    // Granted another port of the same address only.
    let other = format!("127.0.0.1:{}", server.addr.port().wrapping_add(1).max(1));
    let limits = limits(&[&other], true);
    let x = http(
        &limits,
        &format!(
            r#"{{"endpoint": "{}/upper/x", "format": "raw"}}"#,
            server.url()
        ),
    );
    let h = x.start(&spec("e1", "x", b"hi", 0)).unwrap();
    let r = x.wait(&h, 10_000).unwrap().unwrap();
    let ExitStatus::Failed(why) = &r.status else {
        panic!("not refused: {r:?}");
    };
    assert!(
        why.contains("not granted the endpoint's host") && why.contains("[plugins.grants]"),
        "{why}"
    );
    assert_eq!(
        server.connections(),
        0,
        "a refused request reached the server"
    );
    // The instance is not harmed; once the host is granted, the next execution goes through.
    limits.set_grants(grants(&[&server.addr.to_string()], true));
    let h = x.start(&spec("e2", "x", b"hi", 0)).unwrap();
    let r = x.wait(&h, 10_000).unwrap().unwrap();
    assert_eq!(
        (r.status, r.stdout),
        (ExitStatus::Exited(0), b"HI".to_vec())
    );
    // And no grant at all refuses again.
    limits.set_grants(GrantTable::new());
    let h = x.start(&spec("e3", "x", b"hi", 0)).unwrap();
    let r = x.wait(&h, 10_000).unwrap().unwrap();
    let ExitStatus::Failed(why) = &r.status else {
        panic!("not refused: {r:?}");
    };
    assert!(why.contains("not granted the endpoint's host"), "{why}");
    assert_eq!(server.connections(), 1);
}

#[test]
fn the_clock_reads_zero_unless_granted_and_stop_ends_a_request() {
    let server = HttpServer::start();
    let host = server.addr.to_string();
    let config = format!(
        r#"{{"endpoint": "{}/slow/300/x", "format": "raw"}}"#,
        server.url()
    );
    for clock in [false, true] {
        let limits = limits(&[&host], clock);
        let x = http(&limits, &config);
        let h = x.start(&spec("e1", "x", b"", 0)).unwrap();
        let r = x.wait(&h, 10_000).unwrap().unwrap();
        assert_eq!(r.stdout, b"late");
        if clock {
            assert!(r.duration_ms >= 300, "{}", r.duration_ms);
        } else {
            assert_eq!(r.duration_ms, 0, "the clock moved without its grant");
        }
    }
    let limits = limits(&[&host], true);
    let x = http(
        &limits,
        &format!(
            r#"{{"endpoint": "{}/slow/20000/x", "format": "raw"}}"#,
            server.url()
        ),
    );
    let h = x.start(&spec("e2", "x", b"", 0)).unwrap();
    assert_eq!(x.wait(&h, 100).unwrap(), None);
    let asked = Instant::now();
    x.stop(&h, 1000).unwrap();
    let r = x.wait(&h, 5_000).unwrap().expect("stopped");
    assert_eq!(r.status, ExitStatus::Signaled(15));
    assert!(asked.elapsed() < Duration::from_secs(5));
}

#[test]
fn an_instance_runs_executions_by_the_thousand_without_running_out_of_resources() {
    // Each request hands the host its options: were they kept, the instance's table (1,024
    // resources) would be full after about a thousand.
    let server = HttpServer::start();
    let limits = limits(&[&server.addr.to_string()], false);
    let x = http(
        &limits,
        &format!(
            r#"{{"endpoint": "{}/upper/x", "format": "raw"}}"#,
            server.url()
        ),
    );
    for i in 0..1_200 {
        let h = x.start(&spec(&format!("e{i}"), "x", b"ok", 0)).unwrap();
        let r = x.wait(&h, 10_000).unwrap().unwrap();
        assert_eq!(r.stdout, b"OK", "execution {i}: {r:?}");
        x.destroy(&h).unwrap();
    }
}

#[test]
fn answers_held_past_the_executors_budget_fail_their_execution_not_the_instance() {
    let server = HttpServer::start();
    let limits = limits(&[&server.addr.to_string()], false);
    let x = http(
        &limits,
        &format!(
            r#"{{"endpoint": "{}/big/10000000/x", "format": "raw"}}"#,
            server.url()
        ),
    );
    let cap = 16 << 20;
    let first = x.start(&spec("e1", "x", b"", cap)).unwrap();
    let r = x.wait(&first, 20_000).unwrap().unwrap();
    assert_eq!(r.stdout.len(), 10_000_000);
    // Not yet destroyed, the first answer is held: a second of 10 MB would pass 16 MiB.
    let second = x.start(&spec("e2", "x", b"", cap)).unwrap();
    let r = x.wait(&second, 20_000).unwrap().unwrap();
    let ExitStatus::Failed(why) = &r.status else {
        panic!("not failed: {:?}", r.status);
    };
    assert!(why.contains("answers not yet collected"), "{why}");
    // Once the first is collected, the next runs: the instance lived on.
    x.destroy(&first).unwrap();
    x.destroy(&second).unwrap();
    let third = x.start(&spec("e3", "x", b"", cap)).unwrap();
    let r = x.wait(&third, 20_000).unwrap().unwrap();
    assert_eq!(
        (r.status, r.stdout.len()),
        (ExitStatus::Exited(0), 10_000_000)
    );
}

#[test]
fn an_instance_has_at_most_128_requests_open_and_one_more_fails_alone() {
    let server = HttpServer::start();
    let limits = limits(&[&server.addr.to_string()], false);
    let x = http(
        &limits,
        &format!(
            r#"{{"endpoint": "{}/slow/1500/x", "format": "raw"}}"#,
            server.url()
        ),
    );
    let open: Vec<String> = (0..128)
        .map(|i| x.start(&spec(&format!("e{i}"), "x", b"", 0)).unwrap())
        .collect();
    let extra = x.start(&spec("extra", "x", b"", 0)).unwrap();
    let r = x.wait(&extra, 10_000).unwrap().unwrap();
    let ExitStatus::Failed(why) = &r.status else {
        panic!("not refused: {r:?}");
    };
    assert!(
        why.contains("128 HTTP requests of this plugin instance are open"),
        "{why}"
    );
    for h in &open {
        let r = x.wait(h, 20_000).unwrap().unwrap();
        assert_eq!(r.stdout, b"late", "{h}: {r:?}");
        x.destroy(h).unwrap();
    }
    // Their bodies dropped, the requests are closed: the next goes out.
    let next = x.start(&spec("next", "x", b"", 0)).unwrap();
    let r = x.wait(&next, 10_000).unwrap().unwrap();
    assert_eq!(r.stdout, b"late", "{r:?}");
}
