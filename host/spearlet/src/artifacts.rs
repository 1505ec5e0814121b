//! Artifacts: fetch an executable's bytes once, keep them by content hash.
//!
//! | URI | fetched from |
//! |---|---|
//! | `sms+file://<id>` | SMS's file store over gRPC (`FileService.Download`); `<id>` is the sha256 |
//! | `sms+file://<host:port>/<id>` | that SMS's REST gateway (`GET /api/v1/files/<id>`) |
//! | `file:///path` | the local file system |
//! | `https://…`, `http://…` | the web; a `#sha256=<hex>` fragment pins the content |
//!
//! Every artifact lands in `<data_dir>/artifacts/<sha256>`. An artifact whose hash is known before
//! fetching (SMS file ids, pinned URLs) is not fetched again while it is cached. The cache is kept
//! under `max_cache_size_mb` by removing the least recently used artifacts.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};
use spear_proto::v1;
use tokio::sync::Mutex;

use crate::error::{Error, Result};
use crate::store::{CachedArtifact, Store};

/// The artifact cache.
#[derive(Debug)]
pub struct Artifacts {
    dir: PathBuf,
    store: Store,
    max_cache_bytes: u64,
    max_object_size: u64,
    sms: crate::sms::SmsLink,
    http: reqwest::Client,
    /// One fetch at a time per cache (fetches of the same artifact must not race).
    lock: Mutex<()>,
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

impl Artifacts {
    /// A cache in `data_dir/artifacts`.
    pub fn new(
        data_dir: &Path,
        store: Store,
        max_cache_mb: u64,
        max_object_size: u64,
        sms: crate::sms::SmsLink,
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
        Ok(Arc::new(Self {
            dir,
            store,
            max_cache_bytes: max_cache_mb.saturating_mul(1024 * 1024),
            max_object_size,
            sms,
            http,
            lock: Mutex::new(()),
        }))
    }

    /// The local path of the artifact at `uri`, fetching it if it is not cached.
    pub async fn fetch(&self, uri: &str) -> Result<PathBuf> {
        let err = |reason: String| Error::Artifact {
            uri: uri.to_owned(),
            reason,
        };
        let _one = self.lock.lock().await;
        let (known, source) = parse(uri).map_err(err)?;
        if let Some(sha) = &known
            && let Some(path) = self.cached(sha).await?
        {
            return Ok(path);
        }
        let bytes = match &source {
            Source::Sms { addr: None, id } => self.download_sms(id).await.map_err(err)?,
            Source::Sms {
                addr: Some(addr),
                id,
            } => self
                .download_http(&format!("http://{addr}/api/v1/files/{id}"))
                .await
                .map_err(err)?,
            Source::File(path) => {
                let meta = tokio::fs::metadata(path)
                    .await
                    .map_err(|e| err(format!("cannot read {}: {e}", path.display())))?;
                if meta.len() > self.max_object_size {
                    return Err(err(self.too_big(meta.len())));
                }
                tokio::fs::read(path)
                    .await
                    .map_err(|e| err(format!("cannot read {}: {e}", path.display())))?
            }
            Source::Web(url) => self.download_http(url).await.map_err(err)?,
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

    async fn download_http(&self, url: &str) -> std::result::Result<Vec<u8>, String> {
        let mut response = self
            .http
            .get(url)
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

    /// Remove least recently used artifacts until the cache fits, never `keep`.
    async fn evict(&self, keep: &str) -> Result<()> {
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
            if e.sha256 == keep {
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

/// Where an artifact comes from.
#[derive(Debug, PartialEq, Eq)]
enum Source {
    Sms { addr: Option<String>, id: String },
    File(PathBuf),
    Web(String),
}

/// Parse a URI into its source and, when the URI tells it, the content's sha256.
fn parse(uri: &str) -> std::result::Result<(Option<String>, Source), String> {
    let is_sha = |s: &str| s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit());
    if let Some(rest) = uri.strip_prefix("sms+file://") {
        let (addr, id) = match rest.rsplit_once('/') {
            Some((addr, id)) => (Some(addr.to_owned()), id),
            None => (None, rest),
        };
        if id.is_empty() {
            return Err("no file id after sms+file://".into());
        }
        let id = id.to_ascii_lowercase();
        let known = is_sha(&id).then(|| id.clone());
        return Ok((known, Source::Sms { addr, id }));
    }
    if let Some(path) = uri.strip_prefix("file://") {
        if !path.starts_with('/') {
            return Err("file:// URIs need an absolute path (file:///…)".into());
        }
        return Ok((None, Source::File(PathBuf::from(path))));
    }
    if uri.starts_with("https://") || uri.starts_with("http://") {
        let (url, known) = match uri.split_once("#sha256=") {
            Some((url, sha)) if is_sha(sha) => (url, Some(sha.to_ascii_lowercase())),
            Some(_) => return Err("#sha256= must be followed by 64 hex digits".into()),
            None => (uri, None),
        };
        return Ok((known, Source::Web(url.to_owned())));
    }
    Err("unsupported URI scheme (use sms+file://, file://, https:// or http://)".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_scheme_and_refuses_the_rest() {
        let sha = "a".repeat(64);
        assert_eq!(
            parse(&format!("sms+file://{sha}")).unwrap(),
            (
                Some(sha.clone()),
                Source::Sms {
                    addr: None,
                    id: sha.clone()
                }
            )
        );
        assert_eq!(
            parse("sms+file://10.0.0.1:8080/abc").unwrap(),
            (
                None,
                Source::Sms {
                    addr: Some("10.0.0.1:8080".into()),
                    id: "abc".into()
                }
            )
        );
        assert_eq!(
            parse("file:///bin/true").unwrap().1,
            Source::File("/bin/true".into())
        );
        assert_eq!(
            parse(&format!("https://x/y.wasm#sha256={sha}")).unwrap(),
            (Some(sha), Source::Web("https://x/y.wasm".into()))
        );
        assert!(parse("file://relative").unwrap_err().contains("absolute"));
        assert!(parse("ftp://x").unwrap_err().contains("unsupported"));
        assert!(parse("https://x#sha256=zz").unwrap_err().contains("64 hex"));
        assert!(parse("sms+file://").unwrap_err().contains("no file id"));
    }
}
