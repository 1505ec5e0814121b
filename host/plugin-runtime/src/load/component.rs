//! WASM components of the `spear:plugin` worlds, run by wasmtime.
//!
//! This module holds the crate's only `bindgen!` calls (one per world, sharing the `types` and
//! `host` interfaces). Each instance lives in its own [`Store`] with a budget per call (CPU time on
//! the calling thread, checked at every epoch tick, and a wall-clock ceiling; see [`crate::budget`]),
//! a memory limiter, and the bounded WASI of [`super::wasi`]: no files, no sockets, no
//! environment, capped output, polls that end with the call; outgoing HTTP, the clocks and the
//! log only as the plugin's grant allows ([`crate::grants`], `access`).

use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use spear_plugin_api as api;
use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{ResourceLimiter, Store, Trap, UpdateDeadline};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::WasiHttpCtx;
use wasmtime_wasi_http::p2::{WasiHttpCtxView, WasiHttpView};

use super::scratch::{Quota, fs::ScratchView};
use super::wasi::{self as plugin_wasi, OutputBudget, PollBound};
use crate::budget::{BudgetExceeded, CallBudget};
use crate::engine::{WasmEngine, deadline_ticks};
use crate::error::CallFailure;
use crate::grants::WorldDefaults;
use crate::instance::{AutoscalerInstance, CallResult, ReclaimerInstance, StrategyInstance};
use crate::limits::{Budget, Limits};

mod strategy_world {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "scheduling-strategy",
    });
}

mod reclaimer_world {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "reclamation-policy",
        with: {
            "spear:plugin/types": super::strategy_world::spear::plugin::types,
            "spear:plugin/host": super::strategy_world::spear::plugin::host,
        },
    });
}

mod autoscaler_world {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "autoscaling-policy",
        with: {
            "spear:plugin/types": super::strategy_world::spear::plugin::types,
            "spear:plugin/host": super::strategy_world::spear::plugin::host,
        },
    });
}

mod storage_world {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "storage-backend",
        with: {
            "spear:plugin/types": super::strategy_world::spear::plugin::types,
            "spear:plugin/host": super::strategy_world::spear::plugin::host,
        },
    });
}

mod executor_world {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "executor",
        with: {
            "spear:plugin/types": super::strategy_world::spear::plugin::types,
            "spear:plugin/host": super::strategy_world::spear::plugin::host,
        },
    });
}

mod access;
mod autoscaler;
mod convert;
mod executor;
mod held;
mod reclaimer;
mod storage;
mod strategy;

pub use executor::ComponentExecutor;
pub use storage::ComponentStorage;

use convert::info_from_wit;
use reclaimer::ComponentReclaimer;
use strategy::ComponentStrategy;
use strategy_world::spear::plugin::{host, types as wit};

/// Per-store data: bounded WASI, the memory limiter, the call's budget, the plugin's name for logs.
pub struct GuestState {
    wasi: WasiCtx,
    table: ResourceTable,
    limiter: MemoryLimiter,
    plugin: Arc<str>,
    started: Instant,
    budget: CallBudget,
    output: Arc<OutputBudget>,
    http: WasiHttpCtx,
    /// What the plugin is granted, as in force for this call.
    access: access::Access,
}

impl PollBound for GuestState {
    fn poll_bound(&mut self) -> (&mut ResourceTable, Instant, u64) {
        (
            &mut self.table,
            self.budget.wall_deadline,
            self.budget.wall_millis,
        )
    }
}

impl ScratchView for GuestState {
    fn scratch(&self) -> Option<Arc<Quota>> {
        self.access.scratch()
    }
}

impl WasiView for GuestState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for GuestState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.access,
        }
    }
}

impl wit::Host for GuestState {}

impl host::Host for GuestState {
    fn log(&mut self, level: host::LogLevel, message: String) {
        if !self.access.log() {
            return;
        }
        let plugin = &*self.plugin;
        match level {
            host::LogLevel::Trace => tracing::trace!(plugin, "{message}"),
            host::LogLevel::Debug => tracing::debug!(plugin, "{message}"),
            host::LogLevel::Info => tracing::info!(plugin, "{message}"),
            host::LogLevel::Warn => tracing::warn!(plugin, "{message}"),
            host::LogLevel::Error => tracing::error!(plugin, "{message}"),
        }
    }

    fn now_ms(&mut self) -> u64 {
        if !self.access.clock() {
            return 0;
        }
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
    }

    fn monotonic_ms(&mut self) -> u64 {
        if !self.access.clock() {
            return 0;
        }
        self.started.elapsed().as_millis() as u64
    }
}

/// Refuses memory growth that would take the instance's memories, together, past the configured
/// limit, and remembers that it did. A component holds several core modules, each with its own
/// linear memory: the limit is on their sum.
struct MemoryLimiter {
    limits: Arc<Limits>,
    /// Bytes of linear memory the instance holds, over all its memories.
    total: usize,
    hit: bool,
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let after = self.total.saturating_sub(current).saturating_add(desired);
        let allowed = after <= self.limits.memory_limit_bytes();
        if allowed {
            self.total = after;
        }
        self.hit |= !allowed;
        Ok(allowed)
    }

    fn instances(&self) -> usize {
        MAX_CORE_INSTANCES
    }

    fn memories(&self) -> usize {
        MAX_MEMORIES
    }

    fn tables(&self) -> usize {
        MAX_TABLES
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 1_000_000)
    }
}

/// Core instances, memories and tables one plugin instance may create (a Rust component built by
/// the PDK uses a handful of each).
const MAX_CORE_INSTANCES: usize = 64;
const MAX_MEMORIES: usize = 16;
const MAX_TABLES: usize = 64;

/// The world a component implements.
#[derive(Clone)]
enum Pre {
    Strategy(strategy_world::SchedulingStrategyPre<GuestState>),
    Reclaimer(reclaimer_world::ReclamationPolicyPre<GuestState>),
    Autoscaler(autoscaler_world::AutoscalingPolicyPre<GuestState>),
    Storage(storage_world::StorageBackendPre<GuestState>),
    Executor(executor_world::ExecutorPre<GuestState>),
}

/// A compiled, linked component ready to instantiate.
#[derive(Clone)]
pub struct ComponentFactory {
    engine: WasmEngine,
    pre: Pre,
    limits: Arc<Limits>,
}

impl std::fmt::Debug for ComponentFactory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ComponentFactory")
    }
}

impl ComponentFactory {
    /// Compile `bytes` (or take it from the engine's cache) and link it against the world it
    /// exports. Errors explain which world (if any) the component matches.
    pub fn new(
        engine: &WasmEngine,
        bytes: &[u8],
        sha256: &str,
        limits: Arc<Limits>,
    ) -> Result<Self, String> {
        let component = engine
            .component(bytes, sha256)
            .map_err(|e| format!("invalid WASM component: {e:#}"))?;
        let exports = exported_interfaces(&component, engine);
        let pre = if exports
            .iter()
            .any(|e| e.starts_with("spear:plugin/strategy"))
        {
            let mut linker = base_linker(engine)?;
            strategy_world::SchedulingStrategy::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)
                .map_err(|e| e.to_string())?;
            let pre = linker
                .instantiate_pre(&component)
                .map_err(|e| format!("cannot link the scheduling-strategy world: {e:#}"))?;
            Pre::Strategy(
                strategy_world::SchedulingStrategyPre::new(pre)
                    .map_err(|e| format!("does not match the scheduling-strategy world: {e:#}"))?,
            )
        } else if exports
            .iter()
            .any(|e| e.starts_with("spear:plugin/reclaimer"))
        {
            let mut linker = base_linker(engine)?;
            reclaimer_world::ReclamationPolicy::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)
                .map_err(|e| e.to_string())?;
            let pre = linker
                .instantiate_pre(&component)
                .map_err(|e| format!("cannot link the reclamation-policy world: {e:#}"))?;
            Pre::Reclaimer(
                reclaimer_world::ReclamationPolicyPre::new(pre)
                    .map_err(|e| format!("does not match the reclamation-policy world: {e:#}"))?,
            )
        } else if exports
            .iter()
            .any(|e| e.starts_with("spear:plugin/autoscaler"))
        {
            let mut linker = base_linker(engine)?;
            autoscaler_world::AutoscalingPolicy::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)
                .map_err(|e| e.to_string())?;
            let pre = linker
                .instantiate_pre(&component)
                .map_err(|e| format!("cannot link the autoscaling-policy world: {e:#}"))?;
            Pre::Autoscaler(
                autoscaler_world::AutoscalingPolicyPre::new(pre)
                    .map_err(|e| format!("does not match the autoscaling-policy world: {e:#}"))?,
            )
        } else if exports
            .iter()
            .any(|e| e.starts_with("spear:plugin/storage"))
        {
            let mut linker = base_linker(engine)?;
            storage_world::StorageBackend::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)
                .map_err(|e| e.to_string())?;
            let pre = linker
                .instantiate_pre(&component)
                .map_err(|e| format!("cannot link the storage-backend world: {e:#}"))?;
            Pre::Storage(
                storage_world::StorageBackendPre::new(pre)
                    .map_err(|e| format!("does not match the storage-backend world: {e:#}"))?,
            )
        } else if exports.iter().any(|e| e.starts_with("spear:plugin/runner")) {
            let mut linker = base_linker(engine)?;
            executor_world::Executor::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)
                .map_err(|e| e.to_string())?;
            let pre = linker
                .instantiate_pre(&component)
                .map_err(|e| format!("cannot link the executor world: {e:#}"))?;
            Pre::Executor(
                executor_world::ExecutorPre::new(pre)
                    .map_err(|e| format!("does not match the executor world: {e:#}"))?,
            )
        } else {
            let shown = if exports.is_empty() {
                "nothing".to_owned()
            } else {
                exports.join(", ")
            };
            return Err(format!(
                "a component of no spear:plugin world: it exports {shown}, not \
                 spear:plugin/strategy, spear:plugin/reclaimer, spear:plugin/autoscaler, \
                 spear:plugin/storage or spear:plugin/runner"
            ));
        };
        Ok(Self {
            engine: engine.clone(),
            pre,
            limits,
        })
    }

    /// The plugin kind this component's world implements.
    pub fn kind(&self) -> api::PluginKind {
        match self.pre {
            Pre::Strategy(_) => api::PluginKind::SchedulingStrategy,
            Pre::Reclaimer(_) => api::PluginKind::ReclamationPolicy,
            Pre::Autoscaler(_) => api::PluginKind::Autoscaler,
            Pre::Storage(_) => api::PluginKind::StorageBackend,
            Pre::Executor(_) => api::PluginKind::Executor,
        }
    }

    /// What this component's world grants when the config says nothing ([`crate::grants`]).
    fn world_defaults(&self) -> WorldDefaults {
        let decision = matches!(
            self.pre,
            Pre::Strategy(_) | Pre::Reclaimer(_) | Pre::Autoscaler(_)
        );
        WorldDefaults {
            clock: decision,
            log: decision,
        }
    }

    /// A store for one instance, its budget set for instantiation (a set-up call). Fails only
    /// if the host cannot make the scratch directory the plugin is granted.
    fn store(&self, plugin: &str) -> CallResult<Store<GuestState>> {
        let plugin: Arc<str> = plugin.into();
        let output = OutputBudget::new(plugin.clone());
        let mut access = access::Access::new(plugin.clone(), self.world_defaults(), &self.limits);
        output.renew(access.log());
        let scratch = match access.scratch_bytes() {
            0 => None,
            bytes => {
                let dir = self
                    .engine
                    .scratch()
                    .and_then(|root| root.make(&plugin))
                    .map_err(|e| {
                        CallFailure::Host(format!("cannot make its scratch directory: {e}"))
                    })?;
                let quota = Quota::new(plugin.clone(), dir, bytes);
                access.set_scratch(quota.clone());
                Some(quota)
            }
        };
        let (wasi, table) =
            plugin_wasi::context(&output, access.clocks(), scratch.as_ref().map(|q| q.dir()))
                .map_err(|e| {
                    CallFailure::Host(format!("cannot open its scratch directory: {e:#}"))
                })?;
        let budget = Budget::Setup.start(&self.limits);
        let state = GuestState {
            wasi,
            table,
            limiter: MemoryLimiter {
                limits: self.limits.clone(),
                total: 0,
                hit: false,
            },
            plugin,
            started: Instant::now(),
            budget,
            output,
            http: {
                let mut http = WasiHttpCtx::new();
                http.set_field_size_limit(access::FIELDS_LIMIT);
                http
            },
            access,
        };
        let mut store = Store::new(self.engine.engine(), state);
        store.limiter(|s| &mut s.limiter);
        // At each deadline tick: stop the call if it used its CPU budget or passed its wall-clock
        // ceiling, else give it the ticks its remaining CPU budget could take.
        store.epoch_deadline_callback(|ctx| {
            let budget = ctx.data().budget;
            match budget.check() {
                Ok(left) => Ok(UpdateDeadline::Continue(deadline_ticks(
                    u64::try_from(left.as_millis()).unwrap_or(u64::MAX),
                ))),
                Err(overrun) => Err(wasmtime::Error::new(budget.exceeded(overrun))),
            }
        });
        store.set_epoch_deadline(deadline_ticks(budget.millis));
        Ok(store)
    }

    /// The bookkeeping of an instance in `store`.
    fn guest(&self, store: Store<GuestState>) -> Guest {
        Guest {
            store,
            limits: self.limits.clone(),
            _engine: self.engine.clone(),
            poisoned: false,
            accept_late: false,
        }
    }

    /// A fresh strategy instance.
    pub fn strategy(&self, plugin: &str) -> CallResult<Box<dyn StrategyInstance>> {
        let Pre::Strategy(pre) = &self.pre else {
            return Err(CallFailure::Invalid("not a scheduling strategy".into()));
        };
        let mut store = self.store(plugin)?;
        let bindings = pre
            .instantiate(&mut store)
            .map_err(|e| classify(e, &store, &self.limits, Budget::Setup))?;
        Ok(Box::new(ComponentStrategy {
            inner: self.guest(store),
            bindings,
        }))
    }

    /// A fresh reclamation-policy instance.
    pub fn reclaimer(&self, plugin: &str) -> CallResult<Box<dyn ReclaimerInstance>> {
        let Pre::Reclaimer(pre) = &self.pre else {
            return Err(CallFailure::Invalid("not a reclamation policy".into()));
        };
        let mut store = self.store(plugin)?;
        let bindings = pre
            .instantiate(&mut store)
            .map_err(|e| classify(e, &store, &self.limits, Budget::Setup))?;
        Ok(Box::new(ComponentReclaimer {
            inner: self.guest(store),
            bindings,
        }))
    }

    /// A fresh autoscaler instance.
    pub fn autoscaler(&self, plugin: &str) -> CallResult<Box<dyn AutoscalerInstance>> {
        let Pre::Autoscaler(pre) = &self.pre else {
            return Err(CallFailure::Invalid("not an autoscaler".into()));
        };
        let mut store = self.store(plugin)?;
        let bindings = pre
            .instantiate(&mut store)
            .map_err(|e| classify(e, &store, &self.limits, Budget::Setup))?;
        Ok(Box::new(autoscaler::ComponentAutoscaler {
            inner: self.guest(store),
            bindings,
        }))
    }
}

/// A linker holding what every world may import: the bounded WASI and `wasi:http` (each
/// request checked against the plugin's grant).
fn base_linker(engine: &WasmEngine) -> Result<Linker<GuestState>, String> {
    let mut linker = Linker::new(engine.engine());
    plugin_wasi::add_to_linker(&mut linker).map_err(|e| e.to_string())?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_sync(&mut linker).map_err(|e| e.to_string())?;
    access::link_handle_freeing_options(&mut linker).map_err(|e| e.to_string())?;
    Ok(linker)
}

fn exported_interfaces(component: &Component, engine: &WasmEngine) -> Vec<String> {
    component
        .component_type()
        .exports(engine.engine())
        .map(|(name, _)| name.to_owned())
        .collect()
}

/// Map a wasmtime error to a failure: budget (CPU, wall-clock, a blocking poll), memory limit, or
/// trap.
fn classify(
    error: wasmtime::Error,
    store: &Store<GuestState>,
    limits: &Limits,
    budget: Budget,
) -> CallFailure {
    if let Some(exceeded) = error.downcast_ref::<BudgetExceeded>() {
        return CallFailure::Budget(exceeded.to_string());
    }
    if let Some(Trap::Interrupt) = error.downcast_ref::<Trap>() {
        return CallFailure::Deadline(budget.millis(limits));
    }
    if store.data().limiter.hit {
        return CallFailure::Memory(limits.get().memory_limit_mb);
    }
    // What the guest printed last (a Rust guest's panic message) says more than the trap.
    match store.data().output.stderr_tail() {
        tail if tail.is_empty() => CallFailure::Trap(format!("{error:#}")),
        tail => CallFailure::Trap(format!("{tail} — {error:#}")),
    }
}

/// A store plus the bookkeeping every call needs.
struct Guest {
    store: Store<GuestState>,
    limits: Arc<Limits>,
    /// The engine whose epoch ticker interrupts this instance's calls: kept alive with it, so
    /// that an instance outliving its plugin (a storage backend a host opened) stays bounded.
    _engine: WasmEngine,
    /// A component instance that trapped cannot be entered again.
    poisoned: bool,
    /// An answer that comes back past the call's budget is taken all the same (a storage
    /// backend's: the write it reports has happened), instead of failing the call.
    accept_late: bool,
}

impl Guest {
    fn call<R>(
        &mut self,
        budget: Budget,
        f: impl FnOnce(&mut Store<GuestState>) -> wasmtime::Result<R>,
    ) -> CallResult<R> {
        if self.poisoned {
            return Err(CallFailure::Trap(
                "instance is unusable after an earlier failure".into(),
            ));
        }
        let call_budget = budget.start(&self.limits);
        let data = self.store.data_mut();
        data.budget = call_budget;
        data.limiter.hit = false;
        data.access.refresh(&self.limits);
        let dropped = data.output.renew(data.access.log());
        if dropped > 0 {
            tracing::debug!(
                plugin = &*data.plugin,
                dropped,
                "plugin output over {} bytes in one call dropped",
                plugin_wasi::OUTPUT_PER_CALL
            );
        }
        self.store
            .set_epoch_deadline(deadline_ticks(call_budget.millis));
        let result = f(&mut self.store).map_err(|e| {
            self.poisoned = true;
            classify(e, &self.store, &self.limits, budget)
        });
        // The budget is checked at epoch ticks; a ticker the machine delayed can let a call finish
        // past it. Such an answer is not taken (unless `accept_late`): the call failed, as if
        // stopped in time.
        if result.is_ok()
            && !self.accept_late
            && call_budget.may_have_overrun()
            && let Err(overrun) = call_budget.check()
        {
            return Err(CallFailure::Budget(
                call_budget.exceeded(overrun).to_string(),
            ));
        }
        result
    }
}
