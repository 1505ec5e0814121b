//! `spear explain EXECUTION_ID`: why an execution went where it went — the scheduling round
//! that placed it (or last offered it), who decided, and every node with its verdict.

use serde_json::Value;

use crate::Output;
use crate::client::{Client, Subject};
use crate::error::Result;
use crate::output::{self, cell, time_of};

/// Run `spear explain`.
pub async fn run(id: &str, client: &Client, out: Output) -> Result<i32> {
    let x = client
        .get(
            &format!("/api/v1/executions/{id}/explain"),
            Some(Subject::execution(id)),
        )
        .await?;
    match out {
        Output::Json => output::json(&x),
        Output::Text => output::out(&text(&x)),
    }
    Ok(0)
}

fn text(x: &Value) -> String {
    let strategy = match x["strategy"].as_str() {
        Some(name) => format!(
            "{name} {} ({})",
            cell(&x["strategy_version"]),
            cell(&x["strategy_form"])
        ),
        None => "none active".to_owned(),
    };
    let decided = if x["fallback"] == true {
        format!("the built-in fallback: {}", cell(&x["fallback_reason"]))
    } else {
        strategy.clone()
    };
    let outcome = match x["outcome"].as_str() {
        Some("assigned") => format!("assigned to {}", cell(&x["node_uuid"])),
        Some(o) => format!("{o}: {}", cell(&x["reason"])),
        None => cell(&x["outcome"]),
    };
    let mut text = output::fields(&[
        ("execution_id", cell(&x["execution_id"])),
        (
            "round",
            format!("{} at {}", cell(&x["round"]), time_of(&x["at_ms"])),
        ),
        (
            "queue",
            format!(
                "position {} of the {} taken, waited {} ms",
                cell(&x["queue_position"]),
                cell(&x["batch"]),
                cell(&x["waited_ms"])
            ),
        ),
        ("strategy", strategy),
        ("decided by", decided),
        ("outcome", outcome),
    ]);
    let rows: Vec<Vec<String>> = x["nodes"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|n| {
            let reasons: Vec<String> = n["reasons"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default()
                .iter()
                .map(cell)
                .collect();
            vec![
                cell(&n["node_uuid"]),
                cell(&n["verdict"]),
                cell(&n["active"]),
                cell(&n["available"]["cpu_millis"]),
                cell(&n["available"]["memory_mb"]),
                reasons.join("; "),
            ]
        })
        .collect();
    text.push('\n');
    text.push_str(&output::table(
        &[
            "NODE", "VERDICT", "ACTIVE", "CPU FREE", "MEM FREE", "WHY NOT",
        ],
        &rows,
    ));
    text
}
