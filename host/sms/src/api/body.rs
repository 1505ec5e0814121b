//! Request parts at the REST edge: JSON, byte, query and path extractors whose rejections become
//! [`SmsError`]s naming the field, in the one JSON error shape (a body over its limit is
//! `413 too_large`, one that arrives too slowly `408 timeout`), and a check of `Content-Length`
//! that refuses an oversized body before any of it is read.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, JsonRejection};
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use spear_edge::body::BodyTimeout;

use crate::error::SmsError;

/// A JSON body whose rejections become [`SmsError::InvalidArgument`] naming the field.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = SmsError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let limit = body_limit(&req);
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(ApiJson(v)),
            Err(JsonRejection::BytesRejection(r)) => Err(bytes_error(r, limit)),
            Err(rejection) => Err(json_error(rejection)),
        }
    }
}

/// A raw body (an upload) whose rejections become [`SmsError`]s.
pub struct ApiBytes(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for ApiBytes {
    type Rejection = SmsError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let limit = body_limit(&req);
        Bytes::from_request(req, state)
            .await
            .map(ApiBytes)
            .map_err(|r| bytes_error(r, limit))
    }
}

/// A query string whose rejections become [`SmsError::InvalidArgument`] naming the parameter.
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = SmsError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(v)) => Ok(ApiQuery(v)),
            Err(rejection) => {
                let text = rejection.body_text();
                let detail = text
                    .strip_prefix("Failed to deserialize query string: ")
                    .unwrap_or(&text);
                let (field, reason) = match detail.split_once(": ") {
                    Some((f, r)) if !f.contains(' ') => (f.to_owned(), r.to_owned()),
                    _ => ("query".to_owned(), detail.to_owned()),
                };
                Err(SmsError::invalid(field, reason))
            }
        }
    }
}

/// Path parameters whose rejections (bad percent-encoding, not UTF-8) become
/// [`SmsError::InvalidArgument`].
pub struct ApiPath<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = SmsError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(v)| ApiPath(v))
            .map_err(|r| SmsError::invalid("path", r.body_text()))
    }
}

/// The limit the router put on this request (see [`check_length`]), for the error text.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimit(pub u64);

fn body_limit(req: &Request) -> u64 {
    req.extensions().get::<BodyLimit>().map_or(0, |l| l.0)
}

fn bytes_error(rejection: BytesRejection, limit: u64) -> SmsError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        return SmsError::TooLarge { limit };
    }
    let source: &(dyn std::error::Error + 'static) = &rejection;
    if BodyTimeout::is_in(source) {
        return SmsError::Timeout(rejection.body_text());
    }
    SmsError::invalid("body", rejection.body_text())
}

/// Refuse, before reading it, a body whose `Content-Length` is over the limit of its route
/// (uploads: `[files] max_upload_mb`; the rest: `[http] max_body_kb`), and record the limit for the
/// extractors. The answer closes the connection, so the unread body is never buffered.
pub async fn check_length(limits: (u64, u64), mut req: Request, next: Next) -> Response {
    let (upload, json) = limits;
    let limit = if req.method() == axum::http::Method::POST
        && matches!(req.uri().path(), "/api/v1/files" | "/admin/api/files")
    {
        upload
    } else {
        json
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        let mut answer = SmsError::TooLarge { limit }.into_response();
        answer
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        return answer;
    }
    req.extensions_mut().insert(BodyLimit(limit));
    next.run(req).await
}

/// Name the field a JSON rejection is about.
fn json_error(rejection: JsonRejection) -> SmsError {
    let text = rejection.body_text();
    let detail = text
        .split_once("target type: ")
        .map(|(_, d)| d.to_owned())
        .unwrap_or_else(|| text.clone());
    let quoted = |marker: &str| {
        detail
            .split_once(marker)
            .and_then(|(_, rest)| rest.split('`').next())
            .map(str::to_owned)
    };
    // A field missing or unknown inside an object is named under it (`executable.type`).
    let inner = quoted("missing field `").or_else(|| quoted("unknown field `"));
    // serde_path_to_error puts the path first ("port: invalid type…"); the field says it already.
    let path = detail
        .split_once(": ")
        .map(|(path, _)| path.to_owned())
        .filter(|p| !p.contains(' ') && p != ".");
    let detail = match &path {
        Some(p) => detail
            .strip_prefix(&format!("{p}: "))
            .map(str::to_owned)
            .unwrap_or(detail),
        None => detail,
    };

    let field = match (inner, path) {
        // An unknown field's path ends with the field itself; a missing one's is its object.
        (Some(f), Some(p)) if p == f || p.ends_with(&format!(".{f}")) => p,
        (Some(f), Some(p)) => format!("{p}.{f}"),
        (Some(f), None) => f,
        (None, Some(p)) => p,
        (None, None) => "body".into(),
    };
    let reason = match rejection {
        JsonRejection::MissingJsonContentType(_) => "send Content-Type: application/json".into(),
        JsonRejection::JsonSyntaxError(_) => format!("malformed JSON: {detail}"),
        _ => detail,
    };
    SmsError::invalid(field, reason)
}

/// An optional JSON body (`Option<T>` in the OpenAPI document): nothing or `null` is
/// `T::default()`, an object is `T`, anything else (an array, a string, whitespace alone) is
/// refused naming `what`.
pub fn optional_json<T: serde::de::DeserializeOwned + Default>(
    body: &[u8],
    what: &str,
) -> Result<T, SmsError> {
    // No body at all is no body; whitespace alone is not JSON, and is refused as such.
    if body.is_empty() {
        return Ok(T::default());
    }
    let value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| SmsError::invalid("body", format!("not JSON: {e}")))?;
    match value {
        serde_json::Value::Null => Ok(T::default()),
        serde_json::Value::Object(_) => serde_json::from_value(value)
            .map_err(|e| SmsError::invalid("body", format!("{what}: {e}"))),
        other => Err(SmsError::invalid(
            "body",
            format!("{what}: must be a JSON object, not {other}"),
        )),
    }
}
