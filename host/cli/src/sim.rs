//! `spear plugin sim`: a plugin host over a simulated cluster.
//!
//! It loads the config and plugin directory like SMS would, watches both, and places a steady stream
//! of requests on simulated nodes, feeding back simulated outcomes (odd nodes are slower, every
//! tenth node fails a tenth of its work). Once a second it prints what decided and how the work
//! spread; every reload is printed as it happens. SIGHUP forces a rescan; Ctrl-C stops.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;
use spear_plugin_api::{Decision, Label, Outcome, Request, Resources, Target};
use spear_plugin_runtime::{PluginHost, Trigger};

use crate::Output;

/// Arguments of `spear plugin sim`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The host config file (`[plugins]`, `[scheduler]`, `[reclaimer]`).
    #[arg(short, long)]
    config: PathBuf,
    /// Simulated nodes.
    #[arg(long, default_value_t = 100)]
    targets: u64,
    /// Placements per second.
    #[arg(long, default_value_t = 2000)]
    rate: u64,
    /// Requests per `place` call.
    #[arg(long, default_value_t = 64)]
    batch: u64,
    /// Stop after this many seconds (0: run until Ctrl-C).
    #[arg(long, default_value_t = 0)]
    duration: u64,
}

#[derive(Serialize)]
struct Second {
    second: u64,
    strategy: Option<String>,
    placed: u64,
    rejected: u64,
    fallback_total: u64,
    failures_total: u64,
    busiest: u64,
    idlest: u64,
    quarantined: bool,
}

fn node(id: u64) -> Target {
    let r = Resources {
        cpu_millis: 64_000,
        memory_mb: 256 * 1024,
        disk_mb: 1 << 20,
    };
    Target {
        id,
        name: format!("sim-node-{id}"),
        labels: vec![Label::new("zone", format!("z{}", id % 3))],
        capacity: r,
        available: r,
        active: 0,
        weight: 1,
        healthy: true,
    }
}

/// Run until Ctrl-C or `--duration`.
pub fn run(args: Args, output: Output) -> anyhow::Result<i32> {
    let host = PluginHost::start(&args.config)?;
    let _watch = host.watch()?;
    let stop = Arc::new(AtomicBool::new(false));
    let hup = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGINT, stop.clone())?;
    signal_hook::flag::register(signal_hook::consts::SIGTERM, stop.clone())?;
    signal_hook::flag::register(signal_hook::consts::SIGHUP, hup.clone())?;

    let nodes: Vec<Target> = (1..=args.targets).map(node).collect();
    host.strategy().upsert(nodes.clone());
    if output == Output::Text {
        let config = host.config();
        println!(
            "spear plugin sim: {} nodes, {} placements/s in batches of {}; plugins in {}",
            args.targets,
            args.rate,
            args.batch,
            config.dir.display()
        );
        println!(
            "edit {} or the plugin directory to hot-reload; Ctrl-C stops",
            args.config.display()
        );
    }
    let started = Instant::now();
    let tick = Duration::from_millis(100);
    let per_tick = (args.rate / 10).max(1);
    let mut next_id = 1u64;
    let mut seen_reports = host.history().len();
    let mut per_node: BTreeMap<u64, u64> = BTreeMap::new();
    let (mut placed, mut rejected) = (0u64, 0u64);
    let mut second = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let tick_start = Instant::now();
        if hup.swap(false, Ordering::Relaxed) {
            host.reload(Trigger::Signal);
        }
        let mut outcomes = Vec::new();
        let mut left = per_tick;
        while left > 0 {
            let n = left.min(args.batch.max(1));
            left -= n;
            let requests: Vec<Request> = (next_id..next_id + n)
                .map(|id| Request {
                    id,
                    task: format!("task-{}", id % 11),
                    labels: vec![Label::new("app", format!("app-{}", id % 5))],
                    needs: Resources {
                        cpu_millis: 10,
                        memory_mb: 16,
                        disk_mb: 0,
                    },
                    required: vec![],
                    preferred: vec![],
                })
                .collect();
            next_id += n;
            for (r, d) in requests.iter().zip(host.strategy().place(&requests)) {
                match d {
                    Decision::Assign(t) => {
                        placed += 1;
                        *per_node.entry(t).or_default() += 1;
                        outcomes.push(Outcome {
                            request: r.id,
                            target: t,
                            success: !(t % 10 == 0 && r.id % 10 == 0),
                            latency_us: if t % 2 == 1 { 900 } else { 300 },
                        });
                    }
                    Decision::Reject(_) => rejected += 1,
                }
            }
        }
        // The work of this tick completes: outcomes go back, the nodes are free again.
        host.strategy().observe(&outcomes);
        host.strategy().upsert(nodes.clone());

        let history = host.history();
        for report in history.iter().skip(seen_reports) {
            if output == Output::Json {
                println!("{}", serde_json::to_string(report)?);
            } else {
                println!("reload ({:?}): {:?}", report.trigger, report.outcome);
                for c in &report.changes {
                    println!("  {c}");
                }
                if let Some(e) = &report.error {
                    println!("  error: {e}");
                }
            }
        }
        seen_reports = history.len();

        if started.elapsed() >= Duration::from_secs(second + 1) {
            second += 1;
            let status = host.strategy().status();
            let strategy = status
                .plugin
                .as_ref()
                .map(|p| format!("{} {} ({}, {})", p.name, p.version, p.form, &p.sha256[..12]));
            let line = Second {
                second,
                strategy,
                placed,
                rejected,
                fallback_total: host.telemetry().fallback_decisions_of("scheduler"),
                failures_total: status
                    .plugin
                    .as_ref()
                    .map_or(0, |p| host.telemetry().failures_of(&p.name)),
                busiest: per_node.values().copied().max().unwrap_or(0),
                idlest: (1..=args.targets)
                    .map(|id| per_node.get(&id).copied().unwrap_or(0))
                    .min()
                    .unwrap_or(0),
                quarantined: status.quarantined,
            };
            if output == Output::Json {
                println!("{}", serde_json::to_string(&line)?);
            } else {
                println!(
                    "[{:>4}s] {:<48} placed {:>6}  rejected {:>4}  per node {}..{}  fallback {}  failures {}{}",
                    line.second,
                    line.strategy
                        .as_deref()
                        .unwrap_or("built-in round-robin (nothing selected)"),
                    line.placed,
                    line.rejected,
                    line.idlest,
                    line.busiest,
                    line.fallback_total,
                    line.failures_total,
                    if line.quarantined {
                        "  QUARANTINED"
                    } else {
                        ""
                    }
                );
            }
            placed = 0;
            rejected = 0;
            per_node.clear();
            if args.duration > 0 && second >= args.duration {
                break;
            }
        }
        if let Some(rest) = tick.checked_sub(tick_start.elapsed()) {
            std::thread::sleep(rest);
        }
    }
    Ok(0)
}
