//! Large execution payloads (standard input, and a result's standard output and error) kept out
//! of the execution records: content-addressed files `<files.dir>/blobs/<sha256>`, so that a
//! record stays small in memory and in storage whatever its payloads hold. Payloads up to
//! [`INLINE_MAX`] bytes stay inline.
//!
//! Each record that names a blob has a reference `blobref/<sha256>/<execution id>` stored in the
//! same batch as the record; the reference goes in the batch that drops the blob from the record
//! (a replaced result) or deletes the record (retention). A blob with no reference is deleted.
//!
//! Storing a blob first *claims* it ([`BlobClaim`]) and holds the claim until the record that
//! names it is durable; a blob is deleted only when it has neither a stored reference nor a
//! claim, checked under its content's lock, which a new claim takes too. So a payload that is
//! being stored again is never deleted under it, and the same bytes are one file however many
//! executions carry them.

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use spear_plugin_api::storage::BatchOp;
use utoipa::ToSchema;

use crate::db::Db;
use crate::error::{Result, SmsError};

/// Payloads up to this many bytes stay inline in the record.
pub const INLINE_MAX: usize = 1024;

const REF_PREFIX: &str = "blobref/";

/// A payload kept in the blob store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct BlobRef {
    /// The SHA-256 of its bytes (64 lowercase hex digits).
    pub sha256: String,
    /// Its size in bytes.
    pub size: u64,
}

/// The blob store.
#[derive(Debug)]
pub struct Blobs {
    dir: PathBuf,
    /// Claims by content: blobs being stored again, not to be deleted.
    claims: Arc<Mutex<HashMap<String, u32>>>,
    locks: [tokio::sync::Mutex<()>; 64],
}

/// A blob being stored: it is not deleted while this lives (drop it once the record naming it is
/// durable, or given up).
#[derive(Debug)]
pub struct BlobClaim {
    /// The blob.
    pub blob: BlobRef,
    claims: Arc<Mutex<HashMap<String, u32>>>,
}

impl Drop for BlobClaim {
    fn drop(&mut self) {
        let mut claims = self.claims.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = claims.get_mut(&self.blob.sha256) {
            *n -= 1;
            if *n == 0 {
                claims.remove(&self.blob.sha256);
            }
        }
    }
}

fn io(what: &str, e: impl std::fmt::Display) -> SmsError {
    SmsError::Storage(format!("{what}: {e}"))
}

fn is_sha(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

/// The reference of execution `id` to `blob`.
fn ref_key(blob: &BlobRef, id: &str) -> Vec<u8> {
    format!("{REF_PREFIX}{}/{id}", blob.sha256).into_bytes()
}

/// The write that records execution `id`'s reference to `blob`.
pub fn ref_op(blob: &BlobRef, id: &str) -> BatchOp {
    BatchOp::Put {
        key: ref_key(blob, id),
        value: Vec::new(),
    }
}

/// The write that removes execution `id`'s reference to `blob`.
pub fn unref_op(blob: &BlobRef, id: &str) -> BatchOp {
    BatchOp::Delete {
        key: ref_key(blob, id),
    }
}

impl Blobs {
    /// A store in `dir` (created at the first write).
    pub fn new(dir: PathBuf) -> Self {
        Self {
            dir,
            claims: Arc::default(),
            locks: std::array::from_fn(|_| tokio::sync::Mutex::new(())),
        }
    }

    fn path(&self, sha: &str) -> PathBuf {
        self.dir.join(sha)
    }

    fn lock(&self, sha: &str) -> &tokio::sync::Mutex<()> {
        let stripe = u8::from_str_radix(sha.get(..2).unwrap_or("0"), 16).unwrap_or(0) as usize;
        &self.locks[stripe % self.locks.len()]
    }

    /// Store `bytes` (durably, once: the same bytes are one file) and claim the blob.
    pub async fn put(&self, bytes: Vec<u8>) -> Result<BlobClaim> {
        let sha: String = Sha256::digest(&bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let blob = BlobRef {
            sha256: sha.clone(),
            size: bytes.len() as u64,
        };
        let path = self.path(&sha);
        let exists = {
            let _content = self.lock(&sha).lock().await;
            *self
                .claims
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .entry(sha.clone())
                .or_default() += 1;
            tokio::fs::try_exists(&path).await.unwrap_or(false)
        };
        let claim = BlobClaim {
            blob,
            claims: self.claims.clone(),
        };
        if !exists {
            let dir = self.dir.clone();
            tokio::task::spawn_blocking(move || -> std::io::Result<()> {
                std::fs::create_dir_all(&dir)?;
                let mut tmp = tempfile::Builder::new()
                    .prefix(".blob-")
                    .suffix(".tmp")
                    .tempfile_in(&dir)?;
                tmp.write_all(&bytes)?;
                tmp.as_file().sync_all()?;
                tmp.persist(&path).map_err(|e| e.error)?;
                std::fs::File::open(&dir)?.sync_all()
            })
            .await
            .map_err(|e| io("cannot store a payload", e))?
            .map_err(|e| io("cannot store a payload", e))?;
        }
        Ok(claim)
    }

    /// The bytes of `blob`.
    pub async fn read(&self, blob: &BlobRef) -> Result<Vec<u8>> {
        if !is_sha(&blob.sha256) {
            return Err(io(
                "a payload",
                format!("`{}` is not a SHA-256", blob.sha256),
            ));
        }
        tokio::fs::read(self.path(&blob.sha256))
            .await
            .map_err(|e| io(&format!("payload {}", blob.sha256), e))
    }

    /// Delete each of `blobs` that no record refers to and nothing claims; returns how many were.
    pub async fn release(
        &self,
        db: &Db,
        blobs: impl IntoIterator<Item = BlobRef>,
    ) -> Result<usize> {
        let mut deleted = 0;
        for blob in blobs {
            if !is_sha(&blob.sha256) {
                continue;
            }
            let _content = self.lock(&blob.sha256).lock().await;
            let claimed = self
                .claims
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .contains_key(&blob.sha256);
            if claimed {
                continue;
            }
            let referred = !db
                .keys(format!("{REF_PREFIX}{}/", blob.sha256), None, 1)
                .await?
                .is_empty();
            if referred {
                continue;
            }
            match tokio::fs::remove_file(self.path(&blob.sha256)).await {
                Ok(()) => deleted += 1,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io(&format!("payload {}", blob.sha256), e)),
            }
        }
        Ok(deleted)
    }
}

/// Keep `bytes` inline when small; else store it and claim it: (what stays inline, the blob).
pub async fn maybe_blob(blobs: &Blobs, bytes: Vec<u8>) -> Result<(Vec<u8>, Option<BlobClaim>)> {
    if bytes.len() <= INLINE_MAX {
        return Ok((bytes, None));
    }
    Ok((Vec::new(), Some(blobs.put(bytes).await?)))
}
