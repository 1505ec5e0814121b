//! Tell a plugin file's form by its content, not its name.
//!
//! - WASM component: `\0asm` followed by the component layer `0d 00 01 00`.
//! - Extism module: a core WASM module (`\0asm 01 00 00 00`) exporting `spear_info`.
//! - Native library: an ELF shared object (`\x7fELF`) for this machine, whole: every table and
//!   segment its headers name lies within the file (a half-copied library is refused, never
//!   loaded); its abi_stable root module is checked on load.
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
    /// Native code linked into the host binary (a built-in plugin: no file).
    BuiltIn,
}

impl Form {
    /// The kebab-case name shown by APIs.
    pub fn as_str(&self) -> &'static str {
        match self {
            Form::Component => "component",
            Form::Extism => "extism",
            Form::Native => "native",
            Form::BuiltIn => "built-in",
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
/// The first bytes of an ELF file.
pub(crate) const ELF_MAGIC: &[u8; 4] = b"\x7fELF";

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
        check_elf(bytes).map_err(|reason| Error::refused(path, reason))?;
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

/// The ELF machine of this host (`e_machine`).
const HOST_MACHINE: u64 = if cfg!(target_arch = "x86_64") {
    62
} else if cfg!(target_arch = "aarch64") {
    183
} else {
    0
};

/// Check that `bytes` hold a whole 64-bit little-endian ELF shared object for this machine: its
/// program and section header tables, and every segment and section with file contents, lie
/// within the file.
fn check_elf(bytes: &[u8]) -> std::result::Result<(), String> {
    let len = bytes.len() as u64;
    let u16_at = |at: u64| -> Option<u64> {
        let at = usize::try_from(at).ok()?;
        Some(u64::from(u16::from_le_bytes(
            bytes.get(at..at + 2)?.try_into().ok()?,
        )))
    };
    let u32_at = |at: u64| -> Option<u64> {
        let at = usize::try_from(at).ok()?;
        Some(u64::from(u32::from_le_bytes(
            bytes.get(at..at + 4)?.try_into().ok()?,
        )))
    };
    let u64_at = |at: u64| -> Option<u64> {
        let at = usize::try_from(at).ok()?;
        Some(u64::from_le_bytes(bytes.get(at..at + 8)?.try_into().ok()?))
    };
    if bytes.len() < 64 {
        return Err(format!(
            "truncated ELF file ({} bytes, no whole header)",
            bytes.len()
        ));
    }
    if bytes[4] != 2 || bytes[5] != 1 {
        return Err("not a 64-bit little-endian ELF library".into());
    }
    let header = |at| u16_at(at).unwrap_or(0);
    if header(16) != 3 {
        return Err("an ELF file, but not a shared library (ET_DYN)".into());
    }
    if header(18) != HOST_MACHINE {
        return Err(format!(
            "an ELF library for machine {}, not this host's ({HOST_MACHINE})",
            header(18)
        ));
    }
    let truncated = |what: &str, end: u64| {
        format!(
            "truncated or corrupt ELF library: its {what} ends at byte {end}, the file has {len}"
        )
    };
    let table = |off_at, size_at, count_at| -> Option<(u64, u64, u64)> {
        let (off, size, count) = (u64_at(off_at)?, u16_at(size_at)?, u16_at(count_at)?);
        Some((off, size, count))
    };
    let (phoff, phentsize, phnum) = table(32, 54, 56).unwrap_or_default();
    let ph_end = phoff.saturating_add(phentsize.saturating_mul(phnum));
    if ph_end > len {
        return Err(truncated("program header table", ph_end));
    }
    for i in 0..phnum {
        let at = phoff + i * phentsize;
        let (Some(offset), Some(filesz)) = (u64_at(at + 8), u64_at(at + 32)) else {
            return Err(truncated("program header table", ph_end));
        };
        let end = offset.saturating_add(filesz);
        if end > len {
            return Err(truncated(&format!("segment {i}"), end));
        }
    }
    let (shoff, shentsize, shnum) = table(40, 58, 60).unwrap_or_default();
    let sh_end = shoff.saturating_add(shentsize.saturating_mul(shnum));
    if sh_end > len {
        return Err(truncated("section header table", sh_end));
    }
    const SHT_NOBITS: u64 = 8;
    for i in 0..shnum {
        let at = shoff + i * shentsize;
        let (Some(kind), Some(offset), Some(size)) =
            (u32_at(at + 4), u64_at(at + 24), u64_at(at + 32))
        else {
            return Err(truncated("section header table", sh_end));
        };
        let end = offset.saturating_add(size);
        if kind != SHT_NOBITS && end > len {
            return Err(truncated(&format!("section {i}"), end));
        }
    }
    Ok(())
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
        assert!(check(b"\x7fELF\x02\x01\x01\x00").contains("truncated ELF file (8 bytes"));
        assert_eq!(check(b""), "p.wasm: refused: empty file");
        assert_eq!(
            check(b"\0asm"),
            "p.wasm: refused: too short to be a plugin (4 bytes)"
        );
        assert!(check(b"#!/bin/sh\necho hi\n").contains("unknown magic bytes"));
        assert!(check(b"\0asm\x02\x00\x00\x00").contains("unsupported WASM version"));
    }

    #[test]
    fn an_elf_library_must_be_whole() {
        // This test binary is a position-independent executable: an ET_DYN ELF for this machine.
        let whole = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        assert_eq!(check(&whole), "native");
        for cut in [whole.len() - 1, whole.len() / 2, 100] {
            let error = check(&whole[..cut]);
            assert!(error.contains("truncated"), "cut at {cut}: {error}");
        }
        let mut exec = whole.clone();
        exec[16] = 2; // ET_EXEC
        assert!(check(&exec).contains("not a shared library"));
        let mut foreign = whole;
        foreign[18] = 40; // ARM
        assert!(check(&foreign).contains("for machine 40"));
    }

    #[test]
    fn core_module_needs_spear_exports() {
        let empty_module = b"\0asm\x01\x00\x00\x00";
        assert!(check(empty_module).contains("without the `spear_info` export"));
        let truncated = b"\0asm\x01\x00\x00\x00\x07\x05";
        assert!(check(truncated).contains("malformed WASM module"));
    }
}
