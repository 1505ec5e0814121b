//! The storage-backend contract: durable key-value state for SMS and Spearlets.
//!
//! Keys and values are bytes; keys sort bytewise. Backends may block: hosts call them off their async
//! runtime.

use serde::{Deserialize, Serialize};

use crate::{PluginError, PluginInfo};

/// A key/value pair, as a scan returns it.
pub type KeyValue = (Vec<u8>, Vec<u8>);

/// One write in an atomic batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum BatchOp {
    /// Set `key` to `value`.
    Put {
        /// The key.
        key: Vec<u8>,
        /// The value.
        value: Vec<u8>,
    },
    /// Remove `key` (no error when absent).
    Delete {
        /// The key.
        key: Vec<u8>,
    },
}

/// A storage backend plugin.
pub trait StorageBackend: Send + Sync + 'static {
    /// Describe the plugin.
    fn info(&self) -> PluginInfo;
    /// Open the store described by a JSON configuration (path, options). Called once, first.
    fn open(&mut self, config: &str) -> Result<(), PluginError>;
    /// The value at `key`.
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, PluginError>;
    /// Set `key` to `value`, durably once this returns.
    fn put(&self, key: &[u8], value: &[u8]) -> Result<(), PluginError>;
    /// Remove `key`; `true` if it existed.
    fn delete(&self, key: &[u8]) -> Result<bool, PluginError>;
    /// Up to `limit` pairs whose keys start with `prefix`, in key order, after `start_after` if given.
    fn scan(
        &self,
        prefix: &[u8],
        start_after: Option<&[u8]>,
        limit: u32,
    ) -> Result<Vec<KeyValue>, PluginError>;
    /// Apply every operation or none.
    fn batch(&self, ops: &[BatchOp]) -> Result<(), PluginError>;
    /// Set `key` to `new` (or delete it when `None`) only if its value is `expected` (`None`: absent).
    /// Returns whether the swap happened.
    fn compare_and_swap(
        &self,
        key: &[u8],
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> Result<bool, PluginError>;
}
