//! An instance of a component of the `reclamation-policy` world.

use spear_plugin_api as api;

use super::convert::instance_to_wit;
use super::reclaimer_world::ReclamationPolicy;
use super::{Guest, info_from_wit, wit};
use crate::error::CallFailure;
use crate::instance::{CallResult, ReclaimerInstance};
use crate::limits::Budget;

pub(super) struct ComponentReclaimer {
    pub(super) inner: Guest,
    pub(super) bindings: ReclamationPolicy,
}

impl ReclaimerInstance for ComponentReclaimer {
    fn info(&mut self) -> CallResult<api::PluginInfo> {
        let b = self.bindings.spear_plugin_reclaimer();
        self.inner
            .call(Budget::Setup, |s| b.call_info(s))
            .map(info_from_wit)
    }

    fn configure(&mut self, config: &str) -> CallResult<()> {
        let b = self.bindings.spear_plugin_reclaimer();
        self.inner
            .call(Budget::Setup, |s| b.call_configure(s, config))?
            .map_err(CallFailure::Plugin)
    }

    fn select(
        &mut self,
        instances: &[api::InstanceStats],
        node: &api::NodePressure,
    ) -> CallResult<Vec<u64>> {
        let b = self.bindings.spear_plugin_reclaimer();
        let instances: Vec<wit::InstanceStats> = instances.iter().map(instance_to_wit).collect();
        let node = wit::NodePressure {
            memory_total_bytes: node.memory_total_bytes,
            memory_used_bytes: node.memory_used_bytes,
            cpu_load_permille: node.cpu_load_permille,
            now_ms: node.now_ms,
        };
        self.inner
            .call(Budget::Call, |s| b.call_select(s, &instances, node))
    }

    fn save_state(&mut self) -> CallResult<Vec<u8>> {
        let b = self.bindings.spear_plugin_reclaimer();
        self.inner.call(Budget::Setup, |s| b.call_save_state(s))
    }

    fn restore_state(&mut self, state: &[u8]) -> CallResult<()> {
        let b = self.bindings.spear_plugin_reclaimer();
        self.inner
            .call(Budget::Setup, |s| b.call_restore_state(s, state))?
            .map_err(CallFailure::Plugin)
    }
}
