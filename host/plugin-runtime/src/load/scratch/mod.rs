//! A component's private scratch directory (`[plugins.grants.<name>] scratch_mb`): an empty
//! directory per instance, preopened as `/scratch`, removed when the instance ends, holding at
//! most its quota.
//!
//! wasmtime-wasi has no hook to bound what a guest writes to a preopened directory, so the
//! runtime links its own `wasi:filesystem/types` ([`fs`]) over wasmtime-wasi's: every call that
//! can make the directory grow is charged to the instance's [`Quota`] before it is made and
//! refused with `insufficient-space` (as a full disk answers) when it would pass it; every call
//! that frees something gives it back after it is done.
//!
//! What is counted, as calls are made (no directory walk): each file's size (its logical size: a
//! sparse hole counts), each symlink's target, each directory's own size (it grows with the
//! names it holds, and on some filesystems never shrinks), and [`ENTRY`] bytes for every file,
//! directory and symlink, so that a guest cannot fill the disk's inodes with empty files; at most
//! [`MAX_ENTRIES`] names, [`MAX_DIRS`] of them directories. A file unlinked (or renamed over)
//! while the guest holds it open stays counted until its last handle is dropped. Hard links are
//! refused (`not-permitted`): a file has one name. At most [`MAX_OPEN`] files and directories
//! and [`MAX_LISTINGS`] directory listings are open at once per instance (one more answers
//! `quota`); a path longer than [`MAX_PATH`] answers `name-too-long`.

pub(crate) mod fs;
mod root;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use cap_std::fs::MetadataExt;
use wasmtime_wasi::p2::FsResult;
use wasmtime_wasi::p2::bindings::filesystem::types::ErrorCode;

pub use root::ScratchRoot;

/// Bytes charged for each file, directory or symlink, besides its content.
pub const ENTRY: u64 = 4096;
/// Names (files, directories, symlinks) one instance's directory may hold.
pub const MAX_ENTRIES: u64 = 16_384;
/// Directories one instance's directory may hold, so at most as deep (the host removes the tree
/// with a descriptor per level).
pub const MAX_DIRS: u64 = 256;
/// Files and directories one instance may hold open at once.
pub const MAX_OPEN: usize = 128;
/// Directory listings one instance may hold at once (wasmtime-wasi reads a directory whole
/// into host memory for each).
pub const MAX_LISTINGS: u64 = 8;
/// The longest path a call may name, in bytes (the host's PATH_MAX: a longer one would resolve
/// differently in the host's look before a call and in the call).
pub const MAX_PATH: usize = 4095;
/// Where an instance finds its scratch directory.
pub const GUEST_PATH: &str = "/scratch";

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
    /// Bytes counted (see the module docs).
    used: u64,
    /// Names in the directory.
    entries: u64,
    /// Directories among them.
    dirs_made: u64,
    /// Directory listings open.
    listings: u64,
    /// Files the guest opened (a stream on a file shares its handle).
    files: Vec<Weak<cap_std::fs::File>>,
    /// Directories the guest opened.
    dirs: Vec<Weak<cap_std::fs::Dir>>,
    /// Files without a name that the guest still holds open, still counted.
    orphans: Vec<Orphan>,
}

/// A file unlinked while open: counted until every handle on it is gone.
#[derive(Debug)]
struct Orphan {
    /// Its device and inode.
    id: (u64, u64),
    handles: Vec<Handle>,
    /// Bytes it is counted for (its size and [`ENTRY`]).
    charged: u64,
}

/// A handle the guest holds on a file or directory.
#[derive(Debug, Clone)]
enum Handle {
    File(Weak<cap_std::fs::File>),
    Dir(Weak<cap_std::fs::Dir>),
}

impl Handle {
    fn alive(&self) -> bool {
        match self {
            Handle::File(f) => f.strong_count() > 0,
            Handle::Dir(d) => d.strong_count() > 0,
        }
    }

    /// The device and inode it is open on, if still open.
    fn id(&self) -> Option<(u64, u64)> {
        let meta = match self {
            Handle::File(f) => f.upgrade()?.metadata().ok()?,
            Handle::Dir(d) => d.upgrade()?.dir_metadata().ok()?,
        };
        Some(file_id(&meta))
    }
}

/// A file's device and inode.
pub(crate) fn file_id(meta: &cap_std::fs::Metadata) -> (u64, u64) {
    (meta.dev(), meta.ino())
}

impl Usage {
    /// Give back what orphans whose last handle is gone were counted for.
    fn reclaim(&mut self) {
        let mut freed = 0;
        self.orphans.retain(|o| {
            let open = o.handles.iter().any(Handle::alive);
            if !open {
                freed += o.charged;
            }
            open
        });
        self.used = self.used.saturating_sub(freed);
    }

    /// Files and directories open now.
    fn open(&mut self) -> usize {
        self.files.retain(|f| f.strong_count() > 0);
        self.dirs.retain(|d| d.strong_count() > 0);
        self.files.len() + self.dirs.len()
    }
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

    /// Bytes and names counted now.
    #[cfg(test)]
    fn counted(&self) -> (u64, u64) {
        let usage = self.lock();
        (usage.used, usage.entries)
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

    /// Take `bytes` more and `names` more names (`dirs` of them directories), or refuse.
    fn reserve(&self, usage: &mut Usage, bytes: u64, names: u64, dirs: u64) -> FsResult<()> {
        let limit = self.limit.load(Ordering::Relaxed);
        usage.reclaim();
        let fits = usage.used.saturating_add(bytes) <= limit
            && usage.entries.saturating_add(names) <= MAX_ENTRIES
            && usage.dirs_made.saturating_add(dirs) <= MAX_DIRS;
        if !fits {
            if !self.warned.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    plugin = &*self.plugin,
                    "plugin's scratch directory is full ({} MiB, at most {MAX_ENTRIES} names, \
                     {MAX_DIRS} directories; [plugins.grants.{}] scratch_mb); its writes fail \
                     with insufficient-space",
                    limit / (1024 * 1024),
                    self.plugin
                );
            }
            return Err(ErrorCode::InsufficientSpace.into());
        }
        usage.used += bytes;
        usage.entries += names;
        usage.dirs_made += dirs;
        Ok(())
    }

    /// Run `op`, which makes the new name `path` in `dir`: a file, a directory, or a symlink of
    /// `extra` bytes; charged first (a name that failed to appear is given back), then the growth
    /// of the directory holding it and, for a directory, its own size.
    pub(crate) fn entry<R>(
        &self,
        dir: &cap_std::fs::Dir,
        path: &str,
        kind: New,
        op: impl FnOnce() -> FsResult<R>,
    ) -> FsResult<R> {
        let extra = match kind {
            New::Symlink(target) => target,
            New::File | New::Dir => 0,
        };
        let made_dir = u64::from(matches!(kind, New::Dir));
        let bytes = ENTRY.saturating_add(extra);
        let mut usage = self.lock();
        self.reserve(&mut usage, bytes, 1, made_dir)?;
        let result = with_parent(&mut usage, dir, path, op);
        if result.is_err() {
            usage.used = usage.used.saturating_sub(bytes);
            usage.entries = usage.entries.saturating_sub(1);
            usage.dirs_made = usage.dirs_made.saturating_sub(made_dir);
        } else if made_dir == 1 {
            let own = dir.symlink_metadata(path).map_or(0, |m| m.len());
            usage.used = usage.used.saturating_add(own);
        }
        result
    }

    /// Run `op`, which makes `file` (of `size` bytes now) `end(size)` bytes long at most (or
    /// shorter), charged first; the count then follows the size the file really has. The outer
    /// error is the quota's (or `file`'s size unknown), the inner one `op`'s.
    pub(crate) fn grow<R, E>(
        &self,
        file: &cap_std::fs::File,
        end: impl FnOnce(u64) -> u64,
        op: impl FnOnce() -> Result<R, E>,
    ) -> FsResult<Result<R, E>> {
        let mut usage = self.lock();
        let before = file.metadata()?.len();
        let growth = end(before).saturating_sub(before);
        self.reserve(&mut usage, growth, 0, 0)?;
        let result = op();
        let meta = file.metadata();
        let after = meta.as_ref().map_or(before + growth, |m| m.len());
        // What it was charged for, less the growth it did not make, less what it shrank by.
        usage.used = (usage.used - growth + after.saturating_sub(before))
            .saturating_sub(before.saturating_sub(after));
        if let Ok(meta) = meta
            && meta.nlink() == 0
            && let Some(o) = usage.orphans.iter_mut().find(|o| o.id == file_id(&meta))
        {
            o.charged = ENTRY + after;
        }
        Ok(result)
    }

    /// Run `op`, which removes (unlinks, or replaces by a rename) the name `path` in `dir`
    /// (unless it is the file `same_as`), then give back what that name was counted for: a file
    /// the guest still holds open stays counted until its last handle goes.
    pub(crate) fn remove<R>(
        &self,
        dir: &cap_std::fs::Dir,
        path: &str,
        same_as: Option<(u64, u64)>,
        op: impl FnOnce() -> FsResult<R>,
    ) -> FsResult<R> {
        let mut usage = self.lock();
        // (A rename onto itself removes nothing.)
        let gone = dir
            .symlink_metadata(path)
            .ok()
            .filter(|m| Some(file_id(m)) != same_as);
        let result = with_parent(&mut usage, dir, path, op)?;
        // The name is gone only if it no longer names the same file (a call that resolved the
        // path otherwise than the look before it removed something else, or nothing).
        let still = dir.symlink_metadata(path).ok().map(|m| file_id(&m));
        if let Some(meta) = gone.filter(|m| still != Some(file_id(m))) {
            usage.entries = usage.entries.saturating_sub(1);
            if meta.is_dir() {
                usage.dirs_made = usage.dirs_made.saturating_sub(1);
            }
            // A directory's own size was counted as it grew; a symlink's is its target's length.
            let charged = ENTRY + meta.len();
            let id = file_id(&meta);
            // A file or directory the guest still holds open keeps its blocks until closed.
            let handles: Vec<Handle> = if meta.is_file() || meta.is_dir() {
                let files = usage.files.iter().cloned().map(Handle::File);
                let dirs = usage.dirs.iter().cloned().map(Handle::Dir);
                files.chain(dirs).filter(|h| h.id() == Some(id)).collect()
            } else {
                Vec::new()
            };
            if handles.is_empty() {
                usage.used = usage.used.saturating_sub(charged);
            } else {
                usage.orphans.push(Orphan {
                    id,
                    handles,
                    charged,
                });
            }
        }
        Ok(result)
    }

    /// Open a directory listing, or refuse past [`MAX_LISTINGS`].
    pub(crate) fn listing<R>(&self, op: impl FnOnce() -> FsResult<R>) -> FsResult<R> {
        let mut usage = self.lock();
        if usage.listings >= MAX_LISTINGS {
            return Err(ErrorCode::Quota.into());
        }
        let result = op()?;
        usage.listings += 1;
        Ok(result)
    }

    /// A directory listing was dropped.
    pub(crate) fn listing_closed(&self) {
        let mut usage = self.lock();
        usage.listings = usage.listings.saturating_sub(1);
    }

    /// Run `op`, which opens a file of `held` bytes cutting it to nothing, then give them back.
    pub(crate) fn truncate<R>(&self, held: u64, op: impl FnOnce() -> FsResult<R>) -> FsResult<R> {
        let result = op()?;
        let mut usage = self.lock();
        usage.used = usage.used.saturating_sub(held);
        Ok(result)
    }

    /// Refuse to open one more file or directory past [`MAX_OPEN`].
    pub(crate) fn may_open(&self) -> FsResult<()> {
        if self.lock().open() >= MAX_OPEN {
            return Err(ErrorCode::Quota.into());
        }
        Ok(())
    }

    /// Remember a file the guest opened (see [`Usage::files`]).
    pub(crate) fn opened_file(&self, file: &Arc<cap_std::fs::File>) {
        self.lock().files.push(Arc::downgrade(file));
    }

    /// Remember a directory the guest opened.
    pub(crate) fn opened_dir(&self, dir: &Arc<cap_std::fs::Dir>) {
        self.lock().dirs.push(Arc::downgrade(dir));
    }
}

/// What [`Quota::entry`] makes.
#[derive(Debug, Clone, Copy)]
pub(crate) enum New {
    /// A file.
    File,
    /// A directory.
    Dir,
    /// A symlink whose target is this many bytes.
    Symlink(u64),
}

/// The directory holding `path` in `dir` (`.` for a bare name).
fn parent(path: &str) -> &str {
    match std::path::Path::new(path).parent().and_then(|p| p.to_str()) {
        Some("") | None => ".",
        Some(p) => p,
    }
}

/// Run `op`, which adds or removes a name of the directory holding `path` in `dir`, and count
/// the change of that directory's size.
fn with_parent<R>(
    usage: &mut Usage,
    dir: &cap_std::fs::Dir,
    path: &str,
    op: impl FnOnce() -> FsResult<R>,
) -> FsResult<R> {
    // Measured through a handle: the same directory before and after, whatever the call does
    // to the path that named it. One that cannot be opened is not changed by this call.
    let holder = dir.open_dir(parent(path))?;
    let before = holder.dir_metadata()?.len();
    let result = op();
    if let Ok(after) = holder.dir_metadata().map(|m| m.len()) {
        usage.used = (usage.used.saturating_add(after.saturating_sub(before)))
            .saturating_sub(before.saturating_sub(after));
    }
    result
}

impl Drop for Quota {
    fn drop(&mut self) {
        if std::fs::remove_dir(&self.dir).is_err() {
            root::remove_later(std::mem::take(&mut self.dir));
        }
    }
}

#[cfg(test)]
mod tests;
