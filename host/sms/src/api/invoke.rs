//! `POST /api/v1/tasks/{task_id}/invoke`: an invocation of a task's function through SMS
//! ([`crate::invocations`], docs/functions.md).

use axum::Json;
use axum::extract::State;
use base64::Engine;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::api::body::{ApiJson, ApiPath};
use crate::api::rest::{AppState, ErrorBody};
use crate::error::{Result, SmsError};
use crate::invocations::Invoke;

/// The body of an invocation.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InvokeBody {
    /// The function's name (1 to 256 bytes).
    pub function: String,
    /// The payload as text (UTF-8); give this or `payload_base64`, or neither (empty).
    #[serde(default)]
    pub payload: Option<String>,
    /// The payload as standard base64.
    #[serde(default)]
    pub payload_base64: Option<String>,
    /// The deadline in ms, from the request's arrival (absent or 0: 30000; at most 300000).
    #[serde(default)]
    pub timeout_ms: Option<u64>,
}

/// What an invocation answered.
#[derive(Debug, Serialize, ToSchema)]
pub struct Invoked {
    /// The invocation's id (in the `task.invoked` event too).
    pub invocation_id: String,
    /// The node that ran it.
    pub node_uuid: String,
    /// The output as text, when it is UTF-8; else null.
    pub output: Option<String>,
    /// The output as standard base64.
    pub output_base64: String,
    /// The instance that ran it (`<task>#<n>` on its node).
    pub instance: String,
    /// `hot`, `warm` or `cold`.
    pub tier: String,
    /// From the request to the answer, at SMS, in microseconds.
    pub duration_us: u64,
}

#[utoipa::path(post, path = "/api/v1/tasks/{task_id}/invoke",
    params(("task_id" = String, Path, description = "the task's id")),
    request_body = InvokeBody,
    responses(
        (status = 200, body = Invoked),
        (status = 400, body = ErrorBody, description = "a bad body, function name, payload or timeout"),
        (status = 404, body = ErrorBody, description = "no such task"),
        (status = 409, body = ErrorBody, description = "the task is unregistered, has no executable, or its instances cannot start"),
        (status = 422, body = ErrorBody, description = "the function answered an error"),
        (status = 429, body = ErrorBody, description = "over capacity: no instance free in time, or too many invocations in flight"),
        (status = 502, body = ErrorBody, description = "the instance was lost (it trapped, died, broke the protocol)"),
        (status = 503, body = ErrorBody, description = "no node can run it, or its node is not connected"),
        (status = 504, body = ErrorBody, description = "the deadline passed")),
    tag = "tasks")]
pub(crate) async fn invoke_task(
    State(sms): State<AppState>,
    ApiPath(task_id): ApiPath<String>,
    ApiJson(body): ApiJson<InvokeBody>,
) -> Result<Json<Invoked>> {
    let payload = match (body.payload, body.payload_base64) {
        (Some(_), Some(_)) => {
            return Err(SmsError::invalid(
                "payload",
                "give payload or payload_base64, not both",
            ));
        }
        (Some(text), None) => text.into_bytes(),
        (None, Some(b64)) => base64::engine::general_purpose::STANDARD
            .decode(b64.as_bytes())
            .map_err(|e| SmsError::invalid("payload_base64", format!("not base64: {e}")))?,
        (None, None) => Vec::new(),
    };
    let done = sms
        .invoke(Invoke {
            task_id,
            function: body.function,
            payload,
            timeout_ms: body.timeout_ms.unwrap_or(0),
        })
        .await?;
    Ok(Json(Invoked {
        invocation_id: done.invocation_id,
        node_uuid: done.node_uuid,
        output_base64: base64::engine::general_purpose::STANDARD.encode(&done.output),
        output: String::from_utf8(done.output).ok(),
        instance: done.instance,
        tier: done.tier,
        duration_us: done.duration_us,
    }))
}
