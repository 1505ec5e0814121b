//! The executor's long-lived instances: function components ([`crate::functions`]) started by
//! `start_instance`, invoked by `invoke`, dropped by `stop_instance`.
//!
//! - **Shared binary**: a task's component is compiled once per content (sha256 of its bytes)
//!   and shared by all of its instances; at most `function_binaries` compiled components are
//!   kept (the oldest goes first; instances made from it keep it alive).
//! - **One invocation at a time per instance**: an invocation takes the instance out of the
//!   table and puts it back after; a second invocation of the same instance meanwhile is refused
//!   ("busy"). A stop of a busy instance drops it when its invocation ends.
//! - **Threads**: calls block their caller. Instantiation and invocation run on the caller's
//!   thread under a small tokio runtime of the executor's (its timer stops guests waiting in
//!   WASI); WebAssembly code is stopped by the function host's epoch ticker.
//! - **Freeing**: dropping an instance drops its store; its linear memory goes back to the
//!   pooling allocator, which keeps at most 100 warm slots and returns the rest to the kernel.

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use sha2::{Digest, Sha256};
use spear_plugin_api::PluginError;
use spear_plugin_api::executor::{InstanceSpec, InvokeFailure, Sink};
use spear_plugin_api::slots::Slots;

use crate::emitted::Pieces;
use crate::functions::{
    FunctionHost, FunctionInstance, FunctionLimits, InstanceState, InvokeError, SharedBinary,
};

/// Time allowed to instantiate and initialise when the spec gives none.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest component file read (bytes).
const MAX_COMPONENT_BYTES: u64 = 256 << 20;
/// Pieces of a streaming invocation's output on their way to the caller's sink; past it the
/// function's next `emit` waits.
const PIECES_QUEUED: usize = 16;
/// Bytes a function may emit in one invocation when the spec gives no payload limit.
const DEFAULT_MAX_OUTPUT: u64 = 16 << 20;
/// A deadline far enough to mean "none".
const NO_DEADLINE: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// A component compiled once: every start that needs it while it compiles waits for the one
/// compile (no herd of compiles of the same bytes).
type Compiled = Arc<OnceLock<Result<SharedBinary, String>>>;

/// Compiled components by content, oldest first out.
#[derive(Default)]
struct Binaries {
    by_hash: HashMap<[u8; 32], Compiled>,
    order: VecDeque<[u8; 32]>,
}

/// The executor's function instances.
pub(crate) struct Instances {
    host: FunctionHost,
    runtime: tokio::runtime::Runtime,
    max_binaries: usize,
    binaries: Mutex<Binaries>,
    instances: Slots<FunctionInstance>,
    next: AtomicU64,
}

impl Instances {
    /// Room for `limits.max_instances` instances and `max_binaries` compiled components.
    pub(crate) fn new(limits: FunctionLimits, max_binaries: usize) -> Result<Self, String> {
        let host = FunctionHost::new(limits)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("spear-wasm-functions")
            .enable_time()
            .build()
            .map_err(|e| format!("cannot start the functions' runtime: {e}"))?;
        Ok(Self {
            host,
            runtime,
            max_binaries: max_binaries.max(1),
            binaries: Mutex::default(),
            instances: Slots::default(),
            next: AtomicU64::new(1),
        })
    }

    /// The compiled component at `path` (compiled at its first use).
    fn binary(&self, path: &str) -> Result<SharedBinary, String> {
        let size = std::fs::metadata(path)
            .map_err(|e| format!("artifact {path}: {e}"))?
            .len();
        if size > MAX_COMPONENT_BYTES {
            return Err(format!(
                "artifact {path}: {size} bytes is over the {MAX_COMPONENT_BYTES} bytes a \
                 function component may have"
            ));
        }
        let bytes = std::fs::read(Path::new(path)).map_err(|e| format!("artifact {path}: {e}"))?;
        let hash: [u8; 32] = Sha256::digest(&bytes).into();
        let cell = {
            let mut binaries = self.lock_binaries();
            match binaries.by_hash.get(&hash) {
                Some(c) => c.clone(),
                None => {
                    while binaries.order.len() >= self.max_binaries {
                        if let Some(old) = binaries.order.pop_front() {
                            binaries.by_hash.remove(&old);
                        }
                    }
                    let c = Compiled::default();
                    binaries.order.push_back(hash);
                    binaries.by_hash.insert(hash, c.clone());
                    c
                }
            }
        };
        // Compiled outside the table's lock, once: other starts of the same bytes wait here.
        let compiled = cell.get_or_init(|| self.host.compile(&bytes)).clone();
        if compiled.is_err() {
            // Not kept: a later start tries again.
            let mut binaries = self.lock_binaries();
            if binaries
                .by_hash
                .get(&hash)
                .is_some_and(|c| Arc::ptr_eq(c, &cell))
            {
                binaries.by_hash.remove(&hash);
                binaries.order.retain(|h| *h != hash);
            }
        }
        compiled.map_err(|e| format!("artifact {path}: {e}"))
    }

    fn lock_binaries(&self) -> MutexGuard<'_, Binaries> {
        self.binaries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Compiled components kept.
    pub(crate) fn binaries(&self) -> usize {
        self.lock_binaries().order.len()
    }

    /// Start an instance of `spec`'s component, initialised with its config; its handle.
    pub(crate) fn start(
        &self,
        spec: &InstanceSpec,
        max_memory_mb: u64,
    ) -> Result<String, PluginError> {
        let artifact = spec.artifact.as_deref().unwrap_or_default();
        if artifact.is_empty() {
            return Err(PluginError::new(
                "invalid configuration: artifact (the path of the function component) is missing",
            ));
        }
        if spec.memory_limit_mb > max_memory_mb {
            return Err(PluginError::new(format!(
                "invalid configuration: memory_limit_mb {} exceeds the wasm executor's \
                 max_memory_mb {max_memory_mb}",
                spec.memory_limit_mb
            )));
        }
        let binary = self
            .binary(artifact)
            .map_err(|e| PluginError::new(format!("invalid configuration: {e}")))?;
        let config = if spec.config.trim().is_empty() {
            "{}"
        } else {
            spec.config.as_str()
        };
        let deadline = match spec.start_timeout_ms {
            0 => START_TIMEOUT,
            ms => Duration::from_millis(ms),
        };
        let memory_mb = match spec.memory_limit_mb {
            0 => max_memory_mb,
            n => n,
        };
        let mut instance = self
            .runtime
            .block_on(
                self.host
                    .instantiate_limited(&binary, config, deadline, memory_mb),
            )
            .map_err(|e| PluginError::new(format!("the function did not start: {e}")))?;
        let max_output = match spec.max_payload_bytes {
            0 => DEFAULT_MAX_OUTPUT,
            n => n,
        };
        instance.set_max_output(usize::try_from(max_output).unwrap_or(usize::MAX));
        let handle = format!(
            "fn-{}-{}",
            self.next.fetch_add(1, Ordering::Relaxed),
            spec.instance_id
        );
        self.instances.insert(handle.clone(), instance);
        Ok(handle)
    }

    /// Run `function` on `payload` in instance `handle`. With a `sink`, the pieces the function
    /// emits go to it as they come (handed over by a thread of the call's own, so that a slow
    /// sink never runs on the guest's thread); without, they come before its result.
    pub(crate) fn invoke(
        &self,
        handle: &str,
        function: &str,
        payload: &[u8],
        timeout_ms: u64,
        sink: Option<Sink<'_>>,
    ) -> Result<Vec<u8>, InvokeFailure> {
        let deadline = match timeout_ms {
            0 => NO_DEADLINE,
            ms => Duration::from_millis(ms),
        };
        let Some(sink) = sink else {
            return self.run(handle, function, payload, deadline, None);
        };
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(PIECES_QUEUED);
        let stop = Arc::new(AtomicBool::new(false));
        std::thread::scope(|scope| {
            let wanted = stop.clone();
            let hand_over = scope.spawn(move || {
                for piece in rx {
                    if !wanted.load(Ordering::Relaxed) && !sink(&piece) {
                        wanted.store(true, Ordering::Relaxed);
                    }
                }
            });
            // The sender goes with the invocation's end: the thread then ends.
            let answer = self.run(
                handle,
                function,
                payload,
                deadline,
                Some(Pieces { tx, stop }),
            );
            let _ = hand_over.join();
            answer
        })
    }

    fn run(
        &self,
        handle: &str,
        function: &str,
        payload: &[u8],
        deadline: Duration,
        pieces: Option<Pieces>,
    ) -> Result<Vec<u8>, InvokeFailure> {
        // An instance lost is dropped (its store and memory) outside the table's lock.
        self.instances
            .invoke(
                handle,
                |i| {
                    self.runtime
                        .block_on(i.invoke_streaming(function, payload, deadline, pieces))
                },
                |i| matches!(i.state(), InstanceState::Error(_)),
            )?
            .map_err(failure)
    }

    /// Drop instance `handle` (at once when idle, after its invocation when busy).
    pub(crate) fn stop(&self, handle: &str) -> Result<(), PluginError> {
        self.instances.stop(handle)
    }

    /// Instances alive (idle or busy).
    pub(crate) fn len(&self) -> usize {
        self.instances.len()
    }
}

fn failure(e: InvokeError) -> InvokeFailure {
    match e {
        InvokeError::Function(m) => InvokeFailure::Function(m),
        e @ InvokeError::Deadline(_) => InvokeFailure::Deadline(e.to_string()),
        e @ (InvokeError::Trap(_) | InvokeError::Broken(_)) => InvokeFailure::Lost(e.to_string()),
    }
}
