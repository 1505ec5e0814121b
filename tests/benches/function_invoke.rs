//! Benchmark of live function instances (`spear_executor_wasm::functions`): a plain `main` (no
//! harness) printing latencies, rates and ratios against baselines of this run.
//!
//! The guest is `tests/fixtures/function-counter` (world `spear:function/function`); each
//! invocation calls its `count` function (which increments a counter kept in the instance and
//! answers it as text) with an empty payload, in process:
//!
//! - **hot**: `invoke` on a live instance (the redesign's hot path);
//! - **warm**: a new instance of the already compiled and linked binary, `init`, then the
//!   invocation (what each call would cost without live instances);
//! - **cold**: compile the component, instantiate, `init`, invoke;
//! - **throughput**: hot invocations per second with 2 threads, each on its own instance;
//!
//! Calls are async (awaited on a current-thread tokio runtime, as the Spearlet's tasks will).
//! - **baseline**: `fork` + `exec` of `/bin/true` through `std::process::Command`.
//!
//! Run: `cargo bench -p spear-tests --bench function_invoke` (about 15 s).

use std::time::{Duration, Instant};

use spear_executor_wasm::functions::{FunctionHost, FunctionLimits};
use spear_tests::guest;

const DEADLINE: Duration = Duration::from_secs(10);

fn show(what: &str, p: (Duration, Duration)) {
    spear_tests::show_percentiles(what, 44, p);
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run());
}

async fn run() {
    let bytes = std::fs::read(guest("component", "function-counter.wasm")).unwrap();
    let host = FunctionHost::new(FunctionLimits {
        max_instances: 16,
        max_memory_mb: 64,
    })
    .unwrap();
    let binary = host.compile(&bytes).unwrap();

    // Hot: one live instance.
    let mut instance = host.instantiate(&binary, "{}", DEADLINE).await.unwrap();
    for _ in 0..10_000 {
        instance.invoke("count", b"", DEADLINE).await.unwrap();
    }
    let mut hot = Vec::with_capacity(100_000);
    for _ in 0..100_000 {
        let t = Instant::now();
        instance.invoke("count", b"", DEADLINE).await.unwrap();
        hot.push(t.elapsed());
    }
    let hot = spear_tests::percentiles(hot);
    show("hot (live instance)", hot);

    // Warm: a new instance per call, from the compiled binary.
    let mut warm = Vec::with_capacity(500);
    for _ in 0..500 {
        let t = Instant::now();
        let mut i = host.instantiate(&binary, "{}", DEADLINE).await.unwrap();
        i.invoke("count", b"", DEADLINE).await.unwrap();
        warm.push(t.elapsed());
    }
    let warm = spear_tests::percentiles(warm);
    show("warm (instantiate + init + invoke)", warm);

    // Cold: compile too.
    let mut cold = Vec::with_capacity(10);
    for _ in 0..10 {
        let t = Instant::now();
        let b = host.compile(&bytes).unwrap();
        let mut i = host.instantiate(&b, "{}", DEADLINE).await.unwrap();
        i.invoke("count", b"", DEADLINE).await.unwrap();
        cold.push(t.elapsed());
    }
    let cold = spear_tests::percentiles(cold);
    show("cold (compile + instantiate + init + invoke)", cold);

    // Throughput: 2 threads, an instance each, for one second.
    let run_for = Duration::from_secs(1);
    let total: u64 = std::thread::scope(|s| {
        let workers: Vec<_> = (0..2)
            .map(|_| {
                let (host, binary) = (&host, &binary);
                s.spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .unwrap();
                    rt.block_on(async {
                        let mut i = host.instantiate(binary, "{}", DEADLINE).await.unwrap();
                        let start = Instant::now();
                        let mut n = 0u64;
                        while start.elapsed() < run_for {
                            for _ in 0..256 {
                                i.invoke("count", b"", DEADLINE).await.unwrap();
                            }
                            n += 256;
                        }
                        n
                    })
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).sum()
    });
    println!(
        "{:<44} {:>12.0} invocations/s",
        "throughput (2 threads, hot)",
        total as f64 / run_for.as_secs_f64()
    );

    // Baseline: fork + exec of /bin/true.
    let fork: Vec<Duration> = (0..200)
        .map(|_| {
            let t = Instant::now();
            let status = std::process::Command::new("/bin/true").status().unwrap();
            assert!(status.success());
            t.elapsed()
        })
        .collect();
    let fork = spear_tests::percentiles(fork);
    show("baseline: fork + exec /bin/true", fork);
    let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64();
    println!(
        "ratios (p50): warm/hot {:.0}x, cold/hot {:.0}x, fork+exec/hot {:.0}x",
        ratio(warm.0, hot.0),
        ratio(cold.0, hot.0),
        ratio(fork.0, hot.0)
    );
}
