//! Tell a plugin file's form by its content, not its name.
//!
//! - WASM component: `\0asm` followed by the component layer `0d 00 01 00`.
//! - Extism module: a core WASM module (`\0asm 01 00 00 00`) exporting `spear_info`.
//! - Native library: an ELF shared object (`\x7fELF`); its abi_stable root module is checked on load.
//!
//! Anything else is refused with the reason.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// How a plugin file is loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Form {
    /// A WASM component of a `spear:plugin` world, run by wasmtime.
    Component,
    /// A core WASM module with `spear_*` exports, run by Extism.
    Extism,
    /// A native shared library with an abi_stable root module.
    Native,
}

impl Form {
    /// The kebab-case name shown by APIs.
    pub fn as_str(&self) -> &'static str {
        match self {
            Form::Component => "component",
            Form::Extism => "extism",
            Form::Native => "native",
        }
    }
}

impl std::fmt::Display for Form {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

const WASM_MAGIC: &[u8; 4] = b"\0asm";
const CORE_VERSION: [u8; 4] = [0x01, 0x00, 0x00, 0x00];
const COMPONENT_LAYER: [u8; 4] = [0x0d, 0x00, 0x01, 0x00];
const ELF_MAGIC: &[u8; 4] = b"\x7fELF";

/// Read a plugin file, refusing what is not a regular file (directories, dangling or looping links).
pub fn read_plugin_file(path: &Path) -> Result<Vec<u8>> {
    let meta = std::fs::metadata(path).map_err(|e| match e.raw_os_error() {
        Some(libc::ELOOP) => Error::refused(path, "symbolic link loop"),
        _ if e.kind() == std::io::ErrorKind::NotFound => {
            Error::refused(path, "no such file (or a dangling symbolic link)")
        }
        _ => Error::Io {
            file: path.into(),
            source: e,
        },
    })?;
    if meta.is_dir() {
        return Err(Error::refused(path, "is a directory, not a plugin file"));
    }
    if !meta.is_file() {
        return Err(Error::refused(path, "not a regular file"));
    }
    std::fs::read(path).map_err(|e| Error::Io {
        file: path.into(),
        source: e,
    })
}

/// Decide the form of the plugin held in `bytes` (read from `path`, named in errors).
pub fn detect(path: &Path, bytes: &[u8]) -> Result<Form> {
    if bytes.is_empty() {
        return Err(Error::refused(path, "empty file"));
    }
    if bytes.len() < 8 {
        return Err(Error::refused(
            path,
            format!("too short to be a plugin ({} bytes)", bytes.len()),
        ));
    }
    if bytes.starts_with(ELF_MAGIC) {
        return Ok(Form::Native);
    }
    if !bytes.starts_with(WASM_MAGIC) {
        return Err(Error::refused(
            path,
            "not a WASM component, WASM module or ELF shared library (unknown magic bytes)",
        ));
    }
    let layer = [bytes[4], bytes[5], bytes[6], bytes[7]];
    if layer == COMPONENT_LAYER {
        return Ok(Form::Component);
    }
    if layer != CORE_VERSION {
        return Err(Error::refused(
            path,
            format!("unsupported WASM version/layer {layer:02x?}"),
        ));
    }
    if core_module_exports(path, bytes)?
        .iter()
        .any(|e| e == "spear_info")
    {
        Ok(Form::Extism)
    } else {
        Err(Error::refused(
            path,
            "a core WASM module without the `spear_info` export: not a SPEAR Extism plugin \
             (build strategies with spear-pdk's export_extism_strategy!, or as a component)",
        ))
    }
}

fn core_module_exports(path: &Path, bytes: &[u8]) -> Result<Vec<String>> {
    let mut names = Vec::new();
    for payload in wasmparser::Parser::new(0).parse_all(bytes) {
        let payload =
            payload.map_err(|e| Error::refused(path, format!("malformed WASM module: {e}")))?;
        if let wasmparser::Payload::ExportSection(reader) = payload {
            for export in reader {
                let export = export
                    .map_err(|e| Error::refused(path, format!("malformed WASM module: {e}")))?;
                names.push(export.name.to_owned());
            }
        }
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(bytes: &[u8]) -> String {
        match detect(Path::new("p.wasm"), bytes) {
            Ok(form) => form.to_string(),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn forms_are_told_by_content() {
        assert_eq!(check(b"\0asm\x0d\x00\x01\x00rest"), "component");
        assert_eq!(check(b"\x7fELF\x02\x01\x01\x00"), "native");
        assert_eq!(check(b""), "p.wasm: refused: empty file");
        assert_eq!(
            check(b"\0asm"),
            "p.wasm: refused: too short to be a plugin (4 bytes)"
        );
        assert!(check(b"#!/bin/sh\necho hi\n").contains("unknown magic bytes"));
        assert!(check(b"\0asm\x02\x00\x00\x00").contains("unsupported WASM version"));
    }

    #[test]
    fn core_module_needs_spear_exports() {
        let empty_module = b"\0asm\x01\x00\x00\x00";
        assert!(check(empty_module).contains("without the `spear_info` export"));
        let truncated = b"\0asm\x01\x00\x00\x00\x07\x05";
        assert!(check(truncated).contains("malformed WASM module"));
    }
}
