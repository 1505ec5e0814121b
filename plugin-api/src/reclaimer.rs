//! The reclamation-policy contract (`wit/reclaimer.wit`).

use crate::{InstanceStats, NodePressure, PluginError, PluginInfo};

/// A reclamation policy: picks the task instances a Spearlet stops.
pub trait Reclaimer: Send + 'static {
    /// Describe the plugin; must not depend on configuration.
    fn info(&self) -> PluginInfo;

    /// Apply a JSON configuration.
    fn configure(&mut self, config: &str) -> Result<(), PluginError>;

    /// Ids of instances to stop, most urgent first. Every id must come from `instances`.
    fn select(&mut self, instances: &[InstanceStats], node: &NodePressure) -> Vec<u64>;

    /// State to hand to the next version on a hot reload. The default hands nothing.
    fn save_state(&self) -> Vec<u8> {
        Vec::new()
    }

    /// Take over saved state. The default accepts and ignores it.
    fn restore_state(&mut self, state: &[u8]) -> Result<(), PluginError> {
        let _ = state;
        Ok(())
    }
}
