//! The optional sidecar `NAME.toml` beside a plugin file `NAME.wasm` / `NAME.so`.
//!
//! Today it can pin the file's content: `sha256 = "…"` refuses any other content at that path, so a
//! half-copied or tampered file never loads. Unknown keys are refused.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::plugin::sha256_hex;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Sidecar {
    sha256: Option<String>,
}

/// The sidecar path of a plugin file.
pub(crate) fn path_of(plugin: &Path) -> PathBuf {
    plugin.with_extension("toml")
}

/// The sidecar's text (empty when there is none), for change detection.
pub(crate) fn text(plugin: &Path) -> String {
    std::fs::read_to_string(path_of(plugin)).unwrap_or_default()
}

/// Check the plugin's content against its sidecar.
pub(crate) fn check(plugin: &Path, sidecar_text: &str, bytes: &[u8]) -> Result<()> {
    if sidecar_text.is_empty() {
        return Ok(());
    }
    let sidecar_file = path_of(plugin);
    let sidecar: Sidecar = toml::from_str(sidecar_text).map_err(|e| {
        Error::refused(
            plugin,
            format!(
                "invalid sidecar {}: {}",
                sidecar_file.display(),
                e.to_string().trim().replace('\n', " ")
            ),
        )
    })?;
    if let Some(pin) = sidecar.sha256 {
        let actual = sha256_hex(bytes);
        if !pin.eq_ignore_ascii_case(&actual) {
            return Err(Error::refused(
                plugin,
                format!(
                    "content sha256 {actual} does not match the pin {pin} in {}",
                    sidecar_file.display()
                ),
            ));
        }
    }
    Ok(())
}
