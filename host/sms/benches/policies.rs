//! What the scheduler's policies cost: placements per second of one in-process SMS (the `memory`
//! storage backend, so the scheduler is what is measured, not the disk) with 1,000 fake Spearlets
//! attached in-process, with each policy on against a baseline with it off, in the same run. Two
//! loads: the whole workload queued before the nodes connect (the scheduler alone, in full
//! batches), and 256 submitters racing the scheduler (many small rounds). Variants run in turn,
//! several times each; the median is shown. Besides placements per second (wall time), each run
//! reports the process's CPU time per placement (user + system, all threads, over the same
//! window): the work a placement costs, steadier than wall time on a busy 2-core machine.
//!
//! Run: `cargo bench -p spear-sms --bench policies` (`-- quick` for a short run;
//! `SPEAR_BENCH_ONLY=<keys, comma-separated>` runs only those variants: baseline, explain,
//! deadlines, preemption, shadow; `SPEAR_BENCH_REPEATS=<n>` sets how many times each runs, 7 by
//! default).
//!
//! Besides each variant's median against the baseline's median, a second table pairs the runs:
//! within one repeat every variant runs right next to the baseline, so each repeat gives one
//! ratio (variant ÷ that repeat's baseline) from runs that shared the machine's state at the time.
//! It shows the median of those ratios with a distribution-free 95 % confidence interval (order
//! statistics of the binomial), which many repeats narrow where one median of seven cannot.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use spear_sms::deadlines::Deadline;
use spear_sms::executions::Submit;
use spear_sms::model::{Executable, now_ms};
use spear_sms::nodes::UpdateNode;

use common::{sandbox_extra, wasm_node};

mod common;

/// One configuration measured.
struct Variant {
    /// What `SPEAR_BENCH_ONLY` names it by.
    key: &'static str,
    name: &'static str,
    /// Config tables appended.
    config: &'static str,
    /// Plugin files added.
    plugins: &'static [(&'static str, &'static str)],
    /// Every submission carries a deadline.
    deadlines: bool,
}

const NODES: usize = 1_000;

/// How the work arrives.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Load {
    /// Everything queued while the nodes are set aside (`inactive`), then they are set active
    /// again: the scheduler alone, in full batches.
    Queued,
    /// 256 submitters as fast as they go while the nodes take work: rounds of what has come.
    Streaming,
}

fn submission(deadlines: bool, s: u64, i: u64) -> Submit {
    // Deadlines spread over the next minute, so the queue's order really changes.
    let deadline = deadlines
        .then(|| Deadline::Millis(now_ms() + 5_000 + ((s * 7919 + i * 104_729) % 55_000) as i64));
    Submit {
        executable: Some(Executable {
            kind: "wasm".into(),
            uri: "file:///bench.wasm".into(),
            ..Executable::default()
        }),
        deadline,
        estimate_ms: deadlines.then_some(1_000),
        ..Submit::default()
    }
}

/// The process's CPU time so far (user + system, every thread), in microseconds.
fn cpu_us() -> f64 {
    // SAFETY: `getrusage` writes the struct it is given, which is zeroed and ours.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above; RUSAGE_SELF is always valid.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let us = |t: libc::timeval| t.tv_sec as f64 * 1e6 + t.tv_usec as f64;
    us(u.ru_utime) + us(u.ru_stime)
}

/// Placements per second of one run of `v`, and CPU microseconds per placement.
async fn run(v: &Variant, load: Load, executions: u64) -> (f64, f64) {
    let (_dir, config) = sandbox_extra("memory", v.config, v.plugins);
    let running = spear_sms::server::start(config).await.unwrap();
    let sms = running.sms.clone();
    let delivered = Arc::new(AtomicU64::new(0));
    let mut uuids = Vec::with_capacity(NODES);
    for i in 0..NODES {
        let uuid = sms.register_node(wasm_node(i, None)).await.unwrap().uuid;
        let mut rx = sms.connect_node(&uuid).await.unwrap();
        let d = delivered.clone();
        tokio::spawn(async move {
            while let Some(out) = rx.recv().await {
                if matches!(*out, spear_sms::outbox::Outgoing::Assignment(_)) {
                    d.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        uuids.push(uuid);
    }
    // Queued: the nodes set aside while the work comes (no round places anything), then back.
    let status = |status: &str| UpdateNode {
        status: Some(status.into()),
        ..UpdateNode::default()
    };
    if load == Load::Queued {
        for uuid in &uuids {
            sms.update_node(uuid, status("inactive"), None)
                .await
                .unwrap();
        }
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let submitters = 256;
    let per = executions / submitters;
    let submit_all = || async {
        let mut handles = Vec::new();
        for s in 0..submitters {
            let sms = sms.clone();
            let deadlines = v.deadlines;
            handles.push(tokio::spawn(async move {
                for i in 0..per {
                    sms.submit(submission(deadlines, s, i)).await.unwrap();
                }
            }));
        }
        for h in handles {
            h.await.unwrap();
        }
    };
    let mut cpu_start = cpu_us();
    let start = match load {
        Load::Streaming => {
            let start = Instant::now();
            submit_all().await;
            start
        }
        Load::Queued => {
            submit_all().await;
            cpu_start = cpu_us();
            let start = Instant::now();
            for uuid in &uuids {
                sms.update_node(uuid, status("active"), None).await.unwrap();
            }
            start
        }
    };
    let total = per * submitters;
    while delivered.load(Ordering::Relaxed) < total {
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "{}: placements stalled at {}",
            v.name,
            delivered.load(Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let rate = total as f64 / start.elapsed().as_secs_f64();
    let cpu = (cpu_us() - cpu_start) / total as f64;
    let fallback = sms.plugins().telemetry().fallback_decisions_of("scheduler");
    assert_eq!(
        fallback, 0,
        "{}: every placement came from the strategy plugin",
        v.name
    );
    running.shutdown().await;
    (rate, cpu)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The 0-based ranks `(lo, hi)` of the sorted sample that bound its median with at least 95 %
/// confidence, from the binomial distribution (each sample falls below the true median with
/// probability ½), or `None` when the sample is too small for one (fewer than 6).
fn median_ci_ranks(n: usize) -> Option<(usize, usize)> {
    // P(Binomial(n, ½) ≤ j), summed in f64 (n stays small).
    let mut below = 0.0;
    let mut choose = 1.0;
    let half_n = 0.5f64.powi(n as i32);
    let mut lo = None;
    for j in 0..n {
        below += choose * half_n;
        if below > 0.025 {
            break;
        }
        // P(Bin ≤ j) ≤ 2.5 %: 0-based rank j (the (j+1)-th smallest) is a lower bound.
        lo = Some(j);
        choose = choose * (n - j) as f64 / (j + 1) as f64;
    }
    // Ranks lo..=n-1-lo hold the median with probability 1 - 2·P(Bin ≤ lo) ≥ 95 %.
    lo.map(|lo| (lo, n - 1 - lo))
}

/// Each repeat's `variant[k] / base[k]`: the median and its 95 % interval, printed as
/// `median (lo–hi)`.
fn paired(variant: &[f64], base: &[f64]) -> String {
    let mut ratios: Vec<f64> = variant.iter().zip(base).map(|(v, b)| v / b).collect();
    ratios.sort_by(f64::total_cmp);
    let m = ratios[ratios.len() / 2];
    match median_ci_ranks(ratios.len()) {
        Some((lo, hi)) => format!("{m:.3} ({:.3}–{:.3})", ratios[lo], ratios[hi]),
        None => format!("{m:.3} (too few repeats for an interval)"),
    }
}

fn main() {
    // The interval's ranks against the binomial tables (n = 7: the extremes; n = 31: 10th-22nd).
    assert_eq!(median_ci_ranks(5), None);
    assert_eq!(median_ci_ranks(7), Some((0, 6)));
    assert_eq!(median_ci_ranks(31), Some((9, 21)));
    let quick = std::env::args().any(|a| a == "quick");
    let (executions, mut repeats) = if quick { (5_120, 1) } else { (40_960, 7) };
    if let Ok(n) = std::env::var("SPEAR_BENCH_REPEATS") {
        repeats = n
            .parse()
            .ok()
            .filter(|&n| n > 0)
            .expect("SPEAR_BENCH_REPEATS is a count of runs, at least 1");
    }
    let variants = [
        Variant {
            key: "baseline",
            name: "baseline (explain off, no deadlines)",
            config: "[explain]\nrounds = 0\n",
            plugins: &[],
            deadlines: false,
        },
        Variant {
            key: "explain",
            name: "explain recording on (64 rounds)",
            config: "[explain]\nrounds = 64\n",
            plugins: &[],
            deadlines: false,
        },
        Variant {
            key: "deadlines",
            name: "deadlines on every execution (explain off)",
            config: "[explain]\nrounds = 0\n",
            plugins: &[],
            deadlines: true,
        },
        Variant {
            // The preemption pass looks every 100 ms (the fake nodes never report a run, so it
            // finds no victim: this is the cost of looking).
            key: "preemption",
            name: "deadlines + preemption (cluster) on every execution (explain off)",
            config: "[explain]\nrounds = 0\n[preemption]\nmode = \"cluster\"\n",
            plugins: &[],
            deadlines: true,
        },
        Variant {
            // Appended right after the sandbox's `[scheduler]` table, so the key lands in it.
            key: "shadow",
            name: "shadow strategy: random component (explain off)",
            config: "shadow = \"random\"\n[explain]\nrounds = 0\n",
            plugins: &[("component", "random.wasm")],
            deadlines: false,
        },
    ];
    // `SPEAR_BENCH_ONLY=baseline,deadlines`: only the variants with these keys (baseline,
    // explain, deadlines, preemption, shadow), for profiling one; keep `baseline` for the ratios
    // (the first variant run is the one they are against).
    let only = std::env::var("SPEAR_BENCH_ONLY").unwrap_or_default();
    let variants: Vec<Variant> = variants
        .into_iter()
        .filter(|v| only.is_empty() || only.split(',').any(|o| o.trim() == v.key))
        .collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        for (load, title) in [
            (Load::Queued, "queued first, then the nodes set active (the scheduler alone, full batches)"),
            (Load::Streaming, "256 submitters while the nodes take work (rounds of what has come)"),
        ] {
            let mut rates: Vec<Vec<f64>> = variants.iter().map(|_| Vec::new()).collect();
            let mut cpus: Vec<Vec<f64>> = variants.iter().map(|_| Vec::new()).collect();
            // Every other repeat runs the variants in reverse order, so none always follows
            // the same one (a run's CPU time includes what the last one left to clean up).
            for repeat in 0..repeats {
                let mut order: Vec<usize> = (0..variants.len()).collect();
                if repeat % 2 == 1 {
                    order.reverse();
                }
                for i in order {
                    let (rate, cpu) = run(&variants[i], load, executions).await;
                    rates[i].push(rate);
                    cpus[i].push(cpu);
                }
            }
            println!("\n## Scheduler policies' cost, {title}: {NODES} nodes, {executions} executions, memory storage, median of {repeats}\n");
            println!("| variant | placements/s | runs | ratio | CPU µs/placement | runs | CPU ratio |");
            println!("|---|---:|---|---:|---:|---|---:|");
            let base = median(rates[0].clone());
            let base_cpu = median(cpus[0].clone());
            for ((v, r), c) in variants.iter().zip(&rates).zip(&cpus) {
                let m = median(r.clone());
                let mc = median(c.clone());
                let runs: Vec<String> = r.iter().map(|x| format!("{x:.0}")).collect();
                let cpu_runs: Vec<String> = c.iter().map(|x| format!("{x:.1}")).collect();
                println!(
                    "| {} | {m:.0} | {} | {:.3} | {mc:.1} | {} | {:.3} |",
                    v.name,
                    runs.join(", "),
                    m / base,
                    cpu_runs.join(", "),
                    mc / base_cpu
                );
            }
            println!("\nPaired, {title}: each repeat's variant ÷ that repeat's baseline, median of {repeats} (95 % interval)\n");
            println!("| variant | placements/s ratio | CPU ratio |");
            println!("|---|---:|---:|");
            for ((v, r), c) in variants.iter().zip(&rates).zip(&cpus).skip(1) {
                println!(
                    "| {} | {} | {} |",
                    v.name,
                    paired(r, &rates[0]),
                    paired(c, &cpus[0])
                );
            }
        }
    });
}
