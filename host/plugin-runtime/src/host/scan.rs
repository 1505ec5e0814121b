//! The plugin directory brought into the registry: new and changed files loaded and self-tested,
//! vanished ones forgotten (an active one is kept until another is selected).
//!
//! Native libraries are loaded at start, and afterwards only when wanted — the replacement of the
//! active plugin's file, a file named like a selected plugin (`name.so`, `libname.so`), or any
//! unloaded one when the config selects a name no loaded plugin has — because loading a native
//! library runs its code in the host, and it can never be unloaded.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use spear_plugin_api::PluginKind;

use super::{PluginHost, State};
use crate::detect::read_plugin_file;
use crate::error::Error;
use crate::plugin::{load_bytes, sha256_hex};
use crate::registry::plugin_files;
use crate::telemetry::EventKind;
use crate::{sidecar, signing};

impl PluginHost {
    /// Bring the registry in step with the directory: first forget vanished files (so a plugin
    /// moved to a new file name is not refused as a duplicate of its old self), then load new and
    /// changed ones. Fails only when the directory cannot be read.
    pub(super) fn scan(
        &self,
        state: &mut State,
        changes: &mut Vec<String>,
        at_start: bool,
    ) -> std::result::Result<(), String> {
        let dir = state.config.dir.clone();
        let files = match plugin_files(&dir) {
            Ok(files) => files,
            // A host with built-ins runs without a plugin directory (like Nomad's built-in
            // drivers); one without has nothing to run. A directory that vanishes once plugins
            // were loaded from it (a deploy swapping it) is refused as before: what is loaded
            // stays.
            Err(e)
                if e.kind() == std::io::ErrorKind::NotFound
                    && !state.registry.builtins.is_empty()
                    && (at_start || state.registry.entries.is_empty()) =>
            {
                if at_start {
                    changes.push(format!(
                        "{}: no such plugin directory; the built-in plugins only",
                        dir.display()
                    ));
                }
                BTreeSet::new()
            }
            Err(e) => {
                let message = format!("cannot read the plugin directory {}: {e}", dir.display());
                self.telemetry
                    .emit(EventKind::Refused, None, Some(&dir), None, &message);
                return Err(message);
            }
        };
        let active = self.active_files();
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
            self.scan_file(state, path, changes, at_start);
        }
        Ok(())
    }

    /// Load every native library seen but not loaded (the config selects a name no loaded plugin
    /// has). Returns whether there were any.
    pub(super) fn load_pending_natives(
        &self,
        state: &mut State,
        changes: &mut Vec<String>,
    ) -> bool {
        let pending: Vec<PathBuf> = state
            .registry
            .entries
            .iter()
            .filter(|(_, e)| e.pending_native)
            .map(|(p, _)| p.clone())
            .collect();
        for path in &pending {
            if let Some(entry) = state.registry.entries.get_mut(path) {
                entry.seen = None;
            }
            self.scan_file(state, path, changes, true);
        }
        !pending.is_empty()
    }

    /// Whether a native library at `path` is wanted now (see the module docs).
    fn native_wanted(&self, state: &State, path: &Path) -> bool {
        if self.active_files().contains(path) {
            return true;
        }
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let name = stem.strip_prefix("lib").unwrap_or(&stem).to_owned();
        [
            &state.config.scheduler,
            &state.config.reclaimer,
            &state.config.shadow,
            &state.config.autoscaler,
        ]
        .into_iter()
        .flatten()
        .any(|sel| sel.name == name || sel.name == stem)
    }

    pub(super) fn scan_file(
        &self,
        state: &mut State,
        path: &Path,
        changes: &mut Vec<String>,
        at_start: bool,
    ) {
        let read = read_plugin_file(path);
        let sha = read.as_ref().ok().map(|b| sha256_hex(b));
        let sidecar_text = sidecar::text(path);
        let sig_text = signing::sig_text(path);
        // What was seen at this path: the content, its sidecar and its signature.
        let fingerprint = sha.as_ref().map(|s| {
            format!(
                "{s}:{}:{}",
                sha256_hex(sidecar_text.as_bytes()),
                sha256_hex(sig_text.as_bytes())
            )
        });
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
        // Only a whole ELF library is set aside unloaded; a broken one is refused below (checking
        // its headers runs none of its code).
        let native = read.as_ref().is_ok_and(|b| {
            b.starts_with(crate::detect::ELF_MAGIC) && crate::detect::detect(path, b).is_ok()
        });
        if native && !at_start && !self.native_wanted(state, path) {
            let entry = state
                .registry
                .entries
                .get_mut(path)
                .expect("inserted above");
            entry.seen = fingerprint;
            entry.loaded = None;
            entry.last_error = None;
            entry.pending_native = true;
            let message = format!(
                "{}: native library not loaded: native plugins load at start, or when the \
                 config selects them",
                path.display()
            );
            tracing::info!("{message}");
            changes.push(message);
            return;
        }
        let mut signer = None;
        let result = read.and_then(|bytes| {
            sidecar::check(path, &sidecar_text, &bytes)?;
            // Checked before any of the file's code is compiled or run.
            signer = state
                .config
                .signing
                .check(&sig_text, &bytes)
                .map_err(|e| Error::refused(path, e))?;
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
        let overrides = result
            .as_ref()
            .is_ok_and(|p| state.registry.builtin(p.info.kind, &p.info.name).is_some());
        let entry = state
            .registry
            .entries
            .get_mut(path)
            .expect("inserted above");
        // A name clash depends on other files, not on this one's content: retry it on every scan.
        let duplicate = matches!(result, Err(Error::Duplicate { .. }));
        entry.seen = if duplicate { None } else { fingerprint };
        entry.pending_native = false;
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
                // A host opens its store once, at start, and its data lives there: a storage
                // backend loaded later is used only after a restart.
                let restart = state.started && p.info.kind == PluginKind::StorageBackend;
                changes.push(format!(
                    "{}: loaded {} {}{}{}",
                    path.display(),
                    p.info.name,
                    p.info.version,
                    if overrides {
                        " (overrides the built-in of that name)"
                    } else {
                        ""
                    },
                    if restart {
                        "; a storage backend: a restart is needed to use it (the running host \
                         keeps the store it opened at start; `sms storage migrate` moves data \
                         between backends)"
                    } else {
                        ""
                    }
                ));
                if restart {
                    state
                        .storage_restarts
                        .push(format!("plugins: storage backend {}", p.info.name));
                }
                entry.loaded = Some(p);
                entry.signed_by = signer;
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
}
