//! An instance of a component of the `executor` world, usable through the plain
//! [`api::Executor`] trait (without long-lived instances).
//!
//! The guest never blocks: `start` answers a handle at once and `inspect` says where the work is.
//! [`api::Executor::wait`] is the host asking `inspect` until the work finishes or the wait's
//! time is up, sleeping between asks (0.1 ms at first, doubling to 20 ms) unless an answer to one
//! of the instance's HTTP requests comes first. What the guest answers
//! is bounded before it is believed: a handle is at most [`MAX_HANDLE`] bytes, and a result's
//! output is cut to the cap its `start` asked for.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use spear_plugin_api as api;
use spear_plugin_api::executor::{
    Capabilities, ExecResult, ExecSpec, ExecState, ExecStats, ExitStatus,
};

use super::access::Activity;
use super::executor_world::Executor as Bindings;
use super::executor_world::exports::spear::plugin::runner as wit;
use super::held::Held;
use super::{ComponentFactory, Pre, classify};
use crate::error::CallFailure;
use crate::instance::CallResult;
use crate::limits::Budget;

/// The longest handle a guest may answer, in bytes.
pub const MAX_HANDLE: usize = 256;

/// Handles whose output cap the host remembers at once (the work it started and has not
/// destroyed); past it, `start` is refused.
const MAX_LIVE: usize = 65_536;

/// An executor running as a component instance.
pub struct ComponentExecutor {
    held: Held<Bindings>,
    /// Told when an answer to one of the instance's requests comes (`wait` sleeps on it).
    activity: Arc<Activity>,
    /// `capabilities`, asked once.
    capabilities: OnceLock<Capabilities>,
    /// The output cap of each live handle, from its `start`.
    caps: Mutex<HashMap<String, u64>>,
}

impl ComponentFactory {
    /// A fresh executor instance (unconfigured).
    pub fn executor(&self, plugin: &str) -> CallResult<ComponentExecutor> {
        let Pre::Executor(pre) = &self.pre else {
            return Err(CallFailure::Invalid("not an executor".into()));
        };
        let mut store = self.store(plugin)?;
        let bindings = pre
            .instantiate(&mut store)
            .map_err(|e| classify(e, &store, &self.limits, Budget::Setup))?;
        let activity = store.data().access.activity();
        Ok(ComponentExecutor {
            held: Held::new(plugin, "executor", self.guest(store), bindings),
            activity,
            capabilities: OnceLock::new(),
            caps: Mutex::new(HashMap::new()),
        })
    }
}

/// A failure as the trait's error: the plugin's own as it wrote it, anything else described.
fn error(failure: CallFailure) -> api::PluginError {
    match failure {
        CallFailure::Plugin(text) => api::PluginError(text),
        other => api::PluginError(other.to_string()),
    }
}

fn spec_to_wit(s: &ExecSpec) -> wit::ExecSpec {
    wit::ExecSpec {
        execution_id: s.execution_id.clone(),
        task: s.task.clone(),
        artifact: s.artifact.clone(),
        entry: s.entry.clone(),
        args: s.args.clone(),
        env: s
            .env
            .iter()
            .map(|(name, value)| wit::EnvVar {
                name: name.clone(),
                value: value.clone(),
            })
            .collect(),
        working_dir: s.working_dir.clone(),
        stdin: s.stdin.clone(),
        timeout_ms: s.timeout_ms,
        memory_limit_mb: s.memory_limit_mb,
        cpu_millis: s.cpu_millis,
        network: s.network,
        output_cap_bytes: s.output_cap_bytes,
    }
}

/// The guest's result, its output cut to `cap` bytes (0: no cap).
fn result_from_wit(r: wit::ExecResult, cap: u64) -> ExecResult {
    let cut = |mut bytes: Vec<u8>, truncated: bool| {
        let cap = usize::try_from(cap).unwrap_or(usize::MAX);
        if cap > 0 && bytes.len() > cap {
            bytes.truncate(cap);
            (bytes, true)
        } else {
            (bytes, truncated)
        }
    };
    let (stdout, stdout_truncated) = cut(r.stdout, r.stdout_truncated);
    let (stderr, stderr_truncated) = cut(r.stderr, r.stderr_truncated);
    ExecResult {
        status: match r.status {
            wit::ExitStatus::Exited(code) => ExitStatus::Exited(code),
            wit::ExitStatus::Signaled(signal) => ExitStatus::Signaled(signal),
            wit::ExitStatus::TimedOut => ExitStatus::TimedOut,
            wit::ExitStatus::Failed(why) => ExitStatus::Failed(why),
        },
        stdout,
        stderr,
        stdout_truncated,
        stderr_truncated,
        duration_ms: r.duration_ms,
    }
}

impl ComponentExecutor {
    /// One guest call to the runner interface.
    fn call<R>(
        &self,
        f: impl FnOnce(&wit::Guest, &mut wasmtime::Store<super::GuestState>) -> wasmtime::Result<R>,
    ) -> CallResult<R> {
        self.held.call(|b, s| f(b.spear_plugin_runner(), s))
    }

    /// A call whose answer is a `result<T, string>`.
    fn ask<R>(
        &self,
        f: impl FnOnce(
            &wit::Guest,
            &mut wasmtime::Store<super::GuestState>,
        ) -> wasmtime::Result<Result<R, String>>,
    ) -> Result<R, api::PluginError> {
        self.call(f)
            .and_then(|r| r.map_err(CallFailure::Plugin))
            .map_err(error)
    }

    /// The plugin's `info`, or why the call failed (the self-test at load).
    pub fn describe(&self) -> CallResult<api::PluginInfo> {
        self.held.describe(api::PluginKind::Executor, |b, s| {
            b.spear_plugin_runner().call_info(s)
        })
    }

    fn caps(&self) -> std::sync::MutexGuard<'_, HashMap<String, u64>> {
        self.caps.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl api::Executor for ComponentExecutor {
    fn info(&self) -> api::PluginInfo {
        self.held
            .info_or_why(self.describe(), api::PluginKind::Executor)
    }

    fn capabilities(&self) -> Capabilities {
        self.capabilities
            .get_or_init(|| match self.call(|b, s| b.call_capabilities(s)) {
                Ok(c) => Capabilities {
                    executable_type: c.executable_type,
                    signals: c.signals,
                    recover: c.recover,
                    memory_limit: c.memory_limit,
                    cpu_limit: c.cpu_limit,
                    network_isolation: c.network_isolation,
                    instances: false,
                    pause: false,
                },
                Err(e) => {
                    tracing::warn!(
                        plugin = %self.held.plugin,
                        "the executor plugin's capabilities call failed ({e}): it runs nothing"
                    );
                    Capabilities::default()
                }
            })
            .clone()
    }

    fn configure(&mut self, config: &str) -> Result<(), api::PluginError> {
        self.ask(|b, s| b.call_configure(s, config))
    }

    fn start(&self, spec: &ExecSpec) -> Result<String, api::PluginError> {
        if self.caps().len() >= MAX_LIVE {
            return Err(api::PluginError(format!(
                "executor plugin `{}`: {MAX_LIVE} executions not yet destroyed",
                self.held.plugin
            )));
        }
        let wit_spec = spec_to_wit(spec);
        let handle = self.ask(|b, s| b.call_start(s, &wit_spec))?;
        if handle.is_empty() || handle.len() > MAX_HANDLE {
            return Err(self.held.invalid(
                "start",
                format!("a handle of {} bytes (1 to {MAX_HANDLE})", handle.len()),
            ));
        }
        self.caps().insert(handle.clone(), spec.output_cap_bytes);
        Ok(handle)
    }

    fn wait(&self, handle: &str, timeout_ms: u64) -> Result<Option<ExecResult>, api::PluginError> {
        let deadline = Instant::now() + Duration::from_millis(timeout_ms);
        let mut pause = Duration::from_micros(100);
        loop {
            // Taken before asking: an answer that comes after the guest said `running` ends
            // the sleep below at once.
            let seen = self.activity.seen();
            match self.inspect(handle)? {
                ExecState::Finished(result) => return Ok(Some(result)),
                ExecState::Unknown => {
                    return Err(api::PluginError(format!("no execution {handle} here")));
                }
                ExecState::Running => {}
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            self.activity.wait_past(seen, pause.min(deadline - now));
            pause = (pause * 2).min(Duration::from_millis(20));
        }
    }

    fn signal(&self, handle: &str, signal: i32) -> Result<(), api::PluginError> {
        self.ask(|b, s| b.call_signal(s, handle, signal))
    }

    fn stop(&self, handle: &str, grace_ms: u64) -> Result<(), api::PluginError> {
        self.ask(|b, s| b.call_stop(s, handle, grace_ms))
    }

    fn inspect(&self, handle: &str) -> Result<ExecState, api::PluginError> {
        let state = self.ask(|b, s| b.call_inspect(s, handle))?;
        Ok(match state {
            wit::ExecState::Running => ExecState::Running,
            wit::ExecState::Unknown => ExecState::Unknown,
            wit::ExecState::Finished(r) => {
                let cap = self.caps().get(handle).copied().unwrap_or(0);
                ExecState::Finished(result_from_wit(r, cap))
            }
        })
    }

    fn stats(&self, handle: &str) -> Result<ExecStats, api::PluginError> {
        let st = self.ask(|b, s| b.call_stats(s, handle))?;
        Ok(ExecStats {
            memory_bytes: st.memory_bytes,
            cpu_micros: st.cpu_micros,
        })
    }

    fn recover(&self, handle: &str) -> Result<bool, api::PluginError> {
        self.ask(|b, s| b.call_recover(s, handle))
    }

    fn destroy(&self, handle: &str) -> Result<(), api::PluginError> {
        let destroyed = self.ask(|b, s| b.call_destroy(s, handle));
        self.caps().remove(handle);
        destroyed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_result_is_cut_to_the_cap_its_start_asked_for() {
        let r = |out: &[u8]| wit::ExecResult {
            status: wit::ExitStatus::Exited(0),
            stdout: out.to_vec(),
            stderr: b"e".to_vec(),
            stdout_truncated: false,
            stderr_truncated: false,
            duration_ms: 1,
        };
        let cut = result_from_wit(r(b"0123456789"), 4);
        assert_eq!(
            (cut.stdout.as_slice(), cut.stdout_truncated),
            (&b"0123"[..], true)
        );
        assert_eq!(
            (cut.stderr.as_slice(), cut.stderr_truncated),
            (&b"e"[..], false)
        );
        let uncapped = result_from_wit(r(b"0123456789"), 0);
        assert_eq!(uncapped.stdout.len(), 10);
        assert!(!uncapped.stdout_truncated);
    }
}
