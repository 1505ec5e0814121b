//! An instance of a component of the `storage-backend` world, usable through the plain
//! [`api::StorageBackend`] trait.
//!
//! One instance holds the store (its state lives in the guest), so calls take turns on it: each
//! holds the instance's lock for one guest call. Every call runs under the set-up budget
//! (`plugins.setup_timeout_ms` of CPU, its wall-clock ceiling, [`crate::limits`]): one call may
//! carry a whole group commit, and a call stopped midway loses the instance and what it held. An
//! answer that comes back late is taken: the write it reports has happened. Answers are checked
//! before they are believed: a scan must stay within its prefix, its limit and its start, in key
//! order.
use std::sync::{Arc, OnceLock};

use spear_plugin_api as api;
use spear_plugin_api::storage::{BatchLimits, BatchOp, KeyValue, OUTCOME_UNKNOWN};

use super::held::Held;
use super::storage_world::StorageBackend as Bindings;
use super::storage_world::exports::spear::plugin::storage as wit;
use super::{ComponentFactory, Pre, classify};
use crate::error::CallFailure;
use crate::instance::CallResult;
use crate::limits::Budget;

/// A storage backend running as a component instance.
pub struct ComponentStorage {
    held: Held<Bindings>,
    /// `limits`, asked once (after `open`, when a host first groups writes).
    limits: OnceLock<BatchLimits>,
}

impl ComponentFactory {
    /// A fresh storage-backend instance (unopened: its state is empty until `open`).
    ///
    /// It runs under the limits in force now, kept for its life: its data lives in the
    /// instance (or behind it), so a reload that lowered them (a memory limit under what it
    /// holds, a budget its next write needs) would cost that data. A restart applies new ones.
    /// Its grants follow reloads like any plugin's.
    pub fn storage(&self, plugin: &str) -> CallResult<ComponentStorage> {
        let frozen = Self {
            limits: Arc::new(self.limits.snapshot()),
            ..self.clone()
        };
        let Pre::Storage(pre) = &frozen.pre else {
            return Err(CallFailure::Invalid("not a storage backend".into()));
        };
        let mut store = frozen.store(plugin)?;
        let bindings = pre
            .instantiate(&mut store)
            .map_err(|e| classify(e, &store, &frozen.limits, Budget::Setup))?;
        Ok(ComponentStorage {
            held: Held::new(plugin, "storage", frozen.guest(store), bindings),
            limits: OnceLock::new(),
        })
    }
}

impl ComponentStorage {
    /// One guest call to the storage interface.
    fn call<R>(
        &self,
        f: impl FnOnce(&wit::Guest, &mut wasmtime::Store<super::GuestState>) -> wasmtime::Result<R>,
    ) -> CallResult<R> {
        self.held.call(|b, s| f(b.spear_plugin_storage(), s))
    }

    /// The plugin's `info`, or why the call failed (the self-test at load).
    pub fn describe(&self) -> CallResult<api::PluginInfo> {
        self.held.describe(api::PluginKind::StorageBackend, |b, s| {
            b.spear_plugin_storage().call_info(s)
        })
    }
}

/// A read's failure: the plugin's own error as it wrote it, anything else described.
fn read_error(failure: CallFailure) -> api::PluginError {
    match failure {
        CallFailure::Plugin(text) => api::PluginError(text),
        other => api::PluginError(other.to_string()),
    }
}

/// A write's failure. A guest stopped in the middle of a write (trap, budget, memory) may or may
/// not have made it durable: the host must not take it as undone.
fn write_error(failure: CallFailure) -> api::PluginError {
    match failure {
        CallFailure::Plugin(text) => api::PluginError(text),
        CallFailure::Invalid(text) => api::PluginError(text),
        stopped => api::PluginError(format!("{OUTCOME_UNKNOWN}{stopped}")),
    }
}

fn op_to_wit(op: &BatchOp) -> wit::BatchOp {
    match op {
        BatchOp::Put { key, value } => wit::BatchOp::Put(wit::KeyValue {
            key: key.clone(),
            value: value.clone(),
        }),
        BatchOp::Delete { key } => wit::BatchOp::Delete(key.clone()),
        BatchOp::Check { key, value } => wit::BatchOp::Check(wit::KeyCheck {
            key: key.clone(),
            value: value.clone(),
        }),
    }
}

/// Why `rows` cannot be the answer to a scan of `prefix` after `start_after` with `limit`, if
/// they cannot.
pub(crate) fn scan_answer_error(
    rows: &[KeyValue],
    prefix: &[u8],
    start_after: Option<&[u8]>,
    limit: u32,
) -> Option<String> {
    if rows.len() as u64 > u64::from(limit) {
        return Some(format!("{} rows for a limit of {limit}", rows.len()));
    }
    let mut previous = start_after.filter(|after| *after >= prefix);
    for (key, _) in rows {
        if !key.starts_with(prefix) {
            return Some("a key outside the prefix".into());
        }
        if previous.is_some_and(|p| key.as_slice() <= p) {
            return Some("keys out of order, repeated, or not after the start".into());
        }
        previous = Some(key);
    }
    None
}

impl api::StorageBackend for ComponentStorage {
    fn info(&self) -> api::PluginInfo {
        self.held
            .info_or_why(self.describe(), api::PluginKind::StorageBackend)
    }

    fn open(&mut self, config: &str) -> Result<(), api::PluginError> {
        self.call(|b, s| b.call_open(s, config))
            .and_then(|r| r.map_err(CallFailure::Plugin))
            .map_err(read_error)
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, api::PluginError> {
        self.call(|b, s| b.call_get(s, key))
            .and_then(|r| r.map_err(CallFailure::Plugin))
            .map_err(read_error)
    }

    fn put(&self, key: &[u8], value: &[u8]) -> Result<(), api::PluginError> {
        self.call(|b, s| b.call_put(s, key, value))
            .and_then(|r| r.map_err(CallFailure::Plugin))
            .map_err(write_error)
    }

    fn delete(&self, key: &[u8]) -> Result<bool, api::PluginError> {
        self.call(|b, s| b.call_delete(s, key))
            .and_then(|r| r.map_err(CallFailure::Plugin))
            .map_err(write_error)
    }

    fn scan(
        &self,
        prefix: &[u8],
        start_after: Option<&[u8]>,
        limit: u32,
    ) -> Result<Vec<KeyValue>, api::PluginError> {
        let rows = self
            .call(|b, s| b.call_scan(s, prefix, start_after, limit))
            .and_then(|r| r.map_err(CallFailure::Plugin))
            .map_err(read_error)?;
        let rows: Vec<KeyValue> = rows.into_iter().map(|kv| (kv.key, kv.value)).collect();
        match scan_answer_error(&rows, prefix, start_after, limit) {
            Some(why) => Err(self.held.invalid("a scan", why)),
            None => Ok(rows),
        }
    }

    fn batch(&self, ops: &[BatchOp]) -> Result<bool, api::PluginError> {
        let ops: Vec<wit::BatchOp> = ops.iter().map(op_to_wit).collect();
        self.call(|b, s| b.call_batch(s, &ops))
            .and_then(|r| r.map_err(CallFailure::Plugin))
            .map_err(write_error)
    }

    fn compare_and_swap(
        &self,
        key: &[u8],
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> Result<bool, api::PluginError> {
        self.call(|b, s| b.call_compare_and_swap(s, key, expected, new))
            .and_then(|r| r.map_err(CallFailure::Plugin))
            .map_err(write_error)
    }

    fn limits(&self) -> BatchLimits {
        *self.limits.get_or_init(|| {
            // A plugin that cannot say is taken as unlimited: its batches then fail as they
            // would have, with its own error.
            match self.call(|b, s| b.call_limits(s)) {
                Ok(l) => limits_from_wit(l),
                Err(e) => {
                    tracing::warn!(
                        plugin = %self.held.plugin,
                        "the storage plugin's limits call failed ({e}); its batches are not split"
                    );
                    BatchLimits::UNLIMITED
                }
            }
        })
    }
}

/// The guest's limits, a zero in a field read as "no limit" there.
fn limits_from_wit(l: wit::BatchLimits) -> BatchLimits {
    let unlimited = BatchLimits::UNLIMITED;
    BatchLimits {
        max_ops: if l.max_ops == 0 {
            unlimited.max_ops
        } else {
            l.max_ops
        },
        max_bytes: if l.max_bytes == 0 {
            unlimited.max_bytes
        } else {
            l.max_bytes
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(keys: &[&str]) -> Vec<KeyValue> {
        keys.iter()
            .map(|k| (k.as_bytes().to_vec(), vec![]))
            .collect()
    }

    #[test]
    fn a_scan_answer_is_checked_against_its_question() {
        let ok = rows(&["a/1", "a/2"]);
        assert_eq!(scan_answer_error(&ok, b"a/", None, 2), None);
        assert_eq!(scan_answer_error(&ok, b"a/", Some(b"a/0"), 5), None);
        // A start before the prefix does not bound the answer.
        assert_eq!(scan_answer_error(&ok, b"a/", Some(b"0"), 5), None);
        let why = |r: &[KeyValue], after: Option<&[u8]>, limit| {
            scan_answer_error(r, b"a/", after, limit).unwrap_or_default()
        };
        assert!(why(&ok, None, 1).contains("limit of 1"));
        assert!(why(&rows(&["a/1", "b/2"]), None, 5).contains("outside the prefix"));
        assert!(why(&rows(&["a/2", "a/1"]), None, 5).contains("out of order"));
        assert!(why(&rows(&["a/1", "a/1"]), None, 5).contains("repeated"));
        assert!(why(&ok, Some(b"a/1"), 5).contains("after the start"));
    }

    #[test]
    fn a_zero_limit_is_no_limit_in_that_field_only() {
        let l = |max_ops, max_bytes| limits_from_wit(wit::BatchLimits { max_ops, max_bytes });
        assert_eq!(
            l(100, 0),
            BatchLimits {
                max_ops: 100,
                max_bytes: u64::MAX
            }
        );
        assert_eq!(
            l(0, 4096),
            BatchLimits {
                max_ops: u32::MAX,
                max_bytes: 4096
            }
        );
        assert_eq!(l(0, 0), BatchLimits::UNLIMITED);
    }

    #[test]
    fn a_write_stopped_midway_is_of_unknown_outcome() {
        for stopped in [
            CallFailure::Trap("boom".into()),
            CallFailure::Budget("cpu".into()),
            CallFailure::Deadline(10),
            CallFailure::Memory(64),
        ] {
            assert!(write_error(stopped).0.starts_with(OUTCOME_UNKNOWN));
        }
        assert_eq!(
            write_error(CallFailure::Plugin("disk full".into())).0,
            "disk full"
        );
        assert!(
            !read_error(CallFailure::Trap("boom".into()))
                .0
                .starts_with(OUTCOME_UNKNOWN)
        );
    }
}
