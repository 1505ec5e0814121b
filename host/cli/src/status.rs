//! `spear status [EXECUTION_ID]`: one execution, or the cluster at a glance (nodes by status,
//! executions by state, active plugins, recent executions).

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::Output;
use crate::client::{Client, Subject};
use crate::error::Result;
use crate::output::{self, cell, time_of};
use crate::run::failure_note;
use crate::task::executable_line;

/// How many recent executions the summary lists.
const RECENT: usize = 10;

/// Run `spear status`.
pub async fn run(id: Option<String>, client: &Client, out: Output) -> Result<i32> {
    match id {
        Some(id) => one(&id, client, out).await,
        None => summary(client, out).await,
    }
}

async fn one(id: &str, client: &Client, out: Output) -> Result<i32> {
    let e = client
        .get(
            &format!("/api/v1/executions/{id}"),
            Some(Subject::execution(id)),
        )
        .await?;
    match out {
        Output::Json => output::json(&e),
        Output::Text => output::out(&execution_text(&e)),
    }
    Ok(0)
}

fn execution_text(e: &Value) -> String {
    let r = &e["result"];
    let mut pairs = vec![
        ("execution_id", cell(&e["execution_id"])),
        ("state", cell(&e["state"])),
        ("task", cell(&e["task_id"])),
        ("executable", executable_line(&e["executable"])),
        ("priority", cell(&e["priority"])),
        ("node", cell(&e["node_uuid"])),
        (
            "attempt",
            format!("{} of {}", cell(&e["attempt"]), cell(&e["max_attempts"])),
        ),
        ("timeout", format!("{} ms", cell(&e["timeout_ms"]))),
        ("depends on", cell(&e["depends_on"])),
        ("submitted", time_of(&e["submitted_at_ms"])),
        ("updated", time_of(&e["updated_at_ms"])),
        ("error", cell(&e["error"])),
    ];
    if !r.is_null() {
        pairs.push(("exit code", cell(&r["exit_code"])));
        if r["signal"].as_i64().unwrap_or(0) > 0 {
            pairs.push(("signal", cell(&r["signal"])));
        }
        pairs.push(("duration", format!("{} ms", cell(&r["duration_ms"]))));
        let len = |k: &str| r[k].as_str().map_or(0, str::len);
        pairs.push((
            "output",
            format!(
                "{} bytes on stdout, {} on stderr; see `spear logs {}`",
                len("stdout"),
                len("stderr"),
                cell(&e["execution_id"])
            ),
        ));
    }
    let mut text = output::fields(&pairs);
    if let Some(note) = failure_note(e) {
        text.push_str(&format!("{note}\n"));
    }
    text
}

/// Count values of `key` over `items`.
fn count(items: &[Value], key: &str) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for item in items {
        *counts.entry(cell(&item[key])).or_insert(0) += 1;
    }
    counts
}

fn counts_text(counts: &BTreeMap<String, usize>, none: &str) -> String {
    if counts.is_empty() {
        return none.into();
    }
    counts
        .iter()
        .map(|(k, n)| format!("{n} {k}"))
        .collect::<Vec<_>>()
        .join(", ")
}

async fn summary(client: &Client, out: Output) -> Result<i32> {
    // The newest executions, and SMS's count of all of them by state (one page, not the list).
    let newest = format!("/api/v1/executions?order=desc&limit={RECENT}");
    let (nodes, page, plugins) = tokio::try_join!(
        client.get("/api/v1/nodes", None),
        client.get(&newest, None),
        client.get("/api/v1/plugins", None),
    )?;
    let nodes = nodes["nodes"].as_array().cloned().unwrap_or_default();
    let execs = page["executions"].as_array().cloned().unwrap_or_default();
    let by_state: BTreeMap<String, usize> = page["counts"]
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(k, n)| Some((k.clone(), usize::try_from(n.as_u64()?).ok()?)))
        .filter(|(_, n)| *n > 0)
        .collect();
    let total: usize = by_state.values().sum();
    let active: Vec<Value> = plugins["plugins"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| matches!(p["state"].as_str(), Some("active" | "quarantined")))
        .map(|p| json!({"name": p["name"], "kind": p["kind"], "form": p["form"], "version": p["version"], "state": p["state"]}))
        .collect();
    let recent: Vec<Value> = execs
        .iter()
        .take(RECENT)
        .map(|e| {
            json!({
                "execution_id": e["execution_id"],
                "state": e["state"],
                "task_id": e["task_id"],
                "executable": e["executable"],
                "exit_code": e["result"]["exit_code"],
                "submitted_at_ms": e["submitted_at_ms"],
            })
        })
        .collect();
    let by_status = count(&nodes, "status");
    match out {
        Output::Json => output::json(&json!({
            "sms": client.base(),
            "nodes": {"total": nodes.len(), "by_status": by_status},
            "executions": {"total": total, "by_state": by_state},
            "plugins": active,
            "recent": recent,
        })),
        Output::Text => {
            let plugins_line = active
                .iter()
                .map(|p| {
                    let state = match p["state"].as_str() {
                        Some("quarantined") => ", QUARANTINED",
                        _ => "",
                    };
                    format!(
                        "{} {} ({}{state})",
                        cell(&p["name"]),
                        cell(&p["version"]),
                        cell(&p["kind"])
                    )
                })
                .collect::<Vec<_>>()
                .join(", ");
            let mut text = output::fields(&[
                ("SMS", client.base().to_owned()),
                ("nodes", counts_text(&by_status, "none registered")),
                ("executions", counts_text(&by_state, "none yet")),
                (
                    "plugins",
                    if active.is_empty() {
                        "none active".into()
                    } else {
                        plugins_line
                    },
                ),
            ]);
            if !recent.is_empty() {
                let rows: Vec<Vec<String>> = recent
                    .iter()
                    .map(|e| {
                        vec![
                            cell(&e["execution_id"]),
                            cell(&e["state"]),
                            cell(&e["exit_code"]),
                            match e["task_id"].as_str() {
                                Some(t) => format!("task {t}"),
                                None => executable_line(&e["executable"]),
                            },
                            time_of(&e["submitted_at_ms"]),
                        ]
                    })
                    .collect();
                text.push_str("\nrecent executions:\n");
                text.push_str(&output::table(
                    &["EXECUTION_ID", "STATE", "EXIT", "WHAT", "SUBMITTED (UTC)"],
                    &rows,
                ));
            }
            output::out(&text);
        }
    }
    Ok(0)
}
