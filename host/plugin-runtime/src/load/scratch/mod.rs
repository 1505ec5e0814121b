//! A component's private scratch directory (`[plugins.grants.<name>] scratch_mb`): an empty
//! directory per instance, preopened as `/scratch`, removed when the instance ends, holding at
//! most its quota.
//!
//! wasmtime-wasi has no hook to bound what a guest writes to a preopened directory, so the
//! runtime links its own `wasi:filesystem/types` ([`fs`]) over wasmtime-wasi's: every call that
//! can make the directory grow is charged to the instance's [`Quota`] first and refused with
//! `insufficient-space` (as a full disk answers) when it would pass it.
//!
//! What is counted: each file's size (its logical size: a sparse hole counts), each symlink's
//! target, and [`ENTRY`] bytes for every file, directory and link, so that a guest cannot fill
//! the disk's inodes with empty files. A file unlinked while the guest still holds it open stays
//! counted until it is closed. The count is exact after writes and an upper bound after
//! deletions: a removal marks it stale, and the next write that would not fit first counts the
//! directory again (bounded: the directory holds at most quota ÷ [`ENTRY`] entries).

pub(crate) mod fs;
mod writer;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use cap_std::fs::MetadataExt;
use wasmtime_wasi::p2::FsResult;
use wasmtime_wasi::p2::bindings::filesystem::types::ErrorCode;

/// Bytes charged for each file, directory or link, besides its content.
pub const ENTRY: u64 = 4096;
/// Where an instance finds its scratch directory.
pub const GUEST_PATH: &str = "/scratch";
/// Files opened by an instance remembered at once (pruned of closed ones past this).
const TRACKED_FILES: usize = 2048;

/// Where the scratch directories of one host process live: `<scratch_dir>/<pid>/`.
#[derive(Debug)]
pub struct ScratchRoot {
    dir: PathBuf,
}

/// Instance directories made by this process, for unique names across engines.
static NEXT: AtomicU64 = AtomicU64::new(0);

impl ScratchRoot {
    /// The root for this process under `scratch_dir`. The directories of processes that are no
    /// longer running (a host killed before it could clean up) are removed, in the background.
    pub fn new(scratch_dir: &Path) -> Self {
        sweep_dead(scratch_dir);
        Self {
            dir: scratch_dir.join(std::process::id().to_string()),
        }
    }

    /// Make a new empty directory for an instance of `plugin`.
    pub(crate) fn make(&self, plugin: &str) -> std::io::Result<PathBuf> {
        std::fs::create_dir_all(&self.dir)?;
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
            match std::fs::create_dir(&path) {
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                other => return other.map(|()| path),
            }
        }
    }
}

/// Remove the `<pid>` directories under `scratch_dir` whose process is gone (Linux: no
/// `/proc/<pid>`; elsewhere nothing is swept).
fn sweep_dead(scratch_dir: &Path) {
    if !cfg!(target_os = "linux") {
        return;
    }
    let Ok(entries) = std::fs::read_dir(scratch_dir) else {
        return;
    };
    let dead: Vec<PathBuf> = entries
        .flatten()
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let gone =
                pid != std::process::id() && !Path::new("/proc").join(pid.to_string()).exists();
            gone.then(|| e.path())
        })
        .collect();
    if !dead.is_empty() {
        std::thread::spawn(move || {
            for dir in dead {
                if let Err(e) = std::fs::remove_dir_all(&dir) {
                    tracing::warn!(dir = %dir.display(), "cannot remove a stale plugin scratch directory: {e}");
                }
            }
        });
    }
}

/// The scratch directory of one instance and what it may hold. The directory is removed when
/// the last reference goes (the instance's store, and the streams in it).
#[derive(Debug)]
pub(crate) struct Quota {
    plugin: Arc<str>,
    dir: PathBuf,
    /// Bytes it may hold; 0: the grant was taken away (every filesystem call is refused).
    limit: AtomicU64,
    usage: Mutex<Usage>,
    /// Whether a refusal was logged at warn for this instance.
    warned: AtomicBool,
}

#[derive(Debug, Default)]
struct Usage {
    /// Bytes counted (see the module docs); never below what the directory holds.
    used: u64,
    /// Something may have been removed since the last count.
    stale: bool,
    /// Files the guest opened, to find the ones unlinked while open.
    files: Vec<Weak<cap_std::fs::File>>,
}

impl Quota {
    /// The quota of the new, empty directory `dir` of an instance of `plugin`.
    pub(crate) fn new(plugin: Arc<str>, dir: PathBuf, limit: u64) -> Arc<Self> {
        Arc::new(Self {
            plugin,
            dir,
            limit: AtomicU64::new(limit),
            usage: Mutex::default(),
            warned: AtomicBool::new(false),
        })
    }

    /// The host path of the directory.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Put `limit` bytes in force (0: taken away); from the next filesystem call on.
    pub(crate) fn set_limit(&self, limit: u64) {
        self.limit.store(limit, Ordering::Relaxed);
    }

    /// Bytes counted now (an upper bound; see the module docs).
    #[cfg(test)]
    fn used(&self) -> u64 {
        self.lock().used
    }

    fn lock(&self) -> MutexGuard<'_, Usage> {
        self.usage.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Refuse every call once the grant is taken away.
    pub(crate) fn granted(&self) -> FsResult<()> {
        if self.limit.load(Ordering::Relaxed) == 0 {
            return Err(ErrorCode::Access.into());
        }
        Ok(())
    }

    /// Take `n` more bytes, counting the directory again first if that could make room.
    fn reserve(&self, usage: &mut Usage, n: u64) -> FsResult<()> {
        let limit = self.limit.load(Ordering::Relaxed);
        if usage.used.saturating_add(n) > limit && usage.stale {
            let (used, open_orphans) = self.count(usage);
            usage.used = used;
            // A file unlinked while open goes when it is closed, which no call says.
            usage.stale = open_orphans;
        }
        if usage.used.saturating_add(n) > limit {
            let mib = limit / (1024 * 1024);
            if !self.warned.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    plugin = &*self.plugin,
                    "plugin's scratch directory is full ({mib} MiB, [plugins.grants.{}] scratch_mb); its writes fail with insufficient-space",
                    self.plugin
                );
            }
            return Err(ErrorCode::InsufficientSpace.into());
        }
        usage.used += n;
        Ok(())
    }

    /// Run `op`, which may make a new entry (and `extra` bytes), charged first; an entry that
    /// failed to appear is given back.
    pub(crate) fn entry<R>(&self, extra: u64, op: impl FnOnce() -> FsResult<R>) -> FsResult<R> {
        let n = ENTRY.saturating_add(extra);
        self.reserve(&mut self.lock(), n)?;
        let result = op();
        if result.is_err() {
            let mut usage = self.lock();
            usage.used = usage.used.saturating_sub(n);
        }
        result
    }

    /// Run `op`, which makes `file` (of `size` bytes now) `end(size)` bytes long at most,
    /// charged first; the count then follows the size the file really has.
    pub(crate) fn grow<R>(
        &self,
        file: &cap_std::fs::File,
        end: impl FnOnce(u64) -> u64,
        op: impl FnOnce() -> FsResult<R>,
    ) -> FsResult<R> {
        let mut usage = self.lock();
        let before = file.metadata().map_err(io_error)?.len();
        let growth = end(before).saturating_sub(before);
        self.reserve(&mut usage, growth)?;
        let result = op();
        let after = file.metadata().map_or(before + growth, |m| m.len());
        usage.used = usage.used - growth + after.saturating_sub(before);
        if after < before {
            usage.stale = true;
        }
        result
    }

    /// Note that something may have been removed or shrunk: the next write that does not fit
    /// counts again.
    pub(crate) fn freed(&self) {
        self.lock().stale = true;
    }

    /// Remember a file the guest opened (see [`Usage::files`]).
    pub(crate) fn track(&self, file: &Arc<cap_std::fs::File>) {
        let mut usage = self.lock();
        if usage.files.len() >= TRACKED_FILES {
            usage.files.retain(|f| f.strong_count() > 0);
        }
        usage.files.push(Arc::downgrade(file));
    }

    /// What the directory holds, plus the files unlinked but still open (and whether there are
    /// any).
    fn count(&self, usage: &mut Usage) -> (u64, bool) {
        let mut total: u64 = 0;
        let mut dirs = vec![self.dir.clone()];
        while let Some(dir) = dirs.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let Ok(meta) = entry.metadata() else { continue };
                total = total.saturating_add(ENTRY);
                if meta.is_dir() {
                    dirs.push(entry.path());
                } else {
                    total = total.saturating_add(meta.len());
                }
            }
        }
        usage.files.retain(|f| f.strong_count() > 0);
        let mut seen = HashSet::new();
        for file in usage.files.iter().filter_map(Weak::upgrade) {
            if let Ok(meta) = file.metadata()
                && meta.nlink() == 0
                && seen.insert((meta.dev(), meta.ino()))
            {
                total = total.saturating_add(ENTRY + meta.len());
            }
        }
        (total, !seen.is_empty())
    }
}

impl Drop for Quota {
    fn drop(&mut self) {
        if std::fs::remove_dir(&self.dir).is_ok() {
            return;
        }
        let dir = std::mem::take(&mut self.dir);
        // A full directory can take a while to remove: not on the thread dropping the instance.
        std::thread::spawn(move || {
            if let Err(e) = std::fs::remove_dir_all(&dir)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(dir = %dir.display(), "cannot remove a plugin scratch directory: {e}");
            }
        });
    }
}

/// A host I/O error as the guest sees it.
fn io_error(e: std::io::Error) -> wasmtime_wasi::p2::FsError {
    ErrorCode::from(&e).into()
}

#[cfg(test)]
mod tests;
