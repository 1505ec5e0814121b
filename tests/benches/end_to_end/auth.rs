//! `-- auth` (issue 10): the workloads with security off, auth on, and auth and TLS on.
//!
//! The end-to-end workloads run a cluster per setting in turn, `rounds=N` times (3 by default).
//! The REST submissions alone run on three SMS processes started together (one per setting, no
//! node: each execution is stored and queued) and are timed in blocks of [`BLOCK`] submissions
//! taken from each setting in turn (the order rotating from block to block), `blocks=N` per
//! setting (20 by default): the machine's drift, which on this VM moves one setting's rate by
//! ±10 % from one run to the next, reaches the three settings alike.

use std::time::Instant;

use futures::StreamExt;

use crate::cluster::{Cluster, Sec, cpu_ms, label, submit};
use crate::{Figures, IN_FLIGHT, SLOTS, spear};

/// End-to-end rounds of off, auth, auth + TLS in turn.
const ROUNDS: usize = 3;

/// Blocks of REST submissions per setting.
const BLOCKS: usize = 20;

/// REST submissions per block.
const BLOCK: usize = 1_000;

/// `name=N` from the command line.
fn arg(name: &str) -> Option<usize> {
    std::env::args().find_map(|a| {
        a.strip_prefix(name)
            .and_then(|rest| rest.strip_prefix('='))
            .map(|n| n.parse().unwrap_or_else(|_| panic!("{name}=N")))
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The settings run (`only=off|auth|tls` keeps one, to profile it), the end-to-end workloads
/// (unless `submits-only`), then the REST submissions alone; ratios to "off".
pub fn auth_on_off(runtime: &tokio::runtime::Runtime, total: usize, one_by_one: usize, ticks: f64) {
    let rounds = arg("rounds").unwrap_or(ROUNDS);
    let blocks = arg("blocks").unwrap_or(BLOCKS);
    let only = std::env::args().find_map(|a| match a.strip_prefix("only=") {
        Some("off") => Some(Sec::Off),
        Some("auth") => Some(Sec::Auth),
        Some("tls") => Some(Sec::AuthTls),
        Some(other) => panic!("only={other}: off, auth or tls"),
        None => None,
    });
    let settings: Vec<Sec> = [Sec::Off, Sec::Auth, Sec::AuthTls]
        .into_iter()
        .filter(|s| only.is_none_or(|o| o == *s))
        .collect();
    if !std::env::args().any(|a| a == "submits-only") {
        end_to_end(runtime, total, one_by_one, ticks, rounds, &settings);
    }
    let measured = runtime.block_on(submits(blocks, ticks, &settings));
    println!(
        "\n{} REST submissions per setting to SMS alone, {IN_FLIGHT} in flight, in blocks of \
         {BLOCK} taken from each setting in turn",
        blocks * BLOCK
    );
    println!("| security | submits/s | SMS CPU ms per submit | client CPU ms per submit |");
    println!("|---|---:|---:|---:|");
    let sum = |sec: Sec, f: &dyn Fn(&Block) -> f64| -> f64 {
        measured.iter().filter(|b| b.sec == sec).map(f).sum()
    };
    let n = (blocks * BLOCK) as f64;
    let figures = |sec: Sec| {
        (
            n / sum(sec, &|b| b.secs),
            sum(sec, &|b| b.sms_cpu_ms) / n,
            sum(sec, &|b| b.client_cpu_ms) / n,
        )
    };
    for &sec in &settings {
        let (rate, sms, client) = figures(sec);
        println!("| {} | {rate:.0} | {sms:.4} | {client:.4} |", label(sec));
    }
    if settings.len() < 3 {
        return;
    }
    let off = figures(Sec::Off);
    for sec in [Sec::Auth, Sec::AuthTls] {
        let it = figures(sec);
        // Block by block: this setting's block against the "off" block of the same turn.
        let per_block = median(
            (0..blocks)
                .map(|i| {
                    let secs = |s: Sec| measured.iter().filter(|b| b.sec == s).nth(i).unwrap().secs;
                    secs(Sec::Off) / secs(sec)
                })
                .collect(),
        );
        println!(
            "{} / off: {:.3}x the submits/s (median of the blocks' own ratios {per_block:.3}x), \
             {:.3}x SMS's CPU per submit, {:.3}x the client's",
            label(sec),
            it.0 / off.0,
            it.1 / off.1,
            it.2 / off.2,
        );
    }
}

/// The end-to-end workloads, `rounds` times over the settings; the ratios of the means to "off"
/// and the medians of each round's own ratios.
fn end_to_end(
    runtime: &tokio::runtime::Runtime,
    total: usize,
    one_by_one: usize,
    ticks: f64,
    rounds: usize,
    settings: &[Sec],
) {
    println!(
        "{total} x /bin/true, {IN_FLIGHT} submissions in flight, 2 Spearlets x {SLOTS} slots, \
         SMS on redb; one at a time: {one_by_one} runs; off, auth, auth + TLS (mTLS for nodes) \
         in turn, {rounds} rounds"
    );
    println!(
        "| security | exec/s | one at a time p50 / p99 ms | CPU ms per execution | CPU detail |"
    );
    println!("|---|---:|---:|---:|---|");
    let mut rows: Vec<(Sec, Figures)> = Vec::new();
    for _ in 0..rounds {
        for &sec in settings {
            let f = runtime.block_on(spear(total, one_by_one, ticks, sec));
            println!(
                "| {} | {:.0} | {:.2} / {:.2} | {:.2} | {} |",
                label(sec),
                f.per_sec,
                f.p50_ms,
                f.p99_ms,
                f.cpu_ms,
                f.detail
            );
            rows.push((sec, f));
        }
    }
    if settings.len() < 3 {
        return;
    }
    let mean = |sec: Sec, f: &dyn Fn(&Figures) -> f64| {
        let v: Vec<f64> = rows
            .iter()
            .filter(|r| r.0 == sec)
            .map(|r| f(&r.1))
            .collect();
        v.iter().sum::<f64>() / v.len() as f64
    };
    // Each round's setting against that round's "off" (drift of the machine cancels within a
    // round): the median over the rounds.
    let per_round = |sec: Sec, f: &dyn Fn(&Figures) -> f64| {
        median(
            rows.chunks(3)
                .map(|round| {
                    let of = |s: Sec| f(&round.iter().find(|r| r.0 == s).unwrap().1);
                    of(sec) / of(Sec::Off)
                })
                .collect(),
        )
    };
    for sec in [Sec::Auth, Sec::AuthTls] {
        let ratio = |f: &dyn Fn(&Figures) -> f64| mean(sec, f) / mean(Sec::Off, f);
        println!(
            "{} / off: {:.3}x the exec/s, {:.3}x the p50, {:.3}x the CPU per execution; \
             medians of the {rounds} rounds' own ratios: {:.3}x the exec/s, {:.3}x the CPU",
            label(sec),
            ratio(&|f| f.per_sec),
            ratio(&|f| f.p50_ms),
            ratio(&|f| f.cpu_ms),
            per_round(sec, &|f| f.per_sec),
            per_round(sec, &|f| f.cpu_ms),
        );
    }
}

/// One timed block of REST submissions.
struct Block {
    sec: Sec,
    secs: f64,
    sms_cpu_ms: f64,
    client_cpu_ms: f64,
}

/// REST submissions alone: an SMS per setting, started together, with no node; each warmed
/// (as many connections as will be in flight, their handshakes done before any clock), then
/// `blocks` blocks of [`BLOCK`] submissions each, [`IN_FLIGHT`] in flight, the settings in turn.
async fn submits(blocks: usize, ticks: f64, settings: &[Sec]) -> Vec<Block> {
    let clusters: Vec<(Sec, Cluster, reqwest::Client)> = settings
        .iter()
        .map(|&sec| {
            let cluster = Cluster::start(sec, 0);
            let client = cluster.client();
            (sec, cluster, client)
        })
        .collect();
    let run = |client: &reqwest::Client, http: &str, n: usize| {
        let (client, http) = (client.clone(), http.to_owned());
        async move {
            futures::stream::iter(0..n)
                .map(|_| submit(&client, &http))
                .buffer_unordered(IN_FLIGHT)
                .collect::<Vec<String>>()
                .await
                .len()
        }
    };
    for (_, cluster, client) in &clusters {
        run(client, &cluster.http, IN_FLIGHT).await;
    }
    let me = std::process::id();
    let mut measured = Vec::with_capacity(blocks * clusters.len());
    for b in 0..blocks {
        for i in 0..clusters.len() {
            let (sec, cluster, client) = &clusters[(b + i) % clusters.len()];
            let sms_before = cluster.cpu(ticks)[0].0;
            let client_before = cpu_ms(me, ticks).0;
            let start = Instant::now();
            assert_eq!(run(client, &cluster.http, BLOCK).await, BLOCK);
            measured.push(Block {
                sec: *sec,
                secs: start.elapsed().as_secs_f64(),
                sms_cpu_ms: cluster.cpu(ticks)[0].0 - sms_before,
                client_cpu_ms: cpu_ms(me, ticks).0 - client_before,
            });
        }
    }
    measured
}
