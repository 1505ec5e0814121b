//! `memory`: a storage backend that keeps everything in a sorted map in memory. For tests and
//! throw-away dev hosts: nothing survives the process. The store itself is the contract crate's
//! [`MemoryStore`](spear_plugin_api::memory_store::MemoryStore).

pub use spear_plugin_api::memory_store::{MemoryStore as Memory, scan_range};

#[cfg(feature = "native-plugin")]
spear_plugin_api::export_native_storage!(Memory);

/// This plugin as a built-in of a host that links this crate (no library file; see
/// `spear_plugin_api::native_module!`).
#[cfg(not(target_family = "wasm"))]
pub fn native_module() -> spear_plugin_api::native::SpearPluginModuleRef {
    spear_plugin_api::native_module!(storage, Memory)
}
