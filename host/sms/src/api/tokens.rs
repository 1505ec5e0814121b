//! `/api/v1/tokens` (admin): make, list and revoke tokens on a running SMS; `/api/v1/whoami`:
//! who the caller's token says it is.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Extension, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::api::body::{ApiJson, ApiPath};
use crate::api::rest::ErrorBody;
use crate::auth::tokens::TokenInfo;
use crate::auth::{Principal, Role};
use crate::error::SmsError;
use crate::service::Sms;

/// `POST /api/v1/tokens`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    /// A unique name (letters, digits, `-`, `_`, `.`; at most 64).
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// For a node token: the node uuid it may act as (else: its first registration's).
    #[serde(default)]
    pub node: Option<String>,
    /// Seconds until it stops working (absent: never).
    #[serde(default)]
    pub ttl_secs: Option<u64>,
}

/// A new token: the only time its secret is shown.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedToken {
    /// The whole token, for `Authorization: Bearer …`; it cannot be shown again.
    pub token: String,
    /// Its record.
    #[serde(flatten)]
    pub info: TokenInfo,
}

/// `GET /api/v1/tokens`.
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenList {
    /// Every token, by name (never the secrets).
    pub tokens: Vec<TokenInfo>,
}

/// `GET /api/v1/whoami`.
#[derive(Debug, Serialize, ToSchema)]
pub struct WhoAmI {
    /// The token's name (or where a bootstrap token came from).
    pub name: String,
    /// Its role.
    pub role: Role,
    /// For a node token: its node.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// When it stops working (ms since the epoch).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at_ms: Option<i64>,
    /// Whether SMS checks tokens at all (`[auth] enabled`).
    pub auth_enabled: bool,
}

fn by(principal: Option<&Extension<Principal>>) -> String {
    principal.map_or_else(|| "anonymous (auth off)".into(), |p| p.name.to_string())
}

#[utoipa::path(post, path = "/api/v1/tokens", request_body = CreateToken,
    responses((status = 201, body = CreatedToken), (status = 400, body = ErrorBody),
        (status = 409, body = ErrorBody)), tag = "tokens")]
pub(crate) async fn create_token(
    State(sms): State<Arc<Sms>>,
    principal: Option<Extension<Principal>>,
    ApiJson(req): ApiJson<CreateToken>,
) -> Result<Response, SmsError> {
    let (info, token) = sms
        .auth
        .tokens
        .create(
            &req.name,
            req.role,
            req.node,
            req.ttl_secs,
            &by(principal.as_ref()),
            Some(&sms.events),
        )
        .await?;
    Ok((StatusCode::CREATED, Json(CreatedToken { token, info })).into_response())
}

#[utoipa::path(get, path = "/api/v1/tokens",
    responses((status = 200, body = TokenList)), tag = "tokens")]
pub(crate) async fn list_tokens(State(sms): State<Arc<Sms>>) -> Json<TokenList> {
    Json(TokenList {
        tokens: sms.auth.tokens.list(),
    })
}

#[utoipa::path(delete, path = "/api/v1/tokens/{token_id}",
    params(("token_id" = String, Path, description = "the token's id or name")),
    responses((status = 200, body = TokenInfo), (status = 404, body = ErrorBody)), tag = "tokens")]
pub(crate) async fn revoke_token(
    State(sms): State<Arc<Sms>>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<TokenInfo>, SmsError> {
    // The token's removal and its `token.revoked` event are one write.
    let info = sms.auth.tokens.revoke(&id, Some(&sms.events)).await?;
    Ok(Json(info))
}

#[utoipa::path(get, path = "/api/v1/whoami",
    responses((status = 200, body = WhoAmI), (status = 401, body = ErrorBody)), tag = "tokens")]
pub(crate) async fn whoami(
    State(sms): State<Arc<Sms>>,
    principal: Option<Extension<Principal>>,
) -> Result<Json<WhoAmI>, SmsError> {
    let enabled = sms.auth.config.enabled;
    match principal {
        Some(Extension(p)) => Ok(Json(WhoAmI {
            name: p.name.to_string(),
            role: p.role,
            node: p.node.as_deref().map(str::to_owned),
            expires_at_ms: p.expires_at_ms,
            auth_enabled: enabled,
        })),
        // Auth is off (with it on, the route needs a token): everyone is admin.
        None => Ok(Json(WhoAmI {
            name: "anonymous".into(),
            role: Role::Admin,
            node: None,
            expires_at_ms: None,
            auth_enabled: enabled,
        })),
    }
}
