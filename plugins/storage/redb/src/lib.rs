//! `redb`: the embedded, durable storage backend (the default of SMS).
//!
//! One redb file holds one table of bytes → bytes; batches and compare-and-swap are single
//! transactions. A write is acknowledged once it is durable, so it survives `kill -9` and power
//! loss: its record is appended to a write-ahead log beside the file (`<path>.wal`, see
//! [`wal`]) and synced, and redb applies it without a sync of its own; every
//! [`wal::CHECKPOINT_RECORDS`] records or [`wal::CHECKPOINT_BYTES`], and when the store is
//! closed, a durable redb commit takes in everything and the log is emptied. At open, what the
//! log holds is applied. (A redb commit made durable by itself writes a dozen pages and costs
//! twice the CPU of a log record.) Configuration: `{"path": "/var/lib/spear/sms.redb"}`.

use std::ops::Bound;
use std::path::PathBuf;
use std::sync::Mutex;

use redb::{Database, Durability, ReadableDatabase, ReadableTable, Table, TableDefinition};
use serde::Deserialize;
use spear_plugin_api::storage::{BatchOp, KeyValue};
use spear_plugin_api::{PluginError, PluginInfo, PluginKind, StorageBackend, parse_config};

pub mod wal;

use wal::Wal;

const TABLE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("kv");
/// The database's own records: its generation (see [`wal`]).
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const GENERATION: &str = "log-generation";

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    path: Option<String>,
    /// Memory for redb's page cache, in MiB ([`DEFAULT_CACHE_MB`] when absent).
    cache_mb: Option<u64>,
}

/// redb's page cache when the configuration does not say (redb's own default is 1 GiB, which a
/// long-lived store fills: the process would grow with its history).
pub const DEFAULT_CACHE_MB: u64 = 8;

/// The redb backend.
#[derive(Default)]
pub struct Redb {
    db: Option<Database>,
    log: Option<Mutex<Log>>,
}

/// The write-ahead log, and why writes stop if they must.
struct Log {
    wal: Wal,
    /// The database's generation, which the log is written for.
    generation: u64,
    /// Set when a write is in the log but could not be applied, or the log may be damaged:
    /// every later write is refused with it (a restart replays the log).
    broken: Option<String>,
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

    /// One write: `change` edits the table and says what to log (nothing: no change) and what to
    /// return. The record is durable before redb commits, and both happen under the log's lock,
    /// so the log holds writes in redb's order.
    fn write<R>(
        &self,
        change: impl FnOnce(
            &mut Table<&'static [u8], &'static [u8]>,
        ) -> Result<(Vec<BatchOp>, R), PluginError>,
    ) -> Result<R, PluginError> {
        let db = self.db()?;
        let log = self
            .log
            .as_ref()
            .ok_or_else(|| PluginError::new("storage not opened: call open first"))?;
        let mut log = log.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(why) = &log.broken {
            return Err(PluginError(format!("redb: writes stopped: {why}")));
        }
        let mut txn = db.begin_write().map_err(e("begin"))?;
        txn.set_durability(Durability::None)
            .map_err(e("set durability"))?;
        let (ops, out) = {
            let mut table = txn.open_table(TABLE).map_err(e("open table"))?;
            change(&mut table)?
        };
        if ops.is_empty() {
            txn.abort().map_err(e("abort"))?;
            return Ok(out);
        }
        let record = wal::encode(&ops).map_err(PluginError)?;
        match log.wal.append(&record) {
            Ok(()) => {}
            Err(Ok(io)) => {
                let _ = txn.abort();
                return Err(PluginError(format!(
                    "redb log {}: {io}",
                    log.wal.path().display()
                )));
            }
            Err(Err(io)) => {
                let _ = txn.abort();
                let why = format!("the log {} may be damaged: {io}", log.wal.path().display());
                log.broken = Some(why.clone());
                return Err(PluginError(format!("redb: {why}")));
            }
        }
        if let Err(x) = txn.commit() {
            // Out of the log again, the write failed as a whole; if that cannot be done, the
            // log holds a write redb does not, and only a restart (which applies it) mends that.
            if let Err(io) = log.wal.take_back(&record) {
                let why = format!(
                    "a write is in the log but redb did not take it ({x}; {io}); restart to apply it"
                );
                log.broken = Some(why.clone());
                return Err(PluginError(format!("redb: {why}")));
            }
            return Err(PluginError(format!("redb commit: {x}")));
        }
        if log.wal.due() {
            checkpoint(db, &mut log);
        }
        Ok(out)
    }
}

/// The database's next generation, in a durable redb commit (which takes in every commit made
/// without a sync before it), then an empty log for it. If the commit fails the log still holds
/// everything (the next write tries again); if emptying the log fails, writes stop.
fn checkpoint(db: &Database, log: &mut Log) {
    let next = log.generation.wrapping_add(1);
    let committed = (|| -> Result<(), redb::Error> {
        let txn = db.begin_write()?;
        {
            let mut meta = txn.open_table(META)?;
            meta.insert(GENERATION, next)?;
        }
        txn.commit()?;
        Ok(())
    })();
    if committed.is_err() {
        return;
    }
    match log.wal.reset(next) {
        Ok(()) => log.generation = next,
        Err(io) => {
            log.broken = Some(format!(
                "the log {} could not be started again after a checkpoint: {io}",
                log.wal.path().display()
            ));
        }
    }
}

/// A generation for a database that has none yet: distinct from any other file's.
fn fresh_generation() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    nanos ^ (u64::from(std::process::id()) << 40)
}

/// Apply `ops` to `table`.
fn apply(
    table: &mut Table<&'static [u8], &'static [u8]>,
    ops: &[BatchOp],
) -> Result<(), PluginError> {
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
            BatchOp::Check { .. } => {}
        }
    }
    Ok(())
}

impl Drop for Redb {
    /// Closing takes the log into redb, so that the file alone is whole.
    fn drop(&mut self) {
        if let (Some(db), Some(log)) = (&self.db, &self.log) {
            let mut log = log.lock().unwrap_or_else(|p| p.into_inner());
            if log.broken.is_none() && !log.wal.is_empty() {
                checkpoint(db, &mut log);
            }
        }
    }
}

impl StorageBackend for Redb {
    fn info(&self) -> PluginInfo {
        PluginInfo {
            name: "redb".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            kind: PluginKind::StorageBackend,
            description: "Embedded durable key-value store (redb); survives kill -9".into(),
            config_schema: r#"{"type":"object","required":["path"],"additionalProperties":false,"properties":{"path":{"type":"string"},"cache_mb":{"type":"integer","minimum":1,"maximum":65536}}}"#.into(),
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
        let cache_mb = config.cache_mb.unwrap_or(DEFAULT_CACHE_MB);
        if !(1..=65_536).contains(&cache_mb) {
            return Err(PluginError::new(
                "invalid configuration: `cache_mb` must be 1 to 65536",
            ));
        }
        let db = redb::Builder::new()
            .set_cache_size(usize::try_from(cache_mb << 20).unwrap_or(usize::MAX))
            .create(&path)
            .map_err(|x| PluginError(format!("redb open {path}: {x}")))?;
        let wal_path = PathBuf::from(format!("{path}.wal"));
        let log_error =
            |x: std::io::Error| PluginError(format!("redb log {}: {x}", wal_path.display()));
        let (mut wal, held) = Wal::open(&wal_path).map_err(log_error)?;
        // The table, what the log holds for this database (a cut record at its end goes), and
        // the next generation, in one durable commit; then an empty log for that generation.
        let txn = db.begin_write().map_err(e("begin"))?;
        let generation = {
            let mut table = txn.open_table(TABLE).map_err(e("create table"))?;
            let mut meta = txn.open_table(META).map_err(e("create table"))?;
            let current = meta
                .get(GENERATION)
                .map_err(e("get"))?
                .map_or_else(fresh_generation, |g| g.value());
            match held {
                wal::Held::Nothing => {}
                wal::Held::Records {
                    generation,
                    records,
                } if generation == current => {
                    for ops in &records {
                        apply(&mut table, ops)?;
                    }
                }
                // A checkpoint ended before the log was emptied: all of it is in already.
                wal::Held::Records { generation, .. } if generation.wrapping_add(1) == current => {}
                wal::Held::Records { records, .. } if records.is_empty() => {}
                wal::Held::Records {
                    generation,
                    records,
                } => {
                    return Err(PluginError(format!(
                        "redb log {}: it belongs to another state of {path} (log generation \
                         {generation}, database {current}) and holds {} writes the database may \
                         not have; if the database file was restored or replaced on purpose, \
                         move the log aside",
                        wal_path.display(),
                        records.len()
                    )));
                }
            }
            let next = current.wrapping_add(1);
            meta.insert(GENERATION, next).map_err(e("put"))?;
            next
        };
        txn.commit().map_err(e("commit"))?;
        wal.reset(generation).map_err(log_error)?;
        self.db = Some(db);
        self.log = Some(Mutex::new(Log {
            wal,
            generation,
            broken: None,
        }));
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
        .map(drop)
    }

    fn delete(&self, key: &[u8]) -> Result<bool, PluginError> {
        self.write(|table| {
            let existed = table.remove(key).map_err(e("delete"))?.is_some();
            let logged = if existed {
                vec![BatchOp::Delete { key: key.to_vec() }]
            } else {
                vec![]
            };
            Ok((logged, existed))
        })
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

    fn batch(&self, ops: &[BatchOp]) -> Result<bool, PluginError> {
        self.write(|table| {
            for op in ops {
                if let BatchOp::Check { key, value } = op {
                    let current = table.get(key.as_slice()).map_err(e("get"))?;
                    if current.as_ref().map(|v| v.value()) != value.as_deref() {
                        return Ok((vec![], false));
                    }
                }
            }
            apply(table, ops)?;
            let writes = ops
                .iter()
                .filter(|op| !matches!(op, BatchOp::Check { .. }))
                .cloned()
                .collect();
            Ok((writes, true))
        })
    }

    fn compare_and_swap(
        &self,
        key: &[u8],
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> Result<bool, PluginError> {
        self.write(|table| {
            let current = table
                .get(key)
                .map_err(e("get"))?
                .map(|v| v.value().to_vec());
            if current.as_deref() != expected {
                return Ok((vec![], false));
            }
            let op = match new {
                Some(v) => BatchOp::Put {
                    key: key.to_vec(),
                    value: v.to_vec(),
                },
                None => BatchOp::Delete { key: key.to_vec() },
            };
            apply(table, std::slice::from_ref(&op))?;
            Ok((vec![op], true))
        })
    }
}

#[cfg(feature = "native-plugin")]
spear_plugin_api::export_native_storage!(Redb);

/// This plugin as a built-in of a host that links this crate (no library file; see
/// `spear_plugin_api::native_module!`).
#[cfg(not(target_family = "wasm"))]
pub fn native_module() -> spear_plugin_api::native::SpearPluginModuleRef {
    spear_plugin_api::native_module!(storage, Redb)
}

#[cfg(test)]
mod tests;
