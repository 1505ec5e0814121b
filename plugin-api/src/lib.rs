//! The SPEAR plugin contract.
//!
//! Plugin authors depend on this crate (and, for WASM plugins written in Rust, on `spear-pdk`).
//! It holds:
//!
//! - [`types`]: the plain data a plugin sees, mirroring `wit/types.wit` field for field;
//! - one trait per plugin kind: [`Strategy`], [`Reclaimer`], [`Executor`], [`StorageBackend`],
//!   [`Autoscaler`];
//! - [`native`] (not on WASM targets): the abi_stable ABI through which native plugins are loaded,
//!   with its explicit [`native::ABI_VERSION`] and the [`export_native_strategy!`] family of macros.
//!
//! The crate depends on no host crate and compiles for `wasm32-wasip2` and `wasm32-unknown-unknown`.
#![deny(missing_docs)]

pub mod autoscaler;
pub mod executor;
pub mod memory_store;
pub mod reclaimer;
pub mod slots;
pub mod storage;
pub mod strategy;
pub mod types;
pub mod worker;

#[cfg(not(target_family = "wasm"))]
pub mod native;

pub use autoscaler::{Autoscaler, QueueStats, ScaleDecision, ScaleLimits, ScaleNode, ScaleView};
pub use executor::Executor;
pub use reclaimer::Reclaimer;
pub use storage::StorageBackend;
pub use strategy::Strategy;
pub use types::*;

/// The version of the WIT package this crate mirrors (`spear:plugin@0.1.1`).
pub const WIT_PACKAGE: &str = "spear:plugin@0.1.1";

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
    serde_json::from_str(trimmed).map_err(|e| {
        // A value of the wrong type or range: say which key it is under (serde says only where).
        let key = (e.classify() == serde_json::error::Category::Data
            && !e.to_string().contains("field `"))
        .then(|| key_before(trimmed, e.line(), e.column()))
        .flatten();
        match key {
            Some(key) => PluginError(format!("invalid configuration: `{key}`: {e}")),
            None => PluginError(format!("invalid configuration: {e}")),
        }
    })
}

/// The last object key written before `line`:`column` (1-based) of `json`, if any.
fn key_before(json: &str, line: usize, column: usize) -> Option<String> {
    let offset = json
        .split_inclusive('\n')
        .take(line.saturating_sub(1))
        .map(str::len)
        .sum::<usize>()
        .saturating_add(column)
        .min(json.len());
    let head = json.get(..offset)?;
    // Scan back for `"key"` followed (past blanks) by a colon.
    let mut end = head.len();
    while end > 0 {
        let colon = head[..end].rfind(':')?;
        let before = head[..colon].trim_end();
        if let Some(inner) = before.strip_suffix('"')
            && let Some(start) = inner.rfind('"')
        {
            return Some(inner[start + 1..].to_owned());
        }
        end = colon;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Default, serde::Deserialize)]
    #[serde(deny_unknown_fields, default)]
    struct Settings {
        limit_mb: u64,
        name: String,
        inner: Inner,
    }

    #[derive(Debug, Default, serde::Deserialize)]
    #[serde(deny_unknown_fields, default)]
    struct Inner {
        depth: u32,
    }

    fn error(json: &str) -> String {
        parse_config::<Settings>(json).unwrap_err().to_string()
    }

    #[test]
    fn a_bad_value_is_refused_naming_its_key() {
        assert!(error(r#"{"limit_mb": -1}"#).contains("`limit_mb`: invalid value"));
        assert!(error(r#"{"name": "a:b", "limit_mb": "x"}"#).contains("`limit_mb`:"));
        assert!(error("{\"name\": \"a\",\n \"inner\": {\"depth\": true}}").contains("`depth`:"));
        // What serde names already is not named twice; what is not a value has no key.
        let unknown = error(r#"{"bogus": 1}"#);
        assert!(unknown.contains("unknown field `bogus`") && !unknown.contains("`bogus`: "));
        assert!(!error(r#"{"limit_mb": "#).contains("`limit_mb`:"));
        assert_eq!(parse_config::<Settings>("").unwrap().limit_mb, 0);
    }
}
