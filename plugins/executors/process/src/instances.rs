//! The executor's long-lived instances: worker processes ([`crate::worker`]) started by
//! `start_instance`, invoked by `invoke`, killed by `stop_instance`.
//!
//! A worker gets what a program of the executor gets (the allowed environment, `run_as`, the
//! memory limit) and serves one invocation at a time: an invocation takes it out of the table and
//! puts it back after, so a stop never waits for an invocation, and a second invocation of a
//! busy worker is refused. A worker that dies, breaks the protocol or misses a deadline is
//! dropped (killed and reaped): its instance is lost, and the host starts another.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use spear_plugin_api::PluginError;
use spear_plugin_api::executor::{InstanceSpec, InvokeFailure};
use spear_plugin_api::slots::Slots;
use spear_plugin_api::worker::Sink;

use crate::isolation::Isolation;
use crate::worker::{Worker, WorkerSpec, WorkerState};

/// Time allowed for a worker's hello when the spec gives none.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest payload, each way, when the spec gives none.
const DEFAULT_MAX_PAYLOAD: u64 = 16 << 20;
/// Largest payload a spec may ask for.
const MAX_PAYLOAD: u64 = 256 << 20;
/// A deadline far enough to mean "none".
const NO_DEADLINE: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// The executor's workers.
#[derive(Default)]
pub(crate) struct Instances {
    workers: Slots<Worker>,
    next: AtomicU64,
}

impl Instances {
    /// Start `spec`'s program as a worker and wait for its hello; its handle.
    pub(crate) fn start(
        &self,
        spec: &InstanceSpec,
        iso: &Isolation,
    ) -> Result<String, PluginError> {
        if spec.entry.is_empty() {
            return Err(PluginError::new(
                "invalid configuration: entry (the worker program) is empty",
            ));
        }
        if spec.max_payload_bytes > MAX_PAYLOAD {
            return Err(PluginError::new(format!(
                "invalid configuration: max_payload_bytes {} is over {MAX_PAYLOAD}",
                spec.max_payload_bytes
            )));
        }
        if let (Some((uid, gid)), Some(dir)) = (iso.run_as, &spec.working_dir) {
            // The host made the directory private (its own): it becomes the user's.
            std::os::unix::fs::chown(dir, Some(uid), Some(gid)).map_err(|e| {
                PluginError::new(format!("cannot give {dir} to the run_as user: {e}"))
            })?;
        }
        let mut env = iso.env.clone();
        env.extend(spec.env.iter().map(|(k, v)| (k.clone(), v.into())));
        let worker_spec = WorkerSpec {
            program: PathBuf::from(&spec.entry),
            args: spec.args.clone(),
            env,
            working_dir: spec.working_dir.as_ref().map(PathBuf::from),
            max_payload: usize::try_from(match spec.max_payload_bytes {
                0 => DEFAULT_MAX_PAYLOAD,
                n => n,
            })
            .unwrap_or(usize::MAX),
            run_as: iso.run_as,
            memory_limit_mb: match spec.memory_limit_mb {
                0 => iso.default_memory_mb,
                mb => mb,
            },
        };
        let deadline = match spec.start_timeout_ms {
            0 => START_TIMEOUT,
            ms => Duration::from_millis(ms),
        };
        let worker = Worker::spawn(&worker_spec, deadline).map_err(PluginError::new)?;
        let handle = format!(
            "worker-{}-{}@{}",
            self.next.fetch_add(1, Ordering::Relaxed),
            spec.instance_id,
            worker.pid()
        );
        self.workers.insert(handle.clone(), worker);
        Ok(handle)
    }

    /// Run `function` on `payload` in worker `handle`.
    /// With a `sink`, pieces of output go to it as they come.
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
        // A worker lost is killed and reaped when dropped, outside the table's lock.
        self.workers
            .invoke(
                handle,
                |w| w.invoke_stream(function, payload, deadline, sink),
                |w| matches!(w.state(), WorkerState::Error(_)),
            )?
            .map_err(InvokeFailure::from)
    }

    /// Pause worker `handle` (or resume it): refused while it serves an invocation.
    pub(crate) fn pause(&self, handle: &str, pause: bool) -> Result<(), PluginError> {
        self.workers
            .invoke(
                handle,
                |w| w.pause(pause),
                |w| matches!(w.state(), WorkerState::Error(_)),
            )
            .map_err(|f| PluginError::new(f.to_string()))?
            .map_err(|e| PluginError::new(e.to_string()))
    }

    /// Kill worker `handle` (at once when idle, after its invocation when busy).
    pub(crate) fn stop(&self, handle: &str) -> Result<(), PluginError> {
        self.workers.stop(handle)
    }
}

#[cfg(test)]
mod tests {
    /// Hosts ask for a pause with `signal` ([`spear_plugin_api::Executor::pause_instance`]): its
    /// numbers must be this system's `SIGSTOP` and `SIGCONT`.
    #[test]
    fn the_pause_signals_are_this_systems_stop_and_cont() {
        assert_eq!(spear_plugin_api::executor::PAUSE_SIGNAL, libc::SIGSTOP);
        assert_eq!(spear_plugin_api::executor::RESUME_SIGNAL, libc::SIGCONT);
    }
}
