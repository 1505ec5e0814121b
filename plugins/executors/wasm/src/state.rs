//! Per-guest store data: the WASI context of each form and the memory limiter.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use wasmtime::ResourceLimiter;
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::{ResourceTable, WasiCtx, WasiCtxView, WasiView};

/// Table elements a guest may grow its tables to.
const MAX_TABLE_ELEMENTS: usize = 20_000;

/// Enforces a guest's memory limit and counts the bytes of its linear memories.
///
/// A growth past the limit is refused the WebAssembly way (`memory.grow` returns -1); the guest
/// decides what follows (Rust programs abort, which traps). Refusals are remembered so that the
/// failure can be explained.
pub struct Limiter {
    limit: usize,
    used: Arc<AtomicU64>,
    pending: usize,
    refused: bool,
}

impl Limiter {
    /// A limiter of `limit` bytes publishing the memory in use to `used`.
    pub fn new(limit: u64, used: Arc<AtomicU64>) -> Self {
        Self {
            limit: usize::try_from(limit).unwrap_or(usize::MAX),
            used,
            pending: 0,
            refused: false,
        }
    }

    /// A growth was refused because of the limit (since the last [`reset_refused`](Self::reset_refused)).
    pub fn refused(&self) -> bool {
        self.refused
    }

    /// Forget earlier refusals (a guest may survive one and trap later for another reason).
    pub fn reset_refused(&mut self) {
        self.refused = false;
    }
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let total = self.used.load(Ordering::Relaxed) as usize;
        let delta = desired.saturating_sub(current);
        if total.saturating_add(delta) > self.limit {
            self.refused = true;
            return Ok(false);
        }
        self.pending = delta;
        self.used.fetch_add(delta as u64, Ordering::Relaxed);
        Ok(true)
    }

    fn memory_grow_failed(&mut self, _error: wasmtime::Error) -> wasmtime::Result<()> {
        self.used.fetch_sub(self.pending as u64, Ordering::Relaxed);
        self.pending = 0;
        Ok(())
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}

/// Store data of a core module (WASI preview 1).
pub struct CoreState {
    /// The preview 1 context.
    pub wasi: WasiP1Ctx,
    /// The memory limiter.
    pub limiter: Limiter,
}

/// Store data of a component (WASI preview 2).
pub struct ComponentState {
    /// The WASI context.
    pub ctx: WasiCtx,
    /// Resources handed to the guest.
    pub table: ResourceTable,
    /// The memory limiter.
    pub limiter: Limiter,
}

impl WasiView for ComponentState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.ctx,
            table: &mut self.table,
        }
    }
}
