//! The example `pack` strategy of `examples/` in each language, side by side: load (compile) time
//! and placement throughput and latency per call, with the ratio to the Rust component measured
//! in the same run.
//!
//! Run: `examples/build.sh && cargo bench -p spear-tests --bench examples` (add `-- quick` for a
//! short run). Results are kept in `docs/benchmarks.md`.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use spear_plugin_api::{Decision, Request, Resources};
use spear_plugin_runtime::engine::WasmEngine;
use spear_plugin_runtime::instance::StrategyInstance;
use spear_plugin_runtime::{LimitValues, Limits, load_file};
use spear_tests::targets;

const FILES: &[(&str, &str)] = &[
    ("Rust component (baseline)", "pack-rust.wasm"),
    ("Rust native", "pack-native.so"),
    ("Rust Extism", "pack-rust-extism.wasm"),
    ("C component", "pack-c.wasm"),
    ("AssemblyScript Extism", "pack-assemblyscript.wasm"),
    ("Python component", "pack-python.wasm"),
    ("JavaScript component", "pack-js.wasm"),
];

/// Requests that need nothing, so every call decides however long the run.
fn requests(first: u64, n: u64) -> Vec<Request> {
    (first..first + n)
        .map(|id| {
            let mut r = spear_tests::request(id);
            r.needs = Resources::default();
            r
        })
        .collect()
}

/// (placements/s, p50 µs, p99 µs) of `place` over `duration`, after a warm-up of a fifth of it.
fn measure(batch: u64, duration: Duration, s: &mut dyn StrategyInstance) -> (f64, f64, f64) {
    let pool: Vec<Vec<Request>> = (0..16).map(|i| requests(i * batch, batch)).collect();
    let mut place = |r: &[Request]| {
        s.place(r)
            .unwrap()
            .iter()
            .filter(|d| matches!(d, Decision::Assign(_)))
            .count()
    };
    let warm = Instant::now();
    let mut i = 0;
    while warm.elapsed() < duration / 5 {
        place(&pool[i % pool.len()]);
        i += 1;
    }
    let (mut samples, mut placed, start) = (Vec::new(), 0usize, Instant::now());
    while start.elapsed() < duration {
        let t = Instant::now();
        placed += place(&pool[i % pool.len()]);
        samples.push(t.elapsed());
        i += 1;
    }
    samples.sort_unstable();
    let pct = |p: f64| {
        samples[((samples.len() as f64 * p) as usize).min(samples.len() - 1)].as_secs_f64() * 1e6
    };
    (
        placed as f64 / start.elapsed().as_secs_f64(),
        pct(0.5),
        pct(0.99),
    )
}

fn main() {
    let quick = std::env::args().any(|a| a == "quick");
    let duration = Duration::from_millis(if quick { 300 } else { 2000 });
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/examples");
    let engine = WasmEngine::new().unwrap();
    // Generous limits: this measures the languages, not the deadline.
    let limits = Arc::new(Limits::new(LimitValues {
        call_timeout_ms: 10_000,
        setup_timeout_ms: 60_000,
        memory_limit_mb: 512,
        ..LimitValues::default()
    }));
    println!("\n## Example strategies by language (`pack`, max_active unset)\n");
    println!(
        "| language / form | file KiB | load ms | targets | batch | placements/s | p50 µs/call | p99 µs/call | baseline ÷ this |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut baseline = std::collections::BTreeMap::new();
    for &(label, file) in FILES {
        let path = dir.join(file);
        let Ok(meta) = std::fs::metadata(&path) else {
            println!("| {label} | missing: run examples/build.sh | | | | | | | |");
            continue;
        };
        // Load = read, detect, compile, instantiate, `info`: what a host pays per file version.
        let t = Instant::now();
        let plugin = load_file(&path, &engine, &limits).unwrap();
        let load_ms = t.elapsed().as_secs_f64() * 1e3;
        for n in [100u64, 1_000] {
            for batch in [1u64, 64] {
                let mut s = plugin.new_strategy().unwrap();
                s.configure("{}").unwrap();
                for chunk in targets(n).chunks(256) {
                    s.upsert(chunk).unwrap();
                }
                let (per_s, p50, p99) = measure(batch, duration, s.as_mut());
                let base = *baseline.entry((n, batch)).or_insert(per_s);
                println!(
                    "| {label} | {} | {load_ms:.0} | {n} | {batch} | {per_s:.0} | {p50:.1} | {p99:.1} | {:.2} |",
                    meta.len() / 1024,
                    base / per_s
                );
            }
        }
    }
}
