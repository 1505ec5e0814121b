//! One thread that watches every running program: it reads their output, feeds their standard
//! input, learns of their exits (through a pidfd each, where the kernel has them) and enforces
//! their timeouts, all with `poll(2)`. So starting a program starts no thread; before, each
//! started four (two readers, a writer and a supervisor that polled for the exit).

use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::ExitStatusExt;
use std::process::Child;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use spear_plugin_api::executor::{ExecResult, ExitStatus};

use crate::{KILL_GRACE, Table, lock, signal_group};

/// Bytes read from one stream in one turn, so that a chatty program does not starve the others.
const TURN_BYTES: usize = 1024 * 1024;
/// How often exits are looked for without a pidfd (kernels before 5.3).
const NO_PIDFD_TICK: Duration = Duration::from_millis(2);

/// A program handed to the reactor.
pub(crate) struct Job {
    /// Its handle in the executor's table.
    pub handle: String,
    pub child: Child,
    pub stdin: Option<File>,
    pub stdout: Option<File>,
    pub stderr: Option<File>,
    /// What to write to its standard input.
    pub input: Vec<u8>,
    /// Output kept per stream.
    pub cap: usize,
    pub started: Instant,
    pub timeout: Option<Duration>,
}

/// A job as the reactor keeps it.
struct Watched {
    job: Job,
    pidfd: Option<OwnedFd>,
    written: usize,
    out: Captured,
    err: Captured,
    exit: Option<Option<std::process::ExitStatus>>,
    term_sent: Option<Instant>,
    kill_sent: bool,
    timed_out: bool,
}

#[derive(Default)]
struct Captured {
    kept: Vec<u8>,
    truncated: bool,
}

impl Captured {
    /// Read what `from` has now; false once it is closed (end of file or error).
    fn take(&mut self, from: &mut File, cap: usize, scratch: &mut [u8]) -> bool {
        let mut read = 0;
        while read < TURN_BYTES {
            match from.read(scratch) {
                Ok(0) => return false,
                Ok(n) => {
                    read += n;
                    let room = cap.saturating_sub(self.kept.len());
                    if n > room {
                        self.truncated = true;
                    }
                    self.kept.extend_from_slice(&scratch[..n.min(room)]);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
        true
    }
}

/// The reactor: jobs go in through [`Reactor::add`]; results come out in the executor's table.
pub(crate) struct Reactor {
    adds: Mutex<Vec<Job>>,
    wake: File,
    /// The executor is gone: end the thread once nothing is left to watch.
    closed: AtomicBool,
}

impl Reactor {
    /// Start the reactor thread, which stores results in `table`.
    pub fn start(table: Table) -> std::io::Result<Arc<Self>> {
        // SAFETY: eventfd(2) returns a new descriptor or -1; it is owned from here on.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor nobody else owns.
        let wake = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
        let me = Arc::new(Self {
            adds: Mutex::new(Vec::new()),
            wake,
            closed: AtomicBool::new(false),
        });
        let reactor = me.clone();
        std::thread::Builder::new()
            .name("spear-process-io".into())
            .spawn(move || reactor.run(table))?;
        Ok(me)
    }

    /// Watch `job` until it ends.
    pub fn add(&self, mut job: Job) {
        for f in [&job.stdin, &job.stdout, &job.stderr].into_iter().flatten() {
            set_nonblocking(f.as_raw_fd());
        }
        if job.input.is_empty() {
            job.stdin = None;
        }
        self.adds
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(job);
        let _ = (&self.wake).write(&1u64.to_ne_bytes());
    }

    /// The executor is dropped: the thread ends when its last program has.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        let _ = (&self.wake).write(&1u64.to_ne_bytes());
    }

    fn run(&self, table: Table) {
        let mut jobs: Vec<Watched> = Vec::new();
        let mut scratch = vec![0u8; 64 * 1024];
        let mut fds: Vec<libc::pollfd> = Vec::new();
        // For each entry of `fds` after the first: (job index, which descriptor).
        let mut owners: Vec<(usize, Which)> = Vec::new();
        loop {
            let added = std::mem::take(&mut *self.adds.lock().unwrap_or_else(|p| p.into_inner()));
            jobs.extend(added.into_iter().map(|job| Watched {
                pidfd: pidfd(job.child.id() as i32),
                job,
                written: 0,
                out: Captured::default(),
                err: Captured::default(),
                exit: None,
                term_sent: None,
                kill_sent: false,
                timed_out: false,
            }));
            if jobs.is_empty() && self.closed.load(Ordering::Acquire) {
                return;
            }
            fds.clear();
            owners.clear();
            fds.push(pollfd(self.wake.as_raw_fd(), libc::POLLIN));
            let now = Instant::now();
            let mut wait: Option<Duration> = None;
            let mut soonest = |d: Duration| wait = Some(wait.map_or(d, |w| w.min(d)));
            for (i, w) in jobs.iter().enumerate() {
                let j = &w.job;
                for (which, file, events) in [
                    (Which::Stdout, &j.stdout, libc::POLLIN),
                    (Which::Stderr, &j.stderr, libc::POLLIN),
                    (Which::Stdin, &j.stdin, libc::POLLOUT),
                ] {
                    if let Some(f) = file {
                        fds.push(pollfd(f.as_raw_fd(), events));
                        owners.push((i, which));
                    }
                }
                if w.exit.is_none() {
                    match &w.pidfd {
                        Some(p) => {
                            fds.push(pollfd(p.as_raw_fd(), libc::POLLIN));
                            owners.push((i, Which::Exit));
                        }
                        None => soonest(NO_PIDFD_TICK),
                    }
                }
                // A deadline only while it can still act: before the exit is seen, and until the
                // SIGKILL has gone (after it, the pidfd tells the end).
                if w.exit.is_none() && !w.kill_sent {
                    match (j.timeout, w.term_sent) {
                        (_, Some(at)) => soonest((at + KILL_GRACE).saturating_duration_since(now)),
                        (Some(limit), None) => {
                            soonest((j.started + limit).saturating_duration_since(now))
                        }
                        (None, None) => {}
                    }
                }
            }
            let ms = wait.map_or(-1, |d| d.as_micros().div_ceil(1000).min(60_000) as i32);
            // SAFETY: `fds` is a valid array of `fds.len()` pollfd entries.
            let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
            if n < 0 {
                if std::io::Error::last_os_error().kind() != ErrorKind::Interrupted {
                    // Not a signal (say ENOMEM): do not spin on it.
                    std::thread::sleep(NO_PIDFD_TICK);
                }
                continue;
            }
            if fds[0].revents != 0 {
                let mut buf = [0u8; 8];
                let _ = (&self.wake).read(&mut buf);
            }
            for (fd, &(i, which)) in fds[1..].iter().zip(&owners) {
                if fd.revents != 0 {
                    jobs[i].ready(which, &mut scratch);
                }
            }
            let now = Instant::now();
            for w in &mut jobs {
                if w.exit.is_none() && w.pidfd.is_none() {
                    w.ready(Which::Exit, &mut scratch);
                }
                w.enforce_timeout(now);
            }
            jobs.retain_mut(|w| !w.finish(&table));
        }
    }
}

/// Which of a job's descriptors is ready.
#[derive(Clone, Copy)]
enum Which {
    Stdout,
    Stderr,
    Stdin,
    Exit,
}

impl Watched {
    fn ready(&mut self, which: Which, scratch: &mut [u8]) {
        let j = &mut self.job;
        match which {
            Which::Stdout => {
                if let Some(f) = &mut j.stdout
                    && !self.out.take(f, j.cap, scratch)
                {
                    j.stdout = None;
                }
            }
            Which::Stderr => {
                if let Some(f) = &mut j.stderr
                    && !self.err.take(f, j.cap, scratch)
                {
                    j.stderr = None;
                }
            }
            Which::Stdin => {
                if let Some(f) = &mut j.stdin {
                    match f.write(&j.input[self.written..]) {
                        Ok(n) => self.written += n,
                        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                        Err(e) if e.kind() == ErrorKind::Interrupted => {}
                        // The program closed its input (or died): the rest is not wanted.
                        Err(_) => self.written = j.input.len(),
                    }
                    if self.written >= j.input.len() {
                        j.stdin = None;
                    }
                }
            }
            Which::Exit => {
                match j.child.try_wait() {
                    Ok(Some(status)) => self.exit = Some(Some(status)),
                    Ok(None) => {}
                    Err(_) => self.exit = Some(None),
                }
                if self.exit.is_some() && self.timed_out {
                    // Whatever of the group outlived it goes too (once, as the exit is seen).
                    signal_group(j.child.id() as i32, libc::SIGKILL);
                }
            }
        }
    }

    /// At the timeout the process group gets SIGTERM, and SIGKILL after the grace.
    fn enforce_timeout(&mut self, now: Instant) {
        let pid = self.job.child.id() as i32;
        if self.exit.is_some() {
            return;
        }
        match (self.job.timeout, self.term_sent) {
            (Some(limit), None) if now >= self.job.started + limit => {
                self.timed_out = true;
                signal_group(pid, libc::SIGTERM);
                self.term_sent = Some(now);
            }
            (_, Some(at)) if now >= at + KILL_GRACE && !self.kill_sent => {
                signal_group(pid, libc::SIGKILL);
                self.kill_sent = true;
            }
            _ => {}
        }
    }

    /// When the program has exited and its output is closed, store its result; true then.
    fn finish(&mut self, table: &Table) -> bool {
        let Some(exit) = self.exit else { return false };
        if self.job.stdout.is_some() || self.job.stderr.is_some() {
            return false;
        }
        let status = match exit {
            _ if self.timed_out => ExitStatus::TimedOut,
            Some(s) => match (s.code(), s.signal()) {
                (Some(code), _) => ExitStatus::Exited(code),
                (None, Some(sig)) => ExitStatus::Signaled(sig),
                _ => ExitStatus::Failed("unknown exit status".into()),
            },
            None => ExitStatus::Failed("lost track of the process".into()),
        };
        let result = ExecResult {
            status,
            stdout: std::mem::take(&mut self.out.kept),
            stderr: std::mem::take(&mut self.err.kept),
            stdout_truncated: self.out.truncated,
            stderr_truncated: self.err.truncated,
            duration_ms: self.job.started.elapsed().as_millis() as u64,
        };
        if let Some(p) = lock(table).get_mut(&self.job.handle) {
            p.result = Some(result);
        }
        table.1.notify_all();
        true
    }
}

fn pollfd(fd: RawFd, events: libc::c_short) -> libc::pollfd {
    libc::pollfd {
        fd,
        events,
        revents: 0,
    }
}

fn set_nonblocking(fd: RawFd) {
    // SAFETY: fcntl(2) on a descriptor this process owns.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags >= 0 {
            libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK);
        }
    }
}

/// A descriptor that becomes readable when process `pid` exits (Linux 5.3 and later).
#[cfg(target_os = "linux")]
fn pidfd(pid: i32) -> Option<OwnedFd> {
    // SAFETY: pidfd_open(2) returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    // SAFETY: a non-negative result is a fresh descriptor nobody else owns.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

#[cfg(not(target_os = "linux"))]
fn pidfd(_pid: i32) -> Option<OwnedFd> {
    None
}
