//! Private working directories: each process execution runs in a directory of its own under
//! `<data_dir>/work`, readable by its owner only, removed when the execution ends. What an
//! earlier run of this Spearlet left there (a crash) is removed at start: process executions do
//! not outlive their agent.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// The directory the private ones live in.
#[derive(Debug)]
pub struct WorkDirs {
    root: PathBuf,
    next: AtomicU64,
}

impl WorkDirs {
    /// `<data_dir>/work`, emptied.
    pub fn new(data_dir: &Path) -> io::Result<Self> {
        use std::os::unix::fs::PermissionsExt;
        let root = data_dir.join("work");
        match std::fs::remove_dir_all(&root) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        std::fs::create_dir_all(&root)?;
        // Others may pass through (a `run_as` user reaching its own directory), not list.
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o711))?;
        // Absolute: a program's directory must not depend on the agent's.
        let root = root.canonicalize()?;
        Ok(Self {
            root,
            next: AtomicU64::new(0),
        })
    }

    /// A new private directory for execution `id` (mode 0700).
    pub fn create(&self, id: &str) -> io::Result<WorkDir> {
        use std::os::unix::fs::DirBuilderExt;
        // Execution ids are SMS's UUIDs; anything else is kept to a safe name.
        let name: String = id
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
            .take(64)
            .collect();
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let path = self.root.join(format!("{name}.{n}"));
        std::fs::DirBuilder::new().mode(0o700).create(&path)?;
        Ok(WorkDir(path))
    }
}

/// One execution's directory; removed when dropped (at once when empty, else off the async
/// threads).
#[derive(Debug)]
pub struct WorkDir(PathBuf);

impl WorkDir {
    /// Its path.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let path = std::mem::take(&mut self.0);
        // Most programs leave nothing: one `rmdir`, here.
        if std::fs::remove_dir(&path).is_ok() {
            return;
        }
        let remove = move || {
            if let Err(e) = std::fs::remove_dir_all(&path)
                && e.kind() != io::ErrorKind::NotFound
            {
                tracing::warn!(dir = %path.display(), error = %e, "cannot remove a working directory");
            }
        };
        // What a program left may be large: not on an async worker.
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => drop(rt.spawn_blocking(remove)),
            Err(_) => remove(),
        }
    }
}
