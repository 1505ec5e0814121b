//! Changes of a registered task after its registration, as SPEAR's `UpdateTaskStatus` and
//! `UpdateTaskResult` make them: each under the task's lock, stored with its event in one batch.

use std::collections::BTreeMap;

use serde_json::json;

use crate::checks::{MAX_ENTRIES, MAX_LINE, check_line};
use crate::error::{Result, SmsError};
use crate::model::{Task, TaskResults, TaskStatus, now_ms};
use crate::service::Sms;

/// Result URIs kept per task (the oldest go first).
pub const MAX_RESULT_URIS: usize = 100;

/// One reported result of a task.
#[derive(Debug, Clone, Default)]
pub struct TaskResult {
    /// Where the result is (empty: none).
    pub uri: String,
    /// `completed`, `failed`, ….
    pub status: String,
    /// When it completed, seconds since the Unix epoch (none: now).
    pub completed_at: Option<i64>,
    /// Free-form metadata.
    pub metadata: BTreeMap<String, String>,
}

impl TaskResult {
    fn check(&self) -> Result<()> {
        check_line("result_uri", &self.uri, MAX_LINE)?;
        check_line("result_status", &self.status, 256)?;
        if self.metadata.len() > MAX_ENTRIES {
            return Err(SmsError::invalid(
                "result_metadata",
                format!("at most {MAX_ENTRIES} entries"),
            ));
        }
        for (k, v) in &self.metadata {
            let at = format!("result_metadata.{k}");
            check_line(&at, k, 256)?;
            check_line(&at, v, MAX_LINE)?;
        }
        Ok(())
    }
}

impl Sms {
    /// Store `task` changed by `change`, with an event of `kind` carrying `data` (and the task's
    /// node, which task-event subscribers filter on).
    async fn change_task(
        &self,
        id: &str,
        kind: &'static str,
        change: impl FnOnce(&mut Task) -> Result<serde_json::Value>,
    ) -> Result<Task> {
        let _task = self.task_locks.lock(id).await;
        // An unregistration by status closes the gate as `delete_task` does.
        let _closed = if kind == "task.status" {
            Some(self.task_gates.close(id).await)
        } else {
            None
        };
        let mut task = self
            .tasks
            .read()
            .await
            .get(id)
            .cloned()
            .ok_or_else(|| SmsError::not_found("task", id))?;
        let data = change(&mut task)?;
        self.store_task(id, Some(&task), kind, data).await?;
        Ok(task)
    }

    /// Set a task's status (SPEAR's `UpdateTaskStatus`). With a `version`, the update applies
    /// only when it is above the task's `status_version` (else [`SmsError::Conflict`]: a stale
    /// update never overwrites a newer one), and the task takes that version; without, the
    /// version goes up by one.
    pub async fn set_task_status(
        &self,
        id: &str,
        status: TaskStatus,
        reason: Option<String>,
        version: Option<u64>,
    ) -> Result<Task> {
        if let Some(r) = &reason {
            check_line("reason", r, MAX_LINE)?;
        }
        self.change_task(id, "task.status", |t| {
            match version {
                Some(v) if v <= t.status_version => {
                    return Err(SmsError::Conflict(format!(
                        "status_version {v} is not above the task's {}: a newer update applied",
                        t.status_version
                    )));
                }
                Some(v) => t.status_version = v,
                None => t.status_version = t.status_version.saturating_add(1),
            }
            t.status = status;
            t.unregistered_reason = if status == TaskStatus::Unregistered {
                reason.clone()
            } else {
                None
            };
            Ok(json!({"status": status.as_str(), "reason": reason}))
        })
        .await
    }

    /// Record a task's result (SPEAR's `UpdateTaskResult`).
    pub async fn record_task_result(&self, id: &str, result: TaskResult) -> Result<Task> {
        result.check()?;
        self.change_task(id, "task.result", |t| {
            let r = t.result.get_or_insert_with(TaskResults::default);
            if !result.uri.is_empty() {
                // Each URI once, the latest last: the oldest go first past the cap.
                r.uris.retain(|u| u != &result.uri);
                r.uris.push(result.uri.clone());
                if r.uris.len() > MAX_RESULT_URIS {
                    let extra = r.uris.len() - MAX_RESULT_URIS;
                    r.uris.drain(..extra);
                }
                r.last_uri.clone_from(&result.uri);
            }
            r.last_status.clone_from(&result.status);
            r.last_completed_at = result.completed_at.unwrap_or(now_ms() / 1000);
            r.last_metadata.clone_from(&result.metadata);
            Ok(json!({"result_uri": result.uri, "result_status": result.status}))
        })
        .await
    }
}
