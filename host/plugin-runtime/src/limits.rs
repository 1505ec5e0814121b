//! Limits on plugin calls, and what each plugin is granted ([`crate::grants`]), shared by every
//! instance and changeable at run time (hot reload).

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use arc_swap::ArcSwap;

use crate::grants::{Grant, GrantTable};

use serde::Serialize;

/// The limits in force. WASM components read them on every call, so a config change applies to
/// their next call; Extism modules take them when compiled, so a change applies at their next load.
#[derive(Debug)]
pub struct Limits {
    call_timeout_ms: AtomicU64,
    setup_timeout_ms: AtomicU64,
    memory_limit_mb: AtomicU64,
    quarantine_after: AtomicU32,
    wall_factor: AtomicU32,
    /// `[plugins.grants]`, read by WASM components at every call (shared with snapshots).
    grants: Arc<ArcSwap<GrantTable>>,
}

/// A plain copy of [`Limits`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct LimitValues {
    /// CPU budget of a decision call (`place`, `observe`, `select`, `upsert`, `remove`), in ms.
    pub call_timeout_ms: u64,
    /// CPU budget of a set-up call (`info`, `configure`, `save-state`, `restore-state`), in ms.
    pub setup_timeout_ms: u64,
    /// Memory limit per WASM instance, in MiB.
    pub memory_limit_mb: u64,
    /// Consecutive failures after which a plugin is quarantined.
    pub quarantine_after: u32,
    /// A call's wall-clock ceiling is its CPU budget times this (WASM components; a guest that
    /// blocks, or that the machine starves, is stopped there).
    pub wall_factor: u32,
}

impl Default for LimitValues {
    fn default() -> Self {
        Self {
            call_timeout_ms: 10,
            setup_timeout_ms: 1000,
            memory_limit_mb: 64,
            quarantine_after: 3,
            wall_factor: 5,
        }
    }
}

impl Limits {
    /// Limits holding `values`.
    pub fn new(values: LimitValues) -> Self {
        Self {
            call_timeout_ms: AtomicU64::new(values.call_timeout_ms),
            setup_timeout_ms: AtomicU64::new(values.setup_timeout_ms),
            memory_limit_mb: AtomicU64::new(values.memory_limit_mb),
            quarantine_after: AtomicU32::new(values.quarantine_after),
            wall_factor: AtomicU32::new(values.wall_factor),
            grants: Arc::new(ArcSwap::from_pointee(GrantTable::new())),
        }
    }

    /// Put `grants` in force (from each component instance's next call).
    pub fn set_grants(&self, grants: GrantTable) {
        self.grants.store(Arc::new(grants));
    }

    /// What `plugin` is granted, if the config names it.
    pub fn grant(&self, plugin: &str) -> Option<Grant> {
        self.grants.load().get(plugin).cloned()
    }

    /// A copy of these limits that no later change reaches, sharing the grants (which a reload
    /// still changes: taking a grant away must reach every instance).
    pub fn snapshot(&self) -> Self {
        let mut copy = Self::new(self.get());
        copy.grants = self.grants.clone();
        copy
    }

    /// Replace every limit.
    pub fn set(&self, values: LimitValues) {
        self.call_timeout_ms
            .store(values.call_timeout_ms, Ordering::Relaxed);
        self.setup_timeout_ms
            .store(values.setup_timeout_ms, Ordering::Relaxed);
        self.memory_limit_mb
            .store(values.memory_limit_mb, Ordering::Relaxed);
        self.quarantine_after
            .store(values.quarantine_after, Ordering::Relaxed);
        self.wall_factor
            .store(values.wall_factor, Ordering::Relaxed);
    }

    /// The limits now.
    pub fn get(&self) -> LimitValues {
        LimitValues {
            call_timeout_ms: self.call_timeout_ms.load(Ordering::Relaxed),
            setup_timeout_ms: self.setup_timeout_ms.load(Ordering::Relaxed),
            memory_limit_mb: self.memory_limit_mb.load(Ordering::Relaxed),
            quarantine_after: self.quarantine_after.load(Ordering::Relaxed),
            wall_factor: self.wall_factor.load(Ordering::Relaxed),
        }
    }

    /// Memory limit in bytes.
    pub fn memory_limit_bytes(&self) -> usize {
        let mb = self.memory_limit_mb.load(Ordering::Relaxed);
        usize::try_from(mb.saturating_mul(1024 * 1024)).unwrap_or(usize::MAX)
    }
}

/// Which deadline a call gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Budget {
    /// A decision-path call.
    Call,
    /// A set-up call.
    Setup,
}

impl Budget {
    pub(crate) fn millis(self, limits: &Limits) -> u64 {
        let v = limits.get();
        match self {
            Budget::Call => v.call_timeout_ms,
            Budget::Setup => v.setup_timeout_ms,
        }
    }

    /// Start this budget's clock for a call on the current thread.
    pub(crate) fn start(self, limits: &Limits) -> crate::budget::CallBudget {
        crate::budget::CallBudget::start(self.millis(limits), limits.get().wall_factor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grants::Grant;

    #[test]
    fn a_snapshot_keeps_its_limits_and_follows_the_grants() {
        let live = Limits::new(LimitValues::default());
        let frozen = live.snapshot();
        live.set(LimitValues {
            memory_limit_mb: 2,
            ..LimitValues::default()
        });
        live.set_grants(GrantTable::from([("kv".to_owned(), Grant::default())]));
        assert_eq!(frozen.get(), LimitValues::default());
        assert!(frozen.grant("kv").is_some());
        live.set_grants(GrantTable::new());
        assert!(frozen.grant("kv").is_none());
    }
}
