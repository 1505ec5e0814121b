//! Plugins known to a host, by file. A file that fails to load keeps its previously loaded version
//! (if any) registered, with the error shown beside it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;
use spear_plugin_api::PluginKind;

use crate::detect::Form;
use crate::plugin::LoadedPlugin;

/// Where a plugin stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PluginState {
    /// Selected and deciding.
    Active,
    /// Loaded, not selected.
    Standby,
    /// Selected, but failing: the fallback decides.
    Quarantined,
    /// The file could not be loaded.
    Failed,
}

/// What the API shows about one plugin file.
#[derive(Debug, Clone, Serialize)]
pub struct PluginRecord {
    /// Plugin name (the file name when it never loaded).
    pub name: String,
    /// Kind, when loaded.
    pub kind: Option<PluginKind>,
    /// Form, when loaded.
    pub form: Option<Form>,
    /// Version, when loaded.
    pub version: Option<String>,
    /// Description, when loaded.
    pub description: Option<String>,
    /// The file.
    pub file: PathBuf,
    /// sha256 of the loaded content.
    pub sha256: Option<String>,
    /// State.
    pub state: PluginState,
    /// The last error (a refused replacement, a failing call), if any.
    pub last_error: Option<String>,
    /// The file is gone but the plugin is still active (until another is selected).
    pub file_missing: bool,
}

#[derive(Debug, Default)]
pub(crate) struct Entry {
    pub(crate) loaded: Option<LoadedPlugin>,
    /// Fingerprint (content and sidecar) last seen at this path, loaded or refused.
    pub(crate) seen: Option<String>,
    pub(crate) last_error: Option<String>,
    pub(crate) missing: bool,
}

/// Plugins by file.
#[derive(Debug, Default)]
pub struct Registry {
    pub(crate) entries: BTreeMap<PathBuf, Entry>,
}

impl Registry {
    /// The plugin of `kind` called `name`, if registered from a file that still exists.
    pub fn lookup(&self, kind: PluginKind, name: &str) -> Option<&LoadedPlugin> {
        self.entries
            .values()
            .filter(|e| !e.missing)
            .filter_map(|e| e.loaded.as_ref())
            .find(|p| p.info.kind == kind && p.info.name == name)
    }

    /// The file other than `path` that holds a plugin of this kind and name.
    pub(crate) fn holder(&self, kind: PluginKind, name: &str, path: &Path) -> Option<&Path> {
        self.entries.iter().find_map(|(p, e)| {
            // A vanished file still running does not hold its name against a new file.
            let loaded = e.loaded.as_ref().filter(|_| !e.missing)?;
            (p != path && loaded.info.kind == kind && loaded.info.name == name)
                .then_some(p.as_path())
        })
    }

    /// Every loaded plugin.
    pub fn loaded(&self) -> impl Iterator<Item = &LoadedPlugin> {
        self.entries.values().filter_map(|e| e.loaded.as_ref())
    }
}
