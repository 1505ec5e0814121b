//! Placement benchmarks: throughput and per-call latency of every plugin form, against the plain
//! in-process Rust implementation measured in the same run; and hot-swap latency under load.
//!
//! Run: `cargo bench -p spear-tests --bench placement` (add `-- quick` for a short run, or
//! `-- swaps` / `-- place` for one part). Results are kept in `docs/benchmarks.md`.
//!
//! A bench binary rather than criterion: the targets are stated as placements per second, p50/p99
//! per call and ratios to the in-process baseline, which this prints directly.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use spear_plugin_api::{Decision, Request, Resources, Strategy};
use spear_plugin_runtime::engine::WasmEngine;
use spear_plugin_runtime::instance::StrategyInstance;
use spear_plugin_runtime::{LimitValues, Limits, PluginHost, load_file};
use spear_tests::{Sandbox, guest, host_config, targets};

/// Requests that need nothing, so a long run never fills the targets up and every call decides.
fn requests(first: u64, n: u64) -> Vec<Request> {
    (first..first + n)
        .map(|id| {
            let mut r = spear_tests::request(id);
            r.needs = Resources::default();
            r
        })
        .collect()
}

struct Measured {
    placements_per_s: f64,
    p50_us: f64,
    p99_us: f64,
}

/// Call `place` for `duration` (after a warm-up), timing each call.
fn measure(batch: u64, duration: Duration, mut place: impl FnMut(&[Request]) -> usize) -> Measured {
    let pool: Vec<Vec<Request>> = (0..64).map(|i| requests(i * batch, batch)).collect();
    let warm = Instant::now();
    let mut i = 0;
    while warm.elapsed() < duration / 5 {
        place(&pool[i % pool.len()]);
        i += 1;
    }
    let mut samples = Vec::with_capacity(1 << 16);
    let start = Instant::now();
    let mut placed = 0usize;
    while start.elapsed() < duration {
        let t = Instant::now();
        placed += place(&pool[i % pool.len()]);
        samples.push(t.elapsed());
        i += 1;
    }
    let elapsed = start.elapsed().as_secs_f64();
    samples.sort_unstable();
    let pct = |p: f64| {
        samples[((samples.len() as f64 * p) as usize).min(samples.len() - 1)].as_secs_f64() * 1e6
    };
    Measured {
        placements_per_s: placed as f64 / elapsed,
        p50_us: pct(0.50),
        p99_us: pct(0.99),
    }
}

fn baseline(strategy: &str) -> Box<dyn Strategy> {
    match strategy {
        "round-robin" => Box::new(spear_strategy_round_robin::RoundRobin::default()),
        _ => Box::new(spear_strategy_least_connections::LeastConnections::default()),
    }
}

fn assigned(d: &[Decision]) -> usize {
    d.iter()
        .filter(|d| matches!(d, Decision::Assign(_)))
        .count()
}

fn place_benchmarks(duration: Duration) {
    let engine = WasmEngine::new().unwrap();
    let limits = Arc::new(Limits::new(LimitValues {
        call_timeout_ms: 1000,
        ..LimitValues::default()
    }));
    println!(
        "\n## Placement: one call = one batch; ratio = placements/s of the in-process baseline ÷ this form's\n"
    );
    println!(
        "| strategy | targets | batch | form | placements/s | p50 µs/call | p99 µs/call | baseline ÷ form |"
    );
    println!("|---|---:|---:|---|---:|---:|---:|---:|");
    for strategy in ["round-robin", "least-connections"] {
        for n in [100u64, 1_000, 10_000] {
            for batch in [1u64, 64] {
                let view = targets(n);
                let mut base = baseline(strategy);
                base.upsert(view.clone());
                let b = measure(batch, duration, |r| assigned(&base.place(r)));
                let row = |form: &str, m: &Measured| {
                    println!(
                        "| {strategy} | {n} | {batch} | {form} | {:.0} | {:.2} | {:.2} | {:.2} |",
                        m.placements_per_s,
                        m.p50_us,
                        m.p99_us,
                        b.placements_per_s / m.placements_per_s
                    );
                };
                row("in-process Rust", &b);
                for (form, file) in [
                    ("native", format!("{strategy}.so")),
                    ("component", format!("{strategy}.wasm")),
                    ("extism", format!("{strategy}.wasm")),
                ] {
                    let dir = if form == "native" { "native" } else { form };
                    let plugin = load_file(&guest(dir, &file), &engine, &limits).unwrap();
                    let mut s: Box<dyn StrategyInstance> = plugin.new_strategy().unwrap();
                    s.configure("{}").unwrap();
                    for chunk in view.chunks(256) {
                        s.upsert(chunk).unwrap();
                    }
                    let m = measure(batch, duration, |r| assigned(&s.place(r).unwrap()));
                    row(form, &m);
                }
                // The component behind the host's guard: validation, fallback accounting, metrics.
                if strategy == "least-connections" && n == 1_000 {
                    let sb = Sandbox::new();
                    sb.install("component", "least-connections.wasm", "lc.wasm");
                    sb.write_config(&host_config(
                        false,
                        "[scheduler]\nstrategy = \"least-connections\"\n",
                    ));
                    let host = PluginHost::start(&sb.config()).unwrap();
                    host.strategy().upsert(view.clone());
                    let m = measure(batch, duration, |r| assigned(&host.strategy().place(r)));
                    row("component via host slot", &m);
                    assert_eq!(host.telemetry().fallback_decisions_of("scheduler"), 0);
                }
            }
        }
    }
}

fn swap_benchmarks(swaps: usize, file_swaps: usize) {
    let sb = Sandbox::new();
    sb.install("component", "round-robin.wasm", "rr.wasm");
    sb.install("component", "least-connections.wasm", "lc.wasm");
    let config = |s: &str| host_config(true, &format!("[scheduler]\nstrategy = \"{s}\"\n"));
    sb.write_config(&config("round-robin"));
    let host = PluginHost::start(&sb.config()).unwrap();
    let _watch = host.watch().unwrap();
    host.strategy().upsert(targets(1000));

    let stop = Arc::new(AtomicBool::new(false));
    let decided = Arc::new(AtomicU64::new(0));
    let placer = {
        let (host, stop, decided) = (host.clone(), stop.clone(), decided.clone());
        std::thread::spawn(move || {
            let mut id = 0;
            while !stop.load(Ordering::Relaxed) {
                let d = host.strategy().place(&requests(id, 16));
                decided.fetch_add(assigned(&d) as u64, Ordering::Relaxed);
                id += 16;
            }
        })
    };
    let wait_for = |name: &str, sha: Option<&str>| {
        let start = Instant::now();
        loop {
            if let Some(a) = host.strategy().active()
                && a.name == name
                && sha.is_none_or(|s| s == a.sha256)
            {
                return start.elapsed();
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "swap to {name} never became visible"
            );
            std::thread::sleep(Duration::from_micros(200));
        }
    };
    let mut config_latency = Vec::new();
    for i in 0..swaps {
        let name = if i % 2 == 0 {
            "least-connections"
        } else {
            "round-robin"
        };
        sb.write_config(&config(name));
        config_latency.push(wait_for(name, None));
    }
    let mut file_latency = Vec::new();
    let rr = sb.plugins().join("rr.wasm");
    for i in 0..file_swaps {
        // Alternate the active file between two builds of round-robin (component ↔ Extism).
        let (form, file) = if i % 2 == 0 {
            ("extism", "round-robin.wasm")
        } else {
            ("component", "round-robin.wasm")
        };
        let bytes = std::fs::read(guest(form, file)).unwrap();
        let sha = spear_plugin_runtime::plugin::sha256_hex(&bytes);
        if i == 0 {
            sb.write_config(&config("round-robin"));
            wait_for("round-robin", None);
        }
        let tmp = sb.plugins().join(".rr.tmp");
        std::fs::write(&tmp, &bytes).unwrap();
        let t = Instant::now();
        std::fs::rename(&tmp, &rr).unwrap();
        wait_for("round-robin", Some(&sha));
        file_latency.push(t.elapsed());
    }
    stop.store(true, Ordering::Relaxed);
    placer.join().unwrap();
    let stats = |v: &mut Vec<Duration>| {
        v.sort_unstable();
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        (
            ms(v[v.len() / 2]),
            ms(v[(v.len() * 99 / 100).min(v.len() - 1)]),
            ms(*v.last().unwrap()),
        )
    };
    let (c50, c99, cmax) = stats(&mut config_latency);
    let (f50, f99, fmax) = stats(&mut file_latency);
    println!("\n## Hot swap under continuous placement (1,000 targets, batches of 16)\n");
    println!("| swap | count | write → new strategy answering p50 ms | p99 ms | max ms |");
    println!("|---|---:|---:|---:|---:|");
    println!(
        "| config edit (select another registered strategy) | {swaps} | {c50:.1} | {c99:.1} | {cmax:.1} |"
    );
    println!(
        "| file replaced (compile + self-test + swap) | {file_swaps} | {f50:.1} | {f99:.1} | {fmax:.1} |"
    );
    println!(
        "\ndecisions made: {}; made by the fallback (failed): {}; plugin failures: {}",
        decided.load(Ordering::Relaxed),
        host.telemetry().fallback_decisions_of("scheduler"),
        host.telemetry().failures_of("round-robin")
            + host.telemetry().failures_of("least-connections"),
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "quick");
    let only = |part: &str| {
        !args.iter().any(|a| a == "place" || a == "swaps") || args.iter().any(|a| a == part)
    };
    if only("place") {
        place_benchmarks(if quick {
            Duration::from_millis(200)
        } else {
            Duration::from_secs(1)
        });
    }
    if only("swaps") {
        if quick {
            swap_benchmarks(20, 4)
        } else {
            swap_benchmarks(1000, 40)
        }
    }
}
