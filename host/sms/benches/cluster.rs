//! SMS under a simulated cluster: fake Spearlets attached in-process (the same assignment streams
//! the gRPC `Assignments` call serves, without the sockets).
//!
//! Run: `cargo bench -p spear-sms --bench cluster` (`-- quick` for a short run; `-- grpc`: only
//! the rows over real gRPC).
//!
//! Measures, for 1,000 and 10,000 nodes: placements per second from submit to the assignment
//! arriving at its node, p50/p99 of submit → assigned and submit → delivered, heartbeats absorbed
//! per second, and resident memory per idle node. Baselines in the same run: the same workload on
//! the `memory` storage backend (no disk), to show what durability costs; `redb`; and `etcd`, a
//! three-member cluster on the same machine, SMS elected and its writes fenced as a replica's.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use spear_sms::executions::Submit;
use spear_sms::model::{Executable, now_ms};
use spear_sms::nodes::Heartbeat;
use spear_sms::service::Sms;

use common::{rss_bytes, sandbox, sandbox_on_etcd_with, wasm_node};

/// A name no earlier run used.
fn uuid_like() -> String {
    format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    )
}

mod common;

struct Row {
    nodes: usize,
    db: &'static str,
    placements_per_s: f64,
    assigned_p50: i64,
    assigned_p99: i64,
    delivered_p50: i64,
    delivered_p99: i64,
}

async fn attach(
    sms: &Arc<Sms>,
    n: usize,
    connect: bool,
) -> (
    Vec<String>,
    Arc<AtomicU64>,
    Arc<std::sync::Mutex<Vec<(i64, i64)>>>,
) {
    let delivered = Arc::new(AtomicU64::new(0));
    let latencies = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut uuids = Vec::with_capacity(n);
    for i in 0..n {
        let node = sms.register_node(wasm_node(i, None)).await.unwrap();
        if !connect {
            uuids.push(node.uuid);
            continue;
        }
        let mut rx = sms.connect_node(&node.uuid).await.unwrap();
        let (d, l) = (delivered.clone(), latencies.clone());
        tokio::spawn(async move {
            while let Some(out) = rx.recv().await {
                let spear_sms::outbox::Outgoing::Assignment(a) = *out else {
                    continue;
                };
                let e = a.execution;
                let now = now_ms();
                l.lock().unwrap().push((
                    e.assigned_at_ms - e.submitted_at_ms,
                    now - e.submitted_at_ms,
                ));
                d.fetch_add(1, Ordering::Relaxed);
            }
        });
        uuids.push(node.uuid);
    }
    (uuids, delivered, latencies)
}

fn pct(v: &mut [i64], p: f64) -> i64 {
    v.sort_unstable();
    v[((v.len() as f64 * p) as usize).min(v.len() - 1)]
}

/// Submit `executions` as fast as 256 submitters can (`rate` = None), or paced at `rate` per second
/// from one submitter.
async fn placements(
    nodes: usize,
    db: &'static str,
    executions: u64,
    rate: Option<u64>,
    etcd: Option<(&[String], &str)>,
    grpc: bool,
) -> Row {
    let (_dir, running, _candidate) = match etcd {
        None => {
            let (dir, config) = sandbox(db);
            (dir, spear_sms::server::start(config).await.unwrap(), None)
        }
        Some((endpoints, database)) => {
            // As a replica would: elected, every write fenced. A namespace of its own per run.
            let prefix = format!("bench-{}/", uuid_like());
            let (dir, config) = sandbox_on_etcd_with(endpoints, &prefix, database);
            let candidate = spear_sms::ha::Candidate::join(&config).await.unwrap();
            let me = spear_sms::ha::LeaderInfo {
                id: prefix.clone(),
                http: "127.0.0.1:1".into(),
                grpc: "127.0.0.1:2".into(),
                admin: None,
            };
            let won = candidate.campaign(&me).await.unwrap();
            let prepared = spear_sms::server::prepare(&config).await.unwrap();
            let listeners = spear_sms::server::Listeners::bind(&config).unwrap();
            let running = spear_sms::server::start_on(config, prepared, &listeners, Some(&won))
                .await
                .unwrap();
            (dir, running, Some(candidate))
        }
    };
    let sms = running.sms.clone();
    let (delivered, latencies) = if grpc {
        attach_grpc(running.grpc_addr, nodes).await
    } else {
        let (_uuids, delivered, latencies) = attach(&sms, nodes, true).await;
        (delivered, latencies)
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let start = Instant::now();
    let submitters = if rate.is_some() { 1 } else { 256 };
    let per = executions / submitters;
    let mut handles = Vec::new();
    for _ in 0..submitters {
        let sms = sms.clone();
        handles.push(tokio::spawn(async move {
            let paced = Instant::now();
            for i in 0..per {
                if let Some(rate) = rate {
                    let due = Duration::from_secs_f64(i as f64 / rate as f64);
                    if let Some(wait) = due.checked_sub(paced.elapsed()) {
                        tokio::time::sleep(wait).await;
                    }
                }
                sms.submit(Submit {
                    executable: Some(Executable {
                        kind: "wasm".into(),
                        uri: "file:///bench.wasm".into(),
                        ..Executable::default()
                    }),
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
    let total = per * submitters;
    while delivered.load(Ordering::Relaxed) < total {
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "placements stalled at {}",
            delivered.load(Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let lat = latencies.lock().unwrap().clone();
    let (mut assigned, mut delivered_ms): (Vec<i64>, Vec<i64>) = lat.into_iter().unzip();
    let fallback = sms.plugins().telemetry().fallback_decisions_of("scheduler");
    assert_eq!(fallback, 0, "every placement came from the strategy plugin");
    running.shutdown().await;
    Row {
        nodes,
        db,
        placements_per_s: total as f64 / elapsed,
        assigned_p50: pct(&mut assigned, 0.5),
        assigned_p99: pct(&mut assigned, 0.99),
        delivered_p50: pct(&mut delivered_ms, 0.5),
        delivered_p99: pct(&mut delivered_ms, 0.99),
    }
}

/// `n` fake Spearlets on real sockets: each registers over gRPC and opens its assignment stream
/// on a connection of its own, in a task of its own, counting what it receives.
async fn attach_grpc(
    grpc: std::net::SocketAddr,
    n: usize,
) -> (Arc<AtomicU64>, Arc<std::sync::Mutex<Vec<(i64, i64)>>>) {
    use spear_proto::v1;
    let delivered = Arc::new(AtomicU64::new(0));
    let latencies = Arc::new(std::sync::Mutex::new(Vec::new()));
    let url = format!("http://{grpc}");
    let mut nodes = v1::node_service_client::NodeServiceClient::connect(url.clone())
        .await
        .unwrap();
    for i in 0..n {
        let r = wasm_node(i, None);
        let uuid = nodes
            .register_node(v1::RegisterNodeRequest {
                ip_address: r.ip_address,
                port: 9000,
                capacity: Some(v1::Resources {
                    cpu_millis: r.capacity.cpu_millis,
                    memory_mb: r.capacity.memory_mb,
                    disk_mb: 0,
                }),
                executors: r.executors,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .uuid;
        let mut execs = v1::execution_service_client::ExecutionServiceClient::connect(url.clone())
            .await
            .unwrap();
        let mut stream = execs
            .assignments(v1::AssignmentsRequest {
                node_uuid: uuid,
                after: 0,
            })
            .await
            .unwrap()
            .into_inner();
        let (d, l) = (delivered.clone(), latencies.clone());
        tokio::spawn(async move {
            let _execs = execs;
            while let Ok(Some(a)) = stream.message().await {
                let Some(e) = a.execution else { continue };
                let now = now_ms();
                l.lock()
                    .unwrap()
                    .push((e.updated_at_ms - e.submitted_at_ms, now - e.submitted_at_ms));
                d.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    (delivered, latencies)
}

/// Heartbeats per second; resident memory per registered node, and per node with an open
/// assignment stream (including the in-process fake Spearlet's receiving task).
async fn heartbeats(nodes: usize, duration: Duration) -> (f64, f64, f64) {
    let (_dir, config) = sandbox("redb");
    let running = spear_sms::server::start(config).await.unwrap();
    let sms = running.sms.clone();
    // Warm the allocator and the strategy instance so that the first node does not pay for them.
    let _ = attach(&sms, 50, false).await;
    let before = rss_bytes();
    let (uuids, _, _) = attach(&sms, nodes, false).await;
    sms.schedule_round().await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let registered = (rss_bytes().saturating_sub(before)) as f64 / nodes as f64;
    let before = rss_bytes();
    let (connected_uuids, _, _) = attach(&sms, nodes, true).await;
    sms.schedule_round().await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let connected = (rss_bytes().saturating_sub(before)) as f64 / nodes as f64;
    let uuids: Vec<String> = uuids.into_iter().chain(connected_uuids).collect();
    let uuids = Arc::new(uuids);
    let count = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut handles = Vec::new();
    for w in 0..8 {
        let (sms, uuids, count) = (sms.clone(), uuids.clone(), count.clone());
        handles.push(tokio::spawn(async move {
            let mut i = w;
            while start.elapsed() < duration {
                let uuid = &uuids[i % uuids.len()];
                sms.heartbeat(
                    uuid,
                    Heartbeat {
                        running: Some(1),
                        ..Heartbeat::default()
                    },
                )
                .await
                .unwrap();
                count.fetch_add(1, Ordering::Relaxed);
                i += 8;
            }
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
    let rate = count.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64();
    running.shutdown().await;
    (rate, registered, connected)
}

fn main() {
    let quick = std::env::args().any(|a| a == "quick");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let executions = if quick { 5_000 } else { 40_000 };
        println!("\n## SMS placements, in-process fake Spearlets, least-connections component\n");
        println!("Saturated: {executions} executions from 256 concurrent submitters (latency includes queueing). Paced: 5,000/s from one submitter, each submit awaited (on redb that caps it at one durable commit per submit).\n");
        println!("| nodes | storage | load | placements/s | submit→assigned p50 ms | p99 ms | submit→delivered p50 ms | p99 ms |");
        println!("|---:|---|---|---:|---:|---:|---:|---:|");
        // Three-member etcd clusters on this machine, for the `etcd` rows: one with etcd's
        // default limits (128 operations a transaction), one taking 1,024.
        // `SPEAR_BENCH_ONLY=redb` (a comma-separated list of storages): only those rows, and
        // no etcd cluster unless an etcd row is among them (idle members cost CPU the rows share).
        let only = std::env::var("SPEAR_BENCH_ONLY").ok();
        let wanted = |db: &str| only.as_deref().is_none_or(|o| o.split(',').any(|w| w == db));
        let etcd = wanted("etcd").then(|| spear_tests::etcd::EtcdCluster::start(3));
        let endpoints = etcd.as_ref().map(|c| c.endpoints()).unwrap_or_default();
        let wide = wanted("etcd-1024")
            .then(|| spear_tests::etcd::EtcdCluster::start_with(3, &["--max-txn-ops", "1024"]));
        let wide_endpoints = wide.as_ref().map(|c| c.endpoints()).unwrap_or_default();
        let etcd_of = |db: &str| -> Option<(&[String], &str)> {
            match db {
                "etcd" => Some((endpoints.as_slice(), "")),
                "etcd-1024" => Some((wide_endpoints.as_slice(), "max_txn_ops = 1024")),
                _ => None,
            }
        };
        // `-- grpc`: only the rows over real gRPC (for profiling them).
        let only_grpc = std::env::args().any(|a| a == "grpc");
        for nodes in [1_000usize, 10_000].into_iter().filter(|_| !only_grpc) {
            for db in ["memory", "redb", "etcd", "etcd-1024"].into_iter().filter(|db| wanted(db)) {
                for (load, rate, n) in [("saturated", None, executions), ("paced 5,000/s", Some(5_000), if quick { 5_000 } else { 15_000 })] {
                    let r = placements(nodes, db, n, rate, etcd_of(db), false).await;
                    println!(
                        "| {} | {} | {load} | {:.0} | {} | {} | {} | {} |",
                        r.nodes, r.db, r.placements_per_s, r.assigned_p50, r.assigned_p99, r.delivered_p50, r.delivered_p99
                    );
                }
            }
        }
        println!("\n## Over real gRPC: 1,000 fake Spearlets, each its own connection and stream\n");
        println!("| nodes | storage | placements/s (saturated) | submit→assigned p50 ms | p99 ms | submit→delivered p50 ms | p99 ms |");
        println!("|---:|---|---:|---:|---:|---:|---:|");
        for db in ["redb", "etcd", "etcd-1024"].into_iter().filter(|db| wanted(db)) {
            let r = placements(1_000, db, executions, None, etcd_of(db), true).await;
            println!(
                "| {} | {} | {:.0} | {} | {} | {} | {} |",
                r.nodes, r.db, r.placements_per_s, r.assigned_p50, r.assigned_p99, r.delivered_p50, r.delivered_p99
            );
        }
        if only_grpc {
            return;
        }
        println!("\n## Heartbeats and memory\n");
        println!("| nodes | heartbeats/s (8 concurrent senders) | resident memory per registered idle node | per connected idle node (with its in-process receiver) |");
        println!("|---:|---:|---:|---:|");
        for nodes in [1_000usize, 10_000] {
            let (rate, registered, connected) = heartbeats(nodes, Duration::from_secs(if quick { 1 } else { 3 })).await;
            println!("| {nodes} (+{nodes} connected) | {rate:.0} | {:.2} KiB | {:.2} KiB |", registered / 1024.0, connected / 1024.0);
        }
    });
}
