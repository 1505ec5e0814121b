//! The one wasmtime engine of a host: epoch interruption driven by a 1 ms ticker thread.
//!
//! Every WASM store made by this crate gets an epoch deadline per call and a memory limiter over the
//! sum of its memories. (Extism modules run on Extism's own engine, bounded by its timeout, memory
//! cap and a fuel budget: see `load::extism`.)

use std::sync::Arc;
use std::time::Duration;

use wasmtime::{Config, Engine};

/// Epoch ticks per millisecond of deadline.
pub(crate) const TICK: Duration = Duration::from_millis(1);

/// A wasmtime engine whose epoch advances every [`TICK`] while the engine lives.
#[derive(Clone)]
pub struct WasmEngine {
    engine: Engine,
    _ticker: Arc<Ticker>,
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
        })
    }

    /// The wasmtime engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }
}

/// Ticks to allow for a deadline of `millis` (one extra so a deadline is never shorter than asked).
pub(crate) fn deadline_ticks(millis: u64) -> u64 {
    millis.max(1) + 1
}
