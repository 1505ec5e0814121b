//! An instance of a component of the `autoscaling-policy` world.

use spear_plugin_api as api;

use super::autoscaler_world::AutoscalingPolicy;
use super::autoscaler_world::exports::spear::plugin::autoscaler as wit;
use super::{Guest, info_from_wit};
use crate::error::CallFailure;
use crate::instance::{AutoscalerInstance, CallResult};
use crate::limits::Budget;

pub(super) struct ComponentAutoscaler {
    pub(super) inner: Guest,
    pub(super) bindings: AutoscalingPolicy,
}

impl AutoscalerInstance for ComponentAutoscaler {
    fn info(&mut self) -> CallResult<api::PluginInfo> {
        let b = self.bindings.spear_plugin_autoscaler();
        // The world says what the plugin is: `plugin-info.kind` has no autoscaler case.
        self.inner
            .call(Budget::Setup, |s| b.call_info(s))
            .map(info_from_wit)
            .map(|info| api::PluginInfo {
                kind: api::PluginKind::Autoscaler,
                ..info
            })
    }

    fn configure(&mut self, config: &str) -> CallResult<()> {
        let b = self.bindings.spear_plugin_autoscaler();
        self.inner
            .call(Budget::Setup, |s| b.call_configure(s, config))?
            .map_err(CallFailure::Plugin)
    }

    fn decide(&mut self, view: &api::ScaleView) -> CallResult<api::ScaleDecision> {
        let b = self.bindings.spear_plugin_autoscaler();
        let view = view_to_wit(view);
        let decision = self
            .inner
            .call(Budget::Call, |s| b.call_decide(s, &view))?
            .map_err(CallFailure::Plugin)?;
        Ok(api::ScaleDecision {
            desired: decision.desired,
            drain: decision.drain,
        })
    }

    fn save_state(&mut self) -> CallResult<Vec<u8>> {
        let b = self.bindings.spear_plugin_autoscaler();
        self.inner.call(Budget::Setup, |s| b.call_save_state(s))
    }

    fn restore_state(&mut self, state: &[u8]) -> CallResult<()> {
        let b = self.bindings.spear_plugin_autoscaler();
        self.inner
            .call(Budget::Setup, |s| b.call_restore_state(s, state))?
            .map_err(CallFailure::Plugin)
    }
}

fn view_to_wit(v: &api::ScaleView) -> wit::ScaleView {
    wit::ScaleView {
        now_ms: v.now_ms,
        queue: wit::QueueStats {
            depth: v.queue.depth,
            oldest_wait_ms: v.queue.oldest_wait_ms,
            cpu_millis: v.queue.cpu_millis,
            memory_mb: v.queue.memory_mb,
        },
        nodes: v
            .nodes
            .iter()
            .map(|n| wit::ScaleNode {
                id: n.id.clone(),
                managed: n.managed,
                registered: n.registered,
                healthy: n.healthy,
                draining: n.draining,
                slots: n.slots,
                running: n.running,
                idle_ms: n.idle_ms,
                cpu_millis: n.cpu_millis,
                memory_mb: n.memory_mb,
            })
            .collect(),
        limits: wit::ScaleLimits {
            min: v.limits.min,
            max: v.limits.max,
            scale_up_threshold: v.limits.scale_up_threshold,
            scale_down_delay_ms: v.limits.scale_down_delay_ms,
            cooldown_ms: v.limits.cooldown_ms,
        },
        since_last_action_ms: v.since_last_action_ms,
    }
}
