//! Workloads are user-submitted code: the classes of abuse tried against plugins, tried against
//! the `wasm` executor. Each is contained with a clear outcome for the execution, and the executor
//! (so the Spearlet) runs the next guest unharmed.

use std::time::{Duration, Instant};

use spear_plugin_api::executor::ExitStatus;
use spear_tests::guest;

use super::wasm_executor::{executor, forms, run, spec};

fn component() -> std::path::PathBuf {
    guest("component", "wasi-echo.wasm")
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

#[test]
fn a_terabyte_of_zeroes_is_refused_without_allocating_it() {
    let x = executor();
    let r = run(&*x, &spec("zeroes", &component(), &["zeroes"]));
    // The write is larger than the stream permits: the guest traps, the host allocates nothing.
    match &r.status {
        ExitStatus::Failed(why) => assert!(
            why.contains("cannot write more zeroes than `check_write` allows"),
            "{why}"
        ),
        other => panic!(
            "expected a failure, got {other:?}: {}",
            String::from_utf8_lossy(&r.stdout)
        ),
    }
    let r = run(&*x, &spec("after", &component(), &["echo", "0"]));
    assert_eq!(r.status, ExitStatus::Exited(0));
}

#[test]
fn a_guest_asleep_in_a_poll_is_cancelled_at_its_timeout() {
    let x = executor();
    for (form, path) in forms() {
        let mut s = spec(&format!("sleep {form}"), &path, &["sleep", "60000"]);
        s.timeout_ms = 300;
        let started = Instant::now();
        let r = run(&*x, &s);
        assert_eq!(r.status, ExitStatus::TimedOut, "{form}: {r:?}");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{form}: the sleep was not cut short ({:?})",
            started.elapsed()
        );
    }
}

#[test]
fn without_network_no_socket_can_be_created() {
    let x = executor();
    let before = open_fds();
    let r = run(&*x, &spec("sockets", &component(), &["sockets", "30000"]));
    assert_eq!(r.status, ExitStatus::Exited(1), "{r:?}");
    let stderr = String::from_utf8_lossy(&r.stderr);
    assert!(stderr.contains("socket creation denied"), "{stderr}");
    assert!(stderr.contains("after 0"), "not one socket: {stderr}");
    assert!(
        open_fds() < before + 64,
        "descriptors: {before} → {}",
        open_fds()
    );
}

#[test]
fn resources_past_the_table_limit_fail_the_guest() {
    let x = executor();
    let r = run(
        &*x,
        &spec("pollables", &component(), &["pollables", "100000"]),
    );
    match &r.status {
        ExitStatus::Failed(why) => {
            assert!(why.contains("resource table has no free keys"), "{why}")
        }
        other => panic!("expected a failure, got {other:?}"),
    }
    // A guest within the limit runs.
    let r = run(&*x, &spec("some", &component(), &["pollables", "1000"]));
    assert_eq!(r.status, ExitStatus::Exited(0), "{r:?}");
    assert_eq!(String::from_utf8_lossy(&r.stdout), "kept 1000\n");
}
