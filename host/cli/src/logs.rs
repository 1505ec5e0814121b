//! `spear logs [EXECUTION_ID] [--follow]`: SMS's event log, read from `GET /api/v1/events`
//! (Server-Sent Events, resumable by cursor). With an id, only that execution's events and, once
//! it has ended, its output.

use std::time::Duration;

use serde_json::Value;

use crate::Output;
use crate::client::{Client, Subject};
use crate::error::{CliError, Result};
use crate::output::{self, cell, time_of};
use crate::run::is_terminal;
use crate::sse::SseReader;

/// Arguments of `spear logs`.
#[derive(Debug, clap::Args)]
pub struct LogsArgs {
    /// Only this execution's events, then its output once it has ended.
    #[arg(value_name = "EXECUTION_ID")]
    pub execution_id: Option<String>,
    /// Keep streaming new events (until Ctrl-C, or, with an id, until the execution ends).
    #[arg(short, long)]
    pub follow: bool,
    /// Start after this cursor (the number before each event; default: the oldest event SMS
    /// keeps). Events SMS no longer keeps are skipped with a warning.
    #[arg(long, value_name = "CURSOR", default_value_t = 0)]
    pub after: u64,
}

/// Run `spear logs`.
pub async fn run(args: LogsArgs, client: &Client, out: Output) -> Result<i32> {
    let id = args.execution_id.as_deref();
    if let Some(id) = id {
        // Fail early, and clearly, on an unknown id.
        client
            .get(
                &format!("/api/v1/executions/{id}"),
                Some(Subject::execution(id)),
            )
            .await?;
    }
    let mut after = args.after;
    let mut reconnecting = false;
    loop {
        let response = match client
            .stream(
                &format!(
                    "/api/v1/events?after={after}{}",
                    if args.follow { "" } else { "&follow=false" }
                ),
                None,
            )
            .await
        {
            Ok(r) => r,
            // Once following, ride out an SMS restart.
            Err(CliError::Unreachable { .. }) if reconnecting => {
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            // Retention removed some of the events asked for: say so, and go on with the rest.
            Err(CliError::Compacted { resume_from, .. }) if resume_from > after => {
                warn_skipped(after, resume_from);
                after = resume_from;
                continue;
            }
            Err(e) => return Err(e),
        };
        if reconnecting {
            output::err("spear: reconnected to SMS\n");
        }
        let mut reader = SseReader::new(response);
        loop {
            // Without --follow SMS ends the stream after the events stored up to now.
            let event = match reader.next().await {
                Ok(Some(event)) => event,
                Ok(None) | Err(_) if args.follow => {
                    output::err(&format!(
                        "spear: lost the event stream at cursor {after}; reconnecting…\n"
                    ));
                    reconnecting = true;
                    break;
                }
                Ok(None) => return finish(id, client, out).await,
                Err(e) => return Err(client.transport(e)),
            };
            if event.event == "error" {
                // SMS's error body; `compacted`: retention removed what was next (this reader
                // fell behind it): say so and go on from where SMS says.
                let body: Value = serde_json::from_str(&event.data).unwrap_or_default();
                let error = &body["error"];
                if error["code"] == "compacted"
                    && let Some(resume_from) = error["resume_from"].as_u64()
                    && resume_from > after
                {
                    warn_skipped(after, resume_from);
                    after = resume_from;
                    break;
                }
                let message = error["message"].as_str().unwrap_or(&event.data);
                return Err(CliError::Api {
                    status: 503,
                    code: error["code"].as_str().unwrap_or("unavailable").into(),
                    message: format!("the event stream failed: {message}"),
                    field: None,
                });
            }
            let Ok(value) = serde_json::from_str::<Value>(&event.data) else {
                continue;
            };
            after = value["cursor"].as_u64().unwrap_or(after);
            if id.is_some_and(|id| value["subject"] != id) {
                continue;
            }
            match out {
                Output::Json => output::json_line(&value),
                Output::Text => output::out(&event_line(&value)),
            }
            if id.is_some() && is_terminal_kind(value["kind"].as_str().unwrap_or_default()) {
                return finish(id, client, out).await;
            }
        }
    }
}

/// Say that retention removed the events after `after` up to `resume_from`.
fn warn_skipped(after: u64, resume_from: u64) {
    output::err(&format!(
        "spear: the events after cursor {after} up to {resume_from} were removed by SMS's \
         retention; going on from cursor {resume_from}\n"
    ));
}

/// Whether an event kind ends an execution.
fn is_terminal_kind(kind: &str) -> bool {
    matches!(
        kind,
        "execution.succeeded" | "execution.failed" | "execution.cancelled" | "execution.timed_out"
    )
}

/// With an id of an execution that has ended, print its output.
async fn finish(id: Option<&str>, client: &Client, out: Output) -> Result<i32> {
    let Some(id) = id else { return Ok(0) };
    let e = client
        .get(
            &format!("/api/v1/executions/{id}"),
            Some(Subject::execution(id)),
        )
        .await?;
    if !is_terminal(&e) {
        return Ok(0);
    }
    match out {
        Output::Json => output::json_line(&e),
        Output::Text => {
            let r = &e["result"];
            let mut text = String::new();
            for stream in ["stdout", "stderr"] {
                let body = r[stream].as_str().unwrap_or_default();
                text.push_str(&format!("── {stream} ──\n{body}"));
                if !body.is_empty() && !body.ends_with('\n') {
                    text.push('\n');
                }
            }
            output::out(&text);
        }
    }
    Ok(0)
}

/// `time  cursor  kind  subject  data  by WHO` for people.
fn event_line(e: &Value) -> String {
    let mut data = match &e["data"] {
        Value::Object(o) if o.is_empty() => String::new(),
        Value::Null => String::new(),
        d => d.to_string(),
    };
    if let Some(by) = e["by"].as_str() {
        data = format!("{data}  by {by}").trim_start().to_owned();
    }
    format!(
        "{}  {:>6}  {:<22}  {}  {data}\n",
        time_of(&e["at_ms"]),
        cell(&e["cursor"]),
        cell(&e["kind"]),
        cell(&e["subject"]),
    )
    .replace("  \n", "\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_lines_show_time_cursor_kind_subject_and_data() {
        let e = serde_json::json!({"cursor": 7, "at_ms": 1_700_000_000_000_i64, "kind": "execution.running",
            "subject": "e1", "data": {"node_uuid": "n1"}});
        assert_eq!(
            event_line(&e),
            "2023-11-14 22:13:20       7  execution.running       e1  {\"node_uuid\":\"n1\"}\n"
        );
    }
}
