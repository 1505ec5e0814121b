//! `memory`: a storage backend that keeps everything in a sorted map in memory. For tests and
//! throw-away dev hosts: nothing survives the process. The store itself is the contract crate's
//! [`MemoryStore`](spear_plugin_api::memory_store::MemoryStore).

pub use spear_plugin_api::memory_store::{MemoryStore as Memory, scan_range};

#[cfg(feature = "native-plugin")]
spear_plugin_api::export_native_storage!(Memory);
