//! Invocations of tasks' functions through SMS (docs/functions.md): the strategy picks a node
//! among those that run the task's executable type, the invocation goes down the node's stream
//! (the Spearlet dials SMS; SMS never dials a node), the node runs it on a live instance and
//! answers with `ReportInvocation`, and the caller gets the answer. The event log records each
//! one (`task.invoked`).
//!
//! An invocation is never queued at SMS: a node whose stream is full, or that is not connected,
//! refuses it at once. At most [`MAX_IN_FLIGHT`] are waited for at once; each waits at most its
//! deadline (and [`GRACE`] for the answer to travel), then answers `DEADLINE_EXCEEDED`; or
//! until its node is lost (heartbeats stopped, or removed), then answers `UNAVAILABLE`.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;
use spear_plugin_api::{Decision, Label, Request};
use spear_proto::v1;
use tokio::sync::oneshot;

use crate::error::{Result, SmsError};
use crate::model::TaskStatus;
use crate::nodes::EXECUTOR_LABEL;
use crate::outbox::Dispatch;
use crate::service::Sms;

/// Invocations waited for at once.
pub const MAX_IN_FLIGHT: usize = 10_000;
/// Largest payload (bytes).
pub const MAX_PAYLOAD: usize = 16 << 20;
/// The deadline of an invocation that gives none (ms).
pub const DEFAULT_TIMEOUT_MS: u64 = 30_000;
/// The longest deadline (ms).
pub const MAX_TIMEOUT_MS: u64 = 300_000;
/// Longest function name (bytes).
pub const MAX_FUNCTION_NAME: usize = 256;
/// Time past the deadline allowed for the node's answer to reach SMS.
pub const GRACE: Duration = Duration::from_secs(1);
/// Strategy request ids of invocations start here, apart from the executions' sequence.
const FIRST_REQUEST: u64 = 1 << 62;

/// An invocation to run.
#[derive(Debug, Clone)]
pub struct Invoke {
    /// The task.
    pub task_id: String,
    /// The function.
    pub function: String,
    /// The payload.
    pub payload: Vec<u8>,
    /// The deadline (0: [`DEFAULT_TIMEOUT_MS`]).
    pub timeout_ms: u64,
}

/// What an invocation answered.
#[derive(Debug, Clone)]
pub struct Invoked {
    /// Its id.
    pub invocation_id: String,
    /// The node that ran it.
    pub node_uuid: String,
    /// The function's output.
    pub output: Vec<u8>,
    /// The instance (`<task>#<n>`).
    pub instance: String,
    /// `hot`, `warm` or `cold`.
    pub tier: String,
    /// From the request to the answer, at SMS.
    pub duration_us: u64,
}

struct Waiter {
    node: String,
    answer: oneshot::Sender<v1::InvocationResult>,
}

/// The invocations waited for.
#[derive(Default)]
pub struct Invocations {
    waiting: std::sync::Mutex<HashMap<String, Waiter>>,
    next_request: AtomicU64,
}

impl std::fmt::Debug for Invocations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Invocations")
            .field("waiting", &self.len())
            .finish()
    }
}

impl Invocations {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Waiter>> {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Invocations waited for now.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether none is waited for.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many invocations are waited for from each node that has any.
    pub fn per_node(&self) -> HashMap<String, u32> {
        let mut counts: HashMap<String, u32> = HashMap::new();
        for w in self.lock().values() {
            *counts.entry(w.node.clone()).or_default() += 1;
        }
        counts
    }

    /// How many invocations are waited for from `node`.
    pub fn on_node(&self, node: &str) -> usize {
        self.lock().values().filter(|w| w.node == node).count()
    }

    /// Answer every invocation waited for from `node`, which is lost (`why`): its answers will
    /// never come, and its callers learn it now rather than at their deadlines. How many.
    pub fn node_lost(&self, node: &str, why: &str) -> usize {
        let lost: Vec<(String, Waiter)> = {
            let mut waiting = self.lock();
            let ids: Vec<String> = waiting
                .iter()
                .filter(|(_, w)| w.node == node)
                .map(|(id, _)| id.clone())
                .collect();
            ids.into_iter()
                .filter_map(|id| waiting.remove(&id).map(|w| (id, w)))
                .collect()
        };
        let n = lost.len();
        for (id, w) in lost {
            let _ = w.answer.send(v1::InvocationResult {
                invocation_id: id,
                ok: false,
                code: tonic::Code::Unavailable as i32,
                error: format!(
                    "lost ({why}) before it answered: the invocation may or may not have run"
                ),
                ..Default::default()
            });
        }
        n
    }

    /// Hand `result` to whoever waits for it, if `node` is the node it was sent to. Whether it
    /// was waited for.
    pub fn answer(&self, node: &str, result: v1::InvocationResult) -> bool {
        let mut waiting = self.lock();
        match waiting.get(&result.invocation_id) {
            Some(w) if w.node == node => {}
            _ => return false,
        }
        let w = waiting
            .remove(&result.invocation_id)
            .expect("looked up under the lock");
        drop(waiting);
        w.answer.send(result).is_ok()
    }
}

/// Tells the strategy the invocation ended, however it ends (answered, failed, timed out, or its
/// caller gone): its placement booked the node in the strategy's view (one more active, the
/// task's needs), and the outcome gives that back, as an execution's end does.
struct Booked<'a> {
    sms: &'a Sms,
    request: u64,
    target: u64,
    started: Instant,
    success: bool,
}

impl Drop for Booked<'_> {
    fn drop(&mut self) {
        self.sms
            .feed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .observe(spear_plugin_api::Outcome {
                request: self.request,
                target: self.target,
                success: self.success,
                latency_us: u64::try_from(self.started.elapsed().as_micros()).unwrap_or(u64::MAX),
            });
    }
}

/// Forgets a waiter however the invocation ends (answered, timed out, or its caller gone).
struct Forget<'a>(&'a Invocations, String);

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        self.0.lock().remove(&self.1);
    }
}

fn check(r: &Invoke) -> Result<Duration> {
    if r.task_id.is_empty() {
        return Err(SmsError::invalid("task_id", "is empty"));
    }
    if r.function.is_empty() || r.function.len() > MAX_FUNCTION_NAME {
        return Err(SmsError::invalid(
            "function",
            format!("must be 1 to {MAX_FUNCTION_NAME} bytes"),
        ));
    }
    if r.payload.len() > MAX_PAYLOAD {
        return Err(SmsError::invalid(
            "payload",
            format!(
                "{} bytes is over the {MAX_PAYLOAD} bytes an invocation may carry",
                r.payload.len()
            ),
        ));
    }
    match r.timeout_ms {
        0 => Ok(Duration::from_millis(DEFAULT_TIMEOUT_MS)),
        ms if ms > MAX_TIMEOUT_MS => Err(SmsError::invalid(
            "timeout_ms",
            format!("{ms} is over {MAX_TIMEOUT_MS}"),
        )),
        ms => Ok(Duration::from_millis(ms)),
    }
}

impl Sms {
    /// Run `r` on a node the strategy picks and answer its output.
    pub async fn invoke(self: &Arc<Self>, r: Invoke) -> Result<Invoked> {
        let started = Instant::now();
        let timeout = check(&r)?;
        let task = self.task(&r.task_id).await?;
        if task.status == TaskStatus::Unregistered {
            return Err(SmsError::invocation(
                tonic::Code::FailedPrecondition,
                format!("task {} is unregistered", r.task_id),
            ));
        }
        let Some(executable) = task.executable.clone() else {
            return Err(SmsError::invocation(
                tonic::Code::FailedPrecondition,
                format!("task {} has no executable", r.task_id),
            ));
        };
        let (node, request, target) = self.pick_node(&task, &executable.kind).await?;
        let mut booked = Booked {
            sms: self,
            request,
            target,
            started,
            success: false,
        };
        let invocation_id = uuid::Uuid::new_v4().to_string();
        let rx = {
            let mut waiting = self.invocations.lock();
            if waiting.len() >= MAX_IN_FLIGHT {
                return Err(SmsError::invocation(
                    tonic::Code::ResourceExhausted,
                    format!("over capacity: {MAX_IN_FLIGHT} invocations are in flight at SMS"),
                ));
            }
            let (tx, rx) = oneshot::channel();
            waiting.insert(
                invocation_id.clone(),
                Waiter {
                    node: node.clone(),
                    answer: tx,
                },
            );
            rx
        };
        {
            let _forget = Forget(&self.invocations, invocation_id.clone());
            // A node is marked lost in the table before its waiters are answered: one found
            // active now, after this waiter is in, has it answered if it is lost later.
            if !self.node_active(&node).await {
                return Err(SmsError::invocation(
                    tonic::Code::Unavailable,
                    format!("node {node} is no longer active"),
                ));
            }
            let sent = self
                .send_invocation(
                    &node,
                    v1::Invocation {
                        invocation_id: invocation_id.clone(),
                        task_id: r.task_id.clone(),
                        function_name: r.function.clone(),
                        payload: r.payload,
                        timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
                    },
                )
                .await;
            match sent {
                Dispatch::Sent => {}
                Dispatch::Full => {
                    return Err(SmsError::invocation(
                        tonic::Code::ResourceExhausted,
                        format!("over capacity: node {node}'s stream is full"),
                    ));
                }
                Dispatch::NotConnected => {
                    return Err(SmsError::invocation(
                        tonic::Code::Unavailable,
                        format!("node {node} is not connected"),
                    ));
                }
            }
            let answer = match tokio::time::timeout(timeout + GRACE, rx).await {
                Ok(Ok(answer)) => answer,
                Ok(Err(_)) | Err(_) => {
                    self.record(
                        &r.task_id,
                        &invocation_id,
                        &node,
                        &r.function,
                        Err("deadline"),
                    );
                    return Err(SmsError::invocation(
                        tonic::Code::DeadlineExceeded,
                        format!(
                            "no answer from node {node} within the deadline of {} ms",
                            timeout.as_millis()
                        ),
                    ));
                }
            };
            let duration_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
            if !answer.ok {
                let code = tonic::Code::from_i32(answer.code);
                let code = if code == tonic::Code::Ok {
                    tonic::Code::Internal
                } else {
                    code
                };
                self.record(
                    &r.task_id,
                    &invocation_id,
                    &node,
                    &r.function,
                    Err(&answer.error),
                );
                return Err(SmsError::invocation(
                    code,
                    format!("node {node}: {}", answer.error),
                ));
            }
            self.record(
                &r.task_id,
                &invocation_id,
                &node,
                &r.function,
                Ok(duration_us),
            );
            booked.success = true;
            Ok(Invoked {
                invocation_id,
                node_uuid: node,
                output: answer.output,
                instance: answer.instance,
                tier: answer.tier,
                duration_us,
            })
        }
    }

    /// The node the strategy picks for an invocation of `task` (its labels and needs, and a
    /// node running `kind`), with the request's id and the node's target id (for the outcome).
    async fn pick_node(&self, task: &crate::model::Task, kind: &str) -> Result<(String, u64, u64)> {
        let labels = |m: &std::collections::BTreeMap<String, String>| -> Vec<Label> {
            m.iter()
                .map(|(k, v)| Label::new(k.clone(), v.clone()))
                .collect()
        };
        let mut required = labels(&task.required_labels);
        required.push(Label::new(format!("{EXECUTOR_LABEL}{kind}"), "true"));
        let id = FIRST_REQUEST
            + self
                .invocations
                .next_request
                .fetch_add(1, Ordering::Relaxed);
        let request = Request {
            id,
            task: task.task_id.clone(),
            labels: labels(&task.labels),
            needs: task.needs.into(),
            required,
            preferred: labels(&task.preferred_labels),
        };
        let plugins = self.plugins.clone();
        // The shadow hears of this placement too (its view and the explain view follow the
        // active strategy's claims).
        let shadow = self.shadow.on(&plugins).then(|| self.shadow.clone());
        let (decisions, requests) = tokio::task::spawn_blocking(move || {
            let requests = vec![request];
            let ticket = shadow.as_ref().and_then(|s| s.begin(plugins.strategy()));
            let decisions = plugins.strategy().place(&requests);
            if let (Some(shadow), Some(ticket)) = (shadow, ticket) {
                let placed = Some((requests.clone(), decisions.clone()));
                shadow.send(ticket, plugins.strategy(), Default::default(), placed);
            }
            (decisions, requests)
        })
        .await
        .map_err(|e| SmsError::invocation(tonic::Code::Internal, e.to_string()))?;
        self.explain_claim(&requests, &decisions);
        let decision = decisions.into_iter().next();
        let target = match decision {
            Some(Decision::Assign(t)) => t,
            Some(Decision::Reject(why)) => {
                return Err(SmsError::invocation(
                    tonic::Code::Unavailable,
                    format!("no node can run task {}: {why}", task.task_id),
                ));
            }
            None => {
                return Err(SmsError::invocation(
                    tonic::Code::Unavailable,
                    format!("no node can run task {}", task.task_id),
                ));
            }
        };
        let Some(node) = self.target_names.lock().await.get(&target).cloned() else {
            // Picked but gone: its booking is given back at once.
            drop(Booked {
                sms: self,
                request: id,
                target,
                started: Instant::now(),
                success: false,
            });
            return Err(SmsError::invocation(
                tonic::Code::Unavailable,
                "the strategy picked a node that is gone",
            ));
        };
        Ok((node, id, target))
    }

    /// Record an invocation's end in the event log (not waited for: the caller has its answer).
    fn record(
        &self,
        task: &str,
        id: &str,
        node: &str,
        function: &str,
        outcome: std::result::Result<u64, &str>,
    ) {
        let data = match outcome {
            Ok(us) => json!({"invocation_id": id, "node_uuid": node, "function": function,
                             "ok": true, "duration_us": us}),
            Err(why) => json!({"invocation_id": id, "node_uuid": node, "function": function,
                               "ok": false, "error": why}),
        };
        match self
            .events
            .queue(Vec::new(), vec![("task.invoked", task.to_owned(), data)])
        {
            Ok(queued) => {
                tokio::spawn(async move {
                    if let Err(e) = queued.commit().await {
                        tracing::warn!("recording an invocation: {e}");
                    }
                });
            }
            Err(e) => tracing::warn!("recording an invocation: {e}"),
        }
    }

    /// A node's answer to an invocation sent to it.
    pub fn invocation_answered(&self, node: &str, result: v1::InvocationResult) {
        if !self.invocations.answer(node, result) {
            tracing::debug!(node, "an invocation's answer came after its caller left");
        }
    }
}
