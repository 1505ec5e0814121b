//! Long-running worker processes that serve invocations one after another over the worker
//! protocol (docs/workers.md): length-prefixed frames on the worker's standard input and output.
//!
//! Every message is two frames: a JSON header, then the payload bytes, each preceded by its
//! length as four bytes, big-endian. The worker announces itself with `{"ready": true,
//! "protocol": 1}` (and an empty payload); each request is `{"id", "function"}` + payload and is
//! answered `{"id", "ok": true}` + result or `{"id", "ok": false, "error"}` + empty payload.
//! The messages themselves are [`spear_plugin_api::worker`]'s, shared with the `container`
//! executor; this module moves them over pipes.
//!
//! Every read and write has the invocation's deadline (`poll(2)` on non-blocking pipes), and
//! every frame a size limit. A worker that dies, breaks the protocol or misses its deadline is
//! killed (its whole process group) and reaped, and put in [`WorkerState::Error`]; whoever holds
//! it replaces it. A write to a worker that died must fail with `EPIPE`, not kill the host: hosts
//! ignore `SIGPIPE` (Rust programs do, from their start).

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

pub use spear_plugin_api::worker::{MAX_FUNCTION_NAME, MAX_HEADER, PROTOCOL, WorkerError};
use spear_plugin_api::worker::{Reply, Sink, hello, reply, request};

/// A deadline far enough to mean "none" (`Instant + Duration::MAX` would overflow).
const FAR: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// What to start.
#[derive(Debug, Clone, Default)]
pub struct WorkerSpec {
    /// The program.
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<String>,
    /// Its environment (nothing else is inherited).
    pub env: Vec<(String, std::ffi::OsString)>,
    /// Its working directory.
    pub working_dir: Option<PathBuf>,
    /// Largest payload frame accepted from the worker (and sent to it).
    pub max_payload: usize,
    /// Run as this user and group (uid, gid).
    pub run_as: Option<(u32, u32)>,
    /// Address-space limit in MiB (0: none).
    pub memory_limit_mb: u64,
}

/// Where a worker is in its life.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorkerState {
    /// Serves invocations.
    Ready,
    /// Dead, killed or out of protocol: serves nothing more. Why.
    Error(String),
}

/// A running worker.
#[derive(Debug)]
pub struct Worker {
    child: Child,
    stdin: ChildStdin,
    stdout: ChildStdout,
    next_id: u64,
    max_payload: usize,
    state: WorkerState,
    invocations: u64,
    /// Killed and reaped: its pid (and group id) may belong to another process now.
    reaped: bool,
    /// Stopped (`SIGSTOP` to its process group) until resumed.
    paused: bool,
}

impl Worker {
    /// Start `spec`'s program and wait up to `deadline` for it to announce itself.
    pub fn spawn(spec: &WorkerSpec, deadline: Duration) -> Result<Self, WorkerError> {
        let mut cmd = Command::new(&spec.program);
        cmd.args(&spec.args)
            .env_clear()
            .envs(spec.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            // Its own process group: a kill reaches whatever it started too.
            .process_group(0);
        if let Some(dir) = &spec.working_dir {
            cmd.current_dir(dir);
        }
        crate::confine(&mut cmd, spec.run_as, spec.memory_limit_mb);
        let mut child = cmd
            .spawn()
            .map_err(|e| WorkerError::Start(format!("{}: {e}", spec.program.display())))?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            kill_group(&mut child);
            return Err(WorkerError::Start("no pipes to the worker".into()));
        };
        // The worker exists from here: its drop kills and reaps it on every path below.
        let mut worker = Self {
            child,
            stdin,
            stdout,
            next_id: 1,
            max_payload: spec.max_payload,
            state: WorkerState::Ready,
            invocations: 0,
            reaped: false,
            paused: false,
        };
        for fd in [worker.stdin.as_raw_fd(), worker.stdout.as_raw_fd()] {
            nonblocking(fd).map_err(|e| WorkerError::Start(format!("pipes: {e}")))?;
        }
        let until = Instant::now() + deadline.min(FAR);
        let why = match worker
            .read_message(until, deadline)
            .and_then(|(header, payload)| hello(&header, &payload))
        {
            Ok(()) => return Ok(worker),
            Err(WorkerError::Deadline(d)) => {
                WorkerError::Protocol(format!("no hello within {d:?}"))
            }
            Err(e) => e,
        };
        // Killed and reaped first: a death shows its exit status.
        Err(WorkerError::Start(worker.fail(why).to_string()))
    }

    /// Where the worker is in its life.
    pub fn state(&self) -> &WorkerState {
        &self.state
    }

    /// Invocations answered (function errors included).
    pub fn invocations(&self) -> u64 {
        self.invocations
    }

    /// Stop the worker's process group (`pause`: `SIGSTOP`; it keeps its memory and uses no
    /// CPU), or let it go on (`SIGCONT`). Pausing a paused worker, or resuming a running one,
    /// does nothing.
    pub fn pause(&mut self, pause: bool) -> Result<(), WorkerError> {
        if let WorkerState::Error(why) = &self.state {
            return Err(WorkerError::Broken(why.clone()));
        }
        if self.paused == pause {
            return Ok(());
        }
        let pid = i32::try_from(self.child.id())
            .map_err(|_| WorkerError::Broken("the worker's pid is out of range".into()))?;
        let signal = if pause { libc::SIGSTOP } else { libc::SIGCONT };
        // SAFETY: a signal to the process group this worker leads (not reaped: the group is
        // still its own).
        if unsafe { libc::kill(-pid, signal) } != 0 {
            let e = std::io::Error::last_os_error();
            return Err(self.fail(WorkerError::Broken(format!(
                "cannot {} the worker: {e}",
                if pause { "pause" } else { "resume" }
            ))));
        }
        self.paused = pause;
        Ok(())
    }

    /// Whether the worker is paused.
    pub fn paused(&self) -> bool {
        self.paused
    }

    /// The worker's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Run `function` on `payload` within `deadline`.
    pub fn invoke(
        &mut self,
        function: &str,
        payload: &[u8],
        deadline: Duration,
    ) -> Result<Vec<u8>, WorkerError> {
        self.invoke_stream(function, payload, deadline, None)
    }

    /// [`invoke`](Self::invoke); with a `sink`, the request asks for pieces of output, each
    /// handed to `sink` as it comes (until it answers `false`), and the answer is the rest.
    pub fn invoke_stream(
        &mut self,
        function: &str,
        payload: &[u8],
        deadline: Duration,
        mut sink: Option<Sink<'_>>,
    ) -> Result<Vec<u8>, WorkerError> {
        if let WorkerState::Error(why) = &self.state {
            return Err(WorkerError::Broken(why.clone()));
        }
        // A paused worker would never answer: it is resumed first.
        if self.paused {
            self.pause(false)?;
        }
        let until = Instant::now() + deadline.min(FAR);
        let id = self.next_id;
        let stream = sink.is_some();
        let message = request(id, function, payload, self.max_payload, stream)?;
        self.next_id += 1;
        if let Err(e) = write_all(&mut self.stdin, &message, until, deadline) {
            return Err(self.fail(e));
        }
        let result = loop {
            let next = self
                .read_message(until, deadline)
                .and_then(|(header, body)| reply(id, &header, body, stream));
            match next {
                Ok(Reply::Piece(piece)) => {
                    if let Some(s) = sink.as_mut()
                        && !s(&piece)
                    {
                        sink = None;
                    }
                }
                Ok(Reply::Done(body)) => break Ok(body),
                Err(e) => break Err(e),
            }
        };
        match result {
            Ok(body) => {
                self.invocations += 1;
                Ok(body)
            }
            Err(e @ WorkerError::Function(_)) => {
                self.invocations += 1;
                Err(e)
            }
            Err(e) => Err(self.fail(e)),
        }
    }

    /// Put the worker in error for `e`, kill its process group and reap it, and hand `e` back
    /// (a death with the worker's exit status).
    fn fail(&mut self, e: WorkerError) -> WorkerError {
        let status = if self.reaped {
            None
        } else {
            self.reaped = true;
            kill_group(&mut self.child)
        };
        let e = match (e, status) {
            (WorkerError::Died(why), Some(status)) => {
                WorkerError::Died(format!("{why} ({status})"))
            }
            (other, _) => other,
        };
        self.state = WorkerState::Error(e.to_string());
        e
    }

    fn read_message(
        &mut self,
        until: Instant,
        deadline: Duration,
    ) -> Result<(Vec<u8>, Vec<u8>), WorkerError> {
        let header = self.read_frame(MAX_HEADER, until, deadline)?;
        let body = self.read_frame(self.max_payload, until, deadline)?;
        Ok((header, body))
    }

    fn read_frame(
        &mut self,
        max: usize,
        until: Instant,
        deadline: Duration,
    ) -> Result<Vec<u8>, WorkerError> {
        let mut len = [0u8; 4];
        read_exact(&mut self.stdout, &mut len, until, deadline)?;
        let len = u32::from_be_bytes(len) as usize;
        if len > max {
            return Err(WorkerError::Protocol(format!(
                "a frame of {len} bytes (at most {max} here)"
            )));
        }
        let mut frame = vec![0u8; len];
        read_exact(&mut self.stdout, &mut frame, until, deadline)?;
        Ok(frame)
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if !self.reaped {
            kill_group(&mut self.child);
        }
    }
}

/// SIGKILL `child`'s process group (it leads one: `process_group(0)`), then reap it; its exit
/// status, when it could be had.
fn kill_group(child: &mut Child) -> Option<std::process::ExitStatus> {
    // Its group may outlive it: what it started goes too.
    if let Ok(pid) = i32::try_from(child.id()) {
        // SAFETY: a signal to the process group this worker leads.
        unsafe { libc::kill(-pid, libc::SIGKILL) };
    }
    let _ = child.kill();
    child.wait().ok()
}

fn nonblocking(fd: i32) -> std::io::Result<()> {
    // SAFETY: fcntl on a descriptor this process owns, with flags it read from it.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Wait until `fd` is ready for `events` or `until` passes.
fn ready(fd: i32, events: i16, until: Instant, deadline: Duration) -> Result<(), WorkerError> {
    loop {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(WorkerError::Deadline(deadline));
        }
        let mut p = libc::pollfd {
            fd,
            events,
            revents: 0,
        };
        let ms = i32::try_from(left.as_millis().max(1)).unwrap_or(i32::MAX);
        // SAFETY: one pollfd that lives across the call.
        let n = unsafe { libc::poll(&mut p, 1, ms) };
        if n > 0 {
            return Ok(());
        }
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(WorkerError::Died(format!("poll: {e}")));
            }
        }
    }
}

fn read_exact(
    from: &mut ChildStdout,
    buf: &mut [u8],
    until: Instant,
    deadline: Duration,
) -> Result<(), WorkerError> {
    let mut done = 0;
    while done < buf.len() {
        match from.read(&mut buf[done..]) {
            Ok(0) => return Err(WorkerError::Died("it closed its output".into())),
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                ready(from.as_raw_fd(), libc::POLLIN, until, deadline)?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(WorkerError::Died(format!("reading its output: {e}"))),
        }
    }
    Ok(())
}

fn write_all(
    to: &mut ChildStdin,
    bytes: &[u8],
    until: Instant,
    deadline: Duration,
) -> Result<(), WorkerError> {
    let mut done = 0;
    while done < bytes.len() {
        match to.write(&bytes[done..]) {
            Ok(0) => return Err(WorkerError::Died("it closed its input".into())),
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                ready(to.as_raw_fd(), libc::POLLOUT, until, deadline)?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(WorkerError::Died(format!("writing its input: {e}"))),
        }
    }
    Ok(())
}
