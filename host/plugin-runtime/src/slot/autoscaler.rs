//! The autoscaler slot: the same guard as the other slots (failures counted, quarantine, state
//! hand-over), with answers checked against the view and the operator's limits, and a fallback
//! that changes nothing.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, MutexGuard};

use spear_plugin_api::{ScaleDecision, ScaleView};

use arc_swap::ArcSwap;

use super::{
    Active, Ctx, Handover, PreparedAutoscaler, Previous, Published, SlotStatus, activated,
    published, take_over, timed,
};
use crate::error::{CallFailure, Error, Result};
use crate::instance::{AutoscalerInstance, CallResult};
use crate::limits::Limits;
use crate::plugin::{LoadedPlugin, PluginRef};
use crate::telemetry::Telemetry;

/// The autoscaling policy of SMS, guarded. Its fallback changes nothing: when the policy fails,
/// keeping the pool as it is is the safe answer.
pub struct AutoscalerSlot {
    role: String,
    active: Mutex<Option<Active<dyn AutoscalerInstance>>>,
    board: ArcSwap<Published>,
    limits: Arc<Limits>,
    telemetry: Arc<Telemetry>,
}

impl std::fmt::Debug for AutoscalerSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AutoscalerSlot")
            .field("role", &self.role)
            .finish()
    }
}

fn fresh_autoscaler(
    plugin: &LoadedPlugin,
    config: &str,
) -> CallResult<Box<dyn AutoscalerInstance>> {
    let mut instance = plugin.factory.autoscaler(&plugin.info.name)?;
    instance.configure(config)?;
    Ok(instance)
}

impl AutoscalerSlot {
    /// An empty slot: nothing is scaled until a policy is activated.
    pub fn new(role: impl Into<String>, limits: Arc<Limits>, telemetry: Arc<Telemetry>) -> Self {
        let role = role.into();
        Self {
            active: Mutex::new(None),
            board: ArcSwap::new(published::<dyn AutoscalerInstance>(&role, None)),
            role,
            limits,
            telemetry,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Option<Active<dyn AutoscalerInstance>>> {
        self.active.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn publish(&self, active: Option<&Active<dyn AutoscalerInstance>>) {
        self.board.store(published(&self.role, active));
    }

    /// Make `plugin` (configured with `config`) the active policy.
    pub fn activate(&self, plugin: &LoadedPlugin, config: &str) -> Result<Handover> {
        let prepared = self.prepare(plugin, config)?;
        self.commit(prepared)
    }

    /// Build and configure an instance of `plugin`, off the decision path.
    pub fn prepare(&self, plugin: &LoadedPlugin, config: &str) -> Result<PreparedAutoscaler> {
        if plugin.info.kind != spear_plugin_api::PluginKind::Autoscaler {
            return Err(Error::WrongKind {
                subject: plugin.info.name.clone(),
                expected: spear_plugin_api::PluginKind::Autoscaler,
                found: plugin.info.kind,
            });
        }
        let instance = fresh_autoscaler(plugin, config).map_err(|failure| Error::Call {
            plugin: plugin.info.name.clone(),
            failure,
        })?;
        Ok(PreparedAutoscaler {
            plugin: plugin.clone(),
            config: config.into(),
            instance,
        })
    }

    /// Swap a prepared instance in, handing over state from the same plugin's old version.
    pub fn commit(&self, prepared: PreparedAutoscaler) -> Result<Handover> {
        self.commit_keeping(prepared).map(|(handover, _)| handover)
    }

    /// [`commit`](Self::commit), keeping what was active to [`roll_back`](Self::roll_back) to.
    pub fn commit_keeping(
        &self,
        prepared: PreparedAutoscaler,
    ) -> Result<(Handover, Previous<dyn AutoscalerInstance>)> {
        let PreparedAutoscaler {
            plugin,
            config,
            mut instance,
        } = prepared;
        let mut active = self.lock();
        let ctx = Ctx {
            role: &self.role,
            telemetry: &self.telemetry,
            limits: &self.limits,
        };
        let handover = take_over(
            active.as_mut(),
            &mut instance,
            &plugin,
            &ctx,
            |i| i.save_state(),
            |i, state| i.restore_state(state),
            || fresh_autoscaler(&plugin, &config),
        )?;
        let id = plugin.id.clone();
        let previous = active.replace(Active::new(plugin, config, instance));
        self.publish(active.as_ref());
        drop(active);
        activated(&self.telemetry, &self.role, &id);
        Ok((handover, Previous(previous)))
    }

    /// Put back what a [`commit_keeping`](Self::commit_keeping) replaced.
    pub fn roll_back(&self, previous: Previous<dyn AutoscalerInstance>) {
        let mut active = self.lock();
        *active = previous.restore();
        self.publish(active.as_ref());
        if let Some(a) = active.as_ref() {
            let id = a.plugin.id.clone();
            drop(active);
            activated(&self.telemetry, &self.role, &id);
        }
    }

    /// Remove the active policy: nothing is scaled from now on.
    pub fn deactivate(&self) {
        let mut active = self.lock();
        *active = None;
        self.publish(None);
    }

    /// The policy's answer for `view`, checked: `None` when no policy is active, it is
    /// quarantined, or it failed (the failure is counted). An answer is invalid when `desired` is
    /// outside `view.limits.min..=max`, or `drain` names a node that is not managed, twice, or more
    /// than [`MAX_DRAIN`] nodes.
    pub fn decide(&self, view: &ScaleView) -> Option<ScaleDecision> {
        let mut guard = self.lock();
        let active = guard.as_mut().filter(|a| !a.quarantined)?;
        let name = active.plugin.info.name.clone();
        let result = timed(&self.telemetry, &name, "decide", || {
            if active.instance.is_none() {
                active.instance = Some(fresh_autoscaler(&active.plugin, &active.config)?);
            }
            let instance = active.instance.as_mut().expect("instance just ensured");
            instance.decide(view)
        });
        match result.and_then(|d| check(d, view)) {
            Ok(decision) => {
                if active.succeed() {
                    self.publish(Some(active));
                }
                Some(decision)
            }
            Err(failure) => {
                active.fail(&self.role, "decide", failure, &self.telemetry, &self.limits);
                self.publish(Some(active));
                None
            }
        }
    }

    /// State of the slot (a snapshot: never waits for a call in flight).
    pub fn status(&self) -> SlotStatus {
        self.board.load().status.clone()
    }

    /// The active plugin, if any (a snapshot).
    pub fn active(&self) -> Option<PluginRef> {
        self.board.load().status.plugin.clone()
    }

    /// The active plugin as loaded (a snapshot).
    pub fn active_plugin(&self) -> Option<LoadedPlugin> {
        self.board.load().plugin.clone()
    }
}

/// The most nodes one decision may name to drain.
pub const MAX_DRAIN: usize = 1024;

/// `decision` if it is valid for `view`.
fn check(decision: ScaleDecision, view: &ScaleView) -> Result<ScaleDecision, CallFailure> {
    let limits = &view.limits;
    if decision.desired < limits.min || decision.desired > limits.max {
        return Err(CallFailure::Invalid(format!(
            "desired {} is outside min {} ..= max {}",
            decision.desired, limits.min, limits.max
        )));
    }
    if decision.drain.len() > MAX_DRAIN {
        return Err(CallFailure::Invalid(format!(
            "{} nodes to drain, over the {MAX_DRAIN} allowed",
            decision.drain.len()
        )));
    }
    let managed: BTreeSet<&str> = view
        .nodes
        .iter()
        .filter(|n| n.managed)
        .map(|n| n.id.as_str())
        .collect();
    let mut seen = BTreeSet::new();
    for id in &decision.drain {
        if !managed.contains(id.as_str()) {
            let shown: String = id.chars().take(80).collect();
            return Err(CallFailure::Invalid(format!(
                "drain names {shown:?}, not a managed node"
            )));
        }
        if !seen.insert(id.as_str()) {
            return Err(CallFailure::Invalid(format!("drain names {id} twice")));
        }
    }
    Ok(decision)
}

#[cfg(test)]
mod tests {
    use spear_plugin_api::{ScaleLimits, ScaleNode};

    use super::*;

    fn view() -> ScaleView {
        let node = |id: &str, managed| ScaleNode {
            id: id.into(),
            managed,
            registered: true,
            healthy: true,
            draining: false,
            slots: 1,
            running: 0,
            idle_ms: 0,
            cpu_millis: 0,
            memory_mb: 0,
        };
        ScaleView {
            nodes: vec![node("a", true), node("b", false)],
            limits: ScaleLimits {
                min: 1,
                max: 3,
                ..ScaleLimits::default()
            },
            ..ScaleView::default()
        }
    }

    fn decision(desired: u32, drain: &[&str]) -> ScaleDecision {
        ScaleDecision {
            desired,
            drain: drain.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn answers_outside_the_limits_or_naming_other_nodes_are_invalid() {
        let v = view();
        assert!(check(decision(1, &["a"]), &v).is_ok());
        assert!(check(decision(3, &[]), &v).is_ok());
        for (bad, why) in [
            (decision(0, &[]), "outside min"),
            (decision(4, &[]), "outside min"),
            (decision(1, &["b"]), "not a managed node"),
            (decision(1, &["zz"]), "not a managed node"),
            (decision(1, &["a", "a"]), "twice"),
        ] {
            let err = check(bad, &v).expect_err(why).to_string();
            assert!(err.contains(why), "{err}");
        }
    }
}
