//! `spear node list|show`: the Spearlets SMS knows.

use serde_json::Value;

use crate::Output;
use crate::client::{Client, Subject};
use crate::error::Result;
use crate::output::{self, cell, time_of};

/// `spear node …`.
#[derive(Debug, clap::Subcommand)]
pub enum NodeCommand {
    /// List nodes: uuid, status, address, running executions, executors, last heartbeat.
    List {
        /// Only nodes with this status.
        #[arg(long, value_parser = ["active", "unhealthy", "draining", "inactive"])]
        status: Option<String>,
    },
    /// Show one node in full.
    Show {
        /// The node's uuid (see `spear node list`).
        uuid: String,
    },
}

/// Run a node command.
pub async fn run(cmd: NodeCommand, client: &Client, output: Output) -> Result<i32> {
    match cmd {
        NodeCommand::List { status } => {
            let path = match status {
                Some(s) => format!("/api/v1/nodes?status={s}"),
                None => "/api/v1/nodes".into(),
            };
            let v = client.get(&path, None).await?;
            match output {
                Output::Json => output::json(&v),
                Output::Text => output::out(&list_text(&v["nodes"])),
            }
        }
        NodeCommand::Show { uuid } => {
            let v = client
                .get(&format!("/api/v1/nodes/{uuid}"), Some(Subject::node(&uuid)))
                .await?;
            match output {
                Output::Json => output::json(&v),
                Output::Text => output::out(&show_text(&v)),
            }
        }
    }
    Ok(0)
}

fn list_text(nodes: &Value) -> String {
    let nodes = nodes.as_array().cloned().unwrap_or_default();
    if nodes.is_empty() {
        return "no nodes registered; start a Spearlet (./run-dev.sh starts one)\n".into();
    }
    let rows: Vec<Vec<String>> = nodes
        .iter()
        .map(|n| {
            vec![
                cell(&n["uuid"]),
                cell(&n["metadata"]["name"]),
                cell(&n["status"]),
                format!("{}:{}", cell(&n["ip_address"]), cell(&n["port"])),
                cell(&n["running"]),
                cell(&n["executors"]),
                time_of(&n["last_heartbeat_ms"]),
            ]
        })
        .collect();
    output::table(
        &[
            "UUID",
            "NAME",
            "STATUS",
            "ADDRESS",
            "RUNNING",
            "EXECUTORS",
            "LAST HEARTBEAT (UTC)",
        ],
        &rows,
    )
}

fn resources(r: &Value) -> String {
    format!(
        "{} mCPU, {} MiB memory, {} MiB disk",
        cell(&r["cpu_millis"]),
        cell(&r["memory_mb"]),
        cell(&r["disk_mb"])
    )
}

fn show_text(n: &Value) -> String {
    output::fields(&[
        ("uuid", cell(&n["uuid"])),
        ("status", cell(&n["status"])),
        (
            "address",
            format!("{}:{}", cell(&n["ip_address"]), cell(&n["port"])),
        ),
        ("executors", cell(&n["executors"])),
        ("running", cell(&n["running"])),
        ("capacity", resources(&n["capacity"])),
        ("available", resources(&n["available"])),
        ("labels", cell(&n["labels"])),
        ("metadata", cell(&n["metadata"])),
        ("health", cell(&n["health_info"])),
        ("registered", time_of(&n["registered_at_ms"])),
        ("last heartbeat", time_of(&n["last_heartbeat_ms"])),
    ])
}
