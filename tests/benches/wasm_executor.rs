//! Benchmark of the `wasm` executor: a plain `main` (no harness) printing latencies and rates.
//!
//! The guest is the `noop` mode of `tests/fixtures/wasi-echo`: a Rust WASI command that returns at
//! once (its std runtime still starts and reads its arguments). Each figure is measured through the
//! rlib (`spear_executor_wasm::WasmExecutor`, in process) and through the native plugin
//! (`wasm.so` loaded by the plugin runtime, every call crossing the ABI as JSON):
//!
//! - **warm**: `start` + `wait` of a binary whose program is cached and pre-linked (the steady
//!   state: only instantiation from the pooling allocator, the run and the hand-offs remain);
//! - **cold from the cache**: the same after `unprepare()`, which drops the pre-linked
//!   `InstancePre`/`CommandPre` but keeps the compiled code, so each start links the module
//!   against WASI again and then instantiates (compilation itself is never measured; rlib only);
//! - **throughput**: executions per second with 2 threads each looping `start` + `wait`;
//! - **baseline**: `fork` + `exec` of `/bin/true` through `std::process::Command`, in this run.
//!
//! Run: `cargo bench -p spear-tests --bench wasm_executor` (about half a minute).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use spear_executor_wasm::WasmExecutor;
use spear_plugin_api::Executor;
use spear_plugin_api::executor::{ExecSpec, ExitStatus};
use spear_plugin_runtime::engine::WasmEngine;
use spear_plugin_runtime::{LimitValues, Limits, load_file};
use spear_tests::guest;

static IDS: AtomicU64 = AtomicU64::new(0);

fn spec(artifact: &Path) -> ExecSpec {
    ExecSpec {
        execution_id: format!("bench-{}", IDS.fetch_add(1, Ordering::Relaxed)),
        task: "noop".into(),
        artifact: Some(artifact.display().to_string()),
        args: vec!["noop".into()],
        ..ExecSpec::default()
    }
}

/// One `start` + `wait` (+ `destroy`, outside the timing); its latency.
fn once(x: &dyn Executor, artifact: &Path) -> Duration {
    let s = spec(artifact);
    let t = Instant::now();
    let h = x.start(&s).expect("start");
    let r = x.wait(&h, 60_000).expect("wait").expect("finished");
    let took = t.elapsed();
    assert_eq!(r.status, ExitStatus::Exited(0), "{r:?}");
    x.destroy(&h).expect("destroy");
    took
}

struct Summary {
    p50: Duration,
    p99: Duration,
}

fn summarize(mut samples: Vec<Duration>) -> Summary {
    samples.sort();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q) as usize];
    Summary {
        p50: at(0.50),
        p99: at(0.99),
    }
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn report(label: &str, s: &Summary, baseline: Duration) {
    println!(
        "{label:<46} p50 {:>8.1} µs   p99 {:>8.1} µs   p50 = {:.3} × fork+exec",
        micros(s.p50),
        micros(s.p99),
        s.p50.as_secs_f64() / baseline.as_secs_f64()
    );
}

fn warm(x: &dyn Executor, artifact: &Path, n: usize) -> Summary {
    for _ in 0..200 {
        once(x, artifact);
    }
    summarize((0..n).map(|_| once(x, artifact)).collect())
}

fn cold(x: &WasmExecutor, artifact: &Path, n: usize) -> Summary {
    once(x, artifact);
    summarize(
        (0..n)
            .map(|_| {
                x.unprepare();
                once(x, artifact)
            })
            .collect(),
    )
}

/// Executions per second with `threads` threads looping for `secs`.
fn throughput(x: Arc<dyn Executor>, artifact: &Path, threads: usize, secs: f64) -> f64 {
    let stop = Instant::now() + Duration::from_secs_f64(secs);
    let started = Instant::now();
    let done: u64 = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                let x = x.clone();
                scope.spawn(move || {
                    let mut n = 0u64;
                    while Instant::now() < stop {
                        once(&*x, artifact);
                        n += 1;
                    }
                    n
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().expect("worker")).sum()
    });
    done as f64 / started.elapsed().as_secs_f64()
}

fn baseline(n: usize) -> Summary {
    let run = || {
        let t = Instant::now();
        let status = std::process::Command::new("/bin/true")
            .status()
            .expect("/bin/true");
        assert!(status.success());
        t.elapsed()
    };
    for _ in 0..20 {
        run();
    }
    summarize((0..n).map(|_| run()).collect())
}

fn main() {
    if std::env::var_os("RUST_BACKTRACE").is_some() {
        // The rlib shares the host's wasmtime features, whose errors capture a Rust backtrace when
        // this is set (and a WASI exit is such an error); wasm.so is built without that feature.
        // Measure both as deployed.
        // SAFETY: no other thread runs yet.
        unsafe { std::env::remove_var("RUST_BACKTRACE") };
        println!("(RUST_BACKTRACE unset for this run)");
    }
    let forms: [(&str, PathBuf); 2] = [
        ("wasip1 module", guest("wasip1", "wasi-echo.wasm")),
        ("wasip2 component", guest("component", "wasi-echo.wasm")),
    ];
    let base = baseline(500);
    println!("wasm executor benchmark (guest: wasi-echo noop; 2 cores)\n");
    report("baseline: fork+exec /bin/true", &base, base.p50);

    let rlib: Arc<WasmExecutor> = Arc::new(WasmExecutor::default());
    let engine = WasmEngine::new().expect("engine");
    let limits = Arc::new(Limits::new(LimitValues::default()));
    let plugin = load_file(&guest("native", "wasm.so"), &engine, &limits).expect("load wasm.so");
    let mut native = plugin.executor().expect("executor");
    native.configure("{}").expect("configure");
    let native: Arc<dyn Executor> = Arc::from(native);

    for (form, path) in &forms {
        println!("\n{form}");
        let t = Instant::now();
        once(&*rlib, path);
        println!(
            "{:<46} {:>8.1} ms (compile + link + run, once)",
            "first start (rlib)",
            t.elapsed().as_secs_f64() * 1e3
        );
        report(
            "warm start+wait (rlib)",
            &warm(&*rlib, path, 5000),
            base.p50,
        );
        report(
            "warm start+wait (wasm.so)",
            &warm(&*native, path, 5000),
            base.p50,
        );
        report(
            "cold from the cache: relink+run (rlib)",
            &cold(&rlib, path, 300),
            base.p50,
        );
        let rate = throughput(rlib.clone(), path, 2, 2.0);
        println!("{:<46} {rate:>8.0} /s", "throughput, 2 threads (rlib)");
        let rate = throughput(native.clone(), path, 2, 2.0);
        println!("{:<46} {rate:>8.0} /s", "throughput, 2 threads (wasm.so)");
    }
    let fork_rate = 1.0 / base.p50.as_secs_f64();
    println!("\n(one thread of fork+exec at its p50 would be {fork_rate:.0} /s)");
    let s = rlib.cache_stats();
    println!("rlib module cache: {} hits, {} misses", s.hits, s.misses);
}
