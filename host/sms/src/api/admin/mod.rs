//! The web admin, served on `web_admin_addr`: its page (at `/`, `/admin` and `/admin/`; scripts
//! and styles under `/admin/static/`), SPEAR's `/admin/api/…` routes (nodes, stats, a node
//! snapshot stream, tasks, files), and the REST API beside them, all from one origin.
//!
//! The page holds no data: it is open, and every call it makes carries the token typed into it.
//! With `[auth]` on, each route asks what its REST twin asks ([`crate::auth::rules`]). With
//! `[auth]` off and `SMS_WEB_ADMIN_TOKEN` set (SPEAR's way to protect its admin), this listener
//! still checks every call as `[auth]` on would ([`guard`]).

pub mod nodes;
pub mod query;
pub mod stats;
pub mod tasks;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use std::sync::Arc;

use crate::api::body::ApiPath;
use crate::api::files;
use crate::api::rest::AppState;
use crate::error::SmsError;

/// The bootstrap token whose presence protects this listener even with `[auth]` off.
pub const WEB_ADMIN_TOKEN_VAR: &str = "SMS_WEB_ADMIN_TOKEN";

const INDEX: &str = include_str!("static/index.html");

const JS: &str = "text/javascript; charset=utf-8";

/// The page's assets: name, content type, content.
const ASSETS: &[(&str, &str, &str)] = &[
    ("index.html", "text/html; charset=utf-8", INDEX),
    (
        "style.css",
        "text/css; charset=utf-8",
        include_str!("static/style.css"),
    ),
    ("app.js", JS, include_str!("static/app.js")),
    ("lib.js", JS, include_str!("static/lib.js")),
    ("nodes.js", JS, include_str!("static/nodes.js")),
    ("tasks.js", JS, include_str!("static/tasks.js")),
    ("executions.js", JS, include_str!("static/executions.js")),
    ("files.js", JS, include_str!("static/files.js")),
    ("system.js", JS, include_str!("static/system.js")),
];

/// The admin's own routes (the page, its assets, `/admin/api/…`); `upload_limit` bounds uploads.
pub fn routes(upload_limit: usize) -> Router<AppState> {
    Router::new()
        .route("/", get(index))
        .route("/admin", get(index))
        .route("/admin/", get(index))
        .route("/admin/static/{*path}", get(asset))
        .route("/admin/api/nodes", get(nodes::list))
        .route("/admin/api/nodes/stream", get(nodes::stream))
        .route("/admin/api/nodes/{uuid}", get(nodes::detail))
        .route("/admin/api/stats", get(stats::stats))
        .route("/admin/api/tasks", get(tasks::list).post(tasks::create))
        .route("/admin/api/tasks/{task_id}", get(tasks::detail))
        .route(
            "/admin/api/files",
            get(files::list_files)
                .post(files::upload_file)
                .layer(DefaultBodyLimit::max(upload_limit)),
        )
        .route(
            "/admin/api/files/presign-upload",
            post(files::presign_upload),
        )
        .route(
            "/admin/api/files/{file_id}",
            get(files::download_file).delete(files::delete_file),
        )
        .route("/admin/api/files/{file_id}/meta", get(files::file_meta))
        .layer(axum::Extension(Arc::new(stats::StatsCache::default())))
}

async fn index() -> Response {
    page("text/html; charset=utf-8", INDEX)
}

async fn asset(ApiPath(path): ApiPath<String>) -> Response {
    match ASSETS.iter().find(|(name, _, _)| *name == path) {
        Some((_, content_type, body)) => page(content_type, body),
        None => SmsError::not_found("asset", &path).into_response(),
    }
}

/// What the page may load and who may frame it: its own origin's scripts, styles and calls
/// only, no framing (its buttons delete and cancel), no inline script.
const CSP: &str = "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'; object-src 'none'";

fn page(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            // A new SMS may serve a new page: never a stale one from the cache.
            (header::CACHE_CONTROL, "no-cache"),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_FRAME_OPTIONS, "DENY"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        body,
    )
        .into_response()
}

/// With `[auth]` off and `SMS_WEB_ADMIN_TOKEN` set, this listener checks every call as `[auth]`
/// on would (the same rules, roles, audit and stream lifetimes: [`crate::auth::http::enforce`]);
/// otherwise it passes everything to the checks of `[auth]`.
pub async fn guard(State(sms): State<AppState>, req: Request, next: Next) -> Response {
    if sms.auth.config.enabled || !sms.auth.tokens.has_bootstrap(WEB_ADMIN_TOKEN_VAR) {
        return next.run(req).await;
    }
    let config = crate::auth::AuthConfig {
        enabled: true,
        ..sms.auth.config.clone()
    };
    crate::auth::http::enforce(&sms, &config, req, next).await
}
