//! `spearlet.FunctionService` on the Spearlet's gRPC listener: `Invoke`, `InvokeAsync` +
//! `GetResult`, and `InvokeStream`.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::Stream;
use spear_proto::spearlet as pb;
use spear_proto::spearlet::function_service_server::{FunctionService, FunctionServiceServer};
use tonic::{Request, Response, Status};

use super::results::Outcome;
use super::{Answer, Call, InvokeError, invoke};
use crate::agent::Agent;

/// Largest piece of output in one `InvokeStream` message.
pub const CHUNK: usize = 64 * 1024;
/// Longest `GetResult` wait.
pub const MAX_WAIT_MS: u64 = 60_000;

/// The service.
#[derive(Debug, Clone)]
pub struct Functions {
    agent: Arc<Agent>,
}

/// The service for `agent`, its messages bounded by `spearlet.functions.max_payload_bytes`.
pub fn server(agent: Arc<Agent>) -> FunctionServiceServer<Functions> {
    let max = usize::try_from(agent.config.spearlet.functions.max_payload_bytes)
        .unwrap_or(usize::MAX)
        .saturating_add(64 * 1024);
    FunctionServiceServer::new(Functions { agent })
        .max_decoding_message_size(max)
        .max_encoding_message_size(max)
}

impl Functions {
    /// The call a request asks for; its deadline the earlier of its `timeout_ms` and the gRPC
    /// deadline its client set (`grpc-timeout`).
    fn call(&self, r: Request<pb::InvokeRequest>) -> Result<Call, InvokeError> {
        let client = r
            .metadata()
            .get("grpc-timeout")
            .and_then(|v| v.to_str().ok())
            .and_then(grpc_timeout);
        let r = r.into_inner();
        let mut call = Call::checked(
            r.task_id,
            r.function_name,
            r.payload,
            r.request_id,
            r.timeout_ms,
            &self.agent.config.spearlet.functions,
        )?;
        if let Some(t) = client {
            call.timeout = call.timeout.min(t);
        }
        Ok(call)
    }
}

/// A `grpc-timeout` header's duration (`<digits><unit>`, units H, M, S, m, u, n).
fn grpc_timeout(v: &str) -> Option<Duration> {
    let (digits, unit) = v.split_at(v.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// The wire form of an answer.
pub(super) fn response(a: Answer) -> pb::InvokeResponse {
    pb::InvokeResponse {
        request_id: a.request_id,
        output: Bytes::from(a.output),
        instance: a.instance,
        tier: tier(a.tier).into(),
        duration_us: u64::try_from(a.duration.as_micros()).unwrap_or(u64::MAX),
    }
}

/// The wire name of a tier.
pub fn tier(t: crate::pool::Tier) -> &'static str {
    match t {
        crate::pool::Tier::Hot => "hot",
        crate::pool::Tier::Warm => "warm",
        crate::pool::Tier::Cold => "cold",
    }
}

/// The messages of an `InvokeStream`.
pub(super) type ChunkStream = Pin<Box<dyn Stream<Item = Result<pb::InvokeChunk, Status>> + Send>>;

#[tonic::async_trait]
impl FunctionService for Functions {
    async fn invoke(
        &self,
        request: Request<pb::InvokeRequest>,
    ) -> Result<Response<pb::InvokeResponse>, Status> {
        let call = self.call(request)?;
        let answer = invoke(&self.agent, &call).await?;
        Ok(Response::new(response(answer)))
    }

    async fn invoke_async(
        &self,
        request: Request<pb::InvokeRequest>,
    ) -> Result<Response<pb::InvokeAsyncResponse>, Status> {
        let call = self.call(request)?;
        let results = self.agent.functions.results.clone();
        results.start(&call.request_id)?;
        let (agent, id) = (self.agent.clone(), call.request_id.clone());
        tokio::spawn(async move {
            let result = invoke(&agent, &call).await;
            results.finish(&call.request_id, result);
        });
        Ok(Response::new(pb::InvokeAsyncResponse { request_id: id }))
    }

    async fn get_result(
        &self,
        request: Request<pb::GetResultRequest>,
    ) -> Result<Response<pb::GetResultResponse>, Status> {
        let r = request.into_inner();
        if r.wait_ms > MAX_WAIT_MS {
            return Err(Status::invalid_argument(format!(
                "wait_ms {} is over {MAX_WAIT_MS}",
                r.wait_ms
            )));
        }
        let outcome = self
            .agent
            .functions
            .results
            .get(&r.request_id, Duration::from_millis(r.wait_ms))
            .await
            .ok_or_else(|| {
                Status::not_found(format!(
                    "no asynchronous invocation {} here (never started here, or its result \
                     expired after spearlet.functions.result_ttl_secs)",
                    r.request_id
                ))
            })?;
        let mut answer = pb::GetResultResponse {
            request_id: r.request_id,
            ..Default::default()
        };
        match outcome {
            Outcome::Running => answer.state = pb::InvocationState::Running.into(),
            Outcome::Ended(Ok(a)) => {
                answer.state = pb::InvocationState::Succeeded.into();
                answer.response = Some(response(a));
            }
            Outcome::Ended(Err(e)) => {
                answer.state = pb::InvocationState::Failed.into();
                answer.code = e.code() as i32;
                answer.error = e.to_string();
            }
        }
        Ok(Response::new(answer))
    }

    type InvokeStreamStream = ChunkStream;

    async fn invoke_stream(
        &self,
        request: Request<pb::InvokeRequest>,
    ) -> Result<Response<ChunkStream>, Status> {
        let call = self.call(request)?;
        let stream = super::stream::invoke(&self.agent, call).await?;
        Ok(Response::new(stream))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_parse_by_their_unit() {
        assert_eq!(grpc_timeout("100m"), Some(Duration::from_millis(100)));
        assert_eq!(grpc_timeout("2S"), Some(Duration::from_secs(2)));
        assert_eq!(grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(grpc_timeout("5u"), Some(Duration::from_micros(5)));
        for bad in ["", "m", "100", "123456789S", "1x", "-1S"] {
            assert_eq!(grpc_timeout(bad), None, "{bad}");
        }
    }
}
