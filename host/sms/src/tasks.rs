//! The task registry.

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
    /// What to run (required).
    pub executable: Option<Executable>,
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

impl RegisterTask {
    /// Every check of a registration (texts, labels, ranges, the executable, the node's UUID);
    /// returns the priority, the executable and the pinned node.
    pub fn check(&self) -> Result<(Priority, Executable, Option<String>)> {
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
            .clone()
            .ok_or_else(|| SmsError::invalid("executable", "is required"))?;
        check_executable("executable", &executable)?;
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
            labels: req.labels,
            needs: req.needs,
            required_labels: req.required_labels,
            preferred_labels: req.preferred_labels,
            registered_at_ms: now_ms(),
        };
        // A new id: nothing else writes this record yet. The record and its event in one batch.
        self.events
            .append_with(
                vec![crate::db::put_op(format!("task/{}", task.task_id), &task)?],
                vec![(
                    "task.registered",
                    task.task_id.clone(),
                    json!({"name": task.name}),
                )],
            )
            .await?;
        self.tasks
            .write()
            .await
            .insert(task.task_id.clone(), task.clone());
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

    /// Tasks, filtered by status and priority.
    pub async fn tasks(&self, status: Option<&str>, priority: Option<&str>) -> Result<Vec<Task>> {
        let all: Vec<Task> = self.tasks.read().await.values().cloned().collect();
        select(all, status, priority)
    }
}

/// The tasks of `all` with `status` and `priority` (each when given), oldest first.
pub fn select(all: Vec<Task>, status: Option<&str>, priority: Option<&str>) -> Result<Vec<Task>> {
    let status = match status {
        None => None,
        Some(s) => Some(TaskStatus::parse(s).ok_or_else(|| {
            SmsError::invalid(
                "status",
                format!("`{s}` is not one of registered, active, inactive"),
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
    /// Remove a task.
    pub async fn delete_task(&self, id: &str) -> Result<()> {
        let _task = self.task_locks.lock(id).await;
        if !self.tasks.read().await.contains_key(id) {
            return Err(SmsError::not_found("task", id));
        }
        self.events
            .append_with(
                vec![spear_plugin_api::storage::BatchOp::Delete {
                    key: format!("task/{id}").into_bytes(),
                }],
                vec![("task.deleted", id.to_owned(), json!({}))],
            )
            .await?;
        self.tasks.write().await.remove(id);
        Ok(())
    }
}
