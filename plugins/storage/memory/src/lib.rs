//! `memory`: a storage backend that keeps everything in a sorted map in memory. For tests and
//! throw-away dev hosts: nothing survives the process. The store itself is the contract crate's
//! [`MemoryStore`](spear_plugin_api::memory_store::MemoryStore).
//!
//! Built for wasm32-wasip2 it is a component of the `storage-backend` world: the map lives in the
//! instance's linear memory, so the host's plugin memory limit (`[plugins] memory_limit_mb`)
//! bounds what it holds.

pub use spear_plugin_api::memory_store::{MemoryStore as Memory, scan_range};

#[cfg(feature = "native-plugin")]
spear_plugin_api::export_native_storage!(Memory);

#[cfg(all(target_family = "wasm", target_os = "wasi"))]
spear_pdk::export_storage!(Memory);

/// This plugin as a built-in of a host that links this crate (no library file; see
/// `spear_plugin_api::native_module!`).
#[cfg(not(target_family = "wasm"))]
pub fn native_module() -> spear_plugin_api::native::SpearPluginModuleRef {
    spear_plugin_api::native_module!(storage, Memory)
}
