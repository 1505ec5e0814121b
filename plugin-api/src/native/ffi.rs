//! `#[repr(C)]` mirrors of the plain types, checked by abi_stable's layout checker at load time.

use abi_stable::{
    StableAbi,
    std_types::{RString, RVec},
};

use crate::{
    Decision, InstanceState, InstanceStats, Label, NodePressure, Outcome, PluginInfo, PluginKind,
    Request, Resources, Target,
};

/// FFI form of [`Label`].
#[repr(C)]
#[derive(StableAbi, Debug, Clone)]
pub struct FfiLabel {
    /// Key.
    pub key: RString,
    /// Value.
    pub value: RString,
}

/// FFI form of [`Resources`].
#[repr(C)]
#[derive(StableAbi, Debug, Clone, Copy)]
pub struct FfiResources {
    /// CPU in thousandths of a core.
    pub cpu_millis: u64,
    /// Memory in MiB.
    pub memory_mb: u64,
    /// Disk in MiB.
    pub disk_mb: u64,
}

/// FFI form of [`Target`].
#[repr(C)]
#[derive(StableAbi, Debug, Clone)]
pub struct FfiTarget {
    /// Id.
    pub id: u64,
    /// Name.
    pub name: RString,
    /// Labels.
    pub labels: RVec<FfiLabel>,
    /// Capacity.
    pub capacity: FfiResources,
    /// Available.
    pub available: FfiResources,
    /// Active work.
    pub active: u32,
    /// Weight.
    pub weight: u32,
    /// Healthy.
    pub healthy: bool,
}

/// FFI form of [`Request`].
#[repr(C)]
#[derive(StableAbi, Debug, Clone)]
pub struct FfiRequest {
    /// Id.
    pub id: u64,
    /// Task.
    pub task: RString,
    /// Task labels.
    pub labels: RVec<FfiLabel>,
    /// Needs.
    pub needs: FfiResources,
    /// Hard affinity.
    pub required: RVec<FfiLabel>,
    /// Soft affinity.
    pub preferred: RVec<FfiLabel>,
}

/// FFI form of [`Decision`].
#[repr(u8)]
#[derive(StableAbi, Debug, Clone)]
pub enum FfiDecision {
    /// Assign to a target id.
    Assign(u64),
    /// Reject with a reason.
    Reject(RString),
}

/// FFI form of [`Outcome`].
#[repr(C)]
#[derive(StableAbi, Debug, Clone, Copy)]
pub struct FfiOutcome {
    /// Request id.
    pub request: u64,
    /// Target id.
    pub target: u64,
    /// Success.
    pub success: bool,
    /// Latency in microseconds.
    pub latency_us: u64,
}

/// FFI form of [`PluginKind`].
#[repr(u8)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq)]
pub enum FfiPluginKind {
    /// Scheduling strategy.
    SchedulingStrategy,
    /// Reclamation policy.
    ReclamationPolicy,
    /// Executor.
    Executor,
    /// Storage backend.
    StorageBackend,
    /// Autoscaler (added in ABI 3.0).
    Autoscaler,
}

/// FFI form of [`PluginInfo`].
#[repr(C)]
#[derive(StableAbi, Debug, Clone)]
pub struct FfiPluginInfo {
    /// Name.
    pub name: RString,
    /// Version.
    pub version: RString,
    /// Kind.
    pub kind: FfiPluginKind,
    /// Description.
    pub description: RString,
    /// Config schema.
    pub config_schema: RString,
}

/// FFI form of [`InstanceState`].
#[repr(u8)]
#[derive(StableAbi, Debug, Clone, Copy)]
pub enum FfiInstanceState {
    /// Initializing.
    Initializing,
    /// Ready.
    Ready,
    /// Executing.
    Executing,
    /// Error.
    Error,
    /// Terminating.
    Terminating,
    /// Terminated.
    Terminated,
}

/// FFI form of [`InstanceStats`].
#[repr(C)]
#[derive(StableAbi, Debug, Clone)]
pub struct FfiInstanceStats {
    /// Id.
    pub id: u64,
    /// Task.
    pub task: RString,
    /// State.
    pub state: FfiInstanceState,
    /// Idle time.
    pub idle_ms: u64,
    /// Age.
    pub age_ms: u64,
    /// Memory.
    pub memory_bytes: u64,
    /// Invocations.
    pub invocations: u64,
    /// Errors.
    pub errors: u64,
    /// Recent errors.
    pub recent_errors: u32,
    /// Recent invocations.
    pub recent_invocations: u32,
}

/// FFI form of [`NodePressure`].
#[repr(C)]
#[derive(StableAbi, Debug, Clone, Copy)]
pub struct FfiNodePressure {
    /// Total memory.
    pub memory_total_bytes: u64,
    /// Used memory.
    pub memory_used_bytes: u64,
    /// CPU load in permille.
    pub cpu_load_permille: u32,
    /// Wall clock in ms.
    pub now_ms: u64,
}

fn labels_to_ffi(labels: &[Label]) -> RVec<FfiLabel> {
    labels
        .iter()
        .map(|l| FfiLabel {
            key: l.key.as_str().into(),
            value: l.value.as_str().into(),
        })
        .collect()
}

fn labels_from_ffi(labels: &[FfiLabel]) -> Vec<Label> {
    labels
        .iter()
        .map(|l| Label::new(l.key.as_str(), l.value.as_str()))
        .collect()
}

impl From<Resources> for FfiResources {
    fn from(r: Resources) -> Self {
        Self {
            cpu_millis: r.cpu_millis,
            memory_mb: r.memory_mb,
            disk_mb: r.disk_mb,
        }
    }
}

impl From<FfiResources> for Resources {
    fn from(r: FfiResources) -> Self {
        Self {
            cpu_millis: r.cpu_millis,
            memory_mb: r.memory_mb,
            disk_mb: r.disk_mb,
        }
    }
}

impl From<&Target> for FfiTarget {
    fn from(t: &Target) -> Self {
        Self {
            id: t.id,
            name: t.name.as_str().into(),
            labels: labels_to_ffi(&t.labels),
            capacity: t.capacity.into(),
            available: t.available.into(),
            active: t.active,
            weight: t.weight,
            healthy: t.healthy,
        }
    }
}

impl From<&FfiTarget> for Target {
    fn from(t: &FfiTarget) -> Self {
        Self {
            id: t.id,
            name: t.name.as_str().into(),
            labels: labels_from_ffi(&t.labels),
            capacity: t.capacity.into(),
            available: t.available.into(),
            active: t.active,
            weight: t.weight,
            healthy: t.healthy,
        }
    }
}

impl From<&Request> for FfiRequest {
    fn from(r: &Request) -> Self {
        Self {
            id: r.id,
            task: r.task.as_str().into(),
            labels: labels_to_ffi(&r.labels),
            needs: r.needs.into(),
            required: labels_to_ffi(&r.required),
            preferred: labels_to_ffi(&r.preferred),
        }
    }
}

impl From<&FfiRequest> for Request {
    fn from(r: &FfiRequest) -> Self {
        Self {
            id: r.id,
            task: r.task.as_str().into(),
            labels: labels_from_ffi(&r.labels),
            needs: r.needs.into(),
            required: labels_from_ffi(&r.required),
            preferred: labels_from_ffi(&r.preferred),
        }
    }
}

impl From<Decision> for FfiDecision {
    fn from(d: Decision) -> Self {
        match d {
            Decision::Assign(id) => FfiDecision::Assign(id),
            Decision::Reject(why) => FfiDecision::Reject(why.into()),
        }
    }
}

impl From<FfiDecision> for Decision {
    fn from(d: FfiDecision) -> Self {
        match d {
            FfiDecision::Assign(id) => Decision::Assign(id),
            FfiDecision::Reject(why) => Decision::Reject(why.into()),
        }
    }
}

impl From<Outcome> for FfiOutcome {
    fn from(o: Outcome) -> Self {
        Self {
            request: o.request,
            target: o.target,
            success: o.success,
            latency_us: o.latency_us,
        }
    }
}

impl From<FfiOutcome> for Outcome {
    fn from(o: FfiOutcome) -> Self {
        Self {
            request: o.request,
            target: o.target,
            success: o.success,
            latency_us: o.latency_us,
        }
    }
}

impl From<PluginKind> for FfiPluginKind {
    fn from(k: PluginKind) -> Self {
        match k {
            PluginKind::SchedulingStrategy => Self::SchedulingStrategy,
            PluginKind::ReclamationPolicy => Self::ReclamationPolicy,
            PluginKind::Executor => Self::Executor,
            PluginKind::StorageBackend => Self::StorageBackend,
            PluginKind::Autoscaler => Self::Autoscaler,
        }
    }
}

impl From<FfiPluginKind> for PluginKind {
    fn from(k: FfiPluginKind) -> Self {
        match k {
            FfiPluginKind::SchedulingStrategy => Self::SchedulingStrategy,
            FfiPluginKind::ReclamationPolicy => Self::ReclamationPolicy,
            FfiPluginKind::Executor => Self::Executor,
            FfiPluginKind::StorageBackend => Self::StorageBackend,
            FfiPluginKind::Autoscaler => Self::Autoscaler,
        }
    }
}

impl From<&PluginInfo> for FfiPluginInfo {
    fn from(i: &PluginInfo) -> Self {
        Self {
            name: i.name.as_str().into(),
            version: i.version.as_str().into(),
            kind: i.kind.into(),
            description: i.description.as_str().into(),
            config_schema: i.config_schema.as_str().into(),
        }
    }
}

impl From<&FfiPluginInfo> for PluginInfo {
    fn from(i: &FfiPluginInfo) -> Self {
        Self {
            name: i.name.as_str().into(),
            version: i.version.as_str().into(),
            kind: i.kind.into(),
            description: i.description.as_str().into(),
            config_schema: i.config_schema.as_str().into(),
        }
    }
}

impl From<InstanceState> for FfiInstanceState {
    fn from(s: InstanceState) -> Self {
        match s {
            InstanceState::Initializing => Self::Initializing,
            InstanceState::Ready => Self::Ready,
            InstanceState::Executing => Self::Executing,
            InstanceState::Error => Self::Error,
            InstanceState::Terminating => Self::Terminating,
            InstanceState::Terminated => Self::Terminated,
        }
    }
}

impl From<FfiInstanceState> for InstanceState {
    fn from(s: FfiInstanceState) -> Self {
        match s {
            FfiInstanceState::Initializing => Self::Initializing,
            FfiInstanceState::Ready => Self::Ready,
            FfiInstanceState::Executing => Self::Executing,
            FfiInstanceState::Error => Self::Error,
            FfiInstanceState::Terminating => Self::Terminating,
            FfiInstanceState::Terminated => Self::Terminated,
        }
    }
}

impl From<&InstanceStats> for FfiInstanceStats {
    fn from(s: &InstanceStats) -> Self {
        Self {
            id: s.id,
            task: s.task.as_str().into(),
            state: s.state.into(),
            idle_ms: s.idle_ms,
            age_ms: s.age_ms,
            memory_bytes: s.memory_bytes,
            invocations: s.invocations,
            errors: s.errors,
            recent_errors: s.recent_errors,
            recent_invocations: s.recent_invocations,
        }
    }
}

impl From<&FfiInstanceStats> for InstanceStats {
    fn from(s: &FfiInstanceStats) -> Self {
        Self {
            id: s.id,
            task: s.task.as_str().into(),
            state: s.state.into(),
            idle_ms: s.idle_ms,
            age_ms: s.age_ms,
            memory_bytes: s.memory_bytes,
            invocations: s.invocations,
            errors: s.errors,
            recent_errors: s.recent_errors,
            recent_invocations: s.recent_invocations,
        }
    }
}

impl From<NodePressure> for FfiNodePressure {
    fn from(n: NodePressure) -> Self {
        Self {
            memory_total_bytes: n.memory_total_bytes,
            memory_used_bytes: n.memory_used_bytes,
            cpu_load_permille: n.cpu_load_permille,
            now_ms: n.now_ms,
        }
    }
}

impl From<FfiNodePressure> for NodePressure {
    fn from(n: FfiNodePressure) -> Self {
        Self {
            memory_total_bytes: n.memory_total_bytes,
            memory_used_bytes: n.memory_used_bytes,
            cpu_load_permille: n.cpu_load_permille,
            now_ms: n.now_ms,
        }
    }
}
