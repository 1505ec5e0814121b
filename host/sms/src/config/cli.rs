//! `sms`'s command-line flags.

use std::net::SocketAddr;
use std::path::PathBuf;

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
    /// Serve Swagger UI at /swagger-ui (the default).
    #[arg(long)]
    pub enable_swagger: bool,
    /// Do not serve Swagger UI.
    #[arg(long, conflicts_with = "enable_swagger")]
    pub disable_swagger: bool,
    /// Do not serve the web admin.
    #[arg(long, conflicts_with = "enable_web_admin")]
    pub disable_web_admin: bool,
    /// Largest upload accepted, in bytes.
    #[arg(long)]
    pub max_upload_bytes: Option<u64>,
    /// Accepted from SPEAR and not acted on (a warning says so): no backend here pools connections.
    #[arg(long, global = true)]
    pub db_pool_size: Option<u32>,
    /// Log level (trace, debug, info, warn, error).
    #[arg(long)]
    pub log_level: Option<String>,
    /// Storage backend plugin (`redb`, `memory`).
    #[arg(long, global = true)]
    pub db_type: Option<String>,
    /// Storage path (for `redb`).
    #[arg(long, global = true)]
    pub db_path: Option<PathBuf>,
    /// etcd's client URLs, comma-separated (for `etcd`).
    #[arg(long, global = true)]
    pub db_endpoints: Option<String>,
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
