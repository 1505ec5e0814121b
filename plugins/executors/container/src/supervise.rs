//! Watching one container to its end: output captured under a cap, stdin fed, the time limit
//! enforced (TERM, then KILL after a grace), and the result put in the table.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bollard::container::LogOutput;
use bollard::models::ContainerInspectResponse;
use futures_util::{Stream, StreamExt};
use spear_plugin_api::executor::{ExecResult, ExitStatus};
use tokio::io::{AsyncWrite, AsyncWriteExt};

use crate::engine::{Engine, rfc3339_ms};
use crate::spec::now_unix_ms;

/// How long output may still trickle in after the container stopped.
const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(30);

/// A stream of container output (attach or logs).
pub(crate) type OutputStream =
    Pin<Box<dyn Stream<Item = Result<LogOutput, bollard::errors::Error>> + Send>>;

/// The writing end of a container's standard input (the attach connection).
pub(crate) type StdinWriter = Pin<Box<dyn AsyncWrite + Send>>;

/// One container this executor knows.
#[derive(Default)]
pub(crate) struct Entry {
    /// Its result, once it has ended.
    pub result: Option<ExecResult>,
    /// The task watching it, aborted on destroy.
    pub watcher: Option<tokio::task::AbortHandle>,
}

/// The containers this executor knows, by handle, and a condition variable signalled whenever a
/// result arrives.
#[derive(Default)]
pub(crate) struct Table {
    entries: Mutex<HashMap<String, Entry>>,
    changed: Condvar,
}

impl Table {
    /// Lock the entries.
    pub fn lock(&self) -> MutexGuard<'_, HashMap<String, Entry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Record a result and wake the waiters.
    fn finish(&self, handle: &str, result: ExecResult) {
        if let Some(e) = self.lock().get_mut(handle) {
            e.result = Some(result);
            e.watcher = None;
        }
        self.changed.notify_all();
    }

    /// Wait up to `timeout` for the result of `handle`; `Err` if it is unknown.
    pub fn wait(&self, handle: &str, timeout: Duration) -> Result<Option<ExecResult>, ()> {
        // Saturating: a timeout of u64::MAX ms waits "for ever", not an overflow panic.
        let deadline = Instant::now()
            .checked_add(timeout)
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(u64::from(u32::MAX)));
        let mut entries = self.lock();
        loop {
            let entry = entries.get(handle).ok_or(())?;
            if let Some(r) = &entry.result {
                return Ok(Some(r.clone()));
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            entries = self
                .changed
                .wait_timeout(entries, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

/// Everything needed to watch one container.
pub(crate) struct Watch {
    /// The engine.
    pub engine: Engine,
    /// The container name (the handle).
    pub name: String,
    /// Its output: the attach stream of a new container, the logs of a recovered one.
    pub output: OutputStream,
    /// Bytes for its standard input, and where to write them.
    pub stdin: Option<(StdinWriter, Vec<u8>)>,
    /// Wall-clock end of its time limit (Unix ms; 0 = none).
    pub deadline_unix_ms: u64,
    /// Grace between TERM and KILL at the time limit.
    pub grace: Duration,
    /// Bytes kept per stream.
    pub cap: u64,
    /// When the executor started it (for the duration when the engine does not say).
    pub started: Instant,
}

/// Kept output of one stream.
#[derive(Default)]
struct Capture {
    kept: Vec<u8>,
    truncated: bool,
}

impl Capture {
    fn push(&mut self, bytes: &[u8], cap: usize) {
        let room = cap.saturating_sub(self.kept.len());
        if bytes.len() > room {
            self.truncated = true;
        }
        self.kept.extend_from_slice(&bytes[..bytes.len().min(room)]);
    }
}

/// Read the output stream to its end, keeping at most `cap` bytes of each of stdout and stderr.
/// Memory stays bounded: frames past the cap are counted as truncation and dropped.
async fn drain(mut output: OutputStream, cap: usize, into: Arc<Mutex<(Capture, Capture)>>) {
    while let Some(Ok(frame)) = output.next().await {
        let mut c = into.lock().unwrap_or_else(|p| p.into_inner());
        match frame {
            LogOutput::StdOut { message } | LogOutput::Console { message } => {
                c.0.push(&message, cap)
            }
            LogOutput::StdErr { message } => c.1.push(&message, cap),
            LogOutput::StdIn { .. } => {}
        }
    }
}

/// Wait for the container to stop, stopping it at its deadline (Unix ms, 0 = none). Returns its
/// final inspection and whether the deadline stopped it.
async fn wait_with_deadline(
    engine: &Engine,
    name: &str,
    deadline_unix_ms: u64,
    grace: Duration,
) -> (Result<ContainerInspectResponse, String>, bool) {
    let docker = match engine.client() {
        Ok(d) => d,
        Err(e) => return (Err(e.to_string()), false),
    };
    let exit = engine.wait_exit(&docker, name);
    tokio::pin!(exit);
    let mut timed_out = false;
    if deadline_unix_ms > 0 {
        let left = deadline_unix_ms.saturating_sub(now_unix_ms());
        tokio::select! {
            r = &mut exit => return (r.map_err(|e| e.to_string()), false),
            _ = tokio::time::sleep(Duration::from_millis(left)) => {}
        }
        timed_out = true;
        let _ = engine.kill(&docker, name, 15).await;
        tokio::select! {
            r = &mut exit => return (r.map_err(|e| e.to_string()), true),
            _ = tokio::time::sleep(grace) => {}
        }
        let _ = engine.kill(&docker, name, 9).await;
    }
    (exit.await.map_err(|e| e.to_string()), timed_out)
}

/// Watch a container to its end and record its result in `table` under its name.
pub(crate) async fn supervise(w: Watch, table: Arc<Table>) {
    let Watch {
        engine,
        name,
        output,
        stdin,
        deadline_unix_ms,
        grace,
        cap,
        started,
    } = w;
    if let Some((mut input, bytes)) = stdin {
        tokio::spawn(async move {
            let _ = input.write_all(&bytes).await;
            // Half-closing the attach connection is the end of the container's standard input.
            let _ = input.shutdown().await;
        });
    }
    let cap = usize::try_from(cap).unwrap_or(usize::MAX);
    let captured = Arc::new(Mutex::new((Capture::default(), Capture::default())));
    let drainer = tokio::spawn(drain(output, cap, captured.clone()));
    let abort = drainer.abort_handle();
    let (inspected, timed_out) = wait_with_deadline(&engine, &name, deadline_unix_ms, grace).await;
    if tokio::time::timeout(DRAIN_AFTER_EXIT, drainer)
        .await
        .is_err()
    {
        abort.abort();
    }
    let (out, err) = std::mem::take(&mut *captured.lock().unwrap_or_else(|p| p.into_inner()));
    let (status, duration_ms) = match &inspected {
        Ok(c) => (
            status_of(c, timed_out),
            engine_duration_ms(c).unwrap_or(started.elapsed().as_millis() as u64),
        ),
        Err(e) => (
            ExitStatus::Failed(format!("lost track of the container: {e}")),
            started.elapsed().as_millis() as u64,
        ),
    };
    let result = ExecResult {
        status,
        stdout: out.kept,
        stderr: err.kept,
        stdout_truncated: out.truncated,
        stderr_truncated: err.truncated,
        duration_ms,
    };
    table.finish(&name, result);
}

/// How a stopped container ended.
///
/// - stopped at its time limit → `TimedOut`;
/// - killed by the kernel at its memory limit, where the engine reports it (`OOMKilled`) →
///   `Failed("out of memory: …")`;
/// - exit codes 129–159 → `Signaled(code − 128)`: engines report a main process killed by signal
///   N as 128 + N (a process that exits with such a code on purpose looks the same). Where the
///   engine does not report OOM kills (Podman on cgroup v1), an OOM kill is `Signaled(9)`;
/// - any other code → `Exited(code)`; an engine error starting it → `Failed(error)`.
pub(crate) fn status_of(c: &ContainerInspectResponse, timed_out: bool) -> ExitStatus {
    let state = c.state.clone().unwrap_or_default();
    let code = state.exit_code.unwrap_or(-1);
    if timed_out {
        return ExitStatus::TimedOut;
    }
    if state.oom_killed == Some(true) {
        let limit = c
            .host_config
            .as_ref()
            .and_then(|h| h.memory)
            .filter(|m| *m > 0)
            .map(|m| format!(" of {} MiB", m / (1024 * 1024)))
            .unwrap_or_default();
        return ExitStatus::Failed(format!(
            "out of memory: the kernel killed the container at its memory limit{limit} \
             (exit code {code})"
        ));
    }
    if let Some(error) = state.error.filter(|e| !e.is_empty())
        && code != 0
    {
        return ExitStatus::Failed(format!("the container engine could not run it: {error}"));
    }
    match i32::try_from(code) {
        Ok(c @ 129..=159) => ExitStatus::Signaled(c - 128),
        Ok(c) => ExitStatus::Exited(c),
        Err(_) => ExitStatus::Failed(format!("impossible exit code {code}")),
    }
}

/// The run time the engine measured (start to finish), if it says.
fn engine_duration_ms(c: &ContainerInspectResponse) -> Option<u64> {
    let state = c.state.as_ref()?;
    let started = rfc3339_ms(state.started_at.as_deref()?)?;
    let finished = rfc3339_ms(state.finished_at.as_deref()?)?;
    u64::try_from(finished - started).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::ContainerState;

    fn exited(code: i64, oom: bool) -> ContainerInspectResponse {
        ContainerInspectResponse {
            state: Some(ContainerState {
                exit_code: Some(code),
                oom_killed: Some(oom),
                ..ContainerState::default()
            }),
            ..ContainerInspectResponse::default()
        }
    }

    #[test]
    fn statuses() {
        assert_eq!(status_of(&exited(3, false), false), ExitStatus::Exited(3));
        assert_eq!(
            status_of(&exited(137, false), false),
            ExitStatus::Signaled(9)
        );
        assert_eq!(status_of(&exited(137, false), true), ExitStatus::TimedOut);
        assert!(
            matches!(status_of(&exited(137, true), false), ExitStatus::Failed(m) if m.starts_with("out of memory"))
        );
    }

    #[test]
    fn captures_stop_at_the_cap() {
        let mut c = Capture::default();
        c.push(b"hello", 3);
        c.push(b"x", 3);
        assert_eq!(c.kept, b"hel");
        assert!(c.truncated);
    }
}
