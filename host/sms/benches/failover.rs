//! Failover: three SMS replicas (the `sms` binary of this build) on a three-member etcd cluster,
//! a fake node that follows the leader, and a client that submits an execution every 20 ms. The
//! leader is `kill -9`ed, then started again as a standby, `KILLS` times; for each kill, the time
//! from the kill to the first assignment the node gets from the new leader. Printed: each time,
//! p50 and max, and their ratio to the lease TTL (the in-run baseline: a dead leader's lease
//! runs out only after it, so no failover is faster).
//!
//! `cargo bench -p spear-sms --bench failover` (10 kills; `-- quick`: 3).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use spear_proto::v1;
use spear_tests::etcd::EtcdCluster;
use spear_tests::guest;

#[path = "../tests/all/common/follow.rs"]
mod follow;

/// The replicas' lease TTL, seconds.
const TTL: u64 = 2;

/// One SMS replica: its sandbox and, while it runs, its process and addresses.
struct Replica {
    dir: tempfile::TempDir,
    child: Option<Child>,
    http: String,
    grpc: String,
}

impl Replica {
    fn new(endpoints: &[String]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let plugins = dir.path().join("plugins");
        std::fs::create_dir(&plugins).unwrap();
        for (form, file) in [
            ("native", "etcd.so"),
            ("component", "least-connections.wasm"),
        ] {
            std::fs::copy(guest(form, file), plugins.join(file)).unwrap();
        }
        std::fs::write(
            dir.path().join("sms.toml"),
            format!(
                "[http]\naddr = \"127.0.0.1:0\"\n[grpc]\naddr = \"127.0.0.1:0\"\n\
                 [database]\ndb_type = \"etcd\"\nendpoints = {endpoints:?}\nprefix = \"bench/\"\n\
                 [ha]\nlease_ttl_secs = {TTL}\n[files]\ndir = \"files\"\n\
                 [plugins]\ndir = \"plugins\"\n[scheduler]\nstrategy = \"least-connections\"\n"
            ),
        )
        .unwrap();
        let mut r = Self {
            dir,
            child: None,
            http: String::new(),
            grpc: String::new(),
        };
        r.start();
        r
    }

    /// Start (again) on free ports; its ready line gives the addresses.
    fn start(&mut self) {
        let mut child = Command::new(env!("CARGO_BIN_EXE_sms"))
            .current_dir(self.dir.path())
            .args(["--config", "sms.toml"])
            .env("SMS_LOG", "error")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let field = |name: &str| {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(&format!("{name}=")))
                .unwrap_or_else(|| panic!("no {name}= in {line:?}"))
                .to_owned()
        };
        self.http = field("http");
        self.grpc = field("grpc");
        self.child = Some(child);
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The index of the replica whose `/healthz` says it leads (waiting up to 30 s).
async fn leader(c: &reqwest::Client, replicas: &[Replica]) -> usize {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        for (i, r) in replicas.iter().enumerate() {
            if r.child.is_none() {
                continue;
            }
            let answer = c
                .get(format!("http://{}/healthz", r.http))
                .timeout(Duration::from_millis(500))
                .send()
                .await;
            if let Ok(a) = answer
                && a.json::<serde_json::Value>().await.unwrap_or_default()["role"] == "leader"
            {
                return i;
            }
        }
        assert!(Instant::now() < deadline, "no replica leads");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Assignments the node got: when, and from which gRPC address.
type Seen = Arc<Mutex<Vec<(Instant, String)>>>;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let quick = std::env::args().any(|a| a == "quick");
    let kills = if quick { 3 } else { 10 };
    let etcd = EtcdCluster::start(3);
    let endpoints = etcd.endpoints();
    let mut replicas: Vec<Replica> = (0..3).map(|_| Replica::new(&endpoints)).collect();
    let c = reqwest::Client::new();
    let first = leader(&c, &replicas).await;

    let mut nodes = v1::node_service_client::NodeServiceClient::connect(format!(
        "http://{}",
        replicas[first].grpc
    ))
    .await
    .unwrap();
    let uuid = nodes
        .register_node(v1::RegisterNodeRequest {
            ip_address: "127.0.0.1".into(),
            port: 9000,
            capacity: Some(v1::Resources {
                cpu_millis: 1_000_000,
                memory_mb: 1 << 20,
                disk_mb: 0,
            }),
            executors: vec!["wasm".into()],
            slots: 1000,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .uuid;
    let addrs = Arc::new(Mutex::new(
        replicas.iter().map(|r| r.grpc.clone()).collect::<Vec<_>>(),
    ));
    let seen: Seen = Arc::default();
    let noted = seen.clone();
    let _node = follow::follow_leader(uuid, addrs.clone(), move |addr, _| {
        noted
            .lock()
            .unwrap()
            .push((Instant::now(), addr.to_owned()));
    });
    let urls = Arc::new(Mutex::new(
        replicas.iter().map(|r| r.http.clone()).collect::<Vec<_>>(),
    ));
    let submitting = {
        let (c, urls) = (c.clone(), urls.clone());
        tokio::spawn(async move {
            let body = serde_json::json!({"executable": {"type": "wasm", "uri": "file:///f.wasm"}});
            loop {
                let list = urls.lock().unwrap().clone();
                for url in list {
                    let sent = c
                        .post(format!("http://{url}/api/v1/executions"))
                        .json(&body)
                        .timeout(Duration::from_secs(2))
                        .send()
                        .await;
                    if sent.is_ok_and(|r| r.status() == 201) {
                        break;
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };

    let mut times = Vec::new();
    for kill in 0..kills {
        let old = leader(&c, &replicas).await;
        let old_grpc = replicas[old].grpc.clone();
        // The node takes work from the leader before it dies.
        let settle = Instant::now();
        while !seen
            .lock()
            .unwrap()
            .iter()
            .any(|(t, a)| *t >= settle && *a == old_grpc)
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        replicas[old].kill();
        let killed = Instant::now();
        let deadline = killed + Duration::from_secs(60);
        let took = loop {
            let first_new = seen
                .lock()
                .unwrap()
                .iter()
                .find(|(t, a)| *t >= killed && *a != old_grpc)
                .map(|(t, _)| *t - killed);
            if let Some(took) = first_new {
                break took;
            }
            assert!(
                Instant::now() < deadline,
                "no placement within 60 s of kill {kill}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        println!(
            "kill {kill}: first placement by the new leader after {} ms",
            took.as_millis()
        );
        times.push(took);
        // Back as a standby (new ports: the node and the client learn them).
        replicas[old].start();
        addrs.lock().unwrap()[old] = replicas[old].grpc.clone();
        urls.lock().unwrap()[old] = replicas[old].http.clone();
    }
    submitting.abort();
    times.sort();
    let ttl = Duration::from_secs(TTL);
    let (p50, max) = (percentile(&times, 0.5), *times.last().unwrap());
    println!(
        "failover over {kills} kills (lease TTL {TTL} s): p50 {} ms ({:.2}× the TTL), max {} ms ({:.2}× the TTL)",
        p50.as_millis(),
        p50.as_secs_f64() / ttl.as_secs_f64(),
        max.as_millis(),
        max.as_secs_f64() / ttl.as_secs_f64()
    );
}
