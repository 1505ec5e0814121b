//! The WASI a plugin component gets: the least the contract needs, every part of it bounded.
//!
//! Components built by ordinary toolchains (Rust's std, componentize-py, componentize-js,
//! wasi-libc) import WASI interfaces whether or not they use them, so the whole of WASI 0.2 is
//! linked, but what it reaches is this:
//!
//! - **stdin** is closed; **stdout** and **stderr** are [`CappedOutput`]: at most
//!   [`OUTPUT_PER_CALL`] bytes a call reach the host's log (at debug level, with the plugin's name;
//!   only while the log is granted, [`crate::grants`]); the rest is counted and dropped. A write
//!   never allocates more than [`WRITE_PERMIT`] bytes.
//! - **no files** but a private scratch directory, `/scratch`, when granted, bounded by its
//!   quota ([`super::scratch`]); **no environment**, **no arguments**;
//! - **no network**: TCP and UDP socket creation and name lookup answer `access-denied`;
//! - **clocks** as granted ([`crate::grants`]: real, or reading zero) and **random** as WASI
//!   defines it (random requests are capped by wasmtime-wasi);
//! - **`wasi:http`** linked, each request refused unless its host is granted (`component::access`);
//! - **`wasi:io/poll`**, and the blocking reads, writes, flushes and splices of
//!   **`wasi:io/streams`** (an HTTP body's, say), wait at most until the call's wall-clock ceiling:
//!   a guest that blocks longer is stopped with [`BudgetExceeded::Poll`] or
//!   [`BudgetExceeded::Stream`];
//! - **resources** (pollables, streams) at most [`MAX_RESOURCES`] at once per instance.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Instant;

use bytes::Bytes;
use wasmtime::component::{HasData, Linker, Resource, ResourceTable};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::bindings::io::poll as async_poll;
use wasmtime_wasi::p2::bindings::io::streams as async_streams;
use wasmtime_wasi::p2::bindings::sync::io::poll as sync_poll;
use wasmtime_wasi::p2::bindings::sync::io::streams as sync_streams;
use wasmtime_wasi::p2::{
    DynInputStream, DynOutputStream, DynPollable, OutputStream, Pollable, StreamError, StreamResult,
};
use wasmtime_wasi::{
    DirPerms, FilePerms, HostMonotonicClock, HostWallClock, WasiCtx, WasiCtxBuilder, WasiView,
};

use super::scratch::{self, fs::ScratchView};
use crate::budget::BudgetExceeded;

/// Bytes of stdout + stderr a plugin may send to the host's log in one call.
pub const OUTPUT_PER_CALL: usize = 64 * 1024;
/// The most a guest may write in one `write` (what `check-write` grants).
pub const WRITE_PERMIT: usize = 64 * 1024;
/// Resources (pollables, streams, …) one plugin instance may hold at once.
pub const MAX_RESOURCES: usize = 1024;
/// Bytes of one output line kept in the log.
const LOG_LINE: usize = 1024;
/// Bytes of a call's last stderr output kept to explain a trap (a Rust guest's panic message).
const STDERR_TAIL: usize = 512;

/// The output budget of one instance, shared by its stdout and stderr, renewed every call.
#[derive(Debug)]
pub(crate) struct OutputBudget {
    plugin: Arc<str>,
    left: AtomicUsize,
    dropped: AtomicUsize,
    /// Whether output reaches the host's log (the log is granted).
    forward: AtomicBool,
    /// The end of this call's stderr, at most [`STDERR_TAIL`] bytes.
    stderr_tail: std::sync::Mutex<String>,
}

impl OutputBudget {
    pub(crate) fn new(plugin: Arc<str>) -> Arc<Self> {
        Arc::new(Self {
            plugin,
            left: AtomicUsize::new(OUTPUT_PER_CALL),
            dropped: AtomicUsize::new(0),
            forward: AtomicBool::new(false),
            stderr_tail: std::sync::Mutex::new(String::new()),
        })
    }

    /// Start a call: the full budget again, the output reaching the log if `forward`. Returns
    /// the bytes dropped in the previous call.
    pub(crate) fn renew(&self, forward: bool) -> usize {
        self.forward.store(forward, Ordering::Relaxed);
        self.left.store(OUTPUT_PER_CALL, Ordering::Relaxed);
        self.tail().clear();
        self.dropped.swap(0, Ordering::Relaxed)
    }

    /// The last stderr output of this call (trimmed), to explain a trap.
    pub(crate) fn stderr_tail(&self) -> String {
        self.tail().trim().to_owned()
    }

    fn tail(&self) -> std::sync::MutexGuard<'_, String> {
        self.stderr_tail.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn keep_stderr(&self, text: &str) {
        let mut tail = self.tail();
        tail.push_str(text);
        if tail.len() > STDERR_TAIL {
            let mut cut = tail.len() - STDERR_TAIL;
            while !tail.is_char_boundary(cut) {
                cut += 1;
            }
            tail.drain(..cut);
        }
    }

    /// Take up to `n` bytes of the budget; returns how many were granted.
    fn take(&self, n: usize) -> usize {
        let mut granted = 0;
        let _ = self
            .left
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
                granted = left.min(n);
                Some(left - granted)
            });
        self.dropped.fetch_add(n - granted, Ordering::Relaxed);
        granted
    }
}

/// stdout or stderr of a plugin: capped per call, into the host's log.
#[derive(Clone)]
pub(crate) struct CappedOutput {
    budget: Arc<OutputBudget>,
    stream: &'static str,
}

impl CappedOutput {
    pub(crate) fn new(budget: Arc<OutputBudget>, stream: &'static str) -> Self {
        Self { budget, stream }
    }
}

impl IsTerminal for CappedOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for CappedOutput {
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        // Only the WASIp3 bindings use this; plugins are linked against WASIp2.
        Box::new(tokio::io::sink())
    }

    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl OutputStream for CappedOutput {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        if bytes.len() > WRITE_PERMIT {
            return Err(StreamError::trap("write larger than check-write permitted"));
        }
        let granted = self.budget.take(bytes.len());
        if granted > 0 {
            let kept = &bytes[..granted.min(LOG_LINE)];
            let text = String::from_utf8_lossy(kept);
            if self.budget.forward.load(Ordering::Relaxed) {
                tracing::debug!(
                    plugin = &*self.budget.plugin,
                    stream = self.stream,
                    "{}",
                    text.trim_end()
                );
            }
            if self.stream == "stderr" {
                self.budget.keep_stderr(&text);
            }
        }
        Ok(())
    }

    fn write_zeroes(&mut self, n: usize) -> StreamResult<()> {
        if n > WRITE_PERMIT {
            return Err(StreamError::trap(
                "write-zeroes larger than check-write permitted",
            ));
        }
        self.budget.take(n);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(WRITE_PERMIT)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for CappedOutput {
    async fn ready(&mut self) {}
}

/// The WASI context and resource table of one plugin instance, with its clocks and, if
/// granted, its scratch directory (the host path to preopen as `/scratch`).
pub(crate) fn context(
    output: &Arc<OutputBudget>,
    clocks: (
        impl HostWallClock + 'static,
        impl HostMonotonicClock + 'static,
    ),
    scratch: Option<&std::path::Path>,
) -> wasmtime::Result<(WasiCtx, ResourceTable)> {
    let mut builder = WasiCtxBuilder::new();
    builder
        .wall_clock(clocks.0)
        .monotonic_clock(clocks.1)
        .stdout(CappedOutput::new(output.clone(), "stdout"))
        .stderr(CappedOutput::new(output.clone(), "stderr"))
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false);
    if let Some(dir) = scratch {
        builder.preopened_dir(dir, scratch::GUEST_PATH, DirPerms::all(), FilePerms::all())?;
    }
    let mut table = ResourceTable::new();
    table.set_max_capacity(MAX_RESOURCES);
    Ok((builder.build(), table))
}

/// Store data that can bound a poll: its resource table and the call's wall-clock ceiling.
pub(crate) trait PollBound: WasiView {
    /// The table and the instant the current call must be over by (and its budget in ms).
    fn poll_bound(&mut self) -> (&mut ResourceTable, Instant, u64);
}

/// Link WASI 0.2 as described in the module docs.
pub(crate) fn add_to_linker<T: PollBound + ScratchView + 'static>(
    linker: &mut Linker<T>,
) -> wasmtime::Result<()> {
    wasmtime_wasi::p2::add_to_linker_sync(linker)?;
    scratch::fs::add_to_linker(linker)?;
    linker.allow_shadowing(true);
    let shadowed = sync_poll::add_to_linker::<T, BoundedPollData>(linker, project::<T>)
        .and_then(|()| sync_streams::add_to_linker::<T, BoundedPollData>(linker, project::<T>));
    linker.allow_shadowing(false);
    shadowed
}

fn project<T: PollBound>(s: &mut T) -> BoundedPoll<'_> {
    let (table, deadline, millis) = s.poll_bound();
    BoundedPoll {
        table,
        deadline,
        millis,
    }
}

struct BoundedPollData;

impl HasData for BoundedPollData {
    type Data<'a> = BoundedPoll<'a>;
}

/// `wasi:io/poll` that waits no longer than the call's ceiling.
pub(crate) struct BoundedPoll<'a> {
    table: &'a mut ResourceTable,
    deadline: Instant,
    millis: u64,
}

/// Run `f` until it completes or the call's ceiling passes.
fn bounded<F: Future>(deadline: Instant, millis: u64, f: F) -> wasmtime::Result<F::Output> {
    bounded_as(deadline, millis, f, BudgetExceeded::Poll)
}

/// [`bounded`], the overrun reported as `exceeded`.
fn bounded_as<F: Future>(
    deadline: Instant,
    millis: u64,
    f: F,
    exceeded: fn(u64) -> BudgetExceeded,
) -> wasmtime::Result<F::Output> {
    let left = deadline.saturating_duration_since(Instant::now());
    wasmtime_wasi::runtime::in_tokio(async move { tokio::time::timeout(left, f).await })
        .map_err(|_| wasmtime::Error::new(exceeded(millis)))
}

impl sync_poll::Host for BoundedPoll<'_> {
    fn poll(&mut self, pollables: Vec<Resource<DynPollable>>) -> wasmtime::Result<Vec<u32>> {
        let (deadline, millis) = (self.deadline, self.millis);
        bounded(
            deadline,
            millis,
            async_poll::Host::poll(self.table, pollables),
        )?
    }
}

impl sync_poll::HostPollable for BoundedPoll<'_> {
    fn ready(&mut self, pollable: Resource<DynPollable>) -> wasmtime::Result<bool> {
        wasmtime_wasi::runtime::in_tokio(async_poll::HostPollable::ready(self.table, pollable))
    }

    fn block(&mut self, pollable: Resource<DynPollable>) -> wasmtime::Result<()> {
        let (deadline, millis) = (self.deadline, self.millis);
        bounded(
            deadline,
            millis,
            async_poll::HostPollable::block(self.table, pollable),
        )?
    }

    fn drop(&mut self, pollable: Resource<DynPollable>) -> wasmtime::Result<()> {
        async_poll::HostPollable::drop(self.table, pollable)
    }
}

/// A blocking stream operation, stopped at the call's ceiling.
fn bounded_stream<R, F: Future<Output = StreamResult<R>>>(
    deadline: Instant,
    millis: u64,
    f: F,
) -> StreamResult<R> {
    bounded_as(deadline, millis, f, BudgetExceeded::Stream).map_err(StreamError::Trap)?
}

impl sync_streams::Host for BoundedPoll<'_> {
    fn convert_stream_error(
        &mut self,
        err: StreamError,
    ) -> wasmtime::Result<sync_streams::StreamError> {
        sync_streams::Host::convert_stream_error(self.table, err)
    }
}

impl sync_streams::HostOutputStream for BoundedPoll<'_> {
    fn drop(&mut self, stream: Resource<DynOutputStream>) -> wasmtime::Result<()> {
        sync_streams::HostOutputStream::drop(self.table, stream)
    }

    fn check_write(&mut self, stream: Resource<DynOutputStream>) -> StreamResult<u64> {
        sync_streams::HostOutputStream::check_write(self.table, stream)
    }

    fn write(&mut self, stream: Resource<DynOutputStream>, bytes: Vec<u8>) -> StreamResult<()> {
        sync_streams::HostOutputStream::write(self.table, stream, bytes)
    }

    fn blocking_write_and_flush(
        &mut self,
        stream: Resource<DynOutputStream>,
        bytes: Vec<u8>,
    ) -> StreamResult<()> {
        let (deadline, millis) = (self.deadline, self.millis);
        bounded_stream(
            deadline,
            millis,
            async_streams::HostOutputStream::blocking_write_and_flush(self.table, stream, bytes),
        )
    }

    fn blocking_write_zeroes_and_flush(
        &mut self,
        stream: Resource<DynOutputStream>,
        len: u64,
    ) -> StreamResult<()> {
        let (deadline, millis) = (self.deadline, self.millis);
        bounded_stream(
            deadline,
            millis,
            async_streams::HostOutputStream::blocking_write_zeroes_and_flush(
                self.table, stream, len,
            ),
        )
    }

    fn subscribe(
        &mut self,
        stream: Resource<DynOutputStream>,
    ) -> wasmtime::Result<Resource<DynPollable>> {
        sync_streams::HostOutputStream::subscribe(self.table, stream)
    }

    fn write_zeroes(&mut self, stream: Resource<DynOutputStream>, len: u64) -> StreamResult<()> {
        sync_streams::HostOutputStream::write_zeroes(self.table, stream, len)
    }

    fn flush(&mut self, stream: Resource<DynOutputStream>) -> StreamResult<()> {
        sync_streams::HostOutputStream::flush(self.table, stream)
    }

    fn blocking_flush(&mut self, stream: Resource<DynOutputStream>) -> StreamResult<()> {
        let (deadline, millis) = (self.deadline, self.millis);
        bounded_stream(
            deadline,
            millis,
            async_streams::HostOutputStream::blocking_flush(
                self.table,
                Resource::new_borrow(stream.rep()),
            ),
        )
    }

    fn splice(
        &mut self,
        dst: Resource<DynOutputStream>,
        src: Resource<DynInputStream>,
        len: u64,
    ) -> StreamResult<u64> {
        sync_streams::HostOutputStream::splice(self.table, dst, src, len)
    }

    fn blocking_splice(
        &mut self,
        dst: Resource<DynOutputStream>,
        src: Resource<DynInputStream>,
        len: u64,
    ) -> StreamResult<u64> {
        let (deadline, millis) = (self.deadline, self.millis);
        bounded_stream(
            deadline,
            millis,
            async_streams::HostOutputStream::blocking_splice(self.table, dst, src, len),
        )
    }
}

impl sync_streams::HostInputStream for BoundedPoll<'_> {
    fn drop(&mut self, stream: Resource<DynInputStream>) -> wasmtime::Result<()> {
        sync_streams::HostInputStream::drop(self.table, stream)
    }

    fn read(&mut self, stream: Resource<DynInputStream>, len: u64) -> StreamResult<Vec<u8>> {
        sync_streams::HostInputStream::read(self.table, stream, len)
    }

    fn blocking_read(
        &mut self,
        stream: Resource<DynInputStream>,
        len: u64,
    ) -> StreamResult<Vec<u8>> {
        let (deadline, millis) = (self.deadline, self.millis);
        bounded_stream(
            deadline,
            millis,
            async_streams::HostInputStream::blocking_read(self.table, stream, len),
        )
    }

    fn skip(&mut self, stream: Resource<DynInputStream>, len: u64) -> StreamResult<u64> {
        sync_streams::HostInputStream::skip(self.table, stream, len)
    }

    fn blocking_skip(&mut self, stream: Resource<DynInputStream>, len: u64) -> StreamResult<u64> {
        let (deadline, millis) = (self.deadline, self.millis);
        bounded_stream(
            deadline,
            millis,
            async_streams::HostInputStream::blocking_skip(self.table, stream, len),
        )
    }

    fn subscribe(
        &mut self,
        stream: Resource<DynInputStream>,
    ) -> wasmtime::Result<Resource<DynPollable>> {
        sync_streams::HostInputStream::subscribe(self.table, stream)
    }
}
