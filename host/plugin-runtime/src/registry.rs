//! Plugins known to a host, by file. A file that fails to load keeps its previously loaded version
//! (if any) registered, with the error shown beside it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::Serialize;
use spear_plugin_api::PluginKind;

use crate::detect::Form;
use crate::plugin::LoadedPlugin;
use crate::slot::SlotStatus;

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
    /// A native library that appeared after start and is not selected: not loaded (its code and
    /// initializers never ran). Native libraries load at start, or when the config selects them.
    NotLoaded,
    /// A built-in that a plugin file of the same kind and name replaces.
    Overridden,
    /// Selected as the shadow strategy (`scheduler.shadow`): asked the same batches as the active
    /// one, its decisions recorded and never applied.
    Shadow,
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
    /// The trusted key (its name in `[plugins.trusted_keys]`) that signed the loaded content.
    pub signed_by: Option<String>,
}

#[derive(Debug, Default, Clone)]
pub(crate) struct Entry {
    pub(crate) loaded: Option<LoadedPlugin>,
    /// The trusted key that signed `loaded`, if one did.
    pub(crate) signed_by: Option<String>,
    /// Fingerprint (content and sidecar) last seen at this path, loaded or refused.
    pub(crate) seen: Option<String>,
    pub(crate) last_error: Option<String>,
    pub(crate) missing: bool,
    /// A native library seen after start and not loaded (not selected).
    pub(crate) pending_native: bool,
}

/// Plugins by file, and the host's built-ins.
#[derive(Debug, Default, Clone)]
pub struct Registry {
    pub(crate) entries: BTreeMap<PathBuf, Entry>,
    /// Plugins linked into the host binary: found when no file holds their kind and name.
    pub(crate) builtins: Vec<LoadedPlugin>,
}

impl Registry {
    /// The plugin of `kind` called `name`: from a file that still exists, else the built-in.
    pub fn lookup(&self, kind: PluginKind, name: &str) -> Option<&LoadedPlugin> {
        self.in_file(kind, name)
            .or_else(|| self.builtin(kind, name))
    }

    /// The plugin of `kind` called `name` registered from a file that still exists.
    fn in_file(&self, kind: PluginKind, name: &str) -> Option<&LoadedPlugin> {
        self.entries
            .values()
            .filter(|e| !e.missing)
            .filter_map(|e| e.loaded.as_ref())
            .find(|p| p.info.kind == kind && p.info.name == name)
    }

    /// The built-in of `kind` called `name`.
    pub(crate) fn builtin(&self, kind: PluginKind, name: &str) -> Option<&LoadedPlugin> {
        self.builtins
            .iter()
            .find(|p| p.info.kind == kind && p.info.name == name)
    }

    /// What the API shows for each built-in.
    pub(crate) fn builtin_records(&self, slots: &[SlotStatus]) -> Vec<PluginRecord> {
        self.builtins
            .iter()
            .map(|p| {
                let entry = Entry {
                    loaded: Some(p.clone()),
                    ..Entry::default()
                };
                let mut r = record(&p.id.file, &entry, slots);
                if r.state == PluginState::Standby
                    && self.in_file(p.info.kind, &p.info.name).is_some()
                {
                    r.state = PluginState::Overridden;
                }
                r
            })
            .collect()
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

    /// Every loaded plugin, built-ins last.
    pub fn loaded(&self) -> impl Iterator<Item = &LoadedPlugin> {
        self.entries
            .values()
            .filter_map(|e| e.loaded.as_ref())
            .chain(&self.builtins)
    }
}

/// What the API shows for the file at `file`, given the slots' states.
pub(crate) fn record(file: &Path, e: &Entry, slots: &[SlotStatus]) -> PluginRecord {
    let Some(p) = &e.loaded else {
        return PluginRecord {
            name: file
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            kind: None,
            form: None,
            version: None,
            description: None,
            file: file.into(),
            sha256: None,
            state: if e.pending_native {
                PluginState::NotLoaded
            } else {
                PluginState::Failed
            },
            last_error: e.last_error.clone(),
            signed_by: None,
            file_missing: e.missing,
        };
    };
    // A plugin may fill two slots (the strategy and the shadow): quarantined in either shows,
    // then deciding wins over shadowing.
    let mine: Vec<&SlotStatus> = slots
        .iter()
        .filter(|s| s.plugin.as_ref() == Some(&p.id))
        .collect();
    let slot = mine
        .iter()
        .find(|s| s.quarantined)
        .or_else(|| mine.iter().find(|s| s.role != "shadow"))
        .or_else(|| mine.first())
        .copied();
    let state = match slot {
        Some(s) if s.quarantined => PluginState::Quarantined,
        Some(s) if s.role == "shadow" => PluginState::Shadow,
        Some(_) => PluginState::Active,
        None => PluginState::Standby,
    };
    PluginRecord {
        name: p.info.name.clone(),
        kind: Some(p.info.kind),
        form: Some(p.id.form),
        version: Some(p.info.version.clone()),
        description: Some(p.info.description.clone()),
        file: file.into(),
        sha256: Some(p.id.sha256.clone()),
        state,
        last_error: e
            .last_error
            .clone()
            .or_else(|| slot.and_then(|s| s.last_error.clone())),
        file_missing: e.missing,
        signed_by: e.signed_by.clone(),
    }
}

/// Files in `dir` that may be plugins: every entry but hidden files, sidecars (`*.toml`), notes and
/// editor leftovers. Directories and links are included so that a directory named like a plugin is
/// reported, not silently skipped; other directories are ignored.
pub(crate) fn plugin_files(dir: &Path) -> std::io::Result<BTreeSet<PathBuf>> {
    let mut files = BTreeSet::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let ignored = name.starts_with('.')
            || name.ends_with('~')
            || [".toml", ".sig", ".md", ".txt", ".tmp", ".part", ".swp"]
                .iter()
                .any(|s| name.ends_with(s));
        if ignored {
            continue;
        }
        let looks_like_plugin = [".wasm", ".so", ".dylib"].iter().any(|s| name.ends_with(s));
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        if is_dir && !looks_like_plugin {
            continue;
        }
        files.insert(entry.path());
    }
    Ok(files)
}
