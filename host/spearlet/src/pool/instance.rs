//! One task instance and what is handed out with it.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;
use spear_plugin_api::{Executor, InstanceStats, Label, Resources, Target};

use super::Phase;

/// A live instance's runtime: its handle in the executor that keeps it.
#[derive(Clone)]
pub struct Runtime {
    /// The executor keeping it.
    pub executor: Arc<dyn Executor>,
    /// Its handle there.
    pub handle: String,
    /// Its private working directory (a worker's), removed when the last copy of the runtime
    /// goes, after the runtime is stopped.
    pub workdir: Option<Arc<crate::workdir::WorkDir>>,
    /// Its executor can pause it ([`Executor::pause_instance`]).
    pub pausable: bool,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("handle", &self.handle)
            .finish_non_exhaustive()
    }
}

impl Runtime {
    /// Stop it in its executor (blocking: a plugin call). One the executor dropped already (it
    /// trapped or died) is gone: nothing to do.
    pub fn stop(&self) {
        if let Err(e) = self.executor.stop_instance(&self.handle) {
            tracing::debug!(handle = %self.handle, error = %e, "instance stop");
        }
    }

    /// Pause it in its executor, or resume it (blocking: a plugin call).
    pub fn pause(&self, pause: bool) -> Result<(), spear_plugin_api::PluginError> {
        self.executor.pause_instance(&self.handle, pause)
    }
}

/// Which tier served an invocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    /// A recently used Ready instance.
    Hot,
    /// An older Ready instance.
    Warm,
    /// A new instance.
    Cold,
}

/// One task instance.
#[derive(Debug, Clone, Serialize)]
pub struct Instance {
    /// Id, unique on this node.
    pub id: u64,
    /// The task key (task id, or the artifact of an inline executable).
    pub task: String,
    /// Executable type.
    pub executor: String,
    /// The local artifact, when the executable has one.
    pub artifact: Option<PathBuf>,
    /// Where it is in its life (in JSON: `state`, and what the state carries).
    #[serde(flatten)]
    pub state: Phase,
    /// Invocations over its life.
    pub invocations: u64,
    /// Failed invocations over its life.
    pub errors: u64,
    /// Resident memory of its last invocation, in bytes.
    pub memory_bytes: u64,
    /// Its live runtime in its executor, when it has one (an instance serving invocations);
    /// an instance of one-shot executions has none.
    #[serde(skip)]
    pub(super) runtime: Option<Runtime>,
    #[serde(skip)]
    pub(super) created: Instant,
    #[serde(skip)]
    pub(super) last_used: Instant,
    #[serde(skip)]
    pub(super) recent: VecDeque<bool>,
    /// Its executor was swapped out while it was being paused: the pause round stops it.
    #[serde(skip)]
    pub(super) retire: bool,
}

impl Instance {
    pub(super) fn stats(&self, now: Instant) -> InstanceStats {
        InstanceStats {
            id: self.id,
            task: self.task.clone(),
            state: self.state.for_plugins(),
            idle_ms: now.duration_since(self.last_used).as_millis() as u64,
            age_ms: now.duration_since(self.created).as_millis() as u64,
            memory_bytes: self.memory_bytes,
            invocations: self.invocations,
            errors: self.errors,
            recent_errors: self.recent.iter().filter(|ok| !**ok).count() as u32,
            recent_invocations: self.recent.len() as u32,
        }
    }

    pub(super) fn target(&self) -> Target {
        let one = Resources {
            cpu_millis: 1000,
            memory_mb: 0,
            disk_mb: 0,
        };
        Target {
            id: self.id,
            name: format!("{}#{}", self.task, self.id),
            labels: vec![task_label(&self.task)],
            capacity: one,
            available: one,
            active: u32::from(self.state.is_busy()),
            weight: 1,
            healthy: self.state == Phase::Ready,
        }
    }
}

pub(super) fn task_label(task: &str) -> Label {
    Label::new("task", task)
}

/// An instance taken for one invocation; give it back with [`Pools::release`].
#[derive(Debug)]
pub struct Lease {
    /// The instance id.
    pub id: u64,
    /// The instance's artifact.
    pub artifact: Option<PathBuf>,
    /// The tier that served it.
    pub tier: Tier,
    /// The instance's live runtime, when it has one.
    pub runtime: Option<Runtime>,
    /// It was Paused when taken: resume it before invoking it.
    pub resume: bool,
}

/// Counts for status pages.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Counters {
    /// Invocations served by a hot instance.
    pub hot: u64,
    /// Invocations served by a warm instance.
    pub warm: u64,
    /// Invocations that needed a new instance.
    pub cold: u64,
    /// Instances stopped by the reclamation policy.
    pub reclaimed: u64,
    /// Instances removed to keep the node under `spearlet.limits.max_instances`.
    pub evicted: u64,
    /// Instances started ahead of invocations (a task's `spear.min_instances`, or a warm-up).
    pub warmed: u64,
    /// Idle instances paused (`spearlet.functions.pause_idle_ms`).
    pub paused: u64,
    /// Paused instances taken by an invocation (and resumed).
    pub resumed: u64,
}
