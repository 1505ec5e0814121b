//! The reclamation-policy slot: the same guard as the strategy slot (failures counted, quarantine,
//! state hand-over), with answers checked against the instances offered, and a fallback that
//! stops nothing.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, MutexGuard};

use spear_plugin_api::{InstanceStats, NodePressure};

use arc_swap::ArcSwap;

use super::{
    Active, Ctx, Handover, PreparedReclaimer, Previous, Published, SlotStatus, activated,
    published, take_over, timed,
};
use crate::error::{CallFailure, Error, Result};
use crate::instance::{CallResult, ReclaimerInstance};
use crate::limits::Limits;
use crate::plugin::{LoadedPlugin, PluginRef};
use crate::telemetry::Telemetry;

/// The reclamation policy of a Spearlet, guarded. Its fallback stops nothing: when the policy fails,
/// keeping instances is the safe answer.
pub struct ReclaimerSlot {
    role: String,
    active: Mutex<Option<Active<dyn ReclaimerInstance>>>,
    board: ArcSwap<Published>,
    limits: Arc<Limits>,
    telemetry: Arc<Telemetry>,
}

impl std::fmt::Debug for ReclaimerSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReclaimerSlot")
            .field("role", &self.role)
            .finish()
    }
}

fn fresh_reclaimer(plugin: &LoadedPlugin, config: &str) -> CallResult<Box<dyn ReclaimerInstance>> {
    let mut instance = plugin.factory.reclaimer(&plugin.info.name)?;
    instance.configure(config)?;
    Ok(instance)
}

impl ReclaimerSlot {
    /// An empty slot: nothing is reclaimed until a policy is activated.
    pub fn new(role: impl Into<String>, limits: Arc<Limits>, telemetry: Arc<Telemetry>) -> Self {
        let role = role.into();
        Self {
            active: Mutex::new(None),
            board: ArcSwap::new(published::<dyn ReclaimerInstance>(&role, None)),
            role,
            limits,
            telemetry,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Option<Active<dyn ReclaimerInstance>>> {
        self.active.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn publish(&self, active: Option<&Active<dyn ReclaimerInstance>>) {
        self.board.store(published(&self.role, active));
    }

    /// Make `plugin` (configured with `config`) the active policy.
    pub fn activate(&self, plugin: &LoadedPlugin, config: &str) -> Result<Handover> {
        let prepared = self.prepare(plugin, config)?;
        self.commit(prepared)
    }

    /// Build and configure an instance of `plugin`, off the decision path.
    pub fn prepare(&self, plugin: &LoadedPlugin, config: &str) -> Result<PreparedReclaimer> {
        if plugin.info.kind != spear_plugin_api::PluginKind::ReclamationPolicy {
            return Err(Error::WrongKind {
                subject: plugin.info.name.clone(),
                expected: spear_plugin_api::PluginKind::ReclamationPolicy,
                found: plugin.info.kind,
            });
        }
        let instance = fresh_reclaimer(plugin, config).map_err(|failure| Error::Call {
            plugin: plugin.info.name.clone(),
            failure,
        })?;
        Ok(PreparedReclaimer {
            plugin: plugin.clone(),
            config: config.into(),
            instance,
        })
    }

    /// Swap a prepared instance in, handing over state from the same plugin's old version.
    pub fn commit(&self, prepared: PreparedReclaimer) -> Result<Handover> {
        self.commit_keeping(prepared).map(|(handover, _)| handover)
    }

    /// [`commit`](Self::commit), keeping what was active to [`roll_back`](Self::roll_back) to.
    pub fn commit_keeping(
        &self,
        prepared: PreparedReclaimer,
    ) -> Result<(Handover, Previous<dyn ReclaimerInstance>)> {
        let PreparedReclaimer {
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
            || fresh_reclaimer(&plugin, &config),
        )?;
        let id = plugin.id.clone();
        let previous = active.replace(Active::new(plugin, config, instance));
        self.publish(active.as_ref());
        drop(active);
        activated(&self.telemetry, &self.role, &id);
        Ok((handover, Previous(previous)))
    }

    /// Put back what a [`commit_keeping`](Self::commit_keeping) replaced.
    pub fn roll_back(&self, previous: Previous<dyn ReclaimerInstance>) {
        let mut active = self.lock();
        *active = previous.restore();
        self.publish(active.as_ref());
        if let Some(a) = active.as_ref() {
            let id = a.plugin.id.clone();
            drop(active);
            activated(&self.telemetry, &self.role, &id);
        }
    }

    /// Remove the active policy: nothing is reclaimed from now on.
    pub fn deactivate(&self) {
        let mut active = self.lock();
        *active = None;
        self.publish(None);
    }

    /// Ids of the instances to stop. Invalid answers (unknown or repeated ids) count as failures and
    /// stop nothing.
    pub fn select(&self, instances: &[InstanceStats], node: &NodePressure) -> Vec<u64> {
        let mut guard = self.lock();
        let Some(active) = guard.as_mut().filter(|a| !a.quarantined) else {
            return Vec::new();
        };
        let name = active.plugin.info.name.clone();
        let result = timed(&self.telemetry, &name, "select", || {
            if active.instance.is_none() {
                active.instance = Some(fresh_reclaimer(&active.plugin, &active.config)?);
            }
            let instance = active.instance.as_mut().expect("instance just ensured");
            instance.select(instances, node)
        });
        let known: BTreeSet<u64> = instances.iter().map(|i| i.id).collect();
        let checked = result.and_then(|ids| {
            let mut seen = BTreeSet::new();
            for id in &ids {
                if !known.contains(id) {
                    return Err(CallFailure::Invalid(format!("unknown instance {id}")));
                }
                if !seen.insert(*id) {
                    return Err(CallFailure::Invalid(format!("instance {id} named twice")));
                }
            }
            Ok(ids)
        });
        match checked {
            Ok(ids) => {
                if active.succeed() {
                    self.publish(Some(active));
                }
                ids
            }
            Err(failure) => {
                active.fail(&self.role, "select", failure, &self.telemetry, &self.limits);
                self.publish(Some(active));
                Vec::new()
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
