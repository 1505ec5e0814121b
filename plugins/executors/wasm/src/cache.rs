//! The module cache: compiled and linked guests keyed by the sha256 of their bytes.
//!
//! All executions of the same binary share one compilation and one pre-linked [`Program`] (the
//! "shared binary"), wherever the file lives. To spare reading and hashing the file on every start,
//! the cache also remembers each path's fingerprint (device, inode, size, modification and change
//! times in nanoseconds): a file whose fingerprint is unchanged is taken to hold the same bytes.
//!
//! The cache holds at most `capacity` programs; inserting past it evicts the least recently used.
//! Concurrent first starts of one binary compile it once (the others wait for that compilation).
//! Compilation and link failures are cached too: the same bytes always fail the same way.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use sha2::{Digest, Sha256};
use wasmtime::Engine;

use crate::program::{Compiled, Linkers, Program, compile};

type Hash = [u8; 32];
type Fingerprint = (u64, u64, u64, i64, i64, i64, i64);
/// A binary's compilation, done once by whichever start needs it first.
type Cell = Arc<OnceLock<Result<Compiled, String>>>;

/// Counters of the module cache.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Starts that found their binary already in the cache.
    pub hits: u64,
    /// Starts that had to compile their binary.
    pub misses: u64,
    /// Binaries held now.
    pub entries: usize,
}

struct Slot {
    compiled: Cell,
    program: Option<Result<Arc<Program>, String>>,
    used: u64,
}

#[derive(Default)]
struct Inner {
    slots: HashMap<Hash, Slot>,
    files: HashMap<PathBuf, (Fingerprint, Hash)>,
    clock: u64,
}

/// Compiled and linked guests by content hash.
pub struct Cache {
    engine: Engine,
    linkers: Linkers,
    capacity: usize,
    inner: Mutex<Inner>,
    hits: AtomicU64,
    misses: AtomicU64,
}

fn fingerprint(m: &std::fs::Metadata) -> Fingerprint {
    (
        m.dev(),
        m.ino(),
        m.size(),
        m.mtime(),
        m.mtime_nsec(),
        m.ctime(),
        m.ctime_nsec(),
    )
}

impl Cache {
    /// An empty cache of `capacity` binaries for `engine`.
    pub fn new(engine: Engine, capacity: usize) -> Result<Self, String> {
        Ok(Self {
            linkers: Linkers::new(&engine)?,
            engine,
            capacity: capacity.max(1),
            inner: Mutex::default(),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The ready-to-instantiate program of the file at `path`. Errors say why the file cannot run
    /// (unreadable, not WebAssembly, not a WASI command, does not compile or link).
    pub fn program(&self, path: &Path) -> Result<Arc<Program>, String> {
        let meta = std::fs::metadata(path).map_err(|e| format!("cannot be read: {e}"))?;
        let fp = fingerprint(&meta);
        let known = {
            let mut inner = self.lock();
            match inner.files.get(path) {
                Some((f, hash)) if *f == fp => {
                    let hash = *hash;
                    self.touch(&mut inner, hash)
                }
                _ => None,
            }
        };
        let (hash, compiled) = match known {
            Some((hash, cell)) if cell.get().is_some() => {
                self.hits.fetch_add(1, Ordering::Relaxed);
                (hash, cell)
            }
            _ => {
                let bytes = std::fs::read(path).map_err(|e| format!("cannot be read: {e}"))?;
                let hash: Hash = Sha256::digest(&bytes).into();
                let cell = self.entry(path, fp, hash);
                cell.get_or_init(|| compile(&self.engine, &bytes));
                (hash, cell)
            }
        };
        let compiled = match compiled.get() {
            Some(Ok(c)) => c.clone(),
            Some(Err(e)) => return Err(e.clone()),
            None => return Err("compilation did not complete".into()),
        };
        if let Some(Some(p)) = self.lock().slots.get(&hash).map(|s| s.program.clone()) {
            return p;
        }
        let linked = self.linkers.link(&compiled).map(Arc::new);
        if let Some(slot) = self.lock().slots.get_mut(&hash) {
            slot.program.get_or_insert_with(|| linked.clone());
        }
        linked
    }

    /// Mark `hash` used; its compilation cell if cached.
    fn touch(&self, inner: &mut Inner, hash: Hash) -> Option<(Hash, Cell)> {
        inner.clock += 1;
        let now = inner.clock;
        let slot = inner.slots.get_mut(&hash)?;
        slot.used = now;
        Some((hash, slot.compiled.clone()))
    }

    /// The compilation cell of `hash` (created, counted as a miss, if new); records `path`.
    fn entry(&self, path: &Path, fp: Fingerprint, hash: Hash) -> Cell {
        let mut inner = self.lock();
        inner.files.insert(path.to_path_buf(), (fp, hash));
        if let Some((_, cell)) = self.touch(&mut inner, hash) {
            self.hits.fetch_add(1, Ordering::Relaxed);
            return cell;
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        while inner.slots.len() >= self.capacity {
            let Some(oldest) = inner
                .slots
                .iter()
                .min_by_key(|(_, s)| s.used)
                .map(|(h, _)| *h)
            else {
                break;
            };
            inner.slots.remove(&oldest);
            inner.files.retain(|_, (_, h)| *h != oldest);
        }
        inner.files.insert(path.to_path_buf(), (fp, hash));
        let cell = Arc::new(OnceLock::new());
        let used = inner.clock;
        inner.slots.insert(
            hash,
            Slot {
                compiled: cell.clone(),
                program: None,
                used,
            },
        );
        cell
    }

    /// Drop every linked program but keep the compiled code: the next start of each binary links
    /// it again (`InstancePre`/`CommandPre`) before instantiating. Used to measure cold starts.
    pub fn unprepare(&self) {
        for slot in self.lock().slots.values_mut() {
            slot.program = None;
        }
    }

    /// Hits, misses and entries.
    pub fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            entries: self.lock().slots.len(),
        }
    }
}
