//! The REST API's streams (Server-Sent Events): the event log (`/api/v1/events`), and one
//! execution's changes until it ends (`/api/v1/executions/{id}/watch`, what `spear run` waits on).

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures::{Stream, StreamExt};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::api::body::{ApiPath, ApiQuery};
use crate::api::rest::ErrorBody;
use crate::error::SmsError;
use crate::model::Event;
use crate::service::Sms;

type AppState = Arc<Sms>;

/// One message of the event stream (Server-Sent Events).
#[derive(Debug, Serialize, ToSchema)]
pub struct SseMessage {
    /// The event's cursor.
    pub id: String,
    /// The event's kind (`node.registered`, …).
    pub event: String,
    /// The [`Event`] as JSON.
    pub data: String,
}

/// `?after=` of the event stream.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventParams {
    /// Resume after this cursor (default: the `Last-Event-ID` header, else 0: from the oldest
    /// event kept).
    pub after: Option<String>,
    /// `false`: send the events stored up to now, then end the stream (default: keep streaming
    /// new events as they happen).
    pub follow: Option<bool>,
}

#[utoipa::path(get, path = "/api/v1/events", params(EventParams),
    responses((status = 200, content_type = "text/event-stream", body = SseMessage), (status = 400, body = ErrorBody),
        (status = 410, description = "the events after `after` were compacted by retention: `error.resume_from` says where to resume", body = ErrorBody)), tag = "events")]
pub(crate) async fn events(
    State(sms): State<AppState>,
    ApiQuery(p): ApiQuery<EventParams>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, SmsError> {
    let raw = p.after.or_else(|| {
        headers
            .get("last-event-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    });
    let after = match raw {
        None => 0,
        Some(s) => s.parse::<u64>().map_err(|_| {
            SmsError::invalid("after", format!("`{s}` is not a cursor (a whole number)"))
        })?,
    };
    let last = sms.events().last_cursor().await;
    if after > last {
        return Err(SmsError::invalid(
            "after",
            format!("cursor {after} is beyond the last event ({last})"),
        ));
    }
    sms.events().resume_point(after)?;
    let events: std::pin::Pin<Box<dyn Stream<Item = crate::error::Result<Event>> + Send>> =
        if p.follow.unwrap_or(true) {
            Box::pin(sms.events().subscribe(after))
        } else {
            // Up to the settled cursor: a reader looking up a record on an event sees its change.
            Box::pin(sms.events().history(after, sms.events().settled()))
        };
    let stream = events.map(|item| {
        Ok(match item {
            Ok(e) => SseEvent::default()
                .id(e.cursor.to_string())
                .event(e.kind.clone())
                .data(serde_json::to_string(&e).unwrap_or_default()),
            // The error as a REST error body (`compacted` names where to resume).
            Err(err) => SseEvent::default()
                .event("error")
                .data(serde_json::to_string(&ErrorBody::of(&err)).unwrap_or_default()),
        })
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

/// One message of an execution's watch stream: `event: execution`, `data:` the execution as
/// `GET /api/v1/executions/{id}` answers it.
#[derive(Debug, Serialize, ToSchema)]
pub struct WatchMessage {
    /// Always `execution`.
    pub event: String,
    /// The [`Execution`](crate::model::Execution) as JSON.
    pub data: String,
}

fn execution_message(e: &crate::model::Execution) -> SseEvent {
    SseEvent::default()
        .event("execution")
        .data(serde_json::to_string(e).unwrap_or_default())
}

/// The execution now, then again each time it changes; the stream ends after it reaches a final
/// state (`succeeded`, `failed`, `cancelled`, `timed_out`).
#[utoipa::path(get, path = "/api/v1/executions/{execution_id}/watch",
    params(("execution_id" = String, Path, description = "The execution.")),
    responses((status = 200, content_type = "text/event-stream", body = WatchMessage)), tag = "executions")]
pub(crate) async fn watch_execution(
    State(sms): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, SmsError> {
    // The settled cursor first, then the record: every change up to the cursor is in the record,
    // every later one is in the events that follow (not the last cursor: an event queued before
    // the record is read may have its change applied after).
    let after = sms.events().settled();
    let first = sms.execution_whole(&id).await?;
    let stream = async_stream::stream! {
        let done = first.state.is_terminal();
        yield Ok(execution_message(&first));
        if done {
            return;
        }
        let mut events = Box::pin(sms.events().subscribe(after));
        while let Some(item) = events.next().await {
            match item {
                Ok(e) if e.subject == id => {
                    let Ok(now) = sms.execution_whole(&id).await else { return };
                    let done = now.state.is_terminal();
                    yield Ok(execution_message(&now));
                    if done {
                        return;
                    }
                }
                Ok(_) => {}
                Err(err) => {
                    yield Ok(SseEvent::default().event("error").data(err.to_string()));
                    return;
                }
            }
        }
    };
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}
