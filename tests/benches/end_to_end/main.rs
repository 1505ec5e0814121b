//! End to end through real release `sms` and `spearlet` processes on loopback: `/bin/true` as an
//! inline process execution, on two Spearlets with 16 slots each, SMS on redb (durable), the
//! least-connections strategy. Beside it, in the same run, the machine's limit: a bare fork+exec of
//! `/bin/true` from this process.
//!
//! Workloads (issue 16):
//! - **throughput**: 5,000 submissions, 64 in flight, timed from the first submission to the last
//!   end; executions per second;
//! - **one at a time**: submit, wait for the end, again (300 times); p50 / p99 of submission to the
//!   end event on SMS's event stream (`/api/v1/events`);
//! - **CPU per execution**: user + system time of `sms` and of both `spearlet`s (their own threads;
//!   the workloads' `/bin/true` are counted apart, as "children"), from `/proc`, divided by the
//!   executions.
//!
//! With `-- auth` (issue 10), the same workloads with SMS's auth off, on (every call with a
//! bearer token: the client an operator's, each Spearlet its node's, all made with `sms token
//! create`), and on with TLS (REST and gRPC under TLS, the Spearlets with client certificates:
//! mTLS), and REST submissions alone in each setting; the ratios to "off". The client speaks
//! HTTP/1.1 in every setting (`h2`: HTTP/2 where TLS offers it, as reqwest, curl and browsers
//! do). See [`auth`] for `rounds=N`, `blocks=N`, `only=off|auth|tls` and `submits-only`.
//!
//! With `-- invoke` (issue 13), invocations of a wasm function on live instances through SMS
//! instead ([`invoke`]).
//!
//! Run: `cargo build --release -p spear-sms -p spear-spearlet && cargo bench -p spear-tests
//! --bench end_to_end` (`-- quick` for 1,000 and 100). Results are kept in `docs/benchmarks.md`.

use std::collections::HashSet;
use std::process::Command;
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::Value;

use cluster::{Cluster, Sec, clock_ticks, cpu_ms, submit};

const SLOTS: u32 = 16;
const IN_FLIGHT: usize = 64;

mod auth;
mod cluster;
mod invoke;

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 * p) as usize).min(sorted.len() - 1);
    sorted[i].as_secs_f64() * 1000.0
}

/// Ends of executions, as SMS's event stream tells them: execution id → the state it ended in.
struct Ends {
    rx: tokio::sync::mpsc::UnboundedReceiver<(String, String)>,
}

impl Ends {
    async fn open(client: &reqwest::Client, http: &str) -> Self {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let r = client
            .get(format!("{http}/api/v1/events?follow=true"))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
        tokio::spawn(async move {
            let mut body = r.bytes_stream();
            let mut buf = Vec::new();
            while let Some(Ok(chunk)) = body.next().await {
                buf.extend_from_slice(&chunk);
                while let Some(i) = buf.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = buf.drain(..=i).collect();
                    let Some(data) = line.strip_prefix(b"data:") else {
                        continue;
                    };
                    let Ok(e) = serde_json::from_slice::<Value>(data) else {
                        continue;
                    };
                    let kind = e["kind"].as_str().unwrap_or_default();
                    let end = match kind {
                        "execution.succeeded" => "succeeded",
                        "execution.failed" => "failed",
                        "execution.timed_out" => "timed_out",
                        "execution.cancelled" => "cancelled",
                        _ => continue,
                    };
                    let id = e["subject"].as_str().unwrap_or_default().to_owned();
                    if tx.send((id, end.to_owned())).is_err() {
                        return;
                    }
                }
            }
        });
        Self { rx }
    }

    async fn next(&mut self) -> (String, String) {
        tokio::time::timeout(Duration::from_secs(120), self.rx.recv())
            .await
            .expect("an execution ended within 2 minutes")
            .expect("the event stream is open")
    }
}

#[derive(Default)]
pub struct Figures {
    per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
    cpu_ms: f64,
    detail: String,
}

pub async fn spear(total: usize, one_by_one: usize, ticks: f64, sec: Sec) -> Figures {
    let cluster = Cluster::start(sec, 2);
    let client = cluster.client();
    let http = cluster.http.clone();
    let mut ends = Ends::open(&client, &http).await;
    // Both nodes registered and connected: a warm-up execution per slot.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for _ in 0..(2 * SLOTS) {
        submit(&client, &http).await;
    }
    for _ in 0..(2 * SLOTS) {
        ends.next().await;
    }

    // One at a time.
    let mut lat = Vec::with_capacity(one_by_one);
    for _ in 0..one_by_one {
        let t = Instant::now();
        let id = submit(&client, &http).await;
        loop {
            let (done, state) = ends.next().await;
            if done == id {
                assert_eq!(state, "succeeded");
                break;
            }
        }
        lat.push(t.elapsed());
    }
    lat.sort_unstable();

    // Throughput.
    let before = cluster.cpu(ticks);
    let client_before = cpu_ms(std::process::id(), ticks).0;
    let start = Instant::now();
    let submitter = {
        let (client, http) = (client.clone(), http.clone());
        tokio::spawn(async move {
            futures::stream::iter(0..total)
                .map(|_| submit(&client, &http))
                .buffer_unordered(IN_FLIGHT)
                .collect::<Vec<String>>()
                .await
        })
    };
    let mut seen = HashSet::with_capacity(total);
    let mut failed = 0;
    while seen.len() < total {
        let (id, state) = ends.next().await;
        if seen.insert(id) && state != "succeeded" {
            failed += 1;
        }
    }
    let elapsed = start.elapsed();
    let ids = submitter.await.unwrap();
    assert_eq!(ids.len(), total);
    assert_eq!(failed, 0, "every execution succeeds");
    let after = cluster.cpu(ticks);
    let client = (cpu_ms(std::process::id(), ticks).0 - client_before) / total as f64;
    let per = |i: usize, own: bool| {
        let d = if own {
            after[i].0 - before[i].0
        } else {
            after[i].1 - before[i].1
        };
        d / total as f64
    };
    let (sms, nodes, children) = (per(0, true), per(1, true), per(1, false));
    Figures {
        per_sec: total as f64 / elapsed.as_secs_f64(),
        p50_ms: percentile(&lat, 0.50),
        p99_ms: percentile(&lat, 0.99),
        cpu_ms: sms + nodes,
        detail: format!(
            "sms {sms:.2}, spearlets {nodes:.2}; the workloads themselves {children:.2}; \
             this benchmark's client {client:.2}"
        ),
    }
}

fn fork_exec(total: usize, one_by_one: usize, ticks: f64) -> Figures {
    let true_ = || {
        let s = Command::new("/bin/true").status().unwrap();
        assert!(s.success());
    };
    let mut lat: Vec<Duration> = (0..one_by_one)
        .map(|_| {
            let t = Instant::now();
            true_();
            t.elapsed()
        })
        .collect();
    lat.sort_unstable();
    let me = std::process::id();
    let before = cpu_ms(me, ticks);
    let start = Instant::now();
    let next = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..(2 * SLOTS) {
            s.spawn(|| {
                while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < total {
                    true_();
                }
            });
        }
    });
    let elapsed = start.elapsed();
    let after = cpu_ms(me, ticks);
    let own = (after.0 - before.0) / total as f64;
    let children = (after.1 - before.1) / total as f64;
    Figures {
        per_sec: total as f64 / elapsed.as_secs_f64(),
        p50_ms: percentile(&lat, 0.50),
        p99_ms: percentile(&lat, 0.99),
        cpu_ms: own + children,
        detail: format!("parent {own:.2}, /bin/true {children:.2}"),
    }
}

fn main() {
    let quick = std::env::args().any(|a| a == "quick");
    let auth = std::env::args().any(|a| a == "auth");
    let (total, one_by_one) = if quick { (1000, 100) } else { (5000, 300) };
    let ticks = clock_ticks();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    if auth {
        return auth::auth_on_off(&runtime, total, one_by_one, ticks);
    }
    if std::env::args().any(|a| a == "invoke") {
        return invoke::run(&runtime, quick);
    }
    let bare = fork_exec(total, one_by_one, ticks);
    let ours = runtime.block_on(spear(total, one_by_one, ticks, Sec::Off));
    println!(
        "{total} x /bin/true, {IN_FLIGHT} submissions in flight, 2 Spearlets x {SLOTS} slots, SMS on redb; \
         one at a time: {one_by_one} runs"
    );
    println!(
        "| system | exec/s | one at a time p50 / p99 ms | CPU ms per execution | CPU detail |"
    );
    println!("|---|---:|---:|---:|---|");
    for (name, f) in [("SPEAR-Next", &ours), ("bare fork+exec", &bare)] {
        println!(
            "| {name} | {:.0} | {:.2} / {:.2} | {:.2} | {} |",
            f.per_sec, f.p50_ms, f.p99_ms, f.cpu_ms, f.detail
        );
    }
    println!(
        "against bare fork+exec: {:.2}x its exec/s, {:.2}x its p50, {:.2}x its CPU per execution",
        ours.per_sec / bare.per_sec,
        ours.p50_ms / bare.p50_ms,
        ours.cpu_ms / bare.cpu_ms
    );
}
