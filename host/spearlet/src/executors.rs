//! The executor plugins this node uses, by executable type.
//!
//! `[executors] enabled` names plugins in the plugin directory. Each is instantiated once,
//! configured with `[executors.config.<name>]`, and serves the executable type its capabilities
//! declare. An enabled executor that is missing or refuses its configuration is logged and left
//! out: the node advertises only the types it can run, and an execution of another type fails
//! with an error naming what this node runs.
//!
//! Executors swap live ([`LiveExecutors`]): a config reload that changes `[executors]`, or a
//! replaced executor file, makes a new set (an executor whose name, configuration and file are
//! unchanged is kept as it is) and puts it in force whole. What runs keeps the executor it started
//! on (an execution, an instance serving an invocation); new work starts on the new one, and idle
//! instances of a replaced executor are stopped.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use spear_plugin_api::executor::Capabilities;
use spear_plugin_api::{Executor, PluginKind};
use spear_plugin_runtime::PluginHost;

use crate::config::SpearletConfig;

/// One loaded executor.
#[derive(Clone)]
pub struct Loaded {
    /// Plugin name.
    pub name: String,
    /// Plugin version.
    pub version: String,
    /// sha256 of its file.
    pub sha256: String,
    /// What it can do.
    pub capabilities: Capabilities,
    /// The configuration it was given (JSON).
    pub config: String,
    /// The executor itself (its methods block; call them off the async runtime).
    pub executor: Arc<dyn Executor>,
}

impl std::fmt::Debug for Loaded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Loaded")
            .field("name", &self.name)
            .field("capabilities", &self.capabilities)
            .finish()
    }
}

/// Executors by executable type.
#[derive(Debug, Default)]
pub struct Executors {
    by_type: BTreeMap<String, Loaded>,
    /// Why each enabled executor that is not loaded is missing.
    pub problems: Vec<String>,
    /// Executor files that did not load as a replacement (name → sha256), not tried again.
    failed: BTreeMap<String, String>,
}

impl Executors {
    /// Load and configure every enabled executor (blocking: native plugin calls).
    pub fn load(config: &SpearletConfig, plugins: &PluginHost) -> Self {
        Self::default().rebuilt(config, plugins)
    }

    /// The set `config` asks for: each enabled executor kept from this one when its name,
    /// configuration and plugin file are unchanged, loaded anew otherwise (blocking).
    pub fn rebuilt(&self, config: &SpearletConfig, plugins: &PluginHost) -> Self {
        let mut set = Self::default();
        for name in &config.executors.enabled {
            let wanted = config.executor_config(name);
            let kept = self.all().find(|l| {
                l.name == *name
                    && l.config == wanted
                    && plugins
                        .plugin(PluginKind::Executor, name)
                        .is_some_and(|p| p.id.sha256 == l.sha256)
            });
            let loaded = match kept {
                Some(l) => Ok(l.clone()),
                None => load_one(name, &wanted, plugins),
            };
            match loaded {
                Ok(l) => {
                    let ty = l.capabilities.executable_type.clone();
                    if let Some(other) = set.by_type.get(&ty) {
                        set.problems.push(format!(
                            "executor {name}: executable type `{ty}` is already served by {}; ignored",
                            other.name
                        ));
                        continue;
                    }
                    tracing::info!(executor = %name, version = %l.version, r#type = %ty, "executor loaded");
                    set.by_type.insert(ty, l);
                }
                Err(problem) => set.problems.push(problem),
            }
        }
        for p in &set.problems {
            tracing::warn!("{p}");
        }
        set
    }

    /// The executor for an executable type, or an error naming the types this node runs.
    pub fn for_type(&self, ty: &str) -> Result<&Loaded, String> {
        self.by_type.get(ty).ok_or_else(|| {
            format!(
                "no executor for executable type `{ty}` on this node (it runs: {})",
                self.types().join(", ")
            )
        })
    }

    /// The executable types served.
    pub fn types(&self) -> Vec<String> {
        self.by_type.keys().cloned().collect()
    }

    /// Every loaded executor.
    pub fn all(&self) -> impl Iterator<Item = &Loaded> {
        self.by_type.values()
    }

    /// Whether `executor` is one of this set's.
    pub fn holds(&self, executor: &Arc<dyn Executor>) -> bool {
        self.all().any(|l| Arc::ptr_eq(&l.executor, executor))
    }

    /// This set with every executor whose plugin file changed since it was loaded loaded anew
    /// (with its configuration); `None` when no file changed. An executor that fails to load
    /// from its new file is kept as it was, the failure logged once: that file is not tried
    /// again (blocking).
    pub fn with_new_files(&self, plugins: &PluginHost) -> Option<Self> {
        let changed: Vec<(&Loaded, String)> = self
            .all()
            .filter_map(|l| {
                let sha = plugins.plugin(PluginKind::Executor, &l.name)?.id.sha256;
                let new = sha != l.sha256 && self.failed.get(&l.name) != Some(&sha);
                new.then_some((l, sha))
            })
            .collect();
        if changed.is_empty() {
            return None;
        }
        let mut set = Self {
            by_type: self.by_type.clone(),
            problems: self.problems.clone(),
            failed: self.failed.clone(),
        };
        for (old, sha) in changed {
            let why = match load_one(&old.name, &old.config, plugins) {
                Ok(new) if new.capabilities.executable_type == old.capabilities.executable_type => {
                    tracing::info!(executor = %new.name, version = %new.version, sha256 = %new.sha256, "executor file replaced: new work starts on it");
                    set.failed.remove(&old.name);
                    set.by_type
                        .insert(new.capabilities.executable_type.clone(), new);
                    continue;
                }
                Ok(new) => format!(
                    "executor {}: its new file serves type `{}`, not `{}`",
                    old.name, new.capabilities.executable_type, old.capabilities.executable_type
                ),
                Err(e) => e,
            };
            // Not tried again until the file changes once more.
            tracing::warn!("{why}: the executor in force stays");
            set.failed.insert(old.name.clone(), sha);
        }
        Some(set)
    }
}

/// The executors in force, replaced whole at a swap. Readers take the set as it is now and keep
/// it for as long as they use it.
#[derive(Debug)]
pub struct LiveExecutors {
    set: RwLock<Arc<Executors>>,
    swaps: tokio::sync::watch::Sender<u64>,
}

impl Default for LiveExecutors {
    fn default() -> Self {
        Self::new(Executors::default())
    }
}

impl LiveExecutors {
    /// `set` in force.
    pub fn new(set: Executors) -> Self {
        Self {
            set: RwLock::new(Arc::new(set)),
            swaps: tokio::sync::watch::Sender::new(0),
        }
    }

    /// The set in force now.
    pub fn get(&self) -> Arc<Executors> {
        self.set.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Put `set` in force; the one before is dropped when its last user lets it go.
    pub fn replace(&self, set: Executors) {
        let types = set.types().join(",");
        *self.set.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(set);
        self.swaps.send_modify(|n| *n += 1);
        tracing::info!(executors = %types, "executors swapped");
    }

    /// Put `set` in force only if `before` is still the set in force (a compare-and-swap, so
    /// that a set derived from an older one never undoes a swap made meanwhile); whether it was.
    pub fn replace_if(&self, before: &Arc<Executors>, set: Executors) -> bool {
        let mut current = self.set.write().unwrap_or_else(|p| p.into_inner());
        if !Arc::ptr_eq(&current, before) {
            return false;
        }
        let types = set.types().join(",");
        *current = Arc::new(set);
        drop(current);
        self.swaps.send_modify(|n| *n += 1);
        tracing::info!(executors = %types, "executors swapped");
        true
    }

    /// Told of every swap.
    pub fn swaps(&self) -> tokio::sync::watch::Receiver<u64> {
        self.swaps.subscribe()
    }
}

fn load_one(name: &str, config: &str, plugins: &PluginHost) -> Result<Loaded, String> {
    let plugin = plugins.plugin(PluginKind::Executor, name).ok_or_else(|| {
        format!(
            "executor {name}: no executor plugin named `{name}` in {} (see `spear plugin list`)",
            plugins.config().dir.display()
        )
    })?;
    let mut executor = plugin
        .executor()
        .map_err(|e| format!("executor {name}: {e}"))?;
    executor
        .configure(config)
        .map_err(|e| format!("executor {name}: executors.config.{name}: {e}"))?;
    let capabilities = executor.capabilities();
    Ok(Loaded {
        name: name.to_owned(),
        version: plugin.info.version.clone(),
        sha256: plugin.id.sha256.clone(),
        capabilities,
        config: config.to_owned(),
        executor: Arc::from(executor),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_set_derived_from_an_older_one_never_undoes_a_swap() {
        let live = LiveExecutors::default();
        let mut swaps = live.swaps();
        let before = live.get();
        live.replace(Executors {
            problems: vec!["from a config reload".into()],
            ..Executors::default()
        });
        assert!(!live.replace_if(&before, Executors::default()));
        assert_eq!(live.get().problems, ["from a config reload"]);
        let now = live.get();
        assert!(live.replace_if(&now, Executors::default()));
        assert!(live.get().problems.is_empty());
        assert!(swaps.has_changed().unwrap());
        assert_eq!(*swaps.borrow_and_update(), 2);
    }
}
