//! SMS configuration: built-in defaults < `SMS_*` environment < the config file (`--config`, else
//! `~/.sms/config.toml` when present) < command-line flags, layered with the `config` crate.
//!
//! The file may also hold the plugin sections (`[plugins]`, `[scheduler]`), which the plugin runtime
//! validates and hot-reloads; SMS's own keys need a restart.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::listen::{GrpcListen, HttpListen};

/// Command-line flags (SPEAR's, plus the storage ones).
#[derive(Debug, Clone, Default, clap::Parser)]
#[command(
    name = "sms",
    version,
    about = "SPEAR Metadata Server: the SPEAR control plane"
)]
pub struct Cli {
    /// Config file (default: ~/.sms/config.toml when it exists).
    #[arg(short, long, global = true)]
    pub config: Option<PathBuf>,
    /// gRPC listen address.
    #[arg(long)]
    pub grpc_addr: Option<SocketAddr>,
    /// HTTP (REST, Swagger, metrics) listen address.
    #[arg(long)]
    pub http_addr: Option<SocketAddr>,
    /// Serve the web admin.
    #[arg(long)]
    pub enable_web_admin: bool,
    /// Web admin listen address.
    #[arg(long)]
    pub web_admin_addr: Option<SocketAddr>,
    /// Seconds without a heartbeat before a node is unhealthy.
    #[arg(long)]
    pub heartbeat_timeout: Option<u64>,
    /// Seconds an unhealthy node is kept before it is removed.
    #[arg(long)]
    pub cleanup_interval: Option<u64>,
    /// Serve Swagger UI at /swagger-ui.
    #[arg(long)]
    pub enable_swagger: bool,
    /// Log level (trace, debug, info, warn, error).
    #[arg(long)]
    pub log_level: Option<String>,
    /// Storage backend plugin (`redb`, `memory`).
    #[arg(long, global = true)]
    pub db_type: Option<String>,
    /// Storage path (for `redb`).
    #[arg(long, global = true)]
    pub db_path: Option<PathBuf>,
    /// Directory holding plugin files (overrides `[plugins] dir`).
    #[arg(long, global = true)]
    pub plugin_dir: Option<PathBuf>,
    /// Directory for uploaded files.
    #[arg(long)]
    pub files_dir: Option<PathBuf>,
    /// Listen on non-loopback addresses with `[auth] enabled = false` (anyone who reaches SMS
    /// can then run programs on every node); a warning is logged every minute.
    #[arg(long)]
    pub insecure: bool,
    #[command(subcommand)]
    /// Offline commands on SMS's state (SMS must not be running).
    pub command: Option<crate::auth::offline::Command>,
}

/// `[database]`: which storage backend plugin holds SMS's state.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Database {
    /// Storage backend plugin name: `redb` (durable) or `memory`.
    pub db_type: String,
    /// Path of the database (for `redb`).
    pub path: PathBuf,
    /// Accepted for compatibility with SPEAR configs; unused.
    #[serde(default)]
    pub pool_size: Option<u32>,
}

/// `[log]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Log {
    /// Level filter.
    pub level: String,
    /// `pretty` or `json`.
    pub format: String,
    /// Accepted for compatibility; logs go to standard error.
    #[serde(default)]
    pub file: Option<PathBuf>,
}

/// `[files]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Files {
    /// Where uploaded bytes are kept, content-addressed.
    pub dir: PathBuf,
    /// Largest upload accepted, in MiB.
    pub max_upload_mb: u64,
}

/// The whole SMS configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
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
    /// An execution no registered node could hold: `queue` (shown as unschedulable) or `refuse`.
    pub unschedulable: crate::fit::Unschedulable,
    /// `[dispatch]`: how much work a node may hold ([`crate::dispatch`]).
    #[serde(default)]
    pub dispatch: crate::dispatch::DispatchConfig,
    /// State storage.
    pub database: Database,
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
}

const DEFAULTS: &str = r#"
enable_swagger = false
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
];

/// Errors of loading the configuration, each naming its source and key.
#[derive(Debug, thiserror::Error)]
#[error("configuration: {0}")]
pub struct ConfigError(pub String);

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
        use config::{Config, File, FileFormat};
        // The environment sits above the defaults and below the file: a source of its own between.
        let mut env_layer = Config::builder();
        for (var, key) in ENV {
            if let Some(value) = env(var) {
                env_layer = env_layer
                    .set_override(*key, value)
                    .map_err(|e| ConfigError(format!("{var}: {e}")))?;
            }
        }
        let env_layer = env_layer
            .build()
            .map_err(|e| ConfigError(format!("environment: {e}")))?;
        let builder = Config::builder()
            .add_source(File::from_str(DEFAULTS, FileFormat::Toml))
            .add_source(env_layer);
        let source = cli.config.clone().or(home.filter(|h| h.is_file()));
        let text = match &source {
            Some(path) => Some(
                std::fs::read_to_string(path)
                    .map_err(|e| ConfigError(format!("{}: cannot read: {e}", path.display())))?,
            ),
            None => None,
        };
        let config = Self::build(cli, builder, source, text.as_deref())?;
        // The bootstrap tokens are read again at start; a bad one is a configuration error.
        crate::auth::tokens::bootstrap(&config.auth, env)
            .map_err(|e| ConfigError(e.to_string()))?;
        Ok(config)
    }

    /// Parse a config file's text alone (defaults below it; no environment, no flags), as an
    /// operator's file is checked at start.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        use config::{Config, File, FileFormat};
        let builder = Config::builder().add_source(File::from_str(DEFAULTS, FileFormat::Toml));
        Self::build(
            &Cli::default(),
            builder,
            Some(PathBuf::from("config.toml")),
            Some(text),
        )
    }

    /// Layer the file's `text` (from `source`) and the flags over `builder`, then check it all.
    fn build(
        cli: &Cli,
        mut builder: config::ConfigBuilder<config::builder::DefaultState>,
        source: Option<PathBuf>,
        text: Option<&str>,
    ) -> Result<Self, ConfigError> {
        use config::{File, FileFormat};
        if let (Some(path), Some(text)) = (&source, text) {
            // Validate the file's own shape first so that a typo is reported against the file.
            toml::from_str::<toml::Table>(text).map_err(|e| {
                ConfigError(format!("{}: {}", path.display(), e.to_string().trim()))
            })?;
            builder = builder.add_source(File::from_str(text, FileFormat::Toml));
        }
        let over = |b: config::ConfigBuilder<config::builder::DefaultState>,
                    key: &str,
                    v: Option<String>| match v {
            Some(v) => b
                .set_override(key, v)
                .map_err(|e| ConfigError(format!("--{key}: {e}"))),
            None => Ok(b),
        };
        builder = over(builder, "grpc.addr", cli.grpc_addr.map(|a| a.to_string()))?;
        builder = over(builder, "http.addr", cli.http_addr.map(|a| a.to_string()))?;
        builder = over(
            builder,
            "web_admin_addr",
            cli.web_admin_addr.map(|a| a.to_string()),
        )?;
        builder = over(
            builder,
            "heartbeat_timeout",
            cli.heartbeat_timeout.map(|v| v.to_string()),
        )?;
        builder = over(
            builder,
            "cleanup_interval",
            cli.cleanup_interval.map(|v| v.to_string()),
        )?;
        builder = over(builder, "log.level", cli.log_level.clone())?;
        builder = over(builder, "database.db_type", cli.db_type.clone())?;
        builder = over(
            builder,
            "database.path",
            cli.db_path.as_ref().map(|p| p.display().to_string()),
        )?;
        builder = over(
            builder,
            "files.dir",
            cli.files_dir.as_ref().map(|p| p.display().to_string()),
        )?;
        if cli.enable_swagger {
            builder = over(builder, "enable_swagger", Some("true".into()))?;
        }
        if cli.enable_web_admin {
            builder = over(builder, "enable_web_admin", Some("true".into()))?;
        }
        let built = builder
            .build()
            .map_err(|e| ConfigError(with_source(&source, e)))?;
        let mut config: SmsConfig = built
            .try_deserialize()
            .map_err(|e| ConfigError(with_source(&source, e)))?;
        config.plugin_dir = cli.plugin_dir.clone();
        config.source = source;
        config.insecure = cli.insecure;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        self.check_tls()?;
        self.refuse_open_listeners()?;
        self.http.limits()?;
        self.http.max_body_bytes()?;
        self.grpc.limits()?;
        self.dispatch.validate()?;
        if self.heartbeat_timeout == 0 {
            return Err(ConfigError(
                "heartbeat_timeout: must be at least 1 second".into(),
            ));
        }
        if !["pretty", "json"].contains(&self.log.format.as_str()) {
            return Err(ConfigError(format!(
                "log.format: `{}` is not `pretty` or `json`",
                self.log.format
            )));
        }
        if self.files.max_upload_mb == 0 {
            return Err(ConfigError(
                "files.max_upload_mb: must be at least 1".into(),
            ));
        }
        if self.reclaimer.is_some() {
            return Err(ConfigError(
                "reclaimer: reclamation policies belong in the Spearlet's config, not SMS's".into(),
            ));
        }
        Ok(())
    }

    /// `[tls]` against the listeners' `enable_tls`: a certificate for each listener under TLS,
    /// and no TLS key that would act on nothing.
    fn check_tls(&self) -> Result<(), ConfigError> {
        self.tls.check("tls").map_err(ConfigError)?;
        let on = self.grpc.enable_tls || self.http.enable_tls;
        if on && !self.tls.has_cert() {
            let key = if self.grpc.enable_tls {
                "grpc.enable_tls"
            } else {
                "http.enable_tls"
            };
            return Err(ConfigError(format!(
                "{key}: TLS needs a certificate: set tls.cert_file and tls.key_file (PEM files)"
            )));
        }
        if !on && self.tls.has_cert() {
            return Err(ConfigError(
                "tls.cert_file: set, but no listener enables TLS (grpc.enable_tls, http.enable_tls)"
                    .into(),
            ));
        }
        if self.tls.client_ca_file.is_some() && !self.grpc.enable_tls {
            return Err(ConfigError(
                "tls.client_ca_file: client certificates are asked for on the gRPC listener; set grpc.enable_tls = true"
                    .into(),
            ));
        }
        Ok(())
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

    fn refuse_open_listeners(&self) -> Result<(), ConfigError> {
        let open = self.open_listeners();
        if open.is_empty() || self.insecure {
            return Ok(());
        }
        Err(ConfigError(format!(
            "{}: not a loopback address while [auth] enabled = false: anyone who reaches it could \
             run programs on every node. Turn auth on ([auth] enabled = true or SMS_AUTH_ENABLED=true, \
             with SMS_ADMIN_TOKEN set or a token made by `sms token create --role admin --name NAME`), \
             or start with --insecure to accept the risk",
            open.join(", ")
        )))
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
        let text = toml::to_string(&table).map_err(|e| ConfigError(e.to_string()))?;
        let base = self.source.as_deref().and_then(Path::parent);
        let mut rc = spear_plugin_runtime::RuntimeConfig::compile(&text, base)
            .map_err(|e| ConfigError(e.to_string()))?;
        if let Some(dir) = &self.plugin_dir {
            rc.dir = dir.clone();
        }
        Ok(rc)
    }
}

fn with_source(source: &Option<PathBuf>, e: impl std::fmt::Display) -> String {
    match source {
        Some(p) => format!("{}: {e}", p.display()),
        None => e.to_string(),
    }
}

fn home_config() -> Option<PathBuf> {
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".sms/config.toml"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn layers_defaults_env_file_flags_in_that_order() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("sms.toml");
        std::fs::write(
            &file,
            "heartbeat_timeout = 30\n[http]\naddr = \"127.0.0.1:9000\"\n",
        )
        .unwrap();
        let cli = Cli {
            config: Some(file),
            grpc_addr: Some("127.0.0.1:7000".parse().unwrap()),
            ..Cli::default()
        };
        let c = SmsConfig::load_with(
            &cli,
            env(&[
                ("SMS_HTTP_ADDR", "127.0.0.1:1111"),
                ("SMS_CLEANUP_INTERVAL", "42"),
                ("SMS_GRPC_ADDR", "127.0.0.1:2222"),
            ]),
            None,
        )
        .unwrap();
        assert_eq!(
            c.http.addr.to_string(),
            "127.0.0.1:9000",
            "file beats environment"
        );
        assert_eq!(c.cleanup_interval, 42, "environment beats defaults");
        assert_eq!(
            c.grpc.addr.to_string(),
            "127.0.0.1:7000",
            "flags beat everything"
        );
        assert_eq!(c.heartbeat_timeout, 30);
        assert_eq!(c.database.db_type, "redb");
    }

    #[test]
    fn bad_values_are_refused_naming_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("sms.toml");
        std::fs::write(&file, "[log]\nformat = \"xml\"\nlevel = \"info\"\n").unwrap();
        let cli = Cli {
            config: Some(file.clone()),
            ..Cli::default()
        };
        let err = SmsConfig::load_with(&cli, |_| None, None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("log.format: `xml`"), "{err}");
        std::fs::write(&file, "[grpc]\naddr = \"nowhere\"\n").unwrap();
        let err = SmsConfig::load_with(&cli, |_| None, None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("sms.toml"), "{err}");
        std::fs::write(&file, "bogus = 1\n").unwrap();
        let err = SmsConfig::load_with(&cli, |_| None, None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("bogus"), "{err}");
    }

    #[test]
    fn tls_keys_act_or_are_refused_naming_the_key() {
        for (text, key) in [
            (
                "[grpc]\naddr = \"127.0.0.1:1\"\nenable_tls = true\n",
                "grpc.enable_tls",
            ),
            (
                "[http]\naddr = \"127.0.0.1:1\"\nenable_tls = true\n",
                "http.enable_tls",
            ),
            (
                "[tls]\ncert_file = \"c.pem\"\nkey_file = \"k.pem\"\n",
                "tls.cert_file: set, but no listener",
            ),
            (
                "[tls]\ncert_file = \"c.pem\"\n",
                "tls.cert_file is set without tls.key_file",
            ),
            (
                "[http]\naddr = \"127.0.0.1:1\"\nenable_tls = true\n[tls]\ncert_file = \"c\"\nkey_file = \"k\"\nclient_ca_file = \"ca\"\n",
                "tls.client_ca_file",
            ),
            (
                "[grpc]\naddr = \"127.0.0.1:1\"\nenable_tls = true\n[tls]\ncert_file = \"c\"\nkey_file = \"k\"\nreload_secs = 0\n",
                "tls.reload_secs",
            ),
            ("[tls]\ncert = \"c\"\n", "cert"),
            (
                "[tls]\nreload_secs = 5\n",
                "tls.reload_secs: there is no tls.cert_file",
            ),
        ] {
            let err = SmsConfig::parse(text).unwrap_err().to_string();
            assert!(err.contains(key), "{text}: {err}");
        }
        let c = SmsConfig::parse(
            "[grpc]\naddr = \"127.0.0.1:1\"\nenable_tls = true\n[tls]\ncert_file = \"c\"\nkey_file = \"k\"\nclient_ca_file = \"ca\"\n",
        )
        .unwrap();
        assert!(c.grpc.enable_tls && !c.http.enable_tls);
        let c = SmsConfig::load_with(
            &Cli::default(),
            env(&[
                ("SMS_HTTP_ENABLE_TLS", "true"),
                ("SMS_TLS_CERT_FILE", "/etc/spear/sms.pem"),
                ("SMS_TLS_KEY_FILE", "/etc/spear/sms-key.pem"),
            ]),
            None,
        )
        .unwrap();
        assert!(c.http.enable_tls);
        assert_eq!(
            c.tls.files(true).unwrap().cert,
            PathBuf::from("/etc/spear/sms.pem")
        );
    }

    #[test]
    fn dispatch_keys_layer_and_are_checked() {
        let c = SmsConfig::parse("").unwrap();
        assert_eq!(c.dispatch, crate::dispatch::DispatchConfig::default());
        let c = SmsConfig::parse("[dispatch]\nprefetch = 0\n").unwrap();
        assert_eq!((c.dispatch.prefetch, c.dispatch.default_slots), (0, 64));
        let c = SmsConfig::load_with(
            &Cli::default(),
            env(&[("SMS_DISPATCH_DEFAULT_SLOTS", "8")]),
            None,
        )
        .unwrap();
        assert_eq!(c.dispatch.default_slots, 8);
        for (text, key) in [
            ("[dispatch]\nprefetch = 2000\n", "dispatch.prefetch"),
            ("[dispatch]\ndefault_slots = 0\n", "dispatch.default_slots"),
            ("[dispatch]\nslots = 3\n", "slots"),
        ] {
            let err = SmsConfig::parse(text).unwrap_err().to_string();
            assert!(err.contains(key), "{text}: {err}");
        }
    }
}
