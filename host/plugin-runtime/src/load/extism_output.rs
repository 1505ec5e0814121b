//! A guarded output path for Extism modules.
//!
//! An Extism guest hands back its output by calling `extism:host/env` `output_set(offset,
//! length)`. Extism 1.30 checks that pair inside its WASM kernel with wrapping arithmetic, then
//! builds a host slice from it without a bounds check: a guest whose `offset + length` wraps past
//! 2^64 makes the host read out of bounds (an abort, or worse). So before a module is compiled its
//! `output_set` import is re-pointed (same length, patched in place) to [`GUARD_MODULE`], a host
//! function that checks the pair against the memory block the guest allocated, copies at most
//! [`MAX_OUTPUT`] bytes out through Extism's checked handle API, and leaves them in the call's
//! [`Captured`] context. Extism's own output of the call is then always empty.

use std::sync::{Arc, Mutex};

use extism::{CurrentPlugin, Function, UserData, Val, ValType};

/// The import module Extism's kernel functions live in.
const EXTISM_MODULE: &str = "extism:host/env";
/// The import module the guarded `output_set` lives in (as long as [`EXTISM_MODULE`], so that the
/// module can be patched in place).
pub(crate) const GUARD_MODULE: &str = "spear:guard/env";
/// The largest output one call may return.
pub const MAX_OUTPUT: u64 = 16 * 1024 * 1024;

const _: () = assert!(EXTISM_MODULE.len() == GUARD_MODULE.len());

/// One call's output, filled by the guarded `output_set`.
pub(crate) type Captured = Arc<Mutex<Option<Vec<u8>>>>;

/// Re-point the module's `extism:host/env` `output_set` import to the guard. Refuses a module
/// whose import section cannot be read or that imports `output_set` in a compact group (whose
/// module name other imports share).
pub(crate) fn reroute_output(bytes: &[u8]) -> Result<Vec<u8>, String> {
    let mut patched = bytes.to_vec();
    for payload in wasmparser::Parser::new(0).parse_all(bytes) {
        let payload = payload.map_err(|e| format!("invalid WASM module: {e}"))?;
        let wasmparser::Payload::ImportSection(reader) = payload else {
            continue;
        };
        for group in reader {
            match group.map_err(|e| format!("invalid import section: {e}"))? {
                wasmparser::Imports::Single(_, import)
                    if import.module == EXTISM_MODULE && import.name == "output_set" =>
                {
                    // `import.module` borrows from `bytes`: its address gives its offset.
                    let at = import.module.as_ptr() as usize - bytes.as_ptr() as usize;
                    patched[at..at + GUARD_MODULE.len()].copy_from_slice(GUARD_MODULE.as_bytes());
                }
                wasmparser::Imports::Compact1 { module, .. }
                | wasmparser::Imports::Compact2 { module, .. }
                    if module == EXTISM_MODULE =>
                {
                    return Err(format!(
                        "imports from {EXTISM_MODULE} in the compact import encoding, which this \
                         host does not accept; build without it"
                    ));
                }
                _ => {}
            }
        }
    }
    Ok(patched)
}

/// The guarded `output_set(offset: i64, length: i64)` host function.
pub(crate) fn guard_function() -> Function {
    Function::new(
        "output_set",
        [ValType::I64, ValType::I64],
        [],
        UserData::new(()),
        output_set,
    )
    .with_namespace(GUARD_MODULE)
}

fn output_set(
    plugin: &mut CurrentPlugin,
    inputs: &[Val],
    _outputs: &mut [Val],
    _: UserData<()>,
) -> Result<(), extism::Error> {
    let &[Val::I64(offset), Val::I64(length)] = inputs else {
        return anyhow_bail("output_set takes two i64 arguments");
    };
    let (offset, length) = (offset as u64, length as u64);
    let bytes = if length == 0 {
        Vec::new()
    } else {
        // `memory_handle` asks Extism's kernel for the block allocated at `offset` (none for an
        // offset that is not the start of a live block).
        let Some(block) = plugin.memory_handle(offset).filter(|h| h.length > 0) else {
            return anyhow_bail(&format!(
                "output_set: offset {offset} is not a memory block the plugin allocated"
            ));
        };
        if length > block.length {
            return anyhow_bail(&format!(
                "output_set: {length} bytes at offset {offset} overrun the plugin's \
                 {}-byte block",
                block.length
            ));
        }
        if length > MAX_OUTPUT {
            return anyhow_bail(&format!(
                "output_set: {length} bytes of output exceed the {MAX_OUTPUT}-byte limit"
            ));
        }
        plugin.memory_bytes(block)?[..length as usize].to_vec()
    };
    let captured = plugin.host_context::<Captured>()?.clone();
    *captured.lock().unwrap_or_else(|p| p.into_inner()) = Some(bytes);
    Ok(())
}

fn anyhow_bail<T>(message: &str) -> Result<T, extism::Error> {
    Err(extism::Error::msg(message.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_set_import_is_patched_in_place_and_nothing_else_moves() {
        let wat = r#"(module
            (import "extism:host/env" "input_length" (func (result i64)))
            (import "extism:host/env" "output_set" (func (param i64 i64)))
            (func (export "f") (result i32) i32.const 0))"#;
        let bytes = wat::parse_str(wat).unwrap();
        let patched = reroute_output(&bytes).unwrap();
        assert_eq!(patched.len(), bytes.len());
        let text = String::from_utf8_lossy(&patched);
        assert!(text.contains("spear:guard/env\noutput_set"), "{text}");
        assert!(text.contains("extism:host/env\x0cinput_length"), "{text}");
        wasmparser::validate(&patched).unwrap();
    }
}
