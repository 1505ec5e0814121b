//! The native plugin ABI: abi_stable trait objects behind one root module, checked at load time.
//!
//! A native plugin is a `cdylib` exporting a [`SpearPluginModule`] through one of the export macros
//! ([`export_native_strategy!`](crate::export_native_strategy),
//! [`export_native_reclaimer!`](crate::export_native_reclaimer),
//! [`export_native_executor!`](crate::export_native_executor),
//! [`export_native_storage!`](crate::export_native_storage),
//! [`export_native_autoscaler!`](crate::export_native_autoscaler)). The host refuses a library whose
//! [`ABI_VERSION`] major differs from its own, or whose types' layouts differ, naming both sides.
//!
//! Panics never cross the boundary: every call is wrapped in `catch_unwind` and a panic comes back to
//! the host as an error carrying the panic message.
//!
//! Executor specs and results, and autoscaler views and decisions, cross as JSON (they are not on a
//! hot path and change often); strategy,
//! reclaimer and storage calls cross as `#[repr(C)]` values.

#![expect(
    non_local_definitions,
    reason = "abi_stable's #[sabi_trait] expands to impls inside a const block"
)]

pub mod ffi;
mod glue;

pub use abi_stable;
pub use glue::{AutoscalerGlue, ExecutorGlue, ReclaimerGlue, StorageGlue, StrategyGlue, guard};

use abi_stable::{
    StableAbi, declare_root_module_statics,
    library::RootModule,
    sabi_trait,
    sabi_types::RMut,
    sabi_types::VersionStrings,
    std_types::{RBox, ROption, RResult, RSlice, RStr, RString, RVec},
};

use ffi::{
    FfiDecision, FfiInstanceStats, FfiNodePressure, FfiOutcome, FfiPluginInfo, FfiRequest,
    FfiTarget,
};

/// The version of the native ABI. A host accepts a library with the same major version (for `0.x`,
/// the same minor) and refuses any other, naming both.
#[cfg(not(feature = "abi-mismatch-fixture"))]
pub const ABI_VERSION: &str = "3.0.0";

/// The version of the native ABI (test fixture build: deliberately incompatible).
#[cfg(feature = "abi-mismatch-fixture")]
pub const ABI_VERSION: &str = "4.0.0";

/// A native scheduling strategy as seen across the FFI boundary.
#[sabi_trait]
pub trait FfiStrategy: Send {
    /// See [`crate::Strategy::info`].
    fn info(&self) -> RResult<FfiPluginInfo, RString>;
    /// See [`crate::Strategy::configure`].
    fn configure(&mut self, config: RStr<'_>) -> RResult<(), RString>;
    /// See [`crate::Strategy::upsert`].
    fn upsert(&mut self, targets: RVec<FfiTarget>) -> RResult<(), RString>;
    /// See [`crate::Strategy::remove`].
    fn remove(&mut self, ids: RSlice<'_, u64>) -> RResult<(), RString>;
    /// See [`crate::Strategy::place`].
    fn place(&mut self, requests: RVec<FfiRequest>) -> RResult<RVec<FfiDecision>, RString>;
    /// See [`crate::Strategy::observe`].
    fn observe(&mut self, outcomes: RSlice<'_, FfiOutcome>) -> RResult<(), RString>;
    /// See [`crate::Strategy::save_state`].
    fn save_state(&self) -> RResult<RVec<u8>, RString>;
    /// See [`crate::Strategy::restore_state`].
    #[sabi(last_prefix_field)]
    fn restore_state(&mut self, state: RSlice<'_, u8>) -> RResult<(), RString>;
}

/// A native reclamation policy as seen across the FFI boundary.
#[sabi_trait]
pub trait FfiReclaimer: Send {
    /// See [`crate::Reclaimer::info`].
    fn info(&self) -> RResult<FfiPluginInfo, RString>;
    /// See [`crate::Reclaimer::configure`].
    fn configure(&mut self, config: RStr<'_>) -> RResult<(), RString>;
    /// See [`crate::Reclaimer::select`].
    fn select(
        &mut self,
        instances: RVec<FfiInstanceStats>,
        node: FfiNodePressure,
    ) -> RResult<RVec<u64>, RString>;
    /// See [`crate::Reclaimer::save_state`].
    fn save_state(&self) -> RResult<RVec<u8>, RString>;
    /// See [`crate::Reclaimer::restore_state`].
    #[sabi(last_prefix_field)]
    fn restore_state(&mut self, state: RSlice<'_, u8>) -> RResult<(), RString>;
}

/// A native executor as seen across the FFI boundary. Specs, results and states cross as JSON of the
/// types in [`crate::executor`].
#[sabi_trait]
pub trait FfiExecutor: Send + Sync {
    /// See [`crate::Executor::info`].
    fn info(&self) -> RResult<FfiPluginInfo, RString>;
    /// JSON of [`crate::executor::Capabilities`].
    fn capabilities(&self) -> RResult<RString, RString>;
    /// See [`crate::Executor::configure`].
    fn configure(&mut self, config: RStr<'_>) -> RResult<(), RString>;
    /// `spec` is JSON of [`crate::executor::ExecSpec`]; returns the handle.
    fn start(&self, spec: RStr<'_>) -> RResult<RString, RString>;
    /// JSON of `Option<ExecResult>`.
    fn wait(&self, handle: RStr<'_>, timeout_ms: u64) -> RResult<RString, RString>;
    /// See [`crate::Executor::signal`].
    fn signal(&self, handle: RStr<'_>, signal: i32) -> RResult<(), RString>;
    /// See [`crate::Executor::stop`].
    fn stop(&self, handle: RStr<'_>, grace_ms: u64) -> RResult<(), RString>;
    /// JSON of [`crate::executor::ExecState`].
    fn inspect(&self, handle: RStr<'_>) -> RResult<RString, RString>;
    /// JSON of [`crate::executor::ExecStats`].
    fn stats(&self, handle: RStr<'_>) -> RResult<RString, RString>;
    /// See [`crate::Executor::recover`].
    fn recover(&self, handle: RStr<'_>) -> RResult<bool, RString>;
    /// See [`crate::Executor::destroy`].
    #[sabi(last_prefix_field)]
    fn destroy(&self, handle: RStr<'_>) -> RResult<(), RString>;
    /// `spec` is JSON of [`crate::executor::InstanceSpec`]; returns the handle. (Added in ABI
    /// 2.1: a 2.0 library has none, and answers with this default.)
    fn start_instance(&self, spec: RStr<'_>) -> RResult<RString, RString> {
        let _ = spec;
        RResult::RErr("this executor keeps no long-lived instances (ABI 2.0)".into())
    }
    /// See [`crate::Executor::invoke`].
    fn invoke(
        &self,
        handle: RStr<'_>,
        function: RStr<'_>,
        payload: RSlice<'_, u8>,
        timeout_ms: u64,
    ) -> RResult<RVec<u8>, FfiInvokeFailure> {
        let _ = (handle, function, payload, timeout_ms);
        RResult::RErr(FfiInvokeFailure {
            kind: FfiInvokeFailure::REFUSED,
            message: "this executor keeps no long-lived instances (ABI 2.0)".into(),
        })
    }
    /// See [`crate::Executor::stop_instance`].
    fn stop_instance(&self, handle: RStr<'_>) -> RResult<(), RString> {
        let _ = handle;
        RResult::RErr("this executor keeps no long-lived instances (ABI 2.0)".into())
    }
    /// See [`crate::Executor::invoke_stream`]. (Added in ABI 2.2.)
    fn invoke_stream(
        &self,
        handle: RStr<'_>,
        function: RStr<'_>,
        payload: RSlice<'_, u8>,
        timeout_ms: u64,
        sink: FfiSink_TO<'_, RMut<'_, ()>>,
    ) -> RResult<RVec<u8>, FfiInvokeFailure> {
        let _ = sink;
        self.invoke(handle, function, payload, timeout_ms)
    }
}

/// Where an executor hands the pieces of a streaming invocation's output (the host's side,
/// lent for one call of [`FfiExecutor::invoke_stream`]).
#[sabi_trait]
pub trait FfiSink: Send + Sync {
    /// One piece; `false`: the caller wants no more.
    #[sabi(last_prefix_field)]
    fn piece(&mut self, bytes: RSlice<'_, u8>) -> bool;
}

/// An [`InvokeFailure`](crate::executor::InvokeFailure) crossing the boundary.
#[repr(C)]
#[derive(StableAbi, Debug, Clone)]
pub struct FfiInvokeFailure {
    /// One of the constants below.
    pub kind: u8,
    /// Its message.
    pub message: RString,
}

impl FfiInvokeFailure {
    /// [`InvokeFailure::Function`](crate::executor::InvokeFailure::Function).
    pub const FUNCTION: u8 = 0;
    /// [`InvokeFailure::Refused`](crate::executor::InvokeFailure::Refused).
    pub const REFUSED: u8 = 1;
    /// [`InvokeFailure::Deadline`](crate::executor::InvokeFailure::Deadline).
    pub const DEADLINE: u8 = 2;
    /// [`InvokeFailure::Lost`](crate::executor::InvokeFailure::Lost) (and any kind unknown).
    pub const LOST: u8 = 3;
}

impl From<crate::executor::InvokeFailure> for FfiInvokeFailure {
    fn from(f: crate::executor::InvokeFailure) -> Self {
        use crate::executor::InvokeFailure as F;
        let (kind, message) = match f {
            F::Function(m) => (Self::FUNCTION, m),
            F::Refused(m) => (Self::REFUSED, m),
            F::Deadline(m) => (Self::DEADLINE, m),
            F::Lost(m) => (Self::LOST, m),
        };
        Self {
            kind,
            message: message.into(),
        }
    }
}

impl From<FfiInvokeFailure> for crate::executor::InvokeFailure {
    fn from(f: FfiInvokeFailure) -> Self {
        let message = f.message.into_string();
        match f.kind {
            FfiInvokeFailure::FUNCTION => Self::Function(message),
            FfiInvokeFailure::REFUSED => Self::Refused(message),
            FfiInvokeFailure::DEADLINE => Self::Deadline(message),
            _ => Self::Lost(message),
        }
    }
}

/// A key/value pair crossing the boundary.
#[repr(C)]
#[derive(StableAbi, Debug, Clone)]
pub struct FfiKv {
    /// Key.
    pub key: RVec<u8>,
    /// Value.
    pub value: RVec<u8>,
}

/// One write of an atomic batch crossing the boundary.
#[repr(u8)]
#[derive(StableAbi, Debug, Clone)]
pub enum FfiBatchOp {
    /// Put a value.
    Put(FfiKv),
    /// Delete a key.
    Delete(RVec<u8>),
    /// Apply the batch only if the key holds the value (`RNone`: is absent).
    Check(FfiCheck),
}

/// A [`crate::storage::BatchOp::Check`] crossing the boundary.
#[repr(C)]
#[derive(StableAbi, Debug, Clone)]
pub struct FfiCheck {
    /// Key.
    pub key: RVec<u8>,
    /// The value it must hold, or `RNone` for absent.
    pub value: ROption<RVec<u8>>,
}

/// [`crate::storage::BatchLimits`] crossing the boundary.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, Copy)]
pub struct FfiBatchLimits {
    /// Operations in one batch.
    pub max_ops: u32,
    /// Bytes of keys and values in one batch.
    pub max_bytes: u64,
}

/// A native storage backend as seen across the FFI boundary.
#[sabi_trait]
pub trait FfiStorage: Send + Sync {
    /// See [`crate::StorageBackend::info`].
    fn info(&self) -> RResult<FfiPluginInfo, RString>;
    /// See [`crate::StorageBackend::open`].
    fn open(&mut self, config: RStr<'_>) -> RResult<(), RString>;
    /// See [`crate::StorageBackend::get`].
    fn get(&self, key: RSlice<'_, u8>) -> RResult<ROption<RVec<u8>>, RString>;
    /// See [`crate::StorageBackend::put`].
    fn put(&self, key: RSlice<'_, u8>, value: RSlice<'_, u8>) -> RResult<(), RString>;
    /// See [`crate::StorageBackend::delete`].
    fn delete(&self, key: RSlice<'_, u8>) -> RResult<bool, RString>;
    /// See [`crate::StorageBackend::scan`].
    fn scan(
        &self,
        prefix: RSlice<'_, u8>,
        start_after: ROption<RSlice<'_, u8>>,
        limit: u32,
    ) -> RResult<RVec<FfiKv>, RString>;
    /// See [`crate::StorageBackend::batch`].
    fn batch(&self, ops: RVec<FfiBatchOp>) -> RResult<bool, RString>;
    /// See [`crate::StorageBackend::compare_and_swap`].
    fn compare_and_swap(
        &self,
        key: RSlice<'_, u8>,
        expected: ROption<RSlice<'_, u8>>,
        new: ROption<RSlice<'_, u8>>,
    ) -> RResult<bool, RString>;
    /// See [`crate::StorageBackend::limits`].
    #[sabi(last_prefix_field)]
    fn limits(&self) -> RResult<FfiBatchLimits, RString>;
}

/// A native autoscaler as seen across the FFI boundary. Views and decisions cross as JSON of
/// [`crate::ScaleView`] and [`crate::ScaleDecision`]. (Added in ABI 3.0.)
#[sabi_trait]
pub trait FfiAutoscaler: Send {
    /// See [`crate::Autoscaler::info`].
    fn info(&self) -> RResult<FfiPluginInfo, RString>;
    /// See [`crate::Autoscaler::configure`].
    fn configure(&mut self, config: RStr<'_>) -> RResult<(), RString>;
    /// `view` is JSON of [`crate::ScaleView`]; returns JSON of [`crate::ScaleDecision`].
    fn decide(&mut self, view: RStr<'_>) -> RResult<RString, RString>;
    /// See [`crate::Autoscaler::save_state`].
    fn save_state(&self) -> RResult<RVec<u8>, RString>;
    /// See [`crate::Autoscaler::restore_state`].
    #[sabi(last_prefix_field)]
    fn restore_state(&mut self, state: RSlice<'_, u8>) -> RResult<(), RString>;
}

/// A boxed native strategy.
pub type StrategyBox = FfiStrategy_TO<'static, RBox<()>>;
/// A boxed native reclamation policy.
pub type ReclaimerBox = FfiReclaimer_TO<'static, RBox<()>>;
/// A boxed native executor.
pub type ExecutorBox = FfiExecutor_TO<'static, RBox<()>>;
/// A boxed native storage backend.
pub type StorageBox = FfiStorage_TO<'static, RBox<()>>;
/// A boxed native autoscaler.
pub type AutoscalerBox = FfiAutoscaler_TO<'static, RBox<()>>;

/// The root module every native SPEAR plugin exports. Exactly one constructor matches `kind`.
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = SpearPluginModuleRef)))]
#[sabi(missing_field(panic))]
pub struct SpearPluginModule {
    /// What the plugin is.
    pub kind: ffi::FfiPluginKind,
    /// Constructor of a strategy (when `kind` is a scheduling strategy).
    pub new_strategy: ROption<extern "C" fn() -> RResult<StrategyBox, RString>>,
    /// Constructor of a reclamation policy.
    pub new_reclaimer: ROption<extern "C" fn() -> RResult<ReclaimerBox, RString>>,
    /// Constructor of an executor.
    pub new_executor: ROption<extern "C" fn() -> RResult<ExecutorBox, RString>>,
    /// Constructor of a storage backend.
    pub new_storage: ROption<extern "C" fn() -> RResult<StorageBox, RString>>,
    /// Constructor of an autoscaler (added in ABI 3.0).
    #[sabi(last_prefix_field)]
    pub new_autoscaler: ROption<extern "C" fn() -> RResult<AutoscalerBox, RString>>,
}

impl RootModule for SpearPluginModuleRef {
    declare_root_module_statics! {SpearPluginModuleRef}
    const BASE_NAME: &'static str = "spear_plugin";
    const NAME: &'static str = "spear_plugin";
    const VERSION_STRINGS: VersionStrings = VersionStrings::new(ABI_VERSION);
}

/// The [`SpearPluginModuleRef`] of a plugin type implementing `Default`, built in this process:
/// what the export macros put in a shared library, and what a host that links a plugin's crate
/// registers as a built-in (no library file). `role` is `strategy`, `reclaimer`, `executor`,
/// `storage` or `autoscaler`. Each use leaks one small module (hosts build each built-in once).
///
/// ```ignore
/// #[cfg(not(target_family = "wasm"))]
/// pub fn native_module() -> spear_plugin_api::native::SpearPluginModuleRef {
///     spear_plugin_api::native_module!(strategy, MyStrategy)
/// }
/// ```
#[macro_export]
macro_rules! native_module {
    (strategy, $ty:ty) => {
        $crate::__native_module!(
            SchedulingStrategy,
            new_strategy,
            StrategyBox,
            StrategyGlue,
            $ty
        )
    };
    (reclaimer, $ty:ty) => {
        $crate::__native_module!(
            ReclamationPolicy,
            new_reclaimer,
            ReclaimerBox,
            ReclaimerGlue,
            $ty
        )
    };
    (executor, $ty:ty) => {
        $crate::__native_module!(Executor, new_executor, ExecutorBox, ExecutorGlue, $ty)
    };
    (storage, $ty:ty) => {
        $crate::__native_module!(StorageBackend, new_storage, StorageBox, StorageGlue, $ty)
    };
    (autoscaler, $ty:ty) => {
        $crate::__native_module!(
            Autoscaler,
            new_autoscaler,
            AutoscalerBox,
            AutoscalerGlue,
            $ty
        )
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __native_module {
    ($kind:ident, $ctor:ident, $boxed:ident, $glue:ident, $ty:ty) => {{
        use $crate::native::abi_stable::prefix_type::PrefixTypeTrait;
        use $crate::native::abi_stable::std_types::{ROption, RResult, RString};
        extern "C" fn $ctor() -> RResult<$crate::native::$boxed, RString> {
            $crate::native::guard(|| {
                $crate::native::$boxed::from_value(
                    $crate::native::$glue(<$ty as ::core::default::Default>::default()),
                    $crate::native::abi_stable::sabi_trait::TD_Opaque,
                )
            })
        }
        let mut module = $crate::native::SpearPluginModule {
            kind: $crate::native::ffi::FfiPluginKind::$kind,
            new_strategy: ROption::RNone,
            new_reclaimer: ROption::RNone,
            new_executor: ROption::RNone,
            new_storage: ROption::RNone,
            new_autoscaler: ROption::RNone,
        };
        module.$ctor = ROption::RSome($ctor);
        module.leak_into_prefix()
    }};
}

/// Export a [`Strategy`](crate::Strategy) implementing `Default` as this library's native plugin.
///
/// ```ignore
/// #[cfg(not(target_family = "wasm"))]
/// spear_plugin_api::export_native_strategy!(MyStrategy);
/// ```
#[macro_export]
macro_rules! export_native_strategy {
    ($ty:ty) => {
        #[::abi_stable::export_root_module]
        fn spear_native_root_module() -> $crate::native::SpearPluginModuleRef {
            $crate::native_module!(strategy, $ty)
        }
    };
}

/// Export a [`Reclaimer`](crate::Reclaimer) implementing `Default` as this library's native plugin.
#[macro_export]
macro_rules! export_native_reclaimer {
    ($ty:ty) => {
        #[::abi_stable::export_root_module]
        fn spear_native_root_module() -> $crate::native::SpearPluginModuleRef {
            $crate::native_module!(reclaimer, $ty)
        }
    };
}

/// Export an [`Executor`](crate::Executor) implementing `Default` as this library's native plugin.
#[macro_export]
macro_rules! export_native_executor {
    ($ty:ty) => {
        #[::abi_stable::export_root_module]
        fn spear_native_root_module() -> $crate::native::SpearPluginModuleRef {
            $crate::native_module!(executor, $ty)
        }
    };
}

/// Export a [`StorageBackend`](crate::StorageBackend) implementing `Default` as this library's
/// native plugin.
#[macro_export]
macro_rules! export_native_storage {
    ($ty:ty) => {
        #[::abi_stable::export_root_module]
        fn spear_native_root_module() -> $crate::native::SpearPluginModuleRef {
            $crate::native_module!(storage, $ty)
        }
    };
}

/// Export an [`Autoscaler`](crate::Autoscaler) implementing `Default` as this library's native
/// plugin.
#[macro_export]
macro_rules! export_native_autoscaler {
    ($ty:ty) => {
        #[::abi_stable::export_root_module]
        fn spear_native_root_module() -> $crate::native::SpearPluginModuleRef {
            $crate::native_module!(autoscaler, $ty)
        }
    };
}
