//! The gRPC execution service: submit, read, cancel, the assignment stream of each Spearlet, and
//! the reports Spearlets send back (one at a time, or batched).

use std::pin::Pin;

use futures::{Stream, StreamExt};
use spear_proto::v1;
use tonic::{Request, Response, Status};

use super::grpc::{
    Grpc, principal, required, result, submit_from_wire, unset_if_empty, wire_execution,
};
use crate::auth::as_node;
use crate::error::SmsError;

/// Response metadata of the assignment stream naming this SMS's session.
pub const SESSION_HEADER: &str = "spear-session";

/// The stream of assignments to one Spearlet.
pub type AssignmentStream = Pin<Box<dyn Stream<Item = Result<v1::Assignment, Status>> + Send>>;

#[tonic::async_trait]
impl v1::execution_service_server::ExecutionService for Grpc {
    type AssignmentsStream = AssignmentStream;

    async fn submit(
        &self,
        r: Request<v1::SubmitRequest>,
    ) -> Result<Response<v1::Execution>, Status> {
        let req = submit_from_wire(r.into_inner())?;
        Ok(Response::new(wire_execution(self.0.submit(req).await?)))
    }

    async fn get_execution(
        &self,
        r: Request<v1::ExecutionRef>,
    ) -> Result<Response<v1::Execution>, Status> {
        let who = principal(&r);
        let r = r.into_inner();
        required("execution_id", &r.execution_id)?;
        let exec = self.0.execution_whole(&r.execution_id).await?;
        // A node sees its own executions only; another node's look absent (not "forbidden":
        // the node then knows it is not its own, as it would if it were gone).
        if let Some(p) = who.filter(|p| p.role == crate::auth::Role::Node)
            && (p.node.is_none() || exec.node_uuid.as_deref() != p.node.as_deref())
        {
            return Err(SmsError::not_found("execution", &r.execution_id).into());
        }
        Ok(Response::new(wire_execution(exec)))
    }

    async fn list_executions(
        &self,
        r: Request<v1::ListExecutionsRequest>,
    ) -> Result<Response<v1::ListExecutionsResponse>, Status> {
        let r = r.into_inner();
        let page = self
            .0
            .executions(&crate::query::ExecQuery {
                state: unset_if_empty(&r.state).map(str::to_owned),
                task_id: Some(r.task_id),
                node_uuid: Some(r.node_uuid),
                since_ms: (r.since_ms != 0).then_some(r.since_ms),
                limit: (r.limit != 0).then_some(r.limit as usize),
                page_token: Some(r.page_token),
                newest_first: r.newest_first,
            })
            .await?;
        Ok(Response::new(v1::ListExecutionsResponse {
            executions: page.executions.into_iter().map(wire_execution).collect(),
            next_page_token: page.next_page_token.unwrap_or_default(),
        }))
    }

    async fn cancel(
        &self,
        r: Request<v1::ExecutionRef>,
    ) -> Result<Response<v1::Execution>, Status> {
        let r = r.into_inner();
        required("execution_id", &r.execution_id)?;
        Ok(Response::new(wire_execution(
            self.0.cancel(&r.execution_id).await?,
        )))
    }

    async fn assignments(
        &self,
        r: Request<v1::AssignmentsRequest>,
    ) -> Result<Response<AssignmentStream>, Status> {
        let who = principal(&r);
        let r = r.into_inner();
        as_node(who.as_ref(), &r.node_uuid)?;
        required("node_uuid", &r.node_uuid)?;
        let rx = self.0.connect_node(&r.node_uuid).await?;
        let session = self.0.session.clone();
        let sms = self.0.clone();
        let stream = tokio_stream::wrappers::ReceiverStream::new(rx).filter_map(move |out| {
            let (sms, session) = (sms.clone(), session.clone());
            async move {
                let a = match *out {
                    crate::outbox::Outgoing::Assignment(a) => a,
                    crate::outbox::Outgoing::Invocation(invocation) => {
                        return Some(Ok(v1::Assignment {
                            session,
                            invocation: Some(invocation),
                            ..Default::default()
                        }));
                    }
                    crate::outbox::Outgoing::Warm(warm) => {
                        return Some(Ok(v1::Assignment {
                            session,
                            warm: Some(warm),
                            ..Default::default()
                        }));
                    }
                };
                // A start carries its whole standard input; one whose input cannot be read is
                // failed instead of being run on the wrong input.
                let mut execution = a.execution;
                if !a.cancel
                    && let Err(why) = sms.with_stdin(&mut execution).await
                {
                    sms.payload_lost(&execution, &why.to_string()).await;
                    return None;
                }
                // A stop of an execution being preempted asks for its state, in its grace.
                let preempt =
                    a.cancel && execution.preempting_ms > 0 && !execution.state.is_terminal();
                let grace_ms = if preempt {
                    execution.preempt_grace_ms
                } else {
                    0
                };
                Some(Ok(v1::Assignment {
                    session,
                    cursor: a.cursor,
                    execution: Some(wire_execution(execution)),
                    cancel: a.cancel,
                    invocation: None,
                    warm: None,
                    preempt,
                    grace_ms,
                }))
            }
        });
        let mut response = Response::new(Box::pin(stream) as AssignmentStream);
        // The session is told up front, so a Spearlet can report before any assignment arrives.
        if let Ok(v) = self.0.session.parse() {
            response.metadata_mut().insert(SESSION_HEADER, v);
        }
        Ok(response)
    }

    async fn report_result(
        &self,
        r: Request<v1::ReportResultRequest>,
    ) -> Result<Response<v1::Ack>, Status> {
        let who = principal(&r);
        let r = r.into_inner();
        as_node(who.as_ref(), &r.node_uuid)?;
        required("execution_id", &r.execution_id)?;
        required("node_uuid", &r.node_uuid)?;
        self.0
            .report_result(crate::executions::Report {
                session: r.session,
                node_uuid: r.node_uuid,
                execution_id: r.execution_id,
                success: r.success,
                result: r.result.map(result),
                error: r.error,
                attempt: r.attempt,
                preempted: r.preempted,
                checkpoint: r.checkpoint,
            })
            .await?;
        Ok(Response::new(v1::Ack {}))
    }

    async fn report_state(
        &self,
        r: Request<v1::ReportStateRequest>,
    ) -> Result<Response<v1::Ack>, Status> {
        let who = principal(&r);
        let r = r.into_inner();
        as_node(who.as_ref(), &r.node_uuid)?;
        required("execution_id", &r.execution_id)?;
        self.0
            .report_state(
                &r.session,
                &r.node_uuid,
                &r.execution_id,
                &r.state,
                r.attempt,
            )
            .await?;
        Ok(Response::new(v1::Ack {}))
    }

    async fn report_invocation(
        &self,
        r: Request<v1::InvocationResult>,
    ) -> Result<Response<v1::Ack>, Status> {
        let who = principal(&r);
        let r = r.into_inner();
        as_node(who.as_ref(), &r.node_uuid)?;
        required("invocation_id", &r.invocation_id)?;
        required("node_uuid", &r.node_uuid)?;
        let node = r.node_uuid.clone();
        self.0.invocation_answered(&node, r);
        Ok(Response::new(v1::Ack {}))
    }

    async fn report_batch(
        &self,
        r: Request<v1::ReportBatchRequest>,
    ) -> Result<Response<v1::ReportBatchResponse>, Status> {
        let who = principal(&r);
        let r = r.into_inner();
        as_node(who.as_ref(), &r.node_uuid)?;
        required("node_uuid", &r.node_uuid)?;
        let results = r
            .results
            .into_iter()
            .map(|x| crate::executions::Report {
                session: r.session.clone(),
                node_uuid: r.node_uuid.clone(),
                execution_id: x.execution_id,
                success: x.success,
                result: x.result.map(result),
                error: x.error,
                attempt: x.attempt,
                preempted: x.preempted,
                checkpoint: x.checkpoint,
            })
            .collect();
        let done = self
            .0
            .report_batch(
                &r.session,
                &r.node_uuid,
                &r.running,
                &r.running_attempts,
                results,
            )
            .await?;
        let outcomes = |items: Vec<crate::error::Result<()>>| {
            items
                .into_iter()
                .map(|x| match x {
                    Ok(()) => v1::ReportOutcome::default(),
                    Err(e) => {
                        let s = Status::from(e);
                        v1::ReportOutcome {
                            code: s.code() as i32,
                            message: s.message().to_owned(),
                        }
                    }
                })
                .collect()
        };
        Ok(Response::new(v1::ReportBatchResponse {
            running: outcomes(done.running),
            results: outcomes(done.results),
        }))
    }
}
