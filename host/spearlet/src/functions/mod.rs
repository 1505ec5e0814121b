//! Invocations of tasks' functions on live instances (docs/functions.md).
//!
//! An invocation names a task registered at SMS, a function and a payload. The node looks the
//! task up ([`tasks`]), takes an instance of it from the pool (the local strategy picks among the
//! Ready ones; a new one is started when the task is under its instance limit, else the
//! invocation waits for one to be released, until its deadline), runs the function in the
//! instance's live runtime through its executor, and gives the instance back: Ready again, or in
//! Error when the invocation lost it (a trap, a death, a deadline), to be replaced.
//!
//! The instances serving invocations are pooled under the key `fn:<task id>`, apart from the
//! instances of the task's one-shot executions (which have no live runtime).

pub mod ahead;
mod instances;
pub mod limits;
pub mod remote;
pub mod results;
pub mod service;
mod stream;
mod tasks;

use std::sync::Arc;
use std::time::{Duration, Instant};

use spear_plugin_api::executor::InvokeFailure;

pub use self::instances::warm;
use self::instances::{Sizes, start_instance};
use crate::agent::Agent;
use crate::error::Error;
use crate::pool::{Serving, Tier};

pub use tasks::Tasks;

/// Longest function name.
pub const MAX_FUNCTION_NAME: usize = 256;
/// Longest request id.
pub const MAX_REQUEST_ID: usize = 128;

/// Why an invocation has no output. Each maps to one gRPC code (see [`InvokeError::code`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvokeError {
    /// The request is malformed.
    #[error("{0}")]
    Invalid(String),
    /// No such task.
    #[error("{0}")]
    NotFound(String),
    /// The task cannot be invoked here (no executable, an executor without instances,
    /// unregistered), or its instance did not start.
    #[error("{0}")]
    Precondition(String),
    /// Over a limit: no instance became free in time, too many results kept.
    #[error("{0}")]
    OverCapacity(String),
    /// The deadline passed.
    #[error("{0}")]
    Deadline(String),
    /// The function answered an error (its instance stays Ready).
    #[error("{0}")]
    Function(String),
    /// The instance was lost during the invocation (trapped, died, broke the protocol).
    #[error("{0}")]
    Lost(String),
    /// SMS could not be asked, or the node is draining.
    #[error("{0}")]
    Unavailable(String),
}

impl InvokeError {
    /// The gRPC code of the error.
    pub fn code(&self) -> tonic::Code {
        match self {
            Self::Invalid(_) => tonic::Code::InvalidArgument,
            Self::NotFound(_) => tonic::Code::NotFound,
            Self::Precondition(_) => tonic::Code::FailedPrecondition,
            Self::OverCapacity(_) => tonic::Code::ResourceExhausted,
            Self::Deadline(_) => tonic::Code::DeadlineExceeded,
            Self::Function(_) => tonic::Code::Aborted,
            Self::Lost(_) => tonic::Code::Internal,
            Self::Unavailable(_) => tonic::Code::Unavailable,
        }
    }
}

impl From<InvokeError> for tonic::Status {
    fn from(e: InvokeError) -> Self {
        tonic::Status::new(e.code(), e.to_string())
    }
}

/// One invocation.
#[derive(Debug, Clone)]
pub struct Call {
    /// The task.
    pub task_id: String,
    /// The function.
    pub function: String,
    /// The payload.
    pub payload: bytes::Bytes,
    /// The caller's id (checked), or one made here.
    pub request_id: String,
    /// When it arrived.
    pub arrived: Instant,
    /// Its deadline, from its arrival.
    pub timeout: Duration,
}

/// What an invocation answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The request id.
    pub request_id: String,
    /// The function's output.
    pub output: Vec<u8>,
    /// The instance that ran it (`<task>#<n>`).
    pub instance: String,
    /// Which tier served it.
    pub tier: Tier,
    /// From arrival to answer.
    pub duration: Duration,
}

/// The node's invocation state: task definitions, asynchronous results, and the node-wide
/// limit on invocations in flight.
#[derive(Debug)]
pub struct Functions {
    /// Task definitions from SMS.
    pub tasks: Tasks,
    /// Asynchronous invocations' results.
    pub results: Arc<results::Results>,
    /// Places for invocations in flight (`spearlet.functions.max_concurrent`).
    pub in_flight: Arc<tokio::sync::Semaphore>,
    /// Rate, per-function, per-binary and adaptive limits.
    pub limiters: limits::Limiters,
    /// Warm-ups SMS asked for.
    pub ahead: ahead::Ahead,
}

impl Functions {
    /// Built from the Spearlet's `[spearlet.functions]`, the adaptive limits at most
    /// `max_per_task` (`spearlet.limits.max_instances_per_task`).
    pub fn new(
        sms: crate::sms::SmsLink,
        limits: &crate::config::functions::FunctionLimits,
        max_per_task: u32,
    ) -> Self {
        Self {
            limiters: limits::Limiters::new(limits, max_per_task),
            tasks: Tasks::new(sms, Duration::from_millis(limits.task_ttl_ms)),
            results: Arc::new(results::Results::new(
                limits.max_results,
                usize::try_from(limits.max_result_mb.saturating_mul(1 << 20)).unwrap_or(usize::MAX),
                Duration::from_secs(limits.result_ttl_secs),
            )),
            in_flight: Arc::new(tokio::sync::Semaphore::new(limits.max_concurrent)),
            ahead: ahead::Ahead::default(),
        }
    }
}

impl Call {
    /// A call from a request's fields, checked against `limits` (a timeout of 0 takes the
    /// default; an empty request id gets a fresh one).
    pub fn checked(
        task_id: String,
        function: String,
        payload: bytes::Bytes,
        request_id: String,
        timeout_ms: u64,
        limits: &crate::config::functions::FunctionLimits,
    ) -> Result<Self, InvokeError> {
        if task_id.is_empty() {
            return Err(InvokeError::Invalid("task_id is empty".into()));
        }
        if task_id.len() > 256 {
            return Err(InvokeError::Invalid("task_id is over 256 bytes".into()));
        }
        if function.is_empty() || function.len() > MAX_FUNCTION_NAME {
            return Err(InvokeError::Invalid(format!(
                "function_name must be 1 to {MAX_FUNCTION_NAME} bytes"
            )));
        }
        if payload.len() as u64 > limits.max_payload_bytes {
            return Err(InvokeError::Invalid(format!(
                "the payload of {} bytes is over spearlet.functions.max_payload_bytes ({})",
                payload.len(),
                limits.max_payload_bytes
            )));
        }
        let request_id = if request_id.is_empty() {
            uuid::Uuid::new_v4().to_string()
        } else if request_id.len() > MAX_REQUEST_ID
            || !request_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b))
        {
            return Err(InvokeError::Invalid(format!(
                "request_id must be 1 to {MAX_REQUEST_ID} bytes of [A-Za-z0-9._:-]"
            )));
        } else {
            request_id
        };
        let timeout_ms = match timeout_ms {
            0 => limits.default_timeout_ms,
            ms if ms > limits.max_timeout_ms => {
                return Err(InvokeError::Invalid(format!(
                    "timeout_ms {ms} is over spearlet.functions.max_timeout_ms ({})",
                    limits.max_timeout_ms
                )));
            }
            ms => ms,
        };
        Ok(Self {
            task_id,
            function,
            payload,
            request_id,
            arrived: Instant::now(),
            timeout: Duration::from_millis(timeout_ms),
        })
    }

    /// Its deadline.
    pub fn deadline(&self) -> Instant {
        self.arrived + self.timeout
    }

    fn left(&self) -> Result<Duration, InvokeError> {
        let left = self.deadline().saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(InvokeError::Deadline(format!(
                "the invocation's deadline of {} ms passed",
                self.timeout.as_millis()
            )));
        }
        Ok(left)
    }
}

/// Where a streaming invocation's pieces of output go, on the executor's thread: `false` back
/// means no more are wanted.
pub type Pieces = Box<dyn FnMut(&[u8]) -> bool + Send + Sync>;

/// Run `call` to its answer, in a task of its own: a caller that goes away (a client that
/// disconnects) never cuts an invocation short, so every instance taken is given back.
pub async fn invoke(agent: &Arc<Agent>, call: &Call) -> Result<Answer, InvokeError> {
    invoke_streaming(agent, call, None).await
}

/// [`invoke`], the pieces of output the executor hands over as the function makes them going to
/// `pieces` (the answer's output is the rest).
pub async fn invoke_streaming(
    agent: &Arc<Agent>,
    call: &Call,
    pieces: Option<Pieces>,
) -> Result<Answer, InvokeError> {
    let (agent, call) = (agent.clone(), call.clone());
    tokio::spawn(async move { invoke_here(&agent, &call, pieces).await })
        .await
        .unwrap_or_else(|e| Err(InvokeError::Lost(format!("the invocation failed: {e}"))))
}

async fn invoke_here(
    agent: &Arc<Agent>,
    call: &Call,
    mut pieces: Option<Pieces>,
) -> Result<Answer, InvokeError> {
    if *agent.draining.borrow() {
        return Err(InvokeError::Unavailable(
            "the node is draining: it takes no new invocations".into(),
        ));
    }
    // The node-wide limit: a place, until the deadline.
    let in_flight = agent.functions.in_flight.clone();
    let _place =
        match tokio::time::timeout_at(call.deadline().into(), in_flight.acquire_owned()).await {
            Ok(Ok(place)) => place,
            Ok(Err(_)) => {
                return Err(InvokeError::Unavailable("the node is shutting down".into()));
            }
            Err(_) => {
                return Err(InvokeError::OverCapacity(format!(
                    "over capacity: {} invocations are in flight on this node \
                 (spearlet.functions.max_concurrent)",
                    agent.config.spearlet.functions.max_concurrent
                )));
            }
        };
    let task = tokio::time::timeout(call.left()?, agent.functions.tasks.get(&call.task_id))
        .await
        .map_err(|_| call.left().err().unwrap_or_else(|| deadline(call)))?;
    let task = match task {
        Err(e @ InvokeError::NotFound(_)) => {
            // Gone at SMS: its instances are no longer kept.
            agent.pools.set_floor(&format!("fn:{}", call.task_id), 0);
            return Err(e);
        }
        other => other?,
    };
    if task.status == "unregistered" {
        agent.pools.set_floor(&format!("fn:{}", call.task_id), 0);
        return Err(InvokeError::Precondition(format!(
            "task {} is unregistered",
            call.task_id
        )));
    }
    let Some(executable) = task.executable.clone() else {
        return Err(InvokeError::Precondition(format!(
            "task {} has no executable",
            call.task_id
        )));
    };
    let loaded = agent
        .executors
        .get()
        .for_type(&executable.r#type)
        .map_err(InvokeError::Precondition)?
        .clone();
    if !loaded.capabilities.instances {
        return Err(InvokeError::Precondition(format!(
            "the {} executor keeps no long-lived instances: task {} can run as executions \
             only",
            loaded.name, call.task_id
        )));
    }
    let task_rate = match task.metadata.get("spear.rate_per_sec") {
        None => None,
        Some(v) => match v.parse::<f64>() {
            Ok(r) if r.is_finite() && (0.0..=1_000_000.0).contains(&r) => Some(r),
            _ => {
                return Err(InvokeError::Precondition(format!(
                    "task {}'s metadata spear.rate_per_sec `{v}` is not a number between 0 and \
                     1000000",
                    call.task_id
                )));
            }
        },
    };
    let sizes = Sizes::of(
        &task,
        agent.config.spearlet.limits.max_instances_per_task as usize,
    )?;
    let admitted = agent
        .functions
        .limiters
        .admit(
            &call.task_id,
            &call.function,
            &executable.uri,
            task_rate,
            call.deadline(),
        )
        .await?;
    let key = format!("fn:{}", call.task_id);
    let mut loaded = loaded;
    let lease = loop {
        let init = |starting| start_instance(agent, &loaded, &task, &executable, starting);
        let serving = Serving {
            request_id: call.request_id.clone(),
            function: call.function.clone(),
        };
        let lease = agent
            .pools
            .acquire_until(
                &key,
                &executable.r#type,
                serving,
                init,
                Some(call.deadline()),
                sizes.max,
            )
            .await
            .map_err(|e| match e {
                Error::OverCapacity(m) => InvokeError::OverCapacity(m),
                Error::Artifact { .. } => InvokeError::Precondition(e.to_string()),
                Error::Storage(m) => InvokeError::Lost(m),
                other => InvokeError::Precondition(format!("the instance did not start: {other}")),
            })?;
        let current =
            (lease.runtime.as_ref()).is_none_or(|r| agent.executors.get().holds(&r.executor));
        // An instance of an executor swapped out serves no new invocation: it goes, and the
        // next is taken (the deadline bounds the tries).
        if current {
            break lease;
        }
        agent.pools.retire(lease);
        loaded = agent
            .executors
            .get()
            .for_type(&executable.r#type)
            .map_err(InvokeError::Precondition)?
            .clone();
    };
    // Set, or cleared when the task no longer asks for one.
    agent.pools.set_floor(&key, sizes.min);
    if sizes.min > 0 && agent.pools.count(&key) < sizes.min {
        // Up to its minimum, in the background (this invocation does not wait for it).
        let (agent, task, executable, loaded) = (
            agent.clone(),
            task.clone(),
            executable.clone(),
            loaded.clone(),
        );
        tokio::spawn(async move {
            let init = |starting| start_instance(&agent, &loaded, &task, &executable, starting);
            let key = format!("fn:{}", task.task_id);
            if let Err(e) = agent
                .pools
                .warm(&key, &executable.r#type, init, sizes.min, sizes.max)
                .await
            {
                tracing::warn!(task = %task.task_id, error = %e, "warming up to spear.min_instances");
            }
            // Started on an executor swapped out meanwhile: they go.
            agent.retire_replaced().await;
        });
    }
    let Some(runtime) = lease.runtime.clone() else {
        agent.pools.unused(lease);
        return Err(InvokeError::Lost(
            "the instance taken has no runtime".into(),
        ));
    };
    let left = match call.left() {
        Ok(left) => left,
        Err(e) => {
            agent.pools.unused(lease);
            return Err(e);
        }
    };
    let (tier, id, resume) = (lease.tier, lease.id, lease.resume);
    let (function, payload) = (call.function.clone(), call.payload.clone());
    let ran_on = runtime.executor.clone();
    let running = Instant::now();
    let until = Instant::now() + left;
    // `None`: resumed, but no time was left to run the function (the instance is fine).
    let ran = tokio::task::spawn_blocking(move || {
        // Taken Paused: resumed first (an instance that cannot be is lost), within the deadline.
        if resume && let Err(e) = runtime.pause(false) {
            return Some(Err(InvokeFailure::Lost(format!(
                "the paused instance could not be resumed: {e}"
            ))));
        }
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        let ms = u64::try_from(left.as_millis()).unwrap_or(u64::MAX).max(1);
        let (x, h) = (&runtime.executor, &runtime.handle);
        Some(match pieces.as_mut() {
            Some(sink) => x.invoke_stream(h, &function, &payload, ms, &mut **sink),
            None => x.invoke(h, &function, &payload, ms),
        })
    })
    .await
    .unwrap_or_else(|e| {
        Some(Err(InvokeFailure::Lost(format!(
            "the invocation panicked: {e}"
        ))))
    });
    admitted.done(running.elapsed());
    let Some(ran) = ran else {
        agent.pools.release(lease, true, None, 0);
        return Err(deadline(call));
    };
    let lost = ran.as_ref().is_err_and(InvokeFailure::instance_lost);
    // A refusal is not the instance's failure (the function never ran).
    let ok = matches!(ran, Ok(_) | Err(InvokeFailure::Refused(_)));
    if !lost && !agent.executors.get().holds(&ran_on) {
        // Its executor was swapped out during the invocation: the instance serves no more.
        agent.pools.retire(lease);
    } else {
        let broken = match &ran {
            Err(f) if lost => Some(f.to_string()),
            _ => None,
        };
        agent.pools.release(lease, ok, broken, 0);
    }
    if lost {
        agent.executor_failures.count(&loaded.name);
    }
    let output = ran.map_err(|f| match f {
        InvokeFailure::Function(m) => InvokeError::Function(format!("the function failed: {m}")),
        InvokeFailure::Refused(m) => InvokeError::Invalid(m),
        InvokeFailure::Deadline(m) => InvokeError::Deadline(m),
        InvokeFailure::Lost(m) => InvokeError::Lost(m),
    })?;
    let max = agent.config.spearlet.functions.max_payload_bytes;
    if output.len() as u64 > max {
        return Err(InvokeError::Function(format!(
            "the function's output of {} bytes is over spearlet.functions.max_payload_bytes ({max})",
            output.len()
        )));
    }
    Ok(Answer {
        request_id: call.request_id.clone(),
        output,
        instance: format!("{}#{id}", call.task_id),
        tier,
        duration: call.arrived.elapsed(),
    })
}

fn deadline(call: &Call) -> InvokeError {
    InvokeError::Deadline(format!(
        "the invocation's deadline of {} ms passed",
        call.timeout.as_millis()
    ))
}
