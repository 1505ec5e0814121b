//! [`PluginHost`]: the plugin directory, the config file, the registry and the guarded slots of one
//! host process, kept in step by rescans and config reloads (from the watcher, SIGHUP or the API).
//!
//! Reloads are serialized by one mutex, held while files compile and instances are prepared.
//! Readers never take it: the registry and the config in force are published as a snapshot
//! ([`ArcSwap`]) whenever a reload lets go of the mutex, and the reload history has a mutex of its
//! own that guards only a push or a copy.
//!
//! - [`scan`]: the plugin directory → the registry (load new and changed files, forget vanished
//!   ones);
//! - [`apply`]: the config's selections → the slots (prepare every swap, then commit them all);
//! - [`reload`]: what starts those (rescan, config reload, both) and the report of each;
//! - [`report`]: the report types.

use std::collections::{BTreeSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use arc_swap::ArcSwap;
use spear_plugin_api::PluginKind;
use spear_plugin_api::native::SpearPluginModuleRef;

use crate::config::RuntimeConfig;
use crate::engine::WasmEngine;
use crate::error::{Error, Result};
use crate::limits::Limits;
use crate::plugin::LoadedPlugin;
use crate::registry::{PluginRecord, PluginState, Registry, record};
use crate::slot::{AutoscalerSlot, ReclaimerSlot, SlotStatus, StrategySlot};
use crate::telemetry::{PluginEvent, Telemetry};
use crate::watch::Watcher;

mod apply;
mod host_keys;
mod reload;
mod report;
mod scan;

pub use host_keys::{HostChange, HostKeys, LiveKey, config_diff_check};
use report::REPORTS;
pub use report::{ActiveRef, ReloadOutcome, ReloadReport, Trigger};

struct State {
    config: RuntimeConfig,
    registry: Registry,
    /// `(role, sha256)` of plugin files whose activation failed: not retried until the file (and
    /// so its sha256) or the selection changes.
    failed_activations: BTreeSet<(&'static str, String)>,
    /// The host has started: what loads from now on is loaded by a reload.
    started: bool,
    /// Storage backends loaded since start, reported as needing a restart by the reload that
    /// loaded them (a host opens its store once, at start).
    storage_restarts: Vec<String>,
}

/// What readers see of [`State`], published whenever a reload lets go of it.
struct Board {
    config: RuntimeConfig,
    registry: Registry,
}

/// The roles a host fills, with the kind and config key of each.
const ROLES: [(&str, PluginKind, &str); 4] = [
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
    ("shadow", PluginKind::SchedulingStrategy, "scheduler.shadow"),
    ("autoscaler", PluginKind::Autoscaler, "autoscaler.policy"),
];

/// A prepared swap for one role.
enum Job {
    Strategy(crate::slot::PreparedStrategy),
    Shadow(crate::slot::PreparedStrategy),
    Reclaimer(crate::slot::PreparedReclaimer),
    Autoscaler(crate::slot::PreparedAutoscaler),
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
    host_keys: OnceLock<HostKeys>,
    strategy: StrategySlot,
    shadow: StrategySlot,
    reclaimer: ReclaimerSlot,
    autoscaler: AutoscalerSlot,
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
        Self::with_builtins(config, config_path, &[])
    }

    /// [`with_config`](Self::with_config), with the plugins of crates linked into the host
    /// registered as built-ins (`built-in:<name>`): selectable with no plugin directory at all, and
    /// replaced by a plugin file of the same kind and name (reported as an override).
    pub fn with_builtins(
        config: RuntimeConfig,
        config_path: Option<PathBuf>,
        builtins: &[SpearPluginModuleRef],
    ) -> Result<Arc<Self>> {
        let builtins = builtins
            .iter()
            .map(|m| crate::plugin::load_builtin(*m))
            .collect::<Result<Vec<_>>>()?;
        let registry = Registry {
            builtins,
            ..Registry::default()
        };
        let engine = WasmEngine::new().map_err(|e| Error::Config {
            errors: vec![format!("cannot start the WASM engine: {e:#}")],
        })?;
        let engine = match &config.cache_dir {
            Some(dir) => engine.with_cache(dir.clone()),
            None => engine,
        }
        .with_scratch(&config.scratch_dir);
        let limits = Arc::new(Limits::new(config.limits));
        limits.set_grants(config.grants.clone());
        let telemetry = Arc::new(Telemetry::new());
        let host = Arc::new(Self {
            strategy: StrategySlot::new("scheduler", limits.clone(), telemetry.clone()),
            shadow: StrategySlot::new("shadow", limits.clone(), telemetry.clone()),
            reclaimer: ReclaimerSlot::new("reclaimer", limits.clone(), telemetry.clone()),
            autoscaler: AutoscalerSlot::new("autoscaler", limits.clone(), telemetry.clone()),
            engine,
            limits,
            telemetry,
            config_path,
            board: ArcSwap::from_pointee(Board {
                config: config.clone(),
                registry: registry.clone(),
            }),
            state: Mutex::new(State {
                config: config.clone(),
                registry,
                failed_activations: BTreeSet::new(),
                started: false,
                storage_restarts: Vec::new(),
            }),
            reports: Mutex::new(VecDeque::with_capacity(REPORTS)),
            host_keys: OnceLock::new(),
        });
        let mut changes = Vec::new();
        {
            let mut state = host.lock();
            host.scan(&mut state, &mut changes, true)
                .map_err(|e| Error::Config { errors: vec![e] })?;
            let config = state.config.clone();
            let applied = host.apply_selections(&mut state, &config, None, &mut changes);
            state.started = true;
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

    /// Have every config reload check the host's own keys with `keys` (once; a second call is
    /// refused with `false`).
    pub fn set_host_keys(&self, keys: HostKeys) -> bool {
        self.host_keys.set(keys).is_ok()
    }

    /// The scheduling-strategy slot (`[scheduler]`).
    pub fn strategy(&self) -> &StrategySlot {
        &self.strategy
    }

    /// The shadow strategy's slot (`scheduler.shadow`): a host that evaluates a candidate feeds it
    /// as it feeds [`strategy`](Self::strategy) and asks it the same batches, applying nothing.
    pub fn shadow(&self) -> &StrategySlot {
        &self.shadow
    }

    /// The reclamation-policy slot (`[reclaimer]`).
    pub fn reclaimer(&self) -> &ReclaimerSlot {
        &self.reclaimer
    }

    /// The autoscaler slot (`autoscaler.policy`; SMS).
    pub fn autoscaler(&self) -> &AutoscalerSlot {
        &self.autoscaler
    }

    /// The plugin active in each role (snapshots), in the order reports list them.
    pub(super) fn actives(&self) -> [(&'static str, Option<crate::plugin::PluginRef>); 4] {
        [
            ("scheduler", self.strategy.active()),
            ("reclaimer", self.reclaimer.active()),
            ("shadow", self.shadow.active()),
            ("autoscaler", self.autoscaler.active()),
        ]
    }

    /// The files of the plugins active in any role.
    pub(super) fn active_files(&self) -> BTreeSet<PathBuf> {
        self.actives()
            .into_iter()
            .filter_map(|(_, a)| a.map(|a| a.file))
            .collect()
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

    /// Every plugin file known, with its state (from snapshots: never waits for a reload or a call).
    pub fn plugins(&self) -> Vec<PluginRecord> {
        let slots: [SlotStatus; 4] = [
            self.strategy.status(),
            self.reclaimer.status(),
            self.shadow.status(),
            self.autoscaler.status(),
        ];
        let state = self.board.load();
        let mut records: Vec<PluginRecord> = state
            .registry
            .entries
            .iter()
            .map(|(file, e)| record(file, e, &slots))
            .chain(state.registry.builtin_records(&slots))
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
                    } else if slot.role == "shadow" {
                        PluginState::Shadow
                    } else {
                        PluginState::Active
                    },
                    last_error: slot.last_error.clone(),
                    file_missing: false,
                    signed_by: None,
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
