//! `spear sim --trace FILE --strategy A --strategy B`: replay a workload through each strategy on
//! a simulated cluster, in virtual time, and print the results side by side.
//!
//! The simulator schedules as SMS does: a ready queue in priority order with aging (10 s waited
//! counts one level) where an execution with a deadline waits "since" its deadline less the
//! urgency window (30 s, SMS's default); rounds of up to 256 from the head, decided by the
//! strategy over its view of the nodes; every decision checked as SMS's plugin host checks it
//! (a free slot, resources, required labels, the executor); a decision that does not hold leaves
//! the execution queued; with `--preemption cluster`, SMS's preemption ([`preempt`]). Time moves
//! from event to event (arrivals, ends, stops), so a day of work replays in seconds. Everything
//! is ordered and seeded: one trace and one strategy give one result.

mod engine;
mod preempt;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;
use spear_plugin_runtime::engine::WasmEngine;
use spear_plugin_runtime::instance::StrategyInstance;
use spear_plugin_runtime::{LimitValues, Limits, load_file};

use crate::Output;
use crate::error::{CliError, Result};
use crate::trace::Trace;

/// Arguments of `spear sim`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The workload (`spear trace export` or `spear trace generate`).
    #[arg(long)]
    trace: PathBuf,
    /// A strategy plugin file (component, Extism module or native library); repeat to compare.
    #[arg(long = "strategy", required = true)]
    strategies: Vec<PathBuf>,
    /// Configuration (JSON) handed to every strategy's `configure`.
    #[arg(long, default_value = "{}")]
    config: String,
    #[command(flatten)]
    preemption: preempt::PreemptArgs,
}

/// One strategy's results.
#[derive(Debug, Clone, Serialize)]
pub struct SimResult {
    /// The plugin file.
    pub strategy: String,
    /// Its name and version.
    pub plugin: String,
    /// Executions run to their end.
    pub completed: u64,
    /// Executions never placed (nothing could hold them).
    pub unplaced: u64,
    /// Wait from submission to first start, ms: median.
    pub wait_p50_ms: u64,
    /// …99th percentile.
    pub wait_p99_ms: u64,
    /// From the first submission to the last end, ms.
    pub makespan_ms: u64,
    /// Each node's busy share: slot-time running over slots × makespan.
    pub utilisation: BTreeMap<String, f64>,
    /// Mean of those.
    pub utilisation_mean: f64,
    /// Coefficient of variation of the nodes' busy time (0: perfectly even).
    pub balance_cv: f64,
    /// Executions with a deadline that ended after it.
    pub deadline_misses: u64,
    /// Decisions the host would refuse: an unknown node, or one short of the resources or labels
    /// asked (they leave the execution queued).
    pub invalid_decisions: u64,
    /// Decisions for a node whose places were all taken by earlier decisions of the same batch
    /// (SMS leaves these queued for the next round too).
    pub over_room: u64,
    /// Strategy calls that failed.
    pub failed_calls: u64,
    /// Runs preempted (`--preemption cluster`).
    pub preemptions: u64,
    /// Run time preempted runs lost: all of a run that restarts, none of one that checkpoints, ms.
    pub preempted_work_lost_ms: u64,
    /// Wall time the replay took, ms.
    pub replay_ms: u64,
}

fn pct(v: &mut [u64], p: f64) -> u64 {
    if v.is_empty() {
        return 0;
    }
    v.sort_unstable();
    v[((v.len() as f64 * p) as usize).min(v.len() - 1)]
}

/// Replay `trace` through `strategy`, preempting as `preemption` says.
pub fn simulate(
    trace: &Trace,
    strategy: &mut dyn StrategyInstance,
    label: &str,
    preemption: preempt::PreemptArgs,
) -> Result<SimResult> {
    let started = Instant::now();
    let plugin = strategy
        .info()
        .map(|i| format!("{} {}", i.name, i.version))
        .map_err(|e| CliError::Usage(format!("{label}: info: {e}")))?;
    let mut result = engine::Sim::new(trace, preemption, label).run(strategy)?;
    result.plugin = plugin;
    result.replay_ms = started.elapsed().as_millis() as u64;
    Ok(result)
}

/// Run `spear sim`.
pub fn run(args: Args, out: Output) -> Result<i32> {
    args.preemption.validate()?;
    let trace = Trace::read(&args.trace)?;
    let engine = WasmEngine::new()
        .map_err(|e| CliError::Usage(format!("cannot start the WASM engine: {e:#}")))?;
    // Virtual time: a generous budget per call (the replay's wall time is what it is).
    let limits = Arc::new(Limits::new(LimitValues {
        call_timeout_ms: 10_000,
        setup_timeout_ms: 60_000,
        ..LimitValues::default()
    }));
    let mut results = Vec::new();
    for path in &args.strategies {
        let label = path.display().to_string();
        let plugin = load_file(path, &engine, &limits)
            .map_err(|e| CliError::Usage(format!("{label}: {e}")))?;
        let mut strategy = plugin
            .new_strategy()
            .map_err(|e| CliError::Usage(format!("{label}: {e}")))?;
        strategy
            .configure(&args.config)
            .map_err(|e| CliError::Usage(format!("{label}: configure: {e}")))?;
        results.push(simulate(
            &trace,
            strategy.as_mut(),
            &label,
            args.preemption,
        )?);
    }
    match out {
        Output::Json => crate::output::json(&serde_json::to_value(&results).unwrap_or_default()),
        Output::Text => crate::output::out(&text(&trace, &args.preemption, &results)),
    }
    Ok(0)
}

fn text(trace: &Trace, p: &preempt::PreemptArgs, results: &[SimResult]) -> String {
    let mut head = vec!["".to_owned()];
    head.extend(results.iter().map(|r| r.plugin.clone()));
    let row = |name: &str, f: &dyn Fn(&SimResult) -> String| -> Vec<String> {
        let mut v = vec![name.to_owned()];
        v.extend(results.iter().map(f));
        v
    };
    let rows = vec![
        row("completed", &|r| r.completed.to_string()),
        row("never placed", &|r| r.unplaced.to_string()),
        row("wait p50 ms", &|r| r.wait_p50_ms.to_string()),
        row("wait p99 ms", &|r| r.wait_p99_ms.to_string()),
        row("makespan ms", &|r| r.makespan_ms.to_string()),
        row("utilisation mean", &|r| {
            format!("{:.3}", r.utilisation_mean)
        }),
        row("utilisation min", &|r| {
            format!(
                "{:.3}",
                r.utilisation
                    .values()
                    .copied()
                    .fold(f64::INFINITY, f64::min)
            )
        }),
        row("utilisation max", &|r| {
            format!("{:.3}", r.utilisation.values().copied().fold(0.0, f64::max))
        }),
        row("balance (CV of busy time)", &|r| {
            format!("{:.3}", r.balance_cv)
        }),
        row("deadline misses", &|r| r.deadline_misses.to_string()),
        row("preemptions", &|r| r.preemptions.to_string()),
        row("preempted work lost ms", &|r| {
            r.preempted_work_lost_ms.to_string()
        }),
        row("invalid decisions", &|r| r.invalid_decisions.to_string()),
        row("left queued: node full", &|r| r.over_room.to_string()),
        row("failed calls", &|r| r.failed_calls.to_string()),
        row("replay wall ms", &|r| r.replay_ms.to_string()),
    ];
    let preemption = match p.mode {
        preempt::Mode::Off => "preemption off".to_owned(),
        preempt::Mode::Cluster => format!(
            "preemption cluster (gap {}, grace {} ms, {} per minute)",
            p.min_priority_gap, p.grace_ms, p.budget_per_minute
        ),
    };
    let headers: Vec<&str> = head.iter().map(String::as_str).collect();
    format!(
        "{} executions on {} nodes, virtual time, {preemption}\n\n{}",
        trace.executions.len(),
        trace.nodes.len(),
        crate::output::table(&headers, &rows)
    )
}
