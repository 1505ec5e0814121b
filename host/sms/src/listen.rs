//! The `[http]` and `[grpc]` sections: where SMS listens, and the limits of each listener
//! (connection cap, timeouts, body size), checked at start.

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use spear_edge::HttpLimits;

use spear_config::Invalid;

/// Largest timeout any listener key accepts: one day.
const MAX_TIMEOUT_SECS: u64 = 86_400;

/// `[http]`: the REST gateway (and the web admin, which shares these limits).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HttpListen {
    /// Address to listen on.
    pub addr: SocketAddr,
    /// Serve REST (and the web admin) over TLS with `[tls]`'s certificate.
    #[serde(default)]
    pub enable_tls: bool,
    /// Connections served at once; more are answered 503 and closed.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Seconds a client has to send a request's headers.
    #[serde(default = "default_header_read_timeout")]
    pub header_read_timeout_secs: u64,
    /// Seconds without traffic, while no request is handled, before a connection is closed.
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout_secs: u64,
    /// Seconds a client has to send a whole request body.
    #[serde(default = "default_body_timeout")]
    pub body_timeout_secs: u64,
    /// Largest request body other than a file upload (`[files] max_upload_mb`), in KiB.
    #[serde(default = "default_max_body_kb")]
    pub max_body_kb: u64,
}

/// `[grpc]`: the gRPC server.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GrpcListen {
    /// Address to listen on.
    pub addr: SocketAddr,
    /// Serve gRPC over TLS with `[tls]`'s certificate (and, with `tls.client_ca_file`, require
    /// client certificates).
    #[serde(default)]
    pub enable_tls: bool,
    /// Connections served at once; more are closed at once.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Seconds without traffic before a connection is closed. SMS pings every client at a third
    /// of it, so a live client keeps its connection.
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout_secs: u64,
    /// Requests (streams) in progress at once on one connection.
    #[serde(default = "default_max_concurrent_streams")]
    pub max_concurrent_streams: u32,
}

fn default_max_connections() -> usize {
    1024
}
fn default_header_read_timeout() -> u64 {
    10
}
fn default_idle_timeout() -> u64 {
    60
}
fn default_body_timeout() -> u64 {
    300
}
fn default_max_body_kb() -> u64 {
    4096
}
fn default_max_concurrent_streams() -> u32 {
    256
}

fn secs(key: &str, v: u64) -> Result<Duration, Invalid> {
    if !(1..=MAX_TIMEOUT_SECS).contains(&v) {
        return Err(Invalid::new(
            key,
            format!("must be 1 to {MAX_TIMEOUT_SECS} seconds, not {v}"),
        ));
    }
    Ok(Duration::from_secs(v))
}

fn connections(key: &str, v: usize) -> Result<usize, Invalid> {
    if !(1..=1_000_000).contains(&v) {
        return Err(Invalid::new(key, format!("must be 1 to 1000000, not {v}")));
    }
    Ok(v)
}

impl HttpListen {
    /// The listener's limits, or the key that is out of range.
    pub fn limits(&self) -> Result<HttpLimits, Invalid> {
        Ok(HttpLimits {
            header_read_timeout: secs(
                "http.header_read_timeout_secs",
                self.header_read_timeout_secs,
            )?,
            idle_timeout: secs("http.idle_timeout_secs", self.idle_timeout_secs)?,
            body_timeout: secs("http.body_timeout_secs", self.body_timeout_secs)?,
            max_connections: connections("http.max_connections", self.max_connections)?,
            ..HttpLimits::default()
        })
    }

    /// Largest JSON body in bytes, or the key that is out of range.
    pub fn max_body_bytes(&self) -> Result<usize, Invalid> {
        if !(1..=1024 * 1024).contains(&self.max_body_kb) {
            return Err(Invalid::new(
                "http.max_body_kb",
                format!("must be 1 to 1048576 (1 GiB), not {}", self.max_body_kb),
            ));
        }
        Ok(self.max_body_kb as usize * 1024)
    }
}

impl GrpcListen {
    /// The listener's limits (the HTTP-only ones at their defaults, unused by gRPC), or the key
    /// that is out of range.
    pub fn limits(&self) -> Result<HttpLimits, Invalid> {
        if !(1..=65_536).contains(&self.max_concurrent_streams) {
            return Err(Invalid::new(
                "grpc.max_concurrent_streams",
                format!("must be 1 to 65536, not {}", self.max_concurrent_streams),
            ));
        }
        Ok(HttpLimits {
            idle_timeout: secs("grpc.idle_timeout_secs", self.idle_timeout_secs)?,
            max_connections: connections("grpc.max_connections", self.max_connections)?,
            ..HttpLimits::default()
        })
    }
}
