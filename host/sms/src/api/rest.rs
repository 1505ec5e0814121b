//! The REST gateway: SPEAR's documented routes, plus files, plugins, events (SSE, in
//! [`stream`](crate::api::stream)), OpenAPI,
//! Swagger UI, Prometheus metrics and health.

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;
use spear_plugin_runtime::Trigger;
use utoipa::{IntoParams, OpenApi, ToSchema};

use crate::api::body::{ApiJson, ApiPath, ApiQuery};
use crate::api::nodes::{self, Done, NodeAnswer, NodeList, NodeView};
use crate::api::openapi::EdgeResponses;
use crate::api::tokens;
use crate::api::{files, tasks};
use crate::error::SmsError;
use crate::executions::Submit;
use crate::health::HealthReport;
use crate::model::{Event, Execution};
use crate::service::Sms;

pub(crate) type AppState = Arc<Sms>;

/// The error body every failed request gets.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// Always `false` (SPEAR's field: its clients test it).
    pub success: bool,
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
            success: false,
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

pub(crate) fn created<T: Serialize>(value: T) -> Response {
    (StatusCode::CREATED, Json(value)).into_response()
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

#[utoipa::path(get, path = "/api/v1/executions/{execution_id}/explain",
    params(("execution_id" = String, Path, description = "the execution's id")),
    responses((status = 200, body = crate::explain::Explanation), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)), tag = "executions")]
async fn explain_execution(
    State(sms): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<crate::explain::Explanation>, SmsError> {
    sms.explain(&id).await.map(Json)
}

#[utoipa::path(get, path = "/api/v1/plugins/shadow", responses((status = 200, body = crate::shadow::ShadowReport)), tag = "plugins")]
async fn shadow_report(State(sms): State<AppState>) -> Json<crate::shadow::ShadowReport> {
    Json(sms.shadow_report())
}

#[utoipa::path(get, path = "/api/v1/autoscaler", responses((status = 200, description = "the autoscaler's policy, last answer and managed nodes"), (status = 404, body = ErrorBody)), tag = "plugins")]
async fn autoscaler_status(
    State(sms): State<AppState>,
) -> Result<Json<crate::autoscale::Status>, SmsError> {
    let a = sms.autoscale.as_ref().ok_or_else(|| {
        SmsError::not_found("autoscaler", "(no [autoscaler] section in the config)")
    })?;
    let mut status = a.status();
    // The slot as it is now (a reload swaps it between two looks).
    status.policy = sms.plugins().autoscaler().active().map(|p| p.name);
    Ok(Json(status))
}

#[utoipa::path(get, path = "/api/v1/plugins", responses((status = 200, description = "plugins, slots and limits")), tag = "plugins")]
async fn list_plugins(State(sms): State<AppState>) -> Json<serde_json::Value> {
    let host = sms.plugins();
    Json(json!({
        "plugins": host.plugins(),
        "scheduler": host.strategy().status(),
        "autoscaler": host.autoscaler().status(),
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

/// SPEAR's health answer: `{"status":"healthy","timestamp":…,"service":"sms"}`, `unhealthy` with
/// 503 when `/healthz` would answer 503 (which says why).
#[utoipa::path(get, path = "/health",
    responses((status = 200, description = "`{\"status\":\"healthy\",\"timestamp\":\"<RFC 3339>\",\"service\":\"sms\"}`"),
        (status = 503, description = "`status` is `unhealthy`: see `/healthz`")), tag = "health")]
async fn health(State(sms): State<AppState>) -> Response {
    let healthy = sms.health.report(sms.db.write_health()).status == "ok";
    let body = json!({
        "status": if healthy { "healthy" } else { "unhealthy" },
        "timestamp": crate::health::rfc3339_now(),
        "service": "sms",
    });
    let status = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
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
        nodes::register_node,
        nodes::list_nodes,
        nodes::get_node,
        nodes::update_node,
        nodes::delete_node,
        nodes::heartbeat,
        nodes::put_resource,
        nodes::get_resource,
        nodes::list_resources,
        nodes::get_with_resource,
        tasks::register_task,
        tasks::list_tasks,
        tasks::get_task,
        tasks::delete_task,
        crate::api::invoke::invoke_task,
        submit,
        list_executions,
        get_execution,
        cancel_execution,
        explain_execution,
        shadow_report,
        autoscaler_status,
        files::upload_file,
        files::list_files,
        files::download_file,
        files::file_meta,
        files::delete_file,
        files::presign_upload,
        list_plugins,
        reload_plugins,
        plugin_history,
        crate::api::stream::events,
        crate::api::stream::watch_execution,
        tokens::create_token,
        tokens::list_tokens,
        tokens::revoke_token,
        tokens::whoami,
        healthz,
        health
    ),
    modifiers(&EdgeResponses),
    components(schemas(crate::auth::tokens::TokenInfo, tokens::TokenList, tokens::CreatedToken, tokens::WhoAmI, crate::auth::Role, crate::api::stream::SseMessage, crate::api::stream::WatchMessage, Event, HealthReport, ErrorBody, ErrorDetail, NodeList, NodeAnswer, NodeView, Done, nodes::ResourceList, crate::resources::NodeResource, crate::resources::ResourceReport, tasks::TaskList, tasks::TaskView, tasks::Registered, tasks::Unregister, crate::api::invoke::InvokeBody, crate::api::invoke::Invoked, files::FileList, files::FileView, files::Uploaded, files::FileFound, files::Presign, files::PresignRequest, ExecutionList, crate::explain::Explanation, crate::explain::NodeVerdict, crate::shadow::ShadowReport, crate::shadow::Named, crate::shadow::Latency, crate::shadow::Spread, crate::shadow::NodeLoad))
)]
pub struct ApiDoc;

/// The REST router. `swagger` adds Swagger UI at `/swagger-ui`.
pub fn router(sms: Arc<Sms>, swagger: bool) -> Router {
    let app = finish(routes(&sms), sms);
    with_openapi(app, swagger)
}

/// The web admin's router: its page and SPEAR's `/admin/api/…` routes beside the REST API.
pub fn admin_router(sms: Arc<Sms>) -> Router {
    let app = routes(&sms).merge(crate::api::admin::routes(upload_limit(&sms)));
    let guard = sms.clone();
    let app = finish(app, sms).layer(axum::middleware::from_fn_with_state(
        guard,
        crate::api::admin::guard,
    ));
    with_openapi(app, false)
}

fn upload_limit(sms: &Sms) -> usize {
    usize::try_from(sms.max_upload_bytes).unwrap_or(usize::MAX)
}

/// The API's routes, before their state and layers.
fn routes(sms: &Sms) -> Router<AppState> {
    let limit = upload_limit(sms);
    Router::new()
        .route("/healthz", get(healthz))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route(
            "/api/v1/nodes",
            post(nodes::register_node).get(nodes::list_nodes),
        )
        .route(
            "/api/v1/nodes/{uuid}",
            get(nodes::get_node)
                .put(nodes::update_node)
                .delete(nodes::delete_node),
        )
        .route("/api/v1/nodes/{uuid}/heartbeat", post(nodes::heartbeat))
        .route(
            "/api/v1/nodes/{uuid}/resource",
            get(nodes::get_resource).put(nodes::put_resource),
        )
        .route(
            "/api/v1/nodes/{uuid}/with-resource",
            get(nodes::get_with_resource),
        )
        .route("/api/v1/resources", get(nodes::list_resources))
        .route(
            "/api/v1/tasks",
            post(tasks::register_task).get(tasks::list_tasks),
        )
        .route(
            "/api/v1/tasks/{task_id}",
            get(tasks::get_task).delete(tasks::delete_task),
        )
        .route(
            "/api/v1/tasks/{task_id}/invoke",
            post(crate::api::invoke::invoke_task),
        )
        .route("/api/v1/executions", post(submit).get(list_executions))
        .route("/api/v1/executions/{execution_id}", get(get_execution))
        .route(
            "/api/v1/executions/{execution_id}/cancel",
            post(cancel_execution),
        )
        .route(
            "/api/v1/executions/{execution_id}/explain",
            get(explain_execution),
        )
        .route(
            "/api/v1/files",
            post(files::upload_file)
                .get(files::list_files)
                .layer(DefaultBodyLimit::max(limit)),
        )
        .route("/api/v1/files/presign-upload", post(files::presign_upload))
        .route(
            "/api/v1/files/{file_id}",
            get(files::download_file).delete(files::delete_file),
        )
        .route("/api/v1/files/{file_id}/meta", get(files::file_meta))
        .route("/api/v1/plugins", get(list_plugins))
        .route("/api/v1/plugins/reload", post(reload_plugins))
        .route("/api/v1/plugins/history", get(plugin_history))
        .route("/api/v1/plugins/shadow", get(shadow_report))
        .route("/api/v1/autoscaler", get(autoscaler_status))
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
}

/// `app` with its fallback, body limits and auth, over `sms`.
fn finish(app: Router<AppState>, sms: Arc<Sms>) -> Router {
    let lengths = (sms.max_upload_bytes, sms.max_body_bytes as u64);
    let json_limit = sms.max_body_bytes;
    app.fallback(|| async { SmsError::not_found("route", "this path").into_response() })
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
        .with_state(sms)
}

/// `app` with the OpenAPI document, and Swagger UI when `swagger`.
fn with_openapi(mut app: Router, swagger: bool) -> Router {
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
