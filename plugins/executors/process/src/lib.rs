//! `process`: runs a program as a child process in its own process group.
//!
//! - arguments, environment, working directory, standard input. A program sees none of the
//!   agent's environment but the variables the configuration allows (`env_allow`: `PATH`,
//!   `LANG`, `LC_ALL`, `TZ` unless it says otherwise), and its execution's own on top;
//! - optionally runs as another user (`run_as`, supplementary groups dropped), and gets default
//!   memory and time limits when its execution names none (`default_memory_mb`,
//!   `default_timeout_ms`); see [`isolation`];
//! - standard output and error captured up to `output_cap_bytes` each, the rest drained and
//!   discarded, and the result flagged as truncated (a chatty program cannot exhaust the agent);
//! - at `timeout_ms` the whole process group gets SIGTERM, then SIGKILL after a grace period, and the
//!   result says `TimedOut`; otherwise the exit code or the killing signal is reported;
//! - `memory_limit_mb` becomes an address-space rlimit (RLIMIT_AS) of the program;
//! - long-lived **workers** (`start_instance`, `invoke`, `stop_instance`): the program speaks the
//!   worker protocol of docs/workers.md and serves invocations one after another, with the same
//!   environment, user and memory limit as a program; see [`worker`];
//! - `stats` reads `/proc/<pid>`. Processes cannot be re-attached after an agent restart: their
//!   pipes died with the agent. A handle names the process (`<execution>@<pid>:<start time>`), so
//!   `recover` of a handle from a previous agent kills the process group it left behind (if that
//!   very process still runs) and answers false.

mod instances;
pub mod isolation;
mod reactor;
pub mod worker;

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use spear_plugin_api::executor::{
    Capabilities, ExecResult, ExecSpec, ExecState, ExecStats, InstanceSpec, InvokeFailure,
    PAUSE_SIGNAL, RESUME_SIGNAL,
};
use spear_plugin_api::{Executor, PluginError, PluginInfo, PluginKind, parse_config};

/// Grace between SIGTERM and SIGKILL at a timeout.
pub(crate) const KILL_GRACE: Duration = Duration::from_secs(2);
/// Output kept per stream when the spec sets no cap.
const DEFAULT_CAP: u64 = 16 * 1024 * 1024;

/// One running or finished program.
pub(crate) struct Proc {
    pid: i32,
    result: Option<ExecResult>,
}

pub(crate) type Table = Arc<(Mutex<HashMap<String, Proc>>, Condvar)>;

/// The process executor.
#[derive(Default)]
pub struct ProcessExecutor {
    table: Table,
    /// Watches every running program (started with the first; one, however many start at once).
    reactor: Mutex<Option<Arc<reactor::Reactor>>>,
    /// What programs may see of the agent.
    isolation: isolation::Isolation,
    /// Long-lived workers.
    workers: instances::Instances,
}

impl ProcessExecutor {
    fn reactor(&self) -> Result<Arc<reactor::Reactor>, PluginError> {
        let mut slot = self.reactor.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(r) = &*slot {
            return Ok(r.clone());
        }
        let r = reactor::Reactor::start(self.table.clone())
            .map_err(|e| PluginError::new(format!("cannot start the process watcher: {e}")))?;
        *slot = Some(r.clone());
        Ok(r)
    }
}

impl Drop for ProcessExecutor {
    fn drop(&mut self) {
        if let Some(r) = &*self.reactor.lock().unwrap_or_else(|p| p.into_inner()) {
            r.close();
        }
    }
}

impl std::fmt::Debug for ProcessExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ProcessExecutor")
    }
}

pub(crate) fn lock(table: &Table) -> MutexGuard<'_, HashMap<String, Proc>> {
    table.0.lock().unwrap_or_else(|p| p.into_inner())
}

/// The start time of process `pid` (field 22 of `/proc/<pid>/stat`), which tells a process from a
/// later one that reuses its pid.
fn start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(19)?
        .parse()
        .ok()
}

/// Run `cmd` as `run_as` (uid, gid; as root, std drops the supplementary groups before it
/// switches user) with an address-space limit of `memory_mb` MiB (0: none).
pub(crate) fn confine(cmd: &mut Command, run_as: Option<(u32, u32)>, memory_mb: u64) {
    if let Some((uid, gid)) = run_as {
        cmd.uid(uid).gid(gid);
    }
    if memory_mb > 0 {
        let bytes = memory_mb.saturating_mul(1024 * 1024) as libc::rlim_t;
        // SAFETY: setrlimit is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                let limit = libc::rlimit {
                    rlim_cur: bytes,
                    rlim_max: bytes,
                };
                if libc::setrlimit(libc::RLIMIT_AS, &limit) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
}

pub(crate) fn signal_group(pid: i32, signal: i32) {
    // SAFETY: kill(2) with a negative pid signals the process group the child leads.
    unsafe {
        libc::kill(-pid, signal);
    }
}

impl Executor for ProcessExecutor {
    fn info(&self) -> PluginInfo {
        PluginInfo {
            name: "process".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            kind: PluginKind::Executor,
            description:
                "Runs programs in their own process group, with output caps, timeouts and rlimits"
                    .into(),
            config_schema: r#"{"type":"object","additionalProperties":false,"properties":{"env_allow":{"type":"array","items":{"type":"string"}},"run_as":{"type":"string"},"default_memory_mb":{"type":"integer","minimum":0},"default_timeout_ms":{"type":"integer","minimum":0}}}"#.into(),
        }
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            executable_type: "process".into(),
            signals: true,
            recover: false,
            memory_limit: true,
            cpu_limit: false,
            network_isolation: false,
            instances: true,
            pause: true,
        }
    }

    fn configure(&mut self, config: &str) -> Result<(), PluginError> {
        let config = parse_config::<isolation::Config>(config)?;
        self.isolation = isolation::Isolation::resolve(config)?;
        Ok(())
    }

    fn start(&self, spec: &ExecSpec) -> Result<String, PluginError> {
        if spec.entry.is_empty() {
            return Err(PluginError::new(
                "invalid configuration: entry (the program) is empty",
            ));
        }
        let prefix = format!("{}@", spec.execution_id);
        if lock(&self.table).keys().any(|h| h.starts_with(&prefix)) {
            return Err(PluginError::new(format!(
                "execution {} is already running here",
                spec.execution_id
            )));
        }
        let iso = &self.isolation;
        let mut cmd = Command::new(&spec.entry);
        cmd.args(&spec.args)
            .env_clear()
            .envs(iso.env.iter().map(|(k, v)| (k, v)))
            .envs(spec.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        if let Some(dir) = &spec.working_dir {
            cmd.current_dir(dir);
        }
        if let (Some((uid, gid)), Some(dir)) = (iso.run_as, &spec.working_dir) {
            // The agent made the working directory private (its own): it becomes the user's.
            std::os::unix::fs::chown(dir, Some(uid), Some(gid)).map_err(|e| {
                PluginError::new(format!("cannot give {dir} to the run_as user: {e}"))
            })?;
        }
        confine(
            &mut cmd,
            iso.run_as,
            match spec.memory_limit_mb {
                0 => iso.default_memory_mb,
                mb => mb,
            },
        );
        let reactor = self.reactor()?;
        let started = Instant::now();
        let mut child = cmd
            .spawn()
            .map_err(|e| PluginError::new(format!("cannot start `{}`: {e}", spec.entry)))?;
        let pid = child.id() as i32;
        let cap = if spec.output_cap_bytes == 0 {
            DEFAULT_CAP
        } else {
            spec.output_cap_bytes
        };
        let handle = format!(
            "{}@{pid}:{}",
            spec.execution_id,
            start_time(pid).unwrap_or_default()
        );
        lock(&self.table).insert(handle.clone(), Proc { pid, result: None });
        reactor.add(reactor::Job {
            handle: handle.clone(),
            stdin: child.stdin.take().map(|f| OwnedFd::from(f).into()),
            stdout: child.stdout.take().map(|f| OwnedFd::from(f).into()),
            stderr: child.stderr.take().map(|f| OwnedFd::from(f).into()),
            child,
            input: spec.stdin.clone(),
            cap: usize::try_from(cap).unwrap_or(usize::MAX),
            started,
            timeout: Some(match spec.timeout_ms {
                0 => iso.default_timeout_ms,
                ms => ms,
            })
            .filter(|ms| *ms > 0)
            .map(Duration::from_millis),
        });
        Ok(handle)
    }

    fn wait(&self, handle: &str, timeout_ms: u64) -> Result<Option<ExecResult>, PluginError> {
        // Saturating: a timeout of u64::MAX ms waits "for ever", not an overflow panic.
        let deadline = Instant::now()
            .checked_add(Duration::from_millis(timeout_ms))
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(u64::from(u32::MAX)));
        let mut procs = lock(&self.table);
        loop {
            let p = procs
                .get(handle)
                .ok_or_else(|| PluginError::new(format!("no execution {handle} here")))?;
            if let Some(r) = &p.result {
                return Ok(Some(r.clone()));
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            procs = self
                .table
                .1
                .wait_timeout(procs, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    fn signal(&self, handle: &str, signal: i32) -> Result<(), PluginError> {
        let procs = lock(&self.table);
        let Some(p) = procs.get(handle) else {
            drop(procs);
            // A live instance is paused and resumed this way ([`Executor::pause_instance`]).
            return match signal {
                PAUSE_SIGNAL | RESUME_SIGNAL => self.workers.pause(handle, signal == PAUSE_SIGNAL),
                _ => Err(PluginError::new(format!("no execution {handle} here"))),
            };
        };
        if p.result.is_none() {
            signal_group(p.pid, signal);
        }
        Ok(())
    }

    fn stop(&self, handle: &str, grace_ms: u64) -> Result<(), PluginError> {
        self.signal(handle, libc::SIGTERM)?;
        if self.wait(handle, grace_ms)?.is_none() {
            self.signal(handle, libc::SIGKILL)?;
            self.wait(handle, 5_000)?;
        }
        Ok(())
    }

    fn inspect(&self, handle: &str) -> Result<ExecState, PluginError> {
        Ok(match lock(&self.table).get(handle) {
            None => ExecState::Unknown,
            Some(Proc {
                result: Some(r), ..
            }) => ExecState::Finished(r.clone()),
            Some(_) => ExecState::Running,
        })
    }

    fn stats(&self, handle: &str) -> Result<ExecStats, PluginError> {
        let pid = lock(&self.table)
            .get(handle)
            .map(|p| p.pid)
            .ok_or_else(|| PluginError::new(format!("no execution {handle} here")))?;
        let page = 4096u64;
        let rss = std::fs::read_to_string(format!("/proc/{pid}/statm"))
            .ok()
            .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
            .unwrap_or(0)
            * page;
        // utime and stime are fields 14 and 15 of /proc/pid/stat, in clock ticks (100 Hz).
        let cpu = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| {
                let rest = s.rsplit_once(')')?.1;
                let f: Vec<&str> = rest.split_whitespace().collect();
                Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
            })
            .unwrap_or(0)
            * 10_000;
        Ok(ExecStats {
            memory_bytes: rss,
            cpu_micros: cpu,
        })
    }

    fn recover(&self, handle: &str) -> Result<bool, PluginError> {
        if lock(&self.table).contains_key(handle) {
            return Ok(true);
        }
        // A handle of a previous agent: kill what it left, if that very process still runs.
        let parsed = handle.rsplit_once('@').and_then(|(_, p)| {
            let (pid, start) = p.split_once(':')?;
            Some((pid.parse::<i32>().ok()?, start.parse::<u64>().ok()?))
        });
        if let Some((pid, start)) = parsed
            && pid > 1
            && start_time(pid) == Some(start)
        {
            signal_group(pid, libc::SIGKILL);
        }
        Ok(false)
    }

    fn destroy(&self, handle: &str) -> Result<(), PluginError> {
        let p = lock(&self.table).remove(handle);
        if let Some(p) = p
            && p.result.is_none()
        {
            signal_group(p.pid, libc::SIGKILL);
        }
        Ok(())
    }

    fn start_instance(&self, spec: &InstanceSpec) -> Result<String, PluginError> {
        self.workers.start(spec, &self.isolation)
    }

    fn invoke(
        &self,
        handle: &str,
        function: &str,
        payload: &[u8],
        timeout_ms: u64,
    ) -> Result<Vec<u8>, InvokeFailure> {
        self.workers
            .invoke(handle, function, payload, timeout_ms, None)
    }

    fn invoke_stream(
        &self,
        handle: &str,
        function: &str,
        payload: &[u8],
        timeout_ms: u64,
        sink: spear_plugin_api::executor::Sink<'_>,
    ) -> Result<Vec<u8>, InvokeFailure> {
        self.workers
            .invoke(handle, function, payload, timeout_ms, Some(sink))
    }

    fn stop_instance(&self, handle: &str) -> Result<(), PluginError> {
        self.workers.stop(handle)
    }
}

#[cfg(feature = "native-plugin")]
spear_plugin_api::export_native_executor!(ProcessExecutor);

/// This plugin as a built-in of a host that links this crate (no library file; see
/// `spear_plugin_api::native_module!`).
#[cfg(not(target_family = "wasm"))]
pub fn native_module() -> spear_plugin_api::native::SpearPluginModuleRef {
    spear_plugin_api::native_module!(executor, ProcessExecutor)
}
