//! The clusters the workloads run on: release `sms` and `spearlet` processes in a temporary
//! directory, secured or not ([`Sec`]), and the client calls they answer.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use serde_json::{Value, json};
use spear_tests::certs::Ca;
use spear_tests::guest;
use spear_tests::process::{field, first_line};

use crate::SLOTS;

/// A child process, killed on drop.
pub struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A release binary of the workspace.
pub fn release_bin(name: &str) -> PathBuf {
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
pub fn clock_ticks() -> f64 {
    let out = Command::new("getconf").arg("CLK_TCK").output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

/// (own user+system, waited-for children's user+system) CPU of `pid`, in ms.
pub fn cpu_ms(pid: u32, ticks: f64) -> (f64, f64) {
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

pub struct Cluster {
    _dir: tempfile::TempDir,
    sms: Proc,
    nodes: Vec<Proc>,
    pub http: String,
    /// SMS's gRPC address (`host:port`).
    pub grpc: String,
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
    pub fn start(sec: Sec, nodes: usize) -> Self {
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
            grpc: grpc.to_string(),
            ca,
            token: client_token,
        }
    }

    /// A client that sends the cluster's token, if any.
    pub fn client(&self) -> reqwest::Client {
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
    pub fn cpu(&self, ticks: f64) -> [(f64, f64); 2] {
        let sms = cpu_ms(self.sms.0.id(), ticks);
        let nodes = self.nodes.iter().fold((0.0, 0.0), |acc, n| {
            let (own, children) = cpu_ms(n.0.id(), ticks);
            (acc.0 + own, acc.1 + children)
        });
        [sms, nodes]
    }
}

pub fn body() -> Value {
    json!({"executable": {"type": "process", "name": "/bin/true"}, "max_attempts": 1,
        "timeout_ms": 60000})
}

pub async fn submit(client: &reqwest::Client, http: &str) -> String {
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

/// How secured a cluster is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sec {
    Off,
    Auth,
    AuthTls,
}

pub fn label(sec: Sec) -> &'static str {
    match sec {
        Sec::Off => "off",
        Sec::Auth => "auth",
        Sec::AuthTls => "auth + TLS",
    }
}
