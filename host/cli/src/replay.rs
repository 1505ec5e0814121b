//! `spear sim --trace FILE --strategy A --strategy B`: replay a workload through each strategy on
//! a simulated cluster, in virtual time, and print the results side by side.
//!
//! The simulator schedules as SMS does: a ready queue in priority order with aging (10 s waited
//! counts one level) where an execution with a deadline waits "since" its deadline less the
//! urgency window (30 s, SMS's default); rounds of up to 256 from the head, decided by the
//! strategy over its view of the nodes; every decision checked as SMS's plugin host checks it
//! (a free slot, resources, required labels, the executor); a decision that does not hold leaves
//! the execution queued. Time moves from event to event (arrivals, ends), so a day of work
//! replays in seconds. Everything is ordered and seeded: one trace and one strategy give one
//! result.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;
use spear_plugin_api::{Decision, Label, Outcome, Request, Resources, Target};
use spear_plugin_runtime::engine::WasmEngine;
use spear_plugin_runtime::instance::StrategyInstance;
use spear_plugin_runtime::{LimitValues, Limits, load_file};

use crate::Output;
use crate::error::{CliError, Result};
use crate::trace::{Trace, TraceExecution};

/// Waiting this long raises a queued execution by one priority level (SMS's).
const AGING_MS: i64 = 10_000;
/// SMS's default `[deadlines] urgency_window_ms`.
const URGENCY_WINDOW_MS: i64 = 30_000;
/// Requests per strategy call (SMS's default batch).
const BATCH: usize = 256;
/// Consecutive failed calls after which a strategy's replay is abandoned.
const MAX_FAILURES: u32 = 3;
/// The executor label SMS gives a node per executable type.
const EXECUTOR_LABEL: &str = "spear.io/executor.";

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
    /// Wait from submission to start, ms: median.
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
    /// Wall time the replay took, ms.
    pub replay_ms: u64,
}

/// A node in the simulation.
struct Node {
    target: Target,
    slots: u32,
    running: u32,
    busy_ms: u64,
}

/// An execution in the queue.
type QueueKey = (Reverse<i64>, usize);

fn priority_level(p: &str) -> i64 {
    match p {
        "low" => 0,
        "high" => 2,
        "urgent" => 3,
        _ => 1,
    }
}

fn queue_key(e: &TraceExecution, i: usize) -> QueueKey {
    let submit = i64::try_from(e.submit_ms).unwrap_or(i64::MAX);
    let since = match e.deadline_ms {
        Some(d) => i64::try_from(d)
            .unwrap_or(i64::MAX)
            .saturating_sub(URGENCY_WINDOW_MS)
            .max(submit.saturating_sub(URGENCY_WINDOW_MS)),
        None => submit,
    };
    (
        Reverse(
            priority_level(&e.priority)
                .saturating_mul(AGING_MS)
                .saturating_sub(since),
        ),
        i,
    )
}

fn request(i: usize, e: &TraceExecution) -> Request {
    let mut required: Vec<Label> = e
        .required_labels
        .iter()
        .map(|(k, v)| Label::new(k.clone(), v.clone()))
        .collect();
    required.push(Label::new(format!("{EXECUTOR_LABEL}{}", e.kind), "true"));
    Request {
        id: i as u64,
        task: e.id.clone(),
        labels: vec![],
        needs: Resources {
            cpu_millis: e.needs.cpu_millis,
            memory_mb: e.needs.memory_mb,
            disk_mb: e.needs.disk_mb,
        },
        required,
        preferred: vec![],
    }
}

fn pct(v: &mut [u64], p: f64) -> u64 {
    if v.is_empty() {
        return 0;
    }
    v.sort_unstable();
    v[((v.len() as f64 * p) as usize).min(v.len() - 1)]
}

/// Replay `trace` through `strategy`.
pub fn simulate(
    trace: &Trace,
    strategy: &mut dyn StrategyInstance,
    label: &str,
) -> Result<SimResult> {
    let started = Instant::now();
    let plugin = strategy
        .info()
        .map(|i| format!("{} {}", i.name, i.version))
        .map_err(|e| CliError::Usage(format!("{label}: info: {e}")))?;
    let mut nodes: Vec<Node> = trace
        .nodes
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let mut labels: Vec<Label> = n
                .labels
                .iter()
                .map(|(k, v)| Label::new(k.clone(), v.clone()))
                .collect();
            for e in &n.executors {
                labels.push(Label::new(format!("{EXECUTOR_LABEL}{e}"), "true"));
            }
            let capacity = Resources {
                cpu_millis: n.cpu_millis,
                memory_mb: n.memory_mb,
                disk_mb: u64::MAX / 2,
            };
            Node {
                target: Target {
                    id: i as u64 + 1,
                    name: n.name.clone(),
                    labels,
                    capacity,
                    available: capacity,
                    active: 0,
                    weight: 1,
                    healthy: true,
                },
                slots: n.slots.max(1),
                running: 0,
                busy_ms: 0,
            }
        })
        .collect();
    let fail =
        |what: &str, e: &dyn std::fmt::Display| CliError::Usage(format!("{label}: {what}: {e}"));
    let all: Vec<Target> = nodes.iter().map(|n| n.target.clone()).collect();
    strategy.upsert(&all).map_err(|e| fail("upsert", &e))?;
    let execs = &trace.executions;
    // Ends: (time, node index, execution index).
    let mut ends: BinaryHeap<Reverse<(u64, usize, usize)>> = BinaryHeap::new();
    let mut queue: BTreeSet<QueueKey> = BTreeSet::new();
    let mut changed: BTreeSet<usize> = BTreeSet::new();
    let mut outcomes: Vec<Outcome> = Vec::new();
    let mut waits: Vec<u64> = Vec::with_capacity(execs.len());
    let (mut next, mut completed, mut misses, mut invalid, mut failed) =
        (0usize, 0u64, 0u64, 0u64, 0u64);
    let mut over_room = 0u64;
    let mut consecutive = 0u32;
    let mut last_end = 0u64;
    loop {
        let now = match (execs.get(next), ends.peek()) {
            (Some(e), Some(Reverse((t, _, _)))) => e.submit_ms.min(*t),
            (Some(e), None) => e.submit_ms,
            (None, Some(Reverse((t, _, _)))) => *t,
            (None, None) => break,
        };
        while let Some(Reverse((t, n, i))) = ends.peek().copied() {
            if t > now {
                break;
            }
            ends.pop();
            let node = &mut nodes[n];
            node.running -= 1;
            let needs = request(i, &execs[i]).needs;
            let a = &mut node.target.available;
            a.cpu_millis += needs.cpu_millis;
            a.memory_mb += needs.memory_mb;
            node.target.active = node.running;
            changed.insert(n);
            completed += 1;
            last_end = last_end.max(t);
            if execs[i].deadline_ms.is_some_and(|d| t > d) {
                misses += 1;
            }
            outcomes.push(Outcome {
                request: i as u64,
                target: node.target.id,
                success: true,
                latency_us: execs[i].duration_ms.saturating_mul(1000),
            });
        }
        while execs.get(next).is_some_and(|e| e.submit_ms <= now) {
            queue.insert(queue_key(&execs[next], next));
            next += 1;
        }
        // Rounds while they place something.
        loop {
            if !changed.is_empty() {
                let view: Vec<Target> = changed
                    .iter()
                    .map(|n| {
                        let mut t = nodes[*n].target.clone();
                        t.healthy = nodes[*n].running < nodes[*n].slots;
                        t
                    })
                    .collect();
                changed.clear();
                strategy.upsert(&view).map_err(|e| fail("upsert", &e))?;
            }
            if !outcomes.is_empty() {
                strategy
                    .observe(&outcomes)
                    .map_err(|e| fail("observe", &e))?;
                outcomes.clear();
            }
            let free: u64 = nodes.iter().map(|n| u64::from(n.slots - n.running)).sum();
            if queue.is_empty() || free == 0 {
                break;
            }
            let batch: Vec<QueueKey> = queue
                .iter()
                .take(BATCH.min(usize::try_from(free).unwrap_or(usize::MAX)))
                .copied()
                .collect();
            let requests: Vec<Request> =
                batch.iter().map(|(_, i)| request(*i, &execs[*i])).collect();
            let decisions = match strategy.place(&requests) {
                Ok(d) if d.len() == requests.len() => {
                    consecutive = 0;
                    d
                }
                Ok(d) => {
                    return Err(fail(
                        "place",
                        &format!("{} decisions for {} requests", d.len(), requests.len()),
                    ));
                }
                Err(e) => {
                    failed += 1;
                    consecutive += 1;
                    if consecutive >= MAX_FAILURES {
                        return Err(fail(
                            "place",
                            &format!("{e} ({MAX_FAILURES} calls in a row failed)"),
                        ));
                    }
                    break;
                }
            };
            let mut placed = 0;
            for ((key, r), d) in batch.iter().zip(&requests).zip(&decisions) {
                let Decision::Assign(t) = d else { continue };
                let Some(n) = usize::try_from(*t)
                    .ok()
                    .and_then(|t| t.checked_sub(1))
                    .filter(|n| *n < nodes.len())
                else {
                    invalid += 1;
                    continue;
                };
                let node = &mut nodes[n];
                let fits = node.target.available.covers(&r.needs)
                    && r.required.iter().all(|l| node.target.has_label(l));
                if !fits {
                    invalid += 1;
                    changed.insert(n);
                    continue;
                }
                if node.running >= node.slots {
                    over_room += 1;
                    changed.insert(n);
                    continue;
                }
                let i = key.1;
                queue.remove(key);
                node.running += 1;
                node.target.active = node.running;
                node.target.available = node.target.available.saturating_sub(&r.needs);
                node.busy_ms = node.busy_ms.saturating_add(execs[i].duration_ms);
                changed.insert(n);
                waits.push(now - execs[i].submit_ms);
                ends.push(Reverse((now.saturating_add(execs[i].duration_ms), n, i)));
                placed += 1;
            }
            if placed == 0 {
                break;
            }
        }
        if next >= execs.len() && ends.is_empty() {
            break;
        }
    }
    let first = execs.first().map_or(0, |e| e.submit_ms);
    let makespan = last_end.saturating_sub(first).max(1);
    let utilisation: BTreeMap<String, f64> = nodes
        .iter()
        .map(|n| {
            (
                n.target.name.clone(),
                n.busy_ms as f64 / (n.slots as f64 * makespan as f64),
            )
        })
        .collect();
    let busy: Vec<f64> = nodes.iter().map(|n| n.busy_ms as f64).collect();
    let mean = busy.iter().sum::<f64>() / busy.len() as f64;
    let cv = if mean > 0.0 {
        (busy.iter().map(|b| (b - mean).powi(2)).sum::<f64>() / busy.len() as f64).sqrt() / mean
    } else {
        0.0
    };
    Ok(SimResult {
        strategy: label.to_owned(),
        plugin,
        completed,
        unplaced: queue.len() as u64,
        wait_p50_ms: pct(&mut waits, 0.5),
        wait_p99_ms: pct(&mut waits, 0.99),
        makespan_ms: makespan,
        utilisation_mean: utilisation.values().sum::<f64>() / utilisation.len().max(1) as f64,
        utilisation,
        balance_cv: cv,
        deadline_misses: misses,
        invalid_decisions: invalid,
        over_room,
        failed_calls: failed,
        replay_ms: started.elapsed().as_millis() as u64,
    })
}

/// Run `spear sim`.
pub fn run(args: Args, out: Output) -> Result<i32> {
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
        results.push(simulate(&trace, strategy.as_mut(), &label)?);
    }
    match out {
        Output::Json => crate::output::json(&serde_json::to_value(&results).unwrap_or_default()),
        Output::Text => crate::output::out(&text(&trace, &results)),
    }
    Ok(0)
}

fn text(trace: &Trace, results: &[SimResult]) -> String {
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
        row("invalid decisions", &|r| r.invalid_decisions.to_string()),
        row("left queued: node full", &|r| r.over_room.to_string()),
        row("failed calls", &|r| r.failed_calls.to_string()),
        row("replay wall ms", &|r| r.replay_ms.to_string()),
    ];
    let headers: Vec<&str> = head.iter().map(String::as_str).collect();
    format!(
        "{} executions on {} nodes, virtual time\n\n{}",
        trace.executions.len(),
        trace.nodes.len(),
        crate::output::table(&headers, &rows)
    )
}
