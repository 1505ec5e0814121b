//! Plugin development kit for Rust authors of SPEAR WASM plugins.
//!
//! Implement [`spear_plugin_api::Strategy`] (or [`spear_plugin_api::Reclaimer`],
//! [`spear_plugin_api::Autoscaler`], [`spear_plugin_api::StorageBackend`],
//! [`spear_plugin_api::Executor`]) on a type that is
//! `Default`, then call one macro:
//!
//! ```ignore
//! #[cfg(all(target_family = "wasm", target_os = "wasi"))]
//! spear_pdk::export_strategy!(MyStrategy);          // a WASM component (wasm32-wasip2)
//! #[cfg(all(target_family = "wasm", target_os = "unknown"))]
//! spear_pdk::export_extism_strategy!(MyStrategy);   // an Extism module (wasm32-unknown-unknown)
//! ```
//!
//! The component form is generated from `wit/` (this crate holds the only `wit_bindgen::generate!`);
//! the Extism form speaks JSON through exports named `spear_*` (see `docs/plugins.md`).
#![deny(missing_docs)]

extern crate self as spear_pdk;

pub use spear_plugin_api as api;

#[cfg(all(target_family = "wasm", target_os = "wasi"))]
mod component;
/// Function components (user code kept alive as instances): [`function::Function`] and
/// [`export_function!`].
#[cfg(all(target_family = "wasm", target_os = "wasi"))]
pub mod function;
#[cfg(all(target_family = "wasm", target_os = "wasi"))]
pub use component::*;
#[cfg(all(target_family = "wasm", target_os = "wasi"))]
mod executor;
#[cfg(all(target_family = "wasm", target_os = "wasi"))]
pub use executor::*;
#[cfg(all(target_family = "wasm", target_os = "wasi"))]
mod storage;
#[cfg(all(target_family = "wasm", target_os = "wasi"))]
pub use storage::*;

#[cfg(all(target_family = "wasm", target_os = "unknown"))]
mod extism;
#[cfg(all(target_family = "wasm", target_os = "unknown"))]
pub use extism::*;

/// Write a line to the host's log (component form: the `host.log` import; Extism form: Extism's log;
/// native builds: standard error).
pub fn log(level: api::LogLevel, message: &str) {
    #[cfg(all(target_family = "wasm", target_os = "wasi"))]
    component::host_log(level, message);
    #[cfg(all(target_family = "wasm", target_os = "unknown"))]
    extism::host_log(level, message);
    #[cfg(not(target_family = "wasm"))]
    eprintln!("[{level:?}] {message}");
}
