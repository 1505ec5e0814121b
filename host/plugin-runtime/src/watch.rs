//! Watching the plugin directory and the config file with `notify`.
//!
//! Events are debounced (editors and `cp` produce bursts), then the host rescans the directory
//! and/or re-reads the config on a dedicated thread, off every decision path. The config file's
//! directory is watched rather than the file, so atomic replace-by-rename is seen too.

use std::path::PathBuf;
use std::sync::Weak;
use std::sync::mpsc::{RecvTimeoutError, channel};
use std::time::Duration;

use notify::{RecursiveMode, Watcher as _};

use crate::error::{Error, Result};
use crate::host::{PluginHost, Trigger};

/// Quiet time after the last file event before acting on a burst.
const DEBOUNCE: Duration = Duration::from_millis(40);

/// What one notification says changed.
enum Seen {
    Paths(Vec<PathBuf>),
    Unknown,
}

/// A running watch; dropping it stops watching.
pub struct Watcher {
    _watcher: notify::RecommendedWatcher,
}

impl std::fmt::Debug for Watcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Watcher")
    }
}

impl Watcher {
    pub(crate) fn spawn(
        host: Weak<PluginHost>,
        dir: PathBuf,
        config: Option<PathBuf>,
    ) -> Result<Self> {
        let (tx, rx) = channel::<Seen>();
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                let seen = match event {
                    // A lost or overflowed event queue: what changed is unknown, look at everything.
                    Err(_) => Seen::Unknown,
                    Ok(e) if e.need_rescan() || e.paths.is_empty() => Seen::Unknown,
                    Ok(e) if e.kind.is_access() => return,
                    Ok(e) => Seen::Paths(e.paths),
                };
                let _ = tx.send(seen);
            })
            .map_err(|e| watch_error(&dir, e))?;
        // A host running on its built-ins alone may have no plugin directory: it is not watched
        // (create it, then reload).
        if dir.exists() {
            watcher
                .watch(&dir, RecursiveMode::NonRecursive)
                .map_err(|e| watch_error(&dir, e))?;
        } else {
            tracing::info!(
                dir = %dir.display(),
                "no plugin directory to watch; create it, then reload to load plugins from it"
            );
        }
        let config_dir = config.as_ref().and_then(|c| {
            c.parent().map(|p| {
                if p.as_os_str().is_empty() {
                    PathBuf::from(".")
                } else {
                    p.to_path_buf()
                }
            })
        });
        if let Some(cd) = &config_dir
            && cd.canonicalize().ok() != dir.canonicalize().ok()
        {
            watcher
                .watch(cd, RecursiveMode::NonRecursive)
                .map_err(|e| watch_error(cd, e))?;
        }
        let config_name = config
            .as_ref()
            .and_then(|c| c.file_name().map(ToOwned::to_owned));
        let dir_canon = dir.canonicalize().unwrap_or(dir.clone());
        std::thread::Builder::new()
            .name("spear-plugin-watch".into())
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    let mut events = vec![first];
                    loop {
                        match rx.recv_timeout(DEBOUNCE) {
                            Ok(e) => events.push(e),
                            Err(RecvTimeoutError::Timeout) => break,
                            Err(RecvTimeoutError::Disconnected) => return,
                        }
                    }
                    let unknown = events.iter().any(|e| matches!(e, Seen::Unknown));
                    let (mut config_changed, mut dir_changed) = (unknown, unknown);
                    let paths = events.iter().flat_map(|e| match e {
                        Seen::Paths(p) => p.as_slice(),
                        Seen::Unknown => &[],
                    });
                    for p in paths {
                        if config_name.is_some() && p.file_name() == config_name.as_deref() {
                            config_changed = true;
                        }
                        // Hidden names (the compile cache, temporary files before their
                        // rename) are never plugins: they change nothing worth a rescan.
                        let hidden = p
                            .file_name()
                            .is_some_and(|n| n.to_string_lossy().starts_with('.'));
                        let parent = p.parent().and_then(|d| d.canonicalize().ok());
                        if parent.as_ref() == Some(&dir_canon) && !hidden {
                            dir_changed = true;
                        }
                    }
                    let Some(host) = host.upgrade() else { return };
                    if dir_changed {
                        host.rescan(Trigger::Directory);
                    }
                    if config_changed {
                        host.reload_config(Trigger::ConfigFile);
                    }
                }
            })
            .map_err(|e| Error::Io {
                file: PathBuf::from("spear-plugin-watch"),
                source: e,
            })?;
        Ok(Self { _watcher: watcher })
    }
}

fn watch_error(path: &std::path::Path, e: notify::Error) -> Error {
    Error::refused(path, format!("cannot watch: {e}"))
}
