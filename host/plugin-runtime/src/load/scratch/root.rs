//! Where one host process makes its instances' scratch directories: `<scratch_dir>/host-<pid>-<n>/`,
//! private (mode 0700), marked as live by a lock on its `.lock` file that the process holds for
//! its life. It is made as `.new-<pid>-<n>` and renamed to its name once locked, so a sweep never
//! sees a live directory unlocked. A `host-` directory whose lock can be taken belongs to a
//! process that is gone (killed before it could clean up): a host starting on the same
//! `scratch_dir` renames it to `.dead-…` while holding its lock, then removes it; `.new-` and
//! `.dead-` leftovers whose lock is free go too; anything else there is left alone. (flock
//! locks: `scratch_dir` must be a local filesystem.)

use std::fs::{DirBuilder, File, TryLockError};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Sender, channel};
use std::sync::{Arc, Mutex};

/// The name of the lock file that marks a live host's directory.
const LOCK: &str = ".lock";

/// Instance directories made by this process, for unique names.
static NEXT: AtomicU64 = AtomicU64::new(0);

/// The scratch directories of this host process, under `scratch_dir`. Nothing is made there
/// until an instance needs it (a host whose plugins are granted none leaves no trace).
#[derive(Debug)]
pub struct ScratchRoot {
    scratch_dir: PathBuf,
    host: Mutex<Option<Arc<HostDir>>>,
}

/// This process's directory, locked while it lives.
#[derive(Debug)]
struct HostDir {
    dir: PathBuf,
    _lock: File,
}

impl ScratchRoot {
    /// The root under `scratch_dir`; if that exists, the directories of processes that are gone
    /// are removed, in the background.
    pub fn new(scratch_dir: &Path) -> Self {
        if scratch_dir.is_dir() {
            sweep_dead(scratch_dir);
        }
        Self {
            scratch_dir: scratch_dir.to_path_buf(),
            host: Mutex::new(None),
        }
    }

    /// This process's directory, made at the first call.
    fn host(&self) -> std::io::Result<Arc<HostDir>> {
        let mut host = self.host.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(h) = &*host {
            return Ok(h.clone());
        }
        let made = Arc::new(HostDir::make(&self.scratch_dir)?);
        *host = Some(made.clone());
        Ok(made)
    }

    /// This process's directory, if made.
    #[cfg(test)]
    pub(super) fn host_dir(&self) -> Option<PathBuf> {
        let host = self.host.lock().unwrap_or_else(|p| p.into_inner());
        host.as_ref().map(|h| h.dir.clone())
    }

    /// Make a new empty directory for an instance of `plugin`.
    pub(crate) fn make(&self, plugin: &str) -> Result<PathBuf, String> {
        let failed = |e: std::io::Error| format!("{}: {e}", self.scratch_dir.display());
        let host = self.host().map_err(failed)?;
        let name: String = plugin
            .chars()
            .take(64)
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        loop {
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let path = host.dir.join(format!("{name}-{n}"));
            match private_dir(&path) {
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                other => return other.map(|()| path).map_err(failed),
            }
        }
    }
}

impl HostDir {
    /// Make this process's directory under `scratch_dir` (created if missing).
    fn make(scratch_dir: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(scratch_dir)?;
        loop {
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let name = format!("{}-{n}", std::process::id());
            let new = scratch_dir.join(format!(".new-{name}"));
            let dir = scratch_dir.join(format!("host-{name}"));
            match private_dir(&new) {
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
                Ok(()) => {}
            }
            // (A host sweeping at this moment may take it for a leftover: then try another.)
            let lock = File::create(new.join(LOCK))?;
            match lock.try_lock() {
                Ok(()) => {}
                Err(TryLockError::WouldBlock) => continue,
                Err(TryLockError::Error(e)) => return Err(e),
            }
            if dir.exists() {
                continue;
            }
            match std::fs::rename(&new, &dir) {
                Ok(()) => return Ok(Self { dir, _lock: lock }),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

impl Drop for HostDir {
    fn drop(&mut self) {
        remove_later(std::mem::take(&mut self.dir));
    }
}

/// A new directory only this user may enter.
fn private_dir(path: &Path) -> std::io::Result<()> {
    DirBuilder::new().mode(0o700).create(path)
}

/// Remove the `host-`, `.new-` and `.dead-` directories under `scratch_dir` whose lock can be
/// taken (their process is gone).
fn sweep_dead(scratch_dir: &Path) {
    let Ok(entries) = std::fs::read_dir(scratch_dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !["host-", ".new-", ".dead-"]
            .iter()
            .any(|p| name.starts_with(p))
        {
            continue;
        }
        let Ok(lock) = File::open(entry.path().join(LOCK)) else {
            // Only a sweep makes `.dead-` directories, under their lock: one without a lock is
            // a removal cut short (its lock file goes last).
            if name.starts_with(".dead-") {
                remove_later(entry.path());
            }
            continue;
        };
        match lock.try_lock() {
            Ok(()) => {
                // Out of the way under the lock first: no other host can then take it for live.
                let n = NEXT.fetch_add(1, Ordering::Relaxed);
                let dead = scratch_dir.join(format!(".dead-{}-{n}", std::process::id()));
                match std::fs::rename(entry.path(), &dead) {
                    Ok(()) => remove_later(dead),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => tracing::warn!(
                        dir = %entry.path().display(),
                        "cannot remove a stale plugin scratch directory: {e}"
                    ),
                }
            }
            Err(TryLockError::WouldBlock) => {}
            Err(TryLockError::Error(e)) => tracing::warn!(
                dir = %entry.path().display(),
                "cannot tell whether a plugin scratch directory is in use, left alone: {e}"
            ),
        }
    }
}

/// Remove `dir` and everything in it on the one thread that does that (a full directory can take
/// a while: not on the thread dropping an instance).
pub(crate) fn remove_later(dir: PathBuf) {
    static REAPER: Mutex<Option<Sender<PathBuf>>> = Mutex::new(None);
    let mut reaper = REAPER.lock().unwrap_or_else(|p| p.into_inner());
    let sender = reaper.get_or_insert_with(|| {
        let (tx, rx) = channel::<PathBuf>();
        let spawned = std::thread::Builder::new()
            .name("spear-scratch-reaper".into())
            .spawn(move || {
                for dir in rx {
                    if let Err(e) = remove_tree(&dir)
                        && e.kind() != std::io::ErrorKind::NotFound
                    {
                        tracing::warn!(dir = %dir.display(), "cannot remove a plugin scratch directory: {e}");
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::warn!("cannot start the scratch-directory reaper: {e}");
        }
        tx
    });
    if let Err(gone) = sender.send(dir) {
        // The reaper could not start: remove it here.
        *reaper = None;
        let _ = remove_tree(&gone.0);
    }
}

/// Remove `dir` and everything in it, its lock file last: a removal cut short (the process
/// ending) leaves a directory a later sweep still recognizes.
fn remove_tree(dir: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_name() == LOCK {
            continue;
        }
        if entry.file_type()?.is_dir() {
            std::fs::remove_dir_all(entry.path())?;
        } else {
            std::fs::remove_file(entry.path())?;
        }
    }
    match std::fs::remove_file(dir.join(LOCK)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    std::fs::remove_dir(dir)
}
