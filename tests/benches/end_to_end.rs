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
//! With `-- auth` (issue 10), the same workloads run on a cluster with SMS's auth off, on (every
//! call with a bearer token: the client an operator's, each Spearlet its node's, all made with
//! `sms token create`), and on with TLS (REST and gRPC under TLS, the Spearlets with client
//! certificates: mTLS), in turn, three rounds; each round also times REST submissions alone (SMS
//! with no node: 20,000 submissions stored and queued, 64 in flight on connections opened before
//! the clock starts; submits per second and SMS's CPU per submit); the ratios of the means to
//! "off" are printed, and the medians of each round's own ratios. The client speaks HTTP/1.1 in
//! every setting (`h2`: HTTP/2 where TLS offers it, as reqwest, curl and browsers do). `rounds=N`
//! sets the rounds;
//! `only=tls` (or `off`, `auth`) runs one setting alone, and `submits-only` the REST submissions
//! alone, to profile them.
//!
//! Run: `cargo build --release -p spear-sms -p spear-spearlet && cargo bench -p spear-tests
//! --bench end_to_end` (`-- quick` for 1,000 and 100). Results are kept in `docs/benchmarks.md`.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{Value, json};
use spear_tests::certs::Ca;
use spear_tests::guest;
use spear_tests::process::{field, first_line};

const SLOTS: u32 = 16;
const IN_FLIGHT: usize = 64;

/// A child process, killed on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A release binary of the workspace.
fn release_bin(name: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/release")
        .join(name);
    assert!(
        path.is_file(),
        "{} is missing: run `cargo build --release -p spear-sms -p spear-spearlet` first",
        path.display()
    );
    path
}

/// Clock ticks per second, for `/proc/<pid>/stat`.
fn clock_ticks() -> f64 {
    let out = Command::new("getconf").arg("CLK_TCK").output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

/// (own user+system, waited-for children's user+system) CPU of `pid`, in ms.
fn cpu_ms(pid: u32, ticks: f64) -> (f64, f64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which may hold spaces) close with ')'.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<f64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0.0))
        .collect();
    // utime, stime, cutime, cstime are fields 14..17 of the line: 11..14 after the state.
    let ms = |t: f64| t * 1000.0 / ticks;
    (ms(f[11] + f[12]), ms(f[13] + f[14]))
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 * p) as usize).min(sorted.len() - 1);
    sorted[i].as_secs_f64() * 1000.0
}

struct Cluster {
    _dir: tempfile::TempDir,
    sms: Proc,
    nodes: Vec<Proc>,
    http: String,
    /// The CA of SMS's certificate, under TLS.
    ca: Option<String>,
    /// The client's token, when SMS checks them.
    token: Option<String>,
}

/// `sms token create` on the stopped SMS's state in `root`; the token.
fn offline_token(root: &Path, role: &str, name: &str) -> String {
    let out = Command::new(release_bin("sms"))
        .current_dir(root)
        .args(["--config", "sms.toml", "token", "create", "--role", role])
        .args(["--name", name])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

impl Cluster {
    /// With `sec`urity off, auth on (every call with a token), or auth and TLS on; `nodes`
    /// Spearlets (0 to 2).
    fn start(sec: Sec, nodes: usize) -> Self {
        let secure = sec != Sec::Off;
        let tls = sec == Sec::AuthTls;
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let plugins = root.join("plugins");
        std::fs::create_dir(&plugins).unwrap();
        for file in ["redb.so", "process.so"] {
            std::fs::copy(guest("native", file), plugins.join(file)).unwrap();
        }
        std::fs::copy(
            guest("component", "least-connections.wasm"),
            plugins.join("least-connections.wasm"),
        )
        .unwrap();
        let ca = tls.then(|| {
            let ca = Ca::new("bench CA");
            ca.write(&root.join("ca.pem"));
            ca.server(&["127.0.0.1"])
                .write(&root.join("sms.pem"), &root.join("sms-key.pem"));
            ca.client("nodes")
                .write(&root.join("node.pem"), &root.join("node-key.pem"));
            ca.pem()
        });
        let on = if tls { "enable_tls = true\n" } else { "" };
        std::fs::write(
            root.join("sms.toml"),
            format!(
                "[http]\naddr = \"127.0.0.1:0\"\n{on}[grpc]\naddr = \"127.0.0.1:0\"\n{on}\
                 [database]\ndb_type = \"redb\"\npath = \"sms-data/sms.redb\"\n\
                 [files]\ndir = \"sms-data/files\"\n[plugins]\ndir = \"plugins\"\n\
                 [scheduler]\nstrategy = \"least-connections\"\n{}",
                if tls {
                    "[tls]\ncert_file = \"sms.pem\"\nkey_file = \"sms-key.pem\"\nclient_ca_file = \"ca.pem\"\n"
                } else {
                    ""
                }
            ),
        )
        .unwrap();
        if secure {
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(root.join("sms.toml"))
                .unwrap();
            std::io::Write::write_all(&mut f, b"[auth]\nenabled = true\n").unwrap();
        }
        let token = |role: &str, name: &str| secure.then(|| offline_token(root, role, name));
        // Every token before SMS starts: the offline command opens its database.
        let client_token = token("operator", "bench");
        let node_tokens = [token("node", "a"), token("node", "b")];
        let mut sms = Command::new(release_bin("sms"))
            .current_dir(root)
            .args(["--config", "sms.toml"])
            .env("SMS_LOG", "warn")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let line = first_line(&mut sms);
        let (http, grpc) = (field(&line, "http"), field(&line, "grpc"));
        let nodes = ["a", "b"]
            .iter()
            .zip(node_tokens)
            .take(nodes)
            .map(|(name, node_token)| {
                std::fs::write(
                    root.join(format!("{name}.toml")),
                    format!(
                        "[spearlet]\nnode_name = \"{name}\"\n\
                         [spearlet.grpc]\naddr = \"127.0.0.1:0\"\n\
                         [spearlet.http.server]\naddr = \"127.0.0.1:0\"\n\
                         [spearlet.storage]\nbackend = \"redb\"\ndata_dir = \"{name}-data\"\n\
                         [spearlet.limits]\nmax_concurrent = {SLOTS}\n\
                         [plugins]\ndir = \"plugins\"\n{}",
                        if tls {
                            "[spearlet.tls]\nsms_ca_file = \"ca.pem\"\n\
                             client_cert_file = \"node.pem\"\nclient_key_file = \"node-key.pem\"\n"
                        } else {
                            ""
                        }
                    ),
                )
                .unwrap();
                let mut cmd = Command::new(release_bin("spearlet"));
                cmd.current_dir(root)
                    .args(["--config", &format!("{name}.toml")])
                    .args(["--sms-addr", &grpc.to_string(), "--auto-register"])
                    .env("SPEARLET_LOG", "error")
                    .stdout(Stdio::piped());
                if let Some(t) = node_token {
                    cmd.env("SPEARLET_SMS_TOKEN", t);
                }
                let mut child = cmd.spawn().unwrap();
                first_line(&mut child);
                Proc(child)
            })
            .collect();
        Self {
            _dir: dir,
            sms: Proc(sms),
            nodes,
            http: format!("{}://{http}", if tls { "https" } else { "http" }),
            ca,
            token: client_token,
        }
    }

    /// A client that sends the cluster's token, if any.
    fn client(&self) -> reqwest::Client {
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(t) = &self.token {
            headers.insert(
                reqwest::header::AUTHORIZATION,
                format!("Bearer {t}").parse().unwrap(),
            );
        }
        let mut b = reqwest::Client::builder().default_headers(headers);
        // `h2`: HTTP/2 where TLS offers it (what reqwest, curl and browsers pick); by default
        // HTTP/1.1 in every setting, so that the settings differ by auth and TLS alone.
        if !std::env::args().any(|a| a == "h2") {
            b = b.http1_only();
        }
        if let Some(ca) = &self.ca {
            b = b.tls_certs_only([reqwest::Certificate::from_pem(ca.as_bytes()).unwrap()]);
        }
        b.build().unwrap()
    }

    /// (own, children) CPU ms of SMS and of the Spearlets.
    fn cpu(&self, ticks: f64) -> [(f64, f64); 2] {
        let sms = cpu_ms(self.sms.0.id(), ticks);
        let nodes = self.nodes.iter().fold((0.0, 0.0), |acc, n| {
            let (own, children) = cpu_ms(n.0.id(), ticks);
            (acc.0 + own, acc.1 + children)
        });
        [sms, nodes]
    }
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

fn body() -> Value {
    json!({"executable": {"type": "process", "name": "/bin/true"}, "max_attempts": 1,
        "timeout_ms": 60000})
}

async fn submit(client: &reqwest::Client, http: &str) -> String {
    let r = client
        .post(format!("{http}/api/v1/executions"))
        .json(&body())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let v: Value = r.json().await.unwrap();
    v["execution_id"].as_str().unwrap().to_owned()
}

#[derive(Default)]
struct Figures {
    per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
    cpu_ms: f64,
    detail: String,
}

/// How secured a cluster is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sec {
    Off,
    Auth,
    AuthTls,
}

async fn spear(total: usize, one_by_one: usize, ticks: f64, sec: Sec) -> Figures {
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

/// REST submissions alone: SMS with no node (each execution is stored and queued), `total`
/// submissions with [`IN_FLIGHT`] in flight; (submits per second, SMS CPU ms per submit).
async fn submits(total: usize, ticks: f64, sec: Sec) -> (f64, f64) {
    let cluster = Cluster::start(sec, 0);
    let client = cluster.client();
    let http = cluster.http.clone();
    // Warm: as many connections as will be in flight, their handshakes done before the clock.
    futures::stream::iter(0..IN_FLIGHT)
        .map(|_| submit(&client, &http))
        .buffer_unordered(IN_FLIGHT)
        .collect::<Vec<String>>()
        .await;
    let before = cluster.cpu(ticks)[0].0;
    let start = Instant::now();
    let ids = futures::stream::iter(0..total)
        .map(|_| submit(&client, &http))
        .buffer_unordered(IN_FLIGHT)
        .collect::<Vec<String>>()
        .await;
    let elapsed = start.elapsed();
    assert_eq!(ids.len(), total);
    let cpu = (cluster.cpu(ticks)[0].0 - before) / total as f64;
    (total as f64 / elapsed.as_secs_f64(), cpu)
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
        return auth_on_off(&runtime, total, one_by_one, ticks);
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

/// Rounds of off, auth, auth + TLS in turn.
const ROUNDS: usize = 3;

/// Off, auth, auth + TLS, [`ROUNDS`] times over: each row (end to end, then REST submissions
/// alone), then the ratios of the means to "off".
fn auth_on_off(runtime: &tokio::runtime::Runtime, total: usize, one_by_one: usize, ticks: f64) {
    let rounds = std::env::args()
        .find_map(|a| {
            a.strip_prefix("rounds=")
                .map(|n| n.parse::<usize>().expect("rounds=N"))
        })
        .unwrap_or(ROUNDS);
    println!(
        "{total} x /bin/true, {IN_FLIGHT} submissions in flight, 2 Spearlets x {SLOTS} slots, SMS on redb; \
         one at a time: {one_by_one} runs; then {} REST submissions to SMS alone; off, auth, \
         auth + TLS (mTLS for nodes) in turn, {rounds} rounds",
        4 * total
    );
    println!(
        "| security | exec/s | one at a time p50 / p99 ms | CPU ms per execution | submits/s | SMS CPU ms per submit | CPU detail |"
    );
    println!("|---|---:|---:|---:|---:|---:|---|");
    // `only=off|auth|tls` runs one setting (to profile it, say).
    let only = std::env::args().find_map(|a| match a.strip_prefix("only=") {
        Some("off") => Some(Sec::Off),
        Some("auth") => Some(Sec::Auth),
        Some("tls") => Some(Sec::AuthTls),
        Some(other) => panic!("only={other}: off, auth or tls"),
        None => None,
    });
    // `submits-only` skips the end-to-end workloads.
    let submits_only = std::env::args().any(|a| a == "submits-only");
    let mut rows: Vec<(Sec, Figures, (f64, f64))> = Vec::new();
    for _ in 0..rounds {
        for sec in [Sec::Off, Sec::Auth, Sec::AuthTls] {
            if only.is_some_and(|o| o != sec) {
                continue;
            }
            let f = if submits_only {
                Figures::default()
            } else {
                runtime.block_on(spear(total, one_by_one, ticks, sec))
            };
            let s = runtime.block_on(submits(4 * total, ticks, sec));
            println!(
                "| {} | {:.0} | {:.2} / {:.2} | {:.2} | {:.0} | {:.3} | {} |",
                label(sec),
                f.per_sec,
                f.p50_ms,
                f.p99_ms,
                f.cpu_ms,
                s.0,
                s.1,
                f.detail
            );
            rows.push((sec, f, s));
        }
    }
    let mean = |sec: Sec, f: &dyn Fn(&Figures, (f64, f64)) -> f64| {
        let v: Vec<f64> = rows
            .iter()
            .filter(|r| r.0 == sec)
            .map(|r| f(&r.1, r.2))
            .collect();
        v.iter().sum::<f64>() / v.len() as f64
    };
    if only.is_some() {
        return;
    }
    for sec in [Sec::Auth, Sec::AuthTls] {
        let ratio = |f: &dyn Fn(&Figures, (f64, f64)) -> f64| mean(sec, f) / mean(Sec::Off, f);
        println!(
            "{} / off: {:.3}x the exec/s, {:.3}x the p50, {:.3}x the CPU per execution; \
             {:.3}x the submits/s, {:.3}x SMS's CPU per submit",
            label(sec),
            ratio(&|f, _| f.per_sec),
            ratio(&|f, _| f.p50_ms),
            ratio(&|f, _| f.cpu_ms),
            ratio(&|_, s| s.0),
            ratio(&|_, s| s.1),
        );
    }
    // Each round's setting against that round's "off" (drift of the machine cancels within a
    // round): the median over the rounds.
    let median = |sec: Sec, f: &dyn Fn(&Figures, (f64, f64)) -> f64| {
        let mut v: Vec<f64> = rows
            .chunks(3)
            .map(|round| {
                let of = |s: Sec| round.iter().find(|r| r.0 == s).map(|r| f(&r.1, r.2));
                of(sec).unwrap_or(f64::NAN) / of(Sec::Off).unwrap_or(f64::NAN)
            })
            .collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    for sec in [Sec::Auth, Sec::AuthTls] {
        let exec = if submits_only {
            String::new()
        } else {
            format!(
                "{:.3}x the exec/s, {:.3}x the CPU per execution; ",
                median(sec, &|f, _| f.per_sec),
                median(sec, &|f, _| f.cpu_ms)
            )
        };
        println!(
            "{} / off, median of the {rounds} rounds' own ratios: {exec}{:.3}x the submits/s, \
             {:.3}x SMS's CPU per submit",
            label(sec),
            median(sec, &|_, s| s.0),
            median(sec, &|_, s| s.1),
        );
    }
}

fn label(sec: Sec) -> &'static str {
    match sec {
        Sec::Off => "off",
        Sec::Auth => "auth",
        Sec::AuthTls => "auth + TLS",
    }
}
