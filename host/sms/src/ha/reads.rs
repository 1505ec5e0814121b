//! What a standby answers itself: reads of records whose stored copy is the whole truth, straight
//! from storage (the leader stores every change of them before it answers, and etcd's reads are
//! linearizable, so a standby's answer is as fresh as the leader's):
//!
//! - `GET /api/v1/executions/{id}` (with its payloads, from the shared `files.dir`);
//! - `GET /api/v1/tasks`, `GET /api/v1/tasks/{id}`;
//! - `GET /api/v1/files/{id}/meta`.
//!
//! Everything else is redirected to the leader ([`super::follower`]): lists of executions and
//! nodes, events and their streams live in the leader's memory (heartbeats, the ready queue, a
//! node's running count are never stored), and writes are the leader's alone. Each answer says
//! who leads (`spear-leader`). With `[auth]` on, a standby checks a bearer token against its
//! record in storage as it is at that moment (a token the leader revoked is refused at once) or
//! the bootstrap tokens; it takes no node certificates.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};

use crate::auth::{AuthConfig, Need, Tokens};
use crate::blobs::Blobs;
use crate::db::Db;
use crate::error::{Result, SmsError};
use crate::model::{Task, now_ms};

/// A standby's reads: storage, the blob store, and the token checks.
pub struct Reads {
    db: Db,
    blobs: Blobs,
    auth: AuthConfig,
    tokens: Tokens,
}

impl std::fmt::Debug for Reads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Reads")
    }
}

impl Reads {
    /// Reads of `db`, payloads under `files_dir`, tokens checked under `auth` (with `bootstrap`
    /// tokens, as [`crate::auth::tokens::bootstrap`] finds them).
    pub fn new(
        db: Db,
        files_dir: &std::path::Path,
        auth: AuthConfig,
        bootstrap: Vec<(String, String)>,
    ) -> Self {
        Self {
            tokens: Tokens::unloaded(db.clone(), bootstrap),
            db,
            blobs: Blobs::new(files_dir.join("blobs")),
            auth,
        }
    }

    /// Check the request's bearer token against `need`.
    async fn check(&self, need: Need, headers: &HeaderMap) -> Result<()> {
        if !self.auth.enabled || need.is_open(&self.auth) {
            return Ok(());
        }
        let principal = match crate::auth::http::bearer(headers)? {
            Some(token) => Some(self.tokens.verify_stored(token, now_ms()).await?),
            None => None,
        };
        crate::auth::check(&self.auth, need, principal.as_ref())
    }
}

/// A standby's reads and who leads (for the answers' `spear-leader`).
#[derive(Clone)]
struct ReadState {
    reads: Arc<Reads>,
    leader: super::follower::Leader,
}

/// The routes a standby answers, on `reads`; `leader`: the election as it last saw it.
pub fn routes(reads: Arc<Reads>, leader: super::follower::Leader) -> axum::Router {
    axum::Router::new()
        .route(
            "/api/v1/executions/{execution_id}",
            axum::routing::get(execution),
        )
        .route("/api/v1/tasks", axum::routing::get(tasks))
        .route("/api/v1/tasks/{task_id}", axum::routing::get(task))
        .route(
            "/api/v1/files/{file_id}/meta",
            axum::routing::get(file_meta),
        )
        .with_state(ReadState { reads, leader })
}

/// `answer` as JSON, saying who leads.
fn answered<T: serde::Serialize>(state: &ReadState, answer: Result<T>) -> Response {
    answered_with(state, answer, IntoResponse::into_response)
}

/// [`answered`], an error answered by `error`.
fn answered_with<T: serde::Serialize>(
    state: &ReadState,
    answer: Result<T>,
    error: impl FnOnce(SmsError) -> Response,
) -> Response {
    let mut response = match answer {
        Ok(v) => Json(v).into_response(),
        Err(e) => error(e),
    };
    let leader = state.leader.borrow().as_ref().map(|l| l.http.clone());
    if let Some(v) = leader.and_then(|l| HeaderValue::from_str(&l).ok()) {
        response.headers_mut().insert("spear-leader", v);
    }
    response
}

async fn execution(
    State(state): State<ReadState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let reads = &state.reads;
    let answer = async {
        reads.check(Need::Read, &headers).await?;
        crate::checks::check_line("execution_id", &id, 128)?;
        let e = crate::history::stored(&reads.db, &id)
            .await?
            .ok_or_else(|| SmsError::not_found("execution", &id))?;
        crate::payloads::whole(&reads.blobs, e).await
    };
    answered(&state, answer.await)
}

async fn tasks(
    State(state): State<ReadState>,
    crate::api::body::ApiQuery(f): crate::api::body::ApiQuery<crate::api::tasks::TaskFilter>,
    headers: HeaderMap,
) -> Response {
    let reads = &state.reads;
    let answer = async {
        reads.check(Need::Read, &headers).await?;
        let all: Vec<Task> = reads.db.load_all("task/").await?;
        crate::api::tasks::page(all, &f)
    };
    answered(&state, answer.await)
}

async fn task(
    State(state): State<ReadState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let reads = &state.reads;
    let answer = async {
        reads.check(Need::Read, &headers).await?;
        crate::checks::check_line("task_id", &id, 128)?;
        reads
            .db
            .get::<Task>(format!("task/{id}"))
            .await?
            .map(crate::api::tasks::TaskView::from)
            .ok_or_else(|| SmsError::not_found("task", &id))
    };
    answered(&state, answer.await)
}

async fn file_meta(
    State(state): State<ReadState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let reads = &state.reads;
    let answer = async {
        reads.check(Need::FileRead, &headers).await?;
        crate::files::stored_meta(&reads.db, &id)
            .await
            .map(crate::api::files::found)
    };
    // A 404 says SPEAR's `found: false`, as the leader's does.
    answered_with(&state, answer.await, crate::api::files::not_found)
}
