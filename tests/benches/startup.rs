//! Host start-up with the built-in plugins as WASM components: with an empty compiled-component
//! cache (every file compiled by Cranelift, the baseline) against a warm one (machine code loaded
//! from `plugins.cache_dir`), in the same run.
//!
//! Run: `cargo bench -p spear-tests --bench startup`. Results are kept in `docs/benchmarks.md`.

use std::time::{Duration, Instant};

use spear_plugin_runtime::PluginHost;
use spear_tests::{Sandbox, host_config};

const BUILT_IN: &[&str] = &[
    "round-robin.wasm",
    "least-connections.wasm",
    "affinity.wasm",
    "adaptive.wasm",
    "idle-time.wasm",
    "memory-pressure.wasm",
    "error-rate.wasm",
];

/// Start a host over the built-in components, selecting a strategy and a policy; returns how long
/// `PluginHost::start` took.
fn start(sb: &Sandbox) -> Duration {
    let begin = Instant::now();
    let host = PluginHost::start(&sb.config()).unwrap();
    let took = begin.elapsed();
    assert_eq!(host.plugins().len(), BUILT_IN.len());
    took
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort_unstable();
    v[v.len() / 2]
}

fn main() {
    let sb = Sandbox::new();
    for file in BUILT_IN {
        sb.install("component", file, file);
    }
    sb.write_config(&host_config(
        false,
        "[scheduler]\nstrategy = \"least-connections\"\n[reclaimer]\npolicy = \"idle-time\"\n",
    ));
    let cache = sb.plugins().join(".cache");
    let runs = 5;
    let cold: Vec<Duration> = (0..runs)
        .map(|_| {
            let _ = std::fs::remove_dir_all(&cache);
            start(&sb)
        })
        .collect();
    let warm: Vec<Duration> = (0..runs).map(|_| start(&sb)).collect();
    let (cold, warm) = (median(cold), median(warm));
    println!(
        "start-up with {} built-in components (median of {runs}):",
        BUILT_IN.len()
    );
    println!(
        "  cold cache (compile):  {:>8.1} ms",
        cold.as_secs_f64() * 1e3
    );
    println!(
        "  warm cache (load):     {:>8.1} ms",
        warm.as_secs_f64() * 1e3
    );
    println!(
        "  ratio cold / warm:     {:>8.1}x",
        cold.as_secs_f64() / warm.as_secs_f64()
    );
}
