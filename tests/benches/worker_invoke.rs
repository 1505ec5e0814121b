//! Benchmark of a process worker (the worker protocol, docs/workers.md): a plain `main` (no
//! harness) printing latencies and ratios against a baseline of this run.
//!
//! The worker is `tests/src/bin/spear-worker-fixture.rs` (a Rust program speaking the protocol);
//! each invocation calls its `count` function with an empty payload:
//!
//! - **hot**: `invoke` on a running worker (two frames each way over its pipes);
//! - **start**: spawning a worker until its hello;
//! - **baseline**: `fork` + `exec` of `/bin/true` through `std::process::Command`.
//!
//! Run: `cargo bench -p spear-tests --bench worker_invoke` (a few seconds).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use spear_executor_process::worker::{Worker, WorkerSpec};

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
        "ratios (p50): fork+exec/hot {:.0}x, start/hot {:.0}x",
        fork.0.as_secs_f64() / hot.0.as_secs_f64(),
        start.0.as_secs_f64() / hot.0.as_secs_f64()
    );
}
