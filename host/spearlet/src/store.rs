//! The Spearlet's durable state on a storage-backend plugin (`redb` by default): records under key
//! prefixes (JSON; results binary, see [`pending`]), every call off the async runtime (backends
//! may block).
//!
//! | key | record |
//! |---|---|
//! | `node/uuid` | this node's UUID, kept across restarts |
//! | `cursor` | [`Cursor`]: the last assignment taken, by SMS session |
//! | `exec/<id>` | [`Running`]: an execution started here and not yet reported |
//! | `report/<id>` | [`PendingReport`]: a result not yet acknowledged by SMS |
//! | `artifact/<sha256>` | [`CachedArtifact`]: the artifact cache index |

use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use spear_plugin_api::StorageBackend;
use spear_plugin_api::storage::BatchOp;
use spear_plugin_runtime::group::GroupWriter;

use crate::error::{Error, Result};

pub mod pending;

/// The last assignment this node took.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    /// The SMS session it came from.
    pub session: String,
    /// Its cursor in that session.
    pub cursor: u64,
}

/// An execution started on this node whose result SMS has not acknowledged yet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Running {
    /// Execution id.
    pub execution_id: String,
    /// The executor plugin running it.
    pub executor: String,
    /// The executor's handle (empty until started).
    pub handle: String,
    /// Milliseconds since the Unix epoch when it started.
    pub started_at_ms: u64,
    /// The assignment's attempt (0 in records of older builds).
    #[serde(default)]
    pub attempt: u32,
}

/// A result waiting for SMS's acknowledgement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingReport {
    /// Execution id.
    pub execution_id: String,
    /// Whether it succeeded.
    pub success: bool,
    /// How it ended, when it ran.
    pub result: Option<WireResult>,
    /// Why it failed.
    pub error: String,
    /// It started, and SMS was not told so (its start was held, then its end came): the start
    /// goes beside the result.
    #[serde(default)]
    pub start_untold: bool,
    /// The attempt it ran (the assignment's; 0 when unknown, in records of older builds): SMS
    /// refuses a result of an attempt it has moved past.
    #[serde(default)]
    pub attempt: u32,
    /// It was stopped because SMS preempted it: SMS puts it back in its queue.
    #[serde(default)]
    pub preempted: bool,
    /// With `preempted`: its checkpoint directory, zipped ([`crate::checkpoint`]; empty: none).
    #[serde(default)]
    pub checkpoint: Vec<u8>,
}

/// An execution result as reported (mirrors `spear.v1.ExecutionResult`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireResult {
    /// Exit code (0 when killed by a signal).
    pub exit_code: i32,
    /// The killing signal (0 when it exited).
    pub signal: i32,
    /// Captured standard output.
    pub stdout: Vec<u8>,
    /// Captured standard error.
    pub stderr: Vec<u8>,
    /// Standard output went past the cap.
    pub stdout_truncated: bool,
    /// Standard error went past the cap.
    pub stderr_truncated: bool,
    /// Wall time in milliseconds.
    pub duration_ms: u64,
}

/// One artifact in the cache.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CachedArtifact {
    /// sha256 of the content, hex (also the file name in `artifacts/`).
    pub sha256: String,
    /// Size in bytes.
    pub size: u64,
    /// The URI it was first fetched from.
    pub uri: String,
    /// Milliseconds since the Unix epoch of its last use.
    pub last_used_ms: u64,
}

/// Commits of the state store begin at least this far apart. Nothing on an execution's way
/// waits for them (running records and cursors are not waited for; a result is sent while its
/// write is on its way), so under load the node pays for a few large commits rather than one
/// per write, and a write after a quiet spell still goes at once.
pub const COMMIT_PACE: std::time::Duration = std::time::Duration::from_millis(4);

/// The state store. Writes are group-committed ([`GroupWriter`]): the writes of executions running
/// at once (cursors, running records, reports) share durable commits.
#[derive(Clone)]
pub struct Store {
    backend: Arc<dyn StorageBackend>,
    writes: GroupWriter,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Store")
    }
}

fn storage(e: impl std::fmt::Display) -> Error {
    Error::Storage(e.to_string())
}

impl Store {
    /// Wrap an opened backend and start its writer thread (which ends when every `Store` is
    /// dropped).
    pub fn new(backend: Arc<dyn StorageBackend>) -> Result<Self> {
        let writes = GroupWriter::start_paced(
            "spearlet-store-writer",
            backend.clone(),
            COMMIT_PACE,
            |result, _| {
                if let Err(e) = result {
                    tracing::warn!(error = %e, "a state store write failed");
                }
            },
        )
        .map_err(storage)?;
        Ok(Self { backend, writes })
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn StorageBackend) -> std::result::Result<T, spear_plugin_api::PluginError>
        + Send
        + 'static,
    ) -> Result<T> {
        let backend = self.backend.clone();
        tokio::task::spawn_blocking(move || f(backend.as_ref()))
            .await
            .map_err(storage)?
            .map_err(storage)
    }

    /// The record at `key`.
    pub async fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        let k = key.as_bytes().to_vec();
        match self.blocking(move |b| b.get(&k)).await? {
            None => Ok(None),
            Some(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| storage(format!("{key}: {e}"))),
        }
    }

    /// Whether a record is at `key`.
    pub async fn contains(&self, key: &str) -> Result<bool> {
        let k = key.as_bytes().to_vec();
        Ok(self.blocking(move |b| b.get(&k)).await?.is_some())
    }

    /// At most `limit` results waiting under `report/`, after the key `after` (from the start
    /// when `None`), in key order.
    pub async fn pending_reports(
        &self,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<(String, PendingReport)>> {
        let after = after.map(|a| a.as_bytes().to_vec());
        let rows = self
            .blocking(move |b| b.scan(b"report/", after.as_deref(), limit))
            .await?;
        rows.into_iter()
            .map(|(k, v)| {
                let key = String::from_utf8_lossy(&k).into_owned();
                PendingReport::from_bytes(&v)
                    .map(|r| (key.clone(), r))
                    .map_err(|e| storage(format!("{key}: {e}")))
            })
            .collect()
    }

    /// Store `value` at `key`, durably.
    pub async fn put<T: Serialize>(&self, key: &str, value: &T) -> Result<()> {
        self.batch(vec![put_op(key, value)?]).await
    }

    /// Queue a put of `value` at `key` without waiting for it to be durable (it is stored in
    /// order with every other write), for records whose loss a restart tolerates.
    pub fn put_unawaited<T: Serialize>(&self, key: &str, value: &T) -> Result<()> {
        drop(self.writes.enqueue(vec![put_op(key, value)?]));
        Ok(())
    }

    /// Queue puts and deletes now (in order with every other write) and return what resolves
    /// once they are durable: the caller may go on meanwhile.
    pub fn batch_soon(
        &self,
        ops: Vec<BatchOp>,
    ) -> impl std::future::Future<Output = Result<()>> + Send + 'static {
        let stored = self.writes.write_soon(ops);
        async move { stored.await.map_err(storage) }
    }

    /// Remove `key`.
    pub async fn delete(&self, key: &str) -> Result<()> {
        self.batch(vec![delete_op(key)]).await
    }

    /// Apply puts and deletes atomically and durably (with other writes queued meanwhile).
    pub async fn batch(&self, ops: Vec<BatchOp>) -> Result<()> {
        self.batch_soon(ops).await
    }

    /// Every record under `prefix`, in key order.
    pub async fn scan<T: DeserializeOwned + Send + 'static>(
        &self,
        prefix: &str,
    ) -> Result<Vec<(String, T)>> {
        let p = prefix.as_bytes().to_vec();
        let rows = self
            .blocking(move |b| {
                let mut all = Vec::new();
                let mut after: Option<Vec<u8>> = None;
                loop {
                    let page = b.scan(&p, after.as_deref(), 1024)?;
                    let done = page.len() < 1024;
                    after = page.last().map(|(k, _)| k.clone());
                    all.extend(page);
                    if done {
                        return Ok(all);
                    }
                }
            })
            .await?;
        decode(rows)
    }

    /// The keys under `prefix` that are not in `except`, counted a page at a time without
    /// decoding a record (or keeping more than a page).
    pub async fn count_except(
        &self,
        prefix: &str,
        except: std::collections::HashSet<String>,
    ) -> Result<usize> {
        let p = prefix.as_bytes().to_vec();
        self.blocking(move |b| {
            let mut n = 0;
            let mut after: Option<Vec<u8>> = None;
            loop {
                let page = b.scan(&p, after.as_deref(), 1024)?;
                let done = page.len() < 1024;
                n += page
                    .iter()
                    .filter(|(k, _)| std::str::from_utf8(k).map_or(true, |k| !except.contains(k)))
                    .count();
                after = page.last().map(|(k, _)| k.clone());
                if done {
                    return Ok(n);
                }
            }
        })
        .await
    }

    /// At most `limit` records under `prefix` whose keys come after `after` (all when `None`),
    /// in key order.
    pub async fn scan_page<T: DeserializeOwned + Send + 'static>(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<(String, T)>> {
        let p = prefix.as_bytes().to_vec();
        let after = after.map(|a| a.as_bytes().to_vec());
        let rows = self
            .blocking(move |b| b.scan(&p, after.as_deref(), limit))
            .await?;
        decode(rows)
    }
}

/// Rows of the store as (key, record) pairs.
fn decode<T: DeserializeOwned>(rows: Vec<(Vec<u8>, Vec<u8>)>) -> Result<Vec<(String, T)>> {
    rows.into_iter()
        .map(|(k, v)| {
            let key = String::from_utf8_lossy(&k).into_owned();
            serde_json::from_slice(&v)
                .map(|t| (key.clone(), t))
                .map_err(|e| storage(format!("{key}: {e}")))
        })
        .collect()
}

/// A put of `value` as JSON at `key`, for [`Store::batch`].
pub fn put_op<T: Serialize>(key: &str, value: &T) -> Result<BatchOp> {
    Ok(BatchOp::Put {
        key: key.as_bytes().to_vec(),
        value: serde_json::to_vec(value).map_err(storage)?,
    })
}

/// A delete of `key`, for [`Store::batch`].
pub fn delete_op(key: &str) -> BatchOp {
    BatchOp::Delete {
        key: key.as_bytes().to_vec(),
    }
}
