//! `spear dev`: a local SMS and one Spearlet, like `nomad agent -dev`.
//!
//! Both run from one directory: `plugins/` (the plugin files; `./run-dev.sh` fills it with every
//! built-in plugin), `sms.toml` and `spearlet.toml` (written with the defaults when missing, then
//! left to the user: edit `[scheduler]` or `[reclaimer]` while they run), and `data/` (redb state,
//! the file store). The `sms` and `spearlet` binaries are found beside `spear`. The children get
//! their own process group, so Ctrl-C reaches only `spear`, which then stops them in order: the
//! Spearlet first (it drains and deregisters), then SMS.
//!
//! SMS runs with auth on: `spear dev` makes an admin token and the Spearlet's node token itself
//! ([`tokens`]), prints the admin token, and leaves it for the CLI ([`handoff`]), so that `spear
//! run …` against this SMS works without `--token`. `--no-auth` runs SMS without tokens.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::Serialize;

use crate::Output;

pub(crate) mod handoff;
mod tokens;

/// Arguments of `spear dev`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The directory holding `plugins/`, the two configs and `data/`.
    #[arg(long, default_value = "target/dev")]
    dir: PathBuf,
    /// SMS REST address (also Swagger UI and /metrics); port 0 picks a free one.
    #[arg(long, default_value = "127.0.0.1:8080")]
    http_addr: String,
    /// SMS gRPC address.
    #[arg(long, default_value = "127.0.0.1:50051")]
    grpc_addr: String,
    /// SMS web admin address.
    #[arg(long, default_value = "127.0.0.1:8081")]
    admin_addr: String,
    /// The Spearlet's HTTP address (status, instances, plugins).
    #[arg(long, default_value = "127.0.0.1:8082")]
    spearlet_http_addr: String,
    /// The Spearlet's gRPC address (health).
    #[arg(long, default_value = "127.0.0.1:50052")]
    spearlet_grpc_addr: String,
    /// Run SMS without tokens (`[auth] enabled = false`); by default `spear dev` turns auth on
    /// and makes the tokens itself.
    #[arg(long)]
    no_auth: bool,
}

/// SMS's config as first written: everything that is not an address.
const SMS_TOML: &str = r#"# Written by `spear dev` when missing; yours to edit. Edit [scheduler] while SMS runs: it applies
# at once (or is rejected, with the reason, and the old one stays). Other keys need a restart.
[database]
db_type = "redb"
path = "data/sms.redb"

[files]
dir = "data/files"
max_upload_mb = 64

[plugins]
dir = "plugins"
watch = true

[scheduler]
strategy = "least-connections"   # try: round-robin, affinity, adaptive
"#;

/// The Spearlet's config as first written.
const SPEARLET_TOML: &str = r#"# Written by `spear dev` when missing; yours to edit. Edit [scheduler] (the local strategy
# choosing an instance per invocation) or [reclaimer] while the Spearlet runs: they apply at once.
[spearlet]
node_name = "dev-node"
heartbeat_interval = 5

[spearlet.storage]
backend = "redb"
data_dir = "data/spearlet"

[executors]
enabled = ["wasm", "process", "container"]

[plugins]
dir = "plugins"
watch = true

[scheduler]
strategy = "least-connections"

[reclaimer]
policy = "idle-time"             # try: memory-pressure, error-rate
interval_ms = 10000
[reclaimer.config]
idle_ms = 300000
"#;

/// What `spear dev` prints once both are up.
#[derive(Debug, Serialize)]
struct Started {
    dir: PathBuf,
    sms_pid: u32,
    /// The base URL for `spear --sms` / `SPEAR_SMS`.
    sms: String,
    rest: String,
    grpc: String,
    swagger: String,
    metrics: String,
    web_admin: Option<String>,
    /// The admin token (None with `--no-auth`).
    token: Option<String>,
    spearlet_pid: u32,
    node_uuid: String,
    spearlet_status: String,
}

/// Start both, print the addresses, wait for Ctrl-C (or SIGTERM), stop both. Exit code 0 after a
/// requested stop, 1 when one of them ended on its own.
pub fn run(args: Args, output: Output) -> anyhow::Result<i32> {
    let dir = prepare(&args.dir)?;
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, stop.clone()).context("installing signal handlers")?;
    }
    let tokens = if args.no_auth {
        None
    } else {
        Some(tokens::prepare(&dir, &sibling("sms")?)?)
    };
    let auth = if tokens.is_some() { "true" } else { "false" };
    let mut sms = Proc::start(
        "sms",
        &dir,
        &[
            "--config",
            "sms.toml",
            "--http-addr",
            &args.http_addr,
            "--grpc-addr",
            &args.grpc_addr,
            "--enable-swagger",
            "--enable-web-admin",
            "--web-admin-addr",
            &args.admin_addr,
        ],
        &[("SMS_AUTH_ENABLED", auth)],
    )?;
    let (rest, grpc) = (sms.field("http")?, sms.field("grpc")?);
    let admin = sms.field("admin").ok();
    let mut spearlet = match Proc::start(
        "spearlet",
        &dir,
        &[
            "--config",
            "spearlet.toml",
            "--sms-addr",
            &grpc,
            "--auto-register",
            "--http-addr",
            &args.spearlet_http_addr,
            "--grpc-addr",
            &args.spearlet_grpc_addr,
        ],
        // The only SMS gateway its `sms+file://host:port/…` artifacts may name.
        &[("SPEARLET_SMS_HTTP_ADDR", rest.as_str())]
            .into_iter()
            .chain(tokens.iter().flat_map(|t| {
                [
                    ("SPEARLET_SMS_TOKEN", t.node.as_str()),
                    ("SPEARLET_NODE_UUID", t.node_uuid.as_str()),
                ]
            }))
            .collect::<Vec<_>>(),
    ) {
        Ok(p) => p,
        Err(e) => {
            sms.stop(Duration::from_secs(10));
            return Err(e);
        }
    };
    let started = Started {
        dir: dir.clone(),
        sms_pid: sms.child.id(),
        sms: format!("http://{rest}"),
        rest: format!("http://{rest}/api/v1"),
        grpc: grpc.clone(),
        swagger: format!("http://{rest}/swagger-ui/"),
        metrics: format!("http://{rest}/metrics"),
        web_admin: admin.map(|a| format!("http://{a}/")),
        token: tokens.as_ref().map(|t| t.admin.clone()),
        spearlet_pid: spearlet.child.id(),
        node_uuid: spearlet
            .first
            .split_whitespace()
            .nth(2)
            .unwrap_or("")
            .into(),
        spearlet_status: format!("http://{}/api/v1/status", spearlet.field("http")?),
    };
    if let Some(token) = &started.token
        && let Err(e) = handoff::save(&started.sms, token)
    {
        eprintln!("spear dev: the CLI will need --token: cannot write the token for it: {e:#}");
    }
    print_started(&started, output);

    let ended = loop {
        if stop.load(Ordering::Relaxed) {
            break None;
        }
        if let Some(status) = sms.child.try_wait()? {
            break Some(format!("sms exited on its own ({status})"));
        }
        if let Some(status) = spearlet.child.try_wait()? {
            break Some(format!("spearlet exited on its own ({status})"));
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    if let Some(why) = &ended {
        eprintln!("spear dev: {why}; stopping the other (their messages are above)");
    } else {
        eprintln!("spear dev: stopping: the Spearlet drains first, then SMS");
    }
    spearlet.stop(Duration::from_secs(60));
    sms.stop(Duration::from_secs(30));
    handoff::remove(&started.sms);
    eprintln!("spear dev: stopped");
    Ok(if ended.is_some() { 1 } else { 0 })
}

/// Check the directory and its plugins, write missing configs; returns the absolute directory.
fn prepare(dir: &Path) -> anyhow::Result<PathBuf> {
    let plugins = dir.join("plugins");
    let has_plugins = std::fs::read_dir(&plugins)
        .map(|mut d| d.next().is_some())
        .unwrap_or(false);
    if !has_plugins {
        bail!(
            "no plugin files in {}: run ./run-dev.sh (it builds the built-in plugins and puts them \
             there), or copy plugin files into it",
            plugins.display()
        );
    }
    std::fs::create_dir_all(dir.join("data"))?;
    for (name, text) in [("sms.toml", SMS_TOML), ("spearlet.toml", SPEARLET_TOML)] {
        let path = dir.join(name);
        if !path.exists() {
            std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        }
    }
    Ok(std::fs::canonicalize(dir)?)
}

fn print_started(s: &Started, output: Output) {
    match output {
        Output::Json => println!("{}", serde_json::to_string(s).expect("serializable")),
        Output::Text => {
            println!("SMS       REST     {}", s.rest);
            println!("          gRPC     {}", s.grpc);
            println!("          Swagger  {}", s.swagger);
            println!("          metrics  {}", s.metrics);
            if let Some(admin) = &s.web_admin {
                println!("          admin    {admin}");
            }
            match &s.token {
                Some(token) => println!(
                    "          token    {token}  (admin; the CLI uses it for this SMS by itself)"
                ),
                None => println!("          token    none: auth is off (--no-auth)"),
            }
            println!("Spearlet  node     {}", s.node_uuid);
            println!("          status   {}", s.spearlet_status);
            println!("config    {0}/sms.toml {0}/spearlet.toml", s.dir.display());
            println!("plugins   {}/plugins", s.dir.display());
            println!("try       spear run --type process --name /bin/echo -- hello");
            println!("Ctrl-C stops both.");
        }
    }
}

/// The binary `name` beside this one.
fn sibling(name: &str) -> anyhow::Result<PathBuf> {
    let bin = std::env::current_exe()?.with_file_name(name);
    if !bin.is_file() {
        bail!(
            "{} is missing: build it with `cargo build --release -p spear-sms -p spear-spearlet` \
             (./run-dev.sh does)",
            bin.display()
        );
    }
    Ok(bin)
}

/// A child process (`sms` or `spearlet`) and the first line it printed (its addresses).
struct Proc {
    name: &'static str,
    child: Child,
    first: String,
}

impl Proc {
    /// Start `name` (found beside this binary) in `dir`, in its own process group, and wait for
    /// its first line.
    fn start(
        name: &'static str,
        dir: &Path,
        args: &[&str],
        envs: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        use std::os::unix::process::CommandExt;
        let bin = sibling(name)?;
        let mut child = Command::new(&bin)
            .current_dir(dir)
            .args(args)
            .envs(envs.iter().copied())
            .process_group(0)
            .stdout(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let mut out = BufReader::new(child.stdout.take().expect("piped"));
        let mut first = String::new();
        out.read_line(&mut first)?;
        if first.is_empty() {
            let status = child.wait()?;
            bail!("{name} did not start ({status}); its messages are above");
        }
        // Whatever else it prints goes on to our stdout.
        std::thread::spawn(move || {
            for line in out.lines().map_while(Result::ok) {
                println!("{line}");
            }
        });
        Ok(Self { name, child, first })
    }

    /// `NAME=value` from the first line.
    fn field(&self, key: &str) -> anyhow::Result<String> {
        self.first
            .split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{key}=")))
            .map(str::to_owned)
            .with_context(|| format!("{} printed no {key}= in {:?}", self.name, self.first))
    }

    /// SIGTERM, then SIGKILL after `grace`.
    fn stop(&mut self, grace: Duration) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: `kill` on our own child's pid; the child is not reaped yet, so the pid is its.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!(
            "spear dev: {} did not stop within {grace:?}; killing it",
            self.name
        );
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
