//! The web admin's task routes (SPEAR's `/admin/api/tasks…`): a searchable, sortable list whose
//! items carry the executable flattened (`executable_type`, `_uri`, `_name`), one task with its
//! checksum, arguments and environment, and creation from the admin's form.

use axum::Json;
use axum::extract::State;
use serde::Serialize;

use super::query::{ListQuery, matches};
use crate::api::body::{ApiJson, ApiPath, ApiQuery};
use crate::api::rest::AppState;
use crate::api::tasks::TaskView;
use crate::error::{Result, SmsError};
use crate::model::Task;
use crate::tasks::RegisterTask;

/// A task in the admin's list: the API's task and SPEAR's flattened executable fields.
#[derive(Debug, Serialize)]
pub struct AdminTask {
    /// `binary`… `wasm`, or empty without an executable.
    pub executable_type: String,
    /// The executable's URI.
    pub executable_uri: String,
    /// The executable's name.
    pub executable_name: String,
    /// The task as `GET /api/v1/tasks` shows it.
    #[serde(flatten)]
    pub task: TaskView,
}

impl From<Task> for AdminTask {
    fn from(task: Task) -> Self {
        let e = task.executable.clone().unwrap_or_default();
        Self {
            executable_type: e.kind,
            executable_uri: e.uri,
            executable_name: e.name,
            task: task.into(),
        }
    }
}

/// `{tasks, total_count}`.
#[derive(Debug, Serialize)]
pub struct AdminTasks {
    /// The page.
    pub tasks: Vec<AdminTask>,
    /// How many tasks the search matched.
    pub total_count: usize,
}

pub(super) async fn list(
    State(sms): State<AppState>,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<AdminTasks>> {
    let needle = query.needle()?;
    let sort = query.sort(&["registered_at", "last_heartbeat", "name", "priority"])?;
    let status = query.status.as_deref().filter(|s| !s.is_empty());
    let mut tasks: Vec<Task> = sms
        .tasks(status, None)
        .await?
        .into_iter()
        .filter(|t| needle.as_deref().is_none_or(|q| searched(t, q)))
        .collect();
    if let Some(sort) = sort {
        tasks.sort_by(|a, b| {
            let order = match sort.field.as_str() {
                "name" => a.name.cmp(&b.name),
                "priority" => a.priority.cmp(&b.priority),
                _ => a.registered_at_ms.cmp(&b.registered_at_ms),
            };
            if sort.desc { order.reverse() } else { order }
        });
    }
    let (page, total_count) = query.page(tasks)?;
    Ok(Json(AdminTasks {
        tasks: page.into_iter().map(AdminTask::from).collect(),
        total_count,
    }))
}

/// Whether the search `q` (lowercase) finds `task`: its id, name, node, endpoint, metadata.
fn searched(task: &Task, q: &str) -> bool {
    matches(
        q,
        [
            task.task_id.as_str(),
            task.name.as_str(),
            task.node_uuid.as_deref().unwrap_or_default(),
            task.endpoint.as_str(),
        ]
        .into_iter()
        .chain(
            task.metadata
                .iter()
                .flat_map(|(k, v)| [k.as_str(), v.as_str()]),
        ),
    )
}

/// One task with its executable's details: `{found, task}` (always 200, as SPEAR's).
#[derive(Debug, Serialize)]
pub struct AdminTaskDetail {
    /// Whether the task is known.
    pub found: bool,
    /// The task.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task: Option<Detail>,
}

/// A task with its executable's arguments and environment.
#[derive(Debug, Serialize)]
pub struct Detail {
    /// The list's fields.
    #[serde(flatten)]
    pub task: AdminTask,
    /// The executable's arguments.
    pub executable_args: Vec<String>,
    /// The executable's environment.
    pub executable_env: std::collections::BTreeMap<String, String>,
}

pub(super) async fn detail(
    State(sms): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<AdminTaskDetail>> {
    match sms.task(&id).await {
        Ok(task) => {
            let e = task.executable.clone().unwrap_or_default();
            Ok(Json(AdminTaskDetail {
                found: true,
                task: Some(Detail {
                    task: task.into(),
                    executable_args: e.args,
                    executable_env: e.env,
                }),
            }))
        }
        Err(SmsError::NotFound { .. }) => Ok(Json(AdminTaskDetail {
            found: false,
            task: None,
        })),
        Err(e) => Err(e),
    }
}

/// `{success, task_id, message}`.
#[derive(Debug, Serialize)]
pub struct Created {
    /// Always `true` (a refused task is answered with an error).
    pub success: bool,
    /// The new task's id.
    pub task_id: String,
    /// `Task registered successfully`.
    pub message: String,
}

pub(super) async fn create(
    State(sms): State<AppState>,
    ApiJson(mut req): ApiJson<RegisterTask>,
) -> Result<Json<Created>> {
    // The admin's "No Executable" may still send an executable with no type.
    if req
        .executable
        .as_ref()
        .is_some_and(|e| e.kind.is_empty() && e.uri.is_empty() && e.name.is_empty())
    {
        req.executable = None;
    }
    let task = sms.register_task(req).await?;
    Ok(Json(Created {
        success: true,
        task_id: task.task_id,
        message: "Task registered successfully".into(),
    }))
}
