//! `spear invoke TASK --function F [--data TEXT | --data @FILE | --data @-]`: run a function of a
//! task on a live instance of a node SMS picks (docs/functions.md) and print its output.

use std::time::Duration;

use base64::Engine;
use serde_json::json;

use crate::Output;
use crate::client::{Client, Subject};
use crate::error::{CliError, Result};
use crate::output;

/// Largest payload read from a file or standard input (SMS's limit).
const MAX_PAYLOAD: u64 = 16 << 20;

/// Arguments of `spear invoke`.
#[derive(Debug, clap::Args)]
pub struct InvokeArgs {
    /// The task (see `spear task list`).
    #[arg(value_name = "TASK_ID")]
    pub task_id: String,
    /// The function to run.
    #[arg(long, short = 'f')]
    pub function: String,
    /// The payload: text, `@FILE` for a file's bytes, `@-` for standard input (default: empty).
    #[arg(long, short = 'd')]
    pub data: Option<String>,
    /// The deadline in ms (SMS's default: 30000; at most 300000).
    #[arg(long)]
    pub timeout_ms: Option<u64>,
}

/// The payload `data` names.
fn payload(data: Option<&str>) -> Result<Vec<u8>> {
    use std::io::Read;
    let Some(data) = data else {
        return Ok(Vec::new());
    };
    let Some(path) = data.strip_prefix('@') else {
        return Ok(data.as_bytes().to_vec());
    };
    let mut bytes = Vec::new();
    let read = if path == "-" {
        std::io::stdin()
            .lock()
            .take(MAX_PAYLOAD + 1)
            .read_to_end(&mut bytes)
    } else {
        std::fs::File::open(path).and_then(|f| f.take(MAX_PAYLOAD + 1).read_to_end(&mut bytes))
    };
    read.map_err(|e| CliError::io(path, e))?;
    if bytes.len() as u64 > MAX_PAYLOAD {
        return Err(CliError::Usage(format!(
            "{path}: a payload is at most {MAX_PAYLOAD} bytes"
        )));
    }
    Ok(bytes)
}

/// Invoke, print the output (its bytes as they are; `--output json`: the whole answer).
pub async fn run(args: InvokeArgs, client: &Client, out: Output) -> Result<i32> {
    let payload = payload(args.data.as_deref())?;
    let mut body = json!({
        "function": args.function,
        "payload_base64": base64::engine::general_purpose::STANDARD.encode(&payload),
    });
    if let Some(ms) = args.timeout_ms {
        body["timeout_ms"] = json!(ms);
    }
    // SMS holds the request until the node answers, up to the deadline (30 s by default).
    let held = Duration::from_millis(args.timeout_ms.filter(|ms| *ms > 0).unwrap_or(30_000));
    let answer = client
        .post_held(
            &format!("/api/v1/tasks/{}/invoke", args.task_id),
            &body,
            Some(Subject::task(&args.task_id)),
            held,
        )
        .await?;
    match out {
        Output::Json => output::json(&answer),
        Output::Text => {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(answer["output_base64"].as_str().unwrap_or_default())
                .map_err(|e| CliError::Protocol {
                    url: format!("/api/v1/tasks/{}/invoke", args.task_id),
                    reason: format!("output_base64 is not base64: {e}"),
                })?;
            output::out_bytes(&bytes);
            output::err(&format!(
                "invocation {} on node {} ({}, {}, {} µs)",
                answer["invocation_id"].as_str().unwrap_or_default(),
                answer["node_uuid"].as_str().unwrap_or_default(),
                answer["instance"].as_str().unwrap_or_default(),
                answer["tier"].as_str().unwrap_or_default(),
                answer["duration_us"],
            ));
        }
    }
    Ok(0)
}
