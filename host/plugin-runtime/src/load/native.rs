//! Native plugins: ELF shared libraries exporting a [`SpearPluginModule`] through abi_stable.
//!
//! Each file is loaded from a uniquely named copy, so that a replaced file with the same path is a
//! new library (the dynamic loader would otherwise hand back the old one). Libraries are never
//! unloaded: abi_stable cannot do so safely, so a replaced native plugin's old code stays mapped for
//! the life of the process. Policies that change often belong in WASM.
//!
//! Native calls run to completion: there is no deadline or memory cap for native code. Panics come
//! back as errors (the export macros catch them before the FFI boundary).

use std::path::Path;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use abi_stable::library::{LibraryError, lib_header_from_path};
use abi_stable::sabi_trait::TD_Opaque;
use abi_stable::sabi_types::RMut;
use abi_stable::std_types::{ROption, RResult, RSlice, RString, RVec};
use spear_plugin_api as api;
use spear_plugin_api::native::ffi::{FfiInstanceStats, FfiOutcome, FfiRequest, FfiTarget};
use spear_plugin_api::native::{
    ABI_VERSION, AutoscalerBox, ExecutorBox, FfiBatchOp, FfiCheck, FfiKv, FfiSink, FfiSink_TO,
    ReclaimerBox, SpearPluginModuleRef, StorageBox, StrategyBox,
};

use crate::error::{CallFailure, Error, Result};
use crate::instance::{AutoscalerInstance, CallResult, ReclaimerInstance, StrategyInstance};

/// A loaded native library.
#[derive(Clone, Copy)]
pub struct NativeFactory {
    module: SpearPluginModuleRef,
}

impl std::fmt::Debug for NativeFactory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NativeFactory")
    }
}

static COPIES: AtomicU64 = AtomicU64::new(0);

/// A directory only this process can write (mode 0700, unpredictable name) for library copies.
fn copy_dir(path: &Path) -> Result<&'static Path> {
    static DIR: OnceLock<std::io::Result<tempfile::TempDir>> = OnceLock::new();
    match DIR.get_or_init(|| tempfile::Builder::new().prefix("spear-native-").tempdir()) {
        Ok(dir) => Ok(dir.path()),
        Err(e) => Err(Error::refused(
            path,
            format!("cannot create a private directory for native libraries: {e}"),
        )),
    }
}

impl NativeFactory {
    /// Load the library held in `bytes` (read from `path`, hashing to `sha256`) through a private
    /// copy of exactly those bytes, and check its ABI.
    pub fn load(path: &Path, bytes: &[u8], sha256: &str) -> Result<Self> {
        let dir = copy_dir(path)?;
        let n = COPIES.fetch_add(1, Ordering::Relaxed);
        let copy = dir.join(format!("{}-{n}.so", &sha256[..16.min(sha256.len())]));
        std::fs::write(&copy, bytes).map_err(|e| Error::Io {
            file: copy.clone(),
            source: e,
        })?;
        let header = lib_header_from_path(&copy).map_err(|e| library_error(path, e));
        // The loader has mapped (or refused) the copy; the file itself is no longer needed.
        let _ = std::fs::remove_file(&copy);
        let module = header?
            .init_root_module::<SpearPluginModuleRef>()
            .map_err(|e| library_error(path, e))?;
        Ok(Self { module })
    }

    /// The plugin module of a crate linked into this process (a built-in).
    pub fn from_module(module: SpearPluginModuleRef) -> Self {
        Self { module }
    }

    /// The plugin kind the library declares.
    pub fn kind(&self) -> api::PluginKind {
        self.module.kind().into()
    }

    /// A fresh strategy instance.
    pub fn strategy(&self) -> CallResult<Box<dyn StrategyInstance>> {
        let new =
            self.module.new_strategy().into_option().ok_or_else(|| {
                CallFailure::Invalid("library has no strategy constructor".into())
            })?;
        Ok(Box::new(NativeStrategy(ffi(new())?)))
    }

    /// A fresh reclamation-policy instance.
    pub fn reclaimer(&self) -> CallResult<Box<dyn ReclaimerInstance>> {
        let new =
            self.module.new_reclaimer().into_option().ok_or_else(|| {
                CallFailure::Invalid("library has no reclaimer constructor".into())
            })?;
        Ok(Box::new(NativeReclaimer(ffi(new())?)))
    }

    /// A fresh autoscaler instance.
    pub fn autoscaler(&self) -> CallResult<Box<dyn AutoscalerInstance>> {
        let new =
            self.module.new_autoscaler().into_option().ok_or_else(|| {
                CallFailure::Invalid("library has no autoscaler constructor".into())
            })?;
        Ok(Box::new(NativeAutoscaler(ffi(new())?)))
    }

    /// A fresh executor (for Spearlet hosts).
    pub fn executor(&self) -> CallResult<NativeExecutor> {
        let new =
            self.module.new_executor().into_option().ok_or_else(|| {
                CallFailure::Invalid("library has no executor constructor".into())
            })?;
        Ok(NativeExecutor(ffi(new())?))
    }

    /// A fresh storage backend (for SMS and Spearlet hosts).
    pub fn storage(&self) -> CallResult<NativeStorage> {
        let new = self
            .module
            .new_storage()
            .into_option()
            .ok_or_else(|| CallFailure::Invalid("library has no storage constructor".into()))?;
        Ok(NativeStorage(ffi(new())?))
    }
}

fn library_error(path: &Path, error: LibraryError) -> Error {
    match error {
        LibraryError::IncompatibleVersionNumber {
            expected_version,
            actual_version,
            ..
        } => Error::AbiMismatch {
            file: path.into(),
            expected: expected_version.to_string(),
            found: actual_version.to_string(),
        },
        LibraryError::GetSymbolError { .. } => Error::refused(
            path,
            "an ELF file without a SPEAR plugin root module (not built with spear-plugin-api's \
             export_native_* macros)",
        ),
        LibraryError::OpenError { err, .. } => {
            Error::refused(path, format!("cannot be loaded as a shared library: {err}"))
        }
        LibraryError::AbiInstability(e) => Error::refused(
            path,
            format!(
                "its plugin ABI layout differs from this host's (ABI {ABI_VERSION}); rebuild it \
                 against this host's spear-plugin-api: {}",
                first_lines(&e.to_string(), 6)
            ),
        ),
        LibraryError::InvalidAbiHeader(h) => Error::refused(
            path,
            format!("built with an incompatible abi_stable ({h:?})"),
        ),
        other => Error::refused(path, first_lines(&other.to_string(), 6)),
    }
}

fn first_lines(text: &str, n: usize) -> String {
    text.lines().take(n).collect::<Vec<_>>().join(" ")
}

fn ffi<T>(result: RResult<T, RString>) -> CallResult<T> {
    match result {
        RResult::ROk(v) => Ok(v),
        RResult::RErr(e) if e.starts_with("plugin panicked") => {
            Err(CallFailure::Trap(e.into_string()))
        }
        RResult::RErr(e) => Err(CallFailure::Plugin(e.into_string())),
    }
}

/// A panic is a failure like a trap; an error value from `upsert` and friends cannot happen
/// (their plain signatures have none), so every error there is a panic.
fn ffi_trap<T>(result: RResult<T, RString>) -> CallResult<T> {
    ffi(result).map_err(|e| match e {
        CallFailure::Plugin(text) => CallFailure::Trap(text),
        other => other,
    })
}

struct NativeStrategy(StrategyBox);

impl StrategyInstance for NativeStrategy {
    fn info(&mut self) -> CallResult<api::PluginInfo> {
        ffi_trap(self.0.info()).map(|i| (&i).into())
    }
    fn configure(&mut self, config: &str) -> CallResult<()> {
        ffi(self.0.configure(config.into()))
    }
    fn upsert(&mut self, targets: &[api::Target]) -> CallResult<()> {
        let targets: RVec<FfiTarget> = targets.iter().map(Into::into).collect();
        ffi_trap(self.0.upsert(targets))
    }
    fn remove(&mut self, ids: &[u64]) -> CallResult<()> {
        ffi_trap(self.0.remove(ids.into()))
    }
    fn place(&mut self, requests: &[api::Request]) -> CallResult<Vec<api::Decision>> {
        let requests: RVec<FfiRequest> = requests.iter().map(Into::into).collect();
        ffi_trap(self.0.place(requests)).map(|d| d.into_iter().map(Into::into).collect())
    }
    fn observe(&mut self, outcomes: &[api::Outcome]) -> CallResult<()> {
        let outcomes: Vec<FfiOutcome> = outcomes.iter().map(|o| (*o).into()).collect();
        ffi_trap(self.0.observe(outcomes.as_slice().into()))
    }
    fn save_state(&mut self) -> CallResult<Vec<u8>> {
        ffi_trap(self.0.save_state()).map(Into::into)
    }
    fn restore_state(&mut self, state: &[u8]) -> CallResult<()> {
        ffi(self.0.restore_state(state.into()))
    }
}

struct NativeReclaimer(ReclaimerBox);

impl ReclaimerInstance for NativeReclaimer {
    fn info(&mut self) -> CallResult<api::PluginInfo> {
        ffi_trap(self.0.info()).map(|i| (&i).into())
    }
    fn configure(&mut self, config: &str) -> CallResult<()> {
        ffi(self.0.configure(config.into()))
    }
    fn select(
        &mut self,
        instances: &[api::InstanceStats],
        node: &api::NodePressure,
    ) -> CallResult<Vec<u64>> {
        let instances: RVec<FfiInstanceStats> = instances.iter().map(Into::into).collect();
        ffi_trap(self.0.select(instances, (*node).into())).map(Into::into)
    }
    fn save_state(&mut self) -> CallResult<Vec<u8>> {
        ffi_trap(self.0.save_state()).map(Into::into)
    }
    fn restore_state(&mut self, state: &[u8]) -> CallResult<()> {
        ffi(self.0.restore_state(state.into()))
    }
}

struct NativeAutoscaler(AutoscalerBox);

impl AutoscalerInstance for NativeAutoscaler {
    fn info(&mut self) -> CallResult<api::PluginInfo> {
        ffi_trap(self.0.info()).map(|i| (&i).into())
    }
    fn configure(&mut self, config: &str) -> CallResult<()> {
        ffi(self.0.configure(config.into()))
    }
    fn decide(&mut self, view: &api::ScaleView) -> CallResult<api::ScaleDecision> {
        let view = serde_json::to_string(view)
            .map_err(|e| CallFailure::Invalid(format!("cannot encode the view: {e}")))?;
        let answer = ffi(self.0.decide(view.as_str().into()))?;
        serde_json::from_str(answer.as_str())
            .map_err(|e| CallFailure::Invalid(format!("`decide` returned malformed JSON: {e}")))
    }
    fn save_state(&mut self) -> CallResult<Vec<u8>> {
        ffi_trap(self.0.save_state()).map(Into::into)
    }
    fn restore_state(&mut self, state: &[u8]) -> CallResult<()> {
        ffi(self.0.restore_state(state.into()))
    }
}

/// A write's failure as the trait's error: a panic in the middle of a write may have left it
/// applied (sent, committed), so it is reported as of unknown outcome
/// ([`OUTCOME_UNKNOWN`](api::storage::OUTCOME_UNKNOWN)); anything else as
/// [`plugin_error`] does.
fn write_error(failure: CallFailure) -> api::PluginError {
    match failure {
        CallFailure::Trap(text) => {
            api::PluginError(format!("{}{text}", api::storage::OUTCOME_UNKNOWN))
        }
        other => plugin_error(other),
    }
}

/// A call's failure as the trait's error: the plugin's own error as it wrote it (a contract's
/// markers, such as a storage backend's `OUTCOME_UNKNOWN`, pass through), anything else described.
fn plugin_error(failure: CallFailure) -> api::PluginError {
    match failure {
        CallFailure::Plugin(text) => api::PluginError(text),
        other => api::PluginError(other.to_string()),
    }
}

fn json<T: serde::de::DeserializeOwned>(text: RString) -> std::result::Result<T, api::PluginError> {
    serde_json::from_str(&text).map_err(|e| api::PluginError(format!("malformed reply: {e}")))
}

/// A native executor, usable through the plain [`api::Executor`] trait. Calls may block.
pub struct NativeExecutor(ExecutorBox);

impl api::Executor for NativeExecutor {
    fn info(&self) -> api::PluginInfo {
        match ffi(self.0.info()) {
            Ok(i) => (&i).into(),
            Err(e) => api::PluginInfo {
                name: "unknown".into(),
                version: "0.0.0".into(),
                kind: api::PluginKind::Executor,
                description: e.to_string(),
                config_schema: "{}".into(),
            },
        }
    }
    fn capabilities(&self) -> api::executor::Capabilities {
        ffi(self.0.capabilities())
            .map_err(plugin_error)
            .and_then(json)
            .unwrap_or_default()
    }
    fn configure(&mut self, config: &str) -> std::result::Result<(), api::PluginError> {
        ffi(self.0.configure(config.into())).map_err(plugin_error)
    }
    fn start(
        &self,
        spec: &api::executor::ExecSpec,
    ) -> std::result::Result<String, api::PluginError> {
        let spec = serde_json::to_string(spec).map_err(api::PluginError::new)?;
        ffi(self.0.start(spec.as_str().into()))
            .map(RString::into_string)
            .map_err(plugin_error)
    }
    fn wait(
        &self,
        handle: &str,
        timeout_ms: u64,
    ) -> std::result::Result<Option<api::executor::ExecResult>, api::PluginError> {
        ffi(self.0.wait(handle.into(), timeout_ms))
            .map_err(plugin_error)
            .and_then(json)
    }
    fn signal(&self, handle: &str, signal: i32) -> std::result::Result<(), api::PluginError> {
        ffi(self.0.signal(handle.into(), signal)).map_err(plugin_error)
    }
    fn stop(&self, handle: &str, grace_ms: u64) -> std::result::Result<(), api::PluginError> {
        ffi(self.0.stop(handle.into(), grace_ms)).map_err(plugin_error)
    }
    fn inspect(
        &self,
        handle: &str,
    ) -> std::result::Result<api::executor::ExecState, api::PluginError> {
        ffi(self.0.inspect(handle.into()))
            .map_err(plugin_error)
            .and_then(json)
    }
    fn stats(
        &self,
        handle: &str,
    ) -> std::result::Result<api::executor::ExecStats, api::PluginError> {
        ffi(self.0.stats(handle.into()))
            .map_err(plugin_error)
            .and_then(json)
    }
    fn recover(&self, handle: &str) -> std::result::Result<bool, api::PluginError> {
        ffi(self.0.recover(handle.into())).map_err(plugin_error)
    }
    fn destroy(&self, handle: &str) -> std::result::Result<(), api::PluginError> {
        ffi(self.0.destroy(handle.into())).map_err(plugin_error)
    }
    fn start_instance(
        &self,
        spec: &api::executor::InstanceSpec,
    ) -> std::result::Result<String, api::PluginError> {
        let spec = serde_json::to_string(spec).map_err(api::PluginError::new)?;
        ffi(self.0.start_instance(spec.as_str().into()))
            .map(RString::into_string)
            .map_err(plugin_error)
    }
    fn invoke(
        &self,
        handle: &str,
        function: &str,
        payload: &[u8],
        timeout_ms: u64,
    ) -> std::result::Result<Vec<u8>, api::executor::InvokeFailure> {
        match self
            .0
            .invoke(handle.into(), function.into(), payload.into(), timeout_ms)
        {
            RResult::ROk(out) => Ok(out.into_vec()),
            RResult::RErr(failure) => Err(failure.into()),
        }
    }
    fn stop_instance(&self, handle: &str) -> std::result::Result<(), api::PluginError> {
        ffi(self.0.stop_instance(handle.into())).map_err(plugin_error)
    }
    fn invoke_stream(
        &self,
        handle: &str,
        function: &str,
        payload: &[u8],
        timeout_ms: u64,
        sink: api::executor::Sink<'_>,
    ) -> std::result::Result<Vec<u8>, api::executor::InvokeFailure> {
        let mut lent = LentSink(sink);
        let sink = FfiSink_TO::from_ptr(RMut::new(&mut lent), TD_Opaque);
        match self.0.invoke_stream(
            handle.into(),
            function.into(),
            payload.into(),
            timeout_ms,
            sink,
        ) {
            RResult::ROk(out) => Ok(out.into_vec()),
            RResult::RErr(failure) => Err(failure.into()),
        }
    }
}

/// The host's sink, lent to a native executor for one streaming invocation. It is called from
/// the plugin's side: a panic in it must not unwind across the boundary, so it is caught and
/// taken as "no more".
struct LentSink<'a>(api::executor::Sink<'a>);

impl FfiSink for LentSink<'_> {
    fn piece(&mut self, bytes: RSlice<'_, u8>) -> bool {
        let sink = &mut self.0;
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| sink(bytes.as_slice())))
            .unwrap_or(false)
    }
}

/// A native storage backend, usable through the plain [`api::StorageBackend`] trait. Calls block.
pub struct NativeStorage(StorageBox);

impl api::StorageBackend for NativeStorage {
    fn info(&self) -> api::PluginInfo {
        match ffi(self.0.info()) {
            Ok(i) => (&i).into(),
            Err(e) => api::PluginInfo {
                name: "unknown".into(),
                version: "0.0.0".into(),
                kind: api::PluginKind::StorageBackend,
                description: e.to_string(),
                config_schema: "{}".into(),
            },
        }
    }
    fn open(&mut self, config: &str) -> std::result::Result<(), api::PluginError> {
        ffi(self.0.open(config.into())).map_err(plugin_error)
    }
    fn get(&self, key: &[u8]) -> std::result::Result<Option<Vec<u8>>, api::PluginError> {
        ffi(self.0.get(key.into()))
            .map(|v| v.into_option().map(Into::into))
            .map_err(plugin_error)
    }
    fn put(&self, key: &[u8], value: &[u8]) -> std::result::Result<(), api::PluginError> {
        ffi(self.0.put(key.into(), value.into())).map_err(write_error)
    }
    fn delete(&self, key: &[u8]) -> std::result::Result<bool, api::PluginError> {
        ffi(self.0.delete(key.into())).map_err(write_error)
    }
    fn scan(
        &self,
        prefix: &[u8],
        start_after: Option<&[u8]>,
        limit: u32,
    ) -> std::result::Result<Vec<api::storage::KeyValue>, api::PluginError> {
        let start_after = optional(start_after);
        ffi(self.0.scan(prefix.into(), start_after, limit))
            .map(|rows| {
                rows.into_iter()
                    .map(|FfiKv { key, value }| (key.into(), value.into()))
                    .collect()
            })
            .map_err(plugin_error)
    }
    fn batch(&self, ops: &[api::storage::BatchOp]) -> std::result::Result<bool, api::PluginError> {
        let ops: RVec<FfiBatchOp> = ops
            .iter()
            .map(|op| match op {
                api::storage::BatchOp::Put { key, value } => FfiBatchOp::Put(FfiKv {
                    key: key.as_slice().into(),
                    value: value.as_slice().into(),
                }),
                api::storage::BatchOp::Delete { key } => FfiBatchOp::Delete(key.as_slice().into()),
                api::storage::BatchOp::Check { key, value } => FfiBatchOp::Check(FfiCheck {
                    key: key.as_slice().into(),
                    value: value.as_deref().map(RVec::from).into(),
                }),
            })
            .collect();
        ffi(self.0.batch(ops)).map_err(write_error)
    }
    fn compare_and_swap(
        &self,
        key: &[u8],
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> std::result::Result<bool, api::PluginError> {
        ffi(self
            .0
            .compare_and_swap(key.into(), optional(expected), optional(new)))
        .map_err(write_error)
    }
    fn limits(&self) -> api::storage::BatchLimits {
        // A library that cannot say (its call fails) is taken as unlimited: its batches then
        // fail as they would have, with the backend's own error.
        ffi(self.0.limits()).map_or(api::storage::BatchLimits::UNLIMITED, |l| {
            api::storage::BatchLimits {
                max_ops: l.max_ops,
                max_bytes: l.max_bytes,
            }
        })
    }
}

fn optional(v: Option<&[u8]>) -> ROption<abi_stable::std_types::RSlice<'_, u8>> {
    match v {
        Some(s) => ROption::RSome(s.into()),
        None => ROption::RNone,
    }
}

/// The ABI version this host speaks.
pub fn host_abi_version() -> &'static str {
    ABI_VERSION
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_in_a_write_is_of_unknown_outcome_and_an_error_value_is_the_plugins_own() {
        let panic = write_error(CallFailure::Trap("plugin panicked: boom".into()));
        assert!(
            panic.0.starts_with(api::storage::OUTCOME_UNKNOWN) && panic.0.contains("boom"),
            "{panic:?}"
        );
        let refused = write_error(CallFailure::Plugin("disk full".into()));
        assert_eq!(refused.0, "disk full");
        // A read's panic is a plain failure: nothing was written.
        let read = plugin_error(CallFailure::Trap("plugin panicked: boom".into()));
        assert!(
            !read.0.starts_with(api::storage::OUTCOME_UNKNOWN),
            "{read:?}"
        );
    }
}
