//! What an SMS that does not lead answers, on the same listeners it will serve on once it leads.
//!
//! It answers the reads of records whose stored copy is the whole truth itself, from storage
//! ([`super::reads`]: an execution, tasks, a file's metadata), and redirects the rest, writes
//! and the reads of what lives in the leader's memory (the ready queue, lists of executions, the
//! nodes' heartbeats and streams, events): an answer of its own would be stale, and forwarding
//! would put every request through two processes. A redirect costs a client one round trip and
//! tells it where to go next time.
//!
//! - REST: `307 Temporary Redirect` to the same path and query on the leader (method and body
//!   kept), with a `not_leader` error body naming the leader; `503` `not_leader` while no SMS
//!   leads (an election is under way). `GET /healthz` answers `200` with `role: "follower"`
//!   and the leader, so that a process supervisor sees it alive; a load balancer should route
//!   to the SMS whose `/healthz` says `role: "leader"`. `GET /metrics` answers `sms_leader 0`
//!   (a scrape of every replica tells who leads).
//! - gRPC: every call fails `UNAVAILABLE` with the leader's gRPC address in the message and in
//!   the `spear-leader` metadata (a client with a list of SMS addresses tries the next).

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tokio::sync::watch;

use super::LeaderInfo;

/// The leader, as this follower last saw the election.
pub type Leader = watch::Receiver<Option<LeaderInfo>>;

/// The follower's REST router (or, with `admin`, its web admin's: it redirects to the leader's
/// web admin); its redirects use `scheme` (`https` when the listeners speak TLS).
/// With `reads`, the REST router also answers the reads a standby serves itself
/// ([`super::reads`]).
pub fn rest_router(
    leader: Leader,
    scheme: &'static str,
    admin: bool,
    reads: Option<std::sync::Arc<super::reads::Reads>>,
) -> Router {
    let state = Rest {
        leader: leader.clone(),
        scheme,
        admin,
    };
    let redirects = Router::new().fallback(rest).with_state(state.clone());
    match reads {
        // A method the reads do not serve on one of their paths (`POST /api/v1/tasks`) is
        // redirected too, not answered 405.
        Some(reads) if !admin => super::reads::routes(reads, leader)
            .merge(redirects)
            .method_not_allowed_fallback(move |request: Request| {
                let state = state.clone();
                async move { rest(State(state), request).await }
            }),
        _ => redirects,
    }
}

#[derive(Clone)]
struct Rest {
    leader: Leader,
    scheme: &'static str,
    admin: bool,
}

/// The follower's gRPC router (gRPC is HTTP/2: any path answers a trailers-only `UNAVAILABLE`).
pub fn grpc_router(leader: Leader) -> Router {
    Router::new().fallback(grpc).with_state(leader)
}

async fn rest(
    State(Rest {
        leader,
        scheme,
        admin,
    }): State<Rest>,
    request: Request,
) -> Response {
    let leader = leader.borrow().clone();
    if request.uri().path() == "/metrics" {
        // What a scrape of every replica needs to tell who leads.
        let text = "# HELP sms_leader 1 while this SMS leads\n# TYPE sms_leader gauge\nsms_leader 0\n\
                    # HELP sms_leader_term The election term this SMS leads in (0 without an election)\n\
                    # TYPE sms_leader_term gauge\nsms_leader_term 0\n";
        return ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response();
    }
    if request.uri().path() == "/health" {
        return axum::Json(json!({
            "status": "healthy",
            "timestamp": crate::health::rfc3339_now(),
            "service": "sms",
            "role": "follower",
        }))
        .into_response();
    }
    if request.uri().path() == "/healthz" {
        return axum::Json(json!({
            "status": "ok",
            "role": "follower",
            "leader": leader,
        }))
        .into_response();
    }
    let Some(leader) = leader else {
        let body = json!({"success": false, "error": {
            "code": "not_leader",
            "message": "no SMS leads yet (an election is under way); retry",
            "field": null,
        }});
        return (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response();
    };
    let path = request
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    // The web admin's pages go to the leader's web admin (its REST address when it says none).
    let target = match (&leader.admin, admin) {
        (Some(a), true) => a,
        _ => &leader.http,
    };
    let location = format!("{scheme}://{target}{path}");
    let body = json!({
        "success": false,
        "error": {
            "code": "not_leader",
            "message": format!("this SMS does not lead; the leader is at {}", leader.http),
            "field": null,
        },
        "leader": {"http": leader.http, "grpc": leader.grpc},
    });
    let mut response = (StatusCode::TEMPORARY_REDIRECT, axum::Json(body)).into_response();
    if let Ok(v) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    response
}

async fn grpc(State(leader): State<Leader>) -> Response {
    let (message, grpc) = match leader.borrow().as_ref() {
        Some(l) => (
            format!("this SMS does not lead; the leader is at {}", l.grpc),
            l.grpc.clone(),
        ),
        None => (
            "no SMS leads yet (an election is under way); retry".to_owned(),
            String::new(),
        ),
    };
    let mut response = Response::new(axum::body::Body::empty());
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    // 14: UNAVAILABLE.
    headers.insert("grpc-status", HeaderValue::from_static("14"));
    if let Ok(v) = HeaderValue::from_str(&percent_encode(&message)) {
        headers.insert("grpc-message", v);
    }
    if let Ok(v) = HeaderValue::from_str(&grpc) {
        headers.insert("spear-leader", v);
    }
    response
}

/// `grpc-message` is percent-encoded (gRPC over HTTP/2): anything outside printable ASCII and
/// `%` itself.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if (0x20..0x7f).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
