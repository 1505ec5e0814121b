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
//!
//! Replicas on etcd share the directory, and a file's deletion cannot be fenced like a storage
//! write: a deposed leader stopped between its last fenced check and its `unlink` could delete,
//! when it wakes, a file its successor has meanwhile stored the same bytes into. So a leader
//! stores under a name of its own term, `<sha256>.d/<term>`, never reuses a file of an earlier
//! term, and deletes only files of its term or earlier: what a deposed leader deletes late is a
//! copy no record of a later term relies on. A single SMS (term 0) uses `<sha256>`, and deletes
//! every copy. A read takes any copy (the bytes are the same).

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
    /// The leader's term (0: a single SMS).
    term: u64,
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
    /// A store in `dir` (created at the first write) for a single SMS, or for reading.
    pub fn new(dir: PathBuf) -> Self {
        Self::for_term(dir, 0)
    }

    /// A store in `dir` for the leader of `term` (0: a single SMS).
    pub fn for_term(dir: PathBuf, term: u64) -> Self {
        Self {
            dir,
            term,
            claims: Arc::default(),
            locks: std::array::from_fn(|_| tokio::sync::Mutex::new(())),
        }
    }

    /// Where this SMS stores blob `sha`.
    fn path(&self, sha: &str) -> PathBuf {
        match self.term {
            0 => self.dir.join(sha),
            term => self.copies(sha).join(term.to_string()),
        }
    }

    /// The directory of the copies leaders stored of `sha`, by term.
    fn copies(&self, sha: &str) -> PathBuf {
        self.dir.join(format!("{sha}.d"))
    }

    /// A file holding blob `sha`: this SMS's copy, a single SMS's, or the latest leader's (a
    /// deposed leader may be deleting an older one). `None` only if there is none; an error if
    /// that cannot be told.
    async fn find(&self, sha: &str) -> std::io::Result<Option<PathBuf>> {
        for path in [self.path(sha), self.dir.join(sha)] {
            if tokio::fs::try_exists(&path).await? {
                return Ok(Some(path));
            }
        }
        let mut copies = match tokio::fs::read_dir(self.copies(sha)).await {
            Ok(copies) => copies,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let mut latest: Option<(u64, PathBuf)> = None;
        while let Some(copy) = copies.next_entry().await? {
            if let Some(term) = copy
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u64>().ok())
                && latest.as_ref().is_none_or(|(t, _)| term > *t)
            {
                latest = Some((term, copy.path()));
            }
        }
        Ok(latest.map(|(_, path)| path))
    }

    fn lock(&self, sha: &str) -> &tokio::sync::Mutex<()> {
        let stripe = u8::from_str_radix(sha.get(..2).unwrap_or("0"), 16).unwrap_or(0) as usize;
        &self.locks[stripe % self.locks.len()]
    }

    /// Store `bytes` (durably, once: the same bytes are one file) and claim the blob.
    pub async fn put(&self, bytes: Vec<u8>) -> Result<BlobClaim> {
        // (Hashing megabytes is work for a blocking thread, not for the async ones.)
        let (sha, bytes) = tokio::task::spawn_blocking(move || {
            let sha: String = Sha256::digest(&bytes)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            (sha, bytes)
        })
        .await
        .map_err(|e| io("cannot store a payload", e))?;
        let blob = BlobRef {
            sha256: sha.clone(),
            size: bytes.len() as u64,
        };
        let path = self.path(&sha);
        let content = self.lock(&sha).lock().await;
        *self
            .claims
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(sha.clone())
            .or_default() += 1;
        // Made before the next await: a caller that gives up there still lets the claim go.
        let claim = BlobClaim {
            blob,
            claims: self.claims.clone(),
        };
        let exists = tokio::fs::try_exists(&path).await.unwrap_or(false);
        drop(content);
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
                let home = path.parent().unwrap_or(&dir).to_path_buf();
                // A deposed leader removing an emptied copies directory may race its making.
                let mut tries = 0;
                loop {
                    std::fs::create_dir_all(&home)?;
                    match tmp.persist(&path) {
                        Ok(_) => break,
                        Err(e) if e.error.kind() == std::io::ErrorKind::NotFound && tries < 3 => {
                            tries += 1;
                            tmp = e.file;
                        }
                        Err(e) => return Err(e.error),
                    }
                }
                std::fs::File::open(&home)?.sync_all()?;
                std::fs::File::open(&dir)?.sync_all()
            })
            .await
            .map_err(|e| io("cannot store a payload", e))?
            .map_err(|e| io("cannot store a payload", e))?;
        }
        Ok(claim)
    }

    /// Whether a file of `blob` is there (an error telling counts as there: a passing fault
    /// must not fail an execution for good).
    pub async fn exists(&self, blob: &BlobRef) -> bool {
        is_sha(&blob.sha256) && !matches!(self.find(&blob.sha256).await, Ok(None))
    }

    /// The bytes of `blob`.
    pub async fn read(&self, blob: &BlobRef) -> Result<Vec<u8>> {
        if !is_sha(&blob.sha256) {
            return Err(io(
                "a payload",
                format!("`{}` is not a SHA-256", blob.sha256),
            ));
        }
        let failed = |e: std::io::Error| io(&format!("payload {}", blob.sha256), e);
        // A copy found may go before it is read (a deposed leader's, late): look again once.
        let mut looked = 0;
        loop {
            let Some(path) = self.find(&blob.sha256).await.map_err(failed)? else {
                return Err(failed(std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "no file holds it (deleted)",
                )));
            };
            match tokio::fs::read(path).await {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && looked == 0 => looked += 1,
                other => return other.map_err(failed),
            }
        }
    }

    /// Delete each of `blobs` that no record refers to and nothing claims; returns how many were
    /// (on failures, the first, after trying them all).
    pub async fn release(
        &self,
        db: &Db,
        blobs: impl IntoIterator<Item = BlobRef>,
    ) -> Result<usize> {
        let mut deleted = 0;
        let mut failed = None;
        for blob in blobs {
            match self.release_one(db, &blob.sha256).await {
                Ok(gone) => deleted += usize::from(gone),
                Err(e) => failed = failed.or(Some(e)),
            }
        }
        failed.map_or(Ok(deleted), Err)
    }

    /// Delete blob `sha` if no record refers to it and nothing claims it; whether it was.
    async fn release_one(&self, db: &Db, sha: &str) -> Result<bool> {
        if !is_sha(sha) {
            return Ok(false);
        }
        let _content = self.lock(sha).lock().await;
        let claimed = self
            .claims
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(sha);
        if claimed {
            return Ok(false);
        }
        let referred = !db
            .keys(format!("{REF_PREFIX}{sha}/"), None, 1)
            .await?
            .is_empty();
        if referred {
            return Ok(false);
        }
        // Replicas share the directory: a deposed leader that has not noticed yet deletes
        // nothing (while this SMS's fence holds no other leads; checked last), and one that
        // wakes after this check deletes only copies of its term or earlier (module docs).
        db.still_leading().await?;
        self.remove_copies(sha).await
    }

    /// Delete the files of `sha` this SMS may: a single SMS's and, by a leader, those of its
    /// term or earlier (a single SMS, all). Whether any was there.
    async fn remove_copies(&self, sha: &str) -> Result<bool> {
        let failed = |e: std::io::Error| io(&format!("payload {sha}"), e);
        let mut removed = false;
        match tokio::fs::remove_file(self.dir.join(sha)).await {
            Ok(()) => removed = true,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(failed(e)),
        }
        let copies = self.copies(sha);
        let mut entries = match tokio::fs::read_dir(&copies).await {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(removed),
            Err(e) => return Err(failed(e)),
        };
        while let Some(copy) = entries.next_entry().await.map_err(failed)? {
            let term = copy
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u64>().ok());
            if term.is_some_and(|t| self.term == 0 || t <= self.term) {
                match tokio::fs::remove_file(copy.path()).await {
                    Ok(()) => removed = true,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(failed(e)),
                }
            }
        }
        // Emptied, the directory goes (a later term's copy keeps it).
        let _ = tokio::fs::remove_dir(&copies).await;
        Ok(removed)
    }

    /// Delete what a crash or an abandoned write left: blobs no record refers to and temporary
    /// files, each older than `grace` (a younger one may be on its way into a record). Walks the
    /// whole directory; returns how many files went (on failures, the first, after the walk).
    pub async fn sweep_orphans(&self, db: &Db, grace: std::time::Duration) -> Result<usize> {
        let mut dir = match tokio::fs::read_dir(&self.dir).await {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(io("the payload directory", e)),
        };
        let (mut deleted, mut failed) = (0, None);
        while let Some(entry) = dir
            .next_entry()
            .await
            .map_err(|e| io("the payload directory", e))?
        {
            let old = entry
                .metadata()
                .await
                .ok()
                .and_then(|m| m.modified().ok())
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > grace);
            if !old {
                continue;
            }
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(".blob-") {
                if tokio::fs::remove_file(entry.path()).await.is_ok() {
                    deleted += 1;
                }
            } else {
                // One entry that cannot be released (a stray directory, say) does not stop the
                // walk at the same place every time: the first failure is answered at the end.
                match self
                    .release_one(db, name.strip_suffix(".d").unwrap_or(&name))
                    .await
                {
                    Ok(gone) => deleted += usize::from(gone),
                    Err(e) => failed = failed.or(Some(e)),
                }
            }
        }
        failed.map_or(Ok(deleted), Err)
    }
}

/// Keep `bytes` inline when small; else store it and claim it: (what stays inline, the blob).
pub async fn maybe_blob(blobs: &Blobs, bytes: Vec<u8>) -> Result<(Vec<u8>, Option<BlobClaim>)> {
    if bytes.len() <= INLINE_MAX {
        return Ok((bytes, None));
    }
    Ok((Vec::new(), Some(blobs.put(bytes).await?)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_blob_goes_only_when_nothing_refers_to_it_or_claims_it() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::new(Arc::new(
            spear_plugin_api::memory_store::MemoryStore::default(),
        ));
        let blobs = Blobs::new(dir.path().join("blobs"));
        let exists = |b: &BlobRef| dir.path().join("blobs").join(&b.sha256).exists();
        let orphan = blobs.put(vec![b'a'; 2000]).await.unwrap().blob.clone();
        let named = blobs.put(vec![b'b'; 2000]).await.unwrap().blob.clone();
        db.batch(vec![ref_op(&named, "e")]).await.unwrap();
        let claim = blobs.put(vec![b'c'; 2000]).await.unwrap();
        let claimed = claim.blob.clone();
        // The same bytes again: one file, two claims.
        let again = blobs.put(vec![b'c'; 2000]).await.unwrap();
        assert_eq!(again.blob, claimed);
        drop(again);
        std::fs::write(dir.path().join("blobs/.blob-left.tmp"), b"x").unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;

        let gone = blobs
            .sweep_orphans(&db, std::time::Duration::ZERO)
            .await
            .unwrap();
        assert_eq!(gone, 2, "the orphan and the temporary file");
        assert!(!exists(&orphan) && exists(&named) && exists(&claimed));
        assert_eq!(blobs.read(&named).await.unwrap(), vec![b'b'; 2000]);
        // A young orphan waits for its grace.
        drop(claim);
        let young = blobs
            .sweep_orphans(&db, std::time::Duration::from_secs(3600))
            .await
            .unwrap();
        assert_eq!(young, 0);
        // Once its claim and its reference are gone, each goes on release.
        assert_eq!(
            blobs
                .release(&db, [claimed.clone(), named.clone()])
                .await
                .unwrap(),
            1
        );
        db.batch(vec![unref_op(&named, "e")]).await.unwrap();
        assert_eq!(blobs.release(&db, [named.clone()]).await.unwrap(), 1);
        assert!(!exists(&claimed) && !exists(&named));
        assert!(blobs.read(&named).await.is_err());

        // A fenced SMS whose fence no longer holds (another leads) deletes no blob.
        let loose = blobs.put(vec![b'd'; 2000]).await.unwrap();
        let loose_ref = loose.blob.clone();
        drop(loose);
        db.batch(vec![crate::db::put_op("leader".into(), &"me").unwrap()])
            .await
            .unwrap();
        db.set_fence(Some(spear_plugin_runtime::group::Fence {
            key: b"leader".to_vec(),
            value: serde_json::to_vec("someone else").unwrap(),
            why: "not the leader".into(),
        }));
        assert!(blobs.release(&db, [loose_ref.clone()]).await.is_err());
        assert!(exists(&loose_ref), "kept: this SMS may no longer lead");
        db.set_fence(Some(spear_plugin_runtime::group::Fence {
            key: b"leader".to_vec(),
            value: serde_json::to_vec("me").unwrap(),
            why: "not the leader".into(),
        }));
        assert_eq!(blobs.release(&db, [loose_ref.clone()]).await.unwrap(), 1);
        assert!(!exists(&loose_ref));
    }

    /// The race of replicas sharing the directory: a deposed leader passed its last fenced
    /// check for a blob no record named, then stopped (a pause, SIGSTOP) before deleting it;
    /// its successor stored the same bytes for a new execution; the old one wakes and deletes.
    /// The successor's payload must still be there.
    #[tokio::test]
    async fn a_deposed_leader_waking_after_its_check_cannot_delete_its_successors_payload() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::new(Arc::new(
            spear_plugin_api::memory_store::MemoryStore::default(),
        ));
        let old = Blobs::for_term(dir.path().join("blobs"), 5);
        let new = Blobs::for_term(dir.path().join("blobs"), 7);
        let bytes = vec![b'x'; 5000];
        let stored = old.put(bytes.clone()).await.unwrap().blob.clone();
        // (Its record gone, nothing names it: the old leader may delete it, and has checked so.)
        let claim = new.put(bytes.clone()).await.unwrap();
        db.batch(vec![ref_op(&claim.blob, "e-new")]).await.unwrap();
        drop(claim);
        // The old leader wakes and deletes what it decided to.
        assert!(old.remove_copies(&stored.sha256).await.unwrap());
        assert_eq!(new.read(&stored).await.unwrap(), bytes);
        assert!(new.exists(&stored).await);
        // Once the new record goes too, the new leader deletes every copy up to its term, and
        // the directory of copies with them.
        db.batch(vec![unref_op(&stored, "e-new")]).await.unwrap();
        assert_eq!(new.release(&db, [stored.clone()]).await.unwrap(), 1);
        assert!(!new.exists(&stored).await);
        assert!(
            !dir.path()
                .join("blobs")
                .join(format!("{}.d", stored.sha256))
                .exists()
        );
        // A single SMS (after a migration back from replicas) reads and deletes any copy.
        let leader = new.put(bytes.clone()).await.unwrap().blob.clone();
        let single = Blobs::new(dir.path().join("blobs"));
        assert_eq!(single.read(&leader).await.unwrap(), bytes);
        assert_eq!(single.release(&db, [leader.clone()]).await.unwrap(), 1);
        assert!(!single.exists(&leader).await);
    }

    /// An entry that cannot be released does not keep the walk from the orphans after it.
    #[tokio::test]
    async fn a_sweep_goes_past_an_entry_it_cannot_release() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::new(Arc::new(
            spear_plugin_api::memory_store::MemoryStore::default(),
        ));
        let blobs = Blobs::new(dir.path().join("blobs"));
        let orphans: Vec<BlobRef> =
            futures::future::join_all((0u8..20).map(|i| blobs.put(vec![i; 2000])))
                .await
                .into_iter()
                .map(|c| c.unwrap().blob.clone())
                .collect();
        // A directory where a blob's file would be: removing it as a file fails.
        let stray = "f".repeat(64);
        std::fs::create_dir_all(dir.path().join("blobs").join(&stray).join("x")).unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        let swept = blobs.sweep_orphans(&db, std::time::Duration::ZERO).await;
        assert!(swept.is_err(), "the stray directory's failure is answered");
        for o in &orphans {
            assert!(!blobs.exists(o).await, "{} swept all the same", o.sha256);
        }
    }
}
