//! TLS on the listeners (rustls): a server certificate chain and its key from PEM files and, for
//! mutual TLS, a CA that every client certificate must chain to. [`ServerTls::watch`] checks the
//! files every few seconds and swaps in what they hold when they change: new connections get the
//! new certificate, open ones keep theirs. A change that does not load (a half-written file, a key
//! that does not match its certificate) is logged and the previous certificate kept.
//!
//! The same settings serve both hosts ([`TlsConfig`]: SMS's `[tls]`, the Spearlet's
//! `[spearlet.tls]`).

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use serde::{Deserialize, Serialize};
use spear_config::Invalid;
use tokio_rustls::server::TlsStream;

/// ALPN protocols of a gRPC listener: HTTP/2 only.
pub const ALPN_GRPC: &[&[u8]] = &[b"h2"];
/// ALPN protocols of an HTTP listener: HTTP/2 and HTTP/1.1.
pub const ALPN_HTTP: &[&[u8]] = &[b"h2", b"http/1.1"];

/// Largest PEM file read (a certificate chain is a few KiB).
const MAX_PEM_BYTES: u64 = 1024 * 1024;

/// The files of one TLS listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The server's certificate chain (PEM), leaf first.
    pub cert: PathBuf,
    /// The private key of the leaf certificate (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// When set, clients must present a certificate that chains to one of these CAs (PEM).
    pub client_ca: Option<PathBuf>,
    /// With `client_ca`: a client without a certificate is let in too (a certificate it does
    /// present must still chain to one of the CAs); the request then needs another credential.
    pub client_cert_optional: bool,
}

/// The leaf certificate (DER) a client presented in its TLS handshake, as a listener hands it to
/// each request (a request extension); its chain was verified by the handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCert(pub Arc<[u8]>);

impl ClientCert {
    /// The leaf certificate `conn`'s client presented, if any.
    pub fn of(conn: &rustls::ServerConnection) -> Option<Self> {
        conn.peer_certificates()
            .and_then(|chain| chain.first())
            .map(|leaf| Self(Arc::from(leaf.as_ref())))
    }
}

/// What went wrong loading TLS files.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("{}: cannot read: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// A file holds nothing usable of what it should.
    #[error("{}: {what}", path.display())]
    Content {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        what: String,
    },
    /// The files load but do not make a configuration (a key that is not the certificate's).
    #[error("{}: {what}", path.display())]
    Config {
        /// The certificate file the error is about.
        path: PathBuf,
        /// rustls's reason.
        what: String,
    },
}

/// `[tls]` / `[spearlet.tls]`: the certificate a host's TLS listeners serve. Unknown keys are
/// refused by the host's configuration loader ([`spear_config`]), which names them all.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TlsConfig {
    /// The certificate chain (PEM) served by the listeners that enable TLS.
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    /// Its private key (PEM).
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// CA (PEM) that client certificates must chain to; set, the gRPC listener requires one.
    #[serde(default)]
    pub client_ca_file: Option<PathBuf>,
    /// Seconds between checks of the files for a change (1 to 3600; default 5).
    #[serde(default)]
    pub reload_secs: Option<u64>,
}

impl TlsConfig {
    /// Check the keys, naming them under `section` (e.g. `tls`): cert and key come together and
    /// the reload period is in range. The files themselves are read by [`ServerTls::load`].
    pub fn check(&self, section: &str) -> Result<(), Invalid> {
        let key = |k: &str| format!("{section}.{k}");
        match (&self.cert_file, &self.key_file) {
            (Some(_), None) => {
                return Err(Invalid::new(
                    key("cert_file"),
                    format!("set without {section}.key_file"),
                ));
            }
            (None, Some(_)) => {
                return Err(Invalid::new(
                    key("key_file"),
                    format!("set without {section}.cert_file"),
                ));
            }
            _ => {}
        }
        if self.reload_secs.is_some() && self.cert_file.is_none() {
            return Err(Invalid::new(
                key("reload_secs"),
                format!("there is no {section}.cert_file to reload"),
            ));
        }
        if self.client_ca_file.is_some() && self.cert_file.is_none() {
            return Err(Invalid::new(
                key("client_ca_file"),
                format!(
                    "client certificates need TLS: set {section}.cert_file and {section}.key_file"
                ),
            ));
        }
        if let Some(s) = self.reload_secs
            && !(1..=3600).contains(&s)
        {
            return Err(Invalid::new(
                key("reload_secs"),
                format!("must be 1 to 3600, not {s}"),
            ));
        }
        Ok(())
    }

    /// Whether a certificate is configured.
    pub fn has_cert(&self) -> bool {
        self.cert_file.is_some()
    }

    /// The period between checks of the files.
    pub fn reload_every(&self) -> Duration {
        Duration::from_secs(self.reload_secs.unwrap_or(5))
    }

    /// The files of a listener that asks for client certificates as `client_certs` says.
    pub fn files(&self, client_certs: ClientCerts) -> Option<TlsFiles> {
        Some(TlsFiles {
            cert: self.cert_file.clone()?,
            key: self.key_file.clone()?,
            client_ca: match client_certs {
                ClientCerts::No => None,
                ClientCerts::Required | ClientCerts::Optional => self.client_ca_file.clone(),
            },
            client_cert_optional: client_certs == ClientCerts::Optional,
        })
    }
}

/// Whether a listener asks its clients for a certificate (chaining to `client_ca_file`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientCerts {
    /// No.
    No,
    /// Yes, and a client without one is refused in the handshake.
    Required,
    /// Yes, and a client without one is let in (another credential must then do).
    Optional,
}

/// What identifies a file's version: changes when it is rewritten or replaced.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp(Vec<Option<(SystemTime, i64, u64, u64)>>);

impl Stamp {
    fn of(files: &TlsFiles) -> Self {
        use std::os::unix::fs::MetadataExt;
        let each = |p: &Path| {
            // ctime too: a chmod or chown that makes a file readable changes only that.
            std::fs::metadata(p).ok().map(|m| {
                (
                    m.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                    m.ctime().saturating_mul(1_000_000_000) + m.ctime_nsec(),
                    m.len(),
                    m.ino(),
                )
            })
        };
        let mut v = vec![each(&files.cert), each(&files.key)];
        if let Some(ca) = &files.client_ca {
            v.push(each(ca));
        }
        Self(v)
    }
}

/// A listener's TLS configuration, reloadable.
#[derive(Debug)]
pub struct ServerTls {
    files: TlsFiles,
    alpn: Vec<Vec<u8>>,
    current: ArcSwap<rustls::ServerConfig>,
    /// The files' versions when last tried (loaded or not), so a bad file is reported once.
    tried: Mutex<Stamp>,
}

/// The bytes of the PEM file at `path`, refused past 1 MiB (no certificate file is that large).
pub fn read_pem(path: &Path) -> Result<Vec<u8>, TlsError> {
    use std::io::Read;
    let err = |source| TlsError::Read {
        path: path.to_owned(),
        source,
    };
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .map_err(err)?
        .take(MAX_PEM_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(err)?;
    if bytes.len() as u64 > MAX_PEM_BYTES {
        return Err(TlsError::Content {
            path: path.to_owned(),
            what: format!("larger than {MAX_PEM_BYTES} bytes; not a PEM file"),
        });
    }
    Ok(bytes)
}

/// The certificates in the PEM file at `path` (at least one).
pub fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read_pem(path)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Content {
            path: path.to_owned(),
            what: format!("not a PEM certificate file: {e}"),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Content {
            path: path.to_owned(),
            what: "holds no PEM certificate (-----BEGIN CERTIFICATE-----)".into(),
        });
    }
    Ok(certs)
}

/// The private key in the PEM file at `path`.
pub fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = read_pem(path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| TlsError::Content {
        path: path.to_owned(),
        what: format!("holds no PEM private key (PKCS#8, PKCS#1 or SEC1): {e}"),
    })
}

/// The crypto provider every TLS configuration here uses (aws-lc-rs), named explicitly so that
/// no process-wide default is needed.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn server_config(files: &TlsFiles, alpn: &[Vec<u8>]) -> Result<rustls::ServerConfig, TlsError> {
    let chain = certificates(&files.cert)?;
    let key = private_key(&files.key)?;
    let provider = provider();
    let config_err = |e: rustls::Error| TlsError::Config {
        path: files.cert.clone(),
        what: e.to_string(),
    };
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(config_err)?;
    let builder = match &files.client_ca {
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for cert in certificates(ca)? {
                roots.add(cert).map_err(|e| TlsError::Content {
                    path: ca.clone(),
                    what: format!("not a usable CA certificate: {e}"),
                })?;
            }
            let mut verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            if files.client_cert_optional {
                verifier = verifier.allow_unauthenticated();
            }
            let verifier = verifier.build().map_err(|e| TlsError::Config {
                path: ca.clone(),
                what: e.to_string(),
            })?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|e| TlsError::Config {
            path: files.key.clone(),
            what: format!("does not go with {}: {e}", files.cert.display()),
        })?;
    config.alpn_protocols = alpn.to_vec();
    Ok(config)
}

impl ServerTls {
    /// Load `files` for a listener speaking the `alpn` protocols ([`ALPN_GRPC`], [`ALPN_HTTP`]).
    pub fn load(files: TlsFiles, alpn: &[&[u8]]) -> Result<Arc<Self>, TlsError> {
        let alpn: Vec<Vec<u8>> = alpn.iter().map(|p| p.to_vec()).collect();
        let stamp = Stamp::of(&files);
        let config = server_config(&files, &alpn)?;
        Ok(Arc::new(Self {
            files,
            alpn,
            current: ArcSwap::from_pointee(config),
            tried: Mutex::new(stamp),
        }))
    }

    /// The acceptor for the next connection (the configuration loaded last).
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.current.load_full())
    }

    /// Load the files again if they changed since last tried: `Ok(true)` when a new
    /// configuration is in use, `Ok(false)` when nothing changed, the error (once per change)
    /// when the new files do not load; the previous configuration stays then.
    pub fn reload_if_changed(&self) -> Result<bool, TlsError> {
        let now = Stamp::of(&self.files);
        let before = {
            let mut tried = self.tried.lock().unwrap_or_else(|p| p.into_inner());
            if *tried == now {
                return Ok(false);
            }
            std::mem::replace(&mut *tried, now)
        };
        match server_config(&self.files, &self.alpn) {
            Ok(config) => {
                self.current.store(Arc::new(config));
                Ok(true)
            }
            Err(e) => {
                // A file that could not be read (out of descriptors, not readable yet) is tried
                // again at the next check; bad content waits for the next change.
                if matches!(e, TlsError::Read { .. }) {
                    *self.tried.lock().unwrap_or_else(|p| p.into_inner()) = before;
                }
                Err(e)
            }
        }
    }

    /// Check the files every `every` until this `ServerTls` is dropped, logging each reload.
    pub fn watch(self: &Arc<Self>, every: Duration) -> tokio::task::JoinHandle<()> {
        let weak: Weak<Self> = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(tls) = weak.upgrade() else { return };
                let cert = tls.files.cert.display().to_string();
                // Reading and parsing a few KiB of files: off the runtime's threads all the same.
                match tokio::task::spawn_blocking(move || tls.reload_if_changed()).await {
                    Ok(Ok(true)) => tracing::info!(%cert, "TLS certificate reloaded"),
                    Ok(Ok(false)) => {}
                    Ok(Err(e)) => tracing::warn!(
                        "TLS files changed but do not load; the previous certificate stays: {e}"
                    ),
                    Err(e) => tracing::warn!("TLS reload: {e}"),
                }
            }
        })
    }
}

/// Complete the TLS handshake of `stream` within `deadline` (a client that never finishes it
/// does not keep its connection slot).
pub async fn handshake<S>(
    acceptor: tokio_rustls::TlsAcceptor,
    stream: S,
    deadline: Duration,
) -> io::Result<TlsStream<S>>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    match tokio::time::timeout(deadline, acceptor.accept(stream)).await {
        Ok(r) => r,
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "TLS handshake not completed in time",
        )),
    }
}

/// For the listeners' tests: a self-signed certificate for 127.0.0.1 written to `dir`, loaded
/// for `alpn`; the server's TLS and the certificate's PEM (for the client to trust).
#[cfg(test)]
pub(crate) fn self_signed(dir: &Path, alpn: &[&[u8]]) -> (Arc<ServerTls>, String) {
    let c = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    std::fs::write(dir.join("cert.pem"), c.cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), c.signing_key.serialize_pem()).unwrap();
    let files = TlsFiles {
        cert: dir.join("cert.pem"),
        key: dir.join("key.pem"),
        client_ca: None,
        client_cert_optional: false,
    };
    (ServerTls::load(files, alpn).unwrap(), c.cert.pem())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Write a fresh self-signed certificate and its key to `dir/cert.pem` and `dir/key.pem`.
    fn write_cert(dir: &Path) {
        let c = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        std::fs::write(dir.join("key.pem"), c.signing_key.serialize_pem()).unwrap();
        std::fs::write(dir.join("cert.pem"), c.cert.pem()).unwrap();
    }

    #[test]
    fn a_reload_takes_changed_files_and_keeps_the_old_config_on_bad_ones() {
        let dir = tempfile::tempdir().unwrap();
        write_cert(dir.path());
        let files = TlsFiles {
            cert: dir.path().join("cert.pem"),
            key: dir.path().join("key.pem"),
            client_ca: None,
            client_cert_optional: false,
        };
        let tls = ServerTls::load(files, ALPN_HTTP).unwrap();
        let first = tls.current.load_full();
        assert!(!tls.reload_if_changed().unwrap(), "nothing changed");

        std::fs::write(
            dir.path().join("cert.pem"),
            "-----BEGIN CERTIFICATE-----\nx\n",
        )
        .unwrap();
        let err = tls.reload_if_changed().unwrap_err();
        assert!(matches!(err, TlsError::Content { .. }), "{err}");
        assert!(
            Arc::ptr_eq(&first, &tls.current.load_full()),
            "the old one stays"
        );
        assert!(
            !tls.reload_if_changed().unwrap(),
            "bad content waits for a change"
        );

        write_cert(dir.path());
        assert!(tls.reload_if_changed().unwrap());
        assert!(!Arc::ptr_eq(&first, &tls.current.load_full()));

        // A key that is not the certificate's.
        let other = rcgen::generate_simple_self_signed(vec!["x".to_owned()]).unwrap();
        std::fs::write(
            dir.path().join("key.pem"),
            other.signing_key.serialize_pem(),
        )
        .unwrap();
        let err = tls.reload_if_changed().unwrap_err();
        assert!(matches!(err, TlsError::Config { .. }), "{err}");
    }

    #[test]
    fn an_unreadable_file_is_tried_again() {
        let dir = tempfile::tempdir().unwrap();
        write_cert(dir.path());
        let files = TlsFiles {
            cert: dir.path().join("cert.pem"),
            key: dir.path().join("key.pem"),
            client_ca: None,
            client_cert_optional: false,
        };
        let tls = ServerTls::load(files, ALPN_GRPC).unwrap();
        std::fs::rename(dir.path().join("key.pem"), dir.path().join("key.away")).unwrap();
        assert!(matches!(
            tls.reload_if_changed(),
            Err(TlsError::Read { .. })
        ));
        // Still missing: tried again (and failing again), not skipped as already seen.
        assert!(matches!(
            tls.reload_if_changed(),
            Err(TlsError::Read { .. })
        ));
        std::fs::rename(dir.path().join("key.away"), dir.path().join("key.pem")).unwrap();
        assert!(tls.reload_if_changed().unwrap());
    }

    #[test]
    fn keys_that_would_act_on_nothing_are_refused() {
        let t = |cert: bool, key: bool, ca: bool, reload: Option<u64>| TlsConfig {
            cert_file: cert.then(|| "c".into()),
            key_file: key.then(|| "k".into()),
            client_ca_file: ca.then(|| "ca".into()),
            reload_secs: reload,
        };
        assert!(t(true, true, true, Some(5)).check("tls").is_ok());
        assert!(t(false, false, false, None).check("tls").is_ok());
        for (c, key) in [
            (t(true, false, false, None), "tls.key_file"),
            (t(false, true, false, None), "tls.cert_file"),
            (t(false, false, true, None), "tls.client_ca_file"),
            (t(false, false, false, Some(5)), "tls.reload_secs"),
            (t(true, true, false, Some(0)), "tls.reload_secs"),
        ] {
            let err = c.check("tls").unwrap_err().to_string();
            assert!(err.contains(key), "{err}");
        }
    }
}
