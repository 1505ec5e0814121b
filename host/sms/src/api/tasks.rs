//! The task routes, answering in SPEAR's shapes with SMS's fields beside them (see
//! docs/spear-compat.md): registration answers 200 `{success, task_id, message, …task}`; a task
//! carries SPEAR's `registered_at` and `last_heartbeat` in seconds; lists carry `total_count` and
//! take `node_uuid`, `limit` and `offset`; a delete (with an optional `{"reason"}`) unregisters,
//! a second one removes.

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::api::body::{ApiBytes, ApiJson, ApiPath, ApiQuery};
use crate::api::nodes::Done;
use crate::api::rest::{AppState, ErrorBody};
use crate::error::{Result, SmsError};
use crate::model::Task;
use crate::tasks::RegisterTask;

/// Most tasks one list answers.
pub const MAX_LIMIT: usize = 10_000;

/// `?status=&priority=&node_uuid=&limit=&offset=`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TaskFilter {
    /// `registered`, `active`, `inactive` or `unregistered`.
    #[param(value_type = Option<crate::model::TaskStatus>)]
    pub status: Option<String>,
    /// `low`, `normal`, `high` or `urgent`.
    #[param(value_type = Option<crate::model::Priority>)]
    pub priority: Option<String>,
    /// Only tasks pinned to this node.
    pub node_uuid: Option<String>,
    /// Most tasks answered (1 to 10,000; default all, at most 10,000).
    #[param(minimum = 1, maximum = 10000)]
    pub limit: Option<usize>,
    /// Tasks of the filtered list skipped first (oldest first).
    pub offset: Option<usize>,
}

/// A task as the API shows it: the record, and SPEAR's times in seconds.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TaskView {
    /// The record.
    #[serde(flatten)]
    pub task: Task,
    /// SPEAR's: the registration, seconds since the Unix epoch.
    pub registered_at: i64,
    /// SPEAR's: the same (SMS keeps no heartbeat of a task).
    pub last_heartbeat: i64,
}

impl From<Task> for TaskView {
    fn from(task: Task) -> Self {
        let secs = task.registered_at_ms.div_euclid(1000);
        Self {
            task,
            registered_at: secs,
            last_heartbeat: secs,
        }
    }
}

/// A page of tasks.
#[derive(Debug, Serialize, ToSchema)]
pub struct TaskList {
    /// The tasks, oldest first.
    pub tasks: Vec<TaskView>,
    /// How many tasks the filters match, before `offset` and `limit`.
    pub total_count: usize,
}

/// The page of `all` that `f` asks for (the leader's and a standby's answer alike).
pub fn page(all: Vec<Task>, f: &TaskFilter) -> Result<TaskList> {
    if f.limit == Some(0) || f.limit.is_some_and(|l| l > MAX_LIMIT) {
        return Err(SmsError::invalid(
            "limit",
            format!("must be 1 to {MAX_LIMIT}"),
        ));
    }
    let node = f.node_uuid.as_deref().filter(|n| !n.is_empty());
    if let Some(n) = node {
        crate::checks::check_line("node_uuid", n, 128)?;
    }
    let matching: Vec<Task> =
        crate::tasks::select(all, f.status.as_deref(), f.priority.as_deref())?
            .into_iter()
            .filter(|t| node.is_none_or(|n| t.node_uuid.as_deref() == Some(n)))
            .collect();
    let total_count = matching.len();
    let tasks = matching
        .into_iter()
        .skip(f.offset.unwrap_or(0))
        .take(f.limit.unwrap_or(MAX_LIMIT))
        .map(TaskView::from)
        .collect();
    Ok(TaskList { tasks, total_count })
}

/// The answer to a registration: SPEAR's `success`, `task_id` and `message`, and the task.
#[derive(Debug, Serialize, ToSchema)]
pub struct Registered {
    /// Always `true`.
    pub success: bool,
    /// `Task registered successfully`.
    pub message: String,
    /// The task, at the top level (its `task_id` is SPEAR's field too).
    #[serde(flatten)]
    pub task: TaskView,
}

/// `DELETE /api/v1/tasks/{id}`'s optional body.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Unregister {
    /// Why (kept on the task).
    #[serde(default)]
    pub reason: Option<String>,
}

#[utoipa::path(post, path = "/api/v1/tasks", request_body = RegisterTask,
    responses((status = 200, body = Registered), (status = 400, body = ErrorBody)), tag = "tasks")]
pub(crate) async fn register_task(
    State(sms): State<AppState>,
    ApiJson(req): ApiJson<RegisterTask>,
) -> Result<Json<Registered>> {
    let task = sms.register_task(req).await?;
    Ok(Json(Registered {
        success: true,
        message: "Task registered successfully".into(),
        task: task.into(),
    }))
}

#[utoipa::path(get, path = "/api/v1/tasks", params(TaskFilter),
    responses((status = 200, body = TaskList), (status = 400, body = ErrorBody)), tag = "tasks")]
pub(crate) async fn list_tasks(
    State(sms): State<AppState>,
    ApiQuery(f): ApiQuery<TaskFilter>,
) -> Result<Json<TaskList>> {
    let all = sms.tasks(None, None).await?;
    page(all, &f).map(Json)
}

#[utoipa::path(get, path = "/api/v1/tasks/{task_id}",
    params(("task_id" = String, Path, description = "the task's id")),
    responses((status = 200, body = TaskView), (status = 404, body = ErrorBody)), tag = "tasks")]
pub(crate) async fn get_task(
    State(sms): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<TaskView>> {
    sms.task(&id).await.map(|t| Json(t.into()))
}

#[utoipa::path(delete, path = "/api/v1/tasks/{task_id}",
    params(("task_id" = String, Path, description = "the task's id")),
    request_body = Option<Unregister>,
    responses((status = 200, body = Done), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)), tag = "tasks")]
pub(crate) async fn delete_task(
    State(sms): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiBytes(body): ApiBytes,
) -> Result<Json<Done>> {
    let req: Unregister = crate::api::body::optional_json(&body, "an unregistration")?;
    let removed = sms.delete_task(&id, req.reason).await?;
    Ok(Json(Done {
        success: true,
        message: if removed {
            "Task removed".into()
        } else {
            "Task unregistered successfully".into()
        },
    }))
}
