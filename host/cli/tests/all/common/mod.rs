//! Start the real `sms` and `spearlet` binaries on loopback in a sandbox, and run the real `spear`
//! binary against them.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use spear_tests::guest;
use spear_tests::process::{field, first_line};

/// A binary built beside `spear` (`cargo test --workspace` builds `sms` and `spearlet` there).
pub fn sibling(name: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_BIN_EXE_spear")).with_file_name(name);
    assert!(
        path.is_file(),
        "{} is missing: build it first with `cargo build -p spear-sms -p spear-spearlet` \
         (cargo test --workspace does)",
        path.display()
    );
    path
}

/// What one `spear` run printed and how it ended.
#[derive(Debug)]
pub struct Run {
    /// Exit code (`None`: killed by a signal).
    pub code: Option<i32>,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Run {
    /// Standard output parsed as one JSON document.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not one JSON document ({e}): {self:?}"))
    }

    /// Standard output parsed as one JSON document per line.
    pub fn json_lines(&self) -> Vec<Value> {
        self.stdout
            .lines()
            .map(|l| {
                serde_json::from_str(l)
                    .unwrap_or_else(|e| panic!("line {l:?} is not JSON ({e}): {self:?}"))
            })
            .collect()
    }

    /// Assert exit code 0; returns self.
    pub fn ok(self) -> Self {
        assert_eq!(self.code, Some(0), "spear failed: {self:?}");
        self
    }
}

/// `spear` with a clean environment as to SMS (no inherited `SPEAR_SMS`).
pub fn spear() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_spear"));
    c.env_remove("SPEAR_SMS").stdin(Stdio::null());
    c
}

/// Run a prepared `spear` command to its end.
pub fn finish(cmd: &mut Command) -> Run {
    let out = cmd.output().expect("spear runs");
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A sandbox with a running SMS and one Spearlet (`alpha`) registered with it; both killed on drop.
pub struct Cluster {
    /// The SMS's REST address.
    pub http: SocketAddr,
    /// The Spearlet's node uuid.
    pub node: String,
    sms: Child,
    spearlet: Child,
    /// The sandbox (plugins, configs, data), removed on drop.
    _dir: tempfile::TempDir,
}

impl Cluster {
    /// Copy the built-in plugins into a sandbox, start `sms` and a `spearlet` on free ports.
    pub fn start() -> Self {
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
        for file in ["least-connections.wasm", "idle-time.wasm"] {
            std::fs::copy(guest("component", file), plugins.join(file)).unwrap();
        }
        let sms_config = write(
            dir.path(),
            "sms.toml",
            "heartbeat_timeout = 5\n[http]\naddr = \"127.0.0.1:0\"\n[grpc]\naddr = \"127.0.0.1:0\"\n\
             [database]\ndb_type = \"redb\"\npath = \"sms-data/sms.redb\"\n\
             [files]\ndir = \"sms-data/files\"\nmax_upload_mb = 64\n\
             [plugins]\ndir = \"plugins\"\n[scheduler]\nstrategy = \"least-connections\"\n",
        );
        let mut sms = Command::new(sibling("sms"))
            .current_dir(dir.path())
            .arg("--config")
            .arg(sms_config)
            .env("SMS_LOG", "warn")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let line = first_line(&mut sms);
        let http = field(&line, "http");
        let grpc = field(&line, "grpc");
        let spearlet_config = write(
            dir.path(),
            "alpha.toml",
            "[spearlet]\nnode_name = \"alpha\"\nheartbeat_interval = 1\nsms_connect_retry_ms = 100\n\
             [spearlet.grpc]\naddr = \"127.0.0.1:0\"\n[spearlet.http.server]\naddr = \"127.0.0.1:0\"\n\
             [spearlet.storage]\nbackend = \"redb\"\ndata_dir = \"alpha-data\"\n\
             [spearlet.limits]\nmax_concurrent = 8\nmax_instances_per_task = 4\noutput_cap_mb = 1\n\
             stop_grace_ms = 500\ndrain_timeout_ms = 3000\n[plugins]\ndir = \"plugins\"\n",
        );
        let mut spearlet = Command::new(sibling("spearlet"))
            .current_dir(dir.path())
            .arg("--config")
            .arg(spearlet_config)
            .args(["--sms-addr", &grpc.to_string(), "--auto-register"])
            .env("SPEARLET_LOG", "warn")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let line = first_line(&mut spearlet);
        let node = line
            .split_whitespace()
            .nth(2)
            .unwrap_or_else(|| panic!("no node in {line:?}"))
            .to_owned();
        Self {
            http,
            node,
            sms,
            spearlet,
            _dir: dir,
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.http)
    }

    /// `spear --sms URL args…`.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = spear();
        c.arg("--sms").arg(self.url()).args(args);
        c
    }

    /// Run `spear --sms URL args…` to its end.
    pub fn spear(&self, args: &[&str]) -> Run {
        finish(&mut self.cmd(args))
    }

    /// Run `spear --output json --sms URL args…`, expect success, parse the one document.
    pub fn json(&self, args: &[&str]) -> Value {
        let mut all = vec!["--output", "json"];
        all.extend_from_slice(args);
        self.spear(&all).ok().json()
    }

    /// Poll `spear status ID` until `accept` holds for the execution; returns it.
    pub fn wait_for(&self, id: &str, what: &str, accept: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let e = self.json(&["status", id]);
            if accept(&e) {
                return e;
            }
            assert!(
                Instant::now() < deadline,
                "execution {id} never {what}: {e}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for child in [&mut self.spearlet, &mut self.sms] {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A lone `sms` (no Spearlet) in `dir`, with the redb and least-connections plugins; `sections`
/// are more tables of its config, `env` more environment. Killed on drop.
pub struct LoneSms {
    /// Its sandbox.
    pub dir: tempfile::TempDir,
    /// Its REST address.
    pub http: SocketAddr,
    child: Child,
}

impl LoneSms {
    /// Start it in `dir` (which may already hold files its config names).
    pub fn start(dir: tempfile::TempDir, sections: &str, env: &[(&str, &str)]) -> Self {
        Self::start_on(
            dir,
            sections,
            "db_type = \"redb\"\npath = \"sms-data/sms.redb\"\n",
            env,
        )
    }

    /// Start a replica on the etcd cluster at `endpoints` (it stands by until it leads).
    #[allow(dead_code)]
    pub fn on_etcd(
        dir: tempfile::TempDir,
        sections: &str,
        env: &[(&str, &str)],
        endpoints: &[String],
    ) -> Self {
        let database =
            format!("db_type = \"etcd\"\nendpoints = {endpoints:?}\nprefix = \"cli/\"\n");
        Self::start_on(dir, sections, &database, env)
    }

    /// Start it with `database`, the keys of its `[database]`.
    fn start_on(
        dir: tempfile::TempDir,
        sections: &str,
        database: &str,
        env: &[(&str, &str)],
    ) -> Self {
        let plugins = dir.path().join("plugins");
        std::fs::create_dir(&plugins).unwrap();
        let backend = if database.contains("etcd") {
            "etcd.so"
        } else {
            "redb.so"
        };
        std::fs::copy(guest("native", backend), plugins.join(backend)).unwrap();
        std::fs::copy(
            guest("component", "least-connections.wasm"),
            plugins.join("least-connections.wasm"),
        )
        .unwrap();
        let config = write(
            dir.path(),
            "sms.toml",
            &format!(
                "[http]\naddr = \"127.0.0.1:0\"\n[grpc]\naddr = \"127.0.0.1:0\"\n{sections}\
                 [database]\n{database}\
                 [plugins]\ndir = \"plugins\"\n[scheduler]\nstrategy = \"least-connections\"\n"
            ),
        );
        let mut child = Command::new(sibling("sms"))
            .current_dir(dir.path())
            .arg("--config")
            .arg(config)
            .env("SMS_LOG", "warn")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let line = first_line(&mut child);
        Self {
            http: field(&line, "http"),
            dir,
            child,
        }
    }
}

impl Drop for LoneSms {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback port nothing listens on (bound, then released).
pub fn closed_port() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}
