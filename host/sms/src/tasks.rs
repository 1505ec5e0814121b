//! The task registry, in SPEAR's terms: a task may be registered without an executable, carries
//! free-form `metadata` and `config`, and a delete unregisters it (kept, shown as `unregistered`,
//! refused for new executions) before a second delete removes it.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::json;
use utoipa::ToSchema;

use crate::checks::{
    self, MAX_ENTRIES, MAX_LINE, check_executable, check_labels, check_line, check_text,
};
use crate::error::{Result, SmsError};
use crate::model::{Executable, Priority, Resources, Task, TaskStatus, now_ms};
use crate::service::Sms;

/// `POST /api/v1/tasks` (SPEAR's shape, plus scheduling hints).
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterTask {
    /// Name (required).
    pub name: String,
    /// Description.
    #[serde(default)]
    pub description: String,
    /// `low`, `normal` (default), `high`, `urgent`.
    #[serde(default)]
    #[schema(value_type = Option<Priority>)]
    pub priority: Option<String>,
    /// Pin executions to this node.
    #[serde(default)]
    pub node_uuid: Option<String>,
    /// Endpoint the task serves.
    #[serde(default)]
    pub endpoint: String,
    /// Version.
    #[serde(default)]
    pub version: String,
    /// Capabilities.
    #[serde(default)]
    pub capabilities: Vec<String>,
    /// What to run (none: a task nothing can run until one is given, as SPEAR allows).
    #[serde(default)]
    pub executable: Option<TaskExecutable>,
    /// Free-form metadata (SPEAR's).
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// Free-form configuration (SPEAR's).
    #[serde(default)]
    pub config: BTreeMap<String, String>,
    /// Task labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Resources one execution needs.
    #[serde(default)]
    pub needs: Resources,
    /// Node labels required.
    #[serde(default)]
    pub required_labels: BTreeMap<String, String>,
    /// Node labels preferred.
    #[serde(default)]
    pub preferred_labels: BTreeMap<String, String>,
}

/// A task's executable as SPEAR writes it: ours, plus `checksum_sha256`, and the types `binary`
/// and `script` (both run by the `process` executor: a fetched program, or a script with its
/// `#!` line, made executable). [`Executable`]'s fields are repeated rather than flattened in:
/// serde's `flatten` loses the path of a field at fault (`executable.type`).
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskExecutable {
    /// `wasm`, `process`, `container`, or SPEAR's `binary` and `script`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Where the artifact is.
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
    /// The artifact's sha256 (hex): an `http(s)://` artifact is pinned to it (`#sha256=`); an
    /// `sms+file://` one must be that file (its id is its sha256).
    #[serde(default)]
    pub checksum_sha256: Option<String>,
}

impl From<Executable> for TaskExecutable {
    fn from(e: Executable) -> Self {
        Self {
            kind: e.kind,
            uri: e.uri,
            name: e.name,
            args: e.args,
            env: e.env,
            checksum_sha256: None,
        }
    }
}

impl TaskExecutable {
    /// The executable SMS runs, checked under `field`.
    pub fn resolve(&self, field: &str) -> Result<Executable> {
        let mut e = Executable {
            kind: self.kind.clone(),
            uri: self.uri.clone(),
            name: self.name.clone(),
            args: self.args.clone(),
            env: self.env.clone(),
        };
        if e.kind == "binary" || e.kind == "script" {
            e.kind = "process".into();
            // SPEAR's `name` of a fetched binary or script is its file name: the fetched file
            // runs, not a program of that name (a process's `name` is the program to run).
            if !e.uri.is_empty() {
                e.name.clear();
            }
        }
        if let Some(sum) = self.checksum_sha256.as_deref().filter(|s| !s.is_empty()) {
            let at = format!("{field}.checksum_sha256");
            if sum.len() != 64 || !sum.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(SmsError::invalid(at, "must be 64 hexadecimal digits"));
            }
            let sum = sum.to_ascii_lowercase();
            if let Some(rest) = e.uri.strip_prefix("sms+file://") {
                let id = rest.rsplit('/').next().unwrap_or(rest);
                if id != sum {
                    return Err(SmsError::invalid(
                        at,
                        format!(
                            "`{id}` is not the file with this sha256 (a file's id is its sha256)"
                        ),
                    ));
                }
            } else if ["https://", "http://", "s3://", "minio://"]
                .iter()
                .any(|s| e.uri.starts_with(s))
            {
                match e.uri.split_once('#') {
                    None => e.uri = format!("{}#sha256={sum}", e.uri),
                    Some((_, fragment)) if fragment == format!("sha256={sum}") => {}
                    Some(_) => {
                        return Err(SmsError::invalid(
                            at,
                            "the uri already pins another sha256 (its `#` fragment)",
                        ));
                    }
                }
            } else {
                return Err(SmsError::invalid(
                    at,
                    "applies to sms+file://, http(s)://, s3:// and minio:// artifacts",
                ));
            }
        }
        check_executable(field, &e)?;
        Ok(e)
    }
}

impl RegisterTask {
    /// Every check of a registration (texts, labels, ranges, the executable, the node's UUID);
    /// returns the priority, the executable and the pinned node.
    pub fn check(&self) -> Result<(Priority, Option<Executable>, Option<String>)> {
        if self.name.trim().is_empty() {
            return Err(SmsError::invalid("name", "must not be empty"));
        }
        check_line("name", &self.name, 256)?;
        check_text("description", &self.description, MAX_LINE)?;
        check_line("endpoint", &self.endpoint, MAX_LINE)?;
        check_line("version", &self.version, 256)?;
        if self.capabilities.len() > MAX_ENTRIES {
            return Err(SmsError::invalid(
                "capabilities",
                format!("at most {MAX_ENTRIES}"),
            ));
        }
        for (i, c) in self.capabilities.iter().enumerate() {
            check_line(&format!("capabilities[{i}]"), c, 256)?;
        }
        check_labels("labels", &self.labels)?;
        check_free_map("metadata", &self.metadata)?;
        crate::preempt::check_task_metadata(&self.metadata)?;
        check_free_map("config", &self.config)?;
        check_labels("required_labels", &self.required_labels)?;
        check_labels("preferred_labels", &self.preferred_labels)?;
        checks::check_resources("needs", &self.needs)?;
        let priority = match self.priority.as_deref() {
            None => Priority::Normal,
            Some(p) => Priority::parse(p).ok_or_else(|| {
                SmsError::invalid(
                    "priority",
                    format!("`{p}` is not one of low, normal, high, urgent"),
                )
            })?,
        };
        let executable = self
            .executable
            .as_ref()
            .map(|e| e.resolve("executable"))
            .transpose()?;
        let node_uuid = self.node_uuid.clone().filter(|n| !n.is_empty());
        if let Some(n) = &node_uuid {
            uuid::Uuid::parse_str(n)
                .map_err(|e| SmsError::invalid("node_uuid", format!("not a UUID: {e}")))?;
        }
        Ok((priority, executable, node_uuid))
    }
}

impl Sms {
    /// Register a task.
    pub async fn register_task(&self, req: RegisterTask) -> Result<Task> {
        let (priority, executable, node_uuid) = req.check()?;
        let task = Task {
            task_id: uuid::Uuid::new_v4().to_string(),
            name: req.name,
            description: req.description,
            status: TaskStatus::Registered,
            priority,
            node_uuid,
            endpoint: req.endpoint,
            version: req.version,
            capabilities: req.capabilities,
            executable,
            metadata: req.metadata,
            config: req.config,
            unregistered_reason: None,
            status_version: 0,
            result: None,
            labels: req.labels,
            needs: req.needs,
            required_labels: req.required_labels,
            preferred_labels: req.preferred_labels,
            registered_at_ms: now_ms(),
        };
        // A new id: nothing else writes this record yet. The record and its event in one batch.
        let data = json!({"name": task.name});
        self.store_task(&task.task_id, Some(&task), "task.registered", data)
            .await?;
        // Its instances ahead, on the nodes that can run it, if it asks for them.
        self.warm_task(&task).await;
        Ok(task)
    }

    /// One task.
    pub async fn task(&self, id: &str) -> Result<Task> {
        self.tasks
            .read()
            .await
            .get(id)
            .cloned()
            .ok_or_else(|| SmsError::not_found("task", id))
    }

    /// How many tasks are registered (any status).
    pub async fn task_count(&self) -> usize {
        self.tasks.read().await.len()
    }

    /// Tasks, filtered by status and priority.
    pub async fn tasks(&self, status: Option<&str>, priority: Option<&str>) -> Result<Vec<Task>> {
        let all: Vec<Task> = self.tasks.read().await.values().cloned().collect();
        select(all, status, priority)
    }
}

/// SPEAR's execution kind of a task, as its metadata or config says (`execution_kind`, any case),
/// lowercased, if either does: task events carry it.
pub fn execution_kind(task: &Task) -> Option<String> {
    task.metadata
        .get("execution_kind")
        .or_else(|| task.config.get("execution_kind"))
        .map(|k| k.to_ascii_lowercase())
}

/// A free-form map (`metadata`, `config`): at most [`MAX_ENTRIES`] one-line keys and values.
fn check_free_map(field: &str, map: &BTreeMap<String, String>) -> Result<()> {
    if map.len() > MAX_ENTRIES {
        return Err(SmsError::invalid(
            field,
            format!("at most {MAX_ENTRIES} entries"),
        ));
    }
    for (k, v) in map {
        let at = format!("{field}.{k}");
        check_line(&at, k, 256)?;
        check_line(&at, v, MAX_LINE)?;
    }
    Ok(())
}

/// The tasks of `all` with `status` and `priority` (each when given), oldest first.
pub fn select(all: Vec<Task>, status: Option<&str>, priority: Option<&str>) -> Result<Vec<Task>> {
    let status = match status {
        None => None,
        Some(s) => Some(TaskStatus::parse(s).ok_or_else(|| {
            SmsError::invalid(
                "status",
                format!("`{s}` is not one of registered, active, inactive, unregistered"),
            )
        })?),
    };
    let priority = match priority {
        None => None,
        Some(p) => Some(Priority::parse(p).ok_or_else(|| {
            SmsError::invalid(
                "priority",
                format!("`{p}` is not one of low, normal, high, urgent"),
            )
        })?),
    };
    let mut tasks: Vec<Task> = all
        .into_iter()
        .filter(|t| status.is_none_or(|s| t.status == s))
        .filter(|t| priority.is_none_or(|p| t.priority == p))
        .collect();
    tasks.sort_by_key(|t| t.registered_at_ms);
    Ok(tasks)
}

impl Sms {
    /// Unregister a task (SPEAR's `DELETE`): it stays, `unregistered` with `reason`, and takes
    /// no new executions; an unregistered task is removed for good. Returns whether it was
    /// removed.
    pub async fn delete_task(&self, id: &str, reason: Option<String>) -> Result<bool> {
        if let Some(r) = &reason {
            check_line("reason", r, MAX_LINE)?;
        }
        let _task = self.task_locks.lock(id).await;
        let Some(mut task) = self.tasks.read().await.get(id).cloned() else {
            return Err(SmsError::not_found("task", id));
        };
        if task.status == TaskStatus::Unregistered {
            self.store_task(id, None, "task.deleted", json!({})).await?;
            return Ok(true);
        }
        task.status = TaskStatus::Unregistered;
        task.unregistered_reason = reason;
        // Submits of it in flight commit first; later ones see it unregistered.
        let _closed = self.task_gates.close(id).await;
        let data = json!({"reason": task.unregistered_reason});
        self.store_task(id, Some(&task), "task.unregistered", data)
            .await?;
        Ok(false)
    }

    /// Store task `id` as `task` (`None`: removed) with its event of `kind`, then change memory,
    /// then tell live subscribers: a subscriber that reads the task on hearing of the event sees
    /// the change. The event's data also carries the task's node and execution kind (what
    /// `sms.TaskService/SubscribeTaskEvents` filters and shows). The caller holds the task's lock
    /// (or has the only copy of a new id).
    pub(crate) async fn store_task(
        &self,
        id: &str,
        task: Option<&Task>,
        kind: &str,
        mut data: serde_json::Value,
    ) -> Result<()> {
        let was = self.tasks.read().await.get(id).cloned();
        let shown = task.or(was.as_ref());
        data["node_uuid"] = shown
            .and_then(|t| t.node_uuid.clone())
            .unwrap_or_default()
            .into();
        data["execution_kind"] = shown.and_then(execution_kind).into();
        let op = match task {
            Some(t) => crate::db::put_op(format!("task/{id}"), t)?,
            None => spear_plugin_api::storage::BatchOp::Delete {
                key: format!("task/{id}").into_bytes(),
            },
        };
        let mut queued = self
            .events
            .queue(vec![op], vec![(kind, id.to_owned(), data)])?;
        queued.durable().await?;
        match task {
            Some(t) => self.tasks.write().await.insert(id.to_owned(), t.clone()),
            None => self.tasks.write().await.remove(id),
        };
        queued.announce();
        Ok(())
    }
}
