//! `[spearlet.tls]`: TLS on the Spearlet's own listeners (with `enable_tls`) and towards SMS.
//!
//! Towards SMS, `sms_ca_file` turns TLS on: the Spearlet dials `https://` and accepts only a
//! certificate that chains to that CA and names `sms_server_name` (default: the host of
//! `spearlet.sms_grpc_addr`). When SMS asks for client certificates (its `tls.client_ca_file`),
//! `client_cert_file` and `client_key_file` are what the Spearlet presents.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use spear_edge::tls::TlsConfig;

use spear_config::{Invalid, Problems};

use super::SpearletConfig;

/// `[spearlet.tls]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SpearletTls {
    /// Certificate chain (PEM) served by the Spearlet's listeners that enable TLS.
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    /// Its private key (PEM).
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// Seconds between checks of `cert_file` and `key_file` for a change (1 to 3600; default 5).
    #[serde(default)]
    pub reload_secs: Option<u64>,
    /// CA (PEM) that SMS's certificate must chain to; set, the Spearlet speaks TLS to SMS.
    #[serde(default)]
    pub sms_ca_file: Option<PathBuf>,
    /// Name SMS's certificate must carry (default: the host of `spearlet.sms_grpc_addr`).
    #[serde(default)]
    pub sms_server_name: Option<String>,
    /// Client certificate (PEM) presented to SMS when it asks for one (mTLS).
    #[serde(default)]
    pub client_cert_file: Option<PathBuf>,
    /// Its private key (PEM).
    #[serde(default)]
    pub client_key_file: Option<PathBuf>,
}

/// What the Spearlet needs to dial SMS over TLS, read from the files at start.
#[derive(Clone)]
pub struct SmsTls {
    /// The CA, PEM.
    pub ca: Vec<u8>,
    /// The name to verify (`None`: the host dialed, for each SMS address).
    pub server_name: Option<String>,
    /// Client certificate and key, PEM.
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
}

impl std::fmt::Debug for SmsTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmsTls")
            .field("server_name", &self.server_name)
            .field("client_certificate", &self.identity.is_some())
            .finish_non_exhaustive()
    }
}

impl SpearletTls {
    /// The listener side, as the edge reads it.
    pub fn listener(&self) -> TlsConfig {
        TlsConfig {
            cert_file: self.cert_file.clone(),
            key_file: self.key_file.clone(),
            client_ca_file: None,
            reload_secs: self.reload_secs,
        }
    }
}

fn read(key: &str, path: &Path) -> Result<Vec<u8>, Invalid> {
    let bytes = spear_edge::tls::read_pem(path).map_err(|e| Invalid::new(key, e.to_string()))?;
    if !String::from_utf8_lossy(&bytes).contains("-----BEGIN ") {
        return Err(Invalid::new(
            key,
            format!("{} is not a PEM file", path.display()),
        ));
    }
    Ok(bytes)
}

impl SpearletConfig {
    /// The `[spearlet.tls]` keys against the listeners and the SMS address, one problem each.
    pub(super) fn check_tls(&self, problems: &mut Problems) {
        let s = &self.spearlet;
        let t = &s.tls;
        problems.check(t.listener().check("spearlet.tls"));
        let on = s.grpc.enable_tls || s.http.server.enable_tls;
        if on && t.cert_file.is_none() {
            let key = if s.grpc.enable_tls {
                "spearlet.grpc.enable_tls"
            } else {
                "spearlet.http.server.enable_tls"
            };
            problems.invalid(
                key,
                "TLS needs a certificate: set spearlet.tls.cert_file and spearlet.tls.key_file",
            );
        }
        if !on && t.cert_file.is_some() {
            problems.invalid(
                "spearlet.tls.cert_file",
                "set, but no listener enables TLS (spearlet.grpc.enable_tls, \
                 spearlet.http.server.enable_tls)",
            );
        }
        match (&t.client_cert_file, &t.client_key_file) {
            (Some(_), None) => problems.invalid(
                "spearlet.tls.client_cert_file",
                "set without spearlet.tls.client_key_file: set both or neither",
            ),
            (None, Some(_)) => problems.invalid(
                "spearlet.tls.client_key_file",
                "set without spearlet.tls.client_cert_file: set both or neither",
            ),
            _ => {}
        }
        for addr in self.sms_addrs() {
            match &t.sms_ca_file {
                None if addr.starts_with("https://") => problems.invalid(
                    "spearlet.sms_grpc_addr",
                    format!(
                        "{addr}: https:// needs spearlet.tls.sms_ca_file (the CA SMS's \
                         certificate chains to)"
                    ),
                ),
                Some(_) if addr.starts_with("http://") => problems.invalid(
                    "spearlet.sms_grpc_addr",
                    format!(
                        "{addr}: http:// while spearlet.tls.sms_ca_file asks for TLS; write \
                         host:port or https://"
                    ),
                ),
                _ => {}
            }
        }
        if self.sms_addrs().is_empty() {
            problems.invalid(
                "spearlet.sms_grpc_addr",
                "is empty: give SMS's gRPC address (several, comma-separated, for replicas)",
            );
        }
        match &t.sms_ca_file {
            None => {
                if t.client_cert_file.is_some() {
                    problems.invalid(
                        "spearlet.tls.client_cert_file",
                        "a client certificate is sent over TLS only; set spearlet.tls.sms_ca_file",
                    );
                }
                if t.sms_server_name.is_some() {
                    problems.invalid(
                        "spearlet.tls.sms_server_name",
                        "SMS's name is checked over TLS only; set spearlet.tls.sms_ca_file",
                    );
                }
            }
            Some(_) => {
                problems.check(self.sms_tls());
            }
        }
    }

    /// The SMS gRPC addresses as written: `spearlet.sms_grpc_addr`, split at commas (several
    /// for SMS replicas).
    pub fn sms_addrs(&self) -> Vec<String> {
        self.spearlet
            .sms_grpc_addr
            .split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .map(str::to_owned)
            .collect()
    }

    /// The SMS gRPC endpoints as URIs (`https://` with `spearlet.tls.sms_ca_file`).
    pub fn sms_endpoints(&self) -> Vec<String> {
        self.sms_addrs()
            .into_iter()
            .map(|a| {
                if a.starts_with("http://") || a.starts_with("https://") {
                    a
                } else if self.spearlet.tls.sms_ca_file.is_some() {
                    format!("https://{a}")
                } else {
                    format!("http://{a}")
                }
            })
            .collect()
    }

    /// What dialing SMS over TLS needs, or None without `spearlet.tls.sms_ca_file`.
    pub fn sms_tls(&self) -> Result<Option<SmsTls>, Invalid> {
        let t = &self.spearlet.tls;
        let Some(ca) = &t.sms_ca_file else {
            return Ok(None);
        };
        let identity = match (&t.client_cert_file, &t.client_key_file) {
            (Some(c), Some(k)) => Some((
                read("spearlet.tls.client_cert_file", c)?,
                read("spearlet.tls.client_key_file", k)?,
            )),
            _ => None,
        };
        let server_name = t.sms_server_name.clone();
        Ok(Some(SmsTls {
            ca: read("spearlet.tls.sms_ca_file", ca)?,
            server_name,
            identity,
        }))
    }
}
