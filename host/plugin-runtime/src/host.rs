//! [`PluginHost`]: the plugin directory, the config file, the registry and the guarded slots of one
//! host process, kept in step by rescans and config reloads (from the watcher, SIGHUP or the API).
//!
//! Reloads are serialized by one mutex, held while files compile and instances are prepared.
//! Readers never take it: the registry and the config in force are published as a snapshot
//! ([`ArcSwap`]) whenever a reload lets go of the mutex, and the reload history has a mutex of its
//! own that guards only a push or a copy.

use std::collections::{BTreeSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use arc_swap::ArcSwap;
use serde::Serialize;
use spear_plugin_api::PluginKind;

use crate::config::RuntimeConfig;
use crate::detect::read_plugin_file;
use crate::engine::WasmEngine;
use crate::error::{Error, Result};
use crate::limits::Limits;
use crate::plugin::{LoadedPlugin, load_bytes, sha256_hex};
use crate::registry::{PluginRecord, PluginState, Registry, plugin_files, record};
use crate::sidecar;
use crate::slot::{ReclaimerSlot, SlotStatus, StrategySlot};
use crate::telemetry::{EventKind, PluginEvent, Telemetry, now_ms};
use crate::watch::Watcher;

/// What started a reload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Trigger {
    /// Host start.
    Start,
    /// The watcher saw the plugin directory change.
    Directory,
    /// The watcher saw the config file change.
    ConfigFile,
    /// SIGHUP.
    Signal,
    /// The API or `spear plugin reload`.
    Api,
}

/// How a reload ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReloadOutcome {
    /// Everything changed was applied.
    Applied,
    /// Nothing changed.
    Unchanged,
    /// The config was invalid; the previous one stays in force.
    Rejected,
    /// Reloadable changes were applied; some keys need a restart.
    RestartRequired,
}

/// An active plugin, as reports show it.
#[derive(Debug, Clone, Serialize)]
pub struct ActiveRef {
    /// Role.
    pub role: String,
    /// Plugin name.
    pub name: String,
    /// Version.
    pub version: String,
    /// sha256 of its file.
    pub sha256: String,
}

/// What one reload did.
#[derive(Debug, Clone, Serialize)]
pub struct ReloadReport {
    /// Milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// What started it.
    pub trigger: Trigger,
    /// How it ended.
    pub outcome: ReloadOutcome,
    /// What changed (files loaded or refused, selections, limits).
    pub changes: Vec<String>,
    /// Why it was rejected, if it was.
    pub error: Option<String>,
    /// Keys that need a restart.
    pub restart_keys: Vec<String>,
    /// The plugins active afterwards.
    pub active: Vec<ActiveRef>,
}

const REPORTS: usize = 256;

struct State {
    config: RuntimeConfig,
    registry: Registry,
    /// `(role, sha256)` of plugin files whose activation failed: not retried until the file (and
    /// so its sha256) or the selection changes.
    failed_activations: BTreeSet<(&'static str, String)>,
}

/// What readers see of [`State`], published whenever a reload lets go of it.
struct Board {
    config: RuntimeConfig,
    registry: Registry,
}

/// The roles a host fills, with the kind and config key of each.
const ROLES: [(&str, PluginKind, &str); 2] = [
    (
        "scheduler",
        PluginKind::SchedulingStrategy,
        "scheduler.strategy",
    ),
    (
        "reclaimer",
        PluginKind::ReclamationPolicy,
        "reclaimer.policy",
    ),
];

/// A prepared swap for one role.
enum Job {
    Strategy(crate::slot::PreparedStrategy),
    Reclaimer(crate::slot::PreparedReclaimer),
}

/// The plugin side of one host process.
pub struct PluginHost {
    engine: WasmEngine,
    limits: Arc<Limits>,
    telemetry: Arc<Telemetry>,
    config_path: Option<PathBuf>,
    state: Mutex<State>,
    board: ArcSwap<Board>,
    reports: Mutex<VecDeque<ReloadReport>>,
    strategy: StrategySlot,
    reclaimer: ReclaimerSlot,
}

impl std::fmt::Debug for PluginHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginHost")
            .field("config_path", &self.config_path)
            .finish()
    }
}

impl PluginHost {
    /// Start from a config file: load it, scan the plugin directory, activate the selections.
    /// Fails (naming the problem) if the config is invalid or selects a plugin that is missing.
    pub fn start(config_path: &Path) -> Result<Arc<Self>> {
        let config = RuntimeConfig::load(config_path)?;
        Self::with_config(config, Some(config_path.to_path_buf()))
    }

    /// Start from an already compiled config (`config_path`, if given, is what reloads re-read).
    pub fn with_config(config: RuntimeConfig, config_path: Option<PathBuf>) -> Result<Arc<Self>> {
        let engine = WasmEngine::new().map_err(|e| Error::Config {
            errors: vec![format!("cannot start the WASM engine: {e:#}")],
        })?;
        let limits = Arc::new(Limits::new(config.limits));
        let telemetry = Arc::new(Telemetry::new());
        let host = Arc::new(Self {
            strategy: StrategySlot::new("scheduler", limits.clone(), telemetry.clone()),
            reclaimer: ReclaimerSlot::new("reclaimer", limits.clone(), telemetry.clone()),
            engine,
            limits,
            telemetry,
            config_path,
            board: ArcSwap::from_pointee(Board {
                config: config.clone(),
                registry: Registry::default(),
            }),
            state: Mutex::new(State {
                config: config.clone(),
                registry: Registry::default(),
                failed_activations: BTreeSet::new(),
            }),
            reports: Mutex::new(VecDeque::with_capacity(REPORTS)),
        });
        let mut changes = Vec::new();
        {
            let mut state = host.lock();
            host.scan(&mut state, &mut changes)
                .map_err(|e| Error::Config { errors: vec![e] })?;
            let config = state.config.clone();
            let applied = host.apply_selections(&mut state, &config, None, &mut changes);
            host.publish(&state);
            applied?;
        }
        host.finish(
            Trigger::Start,
            ReloadOutcome::Applied,
            changes,
            None,
            vec![],
        );
        Ok(host)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Show readers the registry and config of `state` (called before a reload lets go of it).
    fn publish(&self, state: &State) {
        self.board.store(Arc::new(Board {
            config: state.config.clone(),
            registry: state.registry.clone(),
        }));
    }

    /// The scheduling-strategy slot (`[scheduler]`).
    pub fn strategy(&self) -> &StrategySlot {
        &self.strategy
    }

    /// The reclamation-policy slot (`[reclaimer]`).
    pub fn reclaimer(&self) -> &ReclaimerSlot {
        &self.reclaimer
    }

    /// Events, metrics.
    pub fn telemetry(&self) -> &Arc<Telemetry> {
        &self.telemetry
    }

    /// The limits in force.
    pub fn limits(&self) -> &Arc<Limits> {
        &self.limits
    }

    /// The WASM engine shared by this host's components.
    pub fn engine(&self) -> &WasmEngine {
        &self.engine
    }

    /// The config in force.
    pub fn config(&self) -> RuntimeConfig {
        self.board.load().config.clone()
    }

    /// The config file, if the host has one.
    pub fn config_path(&self) -> Option<&Path> {
        self.config_path.as_deref()
    }

    /// A registered plugin of `kind` called `name` (executors and storage backends are taken from
    /// here by hosts).
    pub fn plugin(&self, kind: PluginKind, name: &str) -> Option<LoadedPlugin> {
        self.board.load().registry.lookup(kind, name).cloned()
    }

    /// Rescan the plugin directory: load new and replaced files, unregister vanished ones, and
    /// activate a selected plugin whose file changed.
    pub fn rescan(&self, trigger: Trigger) -> ReloadReport {
        let mut changes = Vec::new();
        let result = {
            let mut state = self.lock();
            let result = match self.scan(&mut state, &mut changes) {
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
            self.publish(&state);
            result
        };
        match result {
            Ok(()) if changes.is_empty() => {
                self.finish(trigger, ReloadOutcome::Unchanged, changes, None, vec![])
            }
            Ok(()) => self.finish(trigger, ReloadOutcome::Applied, changes, None, vec![]),
            Err(e) => self.finish(trigger, ReloadOutcome::Rejected, changes, Some(e), vec![]),
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
        let old = state.config.clone();
        let restart_keys: Vec<String> = new
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
        if new.reclaim_interval_ms != old.reclaim_interval_ms {
            changes.push(format!(
                "reclaimer.interval_ms: {}",
                new.reclaim_interval_ms
            ));
        }
        self.prune(&mut state, &mut changes);
        let mut kept = new;
        kept.dir = old.dir;
        kept.watch = old.watch;
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

    /// Rescan and re-read the config (SIGHUP, `spear plugin reload`).
    pub fn reload(&self, trigger: Trigger) -> ReloadReport {
        let scan = self.rescan(trigger);
        let config = self.reload_config(trigger);
        if config.outcome == ReloadOutcome::Unchanged {
            scan
        } else {
            config
        }
    }

    fn reject(&self, trigger: Trigger, path: &Path, error: Error) -> ReloadReport {
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

    fn active_in(&self, role: &str) -> Option<crate::plugin::PluginRef> {
        match role {
            "scheduler" => self.strategy.active(),
            _ => self.reclaimer.active(),
        }
    }

    /// Activate what `config` selects where it differs from what is active.
    ///
    /// Every new instance is built before any is swapped in, so a config applies whole or not at
    /// all. A failure rejects the config when the config changed that role's selection (`old`
    /// given and different) or when nothing is active in the role; otherwise — a replaced file
    /// whose new version fails to activate — the running plugin stays, the failure is reported and
    /// that file is not retried until it changes.
    fn apply_selections(
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
                _ => c.reclaimer.clone(),
            };
            let Some(sel) = selection(config) else {
                continue;
            };
            // A selected plugin whose file vanished or now holds another plugin keeps running:
            // it can still be re-configured until the config selects another.
            let running = match role {
                "scheduler" => self.strategy.active_plugin(),
                _ => self.reclaimer.active_plugin(),
            }
            .filter(|p| p.info.name == sel.name);
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
        for job in jobs {
            let (role, handover, active) = match job {
                Job::Strategy(j) => {
                    let handover = self.strategy.commit(j)?;
                    ("scheduler", handover, self.strategy.active())
                }
                Job::Reclaimer(j) => {
                    let handover = self.reclaimer.commit(j)?;
                    ("reclaimer", handover, self.reclaimer.active())
                }
            };
            if let Some(a) = active {
                state.failed_activations.retain(|(r, _)| *r != role);
                changes.push(format!(
                    "{role}: {} {} ({}) active; {handover}",
                    a.name,
                    a.version,
                    &a.sha256[..12]
                ));
            }
        }
        if config.scheduler.is_none() && self.strategy.active().is_some() {
            self.strategy.deactivate();
            changes
                .push("scheduler: no strategy selected; the built-in round-robin decides".into());
        }
        if config.reclaimer.is_none() && self.reclaimer.active().is_some() {
            self.reclaimer.deactivate();
            changes.push("reclaimer: no policy selected; nothing is reclaimed".into());
        }
        Ok(())
    }

    /// Unregister plugins whose file vanished and which are no longer active.
    fn prune(&self, state: &mut State, changes: &mut Vec<String>) {
        let active: BTreeSet<PathBuf> = [self.strategy.active(), self.reclaimer.active()]
            .into_iter()
            .flatten()
            .map(|a| a.file)
            .collect();
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

    /// Bring the registry in step with the directory: first forget vanished files (so a plugin
    /// moved to a new file name is not refused as a duplicate of its old self), then load new and
    /// changed ones. Fails only when the directory cannot be read.
    fn scan(
        &self,
        state: &mut State,
        changes: &mut Vec<String>,
    ) -> std::result::Result<(), String> {
        let dir = state.config.dir.clone();
        let files = plugin_files(&dir).map_err(|e| {
            let message = format!("cannot read the plugin directory {}: {e}", dir.display());
            self.telemetry
                .emit(EventKind::Refused, None, Some(&dir), None, &message);
            message
        })?;
        let active: BTreeSet<PathBuf> = [self.strategy.active(), self.reclaimer.active()]
            .into_iter()
            .flatten()
            .map(|a| a.file)
            .collect();
        let gone: Vec<PathBuf> = state
            .registry
            .entries
            .keys()
            .filter(|p| !files.contains(*p))
            .cloned()
            .collect();
        for path in gone {
            if active.contains(&path) {
                let entry = state.registry.entries.get_mut(&path).expect("listed");
                if !entry.missing {
                    entry.missing = true;
                    changes.push(format!(
                        "{}: file removed; still active until another plugin is selected",
                        path.display()
                    ));
                }
                continue;
            }
            if let Some(entry) = state.registry.entries.remove(&path)
                && let Some(p) = entry.loaded
            {
                self.telemetry.emit(
                    EventKind::Unregistered,
                    Some(&p.info.name),
                    Some(&path),
                    Some(&p.id.sha256),
                    "file removed; plugin unregistered",
                );
                changes.push(format!("{}: unregistered {}", path.display(), p.info.name));
            }
        }
        for path in &files {
            self.scan_file(state, path, changes);
        }
        Ok(())
    }

    fn scan_file(&self, state: &mut State, path: &Path, changes: &mut Vec<String>) {
        let read = read_plugin_file(path);
        let sha = read.as_ref().ok().map(|b| sha256_hex(b));
        let sidecar_text = sidecar::text(path);
        // What was seen at this path: the content and its sidecar.
        let fingerprint = sha
            .as_ref()
            .map(|s| format!("{s}:{}", sha256_hex(sidecar_text.as_bytes())));
        let entry = state
            .registry
            .entries
            .entry(path.to_path_buf())
            .or_default();
        entry.missing = false;
        let unchanged = match (&read, &entry.seen) {
            (Ok(_), Some(seen)) => fingerprint.as_ref() == Some(seen),
            (Err(e), None) => entry.last_error.as_deref() == Some(&e.to_string()),
            _ => false,
        };
        if unchanged {
            return;
        }
        let result = read.and_then(|bytes| {
            sidecar::check(path, &sidecar_text, &bytes)?;
            load_bytes(path, &bytes, &self.engine, &self.limits)
        });
        let result =
            result.and_then(
                |p| match state.registry.holder(p.info.kind, &p.info.name, path) {
                    Some(other) => Err(Error::Duplicate {
                        file: path.into(),
                        kind: p.info.kind,
                        name: p.info.name.clone(),
                        other: other.into(),
                    }),
                    None => Ok(p),
                },
            );
        let entry = state
            .registry
            .entries
            .get_mut(path)
            .expect("inserted above");
        // A name clash depends on other files, not on this one's content: retry it on every scan.
        let duplicate = matches!(result, Err(Error::Duplicate { .. }));
        entry.seen = if duplicate { None } else { fingerprint };
        match result {
            Ok(p) => {
                self.telemetry.emit(
                    EventKind::Loaded,
                    Some(&p.info.name),
                    Some(path),
                    Some(&p.id.sha256),
                    format!(
                        "{} {} {} ({}) registered",
                        p.info.kind, p.info.name, p.info.version, p.id.form
                    ),
                );
                changes.push(format!(
                    "{}: loaded {} {}",
                    path.display(),
                    p.info.name,
                    p.info.version
                ));
                entry.loaded = Some(p);
                entry.last_error = None;
            }
            Err(e) => {
                let message = e.to_string();
                let kept = entry.loaded.as_ref().map(|p| p.info.name.clone());
                self.telemetry.emit(
                    EventKind::Refused,
                    kept.as_deref(),
                    Some(path),
                    sha.as_deref(),
                    match &kept {
                        Some(name) => {
                            format!("{message}; the previously loaded {name} stays registered")
                        }
                        None => message.clone(),
                    },
                );
                changes.push(message.clone());
                entry.last_error = Some(message);
            }
        }
    }

    fn finish(
        &self,
        trigger: Trigger,
        outcome: ReloadOutcome,
        changes: Vec<String>,
        error: Option<String>,
        restart_keys: Vec<String>,
    ) -> ReloadReport {
        let active = [
            ("scheduler", self.strategy.active()),
            ("reclaimer", self.reclaimer.active()),
        ]
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

    /// Every plugin file known, with its state (from snapshots: never waits for a reload or a call).
    pub fn plugins(&self) -> Vec<PluginRecord> {
        let slots: [SlotStatus; 2] = [self.strategy.status(), self.reclaimer.status()];
        let state = self.board.load();
        let mut records: Vec<PluginRecord> = state
            .registry
            .entries
            .iter()
            .map(|(file, e)| record(file, e, &slots))
            .collect();
        // A plugin still running after its file was replaced by a version that failed to activate.
        for slot in &slots {
            let Some(id) = &slot.plugin else { continue };
            let listed = state.registry.loaded().any(|p| &p.id == id);
            if !listed {
                records.push(PluginRecord {
                    name: id.name.clone(),
                    kind: Some(id.kind),
                    form: Some(id.form),
                    version: Some(id.version.clone()),
                    description: None,
                    file: id.file.clone(),
                    sha256: Some(id.sha256.clone()),
                    state: if slot.quarantined {
                        PluginState::Quarantined
                    } else {
                        PluginState::Active
                    },
                    last_error: slot.last_error.clone(),
                    file_missing: false,
                });
            }
        }
        records
    }

    /// Reload reports, oldest first.
    pub fn history(&self) -> Vec<ReloadReport> {
        let reports = self.reports.lock().unwrap_or_else(|p| p.into_inner());
        reports.iter().cloned().collect()
    }

    /// Plugin events, oldest first.
    pub fn events(&self) -> Vec<PluginEvent> {
        self.telemetry.events()
    }

    /// Watch the plugin directory and the config file (when `plugins.watch` is on).
    pub fn watch(self: &Arc<Self>) -> Result<Option<Watcher>> {
        let config = self.config();
        if !config.watch {
            return Ok(None);
        }
        Watcher::spawn(Arc::downgrade(self), config.dir, self.config_path.clone()).map(Some)
    }
}
