//! `wasm`: runs WASI command modules and components on wasmtime.
//!
//! - **Forms**, told apart by the bytes: a core module (`\0asm` then `01 00 00 00`) runs as a WASI
//!   preview 1 command (its `_start`); a component (`\0asm` then `0d 00 01 00`) runs as a
//!   `wasi:cli/command` (preview 2, `exit-with-code` enabled). Anything else, or a binary that is
//!   not a command or fails to compile or link, makes `start` fail with
//!   `invalid configuration: artifact PATH: REASON`.
//! - **Spec**: `artifact` is the local path of the `.wasm` file (required); `argv[0]` is the task
//!   name (else the entry, else the file name) followed by `args`; `env` and `stdin` as given;
//!   `working_dir`, when set, is preopened as `.` if the configuration's `preopen_working_dir`
//!   allows it (else the spec is refused); the network is denied unless `network` is set. The
//!   guest sees no other directory and only the spec's `env`.
//!   Standard output and error are captured up to `output_cap_bytes` each (0 = 16 MiB); the rest
//!   is dropped and flagged, and never fails the guest.
//! - **Outcome**: return from `_start`/`run` → `Exited(0)`; a module's `proc_exit(n)` →
//!   `Exited(n)`; a component's `exit(err)` or `run` error → `Exited(1)` (WASI 0.2's `exit` carries
//!   success or failure only, and Rust's std uses it for every nonzero code), its unstable
//!   `exit-with-code(n)` → `Exited(n)`; a trap → `Failed("trap: …")` with the wasm backtrace; any
//!   other failure (e.g. at instantiation) → `Failed("error: …")`; `timeout_ms` → `TimedOut`;
//!   `signal`/`stop` → `Signaled(sig)` (WASI has no signals: every signal but 0 ends the guest, as
//!   SIGKILL would; `stop` sends 15).
//! - **Limits**: `memory_limit_mb` caps the guest's linear memories (growth past it is refused, so
//!   the guest fails); without one, the configured `max_memory_mb` applies, and a spec asking for
//!   more than that is refused. A component holds at most 16,384 resources at once
//!   (streams, pollables, sockets: host memory); without `network` it cannot create a socket at
//!   all; one write (or `write-zeroes`) is at most 1 MiB. A guest blocked in a poll or a sleep is
//!   cancelled at its timeout like a running one. Besides its time limit, a guest may run
//!   `max_cpu_ms` of CPU (5 minutes by default: the time its code runs on a worker thread,
//!   waits in sleeps and polls not counted): past it, `Failed("cpu limit: …")`.
//! - **Shared binary**: compiled code is cached by the sha256 of the bytes and pre-linked
//!   (`InstancePre`/`CommandPre`), so later executions only instantiate, from wasmtime's pooling
//!   allocator. [`WasmExecutor::cache_stats`] reports hits and misses.
//! - **Threads**: guests run as asynchronous calls that yield every [`TICK`], on a small
//!   worker pool (one thread per core), so a start spawns no thread and long guests do not starve
//!   short ones. A `wait` for a guest no worker has picked up runs it on the waiting thread, so
//!   `start` + `wait` involves no hand-off between threads; a guest nobody waits for goes to the
//!   workers at the next tick. Waiters sleep on a condition variable. Timeouts and stops cancel a
//!   guest within a tick, even inside a host call.
//! - **Life cycle**: `stats` reports the bytes of the guest's linear memories and, as CPU time,
//!   the wall time it has run; `recover` answers false (guests live in the agent's process);
//!   `destroy` stops a running guest and forgets the record.
//!
//! - **Long-lived instances** (`start_instance`, `invoke`, `stop_instance`): the artifact is a
//!   component of the `spear:function/function` world (`wit/function/function.wit`); each
//!   instance is initialised once with the task's config and keeps its memory between
//!   invocations; all instances of one component share its compiled code. See [`functions`] and
//!   the `instances` module: `function_instances` alive at once, each limited to its spec's
//!   `memory_limit_mb` (else `max_memory_mb`), each invocation to its `timeout_ms`; a trap or a
//!   deadline loses only that instance.
//!
//! The engine, workers and ticker are created at the first `start` (loading the plugin to read its
//! info costs nothing); `configure` must come before that.

mod cache;
mod config;
mod cpu;
pub mod emitted;
pub mod functions;
mod instances;
mod output;
mod program;
mod run;
mod runtime;
mod state;

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use spear_plugin_api::executor::{
    Capabilities, ExecResult, ExecSpec, ExecState, ExecStats, InstanceSpec, InvokeFailure,
};
use spear_plugin_api::{Executor, PluginError, PluginInfo, PluginKind, parse_config};

pub use cache::CacheStats;
pub use config::Config;
pub use runtime::TICK;

use run::Handles;
use runtime::{Claim, Runtime};

/// The wasm executor.
#[derive(Default)]
pub struct WasmExecutor {
    config: Config,
    runtime: OnceLock<Result<Runtime, String>>,
    table: Mutex<HashMap<String, Handles>>,
    functions: OnceLock<Result<instances::Instances, String>>,
}

impl std::fmt::Debug for WasmExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WasmExecutor")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl WasmExecutor {
    /// An executor with these settings.
    pub fn with_config(config: Config) -> Result<Self, PluginError> {
        config.validate().map_err(PluginError)?;
        Ok(Self {
            config,
            ..Self::default()
        })
    }

    fn runtime(&self) -> Result<&Runtime, PluginError> {
        self.runtime
            .get_or_init(|| Runtime::new(self.config))
            .as_ref()
            .map_err(PluginError::new)
    }

    fn functions(&self) -> Result<&instances::Instances, PluginError> {
        self.functions
            .get_or_init(|| {
                instances::Instances::new(
                    functions::FunctionLimits {
                        max_instances: self.config.function_instances,
                        max_memory_mb: self.config.max_memory_mb,
                    },
                    self.config.function_binaries,
                )
            })
            .as_ref()
            .map_err(PluginError::new)
    }

    /// Function instances alive, and compiled function components kept (zeros before the
    /// first instance).
    pub fn function_stats(&self) -> (usize, usize) {
        match self.functions.get() {
            Some(Ok(f)) => (f.len(), f.binaries()),
            _ => (0, 0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Handles>> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn with<R>(&self, handle: &str, f: impl FnOnce(&Handles) -> R) -> Result<R, PluginError> {
        self.lock()
            .get(handle)
            .map(f)
            .ok_or_else(|| PluginError::new(format!("no execution {handle} here")))
    }

    /// Hits, misses and entries of the module cache (zeros before the first start).
    pub fn cache_stats(&self) -> CacheStats {
        match self.runtime.get() {
            Some(Ok(rt)) => rt.cache.stats(),
            _ => CacheStats::default(),
        }
    }

    /// Drop the pre-linked programs but keep the compiled code, so that the next start of each
    /// binary links it again before instantiating (the benchmark's "cold from the cache" start).
    pub fn unprepare(&self) {
        if let Some(Ok(rt)) = self.runtime.get() {
            rt.cache.unprepare();
        }
    }
}

impl Executor for WasmExecutor {
    fn info(&self) -> PluginInfo {
        PluginInfo {
            name: "wasm".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            kind: PluginKind::Executor,
            description: "Runs WASI command modules (preview 1) and components (preview 2) on \
                          wasmtime, with a shared module cache, pooled instances and per-guest \
                          memory and time limits"
                .into(),
            config_schema: Config::SCHEMA.into(),
        }
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            executable_type: "wasm".into(),
            signals: false,
            recover: false,
            memory_limit: true,
            cpu_limit: false,
            network_isolation: true,
            instances: true,
            pause: false,
        }
    }

    fn configure(&mut self, config: &str) -> Result<(), PluginError> {
        let config: Config = parse_config(config)?;
        config.validate().map_err(PluginError)?;
        if (self.runtime.get().is_some() || self.functions.get().is_some()) && config != self.config
        {
            return Err(PluginError::new(
                "the wasm executor cannot be reconfigured after its first start",
            ));
        }
        self.config = config;
        Ok(())
    }

    fn start(&self, spec: &ExecSpec) -> Result<String, PluginError> {
        let artifact = spec.artifact.as_deref().unwrap_or_default();
        if artifact.is_empty() {
            return Err(PluginError::new(
                "invalid configuration: artifact (the path of the .wasm file) is missing",
            ));
        }
        let rt = self.runtime()?;
        let max = rt.config.max_memory_mb;
        if spec.memory_limit_mb > max {
            return Err(PluginError::new(format!(
                "invalid configuration: memory_limit_mb {} exceeds the wasm executor's \
                 max_memory_mb {max}",
                spec.memory_limit_mb
            )));
        }
        let limit_mb = match spec.memory_limit_mb {
            0 => max,
            n => n,
        };
        if spec.working_dir.is_some() && !rt.config.preopen_working_dir {
            return Err(PluginError::new(
                "invalid configuration: working_dir: the wasm executor preopens no directory \
                 unless its preopen_working_dir is true",
            ));
        }
        let program = rt.cache.program(Path::new(artifact)).map_err(|e| {
            PluginError::new(format!("invalid configuration: artifact {artifact}: {e}"))
        })?;
        let slot = rt.slots.acquire().map_err(PluginError)?;
        let (launch, mut handles) = run::prepare(
            &rt.engine,
            program,
            spec,
            artifact,
            (limit_mb << 20, rt.config.max_cpu_ms),
            slot,
        )
        .map_err(PluginError)?;
        let claim = Claim::new(Box::pin(run::supervise(launch)));
        handles.claim = Some(claim.clone());
        let handle = spec.execution_id.clone();
        {
            let mut table = self.lock();
            if table.contains_key(&handle) {
                return Err(PluginError::new(format!(
                    "execution {handle} is already running here"
                )));
            }
            table.insert(handle.clone(), handles);
        }
        rt.launch(claim);
        Ok(handle)
    }

    fn wait(&self, handle: &str, timeout_ms: u64) -> Result<Option<ExecResult>, PluginError> {
        let (done, claim) = self.with(handle, |h| (h.done.clone(), h.claim.clone()))?;
        let timeout = Duration::from_millis(timeout_ms);
        let started = Instant::now();
        if let (Some(claim), Some(Ok(rt))) = (claim, self.runtime.get()) {
            rt.help(&claim, Some(timeout));
        }
        Ok(done.wait(timeout.saturating_sub(started.elapsed())))
    }

    fn signal(&self, handle: &str, signal: i32) -> Result<(), PluginError> {
        let control = self.with(handle, |h| h.control.clone())?;
        if signal != 0 {
            control.deliver(signal);
        }
        Ok(())
    }

    fn stop(&self, handle: &str, grace_ms: u64) -> Result<(), PluginError> {
        // Cancellation is forced at once (within a tick), so the grace is only an upper bound.
        self.signal(handle, 15)?;
        let done = self.with(handle, |h| h.done.clone())?;
        done.wait(Duration::from_millis(grace_ms.max(1_000)));
        Ok(())
    }

    fn inspect(&self, handle: &str) -> Result<ExecState, PluginError> {
        Ok(match self.lock().get(handle) {
            None => ExecState::Unknown,
            Some(h) => match h.done.get() {
                Some(r) => ExecState::Finished(r),
                None => ExecState::Running,
            },
        })
    }

    fn stats(&self, handle: &str) -> Result<ExecStats, PluginError> {
        self.with(handle, |h| {
            let ran = match h.done.get() {
                Some(r) => Duration::from_millis(r.duration_ms),
                None => h.started.elapsed(),
            };
            ExecStats {
                memory_bytes: h.memory.load(Ordering::Relaxed),
                cpu_micros: ran.as_micros() as u64,
            }
        })
    }

    fn recover(&self, _handle: &str) -> Result<bool, PluginError> {
        Ok(false)
    }

    fn destroy(&self, handle: &str) -> Result<(), PluginError> {
        if let Some(h) = self.lock().remove(handle)
            && h.done.get().is_none()
        {
            h.control.deliver(9);
        }
        Ok(())
    }
    fn start_instance(&self, spec: &InstanceSpec) -> Result<String, PluginError> {
        self.functions()?.start(spec, self.config.max_memory_mb)
    }

    fn invoke(
        &self,
        handle: &str,
        function: &str,
        payload: &[u8],
        timeout_ms: u64,
    ) -> Result<Vec<u8>, InvokeFailure> {
        match self.functions.get() {
            Some(Ok(f)) => f.invoke(handle, function, payload, timeout_ms, None),
            _ => Err(InvokeFailure::Lost(format!("no instance {handle} here"))),
        }
    }

    fn invoke_stream(
        &self,
        handle: &str,
        function: &str,
        payload: &[u8],
        timeout_ms: u64,
        sink: spear_plugin_api::executor::Sink<'_>,
    ) -> Result<Vec<u8>, InvokeFailure> {
        match self.functions.get() {
            Some(Ok(f)) => f.invoke(handle, function, payload, timeout_ms, Some(sink)),
            _ => Err(InvokeFailure::Lost(format!("no instance {handle} here"))),
        }
    }

    fn stop_instance(&self, handle: &str) -> Result<(), PluginError> {
        match self.functions.get() {
            Some(Ok(f)) => f.stop(handle),
            _ => Err(PluginError::new(format!("no instance {handle} here"))),
        }
    }
}

#[cfg(feature = "native-plugin")]
spear_plugin_api::export_native_executor!(WasmExecutor);

/// This plugin as a built-in of a host that links this crate (no library file; see
/// `spear_plugin_api::native_module!`).
#[cfg(not(target_family = "wasm"))]
pub fn native_module() -> spear_plugin_api::native::SpearPluginModuleRef {
    spear_plugin_api::native_module!(executor, WasmExecutor)
}

#[cfg(test)]
mod tests;
