//! The `memory` storage backend in each form, through the same trait calls: linked in process (the
//! baseline), as a native library through the runtime, and as a WASM component through the
//! runtime (every call a guest call, with its budget, copying keys and values across). Prints
//! operations per second for single puts, gets, scans of 100 rows and batches of 64 puts behind a
//! check, the batches' commit latency (p50/p99), and each form's ratio to the in-process baseline.
//!
//! Run: `cargo bench -p spear-tests --bench storage_forms` (`-- quick` for a short run). Results
//! are kept in `docs/benchmarks.md`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use spear_plugin_api::StorageBackend;
use spear_plugin_api::memory_store::MemoryStore;
use spear_plugin_api::storage::BatchOp;
use spear_plugin_runtime::engine::WasmEngine;
use spear_plugin_runtime::{LimitValues, Limits, load_file};
use spear_tests::{guest, percentiles};

/// What one form measured: operations per second of each kind, and the batch latencies.
struct Measured {
    put: f64,
    get: f64,
    scan: f64,
    batch: f64,
    batch_p50: Duration,
    batch_p99: Duration,
}

fn opened(form: &str) -> Box<dyn StorageBackend> {
    let mut store: Box<dyn StorageBackend> = match form {
        "in-process" => Box::new(MemoryStore::default()),
        _ => {
            let engine = WasmEngine::new().unwrap();
            // Room for the bench's data in the component's linear memory.
            let limits = Arc::new(Limits::new(LimitValues {
                memory_limit_mb: 512,
                ..LimitValues::default()
            }));
            let file = match form {
                "native" => guest("native", "memory.so"),
                _ => guest("component", "memory.wasm"),
            };
            load_file(&file, &engine, &limits)
                .unwrap()
                .storage()
                .unwrap()
        }
    };
    store.open("{}").unwrap();
    store
}

fn rate(n: usize, elapsed: Duration) -> f64 {
    n as f64 / elapsed.as_secs_f64()
}

fn measure(form: &str, n: usize) -> Measured {
    let s = opened(form);
    let value = vec![7u8; 256];
    let key = |i: usize| format!("exec/{i:010}").into_bytes();

    let start = Instant::now();
    for i in 0..n {
        s.put(&key(i), &value).unwrap();
    }
    let put = rate(n, start.elapsed());

    let start = Instant::now();
    for i in 0..n {
        assert!(s.get(&key((i * 7919) % n)).unwrap().is_some());
    }
    let get = rate(n, start.elapsed());

    let scans = n / 100;
    let start = Instant::now();
    for i in 0..scans {
        let after = key(i * 100);
        assert_eq!(
            s.scan(b"exec/", Some(&after), 100).unwrap().len(),
            100.min(n - i * 100 - 1)
        );
    }
    let scan = rate(scans, start.elapsed());

    let batches = n / 64;
    let mut latencies = Vec::with_capacity(batches);
    let start = Instant::now();
    for b in 0..batches {
        let mut ops = vec![BatchOp::Check {
            key: key(b),
            value: Some(value.clone()),
        }];
        ops.extend((0..64).map(|i| BatchOp::Put {
            key: format!("done/{b:08}/{i:02}").into_bytes(),
            value: value.clone(),
        }));
        let t = Instant::now();
        assert!(s.batch(&ops).unwrap());
        latencies.push(t.elapsed());
    }
    let batch = rate(batches, start.elapsed());
    let (batch_p50, batch_p99) = percentiles(latencies);
    Measured {
        put,
        get,
        scan,
        batch,
        batch_p50,
        batch_p99,
    }
}

fn main() {
    let quick = std::env::args().any(|a| a == "quick");
    let (n, repeats) = if quick { (10_000, 1) } else { (100_000, 5) };
    let forms = ["in-process", "native", "component"];
    // Runs alternate between forms; each cell is the median over the repeats.
    let mut runs: Vec<Vec<Measured>> = forms.iter().map(|_| Vec::new()).collect();
    for _ in 0..repeats {
        for (i, form) in forms.iter().enumerate() {
            runs[i].push(measure(form, n));
        }
    }
    let median = |v: Vec<f64>| {
        let mut v = v;
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let cell = |runs: &[Measured], f: fn(&Measured) -> f64| median(runs.iter().map(f).collect());
    println!(
        "\n## The `memory` storage backend by form: {n} keys of 256 bytes, median of {repeats}\n"
    );
    println!(
        "| form | puts/s | gets/s | scans of 100/s | batches of 64/s | batch p50 µs | batch p99 µs | ÷ in-process (puts, gets, scans, batches) |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---|");
    let fields: [fn(&Measured) -> f64; 4] = [|m| m.put, |m| m.get, |m| m.scan, |m| m.batch];
    let base: Vec<f64> = fields.iter().map(|f| cell(&runs[0], *f)).collect();
    for (form, r) in forms.iter().zip(&runs) {
        let v: Vec<f64> = fields.iter().map(|f| cell(r, *f)).collect();
        let us = |f: fn(&Measured) -> Duration| {
            median(r.iter().map(|m| f(m).as_secs_f64() * 1e6).collect())
        };
        let ratios: Vec<String> = v
            .iter()
            .zip(&base)
            .map(|(x, b)| format!("{:.3}", x / b))
            .collect();
        println!(
            "| {form} | {:.0} | {:.0} | {:.0} | {:.0} | {:.1} | {:.1} | {} |",
            v[0],
            v[1],
            v[2],
            v[3],
            us(|m| m.batch_p50),
            us(|m| m.batch_p99),
            ratios.join(", ")
        );
    }
    let component = &runs[2];
    let native = &runs[1];
    let ratio = |f: fn(&Measured) -> f64| cell(component, f) / cell(native, f);
    println!(
        "\ncomponent ÷ native: puts {:.3}, gets {:.3}, scans {:.3}, batches {:.3}",
        ratio(|m| m.put),
        ratio(|m| m.get),
        ratio(|m| m.scan),
        ratio(|m| m.batch)
    );
}
