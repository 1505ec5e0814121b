//! Live function instances: components of the `spear:function/function` world
//! (`wit/function/function.wit`) kept alive between invocations.
//!
//! A task's component is compiled and linked once into a [`SharedBinary`] (the redesign's
//! SharedBinary, shared by all of the task's instances); each [`FunctionInstance`] is one store
//! and one instance of it, initialised once, then invoked again and again with its memory kept.
//! Instances come from the pooling allocator ([`FunctionLimits::max_instances`] at once); each has
//! a memory limit, and each invocation a deadline: enforced in WebAssembly code by epoch
//! interruption (a ticker thread advances the epoch every [`TICK`] while an invocation is in
//! flight, and sleeps otherwise), and in a WASI wait (a sleep, a poll) by a timer around the
//! asynchronous call. Calls are async: they run on the caller's tokio runtime (with its timer).
//!
//! A trap (a panic, a deadline passed, a refused memory growth that the guest could not survive)
//! puts that instance in [`InstanceState::Error`]: it answers no more invocations and its store
//! is dropped with it; the task's other instances are untouched.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use wasmtime::component::{Component, HasSelf, Linker};

use crate::emitted::{Output, Pieces};
use wasmtime::{Engine, PoolingAllocationConfig, Store};
use wasmtime_wasi::{ResourceTable, WasiCtx, WasiCtxView, WasiView};

use crate::state::Limiter;

wasmtime::component::bindgen!({
    path: "../../../wit/function",
    world: "function",
    exports: { default: async },
});

/// Period of the epoch ticker while invocations are in flight: deadlines are this precise.
pub const TICK: Duration = Duration::from_millis(1);

/// Longest deadline in ticks (about 49 days); a longer one is this.
const MAX_TICKS: u64 = u32::MAX as u64;

/// Most instances one host may allow.
pub const MAX_INSTANCES: u32 = 10_000;

/// Most linear memory of one instance, in MiB.
pub const MAX_MEMORY_MB: u64 = 4096;

/// Bytes a function may `emit` in one invocation, unless its host says otherwise.
const DEFAULT_MAX_OUTPUT: usize = 16 << 20;

/// Most resources (streams, pollables) one instance may hold.
const MAX_RESOURCES: usize = 1024;

/// What the host allows its instances.
#[derive(Debug, Clone, Copy)]
pub struct FunctionLimits {
    /// Instances alive at once (slots of the pooling allocator).
    pub max_instances: u32,
    /// Linear memory of one instance, in MiB.
    pub max_memory_mb: u64,
}

/// Where an instance is in its life.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InstanceState {
    /// Answers invocations.
    Ready,
    /// Trapped (or failed `init`); answers nothing more. Why.
    Error(String),
}

/// Why an invocation has no result.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvokeError {
    /// The function answered an error; the instance stays ready.
    #[error("the function failed: {0}")]
    Function(String),
    /// The instance trapped during this invocation and is now in error.
    #[error("the instance trapped: {0}")]
    Trap(String),
    /// The invocation ran past its deadline; the instance is now in error.
    #[error("the invocation ran past its deadline of {0:?}")]
    Deadline(Duration),
    /// The instance was already in error.
    #[error("the instance is in error: {0}")]
    Broken(String),
}

/// Store data of a function instance.
struct FnState {
    ctx: WasiCtx,
    table: ResourceTable,
    limiter: Limiter,
    /// Where the current invocation's `emit`ted pieces go.
    output: Output,
}

impl spear::function::output::Host for FnState {
    fn emit(&mut self, piece: Vec<u8>) -> bool {
        self.output.take(piece)
    }
}

impl WasiView for FnState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.ctx,
            table: &mut self.table,
        }
    }
}

/// Invocations in flight, and the ticker's wake-up.
#[derive(Default)]
struct Flight {
    running: Mutex<(usize, bool)>,
    wake: Condvar,
}

/// The epoch ticker, owned by the host and by every instance: it stops when the last of them
/// goes, so an instance that outlives its host still has its deadlines.
struct Ticker {
    flight: Arc<Flight>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Ticker {
    fn drop(&mut self) {
        {
            let mut running = self
                .flight
                .running
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            running.1 = true;
        }
        self.flight.wake.notify_all();
        let thread = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(t) = thread {
            let _ = t.join();
        }
    }
}

/// The engine, linker and epoch ticker shared by every function instance of an executor.
pub struct FunctionHost {
    engine: Engine,
    linker: Linker<FnState>,
    limits: FunctionLimits,
    ticker: Arc<Ticker>,
}

impl std::fmt::Debug for FunctionHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FunctionHost")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl FunctionHost {
    /// A host for at most `limits.max_instances` instances at once (1 to [`MAX_INSTANCES`],
    /// each of 1 to [`MAX_MEMORY_MB`] MiB).
    pub fn new(limits: FunctionLimits) -> Result<Self, String> {
        if !(1..=MAX_INSTANCES).contains(&limits.max_instances) {
            return Err(format!(
                "max_instances {} is not between 1 and {MAX_INSTANCES}",
                limits.max_instances
            ));
        }
        if !(1..=MAX_MEMORY_MB).contains(&limits.max_memory_mb) {
            return Err(format!(
                "max_memory_mb {} is not between 1 and {MAX_MEMORY_MB}",
                limits.max_memory_mb
            ));
        }
        let n = limits.max_instances;
        let memory = usize::try_from(limits.max_memory_mb << 20).unwrap_or(usize::MAX);
        let mut pool = PoolingAllocationConfig::new();
        // A Rust component holds a handful of core instances, memories and tables.
        pool.total_component_instances(n)
            .total_core_instances(n * 8)
            .total_memories(n * 2)
            .total_tables(n * 4)
            .total_stacks(n)
            .max_memory_size(memory)
            .max_unused_warm_slots(n.min(100));
        let engine = crate::config::pooled_engine(pool)
            .map_err(|e| format!("cannot create the function engine ({n} instances): {e:#}"))?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .map_err(|e| format!("cannot link WASI preview 2: {e:#}"))?;
        spear::function::output::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)
            .map_err(|e| format!("cannot link spear:function/output: {e:#}"))?;
        let flight = Arc::new(Flight::default());
        let thread = {
            let (engine, flight) = (engine.clone(), flight.clone());
            std::thread::Builder::new()
                .name("spear-function-epoch".into())
                .spawn(move || tick(&engine, &flight))
                .map_err(|e| format!("cannot start the epoch ticker: {e}"))?
        };
        Ok(Self {
            engine,
            linker,
            limits,
            ticker: Arc::new(Ticker {
                flight,
                thread: Mutex::new(Some(thread)),
            }),
        })
    }

    /// Compile and link a function component once, for all of its instances.
    pub fn compile(&self, bytes: &[u8]) -> Result<SharedBinary, String> {
        let component = Component::new(&self.engine, bytes)
            .map_err(|e| format!("cannot compile the component: {e:#}"))?;
        let pre = self.linker.instantiate_pre(&component).map_err(|e| {
            format!("cannot link it (it may import only WASI and spear:function/output): {e:#}")
        })?;
        let pre = FunctionPre::new(pre).map_err(|e| {
            format!("not a function component (no `spear:function/handler` export): {e:#}")
        })?;
        Ok(SharedBinary { pre })
    }

    /// Make an instance of `binary` and initialise it with `config` (a JSON object), all within
    /// `deadline`.
    pub async fn instantiate(
        &self,
        binary: &SharedBinary,
        config: &str,
        deadline: Duration,
    ) -> Result<FunctionInstance, String> {
        self.instantiate_limited(binary, config, deadline, self.limits.max_memory_mb)
            .await
    }

    /// [`instantiate`](Self::instantiate) with a memory limit of `memory_mb` MiB (at most the
    /// host's).
    pub async fn instantiate_limited(
        &self,
        binary: &SharedBinary,
        config: &str,
        deadline: Duration,
        memory_mb: u64,
    ) -> Result<FunctionInstance, String> {
        let memory_mb = memory_mb.clamp(1, self.limits.max_memory_mb);
        let used = Arc::new(AtomicU64::new(0));
        let mut table = ResourceTable::new();
        table.set_max_capacity(MAX_RESOURCES);
        let state = FnState {
            // Nothing granted but clocks and random numbers: no sockets (not even unbound
            // ones, each a host descriptor), no files, no environment; standard streams go
            // nowhere.
            ctx: WasiCtx::builder()
                .allow_tcp(false)
                .allow_udp(false)
                .allow_ip_name_lookup(false)
                .build(),
            table,
            limiter: Limiter::new(memory_mb << 20, used.clone()),
            output: Output::default(),
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limiter);
        store.epoch_deadline_trap();
        let _in_flight = InFlight::enter(&self.ticker.flight);
        store.set_epoch_deadline(ticks(deadline));
        let made = tokio::time::timeout(timer(deadline), async {
            let bindings = binary
                .pre
                .instantiate_async(&mut store)
                .await
                .map_err(|e| format!("cannot instantiate it: {e:#}"))?;
            match bindings
                .spear_function_handler()
                .call_init(&mut store, config)
                .await
            {
                Ok(Ok(())) => Ok(bindings),
                Ok(Err(e)) => Err(format!("its init refused the configuration: {e}")),
                Err(trap) => Err(format!("its init trapped: {trap:#}")),
            }
        })
        .await
        .map_err(|_| format!("its instantiation and init took longer than {deadline:?}"))??;
        Ok(FunctionInstance {
            store,
            bindings: made,
            state: InstanceState::Ready,
            used,
            invocations: 0,
            ticker: self.ticker.clone(),
            max_output: DEFAULT_MAX_OUTPUT,
        })
    }
}

/// Advance `engine`'s epoch every [`TICK`] while an invocation is in flight.
fn tick(engine: &Engine, flight: &Flight) {
    loop {
        {
            let mut running = flight.running.lock().unwrap_or_else(|p| p.into_inner());
            while running.0 == 0 && !running.1 {
                running = flight.wake.wait(running).unwrap_or_else(|p| p.into_inner());
            }
            if running.1 {
                return;
            }
        }
        std::thread::sleep(TICK);
        engine.increment_epoch();
    }
}

/// The timer's share of `deadline` (WASI waits): a little after the epoch's, so that code running
/// in WebAssembly is stopped by the epoch and told so; at most about 49 days.
fn timer(deadline: Duration) -> Duration {
    deadline.min(TICK * u32::MAX) + TICK * 2
}

/// Ticks of [`TICK`] in `deadline` (at least one, rounded up: a deadline is never cut short;
/// at most [`MAX_TICKS`], so that the engine's epoch plus it cannot overflow).
fn ticks(deadline: Duration) -> u64 {
    let tick = TICK.as_nanos();
    u64::try_from(deadline.as_nanos().div_ceil(tick))
        .unwrap_or(MAX_TICKS)
        .clamp(1, MAX_TICKS)
        // The tick under way may end at once: one more keeps the deadline a lower bound.
        + 1
}

/// One invocation in flight: the ticker runs while any is.
struct InFlight(Arc<Flight>);

impl InFlight {
    fn enter(flight: &Arc<Flight>) -> Self {
        let mut running = flight.running.lock().unwrap_or_else(|p| p.into_inner());
        running.0 += 1;
        if running.0 == 1 {
            flight.wake.notify_one();
        }
        Self(flight.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut running = self.0.running.lock().unwrap_or_else(|p| p.into_inner());
        running.0 = running.0.saturating_sub(1);
    }
}

/// A function component compiled and linked once; instances of a task share it.
#[derive(Clone)]
pub struct SharedBinary {
    pre: FunctionPre<FnState>,
}

impl std::fmt::Debug for SharedBinary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SharedBinary")
    }
}

/// A live instance: its store (memory, globals) is kept between invocations.
pub struct FunctionInstance {
    store: Store<FnState>,
    bindings: Function,
    state: InstanceState,
    used: Arc<AtomicU64>,
    invocations: u64,
    ticker: Arc<Ticker>,
    max_output: usize,
}

impl std::fmt::Debug for FunctionInstance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FunctionInstance")
            .field("state", &self.state)
            .field("invocations", &self.invocations)
            .finish_non_exhaustive()
    }
}

impl FunctionInstance {
    /// Where the instance is in its life.
    pub fn state(&self) -> &InstanceState {
        &self.state
    }

    /// Invocations answered so far (errors of the function included).
    pub fn invocations(&self) -> u64 {
        self.invocations
    }

    /// Bytes its function may `emit` in one invocation.
    pub fn max_output(&self) -> usize {
        self.max_output
    }

    /// Let its function `emit` at most `bytes` in one invocation.
    pub fn set_max_output(&mut self, bytes: usize) {
        self.max_output = bytes;
    }

    /// Bytes of linear memory the instance holds.
    pub fn memory_bytes(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    /// Run `function` on `payload`, within `deadline`: WebAssembly code is stopped by the epoch
    /// deadline, a wait inside a WASI call (a sleep, a poll) by a timer. The pieces the function
    /// `emit`s come before its result.
    pub async fn invoke(
        &mut self,
        function: &str,
        payload: &[u8],
        deadline: Duration,
    ) -> Result<Vec<u8>, InvokeError> {
        self.invoke_streaming(function, payload, deadline, None)
            .await
    }

    /// [`invoke`](Self::invoke), the pieces the function `emit`s going to `pieces` (a
    /// streaming caller) when given; at most [`max_output`](Self::max_output) bytes of them.
    pub async fn invoke_streaming(
        &mut self,
        function: &str,
        payload: &[u8],
        deadline: Duration,
        pieces: Option<Pieces>,
    ) -> Result<Vec<u8>, InvokeError> {
        if let InstanceState::Error(why) = &self.state {
            return Err(InvokeError::Broken(why.clone()));
        }
        let max = self.max_output;
        // Any deadline is taken: one past what an instant can hold is none.
        let until = Instant::now().checked_add(deadline);
        self.store.data_mut().output = Output::new(pieces, max, until);
        let answer = self.call(function, payload, deadline).await;
        // The channel of a streaming caller closes here, whatever the outcome.
        let output = std::mem::take(&mut self.store.data_mut().output);
        let out = answer?;
        output.finish(out).map_err(InvokeError::Function)
    }

    async fn call(
        &mut self,
        function: &str,
        payload: &[u8],
        deadline: Duration,
    ) -> Result<Vec<u8>, InvokeError> {
        let _in_flight = InFlight::enter(&self.ticker.flight);
        self.store.data_mut().limiter.reset_refused();
        self.store.set_epoch_deadline(ticks(deadline));
        let started = Instant::now();
        let call =
            self.bindings
                .spear_function_handler()
                .call_invoke(&mut self.store, function, payload);
        let Ok(answer) = tokio::time::timeout(timer(deadline), call).await else {
            // Dropped mid-call: the store may be anywhere; the instance serves no more.
            let error = InvokeError::Deadline(deadline);
            self.state = InstanceState::Error(format!("{error} (in a WASI call)"));
            return Err(error);
        };
        match answer {
            Ok(Ok(out)) => {
                self.invocations += 1;
                Ok(out)
            }
            Ok(Err(e)) => {
                self.invocations += 1;
                Err(InvokeError::Function(e))
            }
            Err(trap) => {
                let interrupted = trap
                    .downcast_ref::<wasmtime::Trap>()
                    .is_some_and(|t| *t == wasmtime::Trap::Interrupt);
                let error = if interrupted {
                    InvokeError::Deadline(deadline)
                } else if self.store.data().limiter.refused() {
                    InvokeError::Trap(format!("it needed more than its memory limit ({trap:#})"))
                } else {
                    InvokeError::Trap(format!("{trap:#}"))
                };
                self.state = InstanceState::Error(format!(
                    "{error} (after {} ms)",
                    started.elapsed().as_millis()
                ));
                Err(error)
            }
        }
    }
}
