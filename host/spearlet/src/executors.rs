//! The executor plugins this node uses, by executable type.
//!
//! `[executors] enabled` names plugins in the plugin directory. Each is instantiated once,
//! configured with `[executors.config.<name>]`, and serves the executable type its capabilities
//! declare. An enabled executor that is missing or refuses its configuration is logged and left
//! out: the node advertises only the types it can run, and an execution of another type fails
//! with an error naming what this node runs.

use std::collections::BTreeMap;
use std::sync::Arc;

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
}

impl Executors {
    /// Load and configure every enabled executor (blocking: native plugin calls).
    pub fn load(config: &SpearletConfig, plugins: &PluginHost) -> Self {
        let mut set = Self::default();
        for name in &config.executors.enabled {
            match load_one(name, &config.executor_config(name), plugins) {
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
        executor: Arc::new(executor),
    })
}
