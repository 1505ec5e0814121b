//! Where one host process makes its instances' scratch directories: `<scratch_dir>/host-<pid>-<n>/`,
//! private (mode 0700), marked as live by a lock on its `.lock` file that the process holds for
//! its life. A directory whose lock can be taken belongs to a process that is gone (killed before
//! it could clean up) and is removed when a host next starts on the same `scratch_dir`; anything
//! else there is left alone.

use std::fs::{DirBuilder, File, TryLockError};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Sender, channel};

/// The name of the lock file that marks a live host's directory.
const LOCK: &str = ".lock";

/// Instance directories made by this process, for unique names.
static NEXT: AtomicU64 = AtomicU64::new(0);

/// The scratch directories of this host process.
#[derive(Debug)]
pub struct ScratchRoot {
    pub(super) dir: PathBuf,
    /// Held locked while the process lives.
    _lock: File,
}

impl ScratchRoot {
    /// Make this process's directory under `scratch_dir` (created if missing), and remove, in the
    /// background, those of processes that are gone.
    pub fn new(scratch_dir: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(scratch_dir)?;
        sweep_dead(scratch_dir);
        let (dir, lock) = loop {
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let dir = scratch_dir.join(format!("host-{}-{n}", std::process::id()));
            match private_dir(&dir) {
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
                Ok(()) => {
                    let lock = File::create(dir.join(LOCK))?;
                    lock.try_lock().map_err(std::io::Error::from)?;
                    break (dir, lock);
                }
            }
        };
        Ok(Self { dir, _lock: lock })
    }

    /// Make a new empty directory for an instance of `plugin`.
    pub(crate) fn make(&self, plugin: &str) -> std::io::Result<PathBuf> {
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
            let path = self.dir.join(format!("{name}-{n}"));
            match private_dir(&path) {
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                other => return other.map(|()| path),
            }
        }
    }
}

impl Drop for ScratchRoot {
    fn drop(&mut self) {
        remove_later(std::mem::take(&mut self.dir));
    }
}

/// A new directory only this user may enter.
fn private_dir(path: &Path) -> std::io::Result<()> {
    DirBuilder::new().mode(0o700).create(path)
}

/// Remove the `host-*` directories under `scratch_dir` whose lock can be taken (their process is
/// gone).
fn sweep_dead(scratch_dir: &Path) {
    let Ok(entries) = std::fs::read_dir(scratch_dir) else {
        return;
    };
    for entry in entries.flatten() {
        if !entry.file_name().to_string_lossy().starts_with("host-") {
            continue;
        }
        let Ok(lock) = File::open(entry.path().join(LOCK)) else {
            continue;
        };
        match lock.try_lock() {
            Ok(()) => remove_later(entry.path()),
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
                    if let Err(e) = std::fs::remove_dir_all(&dir)
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
        let _ = std::fs::remove_dir_all(gone.0);
    }
}
