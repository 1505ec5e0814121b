//! SMS's memory over a long run (issue 11): resident memory after 10,000 finished executions and
//! after 1,000,000, with the default retention (`[retention]`: 10,000 finished ones in memory,
//! records kept in storage), on redb. The target: the second within 1.5× of the first.
//!
//! SMS runs in this process (`spear_sms::server::start`: its scheduler, retention and listeners);
//! eight fake Spearlets, attached to the same assignment streams gRPC serves, report each
//! assignment a success at once, through the same call the gRPC report takes. Executions are
//! inline `wasm` ones with a small input; 2,048 are kept in flight.
//!
//! Run: `cargo bench -p spear-sms --bench memory` (`-- quick` for 200,000 instead of 1,000,000,
//! `-- long` for 3,000,000); it prints the memory at 10,000, 100,000, 1,000,000 and the end.
//! Results are kept in docs/benchmarks.md.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use spear_sms::executions::{Report, Submit};
use spear_sms::model::{ExecResult, Executable};
use spear_sms::nodes::Heartbeat;
use spear_sms::service::Sms;

use common::{rss_bytes, sandbox, wasm_node};

mod common;

const NODES: usize = 8;
const IN_FLIGHT: u64 = 2_048;

/// Attach the fake Spearlets; the count of results SMS took.
async fn attach(sms: &Arc<Sms>) -> Arc<AtomicU64> {
    let finished = Arc::new(AtomicU64::new(0));
    for i in 0..NODES {
        let node = sms.register_node(wasm_node(i, Some(1_000))).await.unwrap();
        // Alive for the whole run (a run longer than the heartbeat timeout would lose them).
        let (beating, uuid) = (sms.clone(), node.uuid.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let _ = beating.heartbeat(&uuid, Heartbeat::default()).await;
            }
        });
        let mut rx = sms.connect_node(&node.uuid).await.unwrap();
        let (sms, finished) = (sms.clone(), finished.clone());
        tokio::spawn(async move {
            while let Some(out) = rx.recv().await {
                let spear_sms::outbox::Outgoing::Assignment(a) = *out else {
                    continue;
                };
                if a.cancel {
                    continue;
                }
                let (sms, finished, uuid) = (sms.clone(), finished.clone(), node.uuid.clone());
                tokio::spawn(async move {
                    let e = a.execution;
                    sms.report_result(Report {
                        session: sms.session.clone(),
                        node_uuid: uuid,
                        execution_id: e.execution_id,
                        success: true,
                        result: Some(ExecResult {
                            stdout: "done\n".into(),
                            duration_ms: 1,
                            ..ExecResult::default()
                        }),
                        error: String::new(),
                        attempt: e.attempt,
                        ..Report::default()
                    })
                    .await
                    .unwrap();
                    finished.fetch_add(1, Ordering::Relaxed);
                });
            }
        });
    }
    finished
}

/// Submit until `target` executions were submitted, keeping at most [`IN_FLIGHT`] unfinished.
async fn submit_until(
    sms: &Arc<Sms>,
    submitted: &Arc<AtomicU64>,
    finished: &Arc<AtomicU64>,
    target: u64,
) {
    let mut handles = Vec::new();
    for _ in 0..32 {
        let (sms, submitted, finished) = (sms.clone(), submitted.clone(), finished.clone());
        handles.push(tokio::spawn(async move {
            loop {
                let n = submitted.load(Ordering::Relaxed);
                if n >= target {
                    return;
                }
                if n - finished.load(Ordering::Relaxed) >= IN_FLIGHT {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    continue;
                }
                if submitted
                    .compare_exchange(n, n + 1, Ordering::Relaxed, Ordering::Relaxed)
                    .is_err()
                {
                    continue;
                }
                sms.submit(Submit {
                    executable: Some(Executable {
                        kind: "wasm".into(),
                        uri: "file:///bench.wasm".into(),
                        ..Executable::default()
                    }),
                    stdin: format!("input {n}\n"),
                    ..Submit::default()
                })
                .await
                .unwrap();
            }
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
    let start = Instant::now();
    while finished.load(Ordering::Relaxed) < target {
        assert!(
            start.elapsed() < Duration::from_secs(600),
            "stalled at {} finished of {target}",
            finished.load(Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Resident memory once the retention had time to trim memory (it runs every second).
async fn settled_rss() -> u64 {
    tokio::time::sleep(Duration::from_secs(3)).await;
    rss_bytes()
}

fn mib(b: u64) -> f64 {
    b as f64 / (1024.0 * 1024.0)
}

fn main() {
    let quick = std::env::args().any(|a| a == "quick");
    let total: u64 = if quick {
        200_000
    } else if std::env::args().any(|a| a == "long") {
        3_000_000
    } else {
        1_000_000
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (_dir, config) = sandbox("redb");
        let running = spear_sms::server::start(config).await.unwrap();
        let sms = running.sms.clone();
        let finished = attach(&sms).await;
        let submitted = Arc::new(AtomicU64::new(0));
        let start = Instant::now();
        submit_until(&sms, &submitted, &finished, 10_000).await;
        let early = settled_rss().await;
        let t = Instant::now();
        let mut rows = Vec::new();
        let mut marks = vec![100_000, 1_000_000.min(total), total];
        marks.dedup();
        for at in marks {
            submit_until(&sms, &submitted, &finished, at).await;
            rows.push((at, settled_rss().await));
        }
        let rate = (total - 10_000) as f64 / (t.elapsed().as_secs_f64() - 3.0 * rows.len() as f64);
        let page = sms
            .executions(&spear_sms::query::ExecQuery {
                limit: Some(1),
                newest_first: true,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(page.executions.len(), 1, "the newest is listed");
        println!("\n## SMS memory with the default retention (redb)\n");
        println!("| finished executions | resident memory | ratio to 10,000 |");
        println!("|---:|---:|---:|");
        println!("| 10,000 | {:.1} MiB | 1.00× |", mib(early));
        for (at, rss) in rows {
            println!(
                "| {at} | {:.1} MiB | {:.2}× (target ≤ 1.5×) |",
                mib(rss),
                rss as f64 / early as f64
            );
        }
        println!(
            "\n{:.0} executions/s from 10,000 to {total} (submit → result taken, {IN_FLIGHT} in flight); {:.0} s in all.",
            rate,
            start.elapsed().as_secs_f64()
        );
        running.shutdown().await;
    });
}
