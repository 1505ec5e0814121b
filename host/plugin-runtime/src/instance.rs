//! One live plugin instance, whatever its form. Every call is fallible: traps, deadlines, memory
//! limits and error values all come back as a [`CallFailure`], never as a panic or a hang.

use spear_plugin_api::{
    Decision, InstanceStats, NodePressure, Outcome, PluginInfo, Request, ScaleDecision, ScaleView,
    Target,
};

use crate::error::CallFailure;

/// Result of a call into a plugin.
pub type CallResult<T> = Result<T, CallFailure>;

/// A live scheduling-strategy instance.
pub trait StrategyInstance: Send {
    /// See [`spear_plugin_api::Strategy::info`].
    fn info(&mut self) -> CallResult<PluginInfo>;
    /// See [`spear_plugin_api::Strategy::configure`].
    fn configure(&mut self, config: &str) -> CallResult<()>;
    /// See [`spear_plugin_api::Strategy::upsert`].
    fn upsert(&mut self, targets: &[Target]) -> CallResult<()>;
    /// See [`spear_plugin_api::Strategy::remove`].
    fn remove(&mut self, ids: &[u64]) -> CallResult<()>;
    /// See [`spear_plugin_api::Strategy::place`].
    fn place(&mut self, requests: &[Request]) -> CallResult<Vec<Decision>>;
    /// See [`spear_plugin_api::Strategy::observe`].
    fn observe(&mut self, outcomes: &[Outcome]) -> CallResult<()>;
    /// See [`spear_plugin_api::Strategy::save_state`].
    fn save_state(&mut self) -> CallResult<Vec<u8>>;
    /// See [`spear_plugin_api::Strategy::restore_state`].
    fn restore_state(&mut self, state: &[u8]) -> CallResult<()>;
}

/// A live reclamation-policy instance.
pub trait ReclaimerInstance: Send {
    /// See [`spear_plugin_api::Reclaimer::info`].
    fn info(&mut self) -> CallResult<PluginInfo>;
    /// See [`spear_plugin_api::Reclaimer::configure`].
    fn configure(&mut self, config: &str) -> CallResult<()>;
    /// See [`spear_plugin_api::Reclaimer::select`].
    fn select(&mut self, instances: &[InstanceStats], node: &NodePressure) -> CallResult<Vec<u64>>;
    /// See [`spear_plugin_api::Reclaimer::save_state`].
    fn save_state(&mut self) -> CallResult<Vec<u8>>;
    /// See [`spear_plugin_api::Reclaimer::restore_state`].
    fn restore_state(&mut self, state: &[u8]) -> CallResult<()>;
}

/// A live autoscaler instance.
pub trait AutoscalerInstance: Send {
    /// See [`spear_plugin_api::Autoscaler::info`].
    fn info(&mut self) -> CallResult<PluginInfo>;
    /// See [`spear_plugin_api::Autoscaler::configure`].
    fn configure(&mut self, config: &str) -> CallResult<()>;
    /// See [`spear_plugin_api::Autoscaler::decide`].
    fn decide(&mut self, view: &ScaleView) -> CallResult<ScaleDecision>;
    /// See [`spear_plugin_api::Autoscaler::save_state`].
    fn save_state(&mut self) -> CallResult<Vec<u8>>;
    /// See [`spear_plugin_api::Autoscaler::restore_state`].
    fn restore_state(&mut self, state: &[u8]) -> CallResult<()>;
}
