//! Node identity, revocation, offline tokens and the refusal to listen openly without auth, on a
//! real `sms` process.

use crate::auth::{ADMIN, secured, token};
use crate::common;

use std::time::Duration;

use common::Sandbox;
use reqwest::StatusCode;
use serde_json::{Value, json};
use spear_proto::v1;
use tonic::Request;

const NODE_A: &str = "00000000-0000-4000-8000-00000000000a";
const NODE_B: &str = "00000000-0000-4000-8000-00000000000b";
const NODE_C: &str = "00000000-0000-4000-8000-00000000000c";

fn with<T>(message: T, token: &str) -> Request<T> {
    let mut r = Request::new(message);
    r.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    r
}

async fn register(c: &reqwest::Client, sms: &common::Sms, token: &str, uuid: &str) -> StatusCode {
    c.post(sms.url("/api/v1/nodes"))
        .bearer_auth(token)
        .json(&json!({ "uuid": uuid, "ip_address": "127.0.0.1", "port": 9000 }))
        .send()
        .await
        .unwrap()
        .status()
}

#[tokio::test]
async fn a_node_token_acts_only_as_its_own_node() {
    let sb = Sandbox::new("");
    let sms = secured(&sb);
    let c = reqwest::Client::new();
    // `a` is bound when it is made; `b` at its first registration.
    let a = token(&sms, "node-a", "node", json!({ "node": NODE_A })).await;
    let b = token(&sms, "node-b", "node", json!({})).await;
    assert_eq!(register(&c, &sms, &b, NODE_A).await, StatusCode::FORBIDDEN);
    assert_eq!(register(&c, &sms, &a, NODE_A).await, StatusCode::CREATED);
    assert_eq!(register(&c, &sms, &b, NODE_B).await, StatusCode::CREATED);
    // Now bound: b cannot register as anything else, nor act as a.
    assert_eq!(register(&c, &sms, &b, NODE_A).await, StatusCode::FORBIDDEN);
    let tokens: Value = c
        .get(sms.url("/api/v1/tokens"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let b_row = tokens["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "node-b")
        .unwrap();
    assert_eq!(b_row["node"], NODE_B, "bound at its first registration");
    for (method, path) in [
        ("POST", format!("/api/v1/nodes/{NODE_A}/heartbeat")),
        ("PUT", format!("/api/v1/nodes/{NODE_A}")),
        ("DELETE", format!("/api/v1/nodes/{NODE_A}")),
    ] {
        let r = c
            .request(method.parse().unwrap(), sms.url(&path))
            .bearer_auth(&b)
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{method} {path} by b");
        let v: Value = r.json().await.unwrap();
        assert!(
            v["error"]["message"].as_str().unwrap().contains(NODE_B),
            "{v}"
        );
    }
    let r = c
        .post(sms.url(&format!("/api/v1/nodes/{NODE_A}/heartbeat")))
        .bearer_auth(&a)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "a heartbeats as itself");
    // A node drains itself, but cannot make itself active again.
    for (status, want) in [
        ("draining", StatusCode::OK),
        ("active", StatusCode::FORBIDDEN),
    ] {
        let r = c
            .put(sms.url(&format!("/api/v1/nodes/{NODE_A}")))
            .bearer_auth(&a)
            .json(&json!({ "status": status }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), want, "a sets itself {status}");
    }
    // An operator's drain holds: the node's re-registration keeps it, its token cannot remove
    // the node; the operator's `active` releases it.
    let put = |token: &'static str, status: &'static str| {
        c.put(sms.url(&format!("/api/v1/nodes/{NODE_A}")))
            .bearer_auth(token)
            .json(&json!({ "status": status }))
            .send()
    };
    assert_eq!(
        put(ADMIN, "draining").await.unwrap().status(),
        StatusCode::OK
    );
    assert_eq!(register(&c, &sms, &a, NODE_A).await, StatusCode::CREATED);
    let node: Value = c
        .get(sms.url(&format!("/api/v1/nodes/{NODE_A}")))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(node["status"], "draining", "{node}");
    assert_eq!(node["held_by"], "SMS_ADMIN_TOKEN", "{node}");
    let r = c
        .delete(sms.url(&format!("/api/v1/nodes/{NODE_A}")))
        .bearer_auth(&a)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(put(ADMIN, "active").await.unwrap().status(), StatusCode::OK);
    // A node registered without a token of its own cannot be taken by a new unbound token.
    assert_eq!(register(&c, &sms, ADMIN, NODE_C).await, StatusCode::CREATED);
    let newcomer = token(&sms, "node-c", "node", json!({})).await;
    let r = c
        .post(sms.url("/api/v1/nodes"))
        .bearer_auth(&newcomer)
        .json(&json!({ "uuid": NODE_C, "ip_address": "127.0.0.1", "port": 9000 }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let v: Value = r.json().await.unwrap();
    assert!(
        v["error"]["message"].as_str().unwrap().contains("--node"),
        "{v}"
    );

    // gRPC: b cannot open a's stream, heartbeat as a, or report a's work.
    let mut nodes = v1::node_service_client::NodeServiceClient::connect(sms.grpc_url())
        .await
        .unwrap();
    let mut execs = v1::execution_service_client::ExecutionServiceClient::connect(sms.grpc_url())
        .await
        .unwrap();
    let denied = |r: Result<_, tonic::Status>| match r {
        Err(s) => s.code() == tonic::Code::PermissionDenied,
        Ok(_) => false,
    };
    let hb = v1::HeartbeatRequest {
        uuid: NODE_A.into(),
        ..Default::default()
    };
    assert!(denied(
        nodes.heartbeat(with(hb.clone(), &b)).await.map(drop)
    ));
    assert!(nodes.heartbeat(with(hb, &a)).await.is_ok());
    let open = v1::AssignmentsRequest {
        node_uuid: NODE_A.into(),
        after: 0,
    };
    assert!(denied(
        execs.assignments(with(open.clone(), &b)).await.map(drop)
    ));
    assert!(execs.assignments(with(open, &a)).await.is_ok());
    let report = v1::ReportResultRequest {
        node_uuid: NODE_A.into(),
        execution_id: "e".into(),
        ..Default::default()
    };
    assert!(denied(
        execs.report_result(with(report, &b)).await.map(drop)
    ));
    let batch = v1::ReportBatchRequest {
        node_uuid: NODE_A.into(),
        ..Default::default()
    };
    assert!(denied(execs.report_batch(with(batch, &b)).await.map(drop)));
    // A node asks after its own executions only; another node's look absent.
    let submitted: Value = c
        .post(sms.url("/api/v1/executions"))
        .bearer_auth(ADMIN)
        .json(&json!({"executable": {"type": "process", "name": "/bin/true"}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = submitted["execution_id"].as_str().unwrap().to_owned();
    let asked = execs
        .get_execution(with(v1::ExecutionRef { execution_id: id }, &b))
        .await
        .unwrap_err();
    assert_eq!(asked.code(), tonic::Code::NotFound, "{asked:?}");
}

#[tokio::test]
async fn a_revoked_token_stops_at_once_open_streams_included() {
    let sb = Sandbox::new("");
    let sms = secured(&sb);
    let c = reqwest::Client::new();
    let reader = token(&sms, "watcher", "reader", json!({})).await;
    let mut sse = c
        .get(sms.url("/api/v1/events"))
        .bearer_auth(&reader)
        .send()
        .await
        .unwrap();
    assert_eq!(sse.status(), StatusCode::OK);
    let mut events = v1::event_service_client::EventServiceClient::connect(sms.grpc_url())
        .await
        .unwrap();
    let mut stream = events
        .subscribe(with(v1::SubscribeRequest::default(), &reader))
        .await
        .unwrap()
        .into_inner();
    let r = c
        .delete(sms.url("/api/v1/tokens/watcher"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = c
        .get(sms.url("/api/v1/tasks"))
        .bearer_auth(&reader)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "refused right after");
    // The SSE stream ends (past the events it had already sent).
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(_chunk) = sse.chunk().await.unwrap() {}
    })
    .await;
    assert!(ended.is_ok(), "the event stream ended");
    // The gRPC stream ends with UNAUTHENTICATED.
    let status = end_of(&mut stream, Duration::from_secs(10)).await;
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    assert!(status.message().contains("revoked"), "{status:?}");
}

#[tokio::test]
async fn a_stream_ends_when_its_token_expires() {
    let sb = Sandbox::new("");
    let sms = secured(&sb);
    let brief = token(&sms, "brief", "reader", json!({ "ttl_secs": 1 })).await;
    let opened = std::time::Instant::now();
    let mut sse = reqwest::Client::new()
        .get(sms.url("/api/v1/events"))
        .bearer_auth(&brief)
        .send()
        .await
        .unwrap();
    assert_eq!(sse.status(), StatusCode::OK);
    tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(_chunk) = sse.chunk().await.unwrap() {}
    })
    .await
    .expect("the event stream ended at the token's expiry");
    assert!(
        opened.elapsed() >= Duration::from_millis(500),
        "not before it"
    );
}

/// The status an open gRPC stream ends with, within `limit`.
async fn end_of<T>(stream: &mut tonic::Streaming<T>, limit: Duration) -> tonic::Status {
    tokio::time::timeout(limit, async {
        loop {
            match stream.message().await {
                Ok(Some(_)) => continue,
                Ok(None) => panic!("the stream ended without a status"),
                Err(s) => return s,
            }
        }
    })
    .await
    .expect("the stream ended in time")
}

#[tokio::test]
async fn an_idle_assignment_stream_ends_when_its_node_token_is_revoked_or_expires() {
    let sb = Sandbox::new("");
    let sms = secured(&sb);
    let c = reqwest::Client::new();
    let a = token(&sms, "idle-a", "node", json!({ "node": NODE_A })).await;
    let b = token(
        &sms,
        "idle-b",
        "node",
        json!({ "node": NODE_B, "ttl_secs": 2 }),
    )
    .await;
    assert_eq!(register(&c, &sms, &a, NODE_A).await, StatusCode::CREATED);
    assert_eq!(register(&c, &sms, &b, NODE_B).await, StatusCode::CREATED);
    let mut execs = v1::execution_service_client::ExecutionServiceClient::connect(sms.grpc_url())
        .await
        .unwrap();
    let open = |uuid: &str, token: &str| {
        with(
            v1::AssignmentsRequest {
                node_uuid: uuid.to_owned(),
                after: 0,
            },
            token,
        )
    };
    let mut stream_a = execs
        .assignments(open(NODE_A, &a))
        .await
        .unwrap()
        .into_inner();
    let mut stream_b = execs
        .assignments(open(NODE_B, &b))
        .await
        .unwrap()
        .into_inner();
    // No work and no events reach these streams: only the revocation (or the expiry) can end
    // them, through the waiter each armed when it first waited.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = c
        .delete(sms.url("/api/v1/tokens/idle-a"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let status = end_of(&mut stream_a, Duration::from_secs(10)).await;
    assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");
    assert!(status.message().contains("revoked"), "{status:?}");
    let status = end_of(&mut stream_b, Duration::from_secs(10)).await;
    assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");
    assert!(status.message().contains("expired"), "{status:?}");
}

#[tokio::test]
async fn an_expired_token_is_removed_when_a_token_is_made() {
    let sb = Sandbox::new("");
    let sms = secured(&sb);
    let c = reqwest::Client::new();
    token(&sms, "brief", "reader", json!({ "ttl_secs": 1 })).await;
    let again = |name: &'static str| {
        c.post(sms.url("/api/v1/tokens"))
            .bearer_auth(ADMIN)
            .json(&json!({ "name": name, "role": "reader" }))
            .send()
    };
    // While it lives, its name is taken.
    assert_eq!(again("brief").await.unwrap().status(), StatusCode::CONFLICT);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    // Expired: it goes when a token is made, and its name is free again.
    assert_eq!(again("brief").await.unwrap().status(), StatusCode::CREATED);
    let list: Value = c
        .get(sms.url("/api/v1/tokens"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let briefs: Vec<&Value> = list["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["name"] == "brief")
        .collect();
    assert_eq!(briefs.len(), 1, "{list}");
    assert!(briefs[0]["expires_at_ms"].is_null(), "the new one: {list}");
}

fn sms_cmd(sb: &Sandbox, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_sms"))
        .current_dir(sb.path())
        .env("SMS_LOG", "warn")
        .arg("--config")
        .arg(sb.config())
        .args(args)
        .output()
        .unwrap()
}

#[tokio::test]
async fn offline_tokens_work_against_the_started_sms_and_revoke_offline() {
    let sb = Sandbox::new("[auth]\nenabled = true\n");
    let made = sms_cmd(
        &sb,
        &["token", "create", "--role", "operator", "--name", "ci"],
    );
    assert!(made.status.success(), "{made:?}");
    let op = String::from_utf8(made.stdout).unwrap().trim().to_owned();
    assert!(op.starts_with("spear."), "{op}");
    let stderr = String::from_utf8_lossy(&made.stderr);
    assert!(stderr.contains("shown only now"), "{stderr}");
    let dup = sms_cmd(
        &sb,
        &["token", "create", "--role", "reader", "--name", "ci"],
    );
    assert!(!dup.status.success());
    assert!(String::from_utf8_lossy(&dup.stderr).contains("`ci` exists"));
    let bad = sms_cmd(&sb, &["token", "create", "--role", "root", "--name", "x"]);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("`root` is not reader"));
    let dots = sms_cmd(
        &sb,
        &["token", "create", "--role", "reader", "--name", ".."],
    );
    assert!(
        String::from_utf8_lossy(&dots.stderr).contains("name:"),
        "{dots:?}"
    );
    let list = sms_cmd(&sb, &["token", "list"]);
    let row: Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(
        (row["name"].as_str(), row["role"].as_str()),
        (Some("ci"), Some("operator"))
    );
    assert!(
        !String::from_utf8_lossy(&list.stdout).contains(op.rsplit('.').next().unwrap()),
        "the list never shows the secret"
    );

    let sms = sb.start(&[]);
    let c = reqwest::Client::new();
    let submit = json!({"executable": {"type": "process", "name": "/bin/true"}});
    let r = c
        .post(sms.url("/api/v1/executions"))
        .bearer_auth(&op)
        .json(&submit)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    let who: Value = c
        .get(sms.url("/api/v1/whoami"))
        .bearer_auth(&op)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(who["name"], "ci");
    assert_eq!(who["role"], "operator");
    // While SMS runs the database is its own: the offline command says what to do instead.
    let busy = sms_cmd(&sb, &["token", "list"]);
    assert!(!busy.status.success());
    assert!(
        String::from_utf8_lossy(&busy.stderr).contains("spear token"),
        "{busy:?}"
    );
    drop(sms);
    let revoked = sms_cmd(&sb, &["token", "revoke", "ci"]);
    assert!(revoked.status.success(), "{revoked:?}");
    let sms = sb.start(&[]);
    let r = c
        .get(sms.url("/api/v1/tasks"))
        .bearer_auth(&op)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}

#[test]
fn listening_openly_without_auth_is_refused_naming_insecure() {
    let sb = Sandbox::new("");
    let out = sms_cmd(&sb, &["--http-addr", "0.0.0.0:0"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("http.addr 0.0.0.0:0"), "{err}");
    assert!(err.contains("--insecure"), "{err}");
    assert!(err.contains("sms token create"), "{err}");
    // With --insecure it starts; with auth on it needs no flag.
    let sms = sb.start(&["--http-addr", "0.0.0.0:0", "--insecure"]);
    assert!(sms.http.ip().is_unspecified());
    drop(sms);
    let sms = sb.start_with_env(
        &["--http-addr", "0.0.0.0:0"],
        &[("SMS_AUTH_ENABLED", "true"), ("SMS_ADMIN_TOKEN", ADMIN)],
    );
    assert!(sms.http.ip().is_unspecified());
    drop(sms);
    // A short bootstrap token is refused, naming where it came from.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sms"))
        .current_dir(sb.path())
        .env("SMS_ADMIN_TOKEN", "short")
        .arg("--config")
        .arg(sb.config())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("SMS_ADMIN_TOKEN: a bootstrap admin token must be at least 24"),
        "{err}"
    );
}
