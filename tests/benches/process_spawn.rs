//! Process executor spawn latency: `start` + `wait` of `/bin/true` through the `process` executor
//! loaded from its `.so` (what a Spearlet calls), beside a bare fork+exec of `/bin/true`
//! (`std::process::Command::status`) measured in the same run.
//!
//! Run: `cargo bench -p spear-tests --bench process_spawn`. Results are kept in
//! `docs/benchmarks.md`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use spear_plugin_api::executor::{ExecSpec, ExitStatus};
use spear_plugin_runtime::engine::WasmEngine;
use spear_plugin_runtime::{LimitValues, Limits, load_file};
use spear_tests::guest;

const RUNS: usize = 500;

fn percentiles(mut samples: Vec<Duration>) -> (f64, f64) {
    samples.sort_unstable();
    let pct = |p: f64| {
        samples[((samples.len() as f64 * p) as usize).min(samples.len() - 1)].as_secs_f64() * 1e6
    };
    (pct(0.50), pct(0.99))
}

fn main() {
    let engine = WasmEngine::new().expect("engine");
    let limits = Arc::new(Limits::new(LimitValues::default()));
    let plugin = load_file(&guest("native", "process.so"), &engine, &limits).expect("process.so");
    let mut x = plugin.executor().expect("executor");
    x.configure("{}").expect("configure");

    let mut baseline = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        let t = Instant::now();
        let status = std::process::Command::new("/bin/true").status().unwrap();
        baseline.push(t.elapsed());
        assert!(status.success());
    }
    let mut executor = Vec::with_capacity(RUNS);
    for i in 0..RUNS {
        let spec = ExecSpec {
            execution_id: format!("bench-{i}"),
            entry: "/bin/true".into(),
            ..ExecSpec::default()
        };
        let t = Instant::now();
        let h = x.start(&spec).unwrap();
        let r = x.wait(&h, 10_000).unwrap().expect("finished");
        executor.push(t.elapsed());
        assert_eq!(r.status, ExitStatus::Exited(0));
        x.destroy(&h).unwrap();
    }
    let (b50, b99) = percentiles(baseline);
    let (e50, e99) = percentiles(executor);
    println!("| case | runs | p50 µs | p99 µs | ÷ baseline p50 |");
    println!("|---|---:|---:|---:|---:|");
    println!("| fork+exec /bin/true (baseline) | {RUNS} | {b50:.0} | {b99:.0} | 1.00 |");
    println!(
        "| process executor start+wait /bin/true | {RUNS} | {e50:.0} | {e99:.0} | {:.2} |",
        e50 / b50
    );
}
