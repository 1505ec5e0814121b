//! Artifacts: fetch an executable's bytes once, keep them by content hash.
//!
//! | URI | fetched from |
//! |---|---|
//! | `sms+file://<id>` | SMS's file store over gRPC (`FileService.Download`); `<id>` is the sha256 |
//! | `sms+file://<host:port>/<id>` | that SMS's REST gateway (`GET /api/v1/files/<id>`): only this node's own SMS (`spearlet.sms_http_addr`) |
//! | `file:///path` | the local file system, under a prefix `spearlet.artifacts.file_prefixes` allows (none by default) |
//! | `https://…` | the web; a `#sha256=<hex>` fragment pins the content |
//! | `http://…#sha256=<hex>` | the web, pinned (plain HTTP without a pin is refused: anyone on the way could change it) |
//! | `s3://<bucket>/<key>` | an S3 bucket through the S3 API, signed ([`objects`]); `#sha256=<hex>` pins it |
//! | `minio://<bucket>/<key>` | the same from the MinIO (or other S3-compatible) store `[spearlet.artifacts.minio]` names |
//!
//! Every artifact lands in `<data_dir>/artifacts/<sha256>`. An artifact whose hash is known before
//! fetching (SMS file ids, pinned URLs) is not fetched again while it is cached. One fetch may take
//! `spearlet.artifacts.fetch_timeout_ms` in all. Fetches of the same artifact go one at a time;
//! others go meanwhile. The cache is kept under `max_cache_size_mb` by removing the least recently
//! used artifacts, never one a pooled instance uses.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use sha2::{Digest, Sha256};
use spear_proto::v1;
use tokio::sync::Mutex;

use crate::error::{Error, Result};
use crate::store::{CachedArtifact, Store};

mod objects;
mod source;

pub use objects::ObjectStores;
use source::{Source, parse, same_address};

/// Where artifacts may come from, and how long a fetch may take.
#[derive(Debug, Clone)]
pub struct Rules {
    /// Prefixes `file://` artifacts may come from.
    pub file_prefixes: Vec<PathBuf>,
    /// SMS's HTTP address (`host:port`), the only one `sms+file://<host:port>/…` may name.
    pub sms_http_addr: String,
    /// The whole fetch's deadline.
    pub fetch_timeout: Duration,
    /// The S3 and MinIO stores.
    pub objects: ObjectStores,
}

/// What tells the cache which artifacts are in use (their paths).
type InUse = Box<dyn Fn() -> HashSet<PathBuf> + Send + Sync>;

/// The artifact cache.
pub struct Artifacts {
    dir: PathBuf,
    store: Store,
    max_cache_bytes: u64,
    max_object_size: u64,
    sms: crate::sms::SmsLink,
    http: reqwest::Client,
    /// SMS's HTTP API under TLS (`spearlet.tls.sms_ca_file`), trusting SMS's CA only.
    sms_https: Option<reqwest::Client>,
    rules: Rules,
    /// A gate per artifact being fetched (by sha256 when known, else by URI): fetches of the
    /// same artifact must not race; others need not wait. Entries live while fetches hold them.
    fetching: std::sync::Mutex<HashMap<String, Arc<Mutex<()>>>>,
    /// One eviction at a time.
    evicting: Mutex<()>,
    in_use: OnceLock<InUse>,
    /// Artifacts handed out lately (sha256 → when), which eviction passes over.
    recent: std::sync::Mutex<HashMap<String, std::time::Instant>>,
}

/// How long an artifact just handed out is safe from eviction.
const HANDED_OUT: Duration = Duration::from_secs(60);
/// Most artifacts remembered as handed out lately.
const MAX_RECENT: usize = 4096;

/// A fetch's place at its artifact's gate; leaving (or being dropped) removes the gate once
/// nobody else holds it, so the map holds only artifacts being fetched.
struct Gate<'a> {
    map: &'a std::sync::Mutex<HashMap<String, Arc<Mutex<()>>>>,
    key: String,
    gate: Arc<Mutex<()>>,
}

impl<'a> Gate<'a> {
    fn enter(map: &'a std::sync::Mutex<HashMap<String, Arc<Mutex<()>>>>, key: String) -> Self {
        let gate = map
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(key.clone())
            .or_default()
            .clone();
        Self { map, key, gate }
    }
}

impl Drop for Gate<'_> {
    fn drop(&mut self) {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        // Clones are made under this lock: the map's and this one mean nobody else holds it.
        if map
            .get(&self.key)
            .is_some_and(|g| Arc::strong_count(g) == 2)
        {
            map.remove(&self.key);
        }
    }
}

impl std::fmt::Debug for Artifacts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Artifacts")
            .field("dir", &self.dir)
            .field("rules", &self.rules)
            .finish_non_exhaustive()
    }
}

fn hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn now_ms() -> u64 {
    crate::now_ms()
}

/// The client of SMS's HTTP API under TLS: SMS's CA only, not the system's roots.
fn sms_client(tls: &crate::config::SmsTls) -> Result<reqwest::Client> {
    let err = |e: reqwest::Error| Error::Artifact {
        uri: "sms+file://".into(),
        reason: format!("spearlet.tls.sms_ca_file: {e}"),
    };
    let ca = reqwest::Certificate::from_pem(&tls.ca).map_err(err)?;
    let mut builder = reqwest::Client::builder()
        .connect_timeout(std::time::Duration::from_secs(10))
        .tcp_nodelay(true)
        .read_timeout(std::time::Duration::from_secs(60))
        .tls_certs_only([ca]);
    // The client certificate goes to SMS's REST too: with `[auth] node_certificates` it is the
    // node's credential for its artifacts.
    if let Some((cert, key)) = &tls.identity {
        builder = builder
            .identity(reqwest::Identity::from_pem(&[cert.as_slice(), key].concat()).map_err(err)?);
    }
    builder.build().map_err(err)
}

impl Artifacts {
    /// A cache in `data_dir/artifacts`, fetching by `rules`.
    pub fn new(
        data_dir: &Path,
        store: Store,
        max_cache_mb: u64,
        max_object_size: u64,
        sms: crate::sms::SmsLink,
        rules: Rules,
    ) -> Result<Arc<Self>> {
        let dir = data_dir.join("artifacts");
        std::fs::create_dir_all(&dir).map_err(|e| Error::Artifact {
            uri: dir.display().to_string(),
            reason: format!("cannot create the cache directory: {e}"),
        })?;
        let http = reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(10))
            .tcp_nodelay(true)
            .read_timeout(std::time::Duration::from_secs(60))
            .build()
            .map_err(|e| Error::Artifact {
                uri: "https://".into(),
                reason: format!("cannot build the HTTP client: {e}"),
            })?;
        let sms_https = match sms.tls() {
            Some(tls) => Some(sms_client(tls)?),
            None => None,
        };
        Ok(Arc::new(Self {
            dir,
            store,
            max_cache_bytes: max_cache_mb.saturating_mul(1024 * 1024),
            max_object_size,
            sms,
            http,
            sms_https,
            rules,
            fetching: Default::default(),
            evicting: Mutex::new(()),
            in_use: OnceLock::new(),
            recent: Default::default(),
        }))
    }

    /// Tell the cache which artifacts are in use (it never evicts those); the first call counts.
    pub fn protect(&self, in_use: impl Fn() -> HashSet<PathBuf> + Send + Sync + 'static) {
        let _ = self.in_use.set(Box::new(in_use));
    }

    /// The local path of the artifact at `uri`, fetching it if it is not cached. The whole of it
    /// (checks, the wait for another fetch of the same artifact, the download) has
    /// `spearlet.artifacts.fetch_timeout_ms`.
    pub async fn fetch(&self, uri: &str) -> Result<PathBuf> {
        let limit = self.rules.fetch_timeout;
        let path = tokio::time::timeout(limit, self.fetch_within(uri))
            .await
            .map_err(|_| Error::Artifact {
                uri: uri.to_owned(),
                reason: format!(
                    "the fetch took longer than {} ms (spearlet.artifacts.fetch_timeout_ms)",
                    limit.as_millis()
                ),
            })??;
        self.handed_out(&path);
        Ok(path)
    }

    async fn fetch_within(&self, uri: &str) -> Result<PathBuf> {
        let err = |reason: String| Error::Artifact {
            uri: uri.to_owned(),
            reason,
        };
        let (known, source) = parse(uri).map_err(err)?;
        let source = self.allowed(source).await.map_err(err)?;
        let gate = Gate::enter(
            &self.fetching,
            known.clone().unwrap_or_else(|| uri.to_owned()),
        );
        let _one = gate.gate.lock().await;
        self.fetch_gated(uri, known, source).await
    }

    /// `source` if the rules let an artifact come from it, as it is to be fetched: a file by its
    /// canonical path (the one checked is the one read), this node's SMS at its own address.
    async fn allowed(&self, source: Source) -> std::result::Result<Source, String> {
        match source {
            Source::File(path) => {
                let real = tokio::fs::canonicalize(&path)
                    .await
                    .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
                for prefix in &self.rules.file_prefixes {
                    if let Ok(prefix) = tokio::fs::canonicalize(prefix).await
                        && real.starts_with(&prefix)
                    {
                        return Ok(Source::File(real));
                    }
                }
                Err(format!(
                    "file:// artifacts must be under a prefix spearlet.artifacts.file_prefixes allows (it allows {:?}; this one is {})",
                    self.rules.file_prefixes,
                    real.display()
                ))
            }
            Source::Sms {
                addr: Some(addr),
                id,
            } => {
                if same_address(&addr, &self.rules.sms_http_addr).await {
                    // Fetched from the address checked, not from the name again (which could
                    // resolve elsewhere the second time).
                    Ok(Source::Sms {
                        addr: Some(self.rules.sms_http_addr.clone()),
                        id,
                    })
                } else {
                    Err(format!(
                        "sms+file:// may name only this node's SMS ({}, spearlet.sms_http_addr), not {addr}",
                        self.rules.sms_http_addr
                    ))
                }
            }
            other => Ok(other),
        }
    }

    /// Note that the artifact at `path` was just handed out: eviction passes it over for
    /// [`HANDED_OUT`] (until the instance that asked for it is in the pool, which protects it
    /// from then on).
    fn handed_out(&self, path: &Path) {
        let Some(sha) = path.file_name().and_then(|n| n.to_str()) else {
            return;
        };
        let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        let now = std::time::Instant::now();
        if recent.len() >= MAX_RECENT {
            recent.retain(|_, at| now.duration_since(*at) < HANDED_OUT);
        }
        if recent.len() < MAX_RECENT {
            recent.insert(sha.to_owned(), now);
        }
    }

    /// [`fetch`](Self::fetch), with the artifact's gate held.
    async fn fetch_gated(
        &self,
        uri: &str,
        known: Option<String>,
        source: Source,
    ) -> Result<PathBuf> {
        let err = |reason: String| Error::Artifact {
            uri: uri.to_owned(),
            reason,
        };
        if let Some(sha) = &known
            && let Some(path) = self.cached(sha).await?
        {
            return Ok(path);
        }
        let bytes = self.download(&source).await.map_err(err)?;
        self.keep(uri, known, bytes).await
    }

    /// The bytes at `source`.
    async fn download(&self, source: &Source) -> std::result::Result<Vec<u8>, String> {
        Ok(match source {
            Source::Sms { addr: None, id } => self.download_sms(id).await?,
            Source::Sms {
                addr: Some(addr),
                id,
            } => {
                // Only SMS is sent the token, never a web server; under TLS, SMS's CA only.
                let (scheme, client) = match &self.sms_https {
                    Some(c) => ("https", c),
                    None => ("http", &self.http),
                };
                self.download_http(
                    client,
                    &format!("{scheme}://{addr}/api/v1/files/{id}"),
                    self.sms.authorization_for(addr),
                )
                .await?
            }
            Source::File(path) => {
                let meta = tokio::fs::metadata(path)
                    .await
                    .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
                if meta.len() > self.max_object_size {
                    return Err(self.too_big(meta.len()));
                }
                tokio::fs::read(path)
                    .await
                    .map_err(|e| format!("cannot read {}: {e}", path.display()))?
            }
            Source::Web(url) => self.download_http(&self.http, url, None).await?,
            Source::Object {
                scheme,
                bucket,
                key,
            } => {
                let (max, timeout) = (self.max_object_size, self.rules.fetch_timeout);
                self.rules
                    .objects
                    .download(scheme, bucket, key, max, timeout)
                    .await?
            }
        })
    }

    /// Check `bytes` against the pin, and keep them in the cache.
    async fn keep(&self, uri: &str, known: Option<String>, bytes: Vec<u8>) -> Result<PathBuf> {
        let err = |reason: String| Error::Artifact {
            uri: uri.to_owned(),
            reason,
        };
        // Hashing up to max_object_size bytes is CPU work: off the async runtime.
        let (sha, bytes) = tokio::task::spawn_blocking(move || (hex(&bytes), bytes))
            .await
            .map_err(|e| err(e.to_string()))?;
        if let Some(want) = &known
            && *want != sha
        {
            return Err(err(format!(
                "content has sha256 {sha}, expected {want}; refused"
            )));
        }
        let path = self.dir.join(&sha);
        let tmp = self.dir.join(format!(".{sha}.{}", uuid::Uuid::new_v4()));
        tokio::fs::write(&tmp, &bytes)
            .await
            .map_err(|e| err(format!("cannot write the cache: {e}")))?;
        // Programs fetched for the process executor must be executable.
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755));
        }
        tokio::fs::rename(&tmp, &path)
            .await
            .map_err(|e| err(format!("cannot write the cache: {e}")))?;
        let entry = CachedArtifact {
            sha256: sha.clone(),
            size: bytes.len() as u64,
            uri: uri.to_owned(),
            last_used_ms: now_ms(),
        };
        self.store.put(&format!("artifact/{sha}"), &entry).await?;
        self.evict(&sha).await?;
        Ok(path)
    }

    async fn cached(&self, sha: &str) -> Result<Option<PathBuf>> {
        let key = format!("artifact/{sha}");
        let Some(mut entry) = self.store.get::<CachedArtifact>(&key).await? else {
            return Ok(None);
        };
        let path = self.dir.join(sha);
        if !path.is_file() {
            self.store.delete(&key).await?;
            return Ok(None);
        }
        entry.last_used_ms = now_ms();
        // Only eviction's order reads it: queued, not waited for under the fetch lock (every
        // cold start would wait out a store commit here).
        self.store.put_unawaited(&key, &entry)?;
        Ok(Some(path))
    }

    fn too_big(&self, size: u64) -> String {
        format!(
            "{size} bytes is over spearlet.storage.max_object_size ({})",
            self.max_object_size
        )
    }

    async fn download_sms(&self, id: &str) -> std::result::Result<Vec<u8>, String> {
        let file = self
            .sms
            .files()
            .download({
                let mut r = tonic::Request::new(v1::FileRef {
                    file_id: id.to_owned(),
                });
                r.set_timeout(std::time::Duration::from_secs(300));
                r
            })
            .await
            .map_err(|s| format!("SMS refused the download: {}", s.message()))?
            .into_inner();
        Ok(file.content)
    }

    /// `GET url`, with `authorization` as that header when given.
    async fn download_http(
        &self,
        client: &reqwest::Client,
        url: &str,
        authorization: Option<String>,
    ) -> std::result::Result<Vec<u8>, String> {
        let mut request = client.get(url);
        if let Some(a) = authorization {
            request = request.header(reqwest::header::AUTHORIZATION, a);
        }
        let mut response = request
            .send()
            .await
            .map_err(|e| format!("cannot fetch: {e}"))?;
        if !response.status().is_success() {
            return Err(format!("the server answered {}", response.status()));
        }
        let mut bytes = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| format!("download failed: {e}"))?
        {
            bytes.extend_from_slice(&chunk);
            if bytes.len() as u64 > self.max_object_size {
                return Err(self.too_big(bytes.len() as u64));
            }
        }
        Ok(bytes)
    }

    /// Remove least recently used artifacts until the cache fits, never `keep` nor one in use.
    async fn evict(&self, keep: &str) -> Result<()> {
        let _one = self.evicting.lock().await;
        let in_use = self.in_use.get().map(|f| f()).unwrap_or_default();
        let recent: HashSet<String> = {
            let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
            let now = std::time::Instant::now();
            recent.retain(|_, at| now.duration_since(*at) < HANDED_OUT);
            recent.keys().cloned().collect()
        };
        let mut entries: Vec<CachedArtifact> = self
            .store
            .scan::<CachedArtifact>("artifact/")
            .await?
            .into_iter()
            .map(|(_, e)| e)
            .collect();
        let mut total: u64 = entries.iter().map(|e| e.size).sum();
        entries.sort_by_key(|e| e.last_used_ms);
        for e in entries {
            if total <= self.max_cache_bytes {
                break;
            }
            if e.sha256 == keep
                || recent.contains(&e.sha256)
                || in_use.contains(&self.dir.join(&e.sha256))
            {
                continue;
            }
            let _ = tokio::fs::remove_file(self.dir.join(&e.sha256)).await;
            self.store.delete(&format!("artifact/{}", e.sha256)).await?;
            total -= e.size;
            tracing::debug!(sha256 = %e.sha256, "artifact evicted");
        }
        Ok(())
    }
}
