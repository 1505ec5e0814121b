//! The one table of who may call what: every REST route and every gRPC method has a [`Need`].
//! A route, method or HTTP method missing here is for admins only (the router then answers 405 or
//! `UNIMPLEMENTED`), and the auth tests, which walk the router's OpenAPI document and the proto
//! descriptors, fail on a served one without a rule.

use super::{AuthConfig, Role};

/// What a route or method asks of the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Nobody needs a token (the admin page's static HTML, the API's documentation).
    Open,
    /// `/healthz`: open when `[auth] open_healthz`, else [`Need::Read`].
    Health,
    /// `/metrics`: open when `[auth] open_metrics`, else [`Need::Read`].
    Metrics,
    /// Reading: reader, operator, admin.
    Read,
    /// Reading file contents: reader, operator, admin, and nodes (their artifacts).
    FileRead,
    /// Submitting, cancelling, registering tasks and files: operator, admin.
    Operate,
    /// Plugins, tokens: admin.
    Admin,
    /// The node protocol (register, heartbeat, assignments, reports): a node (as itself) or admin.
    Node,
    /// Changing or removing a node: the node itself, operator, admin.
    NodeOrOperate,
    /// Any valid token (`/api/v1/whoami`).
    Any,
    /// Reading an execution: reader, operator, admin, and a node (its own executions only: the
    /// handler answers not-found for another node's).
    ReadOrOwnNode,
    /// Reading a task: reader, operator, admin, and nodes (they run its live instances).
    ReadOrNode,
}

impl Need {
    /// Whether no token is needed under `config`.
    pub fn is_open(self, config: &AuthConfig) -> bool {
        match self {
            Need::Open => true,
            Need::Health => config.open_healthz,
            Need::Metrics => config.open_metrics,
            _ => false,
        }
    }

    /// Whether `role` meets this need.
    pub fn allows(self, role: Role) -> bool {
        use Role::*;
        match self {
            Need::Open => true,
            Need::Health | Need::Metrics | Need::Read => matches!(role, Reader | Operator | Admin),
            Need::FileRead => matches!(role, Reader | Operator | Admin | Node),
            Need::Operate => matches!(role, Operator | Admin),
            Need::Admin => role == Admin,
            Need::Node => matches!(role, Node | Admin),
            Need::NodeOrOperate => matches!(role, Node | Operator | Admin),
            Need::Any => true,
            Need::ReadOrOwnNode | Need::ReadOrNode => {
                matches!(role, Reader | Operator | Admin | Node)
            }
        }
    }

    /// The roles that meet it, for error messages.
    pub fn describe(self) -> &'static str {
        match self {
            Need::Open => "nothing",
            Need::Health | Need::Metrics | Need::Read => "reader, operator or admin",
            Need::FileRead => "reader, operator, admin or node",
            Need::Operate => "operator or admin",
            Need::Admin => "admin",
            Need::Node => "node or admin",
            Need::NodeOrOperate => "node, operator or admin",
            Need::Any => "any valid token",
            Need::ReadOrOwnNode => "reader, operator, admin, or the node it is placed on",
            Need::ReadOrNode => "reader, operator, admin or node",
        }
    }
}

/// The need of REST `method` on the route template `path` (axum's matched path, e.g.
/// `/api/v1/tasks/{task_id}`); None for a route without a rule.
pub fn rest(method: &str, path: &str) -> Option<Need> {
    use Need::*;
    // HEAD is answered by the GET route.
    let method = if method == "HEAD" { "GET" } else { method };
    let need = match (method, path) {
        ("GET", "/" | "/admin" | "/admin/" | "/admin/static/{*path}") => Open,
        // The web admin's routes (SPEAR's), each as its REST twin.
        (
            "GET",
            "/admin/api/nodes"
            | "/admin/api/nodes/{uuid}"
            | "/admin/api/nodes/stream"
            | "/admin/api/stats"
            | "/admin/api/tasks"
            | "/admin/api/tasks/{task_id}"
            | "/admin/api/files",
        ) => Read,
        ("POST", "/admin/api/tasks" | "/admin/api/files" | "/admin/api/files/presign-upload") => {
            Operate
        }
        ("GET", "/admin/api/files/{file_id}" | "/admin/api/files/{file_id}/meta") => FileRead,
        ("DELETE", "/admin/api/files/{file_id}") => Operate,
        ("GET", "/api/openapi.json") => Open,
        ("GET", p) if p.starts_with("/swagger-ui") => Open,
        ("GET", "/healthz" | "/health") => Health,
        ("GET", "/metrics") => Metrics,
        ("POST", "/api/v1/nodes") => Node,
        ("GET", "/api/v1/nodes") => Read,
        ("GET", "/api/v1/nodes/{uuid}") => Read,
        ("PUT" | "DELETE", "/api/v1/nodes/{uuid}") => NodeOrOperate,
        ("POST", "/api/v1/nodes/{uuid}/heartbeat") => Node,
        ("PUT", "/api/v1/nodes/{uuid}/resource") => NodeOrOperate,
        ("GET", "/api/v1/nodes/{uuid}/resource" | "/api/v1/nodes/{uuid}/with-resource") => Read,
        ("GET", "/api/v1/resources") => Read,
        ("POST", "/api/v1/tasks") => Operate,
        ("GET", "/api/v1/tasks") => Read,
        ("GET", "/api/v1/tasks/{task_id}") => Read,
        ("DELETE", "/api/v1/tasks/{task_id}") => Operate,
        ("POST", "/api/v1/tasks/{task_id}/invoke") => Operate,
        ("POST", "/api/v1/executions") => Operate,
        ("GET", "/api/v1/executions") => Read,
        ("GET", "/api/v1/executions/{execution_id}") => Read,
        ("GET", "/api/v1/executions/{execution_id}/watch") => Read,
        ("GET", "/api/v1/executions/{execution_id}/explain") => Read,
        ("POST", "/api/v1/executions/{execution_id}/cancel") => Operate,
        ("POST", "/api/v1/files" | "/api/v1/files/presign-upload") => Operate,
        ("GET", "/api/v1/files") => Read,
        ("GET", "/api/v1/files/{file_id}") => FileRead,
        ("GET", "/api/v1/files/{file_id}/meta") => FileRead,
        ("DELETE", "/api/v1/files/{file_id}") => Operate,
        ("GET", "/api/v1/plugins") => Read,
        ("POST", "/api/v1/plugins/reload") => Admin,
        ("GET", "/api/v1/plugins/history") => Read,
        ("GET", "/api/v1/plugins/shadow") => Read,
        ("GET", "/api/v1/autoscaler") => Read,
        ("GET", "/api/v1/events") => Read,
        ("POST" | "GET", "/api/v1/tokens") => Admin,
        ("DELETE", "/api/v1/tokens/{token_id}") => Admin,
        ("GET", "/api/v1/whoami") => Any,
        _ => return None,
    };
    Some(need)
}

/// The need of the gRPC method at `path` (`/spear.v1.TaskService/RegisterTask`); None for a
/// method without a rule.
pub fn grpc(path: &str) -> Option<Need> {
    use Need::*;
    let (service, method) = path.strip_prefix('/')?.split_once('/')?;
    let need = match (service, method) {
        ("grpc.health.v1.Health", _) => Health,
        ("grpc.reflection.v1.ServerReflection", _) => Read,
        ("spear.v1.NodeService" | "sms.NodeService", "RegisterNode" | "Heartbeat") => Node,
        ("sms.NodeService", "UpdateNodeResource") => NodeOrOperate,
        ("sms.NodeService", "GetNodeResource" | "ListNodeResources" | "GetNodeWithResource") => {
            Read
        }
        (
            "sms.TaskService",
            "RegisterTask" | "UnregisterTask" | "UpdateTaskStatus" | "UpdateTaskResult",
        ) => Operate,
        ("sms.TaskService", "ListTasks" | "GetTask" | "SubscribeTaskEvents") => Read,
        ("spear.v1.NodeService" | "sms.NodeService", "UpdateNode" | "DeleteNode") => NodeOrOperate,
        ("spear.v1.NodeService" | "sms.NodeService", "GetNode" | "ListNodes") => Read,
        ("spear.v1.TaskService", "RegisterTask" | "DeleteTask") => Operate,
        // A node reads the tasks it runs live instances of.
        ("spear.v1.TaskService", "GetTask") => ReadOrNode,
        ("spear.v1.TaskService", "ListTasks") => Read,
        ("spear.v1.TaskService", "Invoke") => Operate,
        ("spear.v1.FileService", "Upload" | "DeleteFile") => Operate,
        ("spear.v1.FileService", "GetFile" | "Download") => FileRead,
        ("spear.v1.FileService", "ListFiles") => Read,
        ("spear.v1.PluginService", "Reload") => Admin,
        ("spear.v1.PluginService", "ListPlugins" | "History") => Read,
        ("spear.v1.ExecutionService", "Submit" | "Cancel") => Operate,
        // A Spearlet asks after a stall whether its executions are still its own.
        ("spear.v1.ExecutionService", "GetExecution") => ReadOrOwnNode,
        ("spear.v1.ExecutionService", "ListExecutions") => Read,
        (
            "spear.v1.ExecutionService",
            "Assignments" | "ReportResult" | "ReportState" | "ReportBatch" | "ReportInvocation",
        ) => Node,
        ("spear.v1.EventService", "Subscribe") => Read,
        _ => return None,
    };
    Some(need)
}
