//! The scheduling-strategy contract (`wit/strategy.wit`).

use crate::{Decision, Outcome, PluginError, PluginInfo, Request, Target};

/// A scheduling strategy: picks a target for each request.
///
/// One plain implementation serves every form: `spear_pdk::export_strategy!` makes it a WASM
/// component, `spear_pdk::export_extism_strategy!` an Extism module and
/// [`export_native_strategy!`](crate::export_native_strategy) a native library. The host calls the
/// methods from one thread at a time.
pub trait Strategy: Send + 'static {
    /// Describe the plugin. Called before anything else; must not depend on configuration.
    fn info(&self) -> PluginInfo;

    /// Apply a JSON configuration. Called once on every new instance, before it receives state or
    /// targets. An edited configuration builds a new instance, configures it, and hands it the old
    /// instance's state through [`restore_state`](Self::restore_state).
    fn configure(&mut self, config: &str) -> Result<(), PluginError>;

    /// Add targets, or replace those with the same id.
    fn upsert(&mut self, targets: Vec<Target>);

    /// Forget targets.
    fn remove(&mut self, ids: &[u64]);

    /// Decide a batch: exactly one decision per request, in order.
    fn place(&mut self, requests: &[Request]) -> Vec<Decision>;

    /// Learn from outcomes of earlier placements. The default ignores them.
    fn observe(&mut self, outcomes: &[Outcome]) {
        let _ = outcomes;
    }

    /// State to hand to the next version on a hot reload. The default hands nothing.
    fn save_state(&self) -> Vec<u8> {
        Vec::new()
    }

    /// Take over state saved by this or an earlier version. The default accepts and ignores it.
    fn restore_state(&mut self, state: &[u8]) -> Result<(), PluginError> {
        let _ = state;
        Ok(())
    }
}
