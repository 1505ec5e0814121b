//! The machinery behind one executor: the engine and module cache, the worker pool running guests,
//! the epoch ticker and the accounting of pool slots.
//!
//! Guests run as tasks on a small tokio runtime (one worker thread per core). Calls into WebAssembly
//! are asynchronous (wasmtime fibers), and every guest yields back to the runtime at each epoch tick,
//! so a few threads serve any number of guests, long-running ones included, without a thread per
//! start.
//!
//! A started guest is a [`Claim`]: the first thread to claim it runs it. A thread that waits for it
//! claims it at once and runs it itself ([`Runtime::help`]), so the common `start` + `wait` needs no
//! hand-off between threads; a guest nobody waits for is handed to the workers by the ticker at its
//! next tick, at most [`TICK`] after its start.
//!
//! The ticker thread advances the engine's epoch every [`TICK`]; after a second without a live
//! guest it parks on a condition variable until the next start (no polling when idle).

use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::{Context, Wake, Waker};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::runtime::Handle;
use wasmtime::Engine;

use crate::cache::Cache;
use crate::config::Config;

/// Period of the epoch ticker: guests yield (and notice timeouts and stops) this often, and
/// unclaimed guests are handed to the workers.
pub const TICK: Duration = Duration::from_millis(2);

/// Ticks without a live guest after which the ticker parks until the next start (one second).
const PARK_AFTER: u32 = 500;

/// A guest's task, polled by a worker or by a waiter.
pub type Job = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A job not yet claimed by a worker or a waiter.
#[derive(Clone)]
pub struct Claim(Arc<Mutex<Option<Job>>>);

impl Claim {
    /// An unclaimed job.
    pub fn new(job: Job) -> Self {
        Self(Arc::new(Mutex::new(Some(job))))
    }

    fn lock(&self) -> MutexGuard<'_, Option<Job>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Claim the job (`None` if someone already did).
    pub fn take(&self) -> Option<Job> {
        self.lock().take()
    }

    fn unclaimed(&self) -> bool {
        self.lock().is_some()
    }
}

#[derive(Default)]
struct Counts {
    live: usize,
    parked: bool,
    shutdown: bool,
}

/// Live guests (bounded by the pool) and the ticker's state.
pub struct Slots {
    counts: Mutex<Counts>,
    wake: Condvar,
    capacity: usize,
    unclaimed: Mutex<Vec<Claim>>,
}

impl Slots {
    fn lock(&self) -> MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn unclaimed(&self) -> MutexGuard<'_, Vec<Claim>> {
        self.unclaimed.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Take a slot for a new guest, or say the pool is exhausted.
    pub fn acquire(self: &Arc<Self>) -> Result<SlotGuard, String> {
        let mut c = self.lock();
        if c.live >= self.capacity {
            return Err(format!(
                "the wasm executor's pool is exhausted: {} guests are alive (pool_instances = {}); \
                 wait for one to finish or configure a larger pool",
                c.live, self.capacity
            ));
        }
        c.live += 1;
        if c.parked {
            self.wake.notify_all();
        }
        Ok(SlotGuard(self.clone()))
    }
}

/// One live guest's slot, released on drop.
pub struct SlotGuard(Arc<Slots>);

impl Drop for SlotGuard {
    fn drop(&mut self) {
        let mut c = self.0.lock();
        c.live = c.live.saturating_sub(1);
    }
}

/// Engine, cache, workers and ticker of one executor.
pub struct Runtime {
    /// The wasmtime engine (epoch interruption, pooling allocator).
    pub engine: Engine,
    /// Compiled and linked guests.
    pub cache: Cache,
    /// Live-guest accounting.
    pub slots: Arc<Slots>,
    /// The configuration it was built from.
    pub config: Config,
    workers: Option<tokio::runtime::Runtime>,
    ticker: Option<JoinHandle<()>>,
}

impl Runtime {
    /// Build the engine, the linkers, the worker pool and the ticker.
    pub fn new(config: Config) -> Result<Self, String> {
        let engine = config.engine()?;
        let cache = Cache::new(engine.clone(), config.cache_entries)?;
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get().clamp(1, 16));
        let workers = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("spear-wasm")
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the wasm executor's workers: {e}"))?;
        let slots = Arc::new(Slots {
            counts: Mutex::default(),
            wake: Condvar::new(),
            capacity: config.pool_instances as usize,
            unclaimed: Mutex::default(),
        });
        let ticker = {
            let (slots, engine, handle) = (slots.clone(), engine.clone(), workers.handle().clone());
            std::thread::Builder::new()
                .name("spear-wasm-epoch".into())
                .spawn(move || tick(&slots, &engine, &handle))
                .map_err(|e| format!("cannot start the wasm executor's ticker: {e}"))?
        };
        Ok(Self {
            engine,
            cache,
            slots,
            config,
            workers: Some(workers),
            ticker: Some(ticker),
        })
    }

    /// Queue a started guest: a waiter claims it, or the ticker hands it to the workers.
    pub fn launch(&self, claim: Claim) {
        self.slots.unclaimed().push(claim);
    }

    /// Run an unclaimed job on the calling thread for up to `timeout` (`None`: to its end); if it
    /// is still running then, the workers take it over. Not done on a thread inside a runtime of
    /// this tokio (the caller's async context must not block).
    pub fn help(&self, claim: &Claim, timeout: Option<Duration>) {
        let Some(w) = &self.workers else { return };
        if timeout.is_some_and(|t| t.is_zero()) || Handle::try_current().is_ok() {
            return;
        }
        let Some(mut job) = claim.take() else { return };
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        let _context = w.enter();
        let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
        let mut cx = Context::from_waker(&waker);
        loop {
            if job.as_mut().poll(&mut cx).is_ready() {
                return;
            }
            match deadline {
                None => std::thread::park(),
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        spawn(w.handle(), job);
                        return;
                    }
                    std::thread::park_timeout(d - now);
                }
            }
        }
    }
}

fn spawn(handle: &Handle, job: Job) {
    drop(handle.spawn(job));
}

/// Wakes the thread running a job.
struct Unpark(std::thread::Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

/// Every tick: advance the epoch and hand unclaimed guests to the workers. After [`PARK_AFTER`]
/// ticks without a live guest, park until a start wakes it.
fn tick(slots: &Slots, engine: &Engine, workers: &Handle) {
    let mut idle = 0;
    loop {
        {
            let mut c = slots.lock();
            idle = if c.live == 0 { idle + 1 } else { 0 };
            if idle >= PARK_AFTER {
                c.parked = true;
                while c.live == 0 && !c.shutdown {
                    c = slots.wake.wait(c).unwrap_or_else(|p| p.into_inner());
                }
                c.parked = false;
                idle = 0;
            }
            if c.shutdown {
                return;
            }
        }
        std::thread::sleep(TICK);
        engine.increment_epoch();
        let unclaimed = std::mem::take(&mut *slots.unclaimed());
        for claim in unclaimed.into_iter().filter(Claim::unclaimed) {
            drop(workers.spawn(async move {
                if let Some(job) = claim.take() {
                    job.await;
                }
            }));
        }
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        // Guests are dropped at their next yield, which needs the ticker: stop it last.
        if let Some(w) = self.workers.take() {
            if Handle::try_current().is_ok() {
                w.shutdown_background();
            } else {
                w.shutdown_timeout(Duration::from_secs(2));
            }
        }
        self.slots.lock().shutdown = true;
        self.slots.wake.notify_all();
        if let Some(t) = self.ticker.take() {
            let _ = t.join();
        }
        // Guests never claimed end here (their waiters see the executor shut down).
        let unclaimed = std::mem::take(&mut *self.slots.unclaimed());
        drop(unclaimed);
    }
}
