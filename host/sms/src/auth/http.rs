//! The REST side: a middleware that finds the route's [`Need`](super::Need), checks the bearer
//! token against it and hands the [`Principal`] to the handler (a request extension).

use std::sync::Arc;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use spear_edge::tls::ClientCert;

use super::{Principal, rules};
use crate::error::SmsError;
use crate::model::now_ms;
use crate::service::Sms;

/// The bearer token of `headers`: None when there is no `Authorization` header; an error when
/// there is one that is not a bearer token.
pub fn bearer(headers: &HeaderMap) -> Result<Option<&str>, SmsError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let value = value.to_str().map_err(|_| malformed())?;
    let (scheme, token) = value.split_once(' ').ok_or_else(malformed)?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(malformed());
    }
    Ok(Some(token.trim()))
}

fn malformed() -> SmsError {
    SmsError::Unauthenticated("the Authorization header is not `Bearer <token>`".into())
}

/// Who the caller is (None: nobody), checked against `need`: the bearer token of `headers`,
/// else, with `[auth] node_certificates`, the node its client certificate `cert` names.
pub fn authorize(
    sms: &Sms,
    need: super::Need,
    headers: &HeaderMap,
    cert: Option<&ClientCert>,
) -> Result<Option<Principal>, SmsError> {
    authorize_under(sms, &sms.auth.config, need, headers, cert)
}

/// [`authorize`] under `config` (the web admin's guard checks with auth on while `[auth]` is
/// off).
fn authorize_under(
    sms: &Sms,
    config: &super::AuthConfig,
    need: super::Need,
    headers: &HeaderMap,
    cert: Option<&ClientCert>,
) -> Result<Option<Principal>, SmsError> {
    let principal = match bearer(headers)? {
        Some(token) => Some(sms.auth.tokens.verify(token, now_ms())?),
        None => cert
            .filter(|_| sms.auth.config.node_certificates)
            .and_then(|c| match super::cert::principal(&c.0, now_ms()) {
                Ok(p) => Some(p),
                Err(e) => {
                    // Not a node's certificate: the request is as one without a credential.
                    tracing::debug!("{e}");
                    None
                }
            }),
    };
    super::check(config, need, principal.as_ref())?;
    Ok(principal)
}

/// Check the request's token against its route's rule (see [`rules::rest`]).
pub async fn layer(State(sms): State<Arc<Sms>>, req: Request, next: Next) -> Response {
    if !sms.auth.config.enabled {
        return next.run(req).await;
    }
    enforce(&sms, &sms.auth.config, req, next).await
}

/// The checks of [`layer`] under `config`, whatever `[auth] enabled` says: the route's need, the
/// caller's token or certificate against it, the principal handed to the handler, the audit
/// label, and a stream that ends when its token stops working.
pub async fn enforce(
    sms: &Sms,
    config: &super::AuthConfig,
    mut req: Request,
    next: Next,
) -> Response {
    let need = match req.extensions().get::<MatchedPath>() {
        Some(path) => match rules::rest(req.method().as_str(), path.as_str()) {
            Some(need) => need,
            // A method the route may not serve (answered 405 by the router), or a rule
            // missing: only an admin gets that far (the auth tests fail on a missing rule).
            None => {
                tracing::debug!(method = %req.method(), route = path.as_str(), "no access rule");
                super::Need::Admin
            }
        },
        // No such route: still only for someone with a token (no probing for routes).
        None => super::Need::Read,
    };
    let cert = req.extensions().get::<ClientCert>();
    let principal = match authorize_under(sms, config, need, req.headers(), cert) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let Some(principal) = principal else {
        return next.run(req).await;
    };
    let label = principal.label.clone();
    let lifetime = super::stream::Lifetime::of(&principal);
    req.extensions_mut().insert(principal);
    let response = super::audit::scope(label, next.run(req)).await;
    // A stream (no length known) ends when its token stops working.
    let Some(lifetime) = lifetime else {
        return response;
    };
    // (A body of known size is sent as it was authorized, like a file download, which is read
    // whole before it is answered; one streamed from disk with a length would need wrapping.)
    if response.headers().contains_key(header::CONTENT_LENGTH)
        || http_body::Body::size_hint(response.body())
            .exact()
            .is_some()
    {
        return response;
    }
    let (parts, body) = response.into_parts();
    Response::from_parts(
        parts,
        axum::body::Body::new(super::stream::Revocable::new(body, lifetime, None)),
    )
}
