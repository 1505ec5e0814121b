//! The one wasmtime engine of a host: epoch interruption driven by a 1 ms ticker thread, and an
//! optional cache of compiled components.
//!
//! Every WASM store made by this crate gets an epoch deadline per call and a memory limiter over the
//! sum of its memories. (Extism modules run on Extism's own engine, bounded by its timeout, memory
//! cap and a fuel budget: see `load::extism`.)

use std::hash::Hasher;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use wasmtime::component::Component;
use wasmtime::{Config, Engine};

use crate::load::scratch::ScratchRoot;

/// Epoch ticks per millisecond of deadline.
pub(crate) const TICK: Duration = Duration::from_millis(1);

/// A wasmtime engine whose epoch advances every [`TICK`] while the engine lives.
#[derive(Clone)]
pub struct WasmEngine {
    engine: Engine,
    _ticker: Arc<Ticker>,
    /// The cache directory and this engine's compatibility key.
    cache: Option<Arc<(PathBuf, String)>>,
    /// Where instances' scratch directories are made (`None`: nowhere).
    scratch: Option<Arc<ScratchRoot>>,
}

struct Ticker {
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

impl WasmEngine {
    /// Build the engine and start its ticker.
    pub fn new() -> anyhow::Result<Self> {
        let mut config = Config::new();
        config.epoch_interruption(true);
        config.wasm_component_model(true);
        let engine = Engine::new(&config)?;
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (weak, flag) = (engine.weak(), stop.clone());
        std::thread::Builder::new()
            .name("spear-wasm-epoch".into())
            .spawn(move || {
                while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                    std::thread::sleep(TICK);
                    match weak.upgrade() {
                        Some(engine) => engine.increment_epoch(),
                        None => break,
                    }
                }
            })?;
        Ok(Self {
            engine,
            _ticker: Arc::new(Ticker { stop }),
            cache: None,
            scratch: None,
        })
    }

    /// Make granted scratch directories under `dir` (created when first needed), in a directory
    /// of this process's own ([`crate::load::scratch`]); those of processes that are gone are
    /// removed. Without it, an instance granted a scratch directory cannot be made.
    pub fn with_scratch(mut self, dir: &Path) -> Self {
        self.scratch = Some(Arc::new(ScratchRoot::new(dir)));
        self
    }

    /// Where instances' scratch directories are made, or why there is nowhere.
    pub(crate) fn scratch(&self) -> Result<&ScratchRoot, String> {
        self.scratch
            .as_deref()
            .ok_or_else(|| "no scratch directory is configured for this host".into())
    }

    /// Keep compiled components in `dir` (created when missing), keyed by the file's sha256 and
    /// this engine's compatibility hash, so that a restart or a re-install of a known file skips
    /// compilation. The directory must be as trusted as the plugin directory: its files are loaded
    /// as machine code.
    pub fn with_cache(mut self, dir: PathBuf) -> Self {
        let key = self.compatibility_key();
        self.cache = Some(Arc::new((dir, key)));
        self
    }

    /// The wasmtime engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Compile the component in `bytes` (whose sha256 is `sha256`), or load it from the cache.
    pub(crate) fn component(&self, bytes: &[u8], sha256: &str) -> wasmtime::Result<Component> {
        let Some(cache) = &self.cache else {
            return Component::new(&self.engine, bytes);
        };
        let (dir, key) = &**cache;
        let path = dir.join(format!("{sha256}-{key}.cwasm"));
        if path.is_file() {
            // SAFETY: the cache holds only what `serialize` wrote for this engine's configuration
            // (the key says so, and wasmtime checks the header); the directory is as trusted as
            // the plugin directory (see `with_cache`).
            match unsafe { Component::deserialize_file(&self.engine, &path) } {
                Ok(component) => return Ok(component),
                Err(e) => {
                    tracing::warn!(file = %path.display(), "compiled-component cache entry unusable, recompiling: {e:#}")
                }
            }
        }
        let component = Component::new(&self.engine, bytes)?;
        if let Err(e) = store(dir, &path, &component) {
            tracing::warn!(file = %path.display(), "cannot write the compiled-component cache: {e:#}");
        }
        Ok(component)
    }

    /// 16 hex digits naming this engine's configuration (wasmtime version, target, settings).
    fn compatibility_key(&self) -> String {
        let mut hasher = ShaHasher(Sha256::new());
        std::hash::Hash::hash(&self.engine.precompile_compatibility_hash(), &mut hasher);
        hasher.0.finalize()[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

/// Write `component` to `path` in `dir`, by a temporary file and a rename.
fn store(dir: &Path, path: &Path, component: &Component) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let bytes = component.serialize()?;
    let tmp = tempfile::NamedTempFile::new_in(dir)?;
    std::fs::write(tmp.path(), bytes)?;
    tmp.persist(path)?;
    Ok(())
}

/// A `Hasher` that feeds sha256 (stable across runs, unlike `DefaultHasher`'s random keys).
struct ShaHasher(Sha256);

impl Hasher for ShaHasher {
    fn finish(&self) -> u64 {
        0
    }

    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

/// Ticks to allow for a deadline of `millis` (one extra so a deadline is never shorter than asked).
pub(crate) fn deadline_ticks(millis: u64) -> u64 {
    millis.max(1) + 1
}
