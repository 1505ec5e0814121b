//! Call budgets on a loaded machine: a guest that needs 9 ms of CPU under a 10 ms budget, with two
//! busy-loop processes competing for this machine's cores, must never be failed; a guest that needs
//! 20 ms must always be. Beside each run it prints how many of the same calls a wall-clock deadline
//! of the same 10 ms would have failed (the baseline, measured in the same run).
//!
//! Run: `cargo bench -p spear-tests --bench deadline` (`-- quick` for 1,000 calls instead of
//! 10,000). Results are kept in `docs/benchmarks.md`.

use std::process::{Child, Command};

/// CPU time this thread has used.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid, writable timespec; CLOCK_THREAD_CPUTIME_ID is always supported on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}
use std::time::{Duration, Instant};

use spear_plugin_runtime::PluginHost;
use spear_tests::{Sandbox, host_config, requests, targets};

/// A host whose hostile strategy computes `work` iterations per `place`.
fn host(work: u64, call_timeout_ms: u64) -> (Sandbox, std::sync::Arc<PluginHost>) {
    let sb = Sandbox::new();
    sb.install("component", "hostile.wasm", "hostile.wasm");
    let config = host_config(
        false,
        &format!(
            "[scheduler]\nstrategy = \"hostile\"\n[scheduler.config]\nmode = \"work\"\nwork = {work}\n"
        ),
    )
    .replace(
        "call_timeout_ms = 50",
        &format!("call_timeout_ms = {call_timeout_ms}"),
    )
    .replace(
        "setup_timeout_ms = 5000",
        &format!("setup_timeout_ms = {}", call_timeout_ms.max(5000)),
    )
    .replace("quarantine_after = 3", "quarantine_after = 1000000");
    sb.write_config(&config);
    let host = PluginHost::start(&sb.config()).unwrap();
    host.strategy().upsert(targets(5));
    (sb, host)
}

/// Guest iterations per millisecond of CPU, on the quiet machine (median of 15 calls).
fn calibrate() -> f64 {
    let probe = 20_000_000;
    let (_sb, host) = host(probe, 60_000);
    let mut per_ms: Vec<f64> = (0..15)
        .map(|i| {
            let start = Instant::now();
            host.strategy().place(&requests(i, 1));
            probe as f64 / (start.elapsed().as_secs_f64() * 1e3)
        })
        .collect();
    per_ms.sort_by(f64::total_cmp);
    per_ms[per_ms.len() / 2]
}

struct Hogs(Vec<Child>);

impl Hogs {
    /// Two processes spinning forever.
    fn start() -> Self {
        Self(
            (0..2)
                .map(|_| {
                    Command::new("sh")
                        .args(["-c", "while :; do :; done"])
                        .spawn()
                        .expect("sh")
                })
                .collect(),
        )
    }
}

impl Drop for Hogs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `calls` placements with a guest of `cpu_ms`; returns (failures, calls over `budget_ms` of wall
/// time, p50 and p99 wall time in ms).
fn run(per_ms: f64, cpu_ms: f64, budget_ms: u64, calls: u64) -> (u64, u64, f64, f64) {
    let (_sb, host) = host((per_ms * cpu_ms) as u64, budget_ms);
    let mut walls = Vec::with_capacity(calls as usize);
    let mut cpus = Vec::with_capacity(calls as usize);
    for i in 0..calls {
        host.strategy().upsert(targets(5));
        let (start, cpu) = (Instant::now(), thread_cpu());
        host.strategy().place(&requests(i, 1));
        walls.push(start.elapsed());
        cpus.push(thread_cpu() - cpu);
    }
    cpus.sort_unstable();
    let at =
        |p: f64| cpus[((cpus.len() as f64 * p) as usize).min(cpus.len() - 1)].as_secs_f64() * 1e3;
    println!(
        "  CPU time of a {cpu_ms} ms guest's call under load: p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms",
        at(0.5),
        at(0.99),
        at(0.999),
        at(1.0)
    );
    let over = walls
        .iter()
        .filter(|w| **w > Duration::from_millis(budget_ms))
        .count() as u64;
    // Why calls failed: the CPU budget, or the wall-clock ceiling (a starved thread).
    let mut reasons = std::collections::BTreeMap::<&str, u64>::new();
    for e in host.telemetry().events() {
        if e.kind == spear_plugin_runtime::EventKind::CallFailed {
            let why = if e.message.contains("CPU budget") {
                "CPU budget"
            } else if e.message.contains("wall-clock ceiling") {
                "wall-clock ceiling"
            } else {
                "other"
            };
            *reasons.entry(why).or_default() += 1;
        }
    }
    if !reasons.is_empty() {
        println!("  failures of the {cpu_ms} ms guest by reason (recent events): {reasons:?}");
    }
    walls.sort_unstable();
    let pct = |p: f64| walls[((walls.len() as f64 * p) as usize).min(walls.len() - 1)];
    (
        host.telemetry().failures_of("hostile"),
        over,
        pct(0.5).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3,
    )
}

fn main() {
    let quick = std::env::args().any(|a| a == "quick");
    let calls: u64 = if quick { 1_000 } else { 10_000 };
    let per_ms = calibrate();
    println!("calibration: {per_ms:.0} guest iterations per ms of CPU (quiet machine)");
    let _hogs = Hogs::start();
    println!("two busy-loop processes running; budget call_timeout_ms = 10, wall_factor = 5");
    println!(
        "{:<10} {:>7} {:>22} {:>30} {:>9} {:>9}",
        "guest", "calls", "failed (CPU budget)", "over 10 ms wall (baseline)", "p50 ms", "p99 ms"
    );
    for (cpu_ms, n) in [(9.0, calls), (20.0, calls / 10)] {
        let (failed, over, p50, p99) = run(per_ms, cpu_ms, 10, n);
        println!(
            "{:<10} {:>7} {:>14} ({:>5.1} %) {:>22} ({:>5.1} %) {:>9.1} {:>9.1}",
            format!("{cpu_ms} ms"),
            n,
            failed,
            failed as f64 * 100.0 / n as f64,
            over,
            over as f64 * 100.0 / n as f64,
            p50,
            p99
        );
    }
}
