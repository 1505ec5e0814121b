//! The REST gateway: SPEAR's documented routes, plus files, plugins, events (SSE, in
//! [`stream`](crate::api::stream)), OpenAPI,
//! Swagger UI, Prometheus metrics and health.

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Extension, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;
use spear_plugin_runtime::Trigger;
use utoipa::{IntoParams, OpenApi, ToSchema};

use crate::api::body::{ApiBytes, ApiJson, ApiPath, ApiQuery};
use crate::api::openapi::EdgeResponses;
use crate::api::tokens;
use crate::auth::{Principal, as_node};
use crate::error::SmsError;
use crate::executions::Submit;
use crate::health::HealthReport;
use crate::model::{Event, Execution, FileMeta, Node, Task};
use crate::nodes::{Heartbeat, RegisterNode, UpdateNode};
use crate::service::Sms;
use crate::tasks::RegisterTask;

type AppState = Arc<Sms>;

/// The error body every failed request gets.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// `{code, message, field}`.
    pub error: ErrorDetail,
}

/// Details of an error.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// `invalid_argument`, `not_found`, `conflict`, `too_large`, `timeout`, `unavailable`,
    /// `unauthenticated`, `permission_denied`, `compacted`.
    pub code: String,
    /// For people.
    pub message: String,
    /// The request field at fault, when one is.
    pub field: Option<String>,
    /// `compacted`: the event cursor to resume after.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resume_from: Option<u64>,
}

impl ErrorBody {
    /// The body that answers `e`.
    pub fn of(e: &SmsError) -> Self {
        Self {
            error: ErrorDetail {
                code: e.code().into(),
                message: e.to_string(),
                field: e.field().map(str::to_owned),
                resume_from: match e {
                    SmsError::Compacted { resume_from, .. } => Some(*resume_from),
                    _ => None,
                },
            },
        }
    }
}

impl IntoResponse for SmsError {
    fn into_response(self) -> Response {
        let body = ErrorBody::of(&self);
        let mut response = (self.http_status(), Json(body)).into_response();
        if matches!(self, SmsError::Unauthenticated(_)) {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}

fn created<T: Serialize>(value: T) -> Response {
    (StatusCode::CREATED, Json(value)).into_response()
}

/// `?status=`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct NodeFilter {
    /// `active`, `unhealthy`, `draining` or `inactive`.
    #[param(value_type = Option<crate::model::NodeStatus>)]
    pub status: Option<String>,
}

/// `?status=&priority=`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TaskFilter {
    /// `registered`, `active` or `inactive`.
    #[param(value_type = Option<crate::model::TaskStatus>)]
    pub status: Option<String>,
    /// `low`, `normal`, `high` or `urgent`.
    #[param(value_type = Option<crate::model::Priority>)]
    pub priority: Option<String>,
}

/// A list of nodes.
#[derive(Debug, Serialize, ToSchema)]
pub struct NodeList {
    /// The nodes.
    pub nodes: Vec<Node>,
}

/// A list of tasks.
#[derive(Debug, Serialize, ToSchema)]
pub struct TaskList {
    /// The tasks.
    pub tasks: Vec<Task>,
}

/// A list of files.
#[derive(Debug, Serialize, ToSchema)]
pub struct FileList {
    /// The files.
    pub files: Vec<FileMeta>,
}

#[utoipa::path(post, path = "/api/v1/nodes", request_body = RegisterNode,
    responses((status = 201, body = Node), (status = 400, body = ErrorBody)), tag = "nodes")]
async fn register_node(
    State(sms): State<AppState>,
    principal: Option<Extension<Principal>>,
    ApiJson(mut req): ApiJson<RegisterNode>,
) -> Result<Response, SmsError> {
    sms.node_registers(principal.as_deref(), &mut req.uuid)
        .await?;
    sms.register_node(req).await.map(created)
}

#[utoipa::path(get, path = "/api/v1/nodes", params(NodeFilter),
    responses((status = 200, body = NodeList), (status = 400, body = ErrorBody)), tag = "nodes")]
async fn list_nodes(
    State(sms): State<AppState>,
    ApiQuery(f): ApiQuery<NodeFilter>,
) -> Result<Json<NodeList>, SmsError> {
    Ok(Json(NodeList {
        nodes: sms.nodes(f.status.as_deref()).await?,
    }))
}

#[utoipa::path(get, path = "/api/v1/nodes/{uuid}",
    params(("uuid" = String, Path, description = "the node's UUID")),
    responses((status = 200, body = Node), (status = 404, body = ErrorBody)), tag = "nodes")]
async fn get_node(
    State(sms): State<AppState>,
    ApiPath(uuid): ApiPath<String>,
) -> Result<Json<Node>, SmsError> {
    sms.node(&uuid).await.map(Json)
}

#[utoipa::path(put, path = "/api/v1/nodes/{uuid}",
    params(("uuid" = String, Path, description = "the node's UUID")), request_body = UpdateNode,
    responses((status = 200, body = Node), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)), tag = "nodes")]
async fn update_node(
    State(sms): State<AppState>,
    principal: Option<Extension<Principal>>,
    ApiPath(uuid): ApiPath<String>,
    ApiJson(req): ApiJson<UpdateNode>,
) -> Result<Json<Node>, SmsError> {
    as_node(principal.as_deref(), &uuid)?;
    crate::auth::node_may_set(principal.as_deref(), req.status.as_deref())?;
    let by = crate::auth::operator(principal.as_deref());
    sms.update_node(&uuid, req, by).await.map(Json)
}

#[utoipa::path(delete, path = "/api/v1/nodes/{uuid}",
    params(("uuid" = String, Path, description = "the node's UUID")),
    responses((status = 204), (status = 404, body = ErrorBody)), tag = "nodes")]
async fn delete_node(
    State(sms): State<AppState>,
    principal: Option<Extension<Principal>>,
    ApiPath(uuid): ApiPath<String>,
) -> Result<StatusCode, SmsError> {
    as_node(principal.as_deref(), &uuid)?;
    sms.node_may_delete(principal.as_deref(), &uuid).await?;
    sms.delete_node(&uuid, "deleted through the API").await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/api/v1/nodes/{uuid}/heartbeat",
    params(("uuid" = String, Path, description = "the node's UUID")), request_body = Heartbeat,
    responses((status = 200, body = Node), (status = 404, body = ErrorBody)), tag = "nodes")]
async fn heartbeat(
    State(sms): State<AppState>,
    principal: Option<Extension<Principal>>,
    ApiPath(uuid): ApiPath<String>,
    ApiJson(hb): ApiJson<Heartbeat>,
) -> Result<Json<Node>, SmsError> {
    as_node(principal.as_deref(), &uuid)?;
    sms.heartbeat(&uuid, hb).await.map(Json)
}

#[utoipa::path(post, path = "/api/v1/tasks", request_body = RegisterTask,
    responses((status = 201, body = Task), (status = 400, body = ErrorBody)), tag = "tasks")]
async fn register_task(
    State(sms): State<AppState>,
    ApiJson(req): ApiJson<RegisterTask>,
) -> Result<Response, SmsError> {
    sms.register_task(req).await.map(created)
}

#[utoipa::path(get, path = "/api/v1/tasks", params(TaskFilter),
    responses((status = 200, body = TaskList), (status = 400, body = ErrorBody)), tag = "tasks")]
async fn list_tasks(
    State(sms): State<AppState>,
    ApiQuery(f): ApiQuery<TaskFilter>,
) -> Result<Json<TaskList>, SmsError> {
    Ok(Json(TaskList {
        tasks: sms
            .tasks(f.status.as_deref(), f.priority.as_deref())
            .await?,
    }))
}

#[utoipa::path(get, path = "/api/v1/tasks/{task_id}",
    params(("task_id" = String, Path, description = "the task's id")),
    responses((status = 200, body = Task), (status = 404, body = ErrorBody)), tag = "tasks")]
async fn get_task(
    State(sms): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Task>, SmsError> {
    sms.task(&id).await.map(Json)
}

#[utoipa::path(delete, path = "/api/v1/tasks/{task_id}",
    params(("task_id" = String, Path, description = "the task's id")),
    responses((status = 204), (status = 404, body = ErrorBody)), tag = "tasks")]
async fn delete_task(
    State(sms): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, SmsError> {
    sms.delete_task(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `?name=` of an upload.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UploadParams {
    /// The file's name (default `upload`): 1 to 255 bytes, no `/`, `\` or control character,
    /// not `.` or `..`.
    #[param(
        min_length = 1,
        max_length = 255,
        pattern = r"^(?!\.{1,2}$)[^/\\\x00-\x1f\x7f-\x9f]+$"
    )]
    pub name: Option<String>,
}

/// `?state=&task_id=&node_uuid=&since=&limit=&page_token=&order=` ([`crate::query`]).
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ExecutionFilter {
    /// pending, ready, assigned, running, succeeded, failed, cancelled, timed_out.
    #[param(value_type = Option<crate::model::ExecState>)]
    pub state: Option<String>,
    /// Only this task's.
    pub task_id: Option<String>,
    /// Only those placed on this node.
    pub node_uuid: Option<String>,
    /// Only those submitted at or after this time (ms since the epoch).
    pub since: Option<i64>,
    /// At most this many (1 to 1000; 500 when absent).
    pub limit: Option<usize>,
    /// Go on from the `next_page_token` of the previous page.
    pub page_token: Option<String>,
    /// `asc` (oldest first, the default) or `desc` (newest first).
    pub order: Option<String>,
}

/// A page of executions.
#[derive(Debug, Serialize, ToSchema)]
pub struct ExecutionList {
    /// The executions.
    pub executions: Vec<Execution>,
    /// Where the next page starts (pass it as `page_token`); absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_page_token: Option<String>,
    /// How many executions SMS holds in each state, whatever the filter.
    #[schema(value_type = std::collections::BTreeMap<String, u64>)]
    pub counts: std::collections::BTreeMap<&'static str, u64>,
}

#[utoipa::path(post, path = "/api/v1/executions", request_body = Submit,
    responses((status = 201, body = Execution), (status = 400, body = ErrorBody)), tag = "executions")]
async fn submit(
    State(sms): State<AppState>,
    ApiJson(req): ApiJson<Submit>,
) -> Result<Response, SmsError> {
    sms.submit(req).await.map(created)
}

#[utoipa::path(get, path = "/api/v1/executions", params(ExecutionFilter),
    responses((status = 200, body = ExecutionList), (status = 400, body = ErrorBody)), tag = "executions")]
async fn list_executions(
    State(sms): State<AppState>,
    ApiQuery(f): ApiQuery<ExecutionFilter>,
) -> Result<Json<ExecutionList>, SmsError> {
    let newest_first = match f.order.as_deref() {
        None | Some("asc") => false,
        Some("desc") => true,
        Some(other) => {
            return Err(SmsError::invalid(
                "order",
                format!("`{other}` is not asc or desc"),
            ));
        }
    };
    let page = sms
        .executions(&crate::query::ExecQuery {
            state: f.state,
            task_id: f.task_id,
            node_uuid: f.node_uuid,
            since_ms: f.since,
            limit: f.limit,
            page_token: f.page_token,
            newest_first,
        })
        .await?;
    let counts = sms.executions.read().await.counts().clone();
    Ok(Json(ExecutionList {
        executions: page.executions,
        next_page_token: page.next_page_token,
        counts,
    }))
}

#[utoipa::path(get, path = "/api/v1/executions/{execution_id}",
    params(("execution_id" = String, Path, description = "the execution's id")),
    responses((status = 200, body = Execution), (status = 404, body = ErrorBody)), tag = "executions")]
async fn get_execution(
    State(sms): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Execution>, SmsError> {
    sms.execution_whole(&id).await.map(Json)
}

#[utoipa::path(post, path = "/api/v1/executions/{execution_id}/cancel",
    params(("execution_id" = String, Path, description = "the execution's id")),
    responses((status = 200, body = Execution), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)), tag = "executions")]
async fn cancel_execution(
    State(sms): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Execution>, SmsError> {
    sms.cancel(&id).await.map(Json)
}

#[utoipa::path(post, path = "/api/v1/files", params(UploadParams),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses((status = 201, body = FileMeta), (status = 413, body = ErrorBody)), tag = "files")]
async fn upload_file(
    State(sms): State<AppState>,
    ApiQuery(p): ApiQuery<UploadParams>,
    ApiBytes(body): ApiBytes,
) -> Result<Response, SmsError> {
    sms.upload_file(p.name.as_deref().unwrap_or("upload"), body.to_vec())
        .await
        .map(created)
}

#[utoipa::path(get, path = "/api/v1/files", responses((status = 200, body = FileList)), tag = "files")]
async fn list_files(State(sms): State<AppState>) -> Result<Json<FileList>, SmsError> {
    Ok(Json(FileList {
        files: sms.files().await?,
    }))
}

#[utoipa::path(get, path = "/api/v1/files/{file_id}",
    params(("file_id" = String, Path, description = "the file's sha256", pattern = r"^[0-9a-f]{64}$")),
    responses((status = 200, content_type = "application/octet-stream", body = Vec<u8>), (status = 404, body = ErrorBody)), tag = "files")]
async fn download_file(
    State(sms): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, SmsError> {
    let (meta, bytes) = sms.download_file(&id).await?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_owned()),
            (
                header::CONTENT_DISPOSITION,
                crate::files::content_disposition(&meta.name),
            ),
        ],
        bytes,
    )
        .into_response())
}

#[utoipa::path(get, path = "/api/v1/files/{file_id}/meta",
    params(("file_id" = String, Path, description = "the file's sha256", pattern = r"^[0-9a-f]{64}$")),
    responses((status = 200, body = FileMeta), (status = 404, body = ErrorBody)), tag = "files")]
async fn file_meta(
    State(sms): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<FileMeta>, SmsError> {
    sms.file_meta(&id).await.map(Json)
}

#[utoipa::path(delete, path = "/api/v1/files/{file_id}",
    params(("file_id" = String, Path, description = "the file's sha256", pattern = r"^[0-9a-f]{64}$")),
    responses((status = 204), (status = 404, body = ErrorBody)), tag = "files")]
async fn delete_file(
    State(sms): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, SmsError> {
    sms.delete_file(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/api/v1/plugins", responses((status = 200, description = "plugins, slots and limits")), tag = "plugins")]
async fn list_plugins(State(sms): State<AppState>) -> Json<serde_json::Value> {
    let host = sms.plugins();
    Json(json!({
        "plugins": host.plugins(),
        "scheduler": host.strategy().status(),
        "limits": host.limits().get(),
    }))
}

#[utoipa::path(post, path = "/api/v1/plugins/reload", responses((status = 200, description = "the reload report")), tag = "plugins")]
async fn reload_plugins(State(sms): State<AppState>) -> Json<serde_json::Value> {
    let host = sms.plugins().clone();
    let report = tokio::task::spawn_blocking(move || host.reload(Trigger::Api)).await;
    Json(match report {
        Ok(r) => serde_json::to_value(r).unwrap_or_default(),
        Err(e) => json!({"outcome": "rejected", "error": e.to_string()}),
    })
}

#[utoipa::path(get, path = "/api/v1/plugins/history", responses((status = 200, description = "reload reports and plugin events")), tag = "plugins")]
async fn plugin_history(State(sms): State<AppState>) -> Json<serde_json::Value> {
    let host = sms.plugins();
    Json(json!({ "reloads": host.history(), "events": host.events() }))
}

#[utoipa::path(get, path = "/healthz",
    responses((status = 200, body = HealthReport), (status = 503, body = HealthReport)), tag = "health")]
async fn healthz(State(sms): State<AppState>) -> Response {
    let report = sms.health.report(sms.db.write_health());
    let status = if report.status == "ok" {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(report)).into_response()
}

async fn metrics(State(sms): State<AppState>) -> Response {
    let mut text = sms.plugins().telemetry().render();
    text.push_str(&sms.state_metrics().await);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

/// The OpenAPI document of the REST API.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "SPEAR SMS",
        description = "The SPEAR control plane's REST API"
    ),
    paths(
        register_node,
        list_nodes,
        get_node,
        update_node,
        delete_node,
        heartbeat,
        register_task,
        list_tasks,
        get_task,
        delete_task,
        submit,
        list_executions,
        get_execution,
        cancel_execution,
        upload_file,
        list_files,
        download_file,
        file_meta,
        delete_file,
        list_plugins,
        reload_plugins,
        plugin_history,
        crate::api::stream::events,
        crate::api::stream::watch_execution,
        tokens::create_token,
        tokens::list_tokens,
        tokens::revoke_token,
        tokens::whoami,
        healthz
    ),
    modifiers(&EdgeResponses),
    components(schemas(crate::auth::tokens::TokenInfo, tokens::TokenList, tokens::CreatedToken, tokens::WhoAmI, crate::auth::Role, crate::api::stream::SseMessage, crate::api::stream::WatchMessage, Event, HealthReport, ErrorBody, ErrorDetail, NodeList, TaskList, FileList, ExecutionList))
)]
pub struct ApiDoc;

/// The REST router. `swagger` adds Swagger UI at `/swagger-ui`.
pub fn router(sms: Arc<Sms>, swagger: bool) -> Router {
    let limit = usize::try_from(sms.max_upload_bytes).unwrap_or(usize::MAX);
    let lengths = (sms.max_upload_bytes, sms.max_body_bytes as u64);
    let json_limit = sms.max_body_bytes;
    let mut app = Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/api/v1/nodes", post(register_node).get(list_nodes))
        .route(
            "/api/v1/nodes/{uuid}",
            get(get_node).put(update_node).delete(delete_node),
        )
        .route("/api/v1/nodes/{uuid}/heartbeat", post(heartbeat))
        .route("/api/v1/tasks", post(register_task).get(list_tasks))
        .route("/api/v1/tasks/{task_id}", get(get_task).delete(delete_task))
        .route("/api/v1/executions", post(submit).get(list_executions))
        .route("/api/v1/executions/{execution_id}", get(get_execution))
        .route(
            "/api/v1/executions/{execution_id}/cancel",
            post(cancel_execution),
        )
        .route(
            "/api/v1/files",
            post(upload_file)
                .get(list_files)
                .layer(DefaultBodyLimit::max(limit)),
        )
        .route(
            "/api/v1/files/{file_id}",
            get(download_file).delete(delete_file),
        )
        .route("/api/v1/files/{file_id}/meta", get(file_meta))
        .route("/api/v1/plugins", get(list_plugins))
        .route("/api/v1/plugins/reload", post(reload_plugins))
        .route("/api/v1/plugins/history", get(plugin_history))
        .route("/api/v1/events", get(crate::api::stream::events))
        .route(
            "/api/v1/executions/{execution_id}/watch",
            get(crate::api::stream::watch_execution),
        )
        .route(
            "/api/v1/tokens",
            post(tokens::create_token).get(tokens::list_tokens),
        )
        .route("/api/v1/tokens/{token_id}", delete(tokens::revoke_token))
        .route("/api/v1/whoami", get(tokens::whoami))
        .fallback(|| async { SmsError::not_found("route", "this path").into_response() })
        .layer(DefaultBodyLimit::max(json_limit))
        .layer(axum::middleware::from_fn(
            move |req: axum::extract::Request, next: axum::middleware::Next| {
                crate::api::body::check_length(lengths, req, next)
            },
        ))
        // Outermost: a request is authorized before its body is read.
        .layer(axum::middleware::from_fn_with_state(
            sms.clone(),
            crate::auth::http::layer,
        ))
        .with_state(sms);
    // Swagger UI serves the document itself; without it, a plain route does.
    if swagger {
        app = app.merge(
            utoipa_swagger_ui::SwaggerUi::new("/swagger-ui")
                .url("/api/openapi.json", ApiDoc::openapi()),
        );
    } else {
        app = app.route("/api/openapi.json", get(openapi_json));
    }
    app
}

/// The web admin: one page that reads the REST API of the same origin.
pub fn admin_router(sms: Arc<Sms>) -> Router {
    Router::new()
        .route("/", get(|| async { Html(include_str!("admin.html")) }))
        .merge(router(sms, false))
}
