//! `spear task register|list|show|delete`: registered tasks.

use serde_json::{Value, json};

use crate::Output;
use crate::client::{Client, Subject};
use crate::error::Result;
use crate::exec::{ExecutableArgs, NeedsArgs, map, parse_kv};
use crate::output::{self, cell, time_of};

const PRIORITIES: [&str; 4] = ["low", "normal", "high", "urgent"];

/// `spear task …`.
#[derive(Debug, clap::Subcommand)]
pub enum TaskCommand {
    /// Register a task; prints its id.
    Register(Box<RegisterArgs>),
    /// List tasks.
    List {
        /// Only tasks with this status.
        #[arg(long, value_parser = ["registered", "active", "inactive"])]
        status: Option<String>,
        /// Only tasks with this priority.
        #[arg(long, value_parser = PRIORITIES)]
        priority: Option<String>,
    },
    /// Show one task in full.
    Show {
        /// The task's id (see `spear task list`).
        task_id: String,
    },
    /// Delete a task.
    Delete {
        /// The task's id (see `spear task list`).
        task_id: String,
    },
}

/// Arguments of `spear task register`.
#[derive(Debug, clap::Args)]
pub struct RegisterArgs {
    /// The task's name.
    #[arg(value_name = "TASK_NAME")]
    pub task_name: String,
    #[command(flatten)]
    pub executable: ExecutableArgs,
    /// Description.
    #[arg(long, default_value = "")]
    pub description: String,
    /// Urgency of its executions.
    #[arg(long, value_parser = PRIORITIES)]
    pub priority: Option<String>,
    /// Pin its executions to this node (uuid).
    #[arg(long = "node")]
    pub node_uuid: Option<String>,
    /// The endpoint the task serves.
    #[arg(long, default_value = "")]
    pub endpoint: String,
    /// Version.
    #[arg(long, default_value = "")]
    pub version: String,
    /// A capability (repeatable).
    #[arg(long = "capability")]
    pub capabilities: Vec<String>,
    /// A task label, KEY=VALUE (repeatable).
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse_kv)]
    pub labels: Vec<(String, String)>,
    /// A node label its node must carry, KEY=VALUE (repeatable).
    #[arg(long = "require-label", value_name = "KEY=VALUE", value_parser = parse_kv)]
    pub required_labels: Vec<(String, String)>,
    /// A node label preferred, KEY=VALUE (repeatable).
    #[arg(long = "prefer-label", value_name = "KEY=VALUE", value_parser = parse_kv)]
    pub preferred_labels: Vec<(String, String)>,
    #[command(flatten)]
    pub needs: NeedsArgs,
}

/// Run a task command.
pub async fn run(cmd: TaskCommand, client: &Client, output: Output) -> Result<i32> {
    match cmd {
        TaskCommand::Register(args) => {
            let mut body = json!({
                "name": args.task_name,
                "executable": args.executable.build(client).await?,
                "description": args.description,
                "priority": args.priority,
                "node_uuid": args.node_uuid,
                "endpoint": args.endpoint,
                "version": args.version,
                "capabilities": args.capabilities,
                "labels": map(&args.labels),
                "required_labels": map(&args.required_labels),
                "preferred_labels": map(&args.preferred_labels),
            });
            if let Some(needs) = args.needs.to_json() {
                body["needs"] = needs;
            }
            let task = client.post("/api/v1/tasks", &body, None).await?;
            match output {
                Output::Json => output::json(&task),
                Output::Text => output::out(&format!(
                    "{}\nregistered task `{}`; run it with `spear run {}`\n",
                    cell(&task["task_id"]),
                    cell(&task["name"]),
                    cell(&task["task_id"])
                )),
            }
        }
        TaskCommand::List { status, priority } => {
            let mut query = Vec::new();
            if let Some(s) = status {
                query.push(format!("status={s}"));
            }
            if let Some(p) = priority {
                query.push(format!("priority={p}"));
            }
            let path = if query.is_empty() {
                "/api/v1/tasks".to_owned()
            } else {
                format!("/api/v1/tasks?{}", query.join("&"))
            };
            let v = client.get(&path, None).await?;
            match output {
                Output::Json => output::json(&v),
                Output::Text => output::out(&list_text(&v["tasks"])),
            }
        }
        TaskCommand::Show { task_id } => {
            let task = client
                .get(
                    &format!("/api/v1/tasks/{task_id}"),
                    Some(Subject::task(&task_id)),
                )
                .await?;
            match output {
                Output::Json => output::json(&task),
                Output::Text => output::out(&show_text(&task)),
            }
        }
        TaskCommand::Delete { task_id } => {
            // The first delete unregisters (SPEAR's meaning); deleting an unregistered task
            // removes it.
            let answer = client
                .delete_json(
                    &format!("/api/v1/tasks/{task_id}"),
                    Some(Subject::task(&task_id)),
                )
                .await?;
            let removed = answer["message"] == "Task removed";
            match output {
                Output::Json => output::json(&json!({
                    "task_id": task_id,
                    "unregistered": true,
                    "removed": removed,
                })),
                Output::Text if removed => output::out(&format!("removed task {task_id}\n")),
                Output::Text => output::out(&format!(
                    "unregistered task {task_id} (it takes no new executions; delete it again \
                     to remove it)\n"
                )),
            }
        }
    }
    Ok(0)
}

/// `type name uri args…` on one line.
pub fn executable_line(e: &Value) -> String {
    let mut parts = vec![cell(&e["type"])];
    for key in ["name", "uri"] {
        if let Some(s) = e[key].as_str().filter(|s| !s.is_empty()) {
            parts.push(s.to_owned());
        }
    }
    for a in e["args"].as_array().into_iter().flatten() {
        parts.push(a.as_str().unwrap_or_default().to_owned());
    }
    parts.join(" ")
}

fn list_text(tasks: &Value) -> String {
    let tasks = tasks.as_array().cloned().unwrap_or_default();
    if tasks.is_empty() {
        return "no tasks; register one with `spear task register NAME --type … --name …`\n".into();
    }
    let rows: Vec<Vec<String>> = tasks
        .iter()
        .map(|t| {
            vec![
                cell(&t["task_id"]),
                cell(&t["name"]),
                cell(&t["status"]),
                cell(&t["priority"]),
                executable_line(&t["executable"]),
            ]
        })
        .collect();
    output::table(
        &["TASK_ID", "NAME", "STATUS", "PRIORITY", "EXECUTABLE"],
        &rows,
    )
}

fn show_text(t: &Value) -> String {
    output::fields(&[
        ("task_id", cell(&t["task_id"])),
        ("name", cell(&t["name"])),
        ("description", cell(&t["description"])),
        ("status", cell(&t["status"])),
        ("priority", cell(&t["priority"])),
        ("executable", executable_line(&t["executable"])),
        ("env", cell(&t["executable"]["env"])),
        ("node", cell(&t["node_uuid"])),
        ("endpoint", cell(&t["endpoint"])),
        ("version", cell(&t["version"])),
        ("capabilities", cell(&t["capabilities"])),
        ("labels", cell(&t["labels"])),
        ("needs", cell(&t["needs"])),
        ("required labels", cell(&t["required_labels"])),
        ("preferred labels", cell(&t["preferred_labels"])),
        ("registered", time_of(&t["registered_at_ms"])),
    ])
}
