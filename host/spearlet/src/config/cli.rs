//! The Spearlet's command-line flags (SPEAR's, plus a few of our own).

use std::net::SocketAddr;
use std::path::PathBuf;

/// Command-line flags (SPEAR's, plus a few of our own).
#[derive(Debug, Clone, Default, clap::Parser)]
#[command(
    name = "spearlet",
    version,
    about = "Spearlet: the SPEAR node agent (runs executions through executor plugins)"
)]
pub struct Cli {
    /// Config file (default: ~/.spear/config.toml when it exists).
    #[arg(short, long)]
    pub config: Option<PathBuf>,
    /// SMS gRPC address (`--sms-addr` too). When given, the Spearlet connects (and registers,
    /// with --auto-register) at start and exits non-zero if it cannot.
    #[arg(long = "sms-grpc-addr", visible_alias = "sms-addr")]
    pub sms_addr: Option<String>,
    /// SMS's HTTP address (the one `sms+file://` artifacts are fetched from).
    #[arg(long)]
    pub sms_http_addr: Option<String>,
    /// Register with SMS after connecting (`--auto-register` alone: true).
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub auto_register: Option<bool>,
    /// Storage backend plugin for the Spearlet's state (`redb`, `memory`).
    #[arg(long)]
    pub storage_backend: Option<String>,
    /// Data directory (as `--data-dir`).
    #[arg(long, conflicts_with = "data_dir")]
    pub storage_path: Option<PathBuf>,
    /// Node name (default: the host name).
    #[arg(long)]
    pub node_name: Option<String>,
    /// gRPC listen address (health, reflection).
    #[arg(long)]
    pub grpc_addr: Option<SocketAddr>,
    /// HTTP listen address (status, instances, metrics).
    #[arg(long)]
    pub http_addr: Option<SocketAddr>,
    /// Data directory (the state store, the artifact cache).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Directory holding plugin files (overrides `[plugins] dir`).
    #[arg(long)]
    pub plugin_dir: Option<PathBuf>,
    /// Seconds between heartbeats.
    #[arg(long)]
    pub heartbeat_interval: Option<u64>,
    /// Milliseconds allowed for one connection attempt to SMS.
    #[arg(long)]
    pub sms_connect_timeout_ms: Option<u64>,
    /// Milliseconds between connection attempts (the first; later ones back off).
    #[arg(long)]
    pub sms_connect_retry_ms: Option<u64>,
    /// Milliseconds the Spearlet keeps trying after losing SMS before it gives up (0: forever).
    #[arg(long)]
    pub reconnect_total_timeout_ms: Option<u64>,
    /// Listen on non-loopback addresses although the Spearlet's own gRPC and HTTP check no token
    /// (its status and plugin reload are then open to whoever reaches them).
    #[arg(long)]
    pub insecure: bool,
    /// Log level (trace, debug, info, warn, error).
    #[arg(long)]
    pub log_level: Option<String>,
}
