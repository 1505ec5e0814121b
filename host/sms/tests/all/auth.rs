//! Tokens and roles on a real `sms` with `[auth] enabled = true`: every REST route (read from the
//! served OpenAPI document) and every gRPC method (read from the proto descriptors) tried with no
//! token, a bad one, an expired one and each role, against the table below. A route or method
//! missing from the table fails the test, so a new one cannot ship without a rule.

use crate::common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{Sandbox, Sms};
use reqwest::StatusCode;
use serde_json::{Value, json};

pub const ADMIN: &str = "bootstrap-admin-token-for-the-tests-0001";

/// Roles that may call each REST route (`METHOD path`). A node token here is bound to no node,
/// so routes a node may call only as itself (`{uuid}`) list no `node`: that case is
/// `auth_nodes.rs`'s.
const REST: &[(&str, &[&str])] = &[
    ("GET /healthz", &["reader", "operator", "admin"]),
    ("GET /health", &["reader", "operator", "admin"]),
    ("PUT /api/v1/nodes/{uuid}/resource", &["operator", "admin"]),
    (
        "GET /api/v1/nodes/{uuid}/resource",
        &["reader", "operator", "admin"],
    ),
    (
        "GET /api/v1/nodes/{uuid}/with-resource",
        &["reader", "operator", "admin"],
    ),
    ("GET /api/v1/resources", &["reader", "operator", "admin"]),
    ("POST /api/v1/nodes", &["node", "admin"]),
    ("GET /api/v1/nodes", &["reader", "operator", "admin"]),
    ("GET /api/v1/nodes/{uuid}", &["reader", "operator", "admin"]),
    ("PUT /api/v1/nodes/{uuid}", &["operator", "admin"]),
    ("DELETE /api/v1/nodes/{uuid}", &["operator", "admin"]),
    ("POST /api/v1/nodes/{uuid}/heartbeat", &["admin"]),
    ("POST /api/v1/tasks", &["operator", "admin"]),
    ("GET /api/v1/tasks", &["reader", "operator", "admin"]),
    (
        "GET /api/v1/tasks/{task_id}",
        &["reader", "operator", "admin"],
    ),
    ("DELETE /api/v1/tasks/{task_id}", &["operator", "admin"]),
    (
        "POST /api/v1/tasks/{task_id}/invoke",
        &["operator", "admin"],
    ),
    ("POST /api/v1/executions", &["operator", "admin"]),
    ("GET /api/v1/executions", &["reader", "operator", "admin"]),
    (
        "GET /api/v1/executions/{execution_id}",
        &["reader", "operator", "admin"],
    ),
    (
        "GET /api/v1/executions/{execution_id}/watch",
        &["reader", "operator", "admin"],
    ),
    (
        "GET /api/v1/executions/{execution_id}/explain",
        &["reader", "operator", "admin"],
    ),
    (
        "POST /api/v1/executions/{execution_id}/cancel",
        &["operator", "admin"],
    ),
    ("POST /api/v1/files", &["operator", "admin"]),
    ("POST /api/v1/files/presign-upload", &["operator", "admin"]),
    ("GET /api/v1/files", &["reader", "operator", "admin"]),
    (
        "GET /api/v1/files/{file_id}",
        &["reader", "operator", "admin", "node"],
    ),
    (
        "GET /api/v1/files/{file_id}/meta",
        &["reader", "operator", "admin", "node"],
    ),
    ("DELETE /api/v1/files/{file_id}", &["operator", "admin"]),
    ("GET /api/v1/plugins", &["reader", "operator", "admin"]),
    ("POST /api/v1/plugins/reload", &["admin"]),
    (
        "GET /api/v1/plugins/history",
        &["reader", "operator", "admin"],
    ),
    (
        "GET /api/v1/plugins/shadow",
        &["reader", "operator", "admin"],
    ),
    ("GET /api/v1/autoscaler", &["reader", "operator", "admin"]),
    ("GET /api/v1/events", &["reader", "operator", "admin"]),
    ("POST /api/v1/tokens", &["admin"]),
    ("GET /api/v1/tokens", &["admin"]),
    ("DELETE /api/v1/tokens/{token_id}", &["admin"]),
    (
        "GET /api/v1/whoami",
        &["reader", "operator", "admin", "node"],
    ),
];

/// Roles that may call each gRPC method; the node token is bound to no node, as above.
const GRPC: &[(&str, &[&str])] = &[
    ("/spear.v1.NodeService/RegisterNode", &["node", "admin"]),
    ("/spear.v1.NodeService/Heartbeat", &["admin"]),
    ("/spear.v1.NodeService/UpdateNode", &["operator", "admin"]),
    ("/spear.v1.NodeService/DeleteNode", &["operator", "admin"]),
    (
        "/spear.v1.NodeService/GetNode",
        &["reader", "operator", "admin"],
    ),
    (
        "/spear.v1.NodeService/ListNodes",
        &["reader", "operator", "admin"],
    ),
    // SPEAR-Next's services, by the same rules.
    ("/sms.NodeService/RegisterNode", &["node", "admin"]),
    ("/sms.NodeService/Heartbeat", &["admin"]),
    ("/sms.NodeService/UpdateNode", &["operator", "admin"]),
    ("/sms.NodeService/DeleteNode", &["operator", "admin"]),
    ("/sms.NodeService/GetNode", &["reader", "operator", "admin"]),
    (
        "/sms.NodeService/ListNodes",
        &["reader", "operator", "admin"],
    ),
    (
        "/sms.NodeService/UpdateNodeResource",
        &["operator", "admin"],
    ),
    (
        "/sms.NodeService/GetNodeResource",
        &["reader", "operator", "admin"],
    ),
    (
        "/sms.NodeService/ListNodeResources",
        &["reader", "operator", "admin"],
    ),
    (
        "/sms.NodeService/GetNodeWithResource",
        &["reader", "operator", "admin"],
    ),
    ("/sms.TaskService/RegisterTask", &["operator", "admin"]),
    (
        "/sms.TaskService/ListTasks",
        &["reader", "operator", "admin"],
    ),
    ("/sms.TaskService/GetTask", &["reader", "operator", "admin"]),
    ("/sms.TaskService/UnregisterTask", &["operator", "admin"]),
    (
        "/sms.TaskService/SubscribeTaskEvents",
        &["reader", "operator", "admin"],
    ),
    ("/sms.TaskService/UpdateTaskStatus", &["operator", "admin"]),
    ("/sms.TaskService/UpdateTaskResult", &["operator", "admin"]),
    ("/spear.v1.TaskService/RegisterTask", &["operator", "admin"]),
    // A node reads the tasks it runs live instances of.
    (
        "/spear.v1.TaskService/GetTask",
        &["reader", "operator", "admin", "node"],
    ),
    ("/spear.v1.TaskService/Invoke", &["operator", "admin"]),
    (
        "/spear.v1.TaskService/ListTasks",
        &["reader", "operator", "admin"],
    ),
    ("/spear.v1.TaskService/DeleteTask", &["operator", "admin"]),
    ("/spear.v1.FileService/Upload", &["operator", "admin"]),
    (
        "/spear.v1.FileService/GetFile",
        &["reader", "operator", "admin", "node"],
    ),
    (
        "/spear.v1.FileService/Download",
        &["reader", "operator", "admin", "node"],
    ),
    (
        "/spear.v1.FileService/ListFiles",
        &["reader", "operator", "admin"],
    ),
    ("/spear.v1.FileService/DeleteFile", &["operator", "admin"]),
    (
        "/spear.v1.PluginService/ListPlugins",
        &["reader", "operator", "admin"],
    ),
    ("/spear.v1.PluginService/Reload", &["admin"]),
    (
        "/spear.v1.PluginService/History",
        &["reader", "operator", "admin"],
    ),
    ("/spear.v1.ExecutionService/Submit", &["operator", "admin"]),
    // A node may ask after executions (its own only: another's look absent).
    (
        "/spear.v1.ExecutionService/GetExecution",
        &["reader", "operator", "admin", "node"],
    ),
    (
        "/spear.v1.ExecutionService/ListExecutions",
        &["reader", "operator", "admin"],
    ),
    ("/spear.v1.ExecutionService/Cancel", &["operator", "admin"]),
    ("/spear.v1.ExecutionService/Assignments", &["admin"]),
    ("/spear.v1.ExecutionService/ReportResult", &["admin"]),
    ("/spear.v1.ExecutionService/ReportState", &["admin"]),
    ("/spear.v1.ExecutionService/ReportBatch", &["admin"]),
    ("/spear.v1.ExecutionService/ReportInvocation", &["admin"]),
    (
        "/spear.v1.EventService/Subscribe",
        &["reader", "operator", "admin"],
    ),
];

const ROLES: [&str; 4] = ["reader", "operator", "admin", "node"];

/// An SMS with auth on and [`ADMIN`] as its bootstrap admin token.
pub fn secured(sb: &Sandbox) -> Sms {
    sb.write_config("[auth]\nenabled = true\n");
    sb.start_with_env(&[], &[("SMS_ADMIN_TOKEN", ADMIN)])
}

/// Make a token through the API with the bootstrap admin token; the whole token.
pub async fn token(sms: &Sms, name: &str, role: &str, extra: Value) -> String {
    let mut body = json!({ "name": name, "role": role });
    body.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    let r = reqwest::Client::new()
        .post(sms.url("/api/v1/tokens"))
        .bearer_auth(ADMIN)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["name"], name);
    assert_eq!(v["role"], role);
    v["token"].as_str().unwrap().to_owned()
}

/// One token per role, and one that has expired.
async fn tokens(sms: &Sms) -> (BTreeMap<&'static str, String>, String) {
    let mut by_role = BTreeMap::new();
    for role in ROLES {
        by_role.insert(
            role,
            token(sms, &format!("t-{role}"), role, json!({})).await,
        );
    }
    let expired = token(sms, "short", "admin", json!({ "ttl_secs": 1 })).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    (by_role, expired)
}

async fn rest_status(sms: &Sms, method: &str, path: &str, token: Option<&str>) -> StatusCode {
    let path = path
        .replace("{uuid}", "00000000-0000-0000-0000-000000000001")
        .replace(['{', '}'], "");
    let c = reqwest::Client::new();
    let mut req = c
        .request(method.parse().unwrap(), sms.url(&path))
        .timeout(Duration::from_secs(10));
    if method != "GET" && method != "DELETE" {
        req = req.json(&json!({}));
    }
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    // Streams answer with their headers; the body is not read.
    req.send().await.unwrap().status()
}

#[tokio::test]
async fn every_rest_route_answers_each_token_by_the_table() {
    let sb = Sandbox::new("");
    let sms = secured(&sb);
    let (by_role, expired) = tokens(&sms).await;
    let doc: Value = reqwest::get(sms.url("/api/openapi.json"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let table: BTreeMap<&str, &[&str]> = REST.iter().copied().collect();
    let mut seen = 0;
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for method in ops.as_object().unwrap().keys() {
            let method = method.to_uppercase();
            let route = format!("{method} {path}");
            let allowed = table
                .get(route.as_str())
                .unwrap_or_else(|| panic!("{route} is served but has no row in the test's table"));
            seen += 1;
            for (token, what) in [
                (None, "no token"),
                (Some("spear.0000000000000000.00"), "a bad token"),
                (Some(expired.as_str()), "an expired token"),
            ] {
                assert_eq!(
                    rest_status(&sms, &method, path, token).await,
                    StatusCode::UNAUTHORIZED,
                    "{route} with {what}"
                );
            }
            for role in ROLES {
                let status = rest_status(&sms, &method, path, Some(&by_role[role])).await;
                if allowed.contains(&role) {
                    assert!(
                        status != StatusCode::UNAUTHORIZED && status != StatusCode::FORBIDDEN,
                        "{route} as {role}: {status}"
                    );
                } else {
                    assert_eq!(status, StatusCode::FORBIDDEN, "{route} as {role}");
                }
            }
        }
    }
    assert_eq!(seen, REST.len(), "every row of the table is a served route");
    // HEAD is GET's; a method a route does not serve is for admins only (then 405).
    let head = reqwest::Client::new()
        .head(sms.url("/api/v1/tasks"))
        .bearer_auth(&by_role["reader"])
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), StatusCode::OK);
    assert_eq!(
        rest_status(&sms, "PATCH", "/api/v1/tasks", Some(&by_role["reader"])).await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        rest_status(&sms, "PATCH", "/api/v1/tasks", Some(&by_role["admin"])).await,
        StatusCode::METHOD_NOT_ALLOWED
    );
}

#[tokio::test]
async fn a_401_names_what_is_missing_in_the_error_shape() {
    let sb = Sandbox::new("");
    let sms = secured(&sb);
    let c = reqwest::Client::new();
    let r = c.get(sms.url("/api/v1/tasks")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(r.headers()["www-authenticate"], "Bearer");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "unauthenticated");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("Bearer"),
        "{v}"
    );
    let r = c
        .get(sms.url("/api/v1/tasks"))
        .header("authorization", "Basic dXNlcjpwYXNz")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let reader = token(&sms, "r", "reader", json!({})).await;
    let r = c
        .post(sms.url("/api/v1/tasks"))
        .bearer_auth(&reader)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "permission_denied");
    let message = v["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("`r` (reader)") && message.contains("operator or admin"),
        "{message}"
    );
    // Health and metrics stay closed unless configured open; then they need nothing.
    assert_eq!(
        rest_status(&sms, "GET", "/metrics", None).await,
        StatusCode::UNAUTHORIZED
    );
    drop(sms);
    sb.write_config("[auth]\nenabled = true\nopen_healthz = true\nopen_metrics = true\n");
    let sms = sb.start_with_env(&[], &[("SMS_ADMIN_TOKEN", ADMIN)]);
    assert_eq!(
        rest_status(&sms, "GET", "/healthz", None).await,
        StatusCode::OK
    );
    assert_eq!(
        rest_status(&sms, "GET", "/metrics", None).await,
        StatusCode::OK
    );
    assert_eq!(
        rest_status(&sms, "GET", "/api/v1/tasks", None).await,
        StatusCode::UNAUTHORIZED
    );
}

/// The methods of the proto descriptors SMS serves, as `/package.Service/Method`.
fn grpc_methods() -> Vec<String> {
    use prost::Message;
    let set = prost_types::FileDescriptorSet::decode(spear_proto::FILE_DESCRIPTOR_SET).unwrap();
    let mut out = Vec::new();
    for file in set.file {
        for service in &file.service {
            for method in &service.method {
                out.push(format!(
                    "/{}.{}/{}",
                    file.package(),
                    service.name(),
                    method.name()
                ));
            }
        }
    }
    out
}

/// Call `path` with an empty message and `token`; the status it was refused with, if any.
async fn grpc_code(sms: &Sms, path: &str, token: Option<&str>) -> Option<tonic::Code> {
    let channel = tonic::transport::Endpoint::from_shared(sms.grpc_url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let mut req = tonic::Request::new(());
    if let Some(t) = token {
        req.metadata_mut()
            .insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    let codec = tonic_prost::ProstCodec::<(), ()>::default();
    let call = grpc.server_streaming(req, path.parse().unwrap(), codec);
    // A stream that opened is not refused; its messages are not read.
    match tokio::time::timeout(Duration::from_secs(10), call)
        .await
        .unwrap()
    {
        Ok(_) => None,
        Err(status) => Some(status.code()),
    }
}

#[tokio::test]
async fn every_grpc_method_answers_each_token_by_the_table() {
    let sb = Sandbox::new("");
    let sms = secured(&sb);
    let (by_role, expired) = tokens(&sms).await;
    let table: BTreeMap<&str, &[&str]> = GRPC.iter().copied().collect();
    let methods = grpc_methods();
    for path in &methods {
        let allowed = table
            .get(path.as_str())
            .unwrap_or_else(|| panic!("{path} is served but has no row in the test's table"));
        for token in [None, Some("nonsense"), Some(expired.as_str())] {
            assert_eq!(
                grpc_code(&sms, path, token).await,
                Some(tonic::Code::Unauthenticated),
                "{path} with {token:?}"
            );
        }
        for role in ROLES {
            let code = grpc_code(&sms, path, Some(&by_role[role])).await;
            if allowed.contains(&role) {
                assert!(
                    !matches!(
                        code,
                        Some(tonic::Code::Unauthenticated | tonic::Code::PermissionDenied)
                    ),
                    "{path} as {role}: {code:?}"
                );
            } else {
                assert_eq!(
                    code,
                    Some(tonic::Code::PermissionDenied),
                    "{path} as {role}"
                );
            }
        }
    }
    assert_eq!(
        methods.len(),
        GRPC.len(),
        "every row of the table is a served method"
    );
    // The health service needs a reader, like /healthz.
    let health = "/grpc.health.v1.Health/Check";
    assert_eq!(
        grpc_code(&sms, health, None).await,
        Some(tonic::Code::Unauthenticated)
    );
    assert_eq!(
        grpc_code(&sms, health, Some(&by_role["reader"])).await,
        None
    );
}

#[tokio::test]
async fn a_loopback_sms_answers_only_loopback_hosts_and_pages() {
    let sb = Sandbox::new("enable_web_admin = true\nweb_admin_addr = \"127.0.0.1:0\"\n");
    let sms = sb.start(&[]);
    let c = reqwest::Client::new();
    let port = sms.http.port();
    for (host, origin, ok) in [
        (format!("127.0.0.1:{port}"), None, true),
        (
            format!("localhost:{port}"),
            Some("http://localhost:3000"),
            true,
        ),
        (format!("evil.example:{port}"), None, false),
        (
            format!("127.0.0.1:{port}"),
            Some("http://evil.example"),
            false,
        ),
    ] {
        let mut req = c.get(sms.url("/api/v1/tasks")).header("host", &host);
        if let Some(o) = origin {
            req = req.header("origin", o);
        }
        let r = req.send().await.unwrap();
        if ok {
            assert_eq!(r.status(), StatusCode::OK, "{host} {origin:?}");
        } else {
            assert_eq!(r.status(), StatusCode::FORBIDDEN, "{host} {origin:?}");
            let v: Value = r.json().await.unwrap();
            assert!(
                v["error"]["message"].as_str().unwrap().contains("loopback"),
                "{v}"
            );
        }
    }
    // The web admin too, its page included.
    let admin = sms.admin.unwrap();
    let r = c
        .get(format!("http://{admin}/"))
        .header("host", "rebound.example")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    drop(sms);
    // Not on loopback (with auth on): tokens decide, not names.
    let sms = sb.start_with_env(
        &["--http-addr", "0.0.0.0:0"],
        &[("SMS_AUTH_ENABLED", "true"), ("SMS_ADMIN_TOKEN", ADMIN)],
    );
    let r = c
        .get(format!("http://127.0.0.1:{}/api/v1/tasks", sms.http.port()))
        .header("host", "sms.example")
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}
