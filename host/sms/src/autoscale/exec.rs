//! The `exec` provider: one run of the configured command per action, told what to do through
//! its environment. Its output is kept (bounded) for the log when it fails.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;

use super::ProviderConfig;

/// Bytes of the command's output kept for a failure's message.
const OUTPUT_KEPT: usize = 4096;

/// What a provider is asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Start nodes with these UUIDs.
    Start,
    /// Stop the nodes with these UUIDs (drained, idle).
    Stop,
}

impl Action {
    /// The word for logs, events, metrics and `SPEAR_SCALE_ACTION`.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Start => "start",
            Action::Stop => "stop",
        }
    }
}

/// How long the command's output may stay open after it exited (a process it left behind may
/// hold it): then the exit status alone decides.
const PIPES_GRACE: Duration = Duration::from_secs(1);

/// Run the command for `action` on `uuids`; `Err` says why it failed. The command runs in a
/// process group of its own (killed whole when it overruns `timeout_ms`), without SMS's own
/// `SMS_*` variables (its tokens among them).
pub async fn run(
    provider: &ProviderConfig,
    action: Action,
    uuids: &[String],
    desired: u32,
    sms_grpc_addr: &str,
) -> Result<(), String> {
    let (program, args) = provider
        .command
        .split_first()
        .ok_or_else(|| "no command configured".to_owned())?;
    let mut command = Command::new(program);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("SMS_") {
            command.env_remove(key);
        }
    }
    let mut child = command
        .args(args)
        .env("SPEAR_SCALE_ACTION", action.as_str())
        .env("SPEAR_NODE_UUIDS", uuids.join(","))
        .env("SPEAR_DESIRED", desired.to_string())
        .env("SPEAR_SMS_GRPC_ADDR", sms_grpc_addr)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    let group = child.id();
    let stdout = tokio::spawn(keep(child.stdout.take()));
    let stderr = tokio::spawn(keep(child.stderr.take()));
    let limit = Duration::from_millis(provider.timeout_ms);
    let status = match tokio::time::timeout(limit, child.wait()).await {
        Ok(status) => status,
        Err(_) => {
            stdout.abort();
            stderr.abort();
            if let Some(pid) = group.and_then(|g| i32::try_from(g).ok()) {
                // SAFETY: signals the process group the command leads; no memory is shared.
                unsafe { libc::killpg(pid, libc::SIGKILL) };
            }
            let _ = child.kill().await;
            return Err(format!(
                "{program} did not finish within {} ms (autoscaler.provider.timeout_ms); killed",
                provider.timeout_ms
            ));
        }
    };
    let status = match status {
        Ok(s) if !s.success() => s,
        other => {
            // (Processes it left behind may keep its output open: the readers go now.)
            stdout.abort();
            stderr.abort();
            return other.map(|_| ()).map_err(|e| format!("{program}: {e}"));
        }
    };
    let text = |mut pipe: tokio::task::JoinHandle<Vec<u8>>| async move {
        match tokio::time::timeout(PIPES_GRACE, &mut pipe).await {
            Ok(Ok(bytes)) => String::from_utf8_lossy(&bytes).trim().to_owned(),
            _ => {
                pipe.abort();
                String::new()
            }
        }
    };
    Err(format!(
        "{program} {status}; stderr: {:?}; stdout: {:?}",
        text(stderr).await,
        text(stdout).await
    ))
}

/// Read `pipe` to its end (a full pipe would block the command), keeping its first bytes.
async fn keep<R: AsyncRead + Unpin>(pipe: Option<R>) -> Vec<u8> {
    let mut kept = Vec::new();
    let Some(mut pipe) = pipe else {
        return kept;
    };
    let mut buf = [0u8; 4096];
    while let Ok(n) = pipe.read(&mut buf).await {
        if n == 0 {
            break;
        }
        let room = OUTPUT_KEPT.saturating_sub(kept.len());
        kept.extend_from_slice(&buf[..n.min(room)]);
    }
    kept
}
