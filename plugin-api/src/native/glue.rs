//! Adapters from the plain traits to the FFI traits. Every call runs inside [`guard`], so a panic in
//! plugin code becomes an error value instead of unwinding across `extern "C"`.

use std::panic::{AssertUnwindSafe, catch_unwind};

use abi_stable::sabi_types::RMut;
use abi_stable::std_types::{ROption, RResult, RSlice, RStr, RString, RVec};

use super::ffi::{
    FfiDecision, FfiInstanceStats, FfiNodePressure, FfiOutcome, FfiPluginInfo, FfiRequest,
    FfiTarget,
};
use super::{
    FfiAutoscaler, FfiBatchLimits, FfiBatchOp, FfiExecutor, FfiInvokeFailure, FfiKv, FfiReclaimer,
    FfiSink_TO, FfiStorage, FfiStrategy,
};
use crate::storage::BatchOp;
use crate::{Autoscaler, Executor, PluginError, Reclaimer, StorageBackend, Strategy};

/// Run `f`, turning a panic into an error carrying its message.
pub fn guard<T>(f: impl FnOnce() -> T) -> RResult<T, RString> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(value) => RResult::ROk(value),
        Err(panic) => RResult::RErr(panic_message(&panic).into()),
    }
}

/// An invocation's outcome across the boundary: its output, its failure, or a panic (which
/// leaves the instance anywhere: it is lost).
fn invoked(
    outcome: RResult<Result<Vec<u8>, crate::executor::InvokeFailure>, RString>,
) -> RResult<RVec<u8>, FfiInvokeFailure> {
    match outcome {
        RResult::ROk(Ok(out)) => RResult::ROk(out.into()),
        RResult::ROk(Err(failure)) => RResult::RErr(failure.into()),
        RResult::RErr(panic) => RResult::RErr(FfiInvokeFailure {
            kind: FfiInvokeFailure::LOST,
            message: panic,
        }),
    }
}

/// Run a fallible `f`, turning both its error and a panic into an error string.
fn guard_result<T>(f: impl FnOnce() -> Result<T, PluginError>) -> RResult<T, RString> {
    match guard(f) {
        RResult::ROk(Ok(value)) => RResult::ROk(value),
        RResult::ROk(Err(e)) => RResult::RErr(e.0.into()),
        RResult::RErr(e) => RResult::RErr(e),
    }
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    let text = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".into());
    format!("plugin panicked: {text}")
}

fn to_json<T: serde::Serialize>(value: &T) -> Result<RString, PluginError> {
    serde_json::to_string(value)
        .map(RString::from)
        .map_err(|e| PluginError(format!("cannot encode result: {e}")))
}

/// Wraps a [`Strategy`] as an [`FfiStrategy`].
pub struct StrategyGlue<T>(pub T);

impl<T: Strategy> FfiStrategy for StrategyGlue<T> {
    fn info(&self) -> RResult<FfiPluginInfo, RString> {
        guard(|| FfiPluginInfo::from(&self.0.info()))
    }
    fn configure(&mut self, config: RStr<'_>) -> RResult<(), RString> {
        guard_result(|| self.0.configure(config.as_str()))
    }
    fn upsert(&mut self, targets: RVec<FfiTarget>) -> RResult<(), RString> {
        guard(|| self.0.upsert(targets.iter().map(Into::into).collect()))
    }
    fn remove(&mut self, ids: RSlice<'_, u64>) -> RResult<(), RString> {
        guard(|| self.0.remove(ids.as_slice()))
    }
    fn place(&mut self, requests: RVec<FfiRequest>) -> RResult<RVec<FfiDecision>, RString> {
        guard(|| {
            let requests: Vec<_> = requests.iter().map(Into::into).collect();
            self.0
                .place(&requests)
                .into_iter()
                .map(Into::into)
                .collect()
        })
    }
    fn observe(&mut self, outcomes: RSlice<'_, FfiOutcome>) -> RResult<(), RString> {
        guard(|| {
            let outcomes: Vec<_> = outcomes.iter().map(|o| (*o).into()).collect();
            self.0.observe(&outcomes)
        })
    }
    fn save_state(&self) -> RResult<RVec<u8>, RString> {
        guard(|| self.0.save_state().into())
    }
    fn restore_state(&mut self, state: RSlice<'_, u8>) -> RResult<(), RString> {
        guard_result(|| self.0.restore_state(state.as_slice()))
    }
}

/// Wraps a [`Reclaimer`] as an [`FfiReclaimer`].
pub struct ReclaimerGlue<T>(pub T);

impl<T: Reclaimer> FfiReclaimer for ReclaimerGlue<T> {
    fn info(&self) -> RResult<FfiPluginInfo, RString> {
        guard(|| FfiPluginInfo::from(&self.0.info()))
    }
    fn configure(&mut self, config: RStr<'_>) -> RResult<(), RString> {
        guard_result(|| self.0.configure(config.as_str()))
    }
    fn select(
        &mut self,
        instances: RVec<FfiInstanceStats>,
        node: FfiNodePressure,
    ) -> RResult<RVec<u64>, RString> {
        guard(|| {
            let instances: Vec<_> = instances.iter().map(Into::into).collect();
            self.0.select(&instances, &node.into()).into()
        })
    }
    fn save_state(&self) -> RResult<RVec<u8>, RString> {
        guard(|| self.0.save_state().into())
    }
    fn restore_state(&mut self, state: RSlice<'_, u8>) -> RResult<(), RString> {
        guard_result(|| self.0.restore_state(state.as_slice()))
    }
}

/// Wraps an [`Autoscaler`] as an [`FfiAutoscaler`].
pub struct AutoscalerGlue<T>(pub T);

impl<T: Autoscaler> FfiAutoscaler for AutoscalerGlue<T> {
    fn info(&self) -> RResult<FfiPluginInfo, RString> {
        guard(|| FfiPluginInfo::from(&self.0.info()))
    }
    fn configure(&mut self, config: RStr<'_>) -> RResult<(), RString> {
        guard_result(|| self.0.configure(config.as_str()))
    }
    fn decide(&mut self, view: RStr<'_>) -> RResult<RString, RString> {
        guard_result(|| {
            let view = serde_json::from_str(view.as_str())
                .map_err(|e| PluginError(format!("invalid scale view: {e}")))?;
            to_json(&self.0.decide(&view)?)
        })
    }
    fn save_state(&self) -> RResult<RVec<u8>, RString> {
        guard(|| self.0.save_state().into())
    }
    fn restore_state(&mut self, state: RSlice<'_, u8>) -> RResult<(), RString> {
        guard_result(|| self.0.restore_state(state.as_slice()))
    }
}

/// Wraps an [`Executor`] as an [`FfiExecutor`].
pub struct ExecutorGlue<T>(pub T);

impl<T: Executor> FfiExecutor for ExecutorGlue<T> {
    fn info(&self) -> RResult<FfiPluginInfo, RString> {
        guard(|| FfiPluginInfo::from(&self.0.info()))
    }
    fn capabilities(&self) -> RResult<RString, RString> {
        guard_result(|| to_json(&self.0.capabilities()))
    }
    fn configure(&mut self, config: RStr<'_>) -> RResult<(), RString> {
        guard_result(|| self.0.configure(config.as_str()))
    }
    fn start(&self, spec: RStr<'_>) -> RResult<RString, RString> {
        guard_result(|| {
            let spec = serde_json::from_str(spec.as_str())
                .map_err(|e| PluginError(format!("invalid exec spec: {e}")))?;
            self.0.start(&spec).map(RString::from)
        })
    }
    fn wait(&self, handle: RStr<'_>, timeout_ms: u64) -> RResult<RString, RString> {
        guard_result(|| to_json(&self.0.wait(handle.as_str(), timeout_ms)?))
    }
    fn signal(&self, handle: RStr<'_>, signal: i32) -> RResult<(), RString> {
        guard_result(|| self.0.signal(handle.as_str(), signal))
    }
    fn stop(&self, handle: RStr<'_>, grace_ms: u64) -> RResult<(), RString> {
        guard_result(|| self.0.stop(handle.as_str(), grace_ms))
    }
    fn inspect(&self, handle: RStr<'_>) -> RResult<RString, RString> {
        guard_result(|| to_json(&self.0.inspect(handle.as_str())?))
    }
    fn stats(&self, handle: RStr<'_>) -> RResult<RString, RString> {
        guard_result(|| to_json(&self.0.stats(handle.as_str())?))
    }
    fn recover(&self, handle: RStr<'_>) -> RResult<bool, RString> {
        guard_result(|| self.0.recover(handle.as_str()))
    }
    fn destroy(&self, handle: RStr<'_>) -> RResult<(), RString> {
        guard_result(|| self.0.destroy(handle.as_str()))
    }
    fn start_instance(&self, spec: RStr<'_>) -> RResult<RString, RString> {
        guard_result(|| {
            let spec = serde_json::from_str(spec.as_str())
                .map_err(|e| PluginError(format!("invalid instance spec: {e}")))?;
            self.0.start_instance(&spec).map(RString::from)
        })
    }
    fn invoke(
        &self,
        handle: RStr<'_>,
        function: RStr<'_>,
        payload: RSlice<'_, u8>,
        timeout_ms: u64,
    ) -> RResult<RVec<u8>, FfiInvokeFailure> {
        let call = || {
            self.0.invoke(
                handle.as_str(),
                function.as_str(),
                payload.as_slice(),
                timeout_ms,
            )
        };
        invoked(guard(call))
    }
    fn stop_instance(&self, handle: RStr<'_>) -> RResult<(), RString> {
        guard_result(|| self.0.stop_instance(handle.as_str()))
    }
    fn invoke_stream(
        &self,
        handle: RStr<'_>,
        function: RStr<'_>,
        payload: RSlice<'_, u8>,
        timeout_ms: u64,
        mut sink: FfiSink_TO<'_, RMut<'_, ()>>,
    ) -> RResult<RVec<u8>, FfiInvokeFailure> {
        let call = || {
            self.0.invoke_stream(
                handle.as_str(),
                function.as_str(),
                payload.as_slice(),
                timeout_ms,
                &mut |piece: &[u8]| sink.piece(piece.into()),
            )
        };
        invoked(guard(call))
    }
}

/// Wraps a [`StorageBackend`] as an [`FfiStorage`].
pub struct StorageGlue<T>(pub T);

impl<T: StorageBackend> FfiStorage for StorageGlue<T> {
    fn info(&self) -> RResult<FfiPluginInfo, RString> {
        guard(|| FfiPluginInfo::from(&self.0.info()))
    }
    fn open(&mut self, config: RStr<'_>) -> RResult<(), RString> {
        guard_result(|| self.0.open(config.as_str()))
    }
    fn get(&self, key: RSlice<'_, u8>) -> RResult<ROption<RVec<u8>>, RString> {
        guard_result(|| Ok(self.0.get(key.as_slice())?.map(RVec::from).into()))
    }
    fn put(&self, key: RSlice<'_, u8>, value: RSlice<'_, u8>) -> RResult<(), RString> {
        guard_result(|| self.0.put(key.as_slice(), value.as_slice()))
    }
    fn delete(&self, key: RSlice<'_, u8>) -> RResult<bool, RString> {
        guard_result(|| self.0.delete(key.as_slice()))
    }
    fn scan(
        &self,
        prefix: RSlice<'_, u8>,
        start_after: ROption<RSlice<'_, u8>>,
        limit: u32,
    ) -> RResult<RVec<FfiKv>, RString> {
        guard_result(|| {
            let start_after = start_after.into_option().map(|s| s.as_slice());
            let rows = self.0.scan(prefix.as_slice(), start_after, limit)?;
            Ok(rows
                .into_iter()
                .map(|(key, value)| FfiKv {
                    key: key.into(),
                    value: value.into(),
                })
                .collect())
        })
    }
    fn batch(&self, ops: RVec<FfiBatchOp>) -> RResult<bool, RString> {
        guard_result(|| {
            let ops: Vec<BatchOp> = ops
                .into_iter()
                .map(|op| match op {
                    FfiBatchOp::Put(kv) => BatchOp::Put {
                        key: kv.key.into(),
                        value: kv.value.into(),
                    },
                    FfiBatchOp::Delete(key) => BatchOp::Delete { key: key.into() },
                    FfiBatchOp::Check(check) => BatchOp::Check {
                        key: check.key.into(),
                        value: check.value.into_option().map(Into::into),
                    },
                })
                .collect();
            self.0.batch(&ops)
        })
    }
    fn limits(&self) -> RResult<FfiBatchLimits, RString> {
        guard(|| {
            let limits = self.0.limits();
            FfiBatchLimits {
                max_ops: limits.max_ops,
                max_bytes: limits.max_bytes,
            }
        })
    }
    fn compare_and_swap(
        &self,
        key: RSlice<'_, u8>,
        expected: ROption<RSlice<'_, u8>>,
        new: ROption<RSlice<'_, u8>>,
    ) -> RResult<bool, RString> {
        guard_result(|| {
            self.0.compare_and_swap(
                key.as_slice(),
                expected.into_option().map(|s| s.as_slice()),
                new.into_option().map(|s| s.as_slice()),
            )
        })
    }
}
