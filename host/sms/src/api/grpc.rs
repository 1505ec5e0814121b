//! The gRPC front end: the services of `proto/spear/v1`, converting wire types to domain types once,
//! here. Health and reflection are served beside them.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use spear_plugin_runtime::Trigger;
use spear_proto::v1;
use tonic::{Request, Response, Status};

use crate::auth::{Principal, as_node};
use crate::error::SmsError;
use crate::model::{self, Executable, Resources};
use crate::nodes::{Heartbeat, RegisterNode, UpdateNode};
use crate::service::Sms;
use crate::tasks::RegisterTask;

/// Every SMS gRPC service, sharing one [`Sms`].
#[derive(Clone, Debug)]
pub struct Grpc(pub Arc<Sms>);

fn res(r: Option<v1::Resources>) -> Resources {
    r.map(|r| Resources {
        cpu_millis: r.cpu_millis,
        memory_mb: r.memory_mb,
        disk_mb: r.disk_mb,
    })
    .unwrap_or_default()
}

fn wire_res(r: Resources) -> Option<v1::Resources> {
    Some(v1::Resources {
        cpu_millis: r.cpu_millis,
        memory_mb: r.memory_mb,
        disk_mb: r.disk_mb,
    })
}

fn map<I: IntoIterator<Item = (String, String)>>(m: I) -> BTreeMap<String, String> {
    m.into_iter().collect()
}

fn wire_node(n: model::Node) -> v1::Node {
    v1::Node {
        uuid: n.uuid,
        ip_address: n.ip_address,
        port: i32::from(n.port),
        status: n.status.as_str().into(),
        metadata: n.metadata.into_iter().collect(),
        labels: n.labels.into_iter().collect(),
        capacity: wire_res(n.capacity),
        available: wire_res(n.available),
        executors: n.executors,
        running: n.running,
        slots: n.slots,
        registered_at_ms: n.registered_at_ms,
        last_heartbeat_ms: n.last_heartbeat_ms,
    }
}

fn executable(e: v1::Executable) -> Executable {
    Executable {
        kind: e.r#type,
        uri: e.uri,
        name: e.name,
        args: e.args,
        env: map(e.env),
    }
}

fn wire_executable(e: Executable) -> v1::Executable {
    v1::Executable {
        r#type: e.kind,
        uri: e.uri,
        name: e.name,
        args: e.args,
        env: e.env.into_iter().collect(),
    }
}

fn wire_task(t: model::Task) -> v1::Task {
    v1::Task {
        task_id: t.task_id,
        name: t.name,
        description: t.description,
        status: t.status.as_str().into(),
        priority: t.priority.as_str().into(),
        node_uuid: t.node_uuid.unwrap_or_default(),
        endpoint: t.endpoint,
        version: t.version,
        capabilities: t.capabilities,
        executable: t.executable.map(wire_executable),
        labels: t.labels.into_iter().collect(),
        needs: wire_res(t.needs),
        required_labels: t.required_labels.into_iter().collect(),
        preferred_labels: t.preferred_labels.into_iter().collect(),
        registered_at_ms: t.registered_at_ms,
        config: t.config.into_iter().collect(),
        metadata: t.metadata.into_iter().collect(),
    }
}

fn wire_file(f: model::FileMeta) -> v1::FileMeta {
    v1::FileMeta {
        file_id: f.file_id,
        name: f.name,
        size: f.size,
        uri: f.uri,
        uploaded_at_ms: f.uploaded_at_ms,
    }
}

fn wire_event(e: model::Event) -> v1::Event {
    v1::Event {
        cursor: e.cursor,
        at_ms: e.at_ms,
        kind: e.kind,
        subject: e.subject,
        data_json: e.data.to_string(),
        by: e.by.unwrap_or_default(),
    }
}

pub(super) fn required(field: &str, value: &str) -> Result<(), Status> {
    if value.is_empty() {
        return Err(SmsError::invalid(field, "is required").into());
    }
    Ok(())
}

/// The caller, as the auth layer found it (None: auth off).
pub(crate) fn principal<T>(r: &Request<T>) -> Option<Principal> {
    r.extensions().get::<Principal>().cloned()
}

#[tonic::async_trait]
impl v1::node_service_server::NodeService for Grpc {
    async fn register_node(
        &self,
        r: Request<v1::RegisterNodeRequest>,
    ) -> Result<Response<v1::Node>, Status> {
        let who = principal(&r);
        let r = r.into_inner();
        let mut req = RegisterNode {
            uuid: Some(r.uuid).filter(|u| !u.is_empty()),
            ip_address: r.ip_address,
            port: i64::from(r.port),
            metadata: map(r.metadata),
            labels: map(r.labels),
            capacity: res(r.capacity),
            executors: r.executors,
            slots: Some(r.slots).filter(|s| *s > 0),
        };
        self.0.node_registers(who.as_ref(), &mut req.uuid).await?;
        Ok(Response::new(wire_node(self.0.register_node(req).await?)))
    }

    async fn heartbeat(
        &self,
        r: Request<v1::HeartbeatRequest>,
    ) -> Result<Response<v1::HeartbeatResponse>, Status> {
        let who = principal(&r);
        let r = r.into_inner();
        as_node(who.as_ref(), &r.uuid)?;
        required("uuid", &r.uuid)?;
        let hb = Heartbeat {
            health_info: map(r.health_info),
            available: r.available.map(|a| res(Some(a))),
            running: Some(r.running),
        };
        let node = self.0.heartbeat(&r.uuid, hb).await?;
        Ok(Response::new(v1::HeartbeatResponse {
            server_time_ms: model::now_ms(),
            status: node.status.as_str().into(),
        }))
    }

    async fn update_node(
        &self,
        r: Request<v1::UpdateNodeRequest>,
    ) -> Result<Response<v1::Node>, Status> {
        let who = principal(&r);
        let r = r.into_inner();
        as_node(who.as_ref(), &r.uuid)?;
        required("uuid", &r.uuid)?;
        let req = UpdateNode {
            status: Some(r.status).filter(|s| !s.is_empty()),
            metadata: Some(map(r.metadata)).filter(|m| !m.is_empty()),
            labels: Some(map(r.labels)).filter(|m| !m.is_empty()),
        };
        crate::auth::node_may_set(who.as_ref(), req.status.as_deref())?;
        Ok(Response::new(wire_node(
            self.0
                .update_node(&r.uuid, req, crate::auth::operator(who.as_ref()))
                .await?,
        )))
    }

    async fn delete_node(
        &self,
        r: Request<v1::NodeRef>,
    ) -> Result<Response<v1::DeleteNodeResponse>, Status> {
        let who = principal(&r);
        let r = r.into_inner();
        as_node(who.as_ref(), &r.uuid)?;
        required("uuid", &r.uuid)?;
        self.0.node_may_delete(who.as_ref(), &r.uuid).await?;
        self.0
            .delete_node(&r.uuid, "deleted through the API")
            .await?;
        Ok(Response::new(v1::DeleteNodeResponse {}))
    }

    async fn get_node(&self, r: Request<v1::NodeRef>) -> Result<Response<v1::Node>, Status> {
        let r = r.into_inner();
        required("uuid", &r.uuid)?;
        Ok(Response::new(wire_node(self.0.node(&r.uuid).await?)))
    }

    async fn list_nodes(
        &self,
        r: Request<v1::ListNodesRequest>,
    ) -> Result<Response<v1::ListNodesResponse>, Status> {
        let r = r.into_inner();
        let nodes = self.0.nodes(unset_if_empty(&r.status)).await?;
        Ok(Response::new(v1::ListNodesResponse {
            nodes: nodes.into_iter().map(wire_node).collect(),
        }))
    }
}

#[tonic::async_trait]
impl v1::task_service_server::TaskService for Grpc {
    async fn register_task(
        &self,
        r: Request<v1::RegisterTaskRequest>,
    ) -> Result<Response<v1::Task>, Status> {
        let req = task_from_wire(r.into_inner());
        Ok(Response::new(wire_task(self.0.register_task(req).await?)))
    }

    async fn get_task(&self, r: Request<v1::TaskRef>) -> Result<Response<v1::Task>, Status> {
        let r = r.into_inner();
        required("task_id", &r.task_id)?;
        Ok(Response::new(wire_task(self.0.task(&r.task_id).await?)))
    }

    async fn invoke(
        &self,
        r: Request<v1::InvokeTaskRequest>,
    ) -> Result<Response<v1::InvokeTaskResponse>, Status> {
        let r = r.into_inner();
        required("task_id", &r.task_id)?;
        let done = self
            .0
            .invoke(crate::invocations::Invoke {
                task_id: r.task_id,
                function: r.function_name,
                payload: r.payload,
                timeout_ms: r.timeout_ms,
            })
            .await?;
        Ok(Response::new(v1::InvokeTaskResponse {
            invocation_id: done.invocation_id,
            node_uuid: done.node_uuid,
            output: done.output,
            instance: done.instance,
            tier: done.tier,
            duration_us: done.duration_us,
        }))
    }

    async fn list_tasks(
        &self,
        r: Request<v1::ListTasksRequest>,
    ) -> Result<Response<v1::ListTasksResponse>, Status> {
        let r = r.into_inner();
        let tasks = self
            .0
            .tasks(unset_if_empty(&r.status), unset_if_empty(&r.priority))
            .await?;
        Ok(Response::new(v1::ListTasksResponse {
            tasks: tasks.into_iter().map(wire_task).collect(),
        }))
    }

    async fn delete_task(
        &self,
        r: Request<v1::TaskRef>,
    ) -> Result<Response<v1::DeleteTaskResponse>, Status> {
        let r = r.into_inner();
        required("task_id", &r.task_id)?;
        self.0.delete_task(&r.task_id, None).await?;
        Ok(Response::new(v1::DeleteTaskResponse {}))
    }
}

#[tonic::async_trait]
impl v1::file_service_server::FileService for Grpc {
    async fn upload(
        &self,
        r: Request<v1::UploadRequest>,
    ) -> Result<Response<v1::FileMeta>, Status> {
        let r = r.into_inner();
        let name = if r.name.is_empty() {
            "upload".to_owned()
        } else {
            r.name
        };
        Ok(Response::new(wire_file(
            self.0.upload_file(&name, r.content).await?,
        )))
    }

    async fn get_file(&self, r: Request<v1::FileRef>) -> Result<Response<v1::FileMeta>, Status> {
        Ok(Response::new(wire_file(
            self.0.file_meta(&r.into_inner().file_id).await?,
        )))
    }

    async fn download(&self, r: Request<v1::FileRef>) -> Result<Response<v1::FileContent>, Status> {
        let (meta, content) = self.0.download_file(&r.into_inner().file_id).await?;
        Ok(Response::new(v1::FileContent {
            meta: Some(wire_file(meta)),
            content,
        }))
    }

    async fn list_files(
        &self,
        _: Request<v1::ListFilesRequest>,
    ) -> Result<Response<v1::ListFilesResponse>, Status> {
        let files = self.0.files().await?;
        Ok(Response::new(v1::ListFilesResponse {
            files: files.into_iter().map(wire_file).collect(),
        }))
    }

    async fn delete_file(
        &self,
        r: Request<v1::FileRef>,
    ) -> Result<Response<v1::DeleteFileResponse>, Status> {
        self.0.delete_file(&r.into_inner().file_id).await?;
        Ok(Response::new(v1::DeleteFileResponse {}))
    }
}

fn wire_report(r: &spear_plugin_runtime::ReloadReport) -> v1::ReloadReport {
    let json = serde_json::to_value(r).unwrap_or_default();
    v1::ReloadReport {
        outcome: json["outcome"].as_str().unwrap_or_default().into(),
        report_json: json.to_string(),
    }
}

#[tonic::async_trait]
impl v1::plugin_service_server::PluginService for Grpc {
    async fn list_plugins(
        &self,
        _: Request<v1::ListPluginsRequest>,
    ) -> Result<Response<v1::ListPluginsResponse>, Status> {
        let plugins = self
            .0
            .plugins()
            .plugins()
            .into_iter()
            .map(|p| {
                let state = serde_json::to_value(p.state).unwrap_or_default();
                v1::Plugin {
                    name: p.name,
                    kind: p.kind.map(|k| k.to_string()).unwrap_or_default(),
                    form: p.form.map(|f| f.to_string()).unwrap_or_default(),
                    version: p.version.unwrap_or_default(),
                    file: p.file.display().to_string(),
                    sha256: p.sha256.unwrap_or_default(),
                    state: state.as_str().unwrap_or_default().into(),
                    last_error: p.last_error.unwrap_or_default(),
                    file_missing: p.file_missing,
                    signed_by: p.signed_by.unwrap_or_default(),
                }
            })
            .collect();
        Ok(Response::new(v1::ListPluginsResponse { plugins }))
    }

    async fn reload(
        &self,
        _: Request<v1::ReloadRequest>,
    ) -> Result<Response<v1::ReloadReport>, Status> {
        let host = self.0.plugins().clone();
        let report = tokio::task::spawn_blocking(move || host.reload(Trigger::Api))
            .await
            .map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(wire_report(&report)))
    }

    async fn history(
        &self,
        _: Request<v1::HistoryRequest>,
    ) -> Result<Response<v1::HistoryResponse>, Status> {
        let reports = self.0.plugins().history().iter().map(wire_report).collect();
        Ok(Response::new(v1::HistoryResponse { reports }))
    }
}

/// The event stream's item type.
pub type EventStream = Pin<Box<dyn Stream<Item = Result<v1::Event, Status>> + Send>>;

#[tonic::async_trait]
impl v1::event_service_server::EventService for Grpc {
    type SubscribeStream = EventStream;

    async fn subscribe(
        &self,
        r: Request<v1::SubscribeRequest>,
    ) -> Result<Response<EventStream>, Status> {
        let after = r.into_inner().after;
        let last = self.0.events().last_cursor().await;
        if after > last {
            return Err(SmsError::invalid(
                "after",
                format!("cursor {after} is beyond the last event ({last})"),
            )
            .into());
        }
        self.0.events().resume_point(after)?;
        let stream = self
            .0
            .events()
            .subscribe(after)
            .map(|item| item.map(wire_event).map_err(Status::from));
        Ok(Response::new(Box::pin(stream)))
    }
}

fn wire_result(r: model::ExecResult) -> v1::ExecutionResult {
    v1::ExecutionResult {
        exit_code: r.exit_code,
        signal: r.signal,
        stdout: r.stdout.into_bytes(),
        stderr: r.stderr.into_bytes(),
        stdout_truncated: r.stdout_truncated,
        stderr_truncated: r.stderr_truncated,
        duration_ms: r.duration_ms,
        stdout_blob: r.stdout_blob.map(wire_blob),
        stderr_blob: r.stderr_blob.map(wire_blob),
    }
}

fn wire_blob(b: crate::blobs::BlobRef) -> v1::BlobRef {
    v1::BlobRef {
        sha256: b.sha256,
        size: b.size,
    }
}

pub(super) fn result(r: v1::ExecutionResult) -> model::ExecResult {
    model::ExecResult {
        exit_code: r.exit_code,
        signal: r.signal,
        stdout: String::from_utf8_lossy(&r.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&r.stderr).into_owned(),
        stdout_truncated: r.stdout_truncated,
        stderr_truncated: r.stderr_truncated,
        duration_ms: r.duration_ms,
        stdout_blob: None,
        stderr_blob: None,
    }
}

pub(super) fn wire_execution(e: model::Execution) -> v1::Execution {
    v1::Execution {
        execution_id: e.execution_id,
        task_id: e.task_id.unwrap_or_default(),
        executable: Some(wire_executable(e.executable)),
        state: e.state.as_str().into(),
        priority: e.priority.as_str().into(),
        node_uuid: e.node_uuid.unwrap_or_default(),
        attempt: e.attempt,
        max_attempts: e.max_attempts,
        timeout_ms: e.timeout_ms,
        depends_on: e.depends_on,
        result: e.result.map(wire_result),
        error: e.error.unwrap_or_default(),
        submitted_at_ms: e.submitted_at_ms,
        updated_at_ms: e.updated_at_ms,
        stdin: e.stdin,
        needs: wire_res(e.needs),
        started_at_ms: e.started_at_ms,
        queue_timeout_ms: e.queue_timeout_ms,
        stdin_blob: e.stdin_blob.map(wire_blob),
        deadline_ms: e.deadline_ms,
        estimate_ms: e.estimate_ms,
        deadline_infeasible: e.deadline_infeasible,
        deadline_missed: e.deadline_missed,
        checkpoint: e.checkpoint,
        recovery: e.recovery.as_str().into(),
        checkpoint_data: e.checkpoint_data,
        preemptions: e.preemptions,
        checkpoint_blob: e.checkpoint_blob.map(wire_blob),
        preempting: e.preempting_ms > 0,
        preempt_grace_ms: e.preempt_grace_ms,
    }
}

pub use super::grpc_exec::{AssignmentStream, SESSION_HEADER};

/// A proto3 string field: empty means not given.
pub(super) fn unset_if_empty(s: &str) -> Option<&str> {
    (!s.is_empty()).then_some(s)
}

/// A gRPC task registration as the REST one.
pub fn task_from_wire(r: v1::RegisterTaskRequest) -> RegisterTask {
    RegisterTask {
        name: r.name,
        description: r.description,
        priority: Some(r.priority).filter(|p| !p.is_empty()),
        node_uuid: Some(r.node_uuid).filter(|n| !n.is_empty()),
        endpoint: r.endpoint,
        version: r.version,
        capabilities: r.capabilities,
        executable: r.executable.map(|e| executable(e).into()),
        metadata: map(r.metadata),
        config: map(r.config),
        labels: map(r.labels),
        needs: res(r.needs),
        required_labels: map(r.required_labels),
        preferred_labels: map(r.preferred_labels),
    }
}

/// A gRPC submission as the REST one (proto3's zero values mean "not given").
pub fn submit_from_wire(r: v1::SubmitRequest) -> Result<crate::executions::Submit, SmsError> {
    Ok(crate::executions::Submit {
        task_id: Some(r.task_id).filter(|t| !t.is_empty()),
        executable: r.executable.map(executable),
        priority: Some(r.priority).filter(|p| !p.is_empty()),
        timeout_ms: Some(r.timeout_ms).filter(|t| *t > 0),
        queue_timeout_ms: Some(r.queue_timeout_ms).filter(|t| *t > 0),
        deadline: Some(r.deadline_ms)
            .filter(|d| *d != 0)
            .map(crate::deadlines::Deadline::Millis),
        estimate_ms: Some(r.estimate_ms).filter(|t| *t > 0),
        max_attempts: Some(r.max_attempts).filter(|m| *m > 0),
        depends_on: r.depends_on,
        stdin: String::from_utf8(r.stdin)
            .map_err(|_| SmsError::invalid("stdin", "must be UTF-8"))?,
        needs: r.needs.map(|n| res(Some(n))),
        checkpoint: r.checkpoint,
        recovery: Some(r.recovery).filter(|r| !r.is_empty()),
    })
}
