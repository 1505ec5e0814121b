//! An instance of a component of the `scheduling-strategy` world.

use spear_plugin_api as api;

use super::convert::{request_to_wit, target_to_wit};
use super::strategy_world::SchedulingStrategy;
use super::{Guest, info_from_wit, wit};
use crate::error::CallFailure;
use crate::instance::{CallResult, StrategyInstance};
use crate::limits::Budget;

pub(super) struct ComponentStrategy {
    pub(super) inner: Guest,
    pub(super) bindings: SchedulingStrategy,
}

impl StrategyInstance for ComponentStrategy {
    fn info(&mut self) -> CallResult<api::PluginInfo> {
        let b = self.bindings.spear_plugin_strategy();
        self.inner
            .call(Budget::Setup, |s| b.call_info(s))
            .map(info_from_wit)
    }

    fn configure(&mut self, config: &str) -> CallResult<()> {
        let b = self.bindings.spear_plugin_strategy();
        self.inner
            .call(Budget::Setup, |s| b.call_configure(s, config))?
            .map_err(CallFailure::Plugin)
    }

    fn upsert(&mut self, targets: &[api::Target]) -> CallResult<()> {
        let b = self.bindings.spear_plugin_strategy();
        let targets: Vec<wit::Target> = targets.iter().map(target_to_wit).collect();
        self.inner
            .call(Budget::Call, |s| b.call_upsert(s, &targets))
    }

    fn remove(&mut self, ids: &[u64]) -> CallResult<()> {
        let b = self.bindings.spear_plugin_strategy();
        self.inner.call(Budget::Call, |s| b.call_remove(s, ids))
    }

    fn place(&mut self, requests: &[api::Request]) -> CallResult<Vec<api::Decision>> {
        let b = self.bindings.spear_plugin_strategy();
        let requests: Vec<wit::Request> = requests.iter().map(request_to_wit).collect();
        let decisions = self
            .inner
            .call(Budget::Call, |s| b.call_place(s, &requests))?;
        Ok(decisions
            .into_iter()
            .map(|d| match d {
                wit::Decision::Assign(id) => api::Decision::Assign(id),
                wit::Decision::Reject(why) => api::Decision::Reject(why),
            })
            .collect())
    }

    fn observe(&mut self, outcomes: &[api::Outcome]) -> CallResult<()> {
        let b = self.bindings.spear_plugin_strategy();
        let outcomes: Vec<wit::Outcome> = outcomes
            .iter()
            .map(|o| wit::Outcome {
                request: o.request,
                target: o.target,
                success: o.success,
                latency_us: o.latency_us,
            })
            .collect();
        self.inner
            .call(Budget::Call, |s| b.call_observe(s, &outcomes))
    }

    fn save_state(&mut self) -> CallResult<Vec<u8>> {
        let b = self.bindings.spear_plugin_strategy();
        self.inner.call(Budget::Setup, |s| b.call_save_state(s))
    }

    fn restore_state(&mut self, state: &[u8]) -> CallResult<()> {
        let b = self.bindings.spear_plugin_strategy();
        self.inner
            .call(Budget::Setup, |s| b.call_restore_state(s, state))?
            .map_err(CallFailure::Plugin)
    }
}
