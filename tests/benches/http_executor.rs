//! Executor overhead per execution: the `http` executor as a WASM component (through the runtime:
//! every start and inspect a guest call, the request sent by wasi:http on the host's hyper) against
//! a native equivalent (the same POST with reqwest on a tokio runtime, `wait` blocking on it),
//! both calling the same local HTTP server. Prints, per form, the latency of one execution run
//! alone (start to result, p50/p99) and the throughput of 64 in flight at once, and the
//! component's ratios to the native one.
//!
//! Run: `cargo bench -p spear-tests --bench http_executor` (`-- quick` for a short run). Results
//! are kept in `docs/benchmarks.md`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use spear_plugin_api::executor::{
    Capabilities, ExecResult, ExecSpec, ExecState, ExecStats, ExitStatus,
};
use spear_plugin_api::{Executor, PluginError, PluginInfo, PluginKind};
use spear_plugin_runtime::engine::WasmEngine;
use spear_plugin_runtime::grants::{Grant, GrantTable, HttpHost};
use spear_plugin_runtime::{LimitValues, Limits, load_file};
use spear_tests::http_server::HttpServer;
use spear_tests::{guest, percentiles};

/// Executions in flight at once in the throughput run.
const IN_FLIGHT: usize = 64;

/// The native equivalent: POSTs the stdin to the endpoint, the answer's body is the output.
struct NativeHttp {
    rt: tokio::runtime::Runtime,
    client: reqwest::Client,
    endpoint: String,
    work: Mutex<HashMap<String, tokio::task::JoinHandle<ExecResult>>>,
}

impl NativeHttp {
    fn new(endpoint: String) -> Self {
        Self {
            rt: tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap(),
            client: reqwest::Client::new(),
            endpoint,
            work: Mutex::default(),
        }
    }
}

impl Executor for NativeHttp {
    fn info(&self) -> PluginInfo {
        PluginInfo {
            name: "native-http".into(),
            version: "0".into(),
            kind: PluginKind::Executor,
            description: String::new(),
            config_schema: "{}".into(),
        }
    }
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            executable_type: "http".into(),
            ..Capabilities::default()
        }
    }
    fn configure(&mut self, _config: &str) -> Result<(), PluginError> {
        Ok(())
    }
    fn start(&self, spec: &ExecSpec) -> Result<String, PluginError> {
        let request = self
            .client
            .post(&self.endpoint)
            .header("x-spear-execution-id", &spec.execution_id)
            .body(spec.stdin.clone());
        let task = self.rt.spawn(async move {
            let started = Instant::now();
            let (status, stdout) = match request.send().await {
                Ok(r) => {
                    let ok = r.status().is_success();
                    let body = r.bytes().await.map(|b| b.to_vec()).unwrap_or_default();
                    (ExitStatus::Exited(if ok { 0 } else { 1 }), body)
                }
                Err(e) => (ExitStatus::Failed(e.to_string()), Vec::new()),
            };
            ExecResult {
                status,
                stdout,
                stderr: Vec::new(),
                stdout_truncated: false,
                stderr_truncated: false,
                duration_ms: started.elapsed().as_millis() as u64,
            }
        });
        self.work
            .lock()
            .unwrap()
            .insert(spec.execution_id.clone(), task);
        Ok(spec.execution_id.clone())
    }
    fn wait(&self, handle: &str, _timeout_ms: u64) -> Result<Option<ExecResult>, PluginError> {
        let task = self.work.lock().unwrap().remove(handle);
        match task {
            Some(t) => Ok(Some(self.rt.block_on(t).unwrap())),
            None => Err(PluginError(format!("no execution {handle}"))),
        }
    }
    fn signal(&self, _: &str, _: i32) -> Result<(), PluginError> {
        Ok(())
    }
    fn stop(&self, _: &str, _: u64) -> Result<(), PluginError> {
        Ok(())
    }
    fn inspect(&self, _: &str) -> Result<ExecState, PluginError> {
        Ok(ExecState::Running)
    }
    fn stats(&self, _: &str) -> Result<ExecStats, PluginError> {
        Ok(ExecStats::default())
    }
    fn recover(&self, _: &str) -> Result<bool, PluginError> {
        Ok(false)
    }
    fn destroy(&self, _: &str) -> Result<(), PluginError> {
        Ok(())
    }
}

fn component(server: &HttpServer) -> Box<dyn Executor> {
    let engine = WasmEngine::new().unwrap();
    let limits = Arc::new(Limits::new(LimitValues::default()));
    limits.set_grants(GrantTable::from([(
        "http".to_owned(),
        Grant {
            http_hosts: vec![HttpHost::parse(&server.addr.to_string()).unwrap()],
            clock: Some(true),
            log: None,
            scratch_mb: None,
        },
    )]));
    let mut x = load_file(&guest("component", "http.wasm"), &engine, &limits)
        .unwrap()
        .executor()
        .unwrap();
    x.configure(&format!(
        r#"{{"endpoint": "{}/upper/x", "format": "raw"}}"#,
        server.url()
    ))
    .unwrap();
    x
}

fn spec(id: usize) -> ExecSpec {
    ExecSpec {
        execution_id: format!("e{id}"),
        task: "bench".into(),
        entry: "x".into(),
        stdin: b"hello".to_vec(),
        ..ExecSpec::default()
    }
}

fn run_one(x: &dyn Executor, id: usize) -> Duration {
    let started = Instant::now();
    let h = x.start(&spec(id)).unwrap();
    let r = x.wait(&h, 10_000).unwrap().expect("finished");
    let took = started.elapsed();
    assert_eq!(r.stdout, b"HELLO", "{r:?}");
    x.destroy(&h).unwrap();
    took
}

/// Latencies of `n` executions one at a time, and executions/s with [`IN_FLIGHT`] at once.
fn measure(x: &dyn Executor, n: usize) -> (Vec<Duration>, f64) {
    for i in 0..20 {
        run_one(x, i);
    }
    let lat: Vec<Duration> = (0..n).map(|i| run_one(x, 1_000_000 + i)).collect();
    let started = Instant::now();
    let mut done = 0;
    let mut next = 2_000_000;
    while done < n {
        let batch: Vec<String> = (0..IN_FLIGHT.min(n - done))
            .map(|_| {
                next += 1;
                x.start(&spec(next)).unwrap()
            })
            .collect();
        for h in &batch {
            let r = x.wait(h, 10_000).unwrap().expect("finished");
            assert_eq!(r.stdout, b"HELLO");
            x.destroy(h).unwrap();
        }
        done += batch.len();
    }
    (lat, n as f64 / started.elapsed().as_secs_f64())
}

fn main() {
    let quick = std::env::args().any(|a| a == "quick");
    let (n, repeats) = if quick { (200, 1) } else { (2_000, 5) };
    let server = HttpServer::start();
    let native = NativeHttp::new(format!("{}/upper/x", server.url()));
    let comp = component(&server);
    let forms: [(&str, &dyn Executor); 2] = [("native", &native), ("component", comp.as_ref())];
    // Runs alternate between the forms; each cell is the median over the repeats.
    let mut p50s = vec![Vec::new(); 2];
    let mut p99s = vec![Vec::new(); 2];
    let mut rates = vec![Vec::new(); 2];
    for _ in 0..repeats {
        for (i, (_, x)) in forms.iter().enumerate() {
            let (lat, rate) = measure(*x, n);
            let (p50, p99) = percentiles(lat);
            p50s[i].push(p50.as_secs_f64() * 1e6);
            p99s[i].push(p99.as_secs_f64() * 1e6);
            rates[i].push(rate);
        }
    }
    let median = |v: &Vec<f64>| {
        let mut v = v.clone();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    println!(
        "\n## The http executor by form: {n} executions against a local server, median of {repeats}\n"
    );
    println!("| form | one at a time p50 µs | p99 µs | {IN_FLIGHT} in flight: executions/s |");
    println!("|---|---:|---:|---:|");
    for (i, (form, _)) in forms.iter().enumerate() {
        println!(
            "| {form} | {:.0} | {:.0} | {:.0} |",
            median(&p50s[i]),
            median(&p99s[i]),
            median(&rates[i])
        );
    }
    println!(
        "\ncomponent ÷ native: latency p50 {:.2}, p99 {:.2}, throughput {:.3}",
        median(&p50s[1]) / median(&p50s[0]),
        median(&p99s[1]) / median(&p99s[0]),
        median(&rates[1]) / median(&rates[0])
    );
}
