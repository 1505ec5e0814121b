//! Spearlet configuration: built-in defaults < `SPEARLET_*` environment < the config file
//! (`--config`, else `~/.spear/config.toml` when present) < command-line flags, layered by
//! [`spear_config`] (shared with SMS), in SPEAR's shape (`[spearlet]`, `[spearlet.grpc]`,
//! `[spearlet.storage]`, …). Every problem is reported at once, naming its key and where it was
//! set. `spearlet.storage.data_dir`, when the file or the defaults set it, is relative to the file.
//!
//! The same file holds the plugin sections the plugin runtime validates and hot-reloads:
//! `[plugins]`, `[scheduler]` (the local strategy choosing an instance per invocation) and
//! `[reclaimer]` (the reclamation policy). `[executors]` names the executor plugins to use.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use cli::Cli;
use serde::{Deserialize, Serialize};
pub use spear_config::ConfigError;
use spear_config::{Layers, Origin, Problem};

/// An address section.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Listen {
    /// Address to listen on.
    pub addr: SocketAddr,
    /// Serve over TLS with `[spearlet.tls]`'s certificate.
    #[serde(default)]
    pub enable_tls: bool,
}

/// `[spearlet.http]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Http {
    /// `[spearlet.http.server]`.
    pub server: Listen,
    /// Accepted from SPEAR configs and not acted on (a warning says so).
    #[serde(default)]
    pub cors_enabled: Option<bool>,
    /// Accepted from SPEAR configs and not acted on (a warning says so).
    #[serde(default)]
    pub swagger_enabled: Option<bool>,
}

/// `[spearlet.storage]`: where the Spearlet keeps its state and artifacts.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Storage {
    /// Storage backend plugin for the Spearlet's state: `redb` (durable) or `memory`.
    pub backend: String,
    /// Data directory: `spearlet.redb`, `artifacts/`.
    pub data_dir: PathBuf,
    /// Largest size of the artifact cache in MiB (least recently used artifacts go first).
    pub max_cache_size_mb: u64,
    /// Largest artifact accepted, in bytes.
    pub max_object_size: u64,
    /// Accepted from SPEAR configs and not acted on (a warning says so).
    #[serde(default)]
    pub compression_enabled: Option<bool>,
}

/// `[spearlet.artifacts]`: where executables may be fetched from.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ArtifactRules {
    /// Absolute path prefixes `file://` artifacts may come from (none: `file://` is refused).
    #[serde(default)]
    pub file_prefixes: Vec<PathBuf>,
    /// Milliseconds one fetch may take in all (1 to 3600000).
    pub fetch_timeout_ms: u64,
    /// `[spearlet.artifacts.s3]`: the store of `s3://` artifacts.
    #[serde(default)]
    pub s3: Option<object_stores::ObjectStoreConfig>,
    /// `[spearlet.artifacts.minio]`: the store of `minio://` artifacts.
    #[serde(default)]
    pub minio: Option<object_stores::ObjectStoreConfig>,
}

impl ArtifactRules {
    /// The stores of `s3://` and `minio://` artifacts, credentials read (`env` for the `AWS_*`
    /// variables); the error names the key at fault. `minio` is None without its section.
    pub fn object_stores(
        &self,
        env: impl Fn(&str) -> Option<String> + Copy,
    ) -> Result<
        (
            object_stores::ObjectStore,
            Option<object_stores::ObjectStore>,
        ),
        (String, String),
    > {
        let s3 = self.s3.clone().unwrap_or_default().resolve("s3", env)?;
        let minio = match &self.minio {
            Some(m) => Some(m.resolve("minio", env)?),
            None => None,
        };
        Ok((s3, minio))
    }
}

/// `[spearlet.logging]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Logging {
    /// Level filter.
    pub level: String,
    /// `pretty` or `json`.
    pub format: String,
    /// Write logs to this file (appended; its directory is made) instead of standard error.
    #[serde(default)]
    pub file: Option<PathBuf>,
}

/// `[spearlet.limits]`: concurrency and per-execution defaults.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Limits {
    /// Executions running at once on this node.
    pub max_concurrent: u32,
    /// Instances of one task at once.
    pub max_instances_per_task: u32,
    /// Instances on this node in all; past it the longest-idle one is evicted.
    pub max_instances: u32,
    /// Bytes of stdout and of stderr kept per execution, in MiB.
    pub output_cap_mb: u64,
    /// Grace between the polite stop and the forced kill, in milliseconds.
    pub stop_grace_ms: u64,
    /// Milliseconds a SIGTERM drain waits for running executions before handing them back.
    pub drain_timeout_ms: u64,
    /// Run each process execution in a directory of its own under `data_dir/work` (false: in
    /// the Spearlet's working directory).
    pub private_workdir: bool,
}

/// `[spearlet]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Spearlet {
    /// Node name (empty: the host name).
    pub node_name: String,
    /// SMS gRPC address (`host:port` or `http://host:port`).
    pub sms_grpc_addr: String,
    /// SMS's HTTP address: the only one a `sms+file://<host:port>/<id>` artifact may name.
    pub sms_http_addr: String,
    /// Register with SMS after connecting.
    pub auto_register: bool,
    /// Node UUID to use (empty: the one persisted in the state store, else a new one).
    #[serde(default)]
    pub node_uuid: String,
    /// The token sent to SMS (a `node` token; `SPEARLET_SMS_TOKEN`), when SMS checks tokens.
    #[serde(default)]
    pub sms_token: Secret,
    /// A file holding the token sent to SMS (instead of `sms_token`).
    #[serde(default)]
    pub sms_token_file: Option<PathBuf>,
    /// Seconds between heartbeats.
    pub heartbeat_interval: u64,
    /// SPEAR's; accepted and not acted on (a warning says so): finished results are kept until
    /// SMS has them, not swept on a timer.
    #[serde(default)]
    pub cleanup_interval: Option<u64>,
    /// Milliseconds allowed for one connection attempt.
    pub sms_connect_timeout_ms: u64,
    /// Milliseconds before the first retry (later ones back off, doubling up to 30 s).
    pub sms_connect_retry_ms: u64,
    /// Milliseconds to keep trying after losing SMS before giving up (0: forever).
    pub reconnect_total_timeout_ms: u64,
    /// Milliseconds a start is held before SMS is told of it (at most 60000; 0: at once). An
    /// execution that ends sooner is not told as started: its result tells SMS it ran.
    pub start_report_delay_ms: u64,
    /// IP address SMS is told to reach this node at (default: the gRPC address's, or 127.0.0.1).
    #[serde(default)]
    pub advertise_ip: String,
    /// Labels of this node, matched by tasks' affinity.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// gRPC server.
    pub grpc: Listen,
    /// HTTP server.
    pub http: Http,
    /// State and artifacts.
    pub storage: Storage,
    /// Logging.
    pub logging: Logging,
    /// Concurrency and execution limits.
    pub limits: Limits,
    /// Artifact sources.
    pub artifacts: ArtifactRules,
    /// `[spearlet.objects]`: bounds of SPEAR's `ObjectService`.
    #[serde(default)]
    pub objects: objects::ObjectLimits,
    /// `[spearlet.functions]`: invocations on live instances (`FunctionService`).
    #[serde(default)]
    pub functions: functions::FunctionLimits,
    /// `[spearlet.tls]`: TLS on the listeners and towards SMS.
    #[serde(default)]
    pub tls: SpearletTls,
}

/// `[executors]`: which executor plugins to use, and their configurations.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Executors {
    /// Executor plugin names; an executable type with no loaded executor is refused per execution.
    pub enabled: Vec<String>,
    /// Per-executor configuration, handed to its `configure()` as JSON.
    #[serde(default)]
    pub config: BTreeMap<String, toml::Table>,
}

/// The whole Spearlet configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SpearletConfig {
    /// The agent's own settings.
    pub spearlet: Spearlet,
    /// Executor plugins.
    pub executors: Executors,
    /// Plugin sections, validated by the plugin runtime.
    #[serde(default)]
    pub plugins: Option<toml::Table>,
    /// `[scheduler]`: the local strategy, validated by the plugin runtime.
    #[serde(default)]
    pub scheduler: Option<toml::Table>,
    /// `[reclaimer]`: the reclamation policy, validated by the plugin runtime.
    #[serde(default)]
    pub reclaimer: Option<toml::Table>,
    /// Plugin directory override from the command line.
    #[serde(skip)]
    pub plugin_dir: Option<PathBuf>,
    /// The file the configuration came from, if any.
    #[serde(skip)]
    pub source: Option<PathBuf>,
    /// `--sms-addr` was given: connect at start or exit.
    #[serde(skip)]
    pub sms_required: bool,
    /// Warnings about keys taken from SPEAR configs, logged at start.
    #[serde(skip)]
    pub notes: Vec<String>,
    /// `--insecure`: non-loopback listeners allowed.
    #[serde(skip)]
    pub insecure: bool,
}

const DEFAULTS: &str = r#"
[spearlet]
node_name = ""
sms_grpc_addr = "127.0.0.1:50051"
sms_http_addr = "127.0.0.1:8080"
auto_register = true
heartbeat_interval = 5
sms_connect_timeout_ms = 15000
sms_connect_retry_ms = 500
reconnect_total_timeout_ms = 0
start_report_delay_ms = 3

[spearlet.grpc]
addr = "127.0.0.1:50052"

[spearlet.http.server]
addr = "127.0.0.1:8082"

[spearlet.storage]
backend = "redb"
data_dir = "./data/spearlet"
max_cache_size_mb = 512
max_object_size = 268435456

[spearlet.logging]
level = "info"
format = "pretty"

[spearlet.artifacts]
fetch_timeout_ms = 300000

[spearlet.limits]
max_concurrent = 64
max_instances_per_task = 16
max_instances = 1024
output_cap_mb = 16
stop_grace_ms = 5000
drain_timeout_ms = 30000
private_workdir = true

[executors]
enabled = ["wasm", "process", "container"]
"#;

/// `SPEARLET_*` variables and the keys they set.
const ENV: &[(&str, &str)] = &[
    ("SPEARLET_NODE_NAME", "spearlet.node_name"),
    ("SPEARLET_SMS_GRPC_ADDR", "spearlet.sms_grpc_addr"),
    ("SPEARLET_SMS_HTTP_ADDR", "spearlet.sms_http_addr"),
    ("SPEARLET_AUTO_REGISTER", "spearlet.auto_register"),
    ("SPEARLET_SMS_TOKEN", "spearlet.sms_token"),
    ("SPEARLET_TLS_SMS_CA_FILE", "spearlet.tls.sms_ca_file"),
    (
        "SPEARLET_TLS_CLIENT_CERT_FILE",
        "spearlet.tls.client_cert_file",
    ),
    (
        "SPEARLET_TLS_CLIENT_KEY_FILE",
        "spearlet.tls.client_key_file",
    ),
    ("SPEARLET_NODE_UUID", "spearlet.node_uuid"),
    ("SPEARLET_HEARTBEAT_INTERVAL", "spearlet.heartbeat_interval"),
    ("SPEARLET_CLEANUP_INTERVAL", "spearlet.cleanup_interval"),
    ("SPEARLET_ADVERTISE_IP", "spearlet.advertise_ip"),
    ("SPEARLET_GRPC_ADDR", "spearlet.grpc.addr"),
    ("SPEARLET_HTTP_ADDR", "spearlet.http.server.addr"),
    ("SPEARLET_STORAGE_BACKEND", "spearlet.storage.backend"),
    ("SPEARLET_STORAGE_DATA_DIR", "spearlet.storage.data_dir"),
    (
        "SPEARLET_STORAGE_MAX_CACHE_MB",
        "spearlet.storage.max_cache_size_mb",
    ),
    (
        "SPEARLET_STORAGE_COMPRESSION_ENABLED",
        "spearlet.storage.compression_enabled",
    ),
    (
        "SPEARLET_STORAGE_MAX_OBJECT_SIZE",
        "spearlet.storage.max_object_size",
    ),
    ("SPEARLET_LOG_LEVEL", "spearlet.logging.level"),
    ("SPEARLET_LOG_FORMAT", "spearlet.logging.format"),
    ("SPEARLET_LOG_FILE", "spearlet.logging.file"),
    (
        "SPEARLET_SMS_CONNECT_TIMEOUT_MS",
        "spearlet.sms_connect_timeout_ms",
    ),
    (
        "SPEARLET_SMS_CONNECT_RETRY_MS",
        "spearlet.sms_connect_retry_ms",
    ),
    (
        "SPEARLET_RECONNECT_TOTAL_TIMEOUT_MS",
        "spearlet.reconnect_total_timeout_ms",
    ),
    ("SPEARLET_MAX_CONCURRENT", "spearlet.limits.max_concurrent"),
];

impl SpearletConfig {
    /// Load with the layering described in the module docs.
    pub fn load(cli: &Cli) -> Result<Self, ConfigError> {
        Self::load_with(cli, |k| std::env::var(k).ok(), home_config())
    }

    /// Load with an explicit environment and home config path (for tests).
    pub fn load_with(
        cli: &Cli,
        env: impl Fn(&str) -> Option<String>,
        home: Option<PathBuf>,
    ) -> Result<Self, ConfigError> {
        let show = |p: &Option<PathBuf>| p.as_ref().map(|p| p.display().to_string());
        let number = |v: Option<u64>| v.map(|v| v.to_string());
        let loaded = Layers::new(DEFAULTS)
            .env(ENV, env)
            .file(cli.config.clone(), home)
            .flag(
                "--sms-grpc-addr",
                "spearlet.sms_grpc_addr",
                cli.sms_addr.clone(),
            )
            .flag(
                "--sms-http-addr",
                "spearlet.sms_http_addr",
                cli.sms_http_addr.clone(),
            )
            .flag(
                "--storage-backend",
                "spearlet.storage.backend",
                cli.storage_backend.clone(),
            )
            .flag(
                "--storage-path",
                "spearlet.storage.data_dir",
                show(&cli.storage_path),
            )
            .flag("--node-name", "spearlet.node_name", cli.node_name.clone())
            .flag(
                "--grpc-addr",
                "spearlet.grpc.addr",
                cli.grpc_addr.map(|a| a.to_string()),
            )
            .flag(
                "--http-addr",
                "spearlet.http.server.addr",
                cli.http_addr.map(|a| a.to_string()),
            )
            .flag(
                "--data-dir",
                "spearlet.storage.data_dir",
                show(&cli.data_dir),
            )
            .flag(
                "--heartbeat-interval",
                "spearlet.heartbeat_interval",
                number(cli.heartbeat_interval),
            )
            .flag(
                "--sms-connect-timeout-ms",
                "spearlet.sms_connect_timeout_ms",
                number(cli.sms_connect_timeout_ms),
            )
            .flag(
                "--sms-connect-retry-ms",
                "spearlet.sms_connect_retry_ms",
                number(cli.sms_connect_retry_ms),
            )
            .flag(
                "--reconnect-total-timeout-ms",
                "spearlet.reconnect_total_timeout_ms",
                number(cli.reconnect_total_timeout_ms),
            )
            .flag(
                "--log-level",
                "spearlet.logging.level",
                cli.log_level.clone(),
            )
            .flag(
                "--auto-register",
                "spearlet.auto_register",
                cli.auto_register.map(|v| v.to_string()),
            )
            .load::<SpearletConfig>()?;
        let mut problems = loaded.problems();
        // Relative paths from the file (or the defaults) are relative to the file.
        let mut data_dir = loaded.value.spearlet.storage.data_dir.clone();
        loaded.resolve_path("spearlet.storage.data_dir", &mut data_dir);
        let mut config = loaded.value;
        config.spearlet.storage.data_dir = data_dir;
        config.notes = loaded.notes;
        config.take_spear_values();
        config.plugin_dir = cli.plugin_dir.clone();
        config.sms_required = cli.sms_addr.is_some();
        config.insecure = cli.insecure;
        config.source = loaded.file;
        config.validate(&mut problems);
        // The plugin sections, as the plugin runtime will read them.
        if let Err(e) = config.runtime_config() {
            for p in e.problems {
                problems.push(p);
            }
        }
        problems.finish()?;
        Ok(config)
    }

    /// SPEAR's values that mean something else here, each with a note: the `sled` backend
    /// becomes `redb`; the HTTP and compression switches are not acted on.
    fn take_spear_values(&mut self) {
        let s = &mut self.spearlet;
        if s.storage.backend == "sled" || s.storage.backend == "rocksdb" {
            self.notes.push(format!(
                "spearlet.storage.backend: `{}` is SPEAR's; the Spearlet keeps its state in `redb` \
                 (durable, in spearlet.storage.data_dir) instead",
                s.storage.backend
            ));
            s.storage.backend = "redb".into();
        }
        let ignored = [
            (
                s.http.cors_enabled.is_some(),
                "spearlet.http.cors_enabled",
                "the Spearlet's HTTP serves its operator, not browsers of other origins",
            ),
            (
                s.http.swagger_enabled.is_some(),
                "spearlet.http.swagger_enabled",
                "the Spearlet serves no Swagger UI (SMS does)",
            ),
            (
                s.storage.compression_enabled.is_some(),
                "spearlet.storage.compression_enabled",
                "artifacts are cached as fetched",
            ),
            (
                s.cleanup_interval.is_some(),
                "spearlet.cleanup_interval",
                "finished results are kept until SMS has them, not swept on a timer",
            ),
        ];
        for (given, key, why) in ignored {
            if given {
                self.notes
                    .push(format!("{key}: accepted and not acted on: {why}"));
            }
        }
    }

    /// The plugin runtime's view of this configuration.
    pub fn runtime_config(&self) -> Result<spear_plugin_runtime::RuntimeConfig, ConfigError> {
        let mut table = toml::Table::new();
        for (key, section) in [
            ("plugins", &self.plugins),
            ("scheduler", &self.scheduler),
            ("reclaimer", &self.reclaimer),
        ] {
            if let Some(s) = section {
                table.insert(key.into(), toml::Value::Table(s.clone()));
            }
        }
        let refused = |message: String| Problem::Other {
            origin: self.source.clone().map_or(Origin::Default, Origin::File),
            message,
        };
        let text = toml::to_string(&table).map_err(|e| refused(e.to_string()))?;
        let base = self.source.as_deref().and_then(Path::parent);
        let mut rc = spear_plugin_runtime::RuntimeConfig::compile(&text, base)
            .map_err(|e| refused(e.to_string()))?;
        if let Some(dir) = &self.plugin_dir {
            rc.dir = dir.clone();
        }
        Ok(rc)
    }

    /// An executor's configuration as JSON (`{}` when none).
    pub fn executor_config(&self, name: &str) -> String {
        self.executors
            .config
            .get(name)
            .and_then(|t| serde_json::to_string(t).ok())
            .unwrap_or_else(|| "{}".into())
    }

    /// One connection attempt's time limit.
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.spearlet.sms_connect_timeout_ms)
    }

    /// The node name: configured, else the host name.
    pub fn node_name(&self) -> String {
        if !self.spearlet.node_name.is_empty() {
            return self.spearlet.node_name.clone();
        }
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_else(|_| "spearlet".into())
    }
}

/// `~/.spear/config.toml`, where `~` is `SPEAR_HOME` when set (as SPEAR reads it), else `HOME`.
fn home_config() -> Option<PathBuf> {
    std::env::var_os("SPEAR_HOME")
        .or_else(|| std::env::var_os("HOME"))
        .map(|h| PathBuf::from(h).join(".spear/config.toml"))
}

mod access;
mod cli;
pub mod functions;
pub mod object_stores;
pub mod objects;
mod tls;
mod validate;
pub use access::Secret;
pub use tls::{SmsTls, SpearletTls};

#[cfg(test)]
mod tests;
