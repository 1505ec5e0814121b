//! The executor's JSON configuration and the wasmtime engine built from it.
//!
//! ```json
//! {"pool_instances": 128, "max_memory_mb": 256, "cache_entries": 64, "max_cpu_ms": 300000,
//!  "preopen_working_dir": false, "function_instances": 128, "function_binaries": 64}
//! ```
//!
//! Every field is optional (the values above are the defaults) and unknown fields are refused.
//!
//! The engine uses the pooling instance allocator sized for `pool_instances` guests alive at once.
//! A guest may need several core instances and tables (a WASI component holds several core
//! modules), so the pool holds [`CORE_INSTANCES_PER_GUEST`], [`MEMORIES_PER_GUEST`] and
//! [`TABLES_PER_GUEST`] of each per guest; guests needing more (a composition of several memories,
//! say) still run, fewer at once, and past the pool's totals one fails with wasmtime's "maximum
//! concurrent limit … reached". Every linear-memory slot reserves 4 GiB of *virtual* address space
//! plus a 32 MiB guard (wasmtime's default, which lets compiled code skip bounds checks); nothing is
//! committed until a guest touches it. With the default pool that is `128 × 4.03 GiB ≈ 516 GiB` of
//! address space out of x86-64's 128 TiB; `pool_instances` is capped at [`MAX_POOL_INSTANCES`]
//! (about 4 TiB).

use wasmtime::{Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// Largest accepted `pool_instances` (keeps the pool's address-space reservation near 4 TiB).
pub const MAX_POOL_INSTANCES: u32 = 1000;
/// Core instances reserved per guest (a Rust `wasm32-wasip2` command holds three).
pub const CORE_INSTANCES_PER_GUEST: u32 = 8;
/// Linear memories reserved per guest (Rust commands of both forms have one).
pub const MEMORIES_PER_GUEST: u32 = 1;
/// Tables reserved per guest (a Rust `wasm32-wasip2` command holds two).
pub const TABLES_PER_GUEST: u32 = 4;
/// Bytes of a finished guest's linear memory reset in place and kept resident for the next guest
/// of its slot (the rest is returned to the kernel); at most this much stays resident per warm
/// slot (100 warm slots at most).
pub const KEEP_RESIDENT: usize = 2 << 20;
/// The same for tables.
pub const KEEP_RESIDENT_TABLE: usize = 64 << 10;
/// Largest `max_cpu_ms`: a day.
const MAX_CPU_MS: u64 = 86_400_000;
/// Linear memories of 32-bit WebAssembly cannot pass 4 GiB.
const MAX_MEMORY_MB: u64 = 4096;

/// The executor's settings (`configure()` JSON).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Guests that may be alive at once; each holds one slot of the pooling allocator and a start
    /// past this many fails at once with a clear error.
    pub pool_instances: u32,
    /// Largest linear memory a guest may grow to, in MiB; also the memory limit of a guest whose
    /// spec sets none. A spec asking for more is refused.
    pub max_memory_mb: u64,
    /// Compiled programs kept in the module cache (least recently used evicted first).
    pub cache_entries: usize,
    /// CPU time one guest may use, in ms (the time its code runs on a worker thread, whatever
    /// its `timeout_ms`); past it the guest fails. 0: no limit.
    pub max_cpu_ms: u64,
    /// Whether a spec's `working_dir` may be preopened for the guest; without it such a spec is
    /// refused (a guest sees no directory at all).
    pub preopen_working_dir: bool,
    /// Long-lived function instances that may be alive at once (slots of their own pooling
    /// allocator, beside the commands' `pool_instances`); a start past this many fails.
    pub function_instances: u32,
    /// Compiled function components kept (oldest out first; live instances keep theirs).
    pub function_binaries: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            pool_instances: 128,
            max_memory_mb: 256,
            cache_entries: 64,
            max_cpu_ms: 300_000,
            preopen_working_dir: false,
            function_instances: 128,
            function_binaries: 64,
        }
    }
}

impl Config {
    /// The JSON schema of the configuration, for `PluginInfo::config_schema`.
    pub const SCHEMA: &'static str = r#"{"type":"object","additionalProperties":false,"properties":{"pool_instances":{"type":"integer","minimum":1,"maximum":1000,"default":128},"max_memory_mb":{"type":"integer","minimum":1,"maximum":4096,"default":256},"cache_entries":{"type":"integer","minimum":1,"default":64},"max_cpu_ms":{"type":"integer","minimum":0,"maximum":86400000,"default":300000},"preopen_working_dir":{"type":"boolean","default":false},"function_instances":{"type":"integer","minimum":1,"maximum":1000,"default":128},"function_binaries":{"type":"integer","minimum":1,"default":64}}}"#;

    /// Check the values are in range.
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=MAX_POOL_INSTANCES).contains(&self.pool_instances) {
            return Err(format!(
                "invalid configuration: pool_instances must be 1..={MAX_POOL_INSTANCES}, not {}",
                self.pool_instances
            ));
        }
        if !(1..=MAX_MEMORY_MB).contains(&self.max_memory_mb) {
            return Err(format!(
                "invalid configuration: max_memory_mb must be 1..={MAX_MEMORY_MB}, not {}",
                self.max_memory_mb
            ));
        }
        if !(1..=MAX_POOL_INSTANCES).contains(&self.function_instances) {
            return Err(format!(
                "invalid configuration: function_instances must be 1..={MAX_POOL_INSTANCES}, not {}",
                self.function_instances
            ));
        }
        if self.function_binaries == 0 {
            return Err("invalid configuration: function_binaries must be at least 1".into());
        }
        if self.cache_entries == 0 {
            return Err("invalid configuration: cache_entries must be at least 1".into());
        }
        if self.max_cpu_ms > MAX_CPU_MS {
            return Err(format!(
                "invalid configuration: max_cpu_ms must be 0..={MAX_CPU_MS} (a day), not {}",
                self.max_cpu_ms
            ));
        }
        Ok(())
    }

    /// Largest linear memory in bytes.
    pub fn max_memory_bytes(&self) -> u64 {
        self.max_memory_mb * 1024 * 1024
    }

    /// The wasmtime engine: epoch interruption, and the pooling allocator sized for the pool.
    pub fn engine(&self) -> Result<Engine, String> {
        let n = self.pool_instances;
        let mut pool = PoolingAllocationConfig::new();
        pool.total_component_instances(n)
            .total_core_instances(n * CORE_INSTANCES_PER_GUEST)
            .total_memories(n * MEMORIES_PER_GUEST)
            .total_tables(n * TABLES_PER_GUEST)
            .total_stacks(n)
            .max_memory_size(self.max_memory_bytes() as usize)
            .max_unused_warm_slots(n.min(100))
            // Reset a finished guest's dirty pages in place (found with PAGEMAP_SCAN where the
            // kernel has it) instead of `madvise`: no TLB shootdowns, no page faults on reuse.
            .linear_memory_keep_resident(KEEP_RESIDENT)
            .table_keep_resident(KEEP_RESIDENT_TABLE)
            .pagemap_scan(Enabled::Auto);
        pooled_engine(pool).map_err(|e| {
            format!(
                "cannot create the wasm engine (a pool of {n} instances of up to {} MiB): {e:#}",
                self.max_memory_mb
            )
        })
    }
}

/// An engine with epoch interruption and the pooling allocator `pool` (4 GiB reservations with
/// 32 MiB guards: bounds checks elided).
pub(crate) fn pooled_engine(pool: PoolingAllocationConfig) -> wasmtime::Result<Engine> {
    let mut config = wasmtime::Config::new();
    config
        .epoch_interruption(true)
        .memory_reservation(1 << 32)
        .memory_guard_size(32 << 20)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    Engine::new(&config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_unknown_fields() {
        let c: Config = serde_json::from_str("{}").unwrap();
        assert_eq!(c, Config::default());
        c.validate().unwrap();
        assert!(serde_json::from_str::<Config>(r#"{"pool_instance": 3}"#).is_err());
        let c: Config = serde_json::from_str(r#"{"pool_instances": 0}"#).unwrap();
        assert!(
            c.validate()
                .unwrap_err()
                .starts_with("invalid configuration:")
        );
        let c: Config = serde_json::from_str(r#"{"max_memory_mb": 5000}"#).unwrap();
        assert!(c.validate().is_err());
        let c: Config = serde_json::from_str(r#"{"max_cpu_ms": 86400001}"#).unwrap();
        assert!(c.validate().unwrap_err().contains("max_cpu_ms"));
        let _: serde_json::Value = serde_json::from_str(Config::SCHEMA).unwrap();
    }
}
