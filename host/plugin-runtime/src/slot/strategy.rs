//! The scheduling-strategy slot: the host's view of the targets, validation of every batch of
//! decisions against it, the round-robin fallback, and the swap of one version for another.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use arc_swap::ArcSwap;
use spear_plugin_api::{Decision, Outcome, Request, Target};

use super::{
    Active, Ctx, Handover, MAX_REJECT_REASON, PreparedStrategy, Previous, Published, SlotStatus,
    UPSERT_CHUNK, activated, clip, published, take_over, timed,
};
use crate::error::{CallFailure, Error, Result};
use crate::fallback::Fallback;
use crate::instance::{CallResult, StrategyInstance};
use crate::limits::Limits;
use crate::plugin::{LoadedPlugin, PluginRef};
use crate::telemetry::Telemetry;

struct StrategyInner {
    view: BTreeMap<u64, Target>,
    active: Option<Active<dyn StrategyInstance>>,
    fallback: Fallback,
}

/// Who decided a batch ([`StrategySlot::place_traced`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Decider {
    /// The plugin active in the slot when the batch was decided (none: no plugin is active).
    pub plugin: Option<PluginRef>,
    /// Set when the built-in fallback decided the batch: why (no plugin active, the plugin is
    /// quarantined, or the failure of this call).
    pub fallback: Option<String>,
    /// What kind of failure made the fallback decide: `none-active`, `quarantined`, or the
    /// call's (`trap`, `deadline`, `memory`, `error`, `invalid`: an answer the host refused).
    pub failure: Option<&'static str>,
}

/// The scheduling strategy of one role, guarded.
pub struct StrategySlot {
    role: String,
    inner: Mutex<StrategyInner>,
    board: ArcSwap<Published>,
    limits: Arc<Limits>,
    telemetry: Arc<Telemetry>,
}

impl std::fmt::Debug for StrategySlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StrategySlot")
            .field("role", &self.role)
            .finish()
    }
}

/// Make a configured strategy instance with the host's view sent to it.
fn fresh_strategy(
    plugin: &LoadedPlugin,
    config: &str,
    view: Option<&BTreeMap<u64, Target>>,
) -> CallResult<Box<dyn StrategyInstance>> {
    let mut instance = plugin.factory.strategy(&plugin.info.name)?;
    instance.configure(config)?;
    if let Some(view) = view {
        send_view(instance.as_mut(), view)?;
    }
    Ok(instance)
}

fn send_view(instance: &mut dyn StrategyInstance, view: &BTreeMap<u64, Target>) -> CallResult<()> {
    let targets: Vec<Target> = view.values().cloned().collect();
    for chunk in targets.chunks(UPSERT_CHUNK) {
        instance.upsert(chunk)?;
    }
    Ok(())
}

/// Check a batch of decisions against the host's rules; on success, claim resources in the view.
fn validate(
    view: &mut BTreeMap<u64, Target>,
    requests: &[Request],
    decisions: &[Decision],
) -> std::result::Result<(), String> {
    if decisions.len() != requests.len() {
        return Err(format!(
            "{} decisions for {} requests",
            decisions.len(),
            requests.len()
        ));
    }
    let mut scratch: BTreeMap<u64, Target> = BTreeMap::new();
    for (r, d) in requests.iter().zip(decisions) {
        let Decision::Assign(id) = d else { continue };
        let target = match scratch.get_mut(id) {
            Some(t) => t,
            None => {
                let t = view
                    .get(id)
                    .ok_or_else(|| format!("request {}: unknown target {id}", r.id))?;
                scratch.entry(*id).or_insert_with(|| t.clone())
            }
        };
        if !r.fits(target) {
            let why = if !target.healthy {
                "is unhealthy"
            } else if !target.available.covers(&r.needs) {
                "lacks the resources it needs"
            } else {
                "lacks a required label"
            };
            return Err(format!("request {}: target {id} {why}", r.id));
        }
        target.claim(&r.needs);
    }
    view.extend(scratch);
    Ok(())
}

impl StrategySlot {
    /// An empty slot for `role`: the fallback decides until a plugin is activated.
    pub fn new(role: impl Into<String>, limits: Arc<Limits>, telemetry: Arc<Telemetry>) -> Self {
        let role = role.into();
        Self {
            inner: Mutex::new(StrategyInner {
                view: BTreeMap::new(),
                active: None,
                fallback: Fallback::default(),
            }),
            board: ArcSwap::new(published::<dyn StrategyInstance>(&role, None)),
            role,
            limits,
            telemetry,
        }
    }

    fn lock(&self) -> MutexGuard<'_, StrategyInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn publish(&self, inner: &StrategyInner) {
        self.board
            .store(published(&self.role, inner.active.as_ref()));
    }

    /// Make `plugin` (configured with `config`) the active strategy: [`prepare`](Self::prepare)
    /// then [`commit`](Self::commit).
    pub fn activate(&self, plugin: &LoadedPlugin, config: &str) -> Result<Handover> {
        let prepared = self.prepare(plugin, config)?;
        self.commit(prepared)
    }

    /// Build and configure an instance of `plugin`, off the decision path.
    pub fn prepare(&self, plugin: &LoadedPlugin, config: &str) -> Result<PreparedStrategy> {
        if plugin.info.kind != spear_plugin_api::PluginKind::SchedulingStrategy {
            return Err(Error::WrongKind {
                subject: plugin.info.name.clone(),
                expected: spear_plugin_api::PluginKind::SchedulingStrategy,
                found: plugin.info.kind,
            });
        }
        let instance = fresh_strategy(plugin, config, None).map_err(|failure| Error::Call {
            plugin: plugin.info.name.clone(),
            failure,
        })?;
        Ok(PreparedStrategy {
            plugin: plugin.clone(),
            config: config.into(),
            instance,
        })
    }

    /// Swap a prepared instance in, between two decisions: the old instance's state is handed over
    /// (same plugin name only), the view is sent, and the new instance takes over. If sending the
    /// view fails the old plugin stays active. Returns what became of the old version's state.
    pub fn commit(&self, prepared: PreparedStrategy) -> Result<Handover> {
        self.commit_keeping(prepared).map(|(handover, _)| handover)
    }

    /// [`commit`](Self::commit), keeping what was active to [`roll_back`](Self::roll_back) to.
    pub fn commit_keeping(
        &self,
        prepared: PreparedStrategy,
    ) -> Result<(Handover, Previous<dyn StrategyInstance>)> {
        let PreparedStrategy {
            plugin,
            config,
            mut instance,
        } = prepared;
        let mut inner = self.lock();
        let ctx = Ctx {
            role: &self.role,
            telemetry: &self.telemetry,
            limits: &self.limits,
        };
        let handover = take_over(
            inner.active.as_mut(),
            &mut instance,
            &plugin,
            &ctx,
            |i| i.save_state(),
            |i, state| i.restore_state(state),
            || fresh_strategy(&plugin, &config, None),
        )?;
        send_view(instance.as_mut(), &inner.view).map_err(|failure| Error::Call {
            plugin: plugin.info.name.clone(),
            failure,
        })?;
        let id = plugin.id.clone();
        let previous = inner.active.replace(Active::new(plugin, config, instance));
        self.publish(&inner);
        drop(inner);
        activated(&self.telemetry, &self.role, &id);
        Ok((handover, Previous(previous)))
    }

    /// Put back what a [`commit_keeping`](Self::commit_keeping) replaced (a later part of the same
    /// reload failed).
    pub fn roll_back(&self, previous: Previous<dyn StrategyInstance>) {
        let mut inner = self.lock();
        inner.active = previous.restore();
        self.publish(&inner);
        if let Some(a) = &inner.active {
            let id = a.plugin.id.clone();
            drop(inner);
            activated(&self.telemetry, &self.role, &id);
        }
    }

    /// Remove the active plugin: the fallback decides from now on.
    pub fn deactivate(&self) {
        let mut inner = self.lock();
        inner.active = None;
        self.publish(&inner);
    }

    /// Decide a batch. Always returns one decision per request, from the plugin when it answers
    /// validly, else from the fallback.
    pub fn place(&self, requests: &[Request]) -> Vec<Decision> {
        self.place_traced(requests).0
    }

    /// [`place`](Self::place), saying who decided.
    pub fn place_traced(&self, requests: &[Request]) -> (Vec<Decision>, Decider) {
        let mut guard = self.lock();
        let inner = &mut *guard;
        let mut decider = Decider {
            plugin: inner.active.as_ref().map(|a| a.plugin.id.clone()),
            fallback: Some(match &inner.active {
                None => "no strategy plugin is active".to_owned(),
                Some(_) => "the strategy plugin is quarantined".to_owned(),
            }),
            failure: Some(match &inner.active {
                None => "none-active",
                Some(_) => "quarantined",
            }),
        };
        if let Some(active) = inner.active.as_mut().filter(|a| !a.quarantined) {
            let name = active.plugin.info.name.clone();
            let result = timed(&self.telemetry, &name, "place", || {
                if active.instance.is_none() {
                    active.instance = Some(fresh_strategy(
                        &active.plugin,
                        &active.config,
                        Some(&inner.view),
                    )?);
                }
                let instance = active.instance.as_mut().expect("instance just ensured");
                instance.place(requests)
            });
            match result.and_then(|d| {
                validate(&mut inner.view, requests, &d)
                    .map(|()| d)
                    .map_err(CallFailure::Invalid)
            }) {
                Ok(mut decisions) => {
                    for d in &mut decisions {
                        if let Decision::Reject(why) = d
                            && why.len() > MAX_REJECT_REASON
                        {
                            *why = clip(why, MAX_REJECT_REASON);
                        }
                    }
                    if active.succeed() {
                        self.publish(inner);
                    }
                    decider.fallback = None;
                    decider.failure = None;
                    return (decisions, decider);
                }
                Err(failure) => {
                    decider.fallback = Some(clip(
                        &format!("the strategy plugin failed: {failure}"),
                        MAX_REJECT_REASON,
                    ));
                    decider.failure = Some(super::failure_label(&failure));
                    active.fail(&self.role, "place", failure, &self.telemetry, &self.limits);
                    self.publish(inner);
                }
            }
        }
        self.telemetry
            .fallback_decisions
            .with_label_values(&[&self.role])
            .inc_by(requests.len() as u64);
        (inner.fallback.place(&mut inner.view, requests), decider)
    }

    /// Add or replace targets in the host's view and the plugin's.
    pub fn upsert(&self, targets: Vec<Target>) {
        self.with_plugin(
            "upsert",
            |view| {
                for t in &targets {
                    view.insert(t.id, t.clone());
                }
            },
            |i| {
                targets
                    .chunks(UPSERT_CHUNK)
                    .try_for_each(|chunk| i.upsert(chunk))
            },
        );
    }

    /// Remove targets from the host's view and the plugin's.
    pub fn remove(&self, ids: &[u64]) {
        self.with_plugin(
            "remove",
            |view| {
                for id in ids {
                    view.remove(id);
                }
            },
            |i| i.remove(ids),
        );
    }

    /// Feed outcomes back to the plugin.
    pub fn observe(&self, outcomes: &[Outcome]) {
        self.with_plugin("observe", |_| {}, |i| i.observe(outcomes));
    }

    fn with_plugin(
        &self,
        call: &str,
        update_view: impl FnOnce(&mut BTreeMap<u64, Target>),
        f: impl FnOnce(&mut dyn StrategyInstance) -> CallResult<()>,
    ) {
        let mut guard = self.lock();
        let inner = &mut *guard;
        update_view(&mut inner.view);
        let Some(active) = inner.active.as_mut().filter(|a| !a.quarantined) else {
            return;
        };
        // An instance that failed earlier is re-created on the next placement, from the view.
        let Some(instance) = active.instance.as_mut() else {
            return;
        };
        let name = active.plugin.info.name.clone();
        if let Err(failure) = timed(&self.telemetry, &name, call, || f(instance.as_mut())) {
            active.fail(&self.role, call, failure, &self.telemetry, &self.limits);
            self.publish(inner);
        }
    }

    /// The host's view (for tests and APIs).
    pub fn view(&self) -> Vec<Target> {
        self.lock().view.values().cloned().collect()
    }

    /// The targets of `ids` in the host's view, as they stand (those it has).
    pub fn targets(&self, ids: &[u64]) -> Vec<Target> {
        let inner = self.lock();
        ids.iter()
            .filter_map(|id| inner.view.get(id).cloned())
            .collect()
    }

    /// State of the slot (a snapshot: never waits for a call in flight).
    pub fn status(&self) -> SlotStatus {
        self.board.load().status.clone()
    }

    /// The active plugin, if any (a snapshot).
    pub fn active(&self) -> Option<PluginRef> {
        self.board.load().status.plugin.clone()
    }

    /// The active plugin as loaded (to re-configure it after its file is gone or replaced).
    pub fn active_plugin(&self) -> Option<LoadedPlugin> {
        self.board.load().plugin.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use spear_plugin_api::{Label, Resources};

    fn target(id: u64, healthy: bool, mem: u64) -> Target {
        Target {
            id,
            name: format!("n{id}"),
            labels: vec![Label::new("zone", "a")],
            capacity: Resources {
                cpu_millis: 1000,
                memory_mb: mem,
                disk_mb: 0,
            },
            available: Resources {
                cpu_millis: 1000,
                memory_mb: mem,
                disk_mb: 0,
            },
            active: 0,
            weight: 1,
            healthy,
        }
    }

    fn request(id: u64, mem: u64) -> Request {
        Request {
            id,
            task: "t".into(),
            labels: vec![],
            needs: Resources {
                cpu_millis: 0,
                memory_mb: mem,
                disk_mb: 0,
            },
            required: vec![],
            preferred: vec![],
        }
    }

    #[test]
    fn validation_rejects_unknown_unhealthy_and_overcommitted_targets() {
        let mut view: BTreeMap<u64, Target> = [target(1, true, 100), target(2, false, 100)]
            .into_iter()
            .map(|t| (t.id, t))
            .collect();
        let unknown = validate(&mut view, &[request(1, 1)], &[Decision::Assign(9)]);
        assert_eq!(unknown.unwrap_err(), "request 1: unknown target 9");
        let unhealthy = validate(&mut view, &[request(1, 1)], &[Decision::Assign(2)]);
        assert_eq!(unhealthy.unwrap_err(), "request 1: target 2 is unhealthy");
        // Two requests of 60 MiB each do not fit on one 100 MiB target within one batch.
        let over = validate(
            &mut view,
            &[request(1, 60), request(2, 60)],
            &[Decision::Assign(1), Decision::Assign(1)],
        );
        assert_eq!(
            over.unwrap_err(),
            "request 2: target 1 lacks the resources it needs"
        );
        assert_eq!(
            view[&1].available.memory_mb, 100,
            "a rejected batch claims nothing"
        );
        let count = validate(&mut view, &[request(1, 1)], &[]);
        assert_eq!(count.unwrap_err(), "0 decisions for 1 requests");
        validate(&mut view, &[request(1, 60)], &[Decision::Assign(1)]).unwrap();
        assert_eq!(
            view[&1].available.memory_mb, 40,
            "a valid batch claims its needs"
        );
    }

    #[test]
    fn empty_slot_decides_by_fallback() {
        let slot = StrategySlot::new(
            "test",
            Arc::new(Limits::new(Default::default())),
            Arc::new(Telemetry::new()),
        );
        slot.upsert(vec![
            target(1, true, 10),
            target(2, true, 10),
            target(3, false, 10),
        ]);
        let d = slot.place(&[request(1, 0), request(2, 0), request(3, 0)]);
        assert_eq!(
            d,
            vec![
                Decision::Assign(1),
                Decision::Assign(2),
                Decision::Assign(1)
            ]
        );
        assert_eq!(slot.telemetry.fallback_decisions_of("test"), 3);
        let (_, decider) = slot.place_traced(&[request(4, 0)]);
        assert_eq!(decider.plugin, None);
        assert_eq!(
            decider.fallback.as_deref(),
            Some("no strategy plugin is active")
        );
        assert_eq!(decider.failure, Some("none-active"));
    }
}
