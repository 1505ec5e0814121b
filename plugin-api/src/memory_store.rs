//! An in-memory storage backend: everything in a sorted map, nothing survives the process. The
//! built-in `memory` plugin is this store; hosts use it in their unit tests (a host may not link a
//! plugin).

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{Mutex, MutexGuard};

use crate::storage::{BatchOp, KeyValue};
use crate::{PluginError, PluginInfo, PluginKind, StorageBackend};

/// The in-memory backend.
#[derive(Debug, Default)]
pub struct MemoryStore {
    map: Mutex<BTreeMap<Vec<u8>, Vec<u8>>>,
}

impl MemoryStore {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<Vec<u8>, Vec<u8>>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Keys starting with `prefix`, after `start_after` if given, in order.
pub fn scan_range<'a, V>(
    map: &'a BTreeMap<Vec<u8>, V>,
    prefix: &'a [u8],
    start_after: Option<&'a [u8]>,
) -> impl Iterator<Item = (&'a Vec<u8>, &'a V)> + 'a {
    let lower = match start_after {
        Some(after) if after >= prefix => Bound::Excluded(after.to_vec()),
        _ => Bound::Included(prefix.to_vec()),
    };
    map.range((lower, Bound::Unbounded))
        .take_while(move |(k, _)| k.starts_with(prefix))
}

impl StorageBackend for MemoryStore {
    fn info(&self) -> PluginInfo {
        PluginInfo {
            name: "memory".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            kind: PluginKind::StorageBackend,
            description: "In-memory sorted map; nothing survives the process".into(),
            config_schema: r#"{"type":"object"}"#.into(),
        }
    }

    fn open(&mut self, _config: &str) -> Result<(), PluginError> {
        Ok(())
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, PluginError> {
        Ok(self.lock().get(key).cloned())
    }

    fn put(&self, key: &[u8], value: &[u8]) -> Result<(), PluginError> {
        self.lock().insert(key.to_vec(), value.to_vec());
        Ok(())
    }

    fn delete(&self, key: &[u8]) -> Result<bool, PluginError> {
        Ok(self.lock().remove(key).is_some())
    }

    fn scan(
        &self,
        prefix: &[u8],
        start_after: Option<&[u8]>,
        limit: u32,
    ) -> Result<Vec<KeyValue>, PluginError> {
        let map = self.lock();
        Ok(scan_range(&map, prefix, start_after)
            .take(limit as usize)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }

    fn batch(&self, ops: &[BatchOp]) -> Result<bool, PluginError> {
        let mut map = self.lock();
        let holds = |key: &Vec<u8>, value: &Option<Vec<u8>>| map.get(key) == value.as_ref();
        if !ops.iter().all(|op| match op {
            BatchOp::Check { key, value } => holds(key, value),
            _ => true,
        }) {
            return Ok(false);
        }
        for op in ops {
            match op {
                BatchOp::Put { key, value } => {
                    map.insert(key.clone(), value.clone());
                }
                BatchOp::Delete { key } => {
                    map.remove(key);
                }
                BatchOp::Check { .. } => {}
            }
        }
        Ok(true)
    }

    fn compare_and_swap(
        &self,
        key: &[u8],
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> Result<bool, PluginError> {
        let mut map = self.lock();
        if map.get(key).map(Vec::as_slice) != expected {
            return Ok(false);
        }
        match new {
            Some(v) => map.insert(key.to_vec(), v.to_vec()),
            None => map.remove(key),
        };
        Ok(true)
    }
}
