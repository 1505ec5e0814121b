//! Plain data exchanged with plugins. Each type mirrors the WIT record of the same name in
//! `wit/types.wit`; the component, Extism and native loaders convert to and from these.

use serde::{Deserialize, Serialize};

/// A key/value label on a target or a request.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Label {
    /// Label key, e.g. `zone`.
    pub key: String,
    /// Label value, e.g. `eu-1`.
    pub value: String,
}

impl Label {
    /// Build a label.
    pub fn new(key: impl Into<String>, value: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            value: value.into(),
        }
    }
}

/// Amounts of the resources a scheduler reasons about.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Resources {
    /// CPU in thousandths of a core.
    pub cpu_millis: u64,
    /// Memory in MiB.
    pub memory_mb: u64,
    /// Disk in MiB.
    pub disk_mb: u64,
}

impl Resources {
    /// True when `self` (what is available) covers `needs` in every dimension.
    pub fn covers(&self, needs: &Resources) -> bool {
        self.cpu_millis >= needs.cpu_millis
            && self.memory_mb >= needs.memory_mb
            && self.disk_mb >= needs.disk_mb
    }

    /// `self - other`, saturating at zero in each dimension.
    pub fn saturating_sub(&self, other: &Resources) -> Resources {
        Resources {
            cpu_millis: self.cpu_millis.saturating_sub(other.cpu_millis),
            memory_mb: self.memory_mb.saturating_sub(other.memory_mb),
            disk_mb: self.disk_mb.saturating_sub(other.disk_mb),
        }
    }
}

/// Something a strategy can place work on: a node in SMS, a task instance in a Spearlet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    /// Host-assigned id, stable for the target's life.
    pub id: u64,
    /// Human-readable name, for logs only.
    pub name: String,
    /// Labels of the target.
    pub labels: Vec<Label>,
    /// Total resources.
    pub capacity: Resources,
    /// Resources not yet claimed.
    pub available: Resources,
    /// Work currently running on the target.
    pub active: u32,
    /// Relative weight (1 when unset).
    pub weight: u32,
    /// Whether the host considers the target usable.
    pub healthy: bool,
}

impl Target {
    /// True when the target carries a label with this key and value.
    pub fn has_label(&self, label: &Label) -> bool {
        self.labels.iter().any(|l| l == label)
    }
}

/// One unit of work to place.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// Host-assigned id, echoed in outcomes.
    pub id: u64,
    /// The task this work belongs to.
    pub task: String,
    /// Labels of the task itself.
    pub labels: Vec<Label>,
    /// Resources the work needs on its target.
    pub needs: Resources,
    /// Hard affinity: the target must carry all of these.
    pub required: Vec<Label>,
    /// Soft affinity: targets carrying more of these are preferred.
    pub preferred: Vec<Label>,
}

/// The answer for one request.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Decision {
    /// Place on the target with this id.
    Assign(u64),
    /// No acceptable target, with the reason.
    Reject(String),
}

/// What happened to placed work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    /// The request id.
    pub request: u64,
    /// The target it ran on.
    pub target: u64,
    /// Whether it succeeded.
    pub success: bool,
    /// Dispatch-to-result wall time in microseconds.
    pub latency_us: u64,
}

/// The kinds of plugin the hosts load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PluginKind {
    /// Picks a target per request (SMS: a node; Spearlet: an instance).
    SchedulingStrategy,
    /// Picks instances to stop (Spearlet).
    ReclamationPolicy,
    /// Runs workloads (Spearlet).
    Executor,
    /// Durable key-value state (SMS, Spearlet).
    StorageBackend,
    /// Decides the size of the node pool (SMS).
    Autoscaler,
}

impl PluginKind {
    /// The kebab-case name used in configs, APIs and logs.
    pub fn as_str(&self) -> &'static str {
        match self {
            PluginKind::SchedulingStrategy => "scheduling-strategy",
            PluginKind::ReclamationPolicy => "reclamation-policy",
            PluginKind::Executor => "executor",
            PluginKind::StorageBackend => "storage-backend",
            PluginKind::Autoscaler => "autoscaler",
        }
    }
}

impl std::fmt::Display for PluginKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A plugin's description of itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginInfo {
    /// Unique name within its kind; what configs select.
    pub name: String,
    /// Semantic version of the plugin.
    pub version: String,
    /// What the plugin is.
    pub kind: PluginKind,
    /// One line for operators.
    pub description: String,
    /// JSON Schema of the accepted configuration (`{}` when none).
    pub config_schema: String,
}

/// The state of a task instance (Spearlet instance state machine).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum InstanceState {
    /// Being created.
    Initializing,
    /// Idle and able to take an invocation.
    Ready,
    /// Running an invocation.
    Executing,
    /// Failed; should be replaced.
    Error,
    /// Being stopped.
    Terminating,
    /// Stopped.
    Terminated,
}

/// Figures about one task instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceStats {
    /// Host-assigned instance id.
    pub id: u64,
    /// The task it belongs to.
    pub task: String,
    /// Current state.
    pub state: InstanceState,
    /// Milliseconds since it last finished an invocation (or started).
    pub idle_ms: u64,
    /// Milliseconds since it was created.
    pub age_ms: u64,
    /// Resident memory in bytes.
    pub memory_bytes: u64,
    /// Invocations over its life.
    pub invocations: u64,
    /// Failed invocations over its life.
    pub errors: u64,
    /// Failed invocations in the host's recent window.
    pub recent_errors: u32,
    /// Invocations in the host's recent window.
    pub recent_invocations: u32,
}

/// Figures about the node the instances run on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodePressure {
    /// Total memory in bytes.
    pub memory_total_bytes: u64,
    /// Used memory in bytes.
    pub memory_used_bytes: u64,
    /// CPU load in thousandths (1000 = all cores busy).
    pub cpu_load_permille: u32,
    /// Milliseconds since the Unix epoch.
    pub now_ms: u64,
}

/// Log levels a plugin may write at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    /// Very detailed.
    Trace,
    /// Debugging detail.
    Debug,
    /// Normal operation.
    Info,
    /// Something odd.
    Warn,
    /// Something failed.
    Error,
}

impl Request {
    /// The host's hard rules for placing this request on `target`: the target is healthy, its
    /// available resources cover the request's needs, and it carries every required label.
    ///
    /// Built-in strategies only consider targets that pass; the host rejects any decision that
    /// does not.
    pub fn fits(&self, target: &Target) -> bool {
        target.healthy
            && target.available.covers(&self.needs)
            && self.required.iter().all(|l| target.has_label(l))
    }
}

impl Target {
    /// Account for one placed request: one more active unit, its needs no longer available.
    pub fn claim(&mut self, needs: &Resources) {
        self.active = self.active.saturating_add(1);
        self.available = self.available.saturating_sub(needs);
    }
}
