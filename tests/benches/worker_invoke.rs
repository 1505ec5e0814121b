//! Benchmark of a process worker (the worker protocol, docs/workers.md): a plain `main` (no
//! harness) printing latencies and ratios against a baseline of this run.
//!
//! The worker is `tests/src/bin/spear-worker-fixture.rs` (a Rust program speaking the protocol);
//! each invocation calls its `count` function with an empty payload:
//!
//! - **hot**: `invoke` on a running worker (two frames each way over its pipes);
//! - **resumed**: `invoke` on a paused worker (`SIGSTOP`ped, as `spearlet.functions.pause_idle_ms`
//!   leaves an idle one): its `SIGCONT`, then the invocation;
//! - **start**: spawning a worker until its hello;
//! - **baseline**: `fork` + `exec` of `/bin/true` through `std::process::Command`.
//!
//! Then the same worker in a container, through the `container` executor (loaded as a native
//! plugin) against the tests' Podman (`tests/podman/setup.sh`), in an image made of the fixture
//! and this machine's libraries:
//!
//! - **container hot**: `invoke` on a running worker container (the frames through the engine's
//!   attach stream);
//! - **container resumed**: `invoke` on a paused (frozen) worker container: its unpause through
//!   the engine, then the invocation;
//! - **container start**: `start_instance` until the hello, then `stop_instance`;
//! - **baseline**: `podman run --rm` of busybox `true`.
//!
//! Run: `cargo bench -p spear-tests --bench worker_invoke` (about a minute).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use spear_executor_process::worker::{Worker, WorkerSpec};
use spear_plugin_api::executor::InstanceSpec;
use spear_plugin_runtime::engine::WasmEngine;
use spear_plugin_runtime::{LimitValues, Limits, load_file};
use spear_tests::podman::{BUSYBOX, podman, podman_command, program_image};

const DEADLINE: Duration = Duration::from_secs(10);

fn show(what: &str, p: (Duration, Duration)) {
    spear_tests::show_percentiles(what, 36, p);
}

fn main() {
    let spec = WorkerSpec {
        program: PathBuf::from(env!("CARGO_BIN_EXE_spear-worker-fixture")),
        max_payload: 1 << 20,
        ..WorkerSpec::default()
    };
    let mut worker = Worker::spawn(&spec, DEADLINE).unwrap();
    for _ in 0..2_000 {
        worker.invoke("count", b"", DEADLINE).unwrap();
    }
    let hot = spear_tests::percentiles(
        (0..20_000)
            .map(|_| {
                let t = Instant::now();
                worker.invoke("count", b"", DEADLINE).unwrap();
                t.elapsed()
            })
            .collect(),
    );
    show("hot (running worker)", hot);
    let resumed = spear_tests::percentiles(
        (0..2_000)
            .map(|_| {
                worker.pause(true).unwrap();
                let t = Instant::now();
                worker.invoke("count", b"", DEADLINE).unwrap();
                t.elapsed()
            })
            .collect(),
    );
    show("resumed (paused worker)", resumed);
    let start = spear_tests::percentiles(
        (0..100)
            .map(|_| {
                let t = Instant::now();
                let w = Worker::spawn(&spec, DEADLINE).unwrap();
                let took = t.elapsed();
                drop(w);
                took
            })
            .collect(),
    );
    show("start (spawn until hello)", start);
    let fork = spear_tests::percentiles(
        (0..200)
            .map(|_| {
                let t = Instant::now();
                assert!(
                    std::process::Command::new("/bin/true")
                        .status()
                        .unwrap()
                        .success()
                );
                t.elapsed()
            })
            .collect(),
    );
    show("baseline: fork + exec /bin/true", fork);
    println!(
        "ratios (p50): fork+exec/hot {:.0}x, start/hot {:.0}x, resumed/hot {:.1}x, \
         fork+exec/resumed {:.1}x",
        fork.0.as_secs_f64() / hot.0.as_secs_f64(),
        start.0.as_secs_f64() / hot.0.as_secs_f64(),
        resumed.0.as_secs_f64() / hot.0.as_secs_f64(),
        fork.0.as_secs_f64() / resumed.0.as_secs_f64()
    );
    containers();
}

/// The same worker in a container, through the `container` executor.
fn containers() {
    let socket = &podman().socket;
    let engine = WasmEngine::new().unwrap();
    let limits = Arc::new(Limits::new(LimitValues::default()));
    let plugin = load_file(
        &spear_tests::guest("native", "container.so"),
        &engine,
        &limits,
    )
    .unwrap();
    let mut x = plugin.executor().unwrap();
    x.configure(&format!(r#"{{"socket": "{socket}"}}"#))
        .unwrap();
    let spec = InstanceSpec {
        instance_id: format!("bench-{}", std::process::id()),
        task: "worker-bench".into(),
        entry: program_image(
            Path::new(env!("CARGO_BIN_EXE_spear-worker-fixture")),
            "spear-worker-fixture",
        ),
        args: vec!["/worker".into()],
        ..InstanceSpec::default()
    };
    let h = x.start_instance(&spec).unwrap();
    for _ in 0..2_000 {
        x.invoke(&h, "count", b"", 10_000).unwrap();
    }
    let hot = spear_tests::percentiles(
        (0..10_000)
            .map(|_| {
                let t = Instant::now();
                x.invoke(&h, "count", b"", 10_000).unwrap();
                t.elapsed()
            })
            .collect(),
    );
    let resumed = spear_tests::percentiles(
        (0..50)
            .map(|_| {
                x.pause_instance(&h, true).unwrap();
                let t = Instant::now();
                x.invoke(&h, "count", b"", 10_000).unwrap();
                t.elapsed()
            })
            .collect(),
    );
    x.stop_instance(&h).unwrap();
    show("container hot (running worker)", hot);
    show("container resumed (frozen worker)", resumed);
    let start = spear_tests::percentiles(
        (0..10)
            .map(|_| {
                let t = Instant::now();
                let h = x.start_instance(&spec).unwrap();
                let took = t.elapsed();
                x.stop_instance(&h).unwrap();
                took
            })
            .collect(),
    );
    show("container start (until hello)", start);
    let run = spear_tests::percentiles(
        (0..10)
            .map(|_| {
                let t = Instant::now();
                let out = podman_command()
                    .args(["run", "--rm", "--network", "none", BUSYBOX, "true"])
                    .output()
                    .unwrap();
                assert!(
                    out.status.success(),
                    "{}",
                    String::from_utf8_lossy(&out.stderr)
                );
                t.elapsed()
            })
            .collect(),
    );
    show("baseline: podman run --rm busybox true", run);
    println!(
        "ratios (p50): podman run/container hot {:.0}x, container start/hot {:.0}x, \
         container resumed/hot {:.0}x, container start/resumed {:.1}x",
        run.0.as_secs_f64() / hot.0.as_secs_f64(),
        start.0.as_secs_f64() / hot.0.as_secs_f64(),
        resumed.0.as_secs_f64() / hot.0.as_secs_f64(),
        start.0.as_secs_f64() / resumed.0.as_secs_f64()
    );
}
