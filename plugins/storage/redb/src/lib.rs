//! `redb`: the embedded, durable storage backend (the default of SMS).
//!
//! One redb file holds one table of bytes → bytes. Every write is its own transaction committed with
//! redb's default durability (fsync before returning), so an acknowledged write survives `kill -9`
//! and power loss; batches and compare-and-swap are single transactions. Configuration:
//! `{"path": "/var/lib/spear/sms.redb"}`.

use std::ops::Bound;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::Deserialize;
use spear_plugin_api::storage::{BatchOp, KeyValue};
use spear_plugin_api::{PluginError, PluginInfo, PluginKind, StorageBackend, parse_config};

const TABLE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("kv");

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    path: Option<String>,
}

/// The redb backend.
#[derive(Default)]
pub struct Redb {
    db: Option<Database>,
}

impl std::fmt::Debug for Redb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Redb")
    }
}

/// Map a redb error to a plugin error naming the operation.
fn e<T: std::fmt::Display>(context: &str) -> impl Fn(T) -> PluginError + '_ {
    move |x| PluginError(format!("redb {context}: {x}"))
}

impl Redb {
    fn db(&self) -> Result<&Database, PluginError> {
        self.db
            .as_ref()
            .ok_or_else(|| PluginError::new("storage not opened: call open first"))
    }
}

impl StorageBackend for Redb {
    fn info(&self) -> PluginInfo {
        PluginInfo {
            name: "redb".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            kind: PluginKind::StorageBackend,
            description: "Embedded durable key-value store (redb); survives kill -9".into(),
            config_schema: r#"{"type":"object","required":["path"],"additionalProperties":false,"properties":{"path":{"type":"string"}}}"#.into(),
        }
    }

    fn open(&mut self, config: &str) -> Result<(), PluginError> {
        let config: Config = parse_config(config)?;
        let path = config
            .path
            .ok_or_else(|| PluginError::new("invalid configuration: `path` is required"))?;
        if let Some(parent) = std::path::Path::new(&path).parent()
            && !parent.as_os_str().is_empty()
        {
            std::fs::create_dir_all(parent).map_err(e("create directory"))?;
        }
        let db =
            Database::create(&path).map_err(|x| PluginError(format!("redb open {path}: {x}")))?;
        let txn = db.begin_write().map_err(e("begin"))?;
        txn.open_table(TABLE).map_err(e("create table"))?;
        txn.commit().map_err(e("commit"))?;
        self.db = Some(db);
        Ok(())
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, PluginError> {
        let txn = self.db()?.begin_read().map_err(e("begin read"))?;
        let table = txn.open_table(TABLE).map_err(e("open table"))?;
        Ok(table
            .get(key)
            .map_err(e("get"))?
            .map(|v| v.value().to_vec()))
    }

    fn put(&self, key: &[u8], value: &[u8]) -> Result<(), PluginError> {
        self.batch(&[BatchOp::Put {
            key: key.to_vec(),
            value: value.to_vec(),
        }])
    }

    fn delete(&self, key: &[u8]) -> Result<bool, PluginError> {
        let txn = self.db()?.begin_write().map_err(e("begin"))?;
        let existed = {
            let mut table = txn.open_table(TABLE).map_err(e("open table"))?;
            table.remove(key).map_err(e("delete"))?.is_some()
        };
        txn.commit().map_err(e("commit"))?;
        Ok(existed)
    }

    fn scan(
        &self,
        prefix: &[u8],
        start_after: Option<&[u8]>,
        limit: u32,
    ) -> Result<Vec<KeyValue>, PluginError> {
        let txn = self.db()?.begin_read().map_err(e("begin read"))?;
        let table = txn.open_table(TABLE).map_err(e("open table"))?;
        let lower: Bound<&[u8]> = match start_after {
            Some(after) if after >= prefix => Bound::Excluded(after),
            _ => Bound::Included(prefix),
        };
        let mut out = Vec::new();
        for row in table
            .range::<&[u8]>((lower, Bound::Unbounded))
            .map_err(e("scan"))?
        {
            let (k, v) = row.map_err(e("scan"))?;
            if !k.value().starts_with(prefix) || out.len() >= limit as usize {
                break;
            }
            out.push((k.value().to_vec(), v.value().to_vec()));
        }
        Ok(out)
    }

    fn batch(&self, ops: &[BatchOp]) -> Result<(), PluginError> {
        let txn = self.db()?.begin_write().map_err(e("begin"))?;
        {
            let mut table = txn.open_table(TABLE).map_err(e("open table"))?;
            for op in ops {
                match op {
                    BatchOp::Put { key, value } => {
                        table
                            .insert(key.as_slice(), value.as_slice())
                            .map_err(e("put"))?;
                    }
                    BatchOp::Delete { key } => {
                        table.remove(key.as_slice()).map_err(e("delete"))?;
                    }
                }
            }
        }
        txn.commit().map_err(e("commit"))
    }

    fn compare_and_swap(
        &self,
        key: &[u8],
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> Result<bool, PluginError> {
        let txn = self.db()?.begin_write().map_err(e("begin"))?;
        let swapped = {
            let mut table = txn.open_table(TABLE).map_err(e("open table"))?;
            let current = table
                .get(key)
                .map_err(e("get"))?
                .map(|v| v.value().to_vec());
            if current.as_deref() != expected {
                false
            } else {
                match new {
                    Some(v) => {
                        table.insert(key, v).map_err(e("put"))?;
                    }
                    None => {
                        table.remove(key).map_err(e("delete"))?;
                    }
                }
                true
            }
        };
        if swapped {
            txn.commit().map_err(e("commit"))?;
        } else {
            txn.abort().map_err(e("abort"))?;
        }
        Ok(swapped)
    }
}

#[cfg(feature = "native-plugin")]
spear_plugin_api::export_native_storage!(Redb);
