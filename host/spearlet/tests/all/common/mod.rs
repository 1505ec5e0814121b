//! Start the real `sms` and `spearlet` binaries on loopback in a sandbox, and talk to SMS's REST API.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use spear_tests::guest;
use spear_tests::process::{field, first_line};

/// The `sms` binary, built beside `spearlet` by `cargo test --workspace`.
fn sms_bin() -> PathBuf {
    let path = Path::new(env!("CARGO_BIN_EXE_spearlet")).with_file_name("sms");
    assert!(
        path.is_file(),
        "{} is missing: build it first with `cargo build -p spear-sms` (cargo test --workspace does)",
        path.display()
    );
    path
}

/// A sandbox: a plugin directory with every built-in plugin, config files, data directories.
pub struct Cluster {
    pub dir: tempfile::TempDir,
}

impl Cluster {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let plugins = dir.path().join("plugins");
        std::fs::create_dir(&plugins).unwrap();
        for file in [
            "redb.so",
            "memory.so",
            "process.so",
            "wasm.so",
            "container.so",
        ] {
            std::fs::copy(guest("native", file), plugins.join(file)).unwrap();
        }
        for file in [
            "least-connections.wasm",
            "round-robin.wasm",
            "idle-time.wasm",
            "error-rate.wasm",
            "memory-pressure.wasm",
        ] {
            std::fs::copy(guest("component", file), plugins.join(file)).unwrap();
        }
        Self { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Write a file in the sandbox atomically (by rename).
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.path().join(name);
        let tmp = self.path().join(format!(".{name}.tmp"));
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        path
    }

    /// Start `sms` on free ports (heartbeat timeout 2 s so lost nodes are noticed quickly).
    pub fn sms(&self) -> Sms {
        self.sms_on("127.0.0.1:0", "127.0.0.1:0")
    }

    /// Start `sms` on these addresses, on the sandbox's state (a restart finds it again).
    pub fn sms_on(&self, grpc: &str, http: &str) -> Sms {
        self.sms_with(
            grpc,
            http,
            "[scheduler]\nstrategy = \"least-connections\"\n",
        )
    }

    /// Start `sms` with `plugin_sections` (`[plugins]` keys after `dir`, then `[scheduler]`).
    pub fn sms_with(&self, grpc: &str, http: &str, plugin_sections: &str) -> Sms {
        self.sms_full(grpc, http, plugin_sections, "", &[])
    }

    /// Start `sms` with auth on and `admin` as its bootstrap admin token (the handle sends it).
    pub fn sms_secured(&self, admin: &str) -> Sms {
        let mut sms = self.sms_full(
            "127.0.0.1:0",
            "127.0.0.1:0",
            "[scheduler]\nstrategy = \"least-connections\"\n",
            "[auth]\nenabled = true\n",
            &[("SMS_ADMIN_TOKEN", admin)],
        );
        sms.token = Some(admin.to_owned());
        sms
    }

    /// Start `sms`: `sections` are more tables of its config, `env` more environment.
    pub fn sms_full(
        &self,
        grpc: &str,
        http: &str,
        plugin_sections: &str,
        sections: &str,
        env: &[(&str, &str)],
    ) -> Sms {
        let config = self.write(
            "sms.toml",
            &format!(
                "heartbeat_timeout = 2\n[http]\naddr = \"{http}\"\n[grpc]\naddr = \"{grpc}\"\n\
             [database]\ndb_type = \"redb\"\npath = \"sms-data/sms.redb\"\n\
             [files]\ndir = \"sms-data/files\"\nmax_upload_mb = 64\n{sections}\
             [plugins]\ndir = \"plugins\"\n{plugin_sections}"
            ),
        );
        self.spawn_sms(&config, env)
    }

    /// Start `sms` with the whole config text `config` (written to `sms.toml`).
    #[allow(dead_code)]
    pub fn sms_from(&self, config: &str) -> Sms {
        let config = self.write("sms.toml", config);
        self.spawn_sms(&config, &[])
    }

    /// Run `sms` with `config` here; its ready line gives the addresses.
    fn spawn_sms(&self, config: &Path, env: &[(&str, &str)]) -> Sms {
        let mut child = Command::new(sms_bin())
            .current_dir(self.path())
            .arg("--config")
            .arg(config)
            .env("SMS_LOG", "warn")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let line = first_line(&mut child);
        Sms {
            http: field(&line, "http"),
            grpc: field(&line, "grpc"),
            admin: line
                .split_whitespace()
                .find_map(|w| w.strip_prefix("admin="))
                .and_then(|a| a.parse().ok()),
            token: None,
            ca: None,
            child,
        }
    }

    /// Start SMS replica `name` on the etcd cluster at `endpoints` (lease TTL 2 s), with the
    /// etcd plugin added to the plugin directory. It prints its ready line while it stands by.
    #[allow(dead_code)]
    pub fn sms_on_etcd(&self, name: &str, endpoints: &[String]) -> Sms {
        let plugin = self.path().join("plugins/etcd.so");
        if !plugin.exists() {
            std::fs::copy(guest("native", "etcd.so"), plugin).unwrap();
        }
        let config = self.write(
            &format!("{name}.toml"),
            &format!(
                "heartbeat_timeout = 5\n[http]\naddr = \"127.0.0.1:0\"\n[grpc]\naddr = \"127.0.0.1:0\"\n\
             [database]\ndb_type = \"etcd\"\nendpoints = {endpoints:?}\nprefix = \"spearlet-ha/\"\n\
             [ha]\nlease_ttl_secs = 2\n\
             [files]\ndir = \"{name}-data/files\"\nmax_upload_mb = 64\n\
             [plugins]\ndir = \"plugins\"\n[scheduler]\nstrategy = \"least-connections\"\n"
            ),
        );
        self.spawn_sms(&config, &[])
    }

    /// The config text of Spearlet `name` (`extra` appended: plugin sections, executors).
    pub fn spearlet_config(&self, name: &str, extra: &str) -> String {
        format!(
            "[spearlet]\nnode_name = \"{name}\"\nheartbeat_interval = 1\nsms_connect_retry_ms = 100\n\
             [spearlet.grpc]\naddr = \"127.0.0.1:0\"\n[spearlet.http.server]\naddr = \"127.0.0.1:0\"\n\
             [spearlet.storage]\nbackend = \"redb\"\ndata_dir = \"{name}-data\"\n\
             [spearlet.limits]\nmax_concurrent = 8\nmax_instances_per_task = 4\noutput_cap_mb = 1\n\
             stop_grace_ms = 500\ndrain_timeout_ms = 3000\n\
             [plugins]\ndir = \"plugins\"\n{extra}"
        )
    }

    /// Start Spearlet `name` against `sms` with `--sms-addr` and `--auto-register`.
    pub fn spearlet(&self, name: &str, sms: &Sms, extra: &str) -> Spearlet {
        self.spearlet_from(name, sms, &self.spearlet_config(name, extra))
    }

    /// [`spearlet`](Self::spearlet) with the whole config text (say, [`spearlet_config`]
    /// (Self::spearlet_config) with a key added to one of its sections).
    pub fn spearlet_from(&self, name: &str, sms: &Sms, config: &str) -> Spearlet {
        let config = self.write(&format!("{name}.toml"), config);
        self.spearlet_with(
            name,
            &config,
            &["--sms-addr", &sms.grpc.to_string(), "--auto-register"],
        )
    }

    /// Start Spearlet `name` with an existing config and arguments.
    /// Its warnings and errors go to `{name}.log` in the cluster's directory ([`Spearlet::log`]).
    pub fn spearlet_with(&self, name: &str, config: &Path, args: &[&str]) -> Spearlet {
        let log = self.path().join(format!("{name}.log"));
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_spearlet"))
            .current_dir(self.path())
            .arg("--config")
            .arg(config)
            .args(args)
            .env("SPEARLET_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap();
        let line = first_line(&mut child);
        let node = line
            .split_whitespace()
            .nth(2)
            .unwrap_or_else(|| panic!("no node in {line:?}"))
            .to_owned();
        Spearlet {
            node,
            http: field(&line, "http"),
            grpc: field(&line, "grpc"),
            child,
            log,
        }
    }
}

fn signal(pid: u32, signal: i32) {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(status.success());
}

/// A running `sms`; killed on drop.
pub struct Sms {
    pub http: SocketAddr,
    pub grpc: SocketAddr,
    pub child: Child,
    /// The token the helpers send (when SMS checks them).
    pub token: Option<String>,
    /// The CA (PEM) of SMS's certificate when its REST API is under TLS (the helpers then speak
    /// `https://`, trusting only it).
    pub ca: Option<String>,
    /// The web admin's address, when SMS serves it.
    #[allow(dead_code)]
    pub admin: Option<SocketAddr>,
}

impl Sms {
    /// `spear --sms URL --output json ARGS…` (at most a minute): its exit code and the JSON
    /// document it printed.
    #[allow(dead_code)]
    pub async fn spear(&self, args: &[&str]) -> (i32, Value) {
        let long = Duration::from_secs(60);
        let bin = Path::new(env!("CARGO_BIN_EXE_spearlet")).with_file_name("spear");
        let run = tokio::process::Command::new(bin)
            .args(["--sms", &self.url(""), "--output", "json"])
            .args(args)
            .env("SPEAR_LOG", "off")
            .kill_on_drop(true)
            .output();
        let out = tokio::time::timeout(long, run)
            .await
            .unwrap_or_else(|_| panic!("spear {args:?} still runs after {long:?}"))
            .unwrap();
        let v = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("spear {args:?}: not JSON ({e}): {out:?}"));
        (out.status.code().unwrap_or(-1), v)
    }

    /// SIGKILL: no shutdown, no flush.
    pub fn kill_9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    pub fn url(&self, path: &str) -> String {
        let scheme = if self.ca.is_some() { "https" } else { "http" };
        format!("{scheme}://{}{path}", self.http)
    }

    /// A request to SMS with the handle's token.
    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let client = match &self.ca {
            Some(ca) => reqwest::Client::builder()
                .tls_certs_only([reqwest::Certificate::from_pem(ca.as_bytes()).unwrap()])
                .build()
                .unwrap(),
            None => reqwest::Client::new(),
        };
        let r = client.request(method, self.url(path));
        match &self.token {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
    }

    /// The event log as stored now (`GET /api/v1/events?follow=false`), each event as JSON.
    pub async fn events(&self) -> Vec<Value> {
        let log = self
            .request(reqwest::Method::GET, "/api/v1/events?follow=false")
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        log.lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .map(|d| serde_json::from_str(d.trim()).unwrap())
            .collect()
    }

    pub async fn get(&self, path: &str) -> Value {
        self.request(reqwest::Method::GET, path)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let r = self
            .request(reqwest::Method::POST, path)
            .json(&body)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    /// Put `bytes` in SMS's file store as `name`; returns the file's metadata (`uri`, `file_id`).
    pub async fn upload(&self, name: &str, bytes: Vec<u8>) -> Value {
        self.request(reqwest::Method::POST, &format!("/api/v1/files?name={name}"))
            .body(bytes)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Submit an execution; returns its id.
    pub async fn submit(&self, body: Value) -> String {
        let (status, v) = self.post("/api/v1/executions", body).await;
        assert_eq!(status, 201, "{v}");
        v["execution_id"].as_str().unwrap().to_owned()
    }

    /// Submit an inline process execution of `sh -c script`.
    pub async fn sh(&self, script: &str, extra: Value) -> String {
        let mut body = json!({
            "executable": {"type": "process", "name": "/bin/sh", "args": ["-c", script]},
            "max_attempts": 1,
        });
        if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
            b.extend(e.clone());
        }
        self.submit(body).await
    }

    pub async fn execution(&self, id: &str) -> Value {
        self.get(&format!("/api/v1/executions/{id}")).await
    }

    /// Wait until the execution is running.
    pub async fn running(&self, id: &str, limit: Duration) {
        let deadline = Instant::now() + limit;
        while self.execution(id).await["state"] != "running" {
            assert!(Instant::now() < deadline, "execution {id} never started");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Wait until the execution reaches a terminal state; returns it.
    pub async fn finished(&self, id: &str, limit: Duration) -> Value {
        let deadline = Instant::now() + limit;
        loop {
            let e = self.execution(id).await;
            let state = e["state"].as_str().unwrap_or_default().to_owned();
            if ["succeeded", "failed", "cancelled", "timed_out"].contains(&state.as_str()) {
                return e;
            }
            assert!(
                Instant::now() < deadline,
                "execution {id} still {state}: {e}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Wait until node `uuid` has status `status`.
    pub async fn node_status(&self, uuid: &str, status: &str, limit: Duration) -> Value {
        let deadline = Instant::now() + limit;
        loop {
            let r = self
                .request(reqwest::Method::GET, &format!("/api/v1/nodes/{uuid}"))
                .send()
                .await
                .unwrap();
            let code = r.status().as_u16();
            let node: Value = r.json().await.unwrap_or(Value::Null);
            let now = if code == 404 {
                "absent"
            } else {
                node["status"].as_str().unwrap_or("")
            };
            if now == status {
                return node;
            }
            assert!(
                Instant::now() < deadline,
                "node {uuid} is {now}, not {status}: {node}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Sms {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A running `spearlet`; killed on drop.
pub struct Spearlet {
    pub node: String,
    pub http: SocketAddr,
    /// Its gRPC listener (health, SPEAR's `spearlet.ObjectService`).
    #[allow(dead_code)]
    pub grpc: SocketAddr,
    pub child: Child,
    log: PathBuf,
}

impl Spearlet {
    /// The latest reload report that mentions `what`, waited for (a few seconds at most).
    #[allow(dead_code)]
    pub async fn reloaded(&self, what: &str) -> Value {
        for _ in 0..100 {
            let history = self.get("/api/v1/plugins/history").await;
            let found = history["reports"]
                .as_array()
                .or(history.as_array())
                .and_then(|all| {
                    all.iter()
                        .rev()
                        .find(|r| r.to_string().contains(what))
                        .cloned()
                });
            if let Some(report) = found {
                return report;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "no reload mentions {what}: {}\n{}",
            self.get("/api/v1/plugins/history").await,
            self.log()
        )
    }

    /// What the Spearlet logged (warnings and errors) so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub async fn get(&self, path: &str) -> Value {
        reqwest::get(format!("http://{}{path}", self.http))
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// The body of `GET path` as text (say, `/metrics`).
    pub async fn text(&self, path: &str) -> String {
        reqwest::get(format!("http://{}{path}", self.http))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// SIGKILL: no drain, no deregistration.
    pub fn kill_9(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM, and wait for the exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        signal(self.child.id(), 15);
        self.child.wait().unwrap()
    }
}

impl Drop for Spearlet {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The value of the Prometheus sample `name` (with its labels, if any) in `text`.
pub fn sample(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {name} in:\n{text}"))
        .parse()
        .unwrap()
}

/// Register a task from `body` at `sms`; its id.
pub async fn register(sms: &Sms, body: Value) -> String {
    let (status, v) = sms.post("/api/v1/tasks", body).await;
    assert_eq!(status, 200, "{v}");
    v["task_id"].as_str().unwrap().to_owned()
}

/// Upload the function component of `tests/fixtures/function-counter` and register a task
/// running it (`counter`); its id.
pub async fn counter_task(sms: &Sms) -> String {
    let bytes = std::fs::read(guest("component", "function-counter.wasm")).unwrap();
    let meta = sms.upload("function-counter.wasm", bytes).await;
    register(
        sms,
        json!({"name": "counter", "executable": {"type": "wasm", "uri": meta["uri"]}}),
    )
    .await
}

/// The instances of `task` serving invocations on `node`, as its status shows them.
pub async fn instances(node: &Spearlet, task: &str) -> Vec<Value> {
    let all = node.get("/api/v1/instances").await;
    all["instances"]
        .as_array()
        .unwrap_or_else(|| panic!("{all}"))
        .iter()
        .filter(|i| i["task"] == format!("fn:{task}"))
        .cloned()
        .collect()
}
