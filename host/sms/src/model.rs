//! The objects SMS keeps, as stored (JSON) and as the REST API shows them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Resource amounts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(default)]
pub struct Resources {
    /// CPU in thousandths of a core.
    pub cpu_millis: u64,
    /// Memory in MiB.
    pub memory_mb: u64,
    /// Disk in MiB.
    pub disk_mb: u64,
}

impl From<Resources> for spear_plugin_api::Resources {
    fn from(r: Resources) -> Self {
        Self {
            cpu_millis: r.cpu_millis,
            memory_mb: r.memory_mb,
            disk_mb: r.disk_mb,
        }
    }
}

impl From<spear_plugin_api::Resources> for Resources {
    fn from(r: spear_plugin_api::Resources) -> Self {
        Self {
            cpu_millis: r.cpu_millis,
            memory_mb: r.memory_mb,
            disk_mb: r.disk_mb,
        }
    }
}

/// Health of a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum NodeStatus {
    /// Heartbeating; receives work.
    Active,
    /// Missed its heartbeats; receives no work; removed after the cleanup interval.
    Unhealthy,
    /// Finishing its work; receives no new work.
    Draining,
    /// Set aside by an operator; receives no work.
    Inactive,
}

impl NodeStatus {
    /// Parse the API spelling.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "active" => Some(Self::Active),
            "unhealthy" => Some(Self::Unhealthy),
            "draining" => Some(Self::Draining),
            "inactive" => Some(Self::Inactive),
            _ => None,
        }
    }

    /// The API spelling.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Unhealthy => "unhealthy",
            Self::Draining => "draining",
            Self::Inactive => "inactive",
        }
    }
}

/// A Spearlet known to SMS.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Node {
    /// Node id.
    pub uuid: String,
    /// Address of the Spearlet.
    pub ip_address: String,
    /// Port of the Spearlet.
    pub port: u16,
    /// Health.
    pub status: NodeStatus,
    /// Free-form metadata.
    pub metadata: BTreeMap<String, String>,
    /// Scheduling labels (hard and soft affinity match these).
    pub labels: BTreeMap<String, String>,
    /// Total resources.
    pub capacity: Resources,
    /// Resources free at the last heartbeat.
    pub available: Resources,
    /// Executable types it runs (`wasm`, `process`, `container`).
    pub executors: Vec<String>,
    /// Executions running, at the last heartbeat.
    pub running: u32,
    /// Executions it runs at once (its `max_concurrent`); SMS places no more than this plus
    /// `dispatch.prefetch` on it. 0 in records stored before slots existed: `dispatch.default_slots`.
    #[serde(default)]
    pub slots: u32,
    /// The last heartbeat's health figures.
    pub health_info: BTreeMap<String, String>,
    /// Registration time, ms since the Unix epoch.
    pub registered_at_ms: i64,
    /// Last heartbeat, ms since the Unix epoch.
    pub last_heartbeat_ms: i64,
    /// Its last resource figures (SPEAR's node resource), when it reported some.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<crate::resources::NodeResource>,
    /// The token that drained it or set it inactive (with auth on): the node's own registrations
    /// keep that status, and its own token cannot remove it, until an operator sets it active.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_by: Option<String>,
}

/// How urgent a task is.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    /// Background work.
    Low,
    /// The default.
    #[default]
    Normal,
    /// Before normal work.
    High,
    /// Before everything else.
    Urgent,
}

impl Priority {
    /// Parse the API spelling.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "low" => Some(Self::Low),
            "normal" => Some(Self::Normal),
            "high" => Some(Self::High),
            "urgent" => Some(Self::Urgent),
            _ => None,
        }
    }

    /// The API spelling.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Low => "low",
            Self::Normal => "normal",
            Self::High => "high",
            Self::Urgent => "urgent",
        }
    }
}

/// Life of a registered task.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum TaskStatus {
    /// Registered, not yet run.
    #[default]
    Registered,
    /// Has run or is running.
    Active,
    /// Set aside.
    Inactive,
    /// Unregistered (`DELETE /api/v1/tasks/{id}`, SPEAR's meaning): kept and shown, refused for
    /// new executions; a second delete removes it.
    Unregistered,
}

impl TaskStatus {
    /// Parse the API spelling.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "registered" => Some(Self::Registered),
            "active" => Some(Self::Active),
            "inactive" => Some(Self::Inactive),
            "unregistered" => Some(Self::Unregistered),
            _ => None,
        }
    }

    /// The API spelling.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Registered => "registered",
            Self::Active => "active",
            Self::Inactive => "inactive",
            Self::Unregistered => "unregistered",
        }
    }
}

/// What to run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Executable {
    /// `wasm`, `process`, `container`, or the type of an executor plugin a node runs (`http`).
    #[serde(rename = "type")]
    pub kind: String,
    /// Where the artifact is: `sms+file://<id>`, `file://…`, `https://…`, or an image.
    #[serde(default)]
    pub uri: String,
    /// Entry point, program or image name.
    #[serde(default)]
    pub name: String,
    /// Arguments.
    #[serde(default)]
    pub args: Vec<String>,
    /// Environment.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

/// A registered task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Task {
    /// Task id.
    pub task_id: String,
    /// Name.
    pub name: String,
    /// Description.
    pub description: String,
    /// Life.
    pub status: TaskStatus,
    /// Urgency.
    pub priority: Priority,
    /// Pinned node, if any.
    pub node_uuid: Option<String>,
    /// Endpoint the task serves, if any.
    pub endpoint: String,
    /// Version.
    pub version: String,
    /// Capabilities.
    pub capabilities: Vec<String>,
    /// What to run; none for a task registered without one (SPEAR allows it; nothing runs it).
    #[serde(default)]
    pub executable: Option<Executable>,
    /// Free-form metadata (SPEAR's).
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// Free-form configuration (SPEAR's).
    #[serde(default)]
    pub config: BTreeMap<String, String>,
    /// Why it was unregistered (status `unregistered`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unregistered_reason: Option<String>,
    /// Bumped by each status update (SPEAR's `status_version`): an update naming a version not
    /// above it is stale and refused.
    #[serde(default)]
    pub status_version: u64,
    /// Results reported for it (SPEAR's `UpdateTaskResult`), when any were.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<TaskResults>,
    /// Task labels (spread and co-location rules match these).
    pub labels: BTreeMap<String, String>,
    /// Resources one execution needs.
    pub needs: Resources,
    /// Hard affinity: node labels an execution's node must carry.
    pub required_labels: BTreeMap<String, String>,
    /// Soft affinity: node labels preferred.
    pub preferred_labels: BTreeMap<String, String>,
    /// Registration time, ms since the Unix epoch.
    pub registered_at_ms: i64,
}

/// The results reported for a task (SPEAR's `UpdateTaskResult`): the last one, and the URIs of the
/// most recent ones.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TaskResults {
    /// Result URIs, oldest first, each once; at most the last 100.
    pub uris: Vec<String>,
    /// The last result's URI.
    pub last_uri: String,
    /// The last result's status (`completed`, `failed`, …).
    pub last_status: String,
    /// When the last result completed, seconds since the Unix epoch.
    pub last_completed_at: i64,
    /// The last result's metadata.
    pub last_metadata: BTreeMap<String, String>,
}

/// A stored artifact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct FileMeta {
    /// sha256 of the content (hex).
    pub file_id: String,
    /// Name given at upload.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// `sms+file://<file_id>`.
    pub uri: String,
    /// Upload time, ms since the Unix epoch.
    pub uploaded_at_ms: i64,
}

/// One entry of the event log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Event {
    /// Position in the log; strictly increasing from 1.
    pub cursor: u64,
    /// Time, ms since the Unix epoch.
    pub at_ms: i64,
    /// What happened (`node.registered`, `task.deleted`, …).
    pub kind: String,
    /// The id concerned.
    pub subject: String,
    /// Details.
    #[schema(value_type = Object)]
    pub data: serde_json::Value,
    /// Who caused it: the token's name and role, `deployer (operator)`; absent for what SMS
    /// does by itself and while auth is off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Where an execution is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ExecState {
    /// Waiting for its dependencies.
    Pending,
    /// Waiting for a node.
    Ready,
    /// Sent to a node.
    Assigned,
    /// The node started it.
    Running,
    /// Finished with success.
    Succeeded,
    /// Finished with failure, no attempts left.
    Failed,
    /// Cancelled.
    Cancelled,
    /// Ran past its timeout, no attempts left.
    TimedOut,
}

impl ExecState {
    /// Parse the API spelling.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => Self::Pending,
            "ready" => Self::Ready,
            "assigned" => Self::Assigned,
            "running" => Self::Running,
            "succeeded" => Self::Succeeded,
            "failed" => Self::Failed,
            "cancelled" => Self::Cancelled,
            "timed_out" => Self::TimedOut,
            _ => return None,
        })
    }

    /// The API spelling.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Ready => "ready",
            Self::Assigned => "assigned",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
            Self::TimedOut => "timed_out",
        }
    }

    /// No further change will happen.
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            Self::Succeeded | Self::Failed | Self::Cancelled | Self::TimedOut
        )
    }

    /// On a node.
    pub fn is_placed(&self) -> bool {
        matches!(self, Self::Assigned | Self::Running)
    }
}

/// What a finished execution produced.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ExecResult {
    /// Exit code (0 when killed by a signal).
    pub exit_code: i32,
    /// Signal that killed it (0 when it exited).
    pub signal: i32,
    /// Standard output, as text (lossy UTF-8).
    pub stdout: String,
    /// Standard error, as text (lossy UTF-8).
    pub stderr: String,
    /// Output went past the node's cap.
    pub stdout_truncated: bool,
    /// Error output went past the node's cap.
    pub stderr_truncated: bool,
    /// Wall time on the node.
    pub duration_ms: u64,
    /// Standard output longer than 1 KiB, kept in the blob store (then `stdout` is whole only
    /// when the execution is read by id: listings leave it empty).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdout_blob: Option<crate::blobs::BlobRef>,
    /// Standard error longer than 1 KiB, kept in the blob store (as `stdout_blob`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stderr_blob: Option<crate::blobs::BlobRef>,
}

/// One run of a task or of an inline executable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Execution {
    /// Execution id.
    pub execution_id: String,
    /// The strategy's request id (stable, unique per SMS database).
    pub seq: u64,
    /// The task, when submitted by task.
    pub task_id: Option<String>,
    /// What to run.
    pub executable: Executable,
    /// Where it is.
    pub state: ExecState,
    /// Urgency.
    pub priority: Priority,
    /// The node it is (or was last) placed on.
    pub node_uuid: Option<String>,
    /// Attempts started: each placement takes the next number (an attempt id a node reports
    /// with).
    pub attempt: u32,
    /// Of those, the ones that went back to the queue through no fault of their own (their
    /// node was lost, or SMS restarted): they do not count against `max_attempts`.
    #[serde(default)]
    pub requeued: u32,
    /// The last attempt that ended in SMS (its result taken, or timed out); 0: none yet.
    #[serde(default)]
    pub ended_attempt: u32,
    /// The attempt whose start SMS took last (its node reported it running); 0: none yet.
    #[serde(default)]
    pub started_attempt: u32,
    /// Attempts allowed.
    pub max_attempts: u32,
    /// Wall-clock limit per attempt (0: none).
    pub timeout_ms: u64,
    /// Executions that must succeed first.
    pub depends_on: Vec<String>,
    /// The result of the last attempt.
    pub result: Option<ExecResult>,
    /// Why it failed, or why it waits.
    pub error: Option<String>,
    /// Bytes for standard input.
    pub stdin: Vec<u8>,
    /// Standard input longer than 1 KiB, kept in the blob store (then `stdin` is whole only when
    /// the execution is read by id, or sent to its node).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdin_blob: Option<crate::blobs::BlobRef>,
    /// Resources it needs.
    pub needs: Resources,
    /// Task labels.
    pub labels: BTreeMap<String, String>,
    /// Node labels required.
    pub required_labels: BTreeMap<String, String>,
    /// Node labels preferred.
    pub preferred_labels: BTreeMap<String, String>,
    /// Submission time.
    pub submitted_at_ms: i64,
    /// Last change.
    pub updated_at_ms: i64,
    /// Not to be placed before this time (retry back-off).
    pub not_before_ms: i64,
    /// When the current attempt was assigned.
    pub assigned_at_ms: i64,
    /// When the latest attempt started running (0: none has); a running attempt's timeout
    /// counts from here.
    #[serde(default)]
    pub started_at_ms: i64,
    /// Longest wait, from submission, for a first attempt to start (0: no limit).
    #[serde(default)]
    pub queue_timeout_ms: u64,
    /// By when it must have finished, ms since the Unix epoch (0: no deadline;
    /// [`crate::deadlines`]).
    #[serde(default, skip_serializing_if = "is_zero_i64")]
    pub deadline_ms: i64,
    /// How long a run is expected to take, in ms (0: not given).
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub estimate_ms: u64,
    /// Its deadline could not be met when it was submitted (accepted under
    /// `[deadlines] infeasible = "flag"`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deadline_infeasible: bool,
    /// It was not finished by its deadline (recorded once).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deadline_missed: bool,
    /// The node that held it when it went back to the queue (the node was lost, or SMS
    /// restarted). That node's late result is still taken while no other node has it.
    #[serde(default)]
    pub orphaned_on: Option<String>,
    /// It saves its state in its checkpoint directory (`SPEAR_CHECKPOINT_DIR`; see
    /// [`crate::preempt`]).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub checkpoint: bool,
    /// How its next attempt starts after a preemption.
    #[serde(default)]
    pub recovery: Recovery,
    /// Its last checkpoint (a zip of its checkpoint directory), in the blob store: the next
    /// attempt starts with it restored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint_blob: Option<crate::blobs::BlobRef>,
    /// Times it was preempted (none of them spent an attempt).
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub preemptions: u32,
    /// When SMS asked its node to stop it for higher-priority work (0: not asked); it stays
    /// placed until the node reports it stopped.
    #[serde(default, skip_serializing_if = "is_zero_i64")]
    pub preempting_ms: i64,
    /// The time its node gives it, after SIGTERM, to save its state (with `preempting_ms`).
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub preempt_grace_ms: u64,
    /// The checkpoint to restore, read from the blob store for its node (never stored).
    #[serde(skip)]
    pub checkpoint_data: Vec<u8>,
}

/// How an execution's next attempt starts after a preemption, a drain, a lost node or a failure
/// (per task: `spear.recovery`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Recovery {
    /// From the beginning, on any node (its checkpoint, if any, is dropped).
    #[default]
    Restart,
    /// From its last checkpoint, restored on whichever node takes it.
    Checkpoint,
    /// From its last checkpoint, on another node than the one its last attempt left
    /// ([`crate::recovery`]).
    Migrate,
}

impl Recovery {
    /// Parse the API spelling.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "restart" => Some(Self::Restart),
            "checkpoint" => Some(Self::Checkpoint),
            "migrate" => Some(Self::Migrate),
            _ => None,
        }
    }

    /// The API spelling.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Restart => "restart",
            Self::Checkpoint => "checkpoint",
            Self::Migrate => "migrate",
        }
    }

    /// Whether the next attempt restores the last checkpoint.
    pub fn restores(&self) -> bool {
        matches!(self, Self::Checkpoint | Self::Migrate)
    }
}

impl Execution {
    /// Attempts that count against `max_attempts` (those not [`requeued`](Self::requeued)).
    pub fn spent(&self) -> u32 {
        self.attempt.saturating_sub(self.requeued)
    }

    /// The blobs its record names (standard input, and its result's outputs).
    pub fn blobs(&self) -> Vec<crate::blobs::BlobRef> {
        let result = self.result.as_ref();
        self.stdin_blob
            .iter()
            .chain(result.and_then(|r| r.stdout_blob.as_ref()))
            .chain(result.and_then(|r| r.stderr_blob.as_ref()))
            .chain(self.checkpoint_blob.as_ref())
            .cloned()
            .collect()
    }
}

fn is_zero_i64(v: &i64) -> bool {
    *v == 0
}

fn is_zero_u64(v: &u64) -> bool {
    *v == 0
}

fn is_zero_u32(v: &u32) -> bool {
    *v == 0
}
