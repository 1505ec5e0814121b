//! Invocations SMS sends down the node's stream (an `Assignment` carrying an `Invocation`): run
//! like a local `Invoke`, and answered with `ReportInvocation`, tried again on a transient
//! failure until the invocation's deadline (SMS stops waiting then).

use std::sync::Arc;
use std::time::{Duration, Instant};

use spear_proto::v1;

use super::{Call, invoke};
use crate::agent::Agent;
use crate::sms::{backoff, transient};

/// Time past the deadline an answer is still sent in (SMS waits that long more).
const GRACE: Duration = Duration::from_secs(1);

/// Answer `inv` at once with `UNAVAILABLE` (a draining node takes no invocation).
pub fn refuse(agent: Arc<Agent>, inv: v1::Invocation, why: &str) {
    let report = v1::InvocationResult {
        node_uuid: agent.node.clone(),
        invocation_id: inv.invocation_id,
        code: tonic::Code::Unavailable as i32,
        error: why.to_owned(),
        ..Default::default()
    };
    let until = Instant::now() + GRACE;
    tokio::spawn(async move { answer(&agent, report, until).await });
}

/// Run `inv` and answer SMS, in a task of its own.
pub fn run(agent: Arc<Agent>, inv: v1::Invocation) {
    tokio::spawn(async move {
        let id = inv.invocation_id.clone();
        let limits = &agent.config.spearlet.functions;
        // SMS's deadline, within this node's bounds.
        let timeout_ms = inv.timeout_ms.clamp(1, limits.max_timeout_ms);
        let until = Instant::now() + Duration::from_millis(timeout_ms) + GRACE;
        let call = Call::checked(
            inv.task_id,
            inv.function_name,
            inv.payload.into(),
            inv.invocation_id,
            timeout_ms,
            limits,
        );
        let result = match call {
            Ok(call) => invoke(&agent, &call).await,
            Err(e) => Err(e),
        };
        let mut report = v1::InvocationResult {
            node_uuid: agent.node.clone(),
            invocation_id: id.clone(),
            ..Default::default()
        };
        match result {
            Ok(a) => {
                report.ok = true;
                report.output = a.output;
                report.instance = a.instance;
                report.tier = super::service::tier(a.tier).into();
                report.duration_us = u64::try_from(a.duration.as_micros()).unwrap_or(u64::MAX);
            }
            Err(e) => {
                report.code = e.code() as i32;
                report.error = e.to_string();
            }
        }
        answer(&agent, report, until).await;
    });
}

async fn answer(agent: &Agent, mut report: v1::InvocationResult, until: Instant) {
    let mut attempt = 0;
    loop {
        report.session = agent
            .session
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        match agent
            .sms
            .executions()
            .report_invocation(report.clone())
            .await
        {
            Ok(_) => return,
            Err(status) if transient(&status) && Instant::now() < until => {
                agent.sms.follow(&status);
                let wait = backoff(Duration::from_millis(50), attempt);
                attempt += 1;
                tokio::time::sleep(wait.min(until.saturating_duration_since(Instant::now()))).await;
            }
            Err(status) => {
                tracing::warn!(
                    invocation = %report.invocation_id,
                    error = %status.message(),
                    "cannot answer an invocation to SMS"
                );
                return;
            }
        }
    }
}
