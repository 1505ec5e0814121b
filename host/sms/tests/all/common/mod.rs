//! Start the real `sms` binary on loopback in a sandbox, and talk to it.

pub mod fake_node;
pub mod follow;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use spear_tests::guest;

/// A sandbox: plugin dir with the storage and strategy plugins, a data dir, a config file.
pub struct Sandbox {
    pub dir: tempfile::TempDir,
    /// Keys of `[plugins]` besides `dir`.
    plugin_keys: String,
    /// The keys of `[database]`.
    database: String,
}

impl Sandbox {
    pub fn new(extra: &str) -> Self {
        Self::with_plugins(extra, "", &[])
    }

    /// A sandbox with more plugin files (`(form, file)` of the built guests) and `[plugins]` keys.
    pub fn with_plugins(extra: &str, plugin_keys: &str, files: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let plugins = dir.path().join("plugins");
        std::fs::create_dir(&plugins).unwrap();
        for (form, file) in [
            ("native", "redb.so"),
            ("native", "memory.so"),
            ("component", "least-connections.wasm"),
            ("component", "round-robin.wasm"),
        ]
        .iter()
        .chain(files)
        {
            std::fs::copy(guest(form, file), plugins.join(file)).unwrap();
        }
        let sb = Self {
            dir,
            plugin_keys: plugin_keys.to_owned(),
            database: "db_type = \"redb\"\npath = \"data/sms.redb\"\n".into(),
        };
        sb.write_config(extra);
        sb
    }

    /// An empty directory (no plugin directory), whose config the test writes whole
    /// ([`write_text`](Self::write_text)).
    #[allow(dead_code)]
    pub fn empty() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
            plugin_keys: String::new(),
            database: String::new(),
        }
    }

    /// Write the config file as `text`, whole.
    #[allow(dead_code)]
    pub fn write_text(&self, text: &str) {
        std::fs::write(self.config(), text).unwrap();
    }

    /// A sandbox whose SMS keeps its state on the etcd cluster at `endpoints`, under `prefix`.
    #[allow(dead_code)]
    pub fn on_etcd(extra: &str, endpoints: &[String], prefix: &str) -> Self {
        let mut sb = Self::with_plugins(extra, "", &[("native", "etcd.so")]);
        sb.database = format!(
            "db_type = \"etcd\"\nendpoints = {endpoints:?}\nprefix = \"{prefix}\"\ntimeout_ms = 2000\n"
        );
        sb.write_config(extra);
        sb
    }

    /// A sandbox whose SMS keeps its state in the `memory` storage backend built as a WASM
    /// component (`plugins/memory.wasm`, in place of the native `memory.so`).
    #[allow(dead_code)]
    pub fn on_component_memory(extra: &str) -> Self {
        let mut sb = Self::with_plugins(extra, "", &[("component", "memory.wasm")]);
        std::fs::remove_file(sb.path().join("plugins/memory.so")).unwrap();
        sb.database = "db_type = \"memory\"\n".into();
        sb.write_config(extra);
        sb
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn config(&self) -> PathBuf {
        self.path().join("sms.toml")
    }

    pub fn write_config(&self, extra: &str) {
        self.write(extra, "[http]\naddr = \"127.0.0.1:0\"\n");
    }

    /// The config with an `[http]` section of the test's own.
    pub fn write_config_with(&self, http: &str) {
        self.write("", http);
    }

    fn write(&self, extra: &str, http: &str) {
        // `extra` first: its bare keys must precede every table.
        let text = format!(
            "{extra}\n{http}[grpc]\naddr = \"127.0.0.1:0\"\n\
             [database]\n{}\
             [files]\ndir = \"data/files\"\nmax_upload_mb = 1\n\
             [plugins]\ndir = \"plugins\"\n{}",
            self.database, self.plugin_keys
        );
        let tmp = self.path().join(".sms.toml.tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(tmp, self.config()).unwrap();
    }

    /// Start `sms` here (cwd = the sandbox, so relative paths land in it).
    pub fn start(&self, args: &[&str]) -> Sms {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_sms"));
        cmd.env("SMS_LOG", "warn");
        self.spawn(cmd, args)
    }

    /// Start `sms` here with more environment variables.
    pub fn start_with_env(&self, args: &[&str], env: &[(&str, &str)]) -> Sms {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_sms"));
        cmd.env("SMS_LOG", "warn").envs(env.iter().copied());
        self.spawn(cmd, args)
    }

    /// Start `sms` with its log level from the config file (no `SMS_LOG`), standard error to
    /// `stderr.log` in the sandbox.
    pub fn start_logging(&self, args: &[&str]) -> Sms {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_sms"));
        cmd.env_remove("SMS_LOG")
            .stderr(std::fs::File::create(self.path().join("stderr.log")).unwrap());
        self.spawn(cmd, args)
    }

    fn spawn(&self, mut cmd: Command, args: &[&str]) -> Sms {
        let mut child = cmd
            .current_dir(self.path())
            .arg("--config")
            .arg(self.config())
            .args(args)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let field = |name: &str| -> SocketAddr {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(&format!("{name}=")))
                .unwrap_or_else(|| panic!("no {name}= in {line:?}"))
                .parse()
                .unwrap()
        };
        let admin = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("admin="))
            .map(|a| a.parse().unwrap());
        Sms {
            http: field("http"),
            grpc: field("grpc"),
            admin,
            child,
        }
    }
}

/// A running `sms` process; killed on drop.
pub struct Sms {
    pub http: SocketAddr,
    pub grpc: SocketAddr,
    /// The web admin's address, when it is served.
    pub admin: Option<SocketAddr>,
    pub child: Child,
}

impl Sms {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http)
    }

    pub fn grpc_url(&self) -> String {
        format!("http://{}", self.grpc)
    }

    /// SIGKILL: no shutdown, no flush.
    pub fn kill_9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// Wait (up to 15 s) until this SMS leads (`/healthz` says `role: leader`): an SMS on etcd
    /// prints its ready line while it stands by.
    #[allow(dead_code)]
    pub async fn leading(self) -> Self {
        let c = reqwest::Client::new();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
        loop {
            let role = match c.get(self.url("/healthz")).send().await {
                Ok(r) => r.json::<serde_json::Value>().await.unwrap_or_default()["role"].clone(),
                Err(_) => serde_json::Value::Null,
            };
            if role == "leader" {
                return self;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "not leading after 15 s (role {role})"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// Send `signal` (`STOP`, `CONT`, …).
    #[allow(dead_code)]
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// SIGTERM and wait for a clean exit.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        unsafe_kill(self.child.id(), 15);
        self.child.wait().unwrap()
    }
}

impl Drop for Sms {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn unsafe_kill(pid: u32, signal: i32) {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(status.success());
}

/// The body of `GET path`, as text.
#[allow(dead_code)]
pub async fn get_text(c: &reqwest::Client, sms: &Sms, path: &str) -> String {
    c.get(sms.url(path))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The event log as stored now (`GET /api/v1/events?follow=false`), each event as JSON.
pub async fn events(c: &reqwest::Client, sms: &Sms) -> Vec<serde_json::Value> {
    let log = c
        .get(sms.url("/api/v1/events?follow=false"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    log.lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .map(|d| serde_json::from_str(d).unwrap())
        .collect()
}

/// `GET` a path of SMS's REST API and parse the JSON answer.
pub async fn get_json(c: &reqwest::Client, sms: &Sms, path: &str) -> serde_json::Value {
    c.get(sms.url(path))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// `POST` JSON to a path of SMS's REST API: the status and the parsed answer (null if none).
pub async fn post_json(
    c: &reqwest::Client,
    sms: &Sms,
    path: &str,
    body: &serde_json::Value,
) -> (reqwest::StatusCode, serde_json::Value) {
    let r = c.post(sms.url(path)).json(body).send().await.unwrap();
    (r.status(), r.json().await.unwrap_or_default())
}

/// Assert that every execution of `ids` is in `state` on `sms`.
#[allow(dead_code)]
pub async fn assert_states(c: &reqwest::Client, sms: &Sms, ids: &[String], state: &str) {
    for id in ids {
        let e = get_json(c, sms, &format!("/api/v1/executions/{id}")).await;
        assert_eq!(e["state"], state, "{e}");
    }
}

/// Execution `id` as `GET /api/v1/executions/{id}` shows it.
#[allow(dead_code)]
pub async fn state_of(c: &reqwest::Client, sms: &Sms, id: &str) -> serde_json::Value {
    get_json(c, sms, &format!("/api/v1/executions/{id}")).await
}

/// Execution `id` once it is in state `want` (20 s at most).
#[allow(dead_code)]
pub async fn wait_state(c: &reqwest::Client, sms: &Sms, id: &str, want: &str) -> serde_json::Value {
    let start = std::time::Instant::now();
    loop {
        let e = state_of(c, sms, id).await;
        if e["state"] == want {
            return e;
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(20),
            "{id} never became {want}: {e}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
}

/// Submit `body` (`POST /api/v1/executions`), which must be accepted; the execution's id.
#[allow(dead_code)]
pub async fn submit(c: &reqwest::Client, sms: &Sms, body: &serde_json::Value) -> String {
    let (status, e) = post_json(c, sms, "/api/v1/executions", body).await;
    assert_eq!(status, 201, "{e}");
    e["execution_id"].as_str().unwrap().to_owned()
}

/// Cancel execution `id`, which must be accepted.
#[allow(dead_code)]
pub async fn cancel(c: &reqwest::Client, sms: &Sms, id: &str) {
    let r = c
        .post(sms.url(&format!("/api/v1/executions/{id}/cancel")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "cancel {id}");
}

/// Register a node that runs `wasm` executables, with `slots` slots and room for anything,
/// over gRPC; its uuid.
#[allow(dead_code)]
pub async fn register_wasm_node(sms: &Sms, slots: u32) -> String {
    use spear_proto::v1;
    let mut nodes = v1::node_service_client::NodeServiceClient::connect(sms.grpc_url())
        .await
        .unwrap();
    nodes
        .register_node(v1::RegisterNodeRequest {
            ip_address: "127.0.0.1".into(),
            port: 9000,
            capacity: Some(v1::Resources {
                cpu_millis: 1_000_000,
                memory_mb: 1 << 20,
                disk_mb: 0,
            }),
            executors: vec!["wasm".into()],
            slots,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .uuid
}

/// A gRPC execution client, and node `uuid`'s assignment stream opened with it.
#[allow(dead_code)]
pub async fn open_assignments(
    sms: &Sms,
    uuid: &str,
) -> (
    spear_proto::v1::execution_service_client::ExecutionServiceClient<tonic::transport::Channel>,
    tonic::Streaming<spear_proto::v1::Assignment>,
) {
    use spear_proto::v1;
    let mut execs = v1::execution_service_client::ExecutionServiceClient::connect(sms.grpc_url())
        .await
        .unwrap();
    let stream = execs
        .assignments(v1::AssignmentsRequest {
            node_uuid: uuid.to_owned(),
            after: 0,
        })
        .await
        .unwrap()
        .into_inner();
    (execs, stream)
}
