//! How fast `spear sim` replays: a 100,000-execution synthetic trace through the built-in
//! strategies, as native libraries and as WASM components, with preemption off and on, at two
//! arrival rates (a cluster keeping up, and one far behind: a deep queue, big rounds). It runs
//! the release `spear` binary as a user does and prints, per strategy, the replay's wall time,
//! executions replayed per second, virtual time per wall time, preemptions, the ratio to native
//! round-robin on the same trace (the in-run baseline), and whether the replay took under 30 s
//! (the target).
//!
//! Run: `cargo bench -p spear-cli --bench replay`.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

const EXECUTIONS: u64 = 100_000;
const STRATEGIES: [&str; 4] = [
    "round-robin",
    "least-connections",
    "weighted-round-robin",
    "random",
];
const TARGET_MS: u64 = 30_000;

fn spear(args: &[&str]) -> Vec<u8> {
    let out = Command::new(env!("CARGO_BIN_EXE_spear"))
        .args(args)
        .output()
        .expect("run spear");
    assert!(
        out.status.success(),
        "spear {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn generate(dir: &Path, rate: &str) -> String {
    let out = dir.join(format!("rate-{rate}.jsonl")).display().to_string();
    let n = EXECUTIONS.to_string();
    spear(&[
        "trace",
        "generate",
        "--executions",
        &n,
        "--heterogeneous",
        "--rate",
        rate,
        "--checkpoint-fraction",
        "0.5",
        "--seed",
        "7",
        "--out",
        &out,
    ]);
    out
}

fn main() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut plugins = Vec::new();
    for form in ["native", "component"] {
        let ext = if form == "native" { "so" } else { "wasm" };
        for s in STRATEGIES {
            let path = spear_tests::guest(form, &format!("{s}.{ext}"));
            plugins.push((format!("{s} ({form})"), path.display().to_string()));
        }
    }
    println!(
        "{:<34} {:>6} {:>10} {:>9} {:>13} {:>12} {:>11} {:>8} {:>6}",
        "strategy",
        "rate/s",
        "preemption",
        "replay ms",
        "executions/s",
        "virtual/wall",
        "preemptions",
        "vs base",
        "<30 s"
    );
    let mut all_under = true;
    for rate in ["50", "300"] {
        let trace = generate(dir.path(), rate);
        for preemption in ["off", "cluster"] {
            let mut args = vec!["--output", "json", "sim", "--trace", &trace];
            for (_, path) in &plugins {
                args.extend(["--strategy", path.as_str()]);
            }
            args.extend(["--preemption", preemption]);
            if preemption == "cluster" {
                args.extend(["--budget-per-minute", "600", "--grace-ms", "2000"]);
            }
            let results: Vec<Value> =
                serde_json::from_slice(&spear(&args)).expect("sim's JSON results");
            let base = results[0]["replay_ms"].as_u64().unwrap_or(1).max(1);
            for ((name, _), r) in plugins.iter().zip(&results) {
                let ms = r["replay_ms"].as_u64().unwrap_or(0).max(1);
                let completed = r["completed"].as_u64().unwrap_or(0);
                assert_eq!(completed, EXECUTIONS, "{name}: {r}");
                let virtual_ms = r["makespan_ms"].as_u64().unwrap_or(0);
                let under = ms < TARGET_MS;
                all_under &= under;
                println!(
                    "{:<34} {:>6} {:>10} {:>9} {:>13.0} {:>12.0} {:>11} {:>8.2} {:>6}",
                    name,
                    rate,
                    preemption,
                    ms,
                    EXECUTIONS as f64 / (ms as f64 / 1000.0),
                    virtual_ms as f64 / ms as f64,
                    r["preemptions"],
                    ms as f64 / base as f64,
                    if under { "yes" } else { "NO" }
                );
            }
        }
    }
    println!(
        "every replay of {EXECUTIONS} executions under {} s: {}",
        TARGET_MS / 1000,
        if all_under { "yes" } else { "NO" }
    );
}
