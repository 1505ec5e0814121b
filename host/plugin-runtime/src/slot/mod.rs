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

use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;

use crate::error::CallFailure;
use crate::instance::{AutoscalerInstance, CallResult, ReclaimerInstance, StrategyInstance};
use crate::limits::Limits;
use crate::plugin::{LoadedPlugin, PluginRef};
use crate::telemetry::{EventKind, Telemetry};

mod autoscaler;
mod reclaimer;
mod strategy;
pub use autoscaler::{AutoscalerSlot, MAX_DRAIN};
pub use reclaimer::ReclaimerSlot;
pub use strategy::{Decider, StrategySlot};

/// Targets per `upsert` call when a view is (re-)sent in bulk, to keep each call short.
const UPSERT_CHUNK: usize = 256;

/// What a slot reports about itself.
#[derive(Debug, Clone, Serialize)]
pub struct SlotStatus {
    /// The role (`scheduler`, `reclaimer`, `autoscaler`).
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

/// An autoscaler instance built and configured, waiting to be committed.
pub struct PreparedAutoscaler {
    plugin: LoadedPlugin,
    config: String,
    instance: Box<dyn AutoscalerInstance>,
}

/// What a slot held before a commit, to put back if a later part of the same reload fails.
pub struct Previous<I: ?Sized>(Option<Active<I>>);

impl<I: ?Sized> Previous<I> {
    /// What to put back: the old plugin without its instance (which missed whatever happened
    /// since the swap; it is re-created from the host's view at its next call).
    fn restore(self) -> Option<Active<I>> {
        self.0.map(|mut a| {
            a.instance = None;
            a
        })
    }
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
        CallFailure::Host(_) => "host",
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

/// Who a slot is, for the helpers both slots share.
struct Ctx<'a> {
    role: &'a str,
    telemetry: &'a Telemetry,
    limits: &'a Limits,
}

/// Hand the state of `old` (when it is a version of `plugin`) to `instance`: `save` on the old,
/// `restore` on the new. A failed restore may leave the instance half-restored (or, for a
/// component that trapped, unusable), so it is replaced by `fresh()`. Reports what happened.
fn take_over<I: ?Sized>(
    old: Option<&mut Active<I>>,
    instance: &mut Box<I>,
    plugin: &LoadedPlugin,
    ctx: &Ctx<'_>,
    save: impl FnOnce(&mut I) -> CallResult<Vec<u8>>,
    restore: impl FnOnce(&mut I, &[u8]) -> CallResult<()>,
    fresh: impl FnOnce() -> CallResult<Box<I>>,
) -> crate::error::Result<Handover> {
    let saved = save_old(old, plugin, ctx.role, ctx.telemetry, ctx.limits, save);
    let handover = match saved {
        Ok(None) => Handover::NotApplicable,
        Ok(Some(state)) => match restore(instance, &state) {
            Ok(()) => Handover::Carried(state.len()),
            Err(e) => {
                *instance = fresh().map_err(|failure| crate::error::Error::Call {
                    plugin: plugin.info.name.clone(),
                    failure,
                })?;
                Handover::NotCarried(format!("restore-state {e}"))
            }
        },
        Err(why) => Handover::NotCarried(why),
    };
    if let Handover::NotCarried(why) = &handover {
        state_not_carried(ctx.telemetry, ctx.role, plugin, why);
    }
    Ok(handover)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_texts_are_clipped_on_a_character_boundary() {
        assert_eq!(clip("short", 16), "short");
        let long = "é".repeat(10); // 20 bytes
        assert_eq!(clip(&long, 5), "éé… (20 bytes)");
    }
}
