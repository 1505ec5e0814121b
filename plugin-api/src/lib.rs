//! The SPEAR plugin contract.
//!
//! Plugin authors depend on this crate (and, for WASM plugins written in Rust, on `spear-pdk`).
//! It holds:
//!
//! - [`types`]: the plain data a plugin sees, mirroring `wit/types.wit` field for field;
//! - one trait per plugin kind: [`Strategy`], [`Reclaimer`], [`Executor`], [`StorageBackend`];
//! - [`native`] (not on WASM targets): the abi_stable ABI through which native plugins are loaded,
//!   with its explicit [`native::ABI_VERSION`] and the [`export_native_strategy!`] family of macros.
//!
//! The crate depends on no host crate and compiles for `wasm32-wasip2` and `wasm32-unknown-unknown`.
#![deny(missing_docs)]

pub mod executor;
pub mod reclaimer;
pub mod storage;
pub mod strategy;
pub mod types;

#[cfg(not(target_family = "wasm"))]
pub mod native;

pub use executor::Executor;
pub use reclaimer::Reclaimer;
pub use storage::StorageBackend;
pub use strategy::Strategy;
pub use types::*;

/// The version of the WIT package this crate mirrors (`spear:plugin@0.1.0`).
pub const WIT_PACKAGE: &str = "spear:plugin@0.1.0";

/// An error a plugin reports to its host. The message is shown to operators as it is.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PluginError(pub String);

impl PluginError {
    /// Build an error from anything printable.
    pub fn new(message: impl std::fmt::Display) -> Self {
        Self(message.to_string())
    }
}

impl std::fmt::Display for PluginError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for PluginError {}

impl From<String> for PluginError {
    fn from(value: String) -> Self {
        Self(value)
    }
}

impl From<&str> for PluginError {
    fn from(value: &str) -> Self {
        Self(value.to_owned())
    }
}

/// Parse a plugin's JSON configuration into its typed settings, with a message naming the problem.
///
/// An empty string or `null` yields the settings' defaults.
pub fn parse_config<T: serde::de::DeserializeOwned + Default>(
    json: &str,
) -> Result<T, PluginError> {
    let trimmed = json.trim();
    if trimmed.is_empty() || trimmed == "null" {
        return Ok(T::default());
    }
    serde_json::from_str(trimmed).map_err(|e| PluginError(format!("invalid configuration: {e}")))
}
