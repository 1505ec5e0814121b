//! `spear run` (submit an execution, wait for it, pass its output and exit code through) and
//! `spear cancel`.

use std::time::Duration;

use serde_json::{Value, json};

use crate::Output;
use crate::client::{Client, Subject};
use crate::error::{CliError, Result};
use crate::exec::{ExecutableArgs, NeedsArgs};
use crate::output::{self, cell};
use crate::sse::SseReader;

/// Arguments of `spear run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// A registered task to run (see `spear task list`); or give an executable with --type.
    #[arg(value_name = "TASK_ID")]
    pub task_id: Option<String>,
    #[command(flatten)]
    pub executable: ExecutableArgs,
    /// Text for the execution's standard input.
    #[arg(long)]
    pub stdin: Option<String>,
    /// Wall-clock limit per attempt in ms (SMS's default: 60000; 0: none).
    #[arg(long)]
    pub timeout_ms: Option<u64>,
    /// Longest wait in ms for a first attempt to start, from submission (default: no limit).
    #[arg(long)]
    pub queue_timeout_ms: Option<u64>,
    /// By when it must have finished: RFC 3339 (`2026-12-01T12:00:00Z`), or ms since the Unix
    /// epoch. SMS refuses one that cannot be met (see --estimate-ms).
    #[arg(long)]
    pub deadline: Option<String>,
    /// How long a run is expected to take, in ms (a deadline sooner than this cannot be met).
    #[arg(long)]
    pub estimate_ms: Option<u64>,
    /// Attempts allowed, 1 to 10 (SMS's default: 3).
    #[arg(long)]
    pub max_attempts: Option<u32>,
    /// Urgency (default: the task's, else normal).
    #[arg(long, value_parser = ["low", "normal", "high", "urgent"])]
    pub priority: Option<String>,
    /// Start only after this execution succeeded (repeatable).
    #[arg(long = "after", value_name = "EXECUTION_ID")]
    pub depends_on: Vec<String>,
    #[command(flatten)]
    pub needs: NeedsArgs,
    /// It saves its state in $SPEAR_CHECKPOINT_DIR: after a preemption it runs again from that
    /// state (default: the task's `spear.checkpoint`).
    #[arg(long)]
    pub checkpoint: bool,
    /// How it starts again after a preemption, a drain, a lost node or a failure: from the
    /// beginning, from its checkpoint, or from its checkpoint on another node (default: the
    /// task's `spear.recovery`, else checkpoint when it checkpoints).
    #[arg(long, value_parser = ["restart", "checkpoint", "migrate"])]
    pub recovery: Option<String>,
    /// Print the execution's id and return at once instead of waiting.
    #[arg(short, long)]
    pub detach: bool,
}

/// Submit, then (unless detached) wait and pass the result through; returns the exit code.
pub async fn run(args: RunArgs, client: &Client, out: Output) -> Result<i32> {
    let mut body = json!({
        "priority": args.priority,
        "timeout_ms": args.timeout_ms,
        "queue_timeout_ms": args.queue_timeout_ms,
        "max_attempts": args.max_attempts,
        "depends_on": args.depends_on,
        "stdin": args.stdin.unwrap_or_default(),
    });
    if let Some(d) = &args.deadline {
        // A number is milliseconds since the epoch; anything else goes as text for SMS to read.
        body["deadline"] = d
            .trim()
            .parse::<i64>()
            .map_or_else(|_| json!(d), |ms| json!(ms));
    }
    if let Some(e) = args.estimate_ms {
        body["estimate_ms"] = json!(e);
    }
    if args.checkpoint {
        body["checkpoint"] = json!(true);
    }
    if let Some(r) = &args.recovery {
        body["recovery"] = json!(r);
    }
    match (&args.task_id, args.executable.given()) {
        (Some(id), false) => body["task_id"] = json!(id),
        (None, true) => body["executable"] = args.executable.build(client).await?,
        (Some(_), true) => {
            return Err(CliError::Usage(
                "give a TASK_ID or an executable (--type …), not both".into(),
            ));
        }
        (None, false) => {
            return Err(CliError::Usage(
                "say what to run: a TASK_ID (see `spear task list`), or an executable, e.g. \
                 `spear run --type process --name /bin/echo -- hello`"
                    .into(),
            ));
        }
    }
    if let Some(needs) = args.needs.to_json() {
        body["needs"] = needs;
    }
    let submitted = client.post("/api/v1/executions", &body, None).await?;
    let id = cell(&submitted["execution_id"]);
    if args.detach {
        match out {
            Output::Json => output::json(&submitted),
            Output::Text => output::out(&format!("{id}\n")),
        }
        return Ok(0);
    }
    let done = tokio::select! {
        done = wait(client, &id) => done?,
        _ = tokio::signal::ctrl_c() => {
            output::err(&format!(
                "spear: stopped waiting; execution {id} goes on: follow it with `spear logs {id} \
                 --follow`, stop it with `spear cancel {id}`\n"
            ));
            return Ok(130);
        }
    };
    match out {
        Output::Json => output::json(&done),
        Output::Text => pass_through(&done),
    }
    Ok(exit_code(&done))
}

/// Wait until the execution is in a final state; returns it. SMS streams each change of the
/// execution (`GET /api/v1/executions/{id}/watch`), so the end is seen as soon as it is stored; a
/// dropped stream (an SMS restart) is opened again.
pub async fn wait(client: &Client, id: &str) -> Result<Value> {
    let path = format!("/api/v1/executions/{id}/watch");
    let mut dropped = false;
    loop {
        let response = match client.stream(&path, Some(Subject::execution(id))).await {
            Ok(r) => r,
            // Once the stream was open, ride out an SMS restart.
            Err(CliError::Unreachable { .. }) if dropped => {
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            Err(e) => return Err(e),
        };
        let mut reader = SseReader::new(response);
        while let Ok(Some(event)) = reader.next().await {
            if event.event != "execution" {
                continue;
            }
            let e: Value = serde_json::from_str(&event.data).map_err(|err| CliError::Protocol {
                url: path.clone(),
                reason: format!("an execution that is not JSON ({err})"),
            })?;
            if is_terminal(&e) {
                return Ok(e);
            }
        }
        // Ended (or broke) before a final state: open it again.
        dropped = true;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Whether an execution will not change any more.
pub fn is_terminal(e: &Value) -> bool {
    matches!(
        e["state"].as_str(),
        Some("succeeded" | "failed" | "cancelled" | "timed_out")
    )
}

/// The exit code `spear run` ends with: the execution's; a signal → 128 + signal; a failure
/// without an exit code → 1.
pub fn exit_code(e: &Value) -> i32 {
    let r = &e["result"];
    let signal = r["signal"].as_i64().unwrap_or(0);
    if signal > 0 {
        return i32::try_from(128 + signal).unwrap_or(1);
    }
    let code = r["exit_code"].as_i64().unwrap_or(0);
    if code != 0 {
        // A process exit status is one byte; a code outside it still means failure.
        return if (1..=255).contains(&code) {
            code as i32
        } else {
            1
        };
    }
    i32::from(e["state"] != "succeeded")
}

/// The execution's stdout to stdout and stderr to stderr; then, when it did not end by itself
/// with an exit code, why.
pub fn pass_through(e: &Value) {
    let r = &e["result"];
    output::out(r["stdout"].as_str().unwrap_or_default());
    output::err(r["stderr"].as_str().unwrap_or_default());
    for stream in ["stdout", "stderr"] {
        if r[format!("{stream}_truncated")] == true {
            output::err(&format!(
                "spear: the execution's {stream} went past the node's cap and was cut\n"
            ));
        }
    }
    if let Some(why) = failure_note(e) {
        output::err(&format!("spear: {why}\n"));
    }
}

/// Why an execution ended without success, when its exit code alone does not say.
pub fn failure_note(e: &Value) -> Option<String> {
    let id = cell(&e["execution_id"]);
    let state = e["state"].as_str().unwrap_or_default();
    let r = &e["result"];
    let error = e["error"].as_str().filter(|s| !s.is_empty());
    let with_error = |what: String| match error {
        Some(err) => format!("{what}: {err}"),
        None => what,
    };
    let signal = r["signal"].as_i64().unwrap_or(0);
    let code = r["exit_code"].as_i64().unwrap_or(0);
    match state {
        "succeeded" => None,
        _ if signal > 0 => Some(with_error(format!(
            "execution {id} was killed by signal {signal}"
        ))),
        // The program's own exit code says it (a node reports -1 for "no code").
        "failed" if (1..=255).contains(&code) => None,
        "failed" => Some(with_error(format!("execution {id} failed"))),
        "cancelled" => Some(format!("execution {id} was cancelled")),
        "timed_out" => Some(with_error(format!(
            "execution {id} timed out after {} ms",
            cell(&e["timeout_ms"])
        ))),
        other => Some(format!("execution {id} is {other}")),
    }
}

/// `spear cancel EXECUTION_ID`.
pub async fn cancel(id: &str, client: &Client, out: Output) -> Result<i32> {
    let e = client
        .post(
            &format!("/api/v1/executions/{id}/cancel"),
            &json!({}),
            Some(Subject::execution(id)),
        )
        .await?;
    match out {
        Output::Json => output::json(&e),
        Output::Text => output::out(&format!("cancelled execution {id}\n")),
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_the_execution() {
        let e = |state: &str, result: Value| json!({"state": state, "result": result});
        assert_eq!(exit_code(&e("succeeded", json!({"exit_code": 0}))), 0);
        assert_eq!(exit_code(&e("failed", json!({"exit_code": 3}))), 3);
        assert_eq!(
            exit_code(&e("failed", json!({"exit_code": 0, "signal": 9}))),
            137
        );
        assert_eq!(exit_code(&e("failed", Value::Null)), 1);
        assert_eq!(exit_code(&e("timed_out", Value::Null)), 1);
        assert_eq!(exit_code(&e("failed", json!({"exit_code": -1}))), 1);
    }
}
