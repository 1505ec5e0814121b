//! SMS's state on a storage-backend plugin: JSON records under key prefixes, every call off the
//! async runtime (backends may block). A write returns once the backend has made it durable.
//!
//! Writes are group-committed ([`GroupWriter`]): one writer thread takes every write queued
//! meanwhile and applies them as one atomic batch, so concurrent writers share one durable commit
//! (one fsync with redb) instead of queueing for one each. Writes apply in the order they were
//! queued.
//!
//! | prefix | record |
//! |---|---|
//! | `node/<uuid>` | [`Node`](crate::model::Node) |
//! | `exec/<id>`, `done/<id>`, `done-rev/…` | [`Execution`](crate::model::Execution)s ([`crate::history`]) |
//! | `task/<id>` | [`Task`](crate::model::Task) |
//! | `file/<id>` | [`FileMeta`](crate::model::FileMeta) |
//! | `event/<cursor, 20 digits>` | [`Event`](crate::model::Event) |
//! | `health/probe` | the time of the last write probe, made while writes fail |

use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;
use spear_plugin_api::StorageBackend;
use spear_plugin_api::storage::{BatchLimits, BatchOp};
use spear_plugin_runtime::group::{GroupWriter, WriteError, WriteResult};

use crate::error::{Result, SmsError};
use crate::health::WriteHealth;

/// A storage backend shared by SMS's components.
#[derive(Clone)]
pub struct Db {
    backend: Arc<dyn StorageBackend>,
    writes: GroupWriter,
    health: Arc<WriteHealth>,
    limits: BatchLimits,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Db")
    }
}

fn storage(e: impl std::fmt::Display) -> SmsError {
    SmsError::Storage(e.to_string())
}

/// What a write that did not apply is to SMS: a failed check is a conflict, anything else a
/// storage failure (nothing changed, or, for [`WriteError::Unknown`], SMS stops: see
/// [`Db::unsure`]).
pub fn write_error(e: WriteError) -> SmsError {
    match e {
        WriteError::Conflict => SmsError::Conflict(e.to_string()),
        WriteError::Fenced(why) | WriteError::Failed(why) | WriteError::Unknown(why) => {
            SmsError::Storage(why)
        }
    }
}

/// A put of `value` as JSON at `key`.
pub fn put_op<T: Serialize>(key: String, value: &T) -> Result<BatchOp> {
    Ok(BatchOp::Put {
        key: key.into_bytes(),
        value: serde_json::to_vec(value).map_err(storage)?,
    })
}

/// A delete of `key`.
pub fn delete_op(key: String) -> BatchOp {
    BatchOp::Delete {
        key: key.into_bytes(),
    }
}

/// Rows per scan page when loading a prefix whole.
const PAGE: u32 = 1024;

impl Db {
    /// Wrap an opened backend and start its writer thread (which ends when every `Db` is dropped).
    pub fn new(backend: Arc<dyn StorageBackend>) -> Self {
        Self::with_metrics(backend, &crate::metrics::SmsMetrics::default())
    }

    /// [`new`](Self::new), observing each commit in `metrics`.
    pub fn with_metrics(
        backend: Arc<dyn StorageBackend>,
        metrics: &crate::metrics::SmsMetrics,
    ) -> Self {
        let health = Arc::new(WriteHealth::default());
        let recorder = health.clone();
        let (seconds, writes) = (
            metrics.commit_seconds.clone(),
            metrics.commit_writes.clone(),
        );
        let writes = GroupWriter::start("sms-db-writer", backend.clone(), move |result, commit| {
            recorder.record(&result.clone().map_err(SmsError::Storage));
            seconds.observe(commit.took.as_secs_f64());
            writes.observe(commit.writes as f64);
        })
        .expect("start the storage writer thread");
        let limits = backend.limits();
        Self {
            backend,
            writes,
            health,
            limits,
        }
    }

    /// Fence every later write (see [`GroupWriter::set_fence`]): a leader's writes check that it
    /// still leads.
    pub fn set_fence(&self, fence: Option<spear_plugin_runtime::group::Fence>) {
        self.writes.set_fence(fence);
    }

    /// Whether this SMS still leads, as its fence says now (a commit that only checks the fence);
    /// `Ok` at once without a fence (a lone SMS). For what is not a store write but must be done
    /// only by the leader: deleting a payload blob in a `files.dir` the replicas share.
    pub async fn still_leading(&self) -> Result<()> {
        if self.writes.is_fenced() {
            self.write(Vec::new()).await?;
        }
        Ok(())
    }

    /// Becomes `true` once a write failed on the fence: this SMS no longer leads.
    pub fn fenced(&self) -> tokio::sync::watch::Receiver<bool> {
        self.writes.fenced()
    }

    /// Becomes `true` once the backend could not tell whether a write applied (etcd unreachable
    /// while a write was in flight): memory may then differ from storage, and SMS stops, to be
    /// started again from storage (another replica leads meanwhile).
    pub fn unsure(&self) -> tokio::sync::watch::Receiver<bool> {
        self.writes.unsure()
    }

    /// How the storage writes go.
    pub fn write_health(&self) -> &WriteHealth {
        &self.health
    }

    /// Queue a write now (writes apply in queue order); await the returned receiver for its result.
    pub fn enqueue(&self, ops: Vec<BatchOp>) -> tokio::sync::oneshot::Receiver<WriteResult> {
        if self.writes.is_stopped() {
            self.health
                .record(&Err(storage("the storage writer has stopped")));
        }
        self.writes.enqueue(ops)
    }

    /// Apply writes atomically and durably.
    pub async fn write(&self, ops: Vec<BatchOp>) -> Result<()> {
        self.enqueue(ops)
            .await
            .map_err(|_| storage("the storage writer has stopped"))?
            .map_err(write_error)
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn StorageBackend) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let backend = self.backend.clone();
        tokio::task::spawn_blocking(move || f(backend.as_ref()))
            .await
            .map_err(storage)?
    }

    /// The record at `key`.
    pub async fn get<T: DeserializeOwned + Send + 'static>(
        &self,
        key: String,
    ) -> Result<Option<T>> {
        self.blocking(move |b| {
            b.get(key.as_bytes())
                .map_err(storage)?
                .map(|v| {
                    serde_json::from_slice(&v)
                        .map_err(|e| storage(format!("corrupt record {key}: {e}")))
                })
                .transpose()
        })
        .await
    }

    /// The records at `keys` that exist, in the order of `keys` (one trip to a blocking thread).
    pub async fn get_many<T: DeserializeOwned + Send + 'static>(
        &self,
        keys: Vec<String>,
    ) -> Result<Vec<T>> {
        self.blocking(move |b| {
            let mut out = Vec::with_capacity(keys.len());
            for key in keys {
                if let Some(v) = b.get(key.as_bytes()).map_err(storage)? {
                    out.push(
                        serde_json::from_slice(&v)
                            .map_err(|e| storage(format!("corrupt record {key}: {e}")))?,
                    );
                }
            }
            Ok(out)
        })
        .await
    }

    /// Store `value` at `key`.
    pub async fn put<T: Serialize>(&self, key: String, value: &T) -> Result<()> {
        self.write(vec![put_op(key, value)?]).await
    }

    /// Apply writes atomically.
    pub async fn batch(&self, ops: Vec<BatchOp>) -> Result<()> {
        self.write(ops).await
    }

    /// The most operations one write may carry: the backend's batch limit, less one for the
    /// writer's fence.
    pub fn max_ops(&self) -> u64 {
        u64::from(self.limits.max_ops.saturating_sub(1).max(1))
    }

    /// Apply `groups`, each atomically, as few writes as the backend's batch limits allow (for
    /// bulk deletes and moves: etcd takes 128 operations a transaction by default). A failure
    /// leaves the groups written before it applied. One operation of each write is left for the
    /// writer's fence.
    pub async fn write_groups(&self, groups: Vec<Vec<BatchOp>>) -> Result<()> {
        let max_ops = self.max_ops();
        let mut batch: Vec<BatchOp> = Vec::new();
        let (mut ops, mut bytes) = (0u64, 0u64);
        for group in groups {
            let size: u64 = group.iter().map(BatchOp::size).sum();
            let n = group.len() as u64;
            if !batch.is_empty() && (ops + n > max_ops || bytes + size > self.limits.max_bytes) {
                self.write(std::mem::take(&mut batch)).await?;
                (ops, bytes) = (0, 0);
            }
            (ops, bytes) = (ops + n, bytes + size);
            batch.extend(group);
        }
        if !batch.is_empty() {
            self.write(batch).await?;
        }
        Ok(())
    }

    /// [`write_groups`](Self::write_groups) of single operations.
    pub async fn write_each(&self, ops: Vec<BatchOp>) -> Result<()> {
        self.write_groups(ops.into_iter().map(|op| vec![op]).collect())
            .await
    }

    /// Remove `key` (no error when absent).
    pub async fn delete(&self, key: String) -> Result<()> {
        self.write(vec![BatchOp::Delete {
            key: key.into_bytes(),
        }])
        .await
    }

    /// Every record under `prefix`, in key order.
    pub async fn load_all<T: DeserializeOwned + Send + 'static>(
        &self,
        prefix: &'static str,
    ) -> Result<Vec<T>> {
        self.scan(prefix, None, u32::MAX).await
    }

    /// Up to `limit` records under `prefix` after the key `after`.
    pub async fn scan<T: DeserializeOwned + Send + 'static>(
        &self,
        prefix: &'static str,
        after: Option<String>,
        limit: u32,
    ) -> Result<Vec<T>> {
        self.blocking(move |b| {
            let mut out = Vec::new();
            let mut cursor = after.map(String::into_bytes);
            while (out.len() as u64) < u64::from(limit) {
                let want = PAGE.min(limit - out.len() as u32);
                let page = b
                    .scan(prefix.as_bytes(), cursor.as_deref(), want)
                    .map_err(storage)?;
                let done = (page.len() as u32) < want;
                for (key, value) in page {
                    out.push(serde_json::from_slice(&value).map_err(|e| {
                        storage(format!(
                            "corrupt record {}: {e}",
                            String::from_utf8_lossy(&key)
                        ))
                    })?);
                    cursor = Some(key);
                }
                if done {
                    break;
                }
            }
            Ok(out)
        })
        .await
    }

    /// Up to `limit` keys under `prefix` after the key `after`, in key order (values unread).
    pub async fn keys(
        &self,
        prefix: impl Into<String>,
        after: Option<String>,
        limit: u32,
    ) -> Result<Vec<String>> {
        let prefix = prefix.into();
        self.blocking(move |b| {
            let page = b
                .scan(
                    prefix.as_bytes(),
                    after.as_deref().map(str::as_bytes),
                    limit,
                )
                .map_err(storage)?;
            Ok(page
                .into_iter()
                .map(|(k, _)| String::from_utf8_lossy(&k).into_owned())
                .collect())
        })
        .await
    }
}
