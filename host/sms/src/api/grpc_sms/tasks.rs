//! `sms.TaskService`.

use std::pin::Pin;

use futures::{Stream, StreamExt};
use spear_proto::sms;
use tonic::{Request, Response, Status};

use super::secs;
use crate::api::grpc::{Grpc, required};
use crate::api::tasks::{TaskFilter, page};
use crate::error::SmsError;
use crate::model::{self, Executable, Priority, TaskStatus};
use crate::task_updates::TaskResult;
use crate::tasks::{RegisterTask, TaskExecutable};

/// Tasks a `ListTasks` answers when it asks for none (SPEAR's default).
const DEFAULT_LIMIT: usize = 100;

fn wire_status(s: TaskStatus) -> sms::TaskStatus {
    match s {
        TaskStatus::Registered => sms::TaskStatus::Registered,
        TaskStatus::Active => sms::TaskStatus::Active,
        TaskStatus::Inactive => sms::TaskStatus::Inactive,
        TaskStatus::Unregistered => sms::TaskStatus::Unregistered,
    }
}

fn status_of(s: i32, field: &str) -> Result<TaskStatus, SmsError> {
    match sms::TaskStatus::try_from(s) {
        Ok(sms::TaskStatus::Registered) => Ok(TaskStatus::Registered),
        Ok(sms::TaskStatus::Active) => Ok(TaskStatus::Active),
        Ok(sms::TaskStatus::Inactive) => Ok(TaskStatus::Inactive),
        Ok(sms::TaskStatus::Unregistered) => Ok(TaskStatus::Unregistered),
        _ => Err(SmsError::invalid(
            field,
            format!("{s} is not a status SMS keeps (registered, active, inactive, unregistered)"),
        )),
    }
}

fn wire_priority(p: Priority) -> sms::TaskPriority {
    match p {
        Priority::Low => sms::TaskPriority::Low,
        Priority::Normal => sms::TaskPriority::Normal,
        Priority::High => sms::TaskPriority::High,
        Priority::Urgent => sms::TaskPriority::Urgent,
    }
}

/// SPEAR's priority; UNKNOWN (0, proto3's default) is no priority given.
fn priority_of(p: i32) -> Result<Option<&'static str>, SmsError> {
    Ok(match sms::TaskPriority::try_from(p) {
        Ok(sms::TaskPriority::Unknown) => None,
        Ok(sms::TaskPriority::Low) => Some("low"),
        Ok(sms::TaskPriority::Normal) => Some("normal"),
        Ok(sms::TaskPriority::High) => Some("high"),
        Ok(sms::TaskPriority::Urgent) => Some("urgent"),
        Err(_) => {
            return Err(SmsError::invalid(
                "priority",
                format!("{p} is not a priority"),
            ));
        }
    })
}

fn type_name(t: i32) -> Result<&'static str, SmsError> {
    match sms::ExecutableType::try_from(t) {
        Ok(sms::ExecutableType::Binary) => Ok("binary"),
        Ok(sms::ExecutableType::Script) => Ok("script"),
        Ok(sms::ExecutableType::Container) => Ok("container"),
        Ok(sms::ExecutableType::Wasm) => Ok("wasm"),
        Ok(sms::ExecutableType::Process) => Ok("process"),
        _ => Err(SmsError::invalid(
            "executable.type",
            format!("{t} is not an executable type SMS runs"),
        )),
    }
}

fn wire_type(kind: &str) -> sms::ExecutableType {
    match kind {
        "container" => sms::ExecutableType::Container,
        "wasm" => sms::ExecutableType::Wasm,
        "process" => sms::ExecutableType::Process,
        _ => sms::ExecutableType::Unknown,
    }
}

fn wire_executable(e: Executable) -> sms::TaskExecutable {
    sms::TaskExecutable {
        r#type: wire_type(&e.kind).into(),
        uri: e.uri,
        name: e.name,
        checksum_sha256: String::new(),
        args: e.args,
        env: e.env.into_iter().collect(),
    }
}

/// A task's execution kind: its `execution_kind` in metadata or config (`long_running`), else
/// short-running (SPEAR's rule).
fn execution_kind(t: &model::Task) -> sms::TaskExecutionKind {
    let said = t
        .metadata
        .get("execution_kind")
        .or_else(|| t.config.get("execution_kind"));
    match said.map(|s| s.to_ascii_lowercase()) {
        Some(s) if s == "long_running" => sms::TaskExecutionKind::LongRunning,
        _ => sms::TaskExecutionKind::ShortRunning,
    }
}

fn wire_task(t: model::Task) -> sms::Task {
    let kind = execution_kind(&t);
    let result = t.result.clone().unwrap_or_default();
    sms::Task {
        task_id: t.task_id,
        name: t.name,
        description: t.description,
        status: wire_status(t.status).into(),
        priority: wire_priority(t.priority).into(),
        node_uuid: t.node_uuid.unwrap_or_default(),
        endpoint: t.endpoint,
        version: t.version,
        capabilities: t.capabilities,
        registered_at: secs(t.registered_at_ms),
        last_heartbeat: secs(t.registered_at_ms),
        metadata: t.metadata.into_iter().collect(),
        config: t.config.into_iter().collect(),
        executable: t.executable.map(wire_executable),
        result_uris: result.uris,
        last_result_uri: result.last_uri,
        last_result_status: result.last_status,
        last_completed_at: result.last_completed_at,
        last_result_metadata: result.last_metadata.into_iter().collect(),
        execution_kind: kind.into(),
    }
}

/// A stream of task events.
type TaskEventStream = Pin<Box<dyn Stream<Item = Result<sms::TaskEvent, Status>> + Send>>;

#[tonic::async_trait]
impl sms::task_service_server::TaskService for Grpc {
    async fn register_task(
        &self,
        r: Request<sms::RegisterTaskRequest>,
    ) -> Result<Response<sms::RegisterTaskResponse>, Status> {
        let r = r.into_inner();
        let executable = match r.executable {
            None => None,
            Some(e) => Some(TaskExecutable {
                kind: type_name(e.r#type)?.into(),
                uri: e.uri,
                name: e.name,
                args: e.args,
                env: e.env.into_iter().collect(),
                checksum_sha256: Some(e.checksum_sha256).filter(|s| !s.is_empty()),
            }),
        };
        let mut metadata: std::collections::BTreeMap<String, String> =
            r.metadata.into_iter().collect();
        match sms::TaskExecutionKind::try_from(r.execution_kind) {
            Ok(sms::TaskExecutionKind::LongRunning) => {
                metadata.insert("execution_kind".into(), "long_running".into());
            }
            Ok(sms::TaskExecutionKind::ShortRunning) => {
                metadata.insert("execution_kind".into(), "short_running".into());
            }
            Ok(sms::TaskExecutionKind::Unknown) => {}
            Err(_) => {
                return Err(SmsError::invalid(
                    "execution_kind",
                    format!("{} is not an execution kind", r.execution_kind),
                )
                .into());
            }
        }
        let req = RegisterTask {
            name: r.name,
            description: r.description,
            priority: priority_of(r.priority)?.map(str::to_owned),
            node_uuid: Some(r.node_uuid).filter(|n| !n.is_empty()),
            endpoint: r.endpoint,
            version: r.version,
            capabilities: r.capabilities,
            executable,
            metadata,
            config: r.config.into_iter().collect(),
            ..RegisterTask::default()
        };
        let task = self.0.register_task(req).await?;
        Ok(Response::new(sms::RegisterTaskResponse {
            success: true,
            message: "Task registered successfully".into(),
            task_id: task.task_id.clone(),
            task: Some(wire_task(task)),
        }))
    }

    async fn list_tasks(
        &self,
        r: Request<sms::ListTasksRequest>,
    ) -> Result<Response<sms::ListTasksResponse>, Status> {
        let r = r.into_inner();
        // Below 1 (proto3's 0, SPEAR's gateway's -1) a filter is none.
        let status = if r.status_filter > 0 {
            Some(
                status_of(r.status_filter, "status_filter")?
                    .as_str()
                    .to_owned(),
            )
        } else {
            None
        };
        let priority = if r.priority_filter > 0 {
            priority_of(r.priority_filter)?.map(str::to_owned)
        } else {
            None
        };
        let limit = usize::try_from(r.limit)
            .ok()
            .filter(|l| *l > 0)
            .unwrap_or(DEFAULT_LIMIT)
            .min(crate::api::tasks::MAX_LIMIT);
        let filter = TaskFilter {
            status,
            priority,
            node_uuid: Some(r.node_uuid).filter(|n| !n.is_empty()),
            limit: Some(limit),
            offset: Some(usize::try_from(r.offset).unwrap_or(0)),
        };
        let list = page(self.0.tasks(None, None).await?, &filter)?;
        Ok(Response::new(sms::ListTasksResponse {
            total_count: i32::try_from(list.total_count).unwrap_or(i32::MAX),
            tasks: list.tasks.into_iter().map(|t| wire_task(t.task)).collect(),
        }))
    }

    async fn get_task(
        &self,
        r: Request<sms::GetTaskRequest>,
    ) -> Result<Response<sms::GetTaskResponse>, Status> {
        let r = r.into_inner();
        required("task_id", &r.task_id)?;
        Ok(Response::new(match self.0.task(&r.task_id).await {
            Ok(t) => sms::GetTaskResponse {
                found: true,
                task: Some(wire_task(t)),
            },
            Err(SmsError::NotFound { .. }) => sms::GetTaskResponse {
                found: false,
                task: None,
            },
            Err(e) => return Err(e.into()),
        }))
    }

    async fn unregister_task(
        &self,
        r: Request<sms::UnregisterTaskRequest>,
    ) -> Result<Response<sms::UnregisterTaskResponse>, Status> {
        let r = r.into_inner();
        required("task_id", &r.task_id)?;
        let reason = Some(r.reason).filter(|s| !s.is_empty());
        let message = match self.0.delete_task(&r.task_id, reason).await {
            Ok(true) => "Task removed".to_owned(),
            Ok(false) => "Task unregistered successfully".to_owned(),
            Err(SmsError::NotFound { .. }) => {
                return Ok(Response::new(sms::UnregisterTaskResponse {
                    success: false,
                    message: format!("no task `{}`", r.task_id),
                    task_id: r.task_id,
                }));
            }
            Err(e) => return Err(e.into()),
        };
        Ok(Response::new(sms::UnregisterTaskResponse {
            success: true,
            message,
            task_id: r.task_id,
        }))
    }

    type SubscribeTaskEventsStream = TaskEventStream;

    async fn subscribe_task_events(
        &self,
        r: Request<sms::SubscribeTaskEventsRequest>,
    ) -> Result<Response<TaskEventStream>, Status> {
        let r = r.into_inner();
        required("node_uuid", &r.node_uuid)?;
        crate::checks::check_line("node_uuid", &r.node_uuid, 128)?;
        let after = u64::try_from(r.last_event_id).unwrap_or(0);
        let last = self.0.events().last_cursor().await;
        if after > last {
            return Err(SmsError::invalid(
                "last_event_id",
                format!("event {after} is beyond the last event ({last})"),
            )
            .into());
        }
        self.0.events().resume_point(after)?;
        let node: std::sync::Arc<str> = r.node_uuid.into();
        let stream = self.0.events().subscribe(after).filter_map(move |item| {
            let node = node.clone();
            async move {
                match item {
                    Ok(e) => task_event(e, &node).map(Ok),
                    Err(e) => Some(Err(Status::from(e))),
                }
            }
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn update_task_status(
        &self,
        r: Request<sms::UpdateTaskStatusRequest>,
    ) -> Result<Response<sms::UpdateTaskStatusResponse>, Status> {
        let r = r.into_inner();
        required("task_id", &r.task_id)?;
        let status = status_of(r.status, "status")?;
        let reason = Some(r.reason).filter(|s| !s.is_empty());
        Ok(Response::new(
            match self
                .0
                .set_task_status(
                    &r.task_id,
                    status,
                    reason,
                    Some(r.status_version).filter(|v| *v > 0),
                )
                .await
            {
                Ok(t) => sms::UpdateTaskStatusResponse {
                    success: true,
                    message: "Task status updated".into(),
                    task: Some(wire_task(t)),
                },
                Err(SmsError::NotFound { .. }) => sms::UpdateTaskStatusResponse {
                    success: false,
                    message: "Task not found".into(),
                    task: None,
                },
                Err(SmsError::Conflict(why)) => sms::UpdateTaskStatusResponse {
                    success: false,
                    message: why,
                    task: None,
                },
                Err(e) => return Err(e.into()),
            },
        ))
    }

    async fn update_task_result(
        &self,
        r: Request<sms::UpdateTaskResultRequest>,
    ) -> Result<Response<sms::UpdateTaskResultResponse>, Status> {
        let r = r.into_inner();
        required("task_id", &r.task_id)?;
        let result = TaskResult {
            uri: r.result_uri,
            status: r.result_status,
            completed_at: Some(r.completed_at).filter(|t| *t > 0),
            metadata: r.result_metadata.into_iter().collect(),
        };
        Ok(Response::new(
            match self.0.record_task_result(&r.task_id, result).await {
                Ok(t) => sms::UpdateTaskResultResponse {
                    success: true,
                    message: "Task result updated".into(),
                    task: Some(wire_task(t)),
                },
                Err(SmsError::NotFound { .. }) => sms::UpdateTaskResultResponse {
                    success: false,
                    message: "Task not found".into(),
                    task: None,
                },
                Err(e) => return Err(e.into()),
            },
        ))
    }
}

/// The task event `e` is for `node`, if it is one: its cursor is the event id (resumable across
/// restarts, unlike SPEAR's per-node counter).
fn task_event(e: model::Event, node: &str) -> Option<sms::TaskEvent> {
    let kind = match e.kind.as_str() {
        "task.registered" => sms::TaskEventKind::Create,
        "task.status" | "task.result" => sms::TaskEventKind::Update,
        "task.unregistered" | "task.deleted" => sms::TaskEventKind::Cancel,
        _ => return None,
    };
    if e.data.get("node_uuid").and_then(|n| n.as_str()) != Some(node) {
        return None;
    }
    let execution_kind = match e.data.get("execution_kind").and_then(|k| k.as_str()) {
        Some("long_running") => sms::TaskExecutionKind::LongRunning,
        _ => sms::TaskExecutionKind::ShortRunning,
    };
    Some(sms::TaskEvent {
        event_id: i64::try_from(e.cursor).unwrap_or(i64::MAX),
        ts: secs(e.at_ms),
        node_uuid: node.to_owned(),
        task_id: e.subject,
        kind: kind.into(),
        execution_kind: execution_kind.into(),
        execution_id: None,
    })
}
