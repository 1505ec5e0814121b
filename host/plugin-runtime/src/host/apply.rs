//! The config's selections applied to the slots: every swap prepared first, then all committed.

use std::path::PathBuf;

use super::{Job, PluginHost, ROLES, State};
use crate::config::RuntimeConfig;
use crate::error::{Error, Result};
use crate::instance::{AutoscalerInstance, ReclaimerInstance, StrategyInstance};
use crate::slot::Previous;
use crate::telemetry::EventKind;

/// A commit to undo if a later one of the same reload fails.
enum Undo {
    Strategy(Previous<dyn StrategyInstance>),
    Shadow(Previous<dyn StrategyInstance>),
    Reclaimer(Previous<dyn ReclaimerInstance>),
    Autoscaler(Previous<dyn AutoscalerInstance>),
}

impl PluginHost {
    pub(super) fn active_in(&self, role: &str) -> Option<crate::plugin::PluginRef> {
        match role {
            "scheduler" => self.strategy.active(),
            "shadow" => self.shadow.active(),
            "autoscaler" => self.autoscaler.active(),
            _ => self.reclaimer.active(),
        }
    }

    /// Activate what `config` selects where it differs from what is active.
    ///
    /// Every new instance is built before any is swapped in, and the swaps are committed together:
    /// if one fails, those already made are rolled back (the reclamation policy is committed
    /// first, the strategy — whose commit sends the host's view and so can fail — last), so a
    /// config applies whole or not at all. A failure rejects the config when the config changed that role's selection (`old`
    /// given and different) or when nothing is active in the role; otherwise — a replaced file
    /// whose new version fails to activate — the running plugin stays, the failure is reported and
    /// that file is not retried until it changes.
    pub(super) fn apply_selections(
        &self,
        state: &mut State,
        config: &RuntimeConfig,
        old: Option<&RuntimeConfig>,
        changes: &mut Vec<String>,
    ) -> Result<()> {
        let mut jobs = Vec::new();
        for (role, kind, key) in ROLES {
            let selection = |c: &RuntimeConfig| match role {
                "scheduler" => c.scheduler.clone(),
                "shadow" => c.shadow.clone(),
                "autoscaler" => c.autoscaler.clone(),
                _ => c.reclaimer.clone(),
            };
            let Some(sel) = selection(config) else {
                continue;
            };
            // A selected plugin whose file vanished or now holds another plugin keeps running:
            // it can still be re-configured until the config selects another.
            let running = match role {
                "scheduler" => self.strategy.active_plugin(),
                "shadow" => self.shadow.active_plugin(),
                "autoscaler" => self.autoscaler.active_plugin(),
                _ => self.reclaimer.active_plugin(),
            }
            .filter(|p| p.info.name == sel.name);
            // A name no loaded plugin has: native libraries seen since start may hold it.
            if state.registry.lookup(kind, &sel.name).is_none() && running.is_none() {
                self.load_pending_natives(state, changes);
            }
            let Some(plugin) = state.registry.lookup(kind, &sel.name).cloned().or(running) else {
                return Err(Error::Config {
                    errors: vec![format!(
                        "{key}: no {kind} plugin named `{}` is registered (see `spear plugin list`)",
                        sel.name
                    )],
                });
            };
            let selection_changed = old.is_some_and(|o| selection(o) != Some(sel.clone()));
            let active = self.active_in(role);
            if !selection_changed && active.as_ref() == Some(&plugin.id) {
                continue;
            }
            let failed_key = (role, plugin.id.sha256.clone());
            if !selection_changed
                && active.is_some()
                && state.failed_activations.contains(&failed_key)
            {
                continue;
            }
            let prepared = match role {
                "scheduler" => self
                    .strategy
                    .prepare(&plugin, &sel.config_json)
                    .map(Job::Strategy),
                "shadow" => self
                    .shadow
                    .prepare(&plugin, &sel.config_json)
                    .map(Job::Shadow),
                "autoscaler" => self
                    .autoscaler
                    .prepare(&plugin, &sel.config_json)
                    .map(Job::Autoscaler),
                _ => self
                    .reclaimer
                    .prepare(&plugin, &sel.config_json)
                    .map(Job::Reclaimer),
            };
            match prepared {
                Ok(job) => jobs.push(job),
                Err(e) if selection_changed || active.is_none() => return Err(e),
                Err(e) => {
                    let message = format!(
                        "{role}: {} {} ({}) not activated: {e}; the running version stays active",
                        plugin.info.name,
                        plugin.info.version,
                        &plugin.id.sha256[..12]
                    );
                    self.telemetry.emit(
                        EventKind::ActivationFailed,
                        Some(&plugin.info.name),
                        Some(&plugin.id.file),
                        Some(&plugin.id.sha256),
                        &message,
                    );
                    if let Some(entry) = state.registry.entries.get_mut(&plugin.id.file) {
                        entry.last_error = Some(message.clone());
                    }
                    changes.push(message);
                    state.failed_activations.insert(failed_key);
                }
            }
        }
        jobs.sort_by_key(|j| matches!(j, Job::Strategy(_)));
        let mut done = Vec::new();
        let mut committed = Vec::new();
        for job in jobs {
            let result = match job {
                Job::Strategy(j) => self.strategy.commit_keeping(j).map(|(handover, previous)| {
                    let active = self.strategy.active();
                    ("scheduler", handover, active, Undo::Strategy(previous))
                }),
                Job::Shadow(j) => self.shadow.commit_keeping(j).map(|(handover, previous)| {
                    let active = self.shadow.active();
                    ("shadow", handover, active, Undo::Shadow(previous))
                }),
                Job::Reclaimer(j) => {
                    self.reclaimer
                        .commit_keeping(j)
                        .map(|(handover, previous)| {
                            let active = self.reclaimer.active();
                            ("reclaimer", handover, active, Undo::Reclaimer(previous))
                        })
                }
                Job::Autoscaler(j) => {
                    self.autoscaler
                        .commit_keeping(j)
                        .map(|(handover, previous)| {
                            let active = self.autoscaler.active();
                            ("autoscaler", handover, active, Undo::Autoscaler(previous))
                        })
                }
            };
            let (role, handover, active, undo) = match result {
                Ok(done) => done,
                Err(e) => {
                    for undo in done.into_iter().rev() {
                        match undo {
                            Undo::Strategy(p) => self.strategy.roll_back(p),
                            Undo::Shadow(p) => self.shadow.roll_back(p),
                            Undo::Reclaimer(p) => self.reclaimer.roll_back(p),
                            Undo::Autoscaler(p) => self.autoscaler.roll_back(p),
                        }
                    }
                    return Err(e);
                }
            };
            done.push(undo);
            if let Some(a) = active {
                committed.push((role, a, handover));
            }
        }
        for (role, a, handover) in committed {
            state.failed_activations.retain(|(r, _)| *r != role);
            changes.push(format!(
                "{role}: {} {} ({}) active; {handover}",
                a.name,
                a.version,
                &a.sha256[..12]
            ));
        }
        if config.scheduler.is_none() && self.strategy.active().is_some() {
            self.strategy.deactivate();
            changes
                .push("scheduler: no strategy selected; the built-in round-robin decides".into());
        }
        if config.shadow.is_none() && self.shadow.active().is_some() {
            self.shadow.deactivate();
            changes.push("shadow: no shadow strategy selected".into());
        }
        if config.reclaimer.is_none() && self.reclaimer.active().is_some() {
            self.reclaimer.deactivate();
            changes.push("reclaimer: no policy selected; nothing is reclaimed".into());
        }
        if config.autoscaler.is_none() && self.autoscaler.active().is_some() {
            self.autoscaler.deactivate();
            changes.push("autoscaler: no policy selected; the pool is not scaled".into());
        }
        Ok(())
    }

    /// Unregister plugins whose file vanished and which are no longer active.
    pub(super) fn prune(&self, state: &mut State, changes: &mut Vec<String>) {
        let active = self.active_files();
        let stale: Vec<PathBuf> = state
            .registry
            .entries
            .iter()
            .filter(|(path, e)| e.missing && !active.contains(*path))
            .map(|(path, _)| path.clone())
            .collect();
        for path in stale {
            if let Some(p) = state.registry.entries.remove(&path).and_then(|e| e.loaded) {
                self.telemetry.emit(
                    EventKind::Unregistered,
                    Some(&p.info.name),
                    Some(&path),
                    Some(&p.id.sha256),
                    "file removed and plugin no longer selected; unregistered",
                );
                changes.push(format!("{}: unregistered {}", path.display(), p.info.name));
            }
        }
    }
}
