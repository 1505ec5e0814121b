//! SMS configuration: built-in defaults < `SMS_*` environment < the config file (`--config`, else
//! `~/.sms/config.toml` when present) < command-line flags, layered by [`spear_config`] (shared
//! with the Spearlet): every problem is reported at once, naming its key and where it was set.
//! Relative paths are relative to SMS's working directory (`plugins.dir`: to the config file).
//!
//! The file may also hold the plugin sections (`[plugins]`, `[scheduler]`), which the plugin runtime
//! validates and hot-reloads; SMS's own keys need a restart.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
pub use spear_config::ConfigError;
use spear_config::{Layers, Origin, Problem, Problems};

/// Reads an environment variable.
type Lookup<'a> = dyn Fn(&str) -> Option<String> + 'a;

use crate::listen::{GrpcListen, HttpListen};

/// `[database]`: which storage backend plugin holds SMS's state.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Database {
    /// Storage backend plugin name: `redb` (durable) or `memory`.
    pub db_type: String,
    /// Path of the database (for `redb`).
    pub path: PathBuf,
    /// Accepted from SPEAR configs and not acted on (a warning says so): no backend here pools
    /// connections.
    #[serde(default)]
    pub pool_size: Option<u32>,
    /// Memory the `redb` backend may use to cache pages, in MiB (default 8; 1 to 65,536).
    #[serde(default)]
    pub cache_mb: Option<u64>,
    /// etcd's client URLs (`db_type = "etcd"`): a list, or one string of comma-separated URLs.
    #[serde(default)]
    pub endpoints: Option<Endpoints>,
    /// etcd: the namespace SMS's keys live under (default `spear/`).
    #[serde(default)]
    pub prefix: Option<String>,
    /// etcd: a request's deadline, in milliseconds (default 5000).
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// etcd: the cluster's `--max-txn-ops` (default 128).
    #[serde(default)]
    pub max_txn_ops: Option<u32>,
    /// etcd: the cluster's `--max-request-bytes` (default 1.5 MiB).
    #[serde(default)]
    pub max_request_bytes: Option<u64>,
}

/// A list of URLs, written as a list or as one comma-separated string (as an environment
/// variable or a flag gives it).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum Endpoints {
    /// `"http://a:2379,http://b:2379"`.
    One(String),
    /// `["http://a:2379", "http://b:2379"]`.
    Many(Vec<String>),
}

impl Endpoints {
    /// The URLs, trimmed, empty ones left out.
    pub fn list(&self) -> Vec<String> {
        let all: Vec<&str> = match self {
            Self::One(s) => s.split(',').collect(),
            Self::Many(v) => v.iter().map(String::as_str).collect(),
        };
        all.into_iter()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()
    }
}

/// The `[database]` keys only the etcd backend takes.
const ETCD_KEYS: [&str; 5] = [
    "endpoints",
    "prefix",
    "timeout_ms",
    "max_txn_ops",
    "max_request_bytes",
];

/// `[log]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Log {
    /// Level filter.
    pub level: String,
    /// `pretty` or `json`.
    pub format: String,
    /// Write logs to this file (appended; its directory is made) instead of standard error.
    #[serde(default)]
    pub file: Option<PathBuf>,
}

/// `[files]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Files {
    /// Where uploaded bytes are kept, content-addressed.
    pub dir: PathBuf,
    /// Largest upload accepted, in MiB (top-level `max_upload_bytes`, when set, wins).
    pub max_upload_mb: u64,
}

/// The whole SMS configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SmsConfig {
    /// gRPC server.
    pub grpc: GrpcListen,
    /// HTTP gateway.
    pub http: HttpListen,
    /// Serve Swagger UI.
    pub enable_swagger: bool,
    /// Serve the web admin.
    pub enable_web_admin: bool,
    /// Web admin address.
    pub web_admin_addr: SocketAddr,
    /// Seconds without a heartbeat before a node is unhealthy.
    pub heartbeat_timeout: u64,
    /// Seconds an unhealthy node is kept before removal.
    pub cleanup_interval: u64,
    /// Largest upload accepted, in bytes (SPEAR's key; `[files] max_upload_mb` when unset).
    #[serde(default)]
    pub max_upload_bytes: Option<u64>,
    /// An execution no registered node could hold: `queue` (shown as unschedulable) or `refuse`.
    pub unschedulable: crate::fit::Unschedulable,
    /// `[dispatch]`: how much work a node may hold ([`crate::dispatch`]).
    #[serde(default)]
    pub dispatch: crate::dispatch::DispatchConfig,
    /// `[deadlines]`: infeasible deadlines and how urgency orders the queue ([`crate::deadlines`]).
    #[serde(default)]
    pub deadlines: crate::deadlines::DeadlineConfig,
    /// `[preemption]`: whether and how running work makes room for higher-priority work
    /// ([`crate::preempt`]).
    #[serde(default)]
    pub preemption: crate::preempt::PreemptionConfig,
    /// `[autoscaler]`: the node pool's size, by a policy plugin and a provider
    /// ([`crate::autoscale`]).
    #[serde(default)]
    pub autoscaler: Option<crate::autoscale::AutoscalerConfig>,
    /// `[explain]`: how many scheduling rounds are kept to explain ([`crate::explain`]).
    #[serde(default)]
    pub explain: crate::explain::ExplainConfig,
    /// `[retention]`: how long finished executions and events are kept ([`crate::retention`]).
    #[serde(default)]
    pub retention: crate::retention::RetentionConfig,
    /// State storage.
    pub database: Database,
    /// `[ha]`: the election among replicas on etcd ([`crate::ha`]).
    #[serde(default)]
    pub ha: Option<crate::ha::HaConfig>,
    /// Logging.
    pub log: Log,
    /// Uploaded files.
    pub files: Files,
    /// `[auth]`: tokens and roles ([`crate::auth`]).
    #[serde(default)]
    pub auth: crate::auth::AuthConfig,
    /// `[tls]`: the certificate of the listeners with `enable_tls` (and the CA of clients' ones).
    #[serde(default)]
    pub tls: spear_edge::tls::TlsConfig,
    /// Plugin sections, validated by the plugin runtime.
    #[serde(default)]
    pub plugins: Option<toml::Table>,
    /// `[scheduler]`, validated by the plugin runtime.
    #[serde(default)]
    pub scheduler: Option<toml::Table>,
    /// `[reclaimer]` (Spearlet's), refused here by the runtime's rules if present.
    #[serde(default)]
    pub reclaimer: Option<toml::Table>,
    /// Plugin directory override from the command line.
    #[serde(skip)]
    pub plugin_dir: Option<PathBuf>,
    /// The file the configuration came from, if any.
    #[serde(skip)]
    pub source: Option<PathBuf>,
    /// `--insecure`: non-loopback listeners allowed without auth.
    #[serde(skip)]
    pub insecure: bool,
    /// Warnings about keys taken from SPEAR configs, logged at start.
    #[serde(skip)]
    pub notes: Vec<String>,
}

const DEFAULTS: &str = r#"
enable_swagger = true
enable_web_admin = false
web_admin_addr = "127.0.0.1:8081"
heartbeat_timeout = 120
cleanup_interval = 300
unschedulable = "queue"

[grpc]
addr = "127.0.0.1:50051"

[http]
addr = "127.0.0.1:8080"

[database]
db_type = "redb"
path = "./data/sms.redb"

[log]
level = "info"
format = "pretty"

[files]
dir = "./data/files"
max_upload_mb = 64
"#;

/// `SMS_*` variables and the keys they set.
const ENV: &[(&str, &str)] = &[
    ("SMS_GRPC_ADDR", "grpc.addr"),
    ("SMS_HTTP_ADDR", "http.addr"),
    ("SMS_ENABLE_SWAGGER", "enable_swagger"),
    ("SMS_ENABLE_WEB_ADMIN", "enable_web_admin"),
    ("SMS_WEB_ADMIN_ADDR", "web_admin_addr"),
    ("SMS_HEARTBEAT_TIMEOUT", "heartbeat_timeout"),
    ("SMS_CLEANUP_INTERVAL", "cleanup_interval"),
    ("SMS_UNSCHEDULABLE", "unschedulable"),
    ("SMS_DISPATCH_PREFETCH", "dispatch.prefetch"),
    ("SMS_DISPATCH_DEFAULT_SLOTS", "dispatch.default_slots"),
    ("SMS_DB_TYPE", "database.db_type"),
    ("SMS_DB_PATH", "database.path"),
    ("SMS_DB_POOL_SIZE", "database.pool_size"),
    ("SMS_DB_CACHE_MB", "database.cache_mb"),
    ("SMS_DB_ENDPOINTS", "database.endpoints"),
    ("SMS_DB_PREFIX", "database.prefix"),
    ("SMS_LOG_LEVEL", "log.level"),
    ("SMS_LOG_FORMAT", "log.format"),
    ("SMS_LOG_FILE", "log.file"),
    ("SMS_FILES_DIR", "files.dir"),
    ("SMS_AUTH_ENABLED", "auth.enabled"),
    ("SMS_GRPC_ENABLE_TLS", "grpc.enable_tls"),
    ("SMS_HTTP_ENABLE_TLS", "http.enable_tls"),
    ("SMS_TLS_CERT_FILE", "tls.cert_file"),
    ("SMS_TLS_KEY_FILE", "tls.key_file"),
    ("SMS_TLS_CLIENT_CA_FILE", "tls.client_ca_file"),
    ("SMS_MAX_UPLOAD_MB", "files.max_upload_mb"),
    ("SMS_MAX_UPLOAD_BYTES", "max_upload_bytes"),
];

impl SmsConfig {
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
        let layers = Layers::new(DEFAULTS)
            .compat(SPEAR_KEYS)
            .env(ENV, &env)
            .file(cli.config.clone(), home);
        Self::build(cli, layers, Some(&env))
    }

    /// Parse a config file's text alone (defaults below it; no environment, no flags), as an
    /// operator's file is checked at start.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let layers = Layers::new(DEFAULTS)
            .compat(SPEAR_KEYS)
            .file_text("config.toml", text);
        Self::build(&Cli::default(), layers, None)
    }

    /// Layer the flags over `layers`, load, and check it all; every problem is reported at once.
    /// `env`, when given, is where the bootstrap admin tokens are read from (and checked).
    fn build(cli: &Cli, layers: Layers<'_>, env: Option<&Lookup<'_>>) -> Result<Self, ConfigError> {
        let show = |p: &Option<PathBuf>| p.as_ref().map(|p| p.display().to_string());
        let layers = layers
            .flag(
                "--grpc-addr",
                "grpc.addr",
                cli.grpc_addr.map(|a| a.to_string()),
            )
            .flag(
                "--http-addr",
                "http.addr",
                cli.http_addr.map(|a| a.to_string()),
            )
            .flag(
                "--web-admin-addr",
                "web_admin_addr",
                cli.web_admin_addr.map(|a| a.to_string()),
            )
            .flag(
                "--heartbeat-timeout",
                "heartbeat_timeout",
                cli.heartbeat_timeout.map(|v| v.to_string()),
            )
            .flag(
                "--cleanup-interval",
                "cleanup_interval",
                cli.cleanup_interval.map(|v| v.to_string()),
            )
            .flag("--log-level", "log.level", cli.log_level.clone())
            .flag("--db-type", "database.db_type", cli.db_type.clone())
            .flag("--db-path", "database.path", show(&cli.db_path))
            .flag(
                "--db-endpoints",
                "database.endpoints",
                cli.db_endpoints.clone(),
            )
            .flag("--files-dir", "files.dir", show(&cli.files_dir))
            .flag(
                "--enable-swagger",
                "enable_swagger",
                cli.enable_swagger.then(|| "true".into()),
            )
            .flag(
                "--disable-swagger",
                "enable_swagger",
                cli.disable_swagger.then(|| "false".into()),
            )
            .flag(
                "--enable-web-admin",
                "enable_web_admin",
                cli.enable_web_admin.then(|| "true".into()),
            )
            .flag(
                "--disable-web-admin",
                "enable_web_admin",
                cli.disable_web_admin.then(|| "false".into()),
            )
            .flag(
                "--max-upload-bytes",
                "max_upload_bytes",
                cli.max_upload_bytes.map(|v| v.to_string()),
            );
        let loaded = layers.load::<SmsConfig>()?;
        let mut problems = loaded.problems();
        let mut config = loaded.value;
        config.notes = loaded.notes;
        config.take_spear_values(cli);
        config.plugin_dir = cli.plugin_dir.clone();
        config.source = loaded.file;
        config.insecure = cli.insecure;
        config.validate(&mut problems);
        // The bootstrap tokens are read again at start; a bad one is a configuration problem.
        if let Some(env) = env
            && let Err(e) = crate::auth::tokens::bootstrap(&config.auth, env)
        {
            match e {
                crate::error::SmsError::InvalidArgument { field, reason } => {
                    problems.invalid(&field, reason);
                }
                other => problems.invalid("auth", other.to_string()),
            }
        }
        // The plugin sections, as the plugin runtime will read them.
        if let Err(e) = config.runtime_config() {
            for p in e.problems {
                problems.push(p);
            }
        }
        problems.finish()?;
        Ok(config)
    }

    /// The largest upload accepted, in bytes.
    pub fn max_upload_bytes(&self) -> u64 {
        self.max_upload_bytes
            .unwrap_or_else(|| self.files.max_upload_mb.saturating_mul(1024 * 1024))
    }

    /// Check the values that types alone do not, adding each problem to `problems`.
    fn validate(&self, problems: &mut Problems) {
        self.check_tls(problems);
        self.refuse_open_listeners(problems);
        problems.check(self.http.limits());
        problems.check(self.http.max_body_bytes());
        problems.check(self.grpc.limits());
        problems.check(self.dispatch.validate());
        self.retention.validate(problems);
        self.deadlines.validate(problems);
        self.preemption.validate(problems);
        if let Some(a) = &self.autoscaler {
            a.validate(problems);
        }
        self.explain.validate(problems);
        if self.heartbeat_timeout == 0 {
            problems.invalid("heartbeat_timeout", "must be at least 1 second");
        }
        if !["pretty", "json"].contains(&self.log.format.as_str()) {
            problems.invalid(
                "log.format",
                format!("`{}` is not `pretty` or `json`", self.log.format),
            );
        }
        if let Some(mb) = self.database.cache_mb {
            if self.database.db_type != "redb" {
                problems.invalid(
                    "database.cache_mb",
                    format!(
                        "only the redb backend has a page cache (db_type is `{}`)",
                        self.database.db_type
                    ),
                );
            } else if !(1..=65_536).contains(&mb) {
                problems.invalid("database.cache_mb", "must be 1 to 65536 (MiB)");
            }
        }
        self.check_etcd_keys(problems);
        if let Some(ha) = &self.ha {
            if self.database.db_type == "etcd" {
                ha.validate(problems);
            } else {
                problems.invalid(
                    "ha",
                    format!(
                        "replicas share their state on etcd only (db_type is `{}`)",
                        self.database.db_type
                    ),
                );
            }
        }
        if self.files.max_upload_mb == 0 {
            problems.invalid("files.max_upload_mb", "must be at least 1");
        }
        if self.max_upload_bytes == Some(0) {
            problems.invalid("max_upload_bytes", "must be at least 1");
        }
        if self.reclaimer.is_some() {
            problems.invalid(
                "reclaimer",
                "reclamation policies belong in the Spearlet's config, not SMS's",
            );
        }
    }

    /// The etcd keys of `[database]`: `endpoints` with etcd, none of them with another backend.
    fn check_etcd_keys(&self, problems: &mut Problems) {
        let d = &self.database;
        let given = [
            d.endpoints.is_some(),
            d.prefix.is_some(),
            d.timeout_ms.is_some(),
            d.max_txn_ops.is_some(),
            d.max_request_bytes.is_some(),
        ];
        if d.db_type == "etcd" {
            if d.prefix.as_deref() == Some("") {
                problems.invalid(
                    "database.prefix",
                    "must not be empty (etcd takes no empty key); end it with `/`",
                );
            }
            if d.endpoints.as_ref().is_none_or(|e| e.list().is_empty()) {
                problems.invalid(
                    "database.endpoints",
                    "the etcd backend needs its cluster's client URLs",
                );
            }
            return;
        }
        for (key, given) in ETCD_KEYS.iter().zip(given) {
            if given {
                problems.invalid(
                    &format!("database.{key}"),
                    format!(
                        "only the etcd backend takes it (db_type is `{}`)",
                        d.db_type
                    ),
                );
            }
        }
    }

    /// `[tls]` against the listeners' `enable_tls`: a certificate for each listener under TLS,
    /// and no TLS key that would act on nothing.
    fn check_tls(&self, problems: &mut Problems) {
        problems.check(self.tls.check("tls"));
        let on = self.grpc.enable_tls || self.http.enable_tls;
        if on && !self.tls.has_cert() {
            let key = if self.grpc.enable_tls {
                "grpc.enable_tls"
            } else {
                "http.enable_tls"
            };
            problems.invalid(
                key,
                "TLS needs a certificate: set tls.cert_file and tls.key_file (PEM files)",
            );
        }
        if !on && self.tls.has_cert() {
            problems.invalid(
                "tls.cert_file",
                "set, but no listener enables TLS (grpc.enable_tls, http.enable_tls)",
            );
        }
        if self.auth.node_certificates {
            if !self.auth.enabled {
                problems.invalid(
                    "auth.node_certificates",
                    "set, but auth.enabled is false: nothing is checked",
                );
            } else if self.tls.client_ca_file.is_none()
                || !self.grpc.enable_tls
                || !self.http.enable_tls
            {
                problems.invalid(
                    "auth.node_certificates",
                    "node certificates are asked for on the gRPC listener and on REST (a node's \
                     artifact fetches): set grpc.enable_tls, http.enable_tls and \
                     tls.client_ca_file (the CA that signs them)",
                );
            }
        }
        if self.tls.client_ca_file.is_some() && !self.grpc.enable_tls {
            problems.invalid(
                "tls.client_ca_file",
                "client certificates are asked for on the gRPC listener; set grpc.enable_tls = true",
            );
        }
    }

    /// The listeners on a non-loopback address while auth is off: refused unless `--insecure`.
    pub fn open_listeners(&self) -> Vec<String> {
        if self.auth.enabled {
            return Vec::new();
        }
        let mut open = Vec::new();
        let mut each = |key: &str, addr: SocketAddr| {
            if !addr.ip().is_loopback() {
                open.push(format!("{key} {addr}"));
            }
        };
        each("grpc.addr", self.grpc.addr);
        each("http.addr", self.http.addr);
        if self.enable_web_admin {
            each("web_admin_addr", self.web_admin_addr);
        }
        open
    }

    fn refuse_open_listeners(&self, problems: &mut Problems) {
        let open = self.open_listeners();
        if open.is_empty() || self.insecure {
            return;
        }
        problems.invalid(
            "auth.enabled",
            format!(
                "false, and {} is not a loopback address: anyone who reaches it could run \
                 programs on every node. Turn auth on ([auth] enabled = true or \
                 SMS_AUTH_ENABLED=true, with SMS_ADMIN_TOKEN set or a token made by `sms token \
                 create --role admin --name NAME`), or start with --insecure to accept the risk",
                open.join(", ")
            ),
        );
    }

    /// The plugin runtime's view of this configuration.
    pub fn runtime_config(&self) -> Result<spear_plugin_runtime::RuntimeConfig, ConfigError> {
        let mut table = toml::Table::new();
        if let Some(p) = &self.plugins {
            table.insert("plugins".into(), toml::Value::Table(p.clone()));
        }
        if let Some(s) = &self.scheduler {
            table.insert("scheduler".into(), toml::Value::Table(s.clone()));
        }
        if let Some(a) = &self.autoscaler {
            // The runtime's two keys; the rest of the section is SMS's.
            let mut section = toml::Table::new();
            section.insert("policy".into(), toml::Value::String(a.policy.clone()));
            if let Some(c) = &a.config {
                section.insert("config".into(), toml::Value::Table(c.clone()));
            }
            table.insert("autoscaler".into(), toml::Value::Table(section));
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
}

/// `~/.sms/config.toml`, where `~` is `SMS_HOME` when set (as SPEAR reads it), else `HOME`.
fn home_config() -> Option<PathBuf> {
    std::env::var_os("SMS_HOME")
        .or_else(|| std::env::var_os("HOME"))
        .map(|h| PathBuf::from(h).join(".sms/config.toml"))
}

mod cli;
mod spear;
#[cfg(test)]
mod tests;

pub use cli::Cli;
use spear::SPEAR_KEYS;
