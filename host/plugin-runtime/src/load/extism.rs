//! Extism modules: core WASM modules exporting `spear_*` functions that take and return JSON
//! (see `spear-pdk`'s `extism` module for the table of exports).
//!
//! Deadline and memory cap come from the [`Limits`] in force when the module is compiled (Extism
//! fixes them per compiled plugin): a change of limits applies to Extism plugins at their next load.
//!
//! A module's output comes back through [`super::extism_output`]'s guarded `output_set`, never
//! through Extism's unchecked output path.
//!
//! Extism starts its timer only once a module's runtime is set up, so a module that loops in its
//! start-up code would never time out. Every call therefore also gets a fuel budget (about one
//! instruction per nanosecond of `setup_timeout_ms`), which Extism applies to set-up too.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use extism::{CompiledPlugin, Manifest, Plugin, PluginBuilder, Wasm};
use serde::Serialize;
use spear_plugin_api as api;

use super::extism_output::{Captured, guard_function, reroute_output};
use crate::error::CallFailure;
use crate::instance::{AutoscalerInstance, CallResult, ReclaimerInstance, StrategyInstance};
use crate::limits::Limits;

/// A compiled Extism module ready to instantiate.
#[derive(Clone)]
pub struct ExtismFactory {
    compiled: Arc<Mutex<CompiledPlugin>>,
    timeout_ms: u64,
    memory_mb: u64,
}

impl std::fmt::Debug for ExtismFactory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ExtismFactory")
    }
}

const WASM_PAGE: u64 = 64 * 1024;

/// Fuel per millisecond of set-up budget: roughly one WASM instruction per nanosecond.
const FUEL_PER_MS: u64 = 1_000_000;

impl ExtismFactory {
    /// Compile the module with the current limits.
    pub fn new(bytes: &[u8], limits: &Limits) -> Result<Self, String> {
        let values = limits.get();
        let pages = (values.memory_limit_mb * 1024 * 1024 / WASM_PAGE).max(1);
        let bytes = reroute_output(bytes)?;
        let manifest = Manifest::new([Wasm::data(bytes)])
            .with_timeout(Duration::from_millis(values.call_timeout_ms.max(1)))
            .with_memory_max(u32::try_from(pages).unwrap_or(u32::MAX));
        let compiled = PluginBuilder::new(manifest)
            .with_wasi(false)
            .with_cache_disabled()
            .with_functions([guard_function()])
            .with_fuel_limit(values.setup_timeout_ms.saturating_mul(FUEL_PER_MS))
            .compile()
            .map_err(|e| format!("invalid Extism module: {e:#}"))?;
        Ok(Self {
            compiled: Arc::new(Mutex::new(compiled)),
            timeout_ms: values.call_timeout_ms,
            memory_mb: values.memory_limit_mb,
        })
    }

    fn instance(&self) -> CallResult<ExtismGuest> {
        let compiled = self
            .compiled
            .lock()
            .map_err(|_| CallFailure::Trap("compiled plugin lock poisoned".into()))?;
        let plugin = Plugin::new_from_compiled(&compiled)
            .map_err(|e| CallFailure::Trap(format!("cannot instantiate: {e:#}")))?;
        Ok(ExtismGuest {
            plugin,
            timeout_ms: self.timeout_ms,
            memory_mb: self.memory_mb,
        })
    }

    /// The module's self-description (instantiates it once).
    pub fn info(&self) -> CallResult<api::PluginInfo> {
        self.instance()?.json("spear_info", &())
    }

    /// A fresh strategy instance.
    pub fn strategy(&self) -> CallResult<Box<dyn StrategyInstance>> {
        Ok(Box::new(ExtismStrategy(self.instance()?)))
    }

    /// A fresh reclamation-policy instance.
    pub fn reclaimer(&self) -> CallResult<Box<dyn ReclaimerInstance>> {
        Ok(Box::new(ExtismReclaimer(self.instance()?)))
    }

    /// A fresh autoscaler instance.
    pub fn autoscaler(&self) -> CallResult<Box<dyn AutoscalerInstance>> {
        Ok(Box::new(ExtismAutoscaler(self.instance()?)))
    }
}

struct ExtismGuest {
    plugin: Plugin,
    timeout_ms: u64,
    memory_mb: u64,
}

impl ExtismGuest {
    fn raw(&mut self, function: &str, input: &[u8]) -> CallResult<Vec<u8>> {
        if !self.plugin.function_exists(function) {
            return Err(CallFailure::Invalid(format!("missing export `{function}`")));
        }
        let captured = Captured::default();
        self.plugin
            .call_with_host_context::<&[u8], &[u8], Captured>(function, input, captured.clone())
            .map(|_| {
                captured
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .take()
                    .unwrap_or_default()
            })
            .map_err(|e| {
                // Extism reports its own limits with these exact messages (extism 1.30 plugin.rs).
                match e.root_cause().to_string().as_str() {
                    "timeout" => CallFailure::Deadline(self.timeout_ms),
                    "oom" => CallFailure::Memory(self.memory_mb),
                    "plugin ran out of fuel" => CallFailure::Deadline(self.timeout_ms),
                    _ => CallFailure::Trap(format!("{e:#}")),
                }
            })
    }

    fn json<I: Serialize, O: serde::de::DeserializeOwned>(
        &mut self,
        function: &str,
        input: &I,
    ) -> CallResult<O> {
        let input = serde_json::to_vec(input)
            .map_err(|e| CallFailure::Invalid(format!("cannot encode input: {e}")))?;
        let output = self.raw(function, &input)?;
        serde_json::from_slice(&output)
            .map_err(|e| CallFailure::Invalid(format!("`{function}` returned malformed JSON: {e}")))
    }

    fn unit(&mut self, function: &str, input: &[u8]) -> CallResult<()> {
        self.raw(function, input).map(|_| ())
    }

    fn unit_json<I: Serialize>(&mut self, function: &str, input: &I) -> CallResult<()> {
        let input = serde_json::to_vec(input)
            .map_err(|e| CallFailure::Invalid(format!("cannot encode input: {e}")))?;
        self.unit(function, &input)
    }

    /// A `configure`/`restore` call whose error is the plugin refusing, not a trap.
    fn fallible(&mut self, function: &str, input: &[u8]) -> CallResult<()> {
        match self.raw(function, input) {
            Ok(_) => Ok(()),
            Err(CallFailure::Trap(text)) => Err(CallFailure::Plugin(text)),
            Err(other) => Err(other),
        }
    }
}

struct ExtismStrategy(ExtismGuest);

impl StrategyInstance for ExtismStrategy {
    fn info(&mut self) -> CallResult<api::PluginInfo> {
        self.0.json("spear_info", &())
    }
    fn configure(&mut self, config: &str) -> CallResult<()> {
        self.0.fallible("spear_configure", config.as_bytes())
    }
    fn upsert(&mut self, targets: &[api::Target]) -> CallResult<()> {
        self.0.unit_json("spear_upsert", &targets)
    }
    fn remove(&mut self, ids: &[u64]) -> CallResult<()> {
        self.0.unit_json("spear_remove", &ids)
    }
    fn place(&mut self, requests: &[api::Request]) -> CallResult<Vec<api::Decision>> {
        self.0.json("spear_place", &requests)
    }
    fn observe(&mut self, outcomes: &[api::Outcome]) -> CallResult<()> {
        self.0.unit_json("spear_observe", &outcomes)
    }
    fn save_state(&mut self) -> CallResult<Vec<u8>> {
        self.0.raw("spear_save_state", &[])
    }
    fn restore_state(&mut self, state: &[u8]) -> CallResult<()> {
        self.0.fallible("spear_restore_state", state)
    }
}

struct ExtismReclaimer(ExtismGuest);

#[derive(Serialize)]
struct SelectInput<'a> {
    instances: &'a [api::InstanceStats],
    node: &'a api::NodePressure,
}

impl ReclaimerInstance for ExtismReclaimer {
    fn info(&mut self) -> CallResult<api::PluginInfo> {
        self.0.json("spear_info", &())
    }
    fn configure(&mut self, config: &str) -> CallResult<()> {
        self.0.fallible("spear_configure", config.as_bytes())
    }
    fn select(
        &mut self,
        instances: &[api::InstanceStats],
        node: &api::NodePressure,
    ) -> CallResult<Vec<u64>> {
        self.0
            .json("spear_select", &SelectInput { instances, node })
    }
    fn save_state(&mut self) -> CallResult<Vec<u8>> {
        self.0.raw("spear_save_state", &[])
    }
    fn restore_state(&mut self, state: &[u8]) -> CallResult<()> {
        self.0.fallible("spear_restore_state", state)
    }
}

struct ExtismAutoscaler(ExtismGuest);

impl AutoscalerInstance for ExtismAutoscaler {
    fn info(&mut self) -> CallResult<api::PluginInfo> {
        self.0.json("spear_info", &())
    }
    fn configure(&mut self, config: &str) -> CallResult<()> {
        self.0.fallible("spear_configure", config.as_bytes())
    }
    fn decide(&mut self, view: &api::ScaleView) -> CallResult<api::ScaleDecision> {
        self.0.json("spear_decide", view)
    }
    fn save_state(&mut self) -> CallResult<Vec<u8>> {
        self.0.raw("spear_save_state", &[])
    }
    fn restore_state(&mut self, state: &[u8]) -> CallResult<()> {
        self.0.fallible("spear_restore_state", state)
    }
}
