//! Compiling and linking guests: form detection, WASI command checks and the pre-linked programs.
//!
//! A guest is compiled once ([`Compiled`]) and linked once against the WASI imports into a
//! [`Program`] (`InstancePre` for a core module, the preview 2 `CommandPre` for a component), so
//! that each execution only instantiates it.

use wasmtime::component::{Component, Linker as ComponentLinker};
use wasmtime::{Engine, ExternType, InstancePre, Linker, Module};
use wasmtime_wasi::p2::bindings::{CommandPre, LinkOptions};

use crate::state::{ComponentState, CoreState};

/// How the bytes of a WebAssembly binary say what it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// A core module (version 1): run as a WASI preview 1 command.
    Module,
    /// A component (layer 1): run as a `wasi:cli/command`.
    Component,
}

/// Tell a core module from a component by its header, or say why it is neither.
pub fn detect(bytes: &[u8]) -> Result<Form, String> {
    let header: Option<[u8; 8]> = bytes.get(..8).and_then(|h| h.try_into().ok());
    match header {
        Some([0, b'a', b's', b'm', 0x01, 0x00, 0x00, 0x00]) => Ok(Form::Module),
        Some([0, b'a', b's', b'm', 0x0d, 0x00, 0x01, 0x00]) => Ok(Form::Component),
        Some([0, b'a', b's', b'm', a, b, c, d]) => Err(format!(
            "unsupported WebAssembly version/layer bytes {a:#04x} {b:#04x} {c:#04x} {d:#04x}"
        )),
        _ => Err("not a WebAssembly binary (no `\\0asm` header)".into()),
    }
}

/// A compiled guest (machine code, shareable and cheap to clone).
#[derive(Clone)]
pub enum Compiled {
    /// A core module.
    Module(Module),
    /// A component.
    Component(Component),
}

/// A compiled and linked guest, ready to instantiate.
pub enum Program {
    /// A WASI preview 1 command module.
    Module(InstancePre<CoreState>),
    /// A WASI preview 2 command component.
    Component(CommandPre<ComponentState>),
}

/// The WASI linkers of one engine.
pub struct Linkers {
    core: Linker<CoreState>,
    component: ComponentLinker<ComponentState>,
}

impl Linkers {
    /// Linkers providing WASI preview 1 (async host functions) and preview 2 with `exit-with-code`.
    pub fn new(engine: &Engine) -> Result<Self, String> {
        let mut core = Linker::new(engine);
        wasmtime_wasi::p1::add_to_linker_async(&mut core, |s: &mut CoreState| &mut s.wasi)
            .map_err(|e| format!("cannot link WASI preview 1: {e:#}"))?;
        let mut component = ComponentLinker::new(engine);
        let mut options = LinkOptions::default();
        options.cli_exit_with_code(true);
        wasmtime_wasi::p2::add_to_linker_with_options_async(&mut component, &options)
            .map_err(|e| format!("cannot link WASI preview 2: {e:#}"))?;
        Ok(Self { core, component })
    }

    /// Link a compiled guest, checking that it is a WASI command.
    pub fn link(&self, compiled: &Compiled) -> Result<Program, String> {
        match compiled {
            Compiled::Module(module) => {
                match module.get_export("_start") {
                    Some(ExternType::Func(f))
                        if f.params().len() == 0 && f.results().len() == 0 => {}
                    Some(_) => {
                        return Err("its `_start` export is not a `() -> ()` function".into());
                    }
                    None => {
                        return Err(
                            "a core module without a `_start` export is not a WASI command".into(),
                        );
                    }
                }
                let pre = self
                    .core
                    .instantiate_pre(module)
                    .map_err(|e| format!("cannot link it against WASI preview 1: {e:#}"))?;
                Ok(Program::Module(pre))
            }
            Compiled::Component(component) => {
                let pre = self
                    .component
                    .instantiate_pre(component)
                    .map_err(|e| format!("cannot link it against WASI preview 2: {e:#}"))?;
                let command = CommandPre::new(pre).map_err(|e| {
                    format!("not a WASI command component (no `wasi:cli/run` export): {e:#}")
                })?;
                Ok(Program::Component(command))
            }
        }
    }
}

/// Compile WebAssembly bytes of either form.
pub fn compile(engine: &Engine, bytes: &[u8]) -> Result<Compiled, String> {
    match detect(bytes)? {
        Form::Module => Module::new(engine, bytes)
            .map(Compiled::Module)
            .map_err(|e| format!("cannot compile the core module: {e:#}")),
        Form::Component => Component::new(engine, bytes)
            .map(Compiled::Component)
            .map_err(|e| format!("cannot compile the component: {e:#}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_forms_by_header() {
        assert_eq!(detect(b"\0asm\x01\0\0\0rest"), Ok(Form::Module));
        assert_eq!(detect(b"\0asm\x0d\0\x01\0rest"), Ok(Form::Component));
        assert!(
            detect(b"\x7fELF\x02\x01\x01\0")
                .unwrap_err()
                .contains("not a WebAssembly")
        );
        assert!(detect(b"\0asm").is_err());
        assert!(detect(b"\0asm\x02\0\0\0").unwrap_err().contains("0x02"));
    }
}
