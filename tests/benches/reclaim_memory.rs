//! What reclaiming live instances gives back, measured: a plain `main` printing resident memory
//! before and after, with the ratio of what was freed to what the instances held.
//!
//! - **wasm**: 100 function instances of `tests/fixtures/function-counter`, started through the
//!   `wasm` executor's instance operations (the executor ABI, in process), each holding 3 MiB it
//!   touched (`hold 3,0`); then every one stopped (`stop_instance`, as reclamation does). The
//!   figure is this process's RSS (`/proc/self/status`).
//! - **workers**: 20 workers of `examples/worker-python/worker.py` through the `process` executor;
//!   the figure is the sum of their processes' RSS, before and after `stop_instance`.
//!
//! Run: `cargo bench -p spear-tests --bench reclaim_memory` (about 20 s).

use std::path::Path;

use spear_executor_process::ProcessExecutor;
use spear_executor_wasm::WasmExecutor;
use spear_plugin_api::Executor;
use spear_plugin_api::executor::InstanceSpec;
use spear_tests::guest;

fn rss_of(path: &str) -> u64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

fn mib(b: u64) -> f64 {
    b as f64 / (1 << 20) as f64
}

fn main() {
    // wasm: 100 instances of 3 MiB each.
    let wasm = WasmExecutor::default();
    let spec = InstanceSpec {
        instance_id: "bench".into(),
        task: "bench".into(),
        artifact: Some(
            guest("component", "function-counter.wasm")
                .display()
                .to_string(),
        ),
        ..InstanceSpec::default()
    };
    // One first, so that the compiled code and the engine are in the baseline.
    let first = wasm.start_instance(&spec).unwrap();
    wasm.stop_instance(&first).unwrap();
    let baseline = rss_of("/proc/self/status");
    let handles: Vec<String> = (0..100)
        .map(|_| {
            let h = wasm.start_instance(&spec).unwrap();
            wasm.invoke(&h, "hold", b"3,0", 10_000).unwrap();
            h
        })
        .collect();
    let full = rss_of("/proc/self/status");
    for h in &handles {
        wasm.stop_instance(h).unwrap();
    }
    let after = rss_of("/proc/self/status");
    let held = full.saturating_sub(baseline);
    let freed = full.saturating_sub(after);
    println!(
        "wasm: 100 instances of 3 MiB: RSS {:.1} MiB idle, {:.1} MiB with them (+{:.1}), {:.1} MiB after stopping them (freed {:.1} MiB, {:.0}% of what they held)",
        mib(baseline),
        mib(full),
        mib(held),
        mib(after),
        mib(freed),
        100.0 * freed as f64 / held.max(1) as f64
    );

    // Workers: 20 Python processes.
    let process = ProcessExecutor::default();
    let worker = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/worker-python/worker.py")
        .display()
        .to_string();
    let spec = InstanceSpec {
        instance_id: "bench".into(),
        task: "bench".into(),
        entry: "/usr/bin/python3".into(),
        args: vec!["-u".into(), worker],
        ..InstanceSpec::default()
    };
    let handles: Vec<String> = (0..20)
        .map(|_| process.start_instance(&spec).unwrap())
        .collect();
    let pids: Vec<u32> = handles
        .iter()
        .map(|h| h.rsplit('@').next().unwrap().parse().unwrap())
        .collect();
    let held: u64 = pids
        .iter()
        .map(|p| rss_of(&format!("/proc/{p}/status")))
        .sum();
    for h in &handles {
        process.stop_instance(h).unwrap();
    }
    let left: u64 = pids
        .iter()
        .map(|p| rss_of(&format!("/proc/{p}/status")))
        .sum();
    let alive = pids
        .iter()
        .filter(|p| Path::new(&format!("/proc/{p}")).exists())
        .count();
    println!(
        "workers: 20 Python workers: {:.1} MiB resident in their processes, {:.1} MiB after stopping them ({alive} processes left)",
        mib(held),
        mib(left)
    );
}
