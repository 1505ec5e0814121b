//! The node routes, answering in SPEAR's shapes with SMS's own fields beside them (fields added
//! beyond SPEAR's clash with none of its; see docs/spear-compat.md):
//!
//! - every answer carries `success` (`true`; an error's body has `false`);
//! - a node carries SPEAR's `last_heartbeat` and `registered_at`, in seconds, besides our
//!   millisecond fields;
//! - the answer about one node has it at the top level (ours) and under `node` (SPEAR's), with
//!   SPEAR's `message` (and, at registration, `node_uuid`);
//! - a delete answers 200 `{"success": true, "message": …}` (SPEAR's; it was 204);
//! - SPEAR's node resources: `PUT`/`GET …/{uuid}/resource`, `GET /api/v1/resources`,
//!   `GET …/{uuid}/with-resource` (the node with its `resource`).

use axum::Json;
use axum::extract::{Extension, State};
use axum::response::Response;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::api::body::{ApiJson, ApiPath, ApiQuery};
use crate::api::rest::{AppState, ErrorBody, created};
use crate::auth::{Principal, as_node};
use crate::error::SmsError;
use crate::model::Node;
use crate::nodes::{Heartbeat, RegisterNode, UpdateNode};
use crate::resources::{NodeResource, ResourceReport};

/// `?status=`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct NodeFilter {
    /// `active`, `unhealthy`, `draining` or `inactive`.
    #[param(value_type = Option<crate::model::NodeStatus>)]
    pub status: Option<String>,
}

/// A node as the API shows it: the record, and SPEAR's times in seconds.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct NodeView {
    /// The record.
    #[serde(flatten)]
    pub node: Node,
    /// SPEAR's: the last heartbeat, seconds since the Unix epoch.
    pub last_heartbeat: i64,
    /// SPEAR's: the registration, seconds since the Unix epoch.
    pub registered_at: i64,
}

impl From<Node> for NodeView {
    fn from(node: Node) -> Self {
        Self {
            last_heartbeat: node.last_heartbeat_ms.div_euclid(1000),
            registered_at: node.registered_at_ms.div_euclid(1000),
            node,
        }
    }
}

/// A list of nodes.
#[derive(Debug, Serialize, ToSchema)]
pub struct NodeList {
    /// Always `true` (SPEAR's).
    pub success: bool,
    /// The nodes.
    pub nodes: Vec<NodeView>,
}

/// The answer about one node: SPEAR's `success`, `message`, `node_uuid` and `node`, and the node's
/// fields at the top level.
#[derive(Debug, Serialize, ToSchema)]
pub struct NodeAnswer {
    /// Always `true`.
    pub success: bool,
    /// SPEAR's words for what happened (not on a plain read).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// At registration: the node's UUID.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_uuid: Option<String>,
    /// The node (SPEAR's place for it).
    pub node: NodeView,
    /// The node again, at the top level (SMS's place for it).
    #[serde(flatten)]
    pub fields: NodeView,
}

impl NodeAnswer {
    fn of(node: Node, message: Option<&str>) -> Self {
        let view = NodeView::from(node);
        Self {
            success: true,
            message: message.map(str::to_owned),
            node_uuid: None,
            node: view.clone(),
            fields: view,
        }
    }
}

/// A done deed with nothing more to show: `{"success": true, "message": …}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Done {
    /// Always `true`.
    pub success: bool,
    /// What was done.
    pub message: String,
}

#[utoipa::path(post, path = "/api/v1/nodes", request_body = RegisterNode,
    responses((status = 201, body = NodeAnswer), (status = 400, body = ErrorBody)), tag = "nodes")]
pub(crate) async fn register_node(
    State(sms): State<AppState>,
    principal: Option<Extension<Principal>>,
    ApiJson(mut req): ApiJson<RegisterNode>,
) -> Result<Response, SmsError> {
    sms.node_registers(principal.as_deref(), &mut req.uuid)
        .await?;
    let node = sms.register_node(req).await?;
    let mut answer = NodeAnswer::of(node, Some("Node registered successfully"));
    answer.node_uuid = Some(answer.fields.node.uuid.clone());
    Ok(created(answer))
}

#[utoipa::path(get, path = "/api/v1/nodes", params(NodeFilter),
    responses((status = 200, body = NodeList), (status = 400, body = ErrorBody)), tag = "nodes")]
pub(crate) async fn list_nodes(
    State(sms): State<AppState>,
    ApiQuery(f): ApiQuery<NodeFilter>,
) -> Result<Json<NodeList>, SmsError> {
    let nodes = sms.nodes(f.status.as_deref()).await?;
    Ok(Json(NodeList {
        success: true,
        nodes: nodes.into_iter().map(NodeView::from).collect(),
    }))
}

#[utoipa::path(get, path = "/api/v1/nodes/{uuid}",
    params(("uuid" = String, Path, description = "the node's UUID")),
    responses((status = 200, body = NodeAnswer), (status = 404, body = ErrorBody)), tag = "nodes")]
pub(crate) async fn get_node(
    State(sms): State<AppState>,
    ApiPath(uuid): ApiPath<String>,
) -> Result<Json<NodeAnswer>, SmsError> {
    let node = sms.node(&uuid).await?;
    Ok(Json(NodeAnswer::of(node, None)))
}

#[utoipa::path(put, path = "/api/v1/nodes/{uuid}",
    params(("uuid" = String, Path, description = "the node's UUID")), request_body = UpdateNode,
    responses((status = 200, body = NodeAnswer), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)), tag = "nodes")]
pub(crate) async fn update_node(
    State(sms): State<AppState>,
    principal: Option<Extension<Principal>>,
    ApiPath(uuid): ApiPath<String>,
    ApiJson(req): ApiJson<UpdateNode>,
) -> Result<Json<NodeAnswer>, SmsError> {
    as_node(principal.as_deref(), &uuid)?;
    crate::auth::node_may_set(principal.as_deref(), req.status.as_deref())?;
    let by = crate::auth::operator(principal.as_deref());
    let node = sms.update_node(&uuid, req, by).await?;
    Ok(Json(NodeAnswer::of(
        node,
        Some("Node updated successfully"),
    )))
}

#[utoipa::path(delete, path = "/api/v1/nodes/{uuid}",
    params(("uuid" = String, Path, description = "the node's UUID")),
    responses((status = 200, body = Done), (status = 404, body = ErrorBody)), tag = "nodes")]
pub(crate) async fn delete_node(
    State(sms): State<AppState>,
    principal: Option<Extension<Principal>>,
    ApiPath(uuid): ApiPath<String>,
) -> Result<Json<Done>, SmsError> {
    as_node(principal.as_deref(), &uuid)?;
    sms.node_may_delete(principal.as_deref(), &uuid).await?;
    sms.delete_node(&uuid, "deleted through the API").await?;
    Ok(Json(Done {
        success: true,
        message: "Node deleted successfully".into(),
    }))
}

#[utoipa::path(post, path = "/api/v1/nodes/{uuid}/heartbeat",
    params(("uuid" = String, Path, description = "the node's UUID")), request_body = Heartbeat,
    responses((status = 200, body = NodeAnswer), (status = 404, body = ErrorBody)), tag = "nodes")]
pub(crate) async fn heartbeat(
    State(sms): State<AppState>,
    principal: Option<Extension<Principal>>,
    ApiPath(uuid): ApiPath<String>,
    ApiJson(hb): ApiJson<Heartbeat>,
) -> Result<Json<NodeAnswer>, SmsError> {
    as_node(principal.as_deref(), &uuid)?;
    let node = sms.heartbeat(&uuid, hb).await?;
    Ok(Json(NodeAnswer::of(node, Some("Heartbeat received"))))
}

/// `?node_uuids=a,b` (none: every node's).
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ResourceQuery {
    /// Comma-separated node UUIDs (at most 1,000).
    pub node_uuids: Option<String>,
}

/// Resource figures of several nodes.
#[derive(Debug, Serialize, ToSchema)]
pub struct ResourceList {
    /// The figures of the nodes asked for that reported some.
    pub resources: Vec<NodeResource>,
}

#[utoipa::path(put, path = "/api/v1/nodes/{uuid}/resource",
    params(("uuid" = String, Path, description = "the node's UUID")), request_body = ResourceReport,
    responses((status = 200, body = Done), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)), tag = "nodes")]
pub(crate) async fn put_resource(
    State(sms): State<AppState>,
    principal: Option<Extension<Principal>>,
    ApiPath(uuid): ApiPath<String>,
    ApiJson(report): ApiJson<ResourceReport>,
) -> Result<Json<Done>, SmsError> {
    as_node(principal.as_deref(), &uuid)?;
    sms.set_node_resource(&uuid, report).await?;
    Ok(Json(Done {
        success: true,
        message: "Resource updated successfully".into(),
    }))
}

#[utoipa::path(get, path = "/api/v1/nodes/{uuid}/resource",
    params(("uuid" = String, Path, description = "the node's UUID")),
    responses((status = 200, body = NodeResource), (status = 404, body = ErrorBody)), tag = "nodes")]
pub(crate) async fn get_resource(
    State(sms): State<AppState>,
    ApiPath(uuid): ApiPath<String>,
) -> Result<Json<NodeResource>, SmsError> {
    sms.node_resource(&uuid).await.map(Json)
}

#[utoipa::path(get, path = "/api/v1/resources", params(ResourceQuery),
    responses((status = 200, body = ResourceList), (status = 400, body = ErrorBody)), tag = "nodes")]
pub(crate) async fn list_resources(
    State(sms): State<AppState>,
    ApiQuery(q): ApiQuery<ResourceQuery>,
) -> Result<Json<ResourceList>, SmsError> {
    let asked: Vec<String> = q
        .node_uuids
        .as_deref()
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .take(crate::resources::MAX_NODES_ASKED + 1)
        .map(str::to_owned)
        .collect();
    Ok(Json(ResourceList {
        resources: sms.node_resources(&asked).await?,
    }))
}

#[utoipa::path(get, path = "/api/v1/nodes/{uuid}/with-resource",
    params(("uuid" = String, Path, description = "the node's UUID")),
    responses((status = 200, body = NodeView), (status = 404, body = ErrorBody)), tag = "nodes")]
pub(crate) async fn get_with_resource(
    State(sms): State<AppState>,
    ApiPath(uuid): ApiPath<String>,
) -> Result<Json<NodeView>, SmsError> {
    sms.node(&uuid).await.map(|n| Json(n.into()))
}
