//! Loading one plugin file: read, detect the form, compile/link/load, self-test (`info`), check that
//! the kind it declares is the kind its form implements.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;
use sha2::{Digest, Sha256};
use spear_plugin_api::native::SpearPluginModuleRef;
use spear_plugin_api::{Executor, PluginInfo, PluginKind, StorageBackend};

use crate::detect::{Form, detect, read_plugin_file};
use crate::engine::WasmEngine;
use crate::error::{CallFailure, Error, Result};
use crate::instance::{AutoscalerInstance, CallResult, ReclaimerInstance, StrategyInstance};
use crate::limits::Limits;
use crate::load::component::ComponentFactory;
use crate::load::extism::ExtismFactory;
use crate::load::native::NativeFactory;

/// Identity of a loaded plugin, as shown by APIs and events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PluginRef {
    /// Plugin name (from its `info`).
    pub name: String,
    /// Plugin version (from its `info`).
    pub version: String,
    /// Kind.
    pub kind: PluginKind,
    /// Form.
    pub form: Form,
    /// The file it was loaded from.
    pub file: PathBuf,
    /// sha256 of the file's content, hex.
    pub sha256: String,
}

/// How to make live instances of a loaded plugin.
#[derive(Clone, Debug)]
pub(crate) enum Factory {
    Component(Box<ComponentFactory>),
    Extism(ExtismFactory),
    Native(NativeFactory),
}

/// A validated plugin, ready to be instantiated as often as needed.
#[derive(Clone, Debug)]
pub struct LoadedPlugin {
    /// What the plugin says it is.
    pub info: PluginInfo,
    /// Where it came from.
    pub id: PluginRef,
    pub(crate) factory: Factory,
}

/// Hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

impl Factory {
    pub(crate) fn strategy(&self, plugin: &str) -> CallResult<Box<dyn StrategyInstance>> {
        match self {
            Factory::Component(f) => f.strategy(plugin),
            Factory::Extism(f) => f.strategy(),
            Factory::Native(f) => f.strategy(),
        }
    }

    pub(crate) fn reclaimer(&self, plugin: &str) -> CallResult<Box<dyn ReclaimerInstance>> {
        match self {
            Factory::Component(f) => f.reclaimer(plugin),
            Factory::Extism(f) => f.reclaimer(),
            Factory::Native(f) => f.reclaimer(),
        }
    }

    pub(crate) fn autoscaler(&self, plugin: &str) -> CallResult<Box<dyn AutoscalerInstance>> {
        match self {
            Factory::Component(f) => f.autoscaler(plugin),
            Factory::Extism(f) => f.autoscaler(),
            Factory::Native(f) => f.autoscaler(),
        }
    }
}

impl LoadedPlugin {
    /// A new, unconfigured strategy instance, outside any slot (no validation, no fallback): for
    /// checks, tests and benchmarks.
    pub fn new_strategy(&self) -> Result<Box<dyn StrategyInstance>> {
        self.factory
            .strategy(&self.info.name)
            .map_err(|e| self.call_error(e))
    }

    /// A new, unconfigured reclamation-policy instance, outside any slot.
    pub fn new_reclaimer(&self) -> Result<Box<dyn ReclaimerInstance>> {
        self.factory
            .reclaimer(&self.info.name)
            .map_err(|e| self.call_error(e))
    }

    /// A new, unconfigured autoscaler instance, outside any slot.
    pub fn new_autoscaler(&self) -> Result<Box<dyn AutoscalerInstance>> {
        self.factory
            .autoscaler(&self.info.name)
            .map_err(|e| self.call_error(e))
    }

    /// A new, unconfigured executor from this plugin (a native library or a component of the
    /// `executor` world).
    pub fn executor(&self) -> Result<Box<dyn Executor>> {
        match &self.factory {
            Factory::Native(f) => f
                .executor()
                .map(|e| Box::new(e) as Box<dyn Executor>)
                .map_err(|e| self.call_error(e)),
            Factory::Component(f) if f.kind() == PluginKind::Executor => f
                .executor(&self.info.name)
                .map(|e| Box::new(e) as Box<dyn Executor>)
                .map_err(|e| self.call_error(e)),
            _ => Err(self.wrong_kind(PluginKind::Executor)),
        }
    }

    /// A new, unopened storage backend from this plugin (a native library or a component of the
    /// `storage-backend` world).
    pub fn storage(&self) -> Result<Box<dyn StorageBackend>> {
        match &self.factory {
            Factory::Native(f) => f
                .storage()
                .map(|s| Box::new(s) as Box<dyn StorageBackend>)
                .map_err(|e| self.call_error(e)),
            Factory::Component(f) if f.kind() == PluginKind::StorageBackend => f
                .storage(&self.info.name)
                .map(|s| Box::new(s) as Box<dyn StorageBackend>)
                .map_err(|e| self.call_error(e)),
            _ => Err(self.wrong_kind(PluginKind::StorageBackend)),
        }
    }

    fn call_error(&self, failure: CallFailure) -> Error {
        Error::Call {
            plugin: self.info.name.clone(),
            failure,
        }
    }

    fn wrong_kind(&self, expected: PluginKind) -> Error {
        Error::WrongKind {
            subject: self.id.file.display().to_string(),
            expected,
            found: self.info.kind,
        }
    }
}

/// Load and self-test the plugin at `path`.
pub fn load_file(path: &Path, engine: &WasmEngine, limits: &Arc<Limits>) -> Result<LoadedPlugin> {
    let bytes = read_plugin_file(path)?;
    load_bytes(path, &bytes, engine, limits)
}

/// Load and self-test the plugin held in `bytes`, read from `path` (named in errors; native
/// libraries are loaded from a copy of it).
pub fn load_bytes(
    path: &Path,
    bytes: &[u8],
    engine: &WasmEngine,
    limits: &Arc<Limits>,
) -> Result<LoadedPlugin> {
    let sha256 = sha256_hex(bytes);
    let form = detect(path, bytes)?;
    let refused = |reason: String| Error::refused(path, reason);
    let self_test =
        |failure: CallFailure| Error::refused(path, format!("self-test failed: {failure}"));
    let (factory, kind, info) = match form {
        Form::Component => {
            let f =
                ComponentFactory::new(engine, bytes, &sha256, limits.clone()).map_err(refused)?;
            let kind = f.kind();
            let info = match kind {
                PluginKind::SchedulingStrategy => {
                    f.strategy("self-test").and_then(|mut s| s.info())
                }
                PluginKind::Autoscaler => f.autoscaler("self-test").and_then(|mut a| a.info()),
                PluginKind::StorageBackend => f.storage("self-test").and_then(|s| s.describe()),
                PluginKind::Executor => f.executor("self-test").and_then(|e| e.describe()),
                _ => f.reclaimer("self-test").and_then(|mut r| r.info()),
            }
            .map_err(self_test)?;
            (Factory::Component(Box::new(f)), kind, info)
        }
        Form::Extism => {
            let f = ExtismFactory::new(bytes, limits).map_err(refused)?;
            let info = f.info().map_err(self_test)?;
            let kind = info.kind;
            if !matches!(
                kind,
                PluginKind::SchedulingStrategy
                    | PluginKind::ReclamationPolicy
                    | PluginKind::Autoscaler
            ) {
                return Err(refused(format!(
                    "Extism plugins may be strategies, reclamation policies or autoscalers, \
                     not {kind}"
                )));
            }
            (Factory::Extism(f), kind, info)
        }
        Form::Native | Form::BuiltIn => {
            let f = NativeFactory::load(path, bytes, &sha256)?;
            let (kind, info) = native_info(&f).map_err(self_test)?;
            (Factory::Native(f), kind, info)
        }
    };
    if info.kind != kind {
        return Err(refused(format!(
            "declares itself a {} but implements a {}",
            info.kind, kind
        )));
    }
    validate_info(&info).map_err(refused)?;
    Ok(LoadedPlugin {
        id: PluginRef {
            name: info.name.clone(),
            version: info.version.clone(),
            kind,
            form,
            file: path.into(),
            sha256,
        },
        info,
        factory,
    })
}

/// Register the plugin `module` of a crate linked into the host as a built-in: self-tested like a
/// library file, named `built-in:<name>` where a file would be.
pub fn load_builtin(module: SpearPluginModuleRef) -> Result<LoadedPlugin> {
    let f = NativeFactory::from_module(module);
    let (kind, info) = native_info(&f).map_err(|failure| Error::Config {
        errors: vec![format!("a built-in plugin failed its self-test: {failure}")],
    })?;
    let file = PathBuf::from(format!("built-in:{}", info.name));
    if info.kind != kind {
        return Err(Error::refused(
            &file,
            format!("declares itself a {} but implements a {kind}", info.kind),
        ));
    }
    validate_info(&info).map_err(|reason| Error::refused(&file, reason))?;
    Ok(LoadedPlugin {
        id: PluginRef {
            name: info.name.clone(),
            version: info.version.clone(),
            kind,
            form: Form::BuiltIn,
            sha256: sha256_hex(format!("built-in:{}:{}", info.name, info.version).as_bytes()),
            file,
        },
        info,
        factory: Factory::Native(f),
    })
}

/// A native plugin's kind and `info`, from a fresh instance.
fn native_info(f: &NativeFactory) -> CallResult<(PluginKind, PluginInfo)> {
    let kind = f.kind();
    let info = match kind {
        PluginKind::SchedulingStrategy => f.strategy().and_then(|mut s| s.info()),
        PluginKind::ReclamationPolicy => f.reclaimer().and_then(|mut r| r.info()),
        PluginKind::Executor => f.executor().map(|e| e.info()),
        PluginKind::StorageBackend => f.storage().map(|s| s.info()),
        PluginKind::Autoscaler => f.autoscaler().and_then(|mut a| a.info()),
    }?;
    Ok((kind, info))
}

/// The most bytes of a plugin's `version`.
pub const MAX_VERSION: usize = 64;
/// The most bytes of a plugin's `description` (one line).
pub const MAX_DESCRIPTION: usize = 256;
/// The most bytes of a plugin's `config-schema`.
pub const MAX_CONFIG_SCHEMA: usize = 64 * 1024;

/// The contract's rules for what `info` returns (docs/wit.md, "Limits").
fn validate_info(info: &PluginInfo) -> std::result::Result<(), String> {
    validate_name(&info.name).map_err(|r| {
        let shown: String = info.name.chars().take(80).collect();
        format!("plugin name {shown:?}: {r}")
    })?;
    let line = |field: &str, value: &str, max: usize| {
        if value.len() > max {
            return Err(format!(
                "{field} of {} bytes: at most {max} allowed",
                value.len()
            ));
        }
        if value.chars().any(char::is_control) {
            return Err(format!(
                "{field}: must be one line without control characters"
            ));
        }
        Ok(())
    };
    if info.version.is_empty() {
        return Err("version: must not be empty".into());
    }
    line("version", &info.version, MAX_VERSION)?;
    line("description", &info.description, MAX_DESCRIPTION)?;
    if info.config_schema.len() > MAX_CONFIG_SCHEMA {
        return Err(format!(
            "config_schema of {} bytes: at most {MAX_CONFIG_SCHEMA} allowed",
            info.config_schema.len()
        ));
    }
    Ok(())
}

/// Plugin names are what configs select: short, lowercase, no spaces.
fn validate_name(name: &str) -> std::result::Result<(), &'static str> {
    if name.is_empty() || name.len() > 64 {
        return Err("must be 1 to 64 characters");
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.'))
    {
        return Err("may hold only a-z, 0-9, '-', '_' and '.'");
    }
    Ok(())
}
