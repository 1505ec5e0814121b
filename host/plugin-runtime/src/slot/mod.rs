//! Guarded slots: the plugin active in a role, the host's view, validation, fallback, quarantine.
//!
//! A slot serializes its decisions (one mutex): a swap waits for the decision in flight to finish on
//! the old instance, and the next decision runs on the new one. No decision is dropped or fails
//! because of a swap: any failing call is answered by the built-in fallback.
//!
//! - Every call's failure (trap, deadline, memory limit, error value) is counted; the instance is
//!   dropped (and what it learned with it) and re-created — configured, the view re-sent — at the
//!   next placement. Until then `upsert`, `remove` and `observe` only update the host's view.
//! - Every answer is validated ([`Request::fits`] over the host's view, one decision per request,
//!   ids known); an invalid answer counts as a failure and the fallback decides that batch.
//! - After `quarantine_after` consecutive failures the plugin is quarantined: the fallback decides
//!   until a new file or config activates a plugin again.
//!
//! Readers (APIs, reloads, status pages) never take the slot's mutex: every change of the active
//! plugin, its failures or its quarantine is published as a snapshot ([`ArcSwap`]), so a guest call
//! in flight — however long it takes — costs only the callers that need its answer.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use arc_swap::ArcSwap;
use serde::Serialize;
use spear_plugin_api::{Decision, Outcome, Request, Target};

use crate::error::{CallFailure, Error, Result};
use crate::fallback::Fallback;
use crate::instance::{CallResult, ReclaimerInstance, StrategyInstance};
use crate::limits::Limits;
use crate::plugin::{LoadedPlugin, PluginRef};
use crate::telemetry::{EventKind, Telemetry};

mod reclaimer;
pub use reclaimer::ReclaimerSlot;

/// Targets per `upsert` call when a view is (re-)sent in bulk, to keep each call short.
const UPSERT_CHUNK: usize = 256;

/// What a slot reports about itself.
#[derive(Debug, Clone, Serialize)]
pub struct SlotStatus {
    /// The role (`scheduler`, `reclaimer`).
    pub role: String,
    /// The plugin in the slot, if any.
    pub plugin: Option<PluginRef>,
    /// The JSON configuration handed to it.
    pub config: String,
    /// Whether it is quarantined (the fallback decides).
    pub quarantined: bool,
    /// Failures since its last success.
    pub consecutive_failures: u32,
    /// The last failure, if any.
    pub last_error: Option<String>,
}

impl SlotStatus {
    /// The status of a slot with no plugin.
    fn empty(role: &str) -> Self {
        Self {
            role: role.into(),
            plugin: None,
            config: String::new(),
            quarantined: false,
            consecutive_failures: 0,
            last_error: None,
        }
    }
}

/// What a slot shows its readers, published at every change.
struct Published {
    status: SlotStatus,
    plugin: Option<LoadedPlugin>,
}

/// The snapshot of `active` in `role`.
fn published<I: ?Sized>(role: &str, active: Option<&Active<I>>) -> Arc<Published> {
    Arc::new(Published {
        status: active.map_or_else(|| SlotStatus::empty(role), |a| a.status(role)),
        plugin: active.map(|a| a.plugin.clone()),
    })
}

/// A strategy instance built and configured, waiting to be committed.
pub struct PreparedStrategy {
    plugin: LoadedPlugin,
    config: String,
    instance: Box<dyn StrategyInstance>,
}

/// A reclamation-policy instance built and configured, waiting to be committed.
pub struct PreparedReclaimer {
    plugin: LoadedPlugin,
    config: String,
    instance: Box<dyn ReclaimerInstance>,
}

/// A plugin active in a slot.
struct Active<I: ?Sized> {
    plugin: LoadedPlugin,
    config: String,
    instance: Option<Box<I>>,
    consecutive_failures: u32,
    quarantined: bool,
    last_error: Option<String>,
}

fn failure_label(f: &CallFailure) -> &'static str {
    match f {
        CallFailure::Trap(_) => "trap",
        CallFailure::Deadline(_) | CallFailure::Budget(_) => "deadline",
        CallFailure::Memory(_) => "memory",
        CallFailure::Plugin(_) => "error",
        CallFailure::Invalid(_) => "invalid",
    }
}

impl<I: ?Sized> Active<I> {
    /// A freshly activated plugin: no failures yet.
    fn new(plugin: LoadedPlugin, config: String, instance: Box<I>) -> Self {
        Self {
            plugin,
            config,
            instance: Some(instance),
            consecutive_failures: 0,
            quarantined: false,
            last_error: None,
        }
    }

    /// Count a failure; drop the instance; quarantine at the threshold.
    fn fail(
        &mut self,
        role: &str,
        call: &str,
        failure: CallFailure,
        t: &Telemetry,
        limits: &Limits,
    ) {
        let name = self.plugin.info.name.clone();
        t.failures
            .with_label_values(&[&name, failure_label(&failure)])
            .inc();
        self.instance = None;
        self.consecutive_failures += 1;
        // A guest chooses these texts (trap messages, error values): keep them bounded.
        let text = clip(&failure.to_string(), MAX_FAILURE_TEXT);
        let message = format!("{role}: `{call}` {text}; the fallback decides");
        self.last_error = Some(text);
        t.emit(
            EventKind::CallFailed,
            Some(&name),
            Some(&self.plugin.id.file),
            Some(&self.plugin.id.sha256),
            message,
        );
        let threshold = limits.get().quarantine_after.max(1);
        if !self.quarantined && self.consecutive_failures >= threshold {
            self.quarantined = true;
            t.emit(
                EventKind::Quarantined,
                Some(&name),
                Some(&self.plugin.id.file),
                Some(&self.plugin.id.sha256),
                format!(
                    "{role}: quarantined after {} consecutive failures; the built-in fallback \
                     decides until a new file or config arrives",
                    self.consecutive_failures
                ),
            );
        }
    }

    /// Reset the failure count; `true` when that changed anything readers see.
    fn succeed(&mut self) -> bool {
        std::mem::take(&mut self.consecutive_failures) != 0
    }

    fn status(&self, role: &str) -> SlotStatus {
        SlotStatus {
            role: role.into(),
            plugin: Some(self.plugin.id.clone()),
            config: self.config.clone(),
            quarantined: self.quarantined,
            consecutive_failures: self.consecutive_failures,
            last_error: self.last_error.clone(),
        }
    }
}

fn activated(t: &Telemetry, role: &str, id: &PluginRef) {
    t.emit(
        EventKind::Activated,
        Some(&id.name),
        Some(&id.file),
        Some(&id.sha256),
        format!("{role}: {} {} ({}) active", id.name, id.version, id.form),
    );
}

fn state_not_carried(t: &Telemetry, role: &str, plugin: &LoadedPlugin, why: &str) {
    t.emit(
        EventKind::StateNotCarried,
        Some(&plugin.info.name),
        Some(&plugin.id.file),
        Some(&plugin.id.sha256),
        format!("{role}: the previous version's state was not taken over ({why}); starting fresh"),
    );
}

/// The most bytes of a failure's text kept (in `last_error` and events).
pub const MAX_FAILURE_TEXT: usize = 1024;
/// The most bytes of a `reject` reason kept.
pub const MAX_REJECT_REASON: usize = 256;

/// `text` cut to at most `max` bytes (on a character boundary), marked when cut.
pub(crate) fn clip(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes)", &text[..end], text.len())
}

/// The largest state blob a plugin may hand over at a swap.
pub const MAX_STATE_BYTES: usize = 16 * 1024 * 1024;

/// What became of the previous version's state at a swap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handover {
    /// No previous version of the same plugin was active: nothing to carry.
    NotApplicable,
    /// The new version took over this many bytes of state.
    Carried(usize),
    /// The state was not carried (why); the new version started fresh.
    NotCarried(String),
}

impl std::fmt::Display for Handover {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Handover::NotApplicable => f.write_str("no previous state"),
            Handover::Carried(n) => write!(f, "state carried ({n} bytes)"),
            Handover::NotCarried(why) => write!(f, "state not carried: {why}"),
        }
    }
}

/// The state of the active version of `plugin`'s name, if one is active: `Ok(None)` when there is
/// none to carry, `Err(why)` when saving it failed (counted as a failure of the old version).
fn save_old<I: ?Sized>(
    old: Option<&mut Active<I>>,
    plugin: &LoadedPlugin,
    role: &str,
    t: &Telemetry,
    limits: &Limits,
    save: impl FnOnce(&mut I) -> CallResult<Vec<u8>>,
) -> std::result::Result<Option<Vec<u8>>, String> {
    let Some(old) = old.filter(|o| o.plugin.info.name == plugin.info.name) else {
        return Ok(None);
    };
    let Some(instance) = old.instance.as_mut() else {
        return Err("the running instance had failed earlier; its state was lost".into());
    };
    let name = old.plugin.info.name.clone();
    let saved = timed(t, &name, "save-state", || save(instance)).and_then(|state| {
        if state.len() > MAX_STATE_BYTES {
            Err(CallFailure::Invalid(format!(
                "save-state returned {} bytes, over the {MAX_STATE_BYTES}-byte limit",
                state.len()
            )))
        } else {
            Ok(state)
        }
    });
    match saved {
        Ok(state) => Ok(Some(state)),
        Err(failure) => {
            let why = format!("save-state {failure}");
            old.fail(role, "save-state", failure, t, limits);
            Err(why)
        }
    }
}

fn timed<R>(t: &Telemetry, plugin: &str, call: &str, f: impl FnOnce() -> R) -> R {
    let start = Instant::now();
    let r = f();
    t.calls.with_label_values(&[plugin, call]).inc();
    t.call_seconds
        .with_label_values(&[plugin, call])
        .observe(start.elapsed().as_secs_f64());
    r
}

struct StrategyInner {
    view: BTreeMap<u64, Target>,
    active: Option<Active<dyn StrategyInstance>>,
    fallback: Fallback,
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
        let PreparedStrategy {
            plugin,
            config,
            mut instance,
        } = prepared;
        let mut inner = self.lock();
        let saved = save_old(
            inner.active.as_mut(),
            &plugin,
            &self.role,
            &self.telemetry,
            &self.limits,
            |i| i.save_state(),
        );
        let handover = match saved {
            Ok(None) => Handover::NotApplicable,
            Ok(Some(state)) => match instance.restore_state(&state) {
                Ok(()) => Handover::Carried(state.len()),
                Err(e) => {
                    // A refused or failed restore may leave the instance half-restored (or, for
                    // a component that trapped, unusable): start from a fresh one.
                    instance =
                        fresh_strategy(&plugin, &config, None).map_err(|failure| Error::Call {
                            plugin: plugin.info.name.clone(),
                            failure,
                        })?;
                    Handover::NotCarried(format!("restore-state {e}"))
                }
            },
            Err(why) => Handover::NotCarried(why),
        };
        if let Handover::NotCarried(why) = &handover {
            state_not_carried(&self.telemetry, &self.role, &plugin, why);
        }
        send_view(instance.as_mut(), &inner.view).map_err(|failure| Error::Call {
            plugin: plugin.info.name.clone(),
            failure,
        })?;
        let id = plugin.id.clone();
        inner.active = Some(Active::new(plugin, config, instance));
        self.publish(&inner);
        drop(inner);
        activated(&self.telemetry, &self.role, &id);
        Ok(handover)
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
        let mut guard = self.lock();
        let inner = &mut *guard;
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
                    return decisions;
                }
                Err(failure) => {
                    active.fail(&self.role, "place", failure, &self.telemetry, &self.limits);
                    self.publish(inner);
                }
            }
        }
        self.telemetry
            .fallback_decisions
            .with_label_values(&[&self.role])
            .inc_by(requests.len() as u64);
        inner.fallback.place(&mut inner.view, requests)
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
    }
}
