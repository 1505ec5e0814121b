//! One execution's way through the node: accept (dedupe), pick an instance, start it on its
//! executor under the node's limits, wait, report. Also the start-up recovery of executions a
//! previous run of the agent left behind.

use std::sync::Arc;

use spear_plugin_api::executor::{ExecResult, ExecSpec, ExitStatus};
use spear_proto::v1;

use crate::agent::{Active, Agent};
use crate::executors::Loaded;
use crate::store::{PendingReport, Running, WireResult};

/// Take an execution SMS placed here, unless it is already running or finished here (SMS sends
/// placed executions again when the stream reconnects): running, its result waiting, or its
/// result of this attempt answered lately.
pub async fn accept(agent: Arc<Agent>, exec: v1::Execution, stream_epoch: u64) {
    let id = exec.execution_id.clone();
    if agent.running().contains_key(&id) {
        return;
    }
    match agent.reporter.pending(&id).await {
        Ok(true) => return,
        Ok(false) => {}
        Err(e) => tracing::error!(error = %e, "cannot read pending reports"),
    }
    // After the pending check: a result is remembered as answered before it stops pending, so
    // one answered meanwhile is seen here.
    if exec.attempt != 0 && agent.reporter.answered(&id, exec.attempt) {
        tracing::debug!(execution = %id, attempt = exec.attempt, "already ran here: not run again");
        return;
    }
    let ty = exec
        .executable
        .as_ref()
        .map(|e| e.r#type.clone())
        .unwrap_or_default();
    // The executor in force now: the execution runs to its end on it, whatever swaps meanwhile.
    let executor = agent.executors.get().for_type(&ty).cloned();
    agent.running().insert(
        id.clone(),
        Active {
            executor: executor.as_ref().ok().cloned(),
            handle: None,
            silenced: false,
            preempted: false,
            checkpoint: exec.checkpoint && ty == "process",
            grace_ms: 0,
            signalled: false,
        },
    );
    tokio::spawn(async move {
        let mut report = execute(&agent, &exec, stream_epoch, executor).await;
        report.attempt = exec.attempt;
        finish(&agent, report).await;
    });
}

/// Hand a result to the reporter (unless the execution was cancelled or handed back) and forget
/// the execution.
async fn finish(agent: &Agent, mut report: PendingReport) {
    let id = report.execution_id.clone();
    report.start_untold = agent.starts.ended(&id);
    if silenced(agent, &id) {
        let _ = agent.store.delete(&format!("exec/{id}")).await;
    } else if let Err(e) = agent.reporter.submit(report).await {
        tracing::error!(execution = %id, error = %e, "cannot persist the result");
    }
    agent.running().remove(&id);
}

fn failure(id: &str, error: String) -> PendingReport {
    tracing::warn!(execution = %id, %error, "execution failed");
    PendingReport {
        execution_id: id.to_owned(),
        success: false,
        result: None,
        error,
        start_untold: false,
        attempt: 0,
        preempted: false,
        checkpoint: Vec::new(),
    }
}

/// Whether an executable URI names an artifact to fetch (rather than, say, an image name).
/// What an executor runs for `executable` (its `entry`), with `artifact` the local path of its
/// fetched artifact: a fetched program runs as itself, a container image may be named by a
/// `uri` that is no fetchable address, and otherwise the executable's `name`.
pub(crate) fn entry_of(executable: &v1::Executable, artifact: Option<&String>) -> String {
    match (executable.r#type.as_str(), artifact) {
        ("process", Some(path)) if executable.name.is_empty() => path.clone(),
        ("container", _) if executable.name.is_empty() && !fetchable(&executable.uri) => {
            executable.uri.clone()
        }
        _ => executable.name.clone(),
    }
}

pub(crate) fn fetchable(uri: &str) -> bool {
    [
        "sms+file://",
        "file://",
        "https://",
        "http://",
        "s3://",
        "minio://",
    ]
    .iter()
    .any(|s| uri.starts_with(s))
}

/// The pool key of an inline executable: its type and name and a digest of everything it runs,
/// so that the same inline executable submitted again reuses its instances.
fn inline_task_key(e: &v1::Executable) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for part in [&e.r#type, &e.uri, &e.name].into_iter().chain(&e.args) {
        h.update(part.as_bytes());
        h.update([0]);
    }
    let mut env: Vec<_> = e.env.iter().collect();
    env.sort();
    for (k, v) in env {
        h.update(k.as_bytes());
        h.update([1]);
        h.update(v.as_bytes());
        h.update([0]);
    }
    let digest: String = h.finalize()[..6]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let name = e.name.rsplit('/').next().unwrap_or_default();
    format!("inline:{}:{name}:{digest}", e.r#type)
}

/// Run one execution to its end and say how it went.
async fn execute(
    agent: &Arc<Agent>,
    exec: &v1::Execution,
    stream_epoch: u64,
    executor: Result<Loaded, String>,
) -> PendingReport {
    let id = exec.execution_id.as_str();
    let Some(executable) = exec.executable.clone() else {
        return failure(id, "the execution has no executable".into());
    };
    // No executor for its type when it arrived: it fails at once.
    if let Err(e) = executor {
        return failure(id, e);
    }
    let uri = executable.uri.clone();
    let task = if exec.task_id.is_empty() {
        inline_task_key(&executable)
    } else {
        exec.task_id.clone()
    };
    let artifacts = agent.artifacts.clone();
    let serving = crate::pool::Serving {
        request_id: id.to_owned(),
        function: String::new(),
    };
    let lease = agent
        .pools
        .acquire(&task, &executable.r#type, serving, |_| {
            let (artifacts, uri) = (artifacts.clone(), uri.clone());
            async move {
                let artifact = if fetchable(&uri) {
                    Some(artifacts.fetch(&uri).await?)
                } else {
                    None
                };
                Ok(crate::pool::Made {
                    artifact,
                    runtime: None,
                })
            }
        })
        .await;
    let lease = match lease {
        Ok(l) => l,
        Err(e) => return failure(id, e.to_string()),
    };
    // The node-wide limit is taken with an instance in hand, so no waiter holds a slot while
    // its task has no instance to give.
    // By priority: work SMS preempted a run for takes the slot that run frees.
    let _permit = agent
        .slots
        .acquire(crate::slots::rank(&exec.priority))
        .await;
    let artifact = lease.artifact.as_ref().map(|p| p.display().to_string());
    let entry = entry_of(&executable, artifact.as_ref());
    // A program runs in a directory of its own, removed when it ends (`workdir`), unless the
    // configuration says otherwise.
    let workdir = if executable.r#type == "process" && agent.config.spearlet.limits.private_workdir
    {
        match agent.workdirs.create(id) {
            Ok(dir) => Some(dir),
            Err(e) => {
                agent.pools.release(lease, false, None, 0);
                return failure(id, format!("cannot make its working directory: {e}"));
            }
        }
    } else {
        None
    };
    // A program that checkpoints gets a directory for its state, restored from its last
    // checkpoint when it runs again ([`crate::checkpoint`]).
    let checkpoint_dir = if exec.checkpoint && executable.r#type == "process" {
        match crate::checkpoint::prepare(agent, id, &exec.checkpoint_data).await {
            Ok(dir) => Some(dir),
            Err(e) => {
                agent.pools.release(lease, false, None, 0);
                return failure(id, format!("cannot prepare its checkpoint directory: {e}"));
            }
        }
    } else {
        None
    };
    let mut env: Vec<(String, String)> = executable.env.clone().into_iter().collect();
    if let Some(dir) = &checkpoint_dir {
        env.push((
            crate::checkpoint::ENV.into(),
            dir.path().display().to_string(),
        ));
    }
    let limits = &agent.config.spearlet.limits;
    let spec = ExecSpec {
        execution_id: id.to_owned(),
        task: task.clone(),
        artifact,
        entry,
        args: executable.args.clone(),
        env,
        working_dir: workdir.as_ref().map(|d| d.path().display().to_string()),
        stdin: exec.stdin.clone(),
        timeout_ms: exec.timeout_ms,
        // What the execution needs is what it may use.
        memory_limit_mb: exec.needs.map(|n| n.memory_mb).unwrap_or(0),
        cpu_millis: exec.needs.map(|n| n.cpu_millis).unwrap_or(0),
        network: false,
        output_cap_bytes: limits.output_cap_mb.saturating_mul(1024 * 1024),
    };
    // After a stall, SMS may have moved it while it waited here: ask before starting it.
    if agent.stall.must_check(stream_epoch) && !crate::stall::still_ours(agent, exec).await {
        agent.pools.unused(lease);
        if let Some(a) = agent.running().get_mut(id) {
            a.silenced = true;
        }
        return failure(
            id,
            "moved to another node while this node stood still".into(),
        );
    }
    let tier = lease.tier;
    // A start under a queue deadline is told at once: the deadline counts until SMS hears it.
    let hold_start = exec.queue_timeout_ms == 0;
    // The executor in force when it starts: a swap while it waited for its instance or a slot
    // applies to it too (it then runs to its end on that one).
    let loaded = match agent.executors.get().for_type(&executable.r#type) {
        Ok(now) => now.clone(),
        Err(e) => {
            agent.pools.unused(lease);
            return failure(id, e);
        }
    };
    let (mut outcome, broken, memory) =
        run_on(agent, &loaded, spec, hold_start, exec.attempt).await;
    // A run that ended well before it was told to stop is done: it is not run again.
    if stopped_by_preemption(agent, id, outcome.success) {
        crate::checkpoint::preempted(&mut outcome, checkpoint_dir.as_ref()).await;
    }
    if broken {
        agent.executor_failures.count(&loaded.name);
    }
    let broken = broken.then(|| format!("the {} executor failed: {}", loaded.name, outcome.error));
    agent.pools.release(lease, outcome.success, broken, memory);
    tracing::info!(execution = %id, ?tier, success = outcome.success, "execution finished");
    outcome
}

/// Start `spec` on `loaded`, record its handle, wait for it, and build the report. Returns the
/// report, whether the executor itself failed (the instance is broken), and the memory seen.
async fn run_on(
    agent: &Arc<Agent>,
    loaded: &Loaded,
    spec: ExecSpec,
    hold_start: bool,
    attempt: u32,
) -> (PendingReport, bool, u64) {
    let id = spec.execution_id.clone();
    if silenced(agent, &id) {
        // Cancelled (or handed back at a drain) before it started.
        return (failure(&id, "cancelled before it started".into()), false, 0);
    }
    if preempted(agent, &id) {
        return (failure(&id, "preempted before it started".into()), false, 0);
    }
    let executor = loaded.executor.clone();
    let started = tokio::task::spawn_blocking(move || executor.start(&spec)).await;
    let handle = match started {
        Ok(Ok(h)) => h,
        Ok(Err(e)) => return (failure(&id, format!("{}: {e}", loaded.name)), true, 0),
        Err(e) => return (failure(&id, format!("{}: {e}", loaded.name)), true, 0),
    };
    let (cancelled, preempted) = agent.running().get_mut(&id).map_or((false, false), |a| {
        a.handle = Some(handle.clone());
        a.executor = Some(loaded.clone());
        (a.silenced, a.preempted)
    });
    // Cancelled or preempted while it was starting: neither found a handle to stop.
    if cancelled {
        let (executor, h) = (loaded.executor.clone(), handle.clone());
        let grace = agent.config.spearlet.limits.stop_grace_ms;
        tokio::task::spawn_blocking(move || executor.stop(&h, grace));
    } else if preempted {
        let (agent, loaded, h, id) = (agent.clone(), loaded.clone(), handle.clone(), id.clone());
        tokio::task::spawn_blocking(move || agent.stop_preempted(&id, &loaded, &h));
    }
    let record = Running {
        execution_id: id.clone(),
        executor: loaded.name.clone(),
        handle: handle.clone(),
        started_at_ms: crate::now_ms(),
        attempt,
    };
    // Tell SMS it started (held a moment, then batched with other starts) beside the run: the
    // result need not wait for that answer (SMS takes the start only while the execution is
    // assigned, so a start arriving after the result is refused and changes nothing). A start
    // still held when the run ends goes beside the result instead (`finish`).
    agent.starts.started(&id, attempt, hold_start);
    // The record (for re-attaching after a restart) is queued now and stored while it runs;
    // nothing waits for it. The store applies writes in order, so the result's write, which
    // deletes it, lands after it; a crash before it is durable loses only what a crash just
    // before the start would (SMS sends the execution again). A failed write is logged by the
    // store's writer.
    if let Err(e) = agent.store.put_unawaited(&format!("exec/{id}"), &record) {
        tracing::error!(execution = %id, error = %e, "cannot persist the running record");
    }
    let (result, memory) = wait_and_destroy(loaded, &handle).await;
    match result {
        Ok(r) => (report(&id, r), false, memory),
        Err(e) => (failure(&id, format!("{}: {e}", loaded.name)), true, memory),
    }
}

/// Whether the execution was cancelled or handed back (its result is not reported).
fn silenced(agent: &Agent, id: &str) -> bool {
    agent.running().get(id).is_some_and(|a| a.silenced)
}

/// Whether SMS preempted the execution (it is reported as preempted).
fn preempted(agent: &Agent, id: &str) -> bool {
    agent.running().get(id).is_some_and(|a| a.preempted)
}

/// Whether a run that ended (well: `success`) is reported as preempted: SMS preempted it, and it
/// failed, or was still running when it was told to stop.
fn stopped_by_preemption(agent: &Agent, id: &str, success: bool) -> bool {
    agent
        .running()
        .get(id)
        .is_some_and(|a| a.preempted && (!success || a.signalled))
}

/// Wait for a handle's result, sampling its memory while it runs, then destroy the handle
/// (in the same trip to a blocking thread as the wait that ends).
pub async fn wait_and_destroy(loaded: &Loaded, handle: &str) -> (Result<ExecResult, String>, u64) {
    let mut memory = 0;
    loop {
        let executor = loaded.executor.clone();
        let h = handle.to_owned();
        let step = tokio::task::spawn_blocking(move || {
            let r = executor.wait(&h, 1000);
            let m = match &r {
                Ok(None) => executor.stats(&h).map(|s| s.memory_bytes).unwrap_or(0),
                _ => {
                    let _ = executor.destroy(&h);
                    0
                }
            };
            (r, m)
        })
        .await;
        match step {
            Ok((Ok(Some(result)), _)) => return (Ok(result), memory),
            Ok((Ok(None), m)) => memory = memory.max(m),
            Ok((Err(e), _)) => return (Err(e.to_string()), memory),
            Err(e) => {
                // The blocking task itself failed: the handle may not have been destroyed.
                let executor = loaded.executor.clone();
                let h = handle.to_owned();
                let _ = tokio::task::spawn_blocking(move || executor.destroy(&h)).await;
                return (Err(e.to_string()), memory);
            }
        }
    }
}

/// The report for a finished workload.
pub fn report(id: &str, r: ExecResult) -> PendingReport {
    let (success, exit_code, signal, error) = match &r.status {
        ExitStatus::Exited(0) => (true, 0, 0, String::new()),
        ExitStatus::Exited(c) => (false, *c, 0, format!("exited with code {c}")),
        ExitStatus::Signaled(s) => (false, 0, *s, format!("killed by signal {s}")),
        ExitStatus::TimedOut => (
            false,
            -1,
            0,
            format!("timed out after {} ms and was stopped", r.duration_ms),
        ),
        ExitStatus::Failed(m) => (false, -1, 0, m.clone()),
    };
    PendingReport {
        execution_id: id.to_owned(),
        success,
        result: Some(WireResult {
            exit_code,
            signal,
            stdout: r.stdout,
            stderr: r.stderr,
            stdout_truncated: r.stdout_truncated,
            stderr_truncated: r.stderr_truncated,
            duration_ms: r.duration_ms,
        }),
        error,
        start_untold: false,
        attempt: 0,
        preempted: false,
        checkpoint: Vec::new(),
    }
}

/// At start: for every execution a previous run left running, re-attach through its executor
/// (and report its result when it ends) or clean it up. SMS sends still-placed executions that
/// were cleaned up again on the stream, and they run afresh.
pub async fn recover(agent: &Arc<Agent>) {
    let left = match agent.store.scan::<Running>("exec/").await {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "cannot read executions left by the previous run");
            return;
        }
    };
    for (key, r) in left {
        let Some(loaded) = agent
            .executors
            .get()
            .all()
            .find(|l| l.name == r.executor)
            .cloned()
        else {
            tracing::warn!(execution = %r.execution_id, executor = %r.executor, "executor gone; forgetting the execution");
            let _ = agent.store.delete(&key).await;
            continue;
        };
        let executor = loaded.executor.clone();
        let handle = r.handle.clone();
        let reattached = tokio::task::spawn_blocking(move || {
            let ok = executor.recover(&handle).unwrap_or(false);
            if !ok {
                let _ = executor.destroy(&handle);
            }
            ok
        })
        .await
        .unwrap_or(false);
        if !reattached {
            tracing::info!(execution = %r.execution_id, "left by the previous run; cleaned up");
            let _ = agent.store.delete(&key).await;
            continue;
        }
        tracing::info!(execution = %r.execution_id, "re-attached after restart");
        agent.running().insert(
            r.execution_id.clone(),
            Active {
                executor: Some(loaded.clone()),
                handle: Some(r.handle.clone()),
                silenced: false,
                preempted: false,
                checkpoint: false,
                grace_ms: 0,
                signalled: false,
            },
        );
        let agent = agent.clone();
        tokio::spawn(async move {
            let (result, _) = wait_and_destroy(&loaded, &r.handle).await;
            let mut report = match result {
                Ok(res) => report(&r.execution_id, res),
                Err(e) => failure(&r.execution_id, e),
            };
            report.attempt = r.attempt;
            // Preempted since it was re-attached (its checkpoint directory went with the run
            // before the restart: none is sent).
            if stopped_by_preemption(&agent, &r.execution_id, report.success) {
                crate::checkpoint::preempted(&mut report, None).await;
            }
            finish(&agent, report).await;
        });
    }
}
