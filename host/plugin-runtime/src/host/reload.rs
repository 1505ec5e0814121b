//! What starts a reload — a rescan of the directory, a re-read of the config file, or both — and
//! the report each one ends with.

use std::path::Path;

use super::report::ActiveRef;
use super::{PluginHost, REPORTS, ReloadOutcome, ReloadReport, Trigger};
use crate::config::RuntimeConfig;
use crate::error::Error;
use crate::telemetry::{EventKind, now_ms};

impl PluginHost {
    /// Rescan the plugin directory: load new and replaced files, unregister vanished ones, and
    /// activate a selected plugin whose file changed.
    pub fn rescan(&self, trigger: Trigger) -> ReloadReport {
        let mut changes = Vec::new();
        let restart;
        let result = {
            let mut state = self.lock();
            let result = match self.scan(&mut state, &mut changes, false) {
                Ok(()) => {
                    let config = state.config.clone();
                    let applied = self
                        .apply_selections(&mut state, &config, None, &mut changes)
                        .map_err(|e| e.to_string());
                    self.prune(&mut state, &mut changes);
                    applied
                }
                Err(e) => Err(e),
            };
            restart = std::mem::take(&mut state.storage_restarts);
            self.publish(&state);
            result
        };
        if !restart.is_empty() {
            self.telemetry.emit(
                EventKind::RestartRequired,
                None,
                None,
                None,
                format!("changed plugins need a restart: {}", restart.join(", ")),
            );
        }
        match result {
            Ok(()) if changes.is_empty() => {
                self.finish(trigger, ReloadOutcome::Unchanged, changes, None, restart)
            }
            Ok(()) if !restart.is_empty() => self.finish(
                trigger,
                ReloadOutcome::RestartRequired,
                changes,
                None,
                restart,
            ),
            Ok(()) => self.finish(trigger, ReloadOutcome::Applied, changes, None, restart),
            Err(e) => self.finish(trigger, ReloadOutcome::Rejected, changes, Some(e), restart),
        }
    }

    /// Re-read the config file. Invalid → the old config stays in force (reported, counted).
    /// Valid → hot-reloadable keys apply at once; restart-only keys are named in the report.
    pub fn reload_config(&self, trigger: Trigger) -> ReloadReport {
        let Some(path) = self.config_path.clone() else {
            return self.finish(trigger, ReloadOutcome::Unchanged, vec![], None, vec![]);
        };
        let mut changes = Vec::new();
        // Read under the lock, so that of two concurrent reloads the later read is applied last.
        let mut state = self.lock();
        let new = match RuntimeConfig::load(&path) {
            Ok(c) => c,
            Err(e) => {
                drop(state);
                return self.reject(trigger, &path, e);
            }
        };
        let host_change = match self.host_keys.get() {
            Some(check) => match check(&path) {
                Ok(change) => Some(change),
                Err(errors) => {
                    drop(state);
                    return self.reject(trigger, &path, Error::Config { errors });
                }
            },
            None => None,
        };
        let old = state.config.clone();
        let mut restart_keys: Vec<String> = new
            .restart_keys_changed(&old)
            .into_iter()
            .map(str::to_owned)
            .collect();
        if let Err(e) = self.apply_selections(&mut state, &new, Some(&old), &mut changes) {
            self.publish(&state);
            drop(state);
            return self.reject(trigger, &path, e);
        }
        if new.limits != old.limits {
            self.limits.set(new.limits);
            changes.push(format!(
                "limits: {:?} (WASM components from their next call, Extism modules from their next load)",
                new.limits
            ));
        }
        if new.grants != old.grants {
            self.limits.set_grants(new.grants.clone());
            changes.push(format!(
                "plugins.grants: {} (WASM components from their next call)",
                crate::grants::describe(&new.grants)
            ));
        }
        if new.reclaim_interval_ms != old.reclaim_interval_ms {
            changes.push(format!(
                "reclaimer.interval_ms: {}",
                new.reclaim_interval_ms
            ));
        }
        if let Some(host) = host_change {
            (host.commit)();
            changes.extend(host.applied);
            restart_keys.extend(host.restart);
        }
        self.prune(&mut state, &mut changes);
        // Storage backends that applying the selections loaded (a native library set aside).
        restart_keys.append(&mut state.storage_restarts);
        let mut kept = new;
        kept.dir = old.dir;
        kept.watch = old.watch;
        kept.cache_dir = old.cache_dir;
        kept.scratch_dir = old.scratch_dir;
        kept.signing = old.signing;
        state.config = kept;
        self.publish(&state);
        drop(state);
        if !restart_keys.is_empty() {
            self.telemetry.emit(
                EventKind::RestartRequired,
                None,
                Some(&path),
                None,
                format!("changed keys need a restart: {}", restart_keys.join(", ")),
            );
        }
        if !changes.is_empty() {
            self.telemetry.emit(
                EventKind::ConfigApplied,
                None,
                Some(&path),
                None,
                changes.join("; "),
            );
        }
        let outcome = if !restart_keys.is_empty() {
            ReloadOutcome::RestartRequired
        } else if changes.is_empty() {
            ReloadOutcome::Unchanged
        } else {
            ReloadOutcome::Applied
        };
        self.finish(trigger, outcome, changes, None, restart_keys)
    }

    /// Rescan and re-read the config (SIGHUP, `spear plugin reload`). Both are kept in the
    /// history; the answer is the two together: every change, every restart key, and the worse
    /// outcome (rejected, then restart-required, then applied).
    pub fn reload(&self, trigger: Trigger) -> ReloadReport {
        let scan = self.rescan(trigger);
        let config = self.reload_config(trigger);
        merge(scan, config)
    }

    pub(super) fn reject(&self, trigger: Trigger, path: &Path, error: Error) -> ReloadReport {
        let message = format!("{error}; the previous configuration stays in force");
        self.telemetry
            .emit(EventKind::ConfigRejected, None, Some(path), None, &message);
        self.finish(
            trigger,
            ReloadOutcome::Rejected,
            vec![],
            Some(message),
            vec![],
        )
    }

    pub(super) fn finish(
        &self,
        trigger: Trigger,
        outcome: ReloadOutcome,
        changes: Vec<String>,
        error: Option<String>,
        restart_keys: Vec<String>,
    ) -> ReloadReport {
        let active = self
            .actives()
            .into_iter()
            .filter_map(|(role, a)| {
                a.map(|a| ActiveRef {
                    role: role.into(),
                    name: a.name,
                    version: a.version,
                    sha256: a.sha256,
                })
            })
            .collect();
        let report = ReloadReport {
            at_ms: now_ms(),
            trigger,
            outcome,
            changes,
            error,
            restart_keys,
            active,
        };
        let label = match outcome {
            ReloadOutcome::Applied => "applied",
            ReloadOutcome::Unchanged => "unchanged",
            ReloadOutcome::Rejected => "rejected",
            ReloadOutcome::RestartRequired => "restart-required",
        };
        self.telemetry.reloads.with_label_values(&[label]).inc();
        if outcome != ReloadOutcome::Unchanged {
            tracing::info!(outcome = label, trigger = ?trigger, active = ?report.active, "plugin reload");
        }
        let mut reports = self.reports.lock().unwrap_or_else(|p| p.into_inner());
        if reports.len() == REPORTS {
            reports.pop_front();
        }
        reports.push_back(report.clone());
        report
    }
}

/// How bad an outcome is, for [`merge`].
fn rank(outcome: ReloadOutcome) -> u8 {
    match outcome {
        ReloadOutcome::Unchanged => 0,
        ReloadOutcome::Applied => 1,
        ReloadOutcome::RestartRequired => 2,
        ReloadOutcome::Rejected => 3,
    }
}

/// A rescan's report and the config reload's after it, as one answer.
fn merge(scan: ReloadReport, config: ReloadReport) -> ReloadReport {
    if scan.outcome == ReloadOutcome::Unchanged {
        return config;
    }
    if config.outcome == ReloadOutcome::Unchanged {
        return scan;
    }
    let mut merged = config;
    merged.outcome = if rank(scan.outcome) > rank(merged.outcome) {
        scan.outcome
    } else {
        merged.outcome
    };
    let mut changes = scan.changes;
    changes.append(&mut merged.changes);
    merged.changes = changes;
    for key in scan.restart_keys {
        if !merged.restart_keys.contains(&key) {
            merged.restart_keys.push(key);
        }
    }
    merged.error = merged.error.or(scan.error);
    merged
}
