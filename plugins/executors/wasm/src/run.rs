//! One execution: its WASI context from the spec, the task running it, and how it ended.
//!
//! The task races the guest against its deadline and its stop signal; whichever wins, the guest's
//! future (with its store and instance) is dropped, which cancels it even inside a host call. The
//! result is published through [`Done`], whose condition variable wakes the waiters.

use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use spear_plugin_api::executor::{ExecResult, ExecSpec, ExitStatus};
use tokio::sync::Notify;
use wasmtime::{Engine, Store, Trap, UpdateDeadline, WasmBacktrace};
use wasmtime_wasi::p2::pipe::MemoryInputPipe;
use wasmtime_wasi::{DirPerms, FilePerms, I32Exit, ResourceTable, WasiCtxBuilder};

use crate::cpu::Metered;
use crate::output::Capture;
use crate::program::Program;
use crate::runtime::{Claim, SlotGuard};
use crate::state::{ComponentState, CoreState, Limiter};

/// Longest trap description kept (backtraces can be long).
const MAX_MESSAGE: usize = 4096;

/// Stop requests of one execution.
#[derive(Default)]
pub struct Control {
    signal: AtomicI32,
    notify: Notify,
}

impl Control {
    /// Ask the guest to end with `signal` (the first signal delivered wins).
    pub fn deliver(&self, signal: i32) {
        let _ = self
            .signal
            .compare_exchange(0, signal, Ordering::SeqCst, Ordering::SeqCst);
        self.notify.notify_one();
    }

    async fn delivered(&self) -> i32 {
        self.notify.notified().await;
        self.signal.load(Ordering::SeqCst)
    }
}

/// The result of one execution, once it is known.
#[derive(Default)]
pub struct Done {
    result: Mutex<Option<ExecResult>>,
    ready: Condvar,
}

impl Done {
    fn lock(&self) -> MutexGuard<'_, Option<ExecResult>> {
        self.result.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set(&self, result: ExecResult) {
        self.lock().get_or_insert(result);
        self.ready.notify_all();
    }

    /// The result if finished.
    pub fn get(&self) -> Option<ExecResult> {
        self.lock().clone()
    }

    /// Wait up to `timeout` for the result.
    pub fn wait(&self, timeout: Duration) -> Option<ExecResult> {
        let deadline = Instant::now().checked_add(timeout);
        let mut r = self.lock();
        loop {
            if let Some(r) = &*r {
                return Some(r.clone());
            }
            r = match deadline {
                None => self.ready.wait(r).unwrap_or_else(|p| p.into_inner()),
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        return None;
                    }
                    self.ready
                        .wait_timeout(r, d - now)
                        .unwrap_or_else(|p| p.into_inner())
                        .0
                }
            };
        }
    }
}

/// The guest's WASI context, of the form its program needs.
enum Context {
    Module(CoreState),
    Component(ComponentState),
}

/// Everything an execution task needs.
pub struct Launch {
    engine: Engine,
    program: Arc<Program>,
    context: Context,
    stdout: Capture,
    stderr: Capture,
    deadline: Option<Instant>,
    cpu_limit: Option<Duration>,
    started: Instant,
    control: Arc<Control>,
    done: Arc<Done>,
    slot: SlotGuard,
}

/// Shared handles of a launched execution, kept by the executor's table.
pub struct Handles {
    /// Stop requests.
    pub control: Arc<Control>,
    /// The result.
    pub done: Arc<Done>,
    /// Bytes of the guest's linear memories.
    pub memory: Arc<AtomicU64>,
    /// When it started.
    pub started: Instant,
    /// The task, until a worker or a waiter claims it.
    pub claim: Option<Claim>,
}

/// Output kept per stream when the spec sets no cap.
pub const DEFAULT_CAP: u64 = 16 * 1024 * 1024;

/// Build the WASI context of `spec` for `program`; `memory_limit` is in bytes, `max_cpu_ms` the
/// CPU limit (0: none).
pub fn prepare(
    engine: &Engine,
    program: Arc<Program>,
    spec: &ExecSpec,
    artifact: &str,
    (memory_limit, max_cpu_ms): (u64, u64),
    slot: SlotGuard,
) -> Result<(Launch, Handles), String> {
    let started = Instant::now();
    let cap = match spec.output_cap_bytes {
        0 => DEFAULT_CAP,
        n => n,
    };
    let cap = usize::try_from(cap).unwrap_or(usize::MAX);
    let (stdout, stderr) = (Capture::new(cap), Capture::new(cap));
    let argv0 = [&spec.task, &spec.entry]
        .into_iter()
        .find(|s| !s.is_empty())
        .cloned()
        .unwrap_or_else(|| artifact.rsplit('/').next().unwrap_or(artifact).to_owned());
    let mut b = WasiCtxBuilder::new();
    b.arg(argv0)
        .args(&spec.args)
        .envs(&spec.env)
        .stdin(MemoryInputPipe::new(spec.stdin.clone()))
        .stdout(stdout.clone())
        .stderr(stderr.clone());
    if let Some(dir) = &spec.working_dir {
        b.preopened_dir(dir, ".", DirPerms::all(), FilePerms::all())
            .map_err(|e| format!("cannot open working_dir {dir} for the guest: {e:#}"))?;
    }
    if spec.network {
        b.inherit_network().allow_ip_name_lookup(true);
    } else {
        // No network: no sockets at all (creating one would cost the host a descriptor).
        b.allow_tcp(false).allow_udp(false);
    }
    let memory = Arc::new(AtomicU64::new(0));
    let limiter = Limiter::new(memory_limit, memory.clone());
    let context = match &*program {
        Program::Module(_) => Context::Module(CoreState {
            wasi: b.build_p1(),
            limiter,
        }),
        Program::Component(_) => Context::Component(ComponentState {
            ctx: b.build(),
            table: {
                let mut table = ResourceTable::new();
                table.set_max_capacity(MAX_RESOURCES);
                table
            },
            limiter,
        }),
    };
    let handles = Handles {
        control: Arc::default(),
        done: Arc::default(),
        memory,
        started,
        claim: None,
    };
    let launch = Launch {
        engine: engine.clone(),
        program,
        context,
        stdout,
        stderr,
        deadline: (spec.timeout_ms > 0)
            .then(|| started.checked_add(Duration::from_millis(spec.timeout_ms)))
            .flatten(),
        cpu_limit: (max_cpu_ms > 0).then(|| Duration::from_millis(max_cpu_ms)),
        started,
        control: handles.control.clone(),
        done: handles.done.clone(),
        slot,
    };
    Ok((launch, handles))
}

/// Resources (streams, pollables, sockets, …) one component guest may hold at once: host memory
/// outside its own memory limit, so bounded too.
pub const MAX_RESOURCES: usize = 16_384;

/// Publishes a result even if the task is dropped (the executor shutting down).
struct Finisher(Option<Arc<Done>>, Instant);

impl Drop for Finisher {
    fn drop(&mut self) {
        if let Some(done) = self.0.take() {
            done.set(ExecResult {
                status: ExitStatus::Failed("the wasm executor shut down during the run".into()),
                stdout: Vec::new(),
                stderr: Vec::new(),
                stdout_truncated: false,
                stderr_truncated: false,
                duration_ms: self.1.elapsed().as_millis() as u64,
            });
        }
    }
}

enum Ended {
    Ran(wasmtime::Result<i32>, bool),
    TimedOut,
    Signaled(i32),
}

/// Run the guest to its end, its deadline or its stop, and publish the result.
pub async fn supervise(launch: Launch) {
    let Launch {
        engine,
        program,
        context,
        stdout,
        stderr,
        deadline,
        cpu_limit,
        started,
        control,
        done,
        slot,
    } = launch;
    let mut finisher = Finisher(Some(done), started);
    let timer = async {
        match deadline {
            Some(d) => tokio::time::sleep_until(d.into()).await,
            None => std::future::pending().await,
        }
    };
    let ended = tokio::select! {
        biased;
        signal = control.delivered() => Ended::Signaled(signal),
        () = timer => Ended::TimedOut,
        (result, refused) = Metered::new(execute(&engine, &program, context), cpu_limit) => {
            Ended::Ran(result, refused)
        }
    };
    drop(slot);
    let status = match ended {
        Ended::TimedOut => ExitStatus::TimedOut,
        Ended::Signaled(s) => ExitStatus::Signaled(s),
        Ended::Ran(Ok(code), _) => ExitStatus::Exited(code),
        Ended::Ran(Err(e), refused) => classify(&e, refused),
    };
    let (stdout, stdout_truncated) = stdout.take();
    let (stderr, stderr_truncated) = stderr.take();
    if let Some(done) = finisher.0.take() {
        done.set(ExecResult {
            status,
            stdout,
            stderr,
            stdout_truncated,
            stderr_truncated,
            duration_ms: started.elapsed().as_millis() as u64,
        });
    }
}

/// Make the store yield at every epoch tick and enforce the memory limit.
fn arm<T: Send + 'static>(store: &mut Store<T>, limiter: fn(&mut T) -> &mut Limiter) {
    store.limiter(move |s| limiter(s));
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(|_| Ok(UpdateDeadline::Yield(1)));
}

/// Instantiate and run; the exit code and whether a memory growth was refused.
async fn execute(
    engine: &Engine,
    program: &Program,
    context: Context,
) -> (wasmtime::Result<i32>, bool) {
    match (program, context) {
        (Program::Module(pre), Context::Module(state)) => {
            let mut store = Store::new(engine, state);
            arm(&mut store, |s| &mut s.limiter);
            let result = async {
                let instance = pre.instantiate_async(&mut store).await?;
                let start = instance.get_typed_func::<(), ()>(&mut store, "_start")?;
                start.call_async(&mut store, ()).await?;
                Ok(0)
            }
            .await;
            (result, store.data().limiter.refused())
        }
        (Program::Component(pre), Context::Component(state)) => {
            let mut store = Store::new(engine, state);
            arm(&mut store, |s| &mut s.limiter);
            let result = async {
                let command = pre.instantiate_async(&mut store).await?;
                let run = command.wasi_cli_run().call_run(&mut store).await?;
                Ok(if run.is_ok() { 0 } else { 1 })
            }
            .await;
            (result, store.data().limiter.refused())
        }
        _ => (
            Err(wasmtime::Error::msg("program and context forms differ")),
            false,
        ),
    }
}

/// An exit request, a trap (with its wasm backtrace) or another failure.
fn classify(e: &wasmtime::Error, refused: bool) -> ExitStatus {
    if let Some(exit) = e.downcast_ref::<I32Exit>() {
        return ExitStatus::Exited(exit.0);
    }
    if let Some(cpu) = e.downcast_ref::<crate::cpu::CpuLimit>() {
        return ExitStatus::Failed(cpu.to_string());
    }
    let trap = e.downcast_ref::<Trap>();
    let mut message = match trap {
        Some(trap) => {
            let trap = trap.to_string();
            format!(
                "trap: {}",
                trap.strip_prefix("wasm trap: ").unwrap_or(&trap)
            )
        }
        None => format!("error: {e:#}"),
    };
    if refused {
        message.push_str(" (the guest was refused memory past its memory limit)");
    }
    if let (Some(_), Some(bt)) = (trap, e.downcast_ref::<WasmBacktrace>()) {
        let bt = bt.to_string();
        message.push_str("\nwasm backtrace:\n");
        message.push_str(
            bt.strip_prefix("error while executing at wasm backtrace:\n")
                .unwrap_or(&bt),
        );
    }
    if message.len() > MAX_MESSAGE {
        let mut end = MAX_MESSAGE;
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        message.truncate(end);
        message.push('…');
    }
    ExitStatus::Failed(message)
}
