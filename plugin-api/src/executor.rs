//! The executor contract: runs workloads for a Spearlet.
//!
//! Modelled on Nomad's task-driver life cycle: `start`, `wait`, `signal`/`stop`, `inspect`, `stats`,
//! `recover` after an agent restart, `destroy`, and `capabilities`. Executors are native plugins and
//! may block: hosts call them off their async runtime.

use serde::{Deserialize, Serialize};

use crate::{PluginError, PluginInfo};

/// What to run and under which limits.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecSpec {
    /// Execution id assigned by SMS; also names the workload's handle.
    pub execution_id: String,
    /// Task name, for logs and labels.
    pub task: String,
    /// Local path of the artifact (WASM bytes, program, image tarball), already fetched by the host.
    pub artifact: Option<String>,
    /// Image (container), program (process) or entry name (wasm).
    pub entry: String,
    /// Arguments.
    pub args: Vec<String>,
    /// Environment variables.
    pub env: Vec<(String, String)>,
    /// Working directory.
    pub working_dir: Option<String>,
    /// Bytes fed to standard input.
    pub stdin: Vec<u8>,
    /// Wall-clock limit in milliseconds (0 = none).
    pub timeout_ms: u64,
    /// Memory limit in MiB (0 = none).
    pub memory_limit_mb: u64,
    /// CPU limit in thousandths of a core (0 = none).
    pub cpu_millis: u64,
    /// Whether the workload may use the network.
    pub network: bool,
    /// Bytes of stdout and of stderr kept; the rest is dropped and flagged.
    pub output_cap_bytes: u64,
}

/// How a workload ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExitStatus {
    /// Exited with this code.
    Exited(i32),
    /// Killed by this signal.
    Signaled(i32),
    /// Stopped at its timeout.
    TimedOut,
    /// Could not run at all.
    Failed(String),
}

/// The result of a finished workload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecResult {
    /// How it ended.
    pub status: ExitStatus,
    /// Captured standard output (up to the cap).
    pub stdout: Vec<u8>,
    /// Captured standard error (up to the cap).
    pub stderr: Vec<u8>,
    /// Standard output went past the cap.
    pub stdout_truncated: bool,
    /// Standard error went past the cap.
    pub stderr_truncated: bool,
    /// Wall time in milliseconds.
    pub duration_ms: u64,
}

/// Where a workload is in its life.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExecState {
    /// Still running.
    Running,
    /// Finished with this result.
    Finished(ExecResult),
    /// The executor knows no such handle.
    Unknown,
}

/// Resource use of a running workload.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecStats {
    /// Resident memory in bytes.
    pub memory_bytes: u64,
    /// CPU time used in microseconds.
    pub cpu_micros: u64,
}

/// What an executor can do.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capabilities {
    /// The executable type it runs (`wasm`, `process`, `container`).
    pub executable_type: String,
    /// It delivers arbitrary signals.
    pub signals: bool,
    /// It can re-attach to workloads after an agent restart.
    pub recover: bool,
    /// It enforces memory limits.
    pub memory_limit: bool,
    /// It enforces CPU limits.
    pub cpu_limit: bool,
    /// It can isolate the network.
    pub network_isolation: bool,
    /// It keeps long-lived instances that serve invocations one after another
    /// ([`Executor::start_instance`], [`Executor::invoke`], [`Executor::stop_instance`]).
    /// Absent in the JSON of an older plugin: `false`.
    #[serde(default)]
    pub instances: bool,
    /// It can pause an idle long-lived instance and resume it ([`Executor::pause_instance`]: a
    /// [`PAUSE_SIGNAL`] or [`RESUME_SIGNAL`] to the instance's handle): a paused instance keeps
    /// its memory and uses no CPU. Absent in the JSON of an older plugin: `false`.
    #[serde(default)]
    pub pause: bool,
}

/// A long-lived instance to start: a function component, or a worker process or container
/// speaking the worker protocol (docs/workers.md).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceSpec {
    /// The host's name for the instance (for logs and container names).
    pub instance_id: String,
    /// Task name, for logs and labels.
    pub task: String,
    /// Local path of the artifact, already fetched by the host.
    pub artifact: Option<String>,
    /// Image (container), program (process) or entry name (wasm).
    pub entry: String,
    /// Arguments.
    pub args: Vec<String>,
    /// Environment variables.
    pub env: Vec<(String, String)>,
    /// Working directory.
    pub working_dir: Option<String>,
    /// The task's configuration, a JSON object, given to the instance's `init`.
    pub config: String,
    /// Memory limit in MiB (0 = the executor's own limit).
    pub memory_limit_mb: u64,
    /// Time allowed to start and initialise, in milliseconds (0 = the executor's default).
    pub start_timeout_ms: u64,
    /// Largest payload the instance takes or gives, in bytes (0 = the executor's default).
    pub max_payload_bytes: u64,
}

/// Why an invocation on a live instance has no result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum InvokeFailure {
    /// The function answered an error; the instance stays ready.
    #[error("the function failed: {0}")]
    Function(String),
    /// Refused before it ran (a payload too large, a bad function name, the instance busy); the
    /// instance stays ready.
    #[error("{0}")]
    Refused(String),
    /// The invocation ran past its deadline; the instance is lost.
    #[error("{0}")]
    Deadline(String),
    /// The instance is lost (it trapped, died or broke the protocol, or the executor has no
    /// instance of that handle) and serves nothing more.
    #[error("{0}")]
    Lost(String),
}

impl InvokeFailure {
    /// Whether the instance serves no more invocations after this failure.
    pub fn instance_lost(&self) -> bool {
        matches!(self, Self::Deadline(_) | Self::Lost(_))
    }
}

/// Where the pieces of a streaming invocation's output go ([`Executor::invoke_stream`]): `false`
/// back means no more are wanted.
pub type Sink<'a> = &'a mut (dyn FnMut(&[u8]) -> bool + Send + Sync);

/// The signal that pauses a live instance ([`Executor::pause_instance`]): Linux's `SIGSTOP`.
pub const PAUSE_SIGNAL: i32 = 19;
/// The signal that resumes a paused live instance: Linux's `SIGCONT`.
pub const RESUME_SIGNAL: i32 = 18;

/// An executor plugin. Methods may block; every one must be safe to call from several threads.
pub trait Executor: Send + Sync + 'static {
    /// Describe the plugin.
    fn info(&self) -> PluginInfo;
    /// What this executor can do.
    fn capabilities(&self) -> Capabilities;
    /// Apply a JSON configuration (called before any workload starts).
    fn configure(&mut self, config: &str) -> Result<(), PluginError>;
    /// Start a workload; returns its handle.
    fn start(&self, spec: &ExecSpec) -> Result<String, PluginError>;
    /// Wait up to `timeout_ms` for the workload to finish; `None` if it is still running.
    fn wait(&self, handle: &str, timeout_ms: u64) -> Result<Option<ExecResult>, PluginError>;
    /// Deliver a signal.
    fn signal(&self, handle: &str, signal: i32) -> Result<(), PluginError>;
    /// Stop: a polite signal, then a forced kill after `grace_ms`.
    fn stop(&self, handle: &str, grace_ms: u64) -> Result<(), PluginError>;
    /// Where the workload is in its life.
    fn inspect(&self, handle: &str) -> Result<ExecState, PluginError>;
    /// Resource use of a running workload.
    fn stats(&self, handle: &str) -> Result<ExecStats, PluginError>;
    /// Re-attach to a workload started before an agent restart; `false` if it is gone.
    fn recover(&self, handle: &str) -> Result<bool, PluginError>;
    /// Release everything the workload holds.
    fn destroy(&self, handle: &str) -> Result<(), PluginError>;

    /// Start a long-lived instance (only when [`Capabilities::instances`]); returns its handle
    /// once it is ready to serve.
    fn start_instance(&self, spec: &InstanceSpec) -> Result<String, PluginError> {
        let _ = spec;
        Err(PluginError::new(format!(
            "the {} executor keeps no long-lived instances",
            self.info().name
        )))
    }

    /// Run `function` on `payload` in the instance `handle`, within `timeout_ms` (0 = none). An
    /// instance serves one invocation at a time: a host never calls it twice at once for one
    /// handle.
    fn invoke(
        &self,
        handle: &str,
        function: &str,
        payload: &[u8],
        timeout_ms: u64,
    ) -> Result<Vec<u8>, InvokeFailure> {
        let _ = (function, payload, timeout_ms);
        Err(InvokeFailure::Lost(format!("no instance {handle} here")))
    }

    /// [`invoke`](Self::invoke), handing the output to `sink` in pieces as the function makes
    /// them, and answering the rest (the output not handed to `sink`). `sink` answers `false`
    /// when its caller wants no more: the executor hands it nothing further, and the invocation
    /// runs to its end all the same. Provided: `invoke` (the whole output at the end, no piece).
    fn invoke_stream(
        &self,
        handle: &str,
        function: &str,
        payload: &[u8],
        timeout_ms: u64,
        sink: Sink<'_>,
    ) -> Result<Vec<u8>, InvokeFailure> {
        let _ = sink;
        self.invoke(handle, function, payload, timeout_ms)
    }

    /// Stop the instance `handle` and release what it holds (memory, process, container). A
    /// paused instance is stopped too.
    fn stop_instance(&self, handle: &str) -> Result<(), PluginError> {
        Err(PluginError::new(format!("no instance {handle} here")))
    }

    /// Pause the idle instance `handle` (`pause`: it keeps its memory and state and uses no CPU
    /// until resumed), or resume it (`!pause`). Only when [`Capabilities::pause`]. A host pauses
    /// only an instance serving nothing, and resumes it before its next invocation; pausing a
    /// paused instance, or resuming a running one, does nothing; an invocation of a paused
    /// instance resumes it first.
    ///
    /// Provided: [`signal`](Self::signal) of [`PAUSE_SIGNAL`] or [`RESUME_SIGNAL`] to the
    /// instance's handle, which is how a pausing executor is asked (so that the native ABI's
    /// executor table is unchanged: a plugin built against an earlier 2.x loads as before).
    fn pause_instance(&self, handle: &str, pause: bool) -> Result<(), PluginError> {
        self.signal(handle, if pause { PAUSE_SIGNAL } else { RESUME_SIGNAL })
    }
}
