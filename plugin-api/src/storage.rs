//! The storage-backend contract: durable key-value state for SMS and Spearlets.
//!
//! Keys and values are bytes; keys sort bytewise. Backends may block: hosts call them off their async
//! runtime.

use serde::{Deserialize, Serialize};

use crate::{PluginError, PluginInfo};

/// How a write error that may have applied starts. A backend that sends a write over a network
/// and gets no answer cannot tell whether it applied (or will yet): its error message then begins
/// with this, so that a host does not take the write as undone. (The backend settles the question
/// before its next write: a copy of this one can no longer apply after that.)
pub const OUTCOME_UNKNOWN: &str = "outcome unknown: ";

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
    /// Apply the batch only if `key` holds `value` now (`None`: only if `key` is absent). Every
    /// check of a batch is evaluated against the state before any of its writes.
    Check {
        /// The key.
        key: Vec<u8>,
        /// The value it must hold, or `None` for absent.
        value: Option<Vec<u8>>,
    },
}

impl BatchOp {
    /// The bytes this operation carries (key and value), as [`BatchLimits::max_bytes`] counts them.
    pub fn size(&self) -> u64 {
        let (key, value) = match self {
            Self::Put { key, value } => (key, value.len()),
            Self::Delete { key } => (key, 0),
            Self::Check { key, value } => (key, value.as_ref().map_or(0, Vec::len)),
        };
        (key.len() + value) as u64
    }
}

/// The largest batch a backend takes in one call. etcd, for one, refuses a transaction of more
/// than `--max-txn-ops` operations or `--max-request-bytes`; a host that groups writes keeps each
/// commit within these (a single write over them is refused by the backend).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchLimits {
    /// Operations (checks included) in one batch.
    pub max_ops: u32,
    /// Bytes of keys and values in one batch ([`BatchOp::size`] summed).
    pub max_bytes: u64,
}

impl BatchLimits {
    /// No limit.
    pub const UNLIMITED: Self = Self {
        max_ops: u32::MAX,
        max_bytes: u64::MAX,
    };
}

impl Default for BatchLimits {
    fn default() -> Self {
        Self::UNLIMITED
    }
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
    /// Apply every operation or none: none when a [`BatchOp::Check`] does not hold. Returns
    /// whether the batch applied (`false`: a check failed; an error: nothing applied, unless its
    /// message begins with [`OUTCOME_UNKNOWN`]: the backend cannot tell).
    fn batch(&self, ops: &[BatchOp]) -> Result<bool, PluginError>;
    /// Set `key` to `new` (or delete it when `None`) only if its value is `expected` (`None`: absent).
    /// Returns whether the swap happened.
    fn compare_and_swap(
        &self,
        key: &[u8],
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> Result<bool, PluginError>;
    /// The largest batch this backend takes ([`BatchLimits::UNLIMITED`] unless it says).
    fn limits(&self) -> BatchLimits {
        BatchLimits::UNLIMITED
    }
}
