//! SMS's state on a storage-backend plugin: JSON records under key prefixes, every call off the
//! async runtime (backends may block). A write returns once the backend has made it durable.
//!
//! | prefix | record |
//! |---|---|
//! | `node/<uuid>` | [`Node`](crate::model::Node) |
//! | `task/<id>` | [`Task`](crate::model::Task) |
//! | `file/<id>` | [`FileMeta`](crate::model::FileMeta) |
//! | `event/<cursor, 20 digits>` | [`Event`](crate::model::Event) |

use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;
use spear_plugin_api::StorageBackend;
use spear_plugin_api::storage::BatchOp;

use crate::error::{Result, SmsError};

/// A storage backend shared by SMS's components.
#[derive(Clone)]
pub struct Db {
    backend: Arc<dyn StorageBackend>,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Db")
    }
}

fn storage(e: impl std::fmt::Display) -> SmsError {
    SmsError::Storage(e.to_string())
}

/// Rows per scan page when loading a prefix whole.
const PAGE: u32 = 1024;

impl Db {
    /// Wrap an opened backend.
    pub fn new(backend: Arc<dyn StorageBackend>) -> Self {
        Self { backend }
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

    /// Store `value` at `key`.
    pub async fn put<T: Serialize>(&self, key: String, value: &T) -> Result<()> {
        let bytes = serde_json::to_vec(value).map_err(storage)?;
        self.blocking(move |b| b.put(key.as_bytes(), &bytes).map_err(storage))
            .await
    }

    /// Apply writes atomically.
    pub async fn batch(&self, ops: Vec<BatchOp>) -> Result<()> {
        self.blocking(move |b| b.batch(&ops).map_err(storage)).await
    }

    /// Remove `key`; whether it existed.
    pub async fn delete(&self, key: String) -> Result<bool> {
        self.blocking(move |b| b.delete(key.as_bytes()).map_err(storage))
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

    /// The last key under `prefix`, scanning it whole (used once at start).
    pub async fn last_key(&self, prefix: &'static str) -> Result<Option<String>> {
        self.blocking(move |b| {
            let mut last = None;
            loop {
                let page = b
                    .scan(prefix.as_bytes(), last.as_deref(), PAGE)
                    .map_err(storage)?;
                let done = (page.len() as u32) < PAGE;
                if let Some((k, _)) = page.into_iter().last() {
                    last = Some(k);
                }
                if done {
                    break;
                }
            }
            Ok(last.map(|k| String::from_utf8_lossy(&k).into_owned()))
        })
        .await
    }
}
