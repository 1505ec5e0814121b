//! Live instances of a task for its invocations: its instance bounds (`spear.min_instances`,
//! `spear.max_instances`), starting one through its executor, and warming a task up ahead of
//! its invocations.

use std::sync::Arc;

use spear_plugin_api::executor::InstanceSpec;
use spear_proto::v1;

use super::InvokeError;
use crate::agent::Agent;
use crate::error::Error;
use crate::executors::Loaded;
use crate::pool::{Made, Runtime, Starting};

/// A task's own instance bounds, from its metadata: `spear.min_instances` (kept Ready, started
/// ahead) and `spear.max_instances` (at most `spearlet.limits.max_instances_per_task`).
#[derive(Debug, Clone, Copy)]
pub(super) struct Sizes {
    pub(super) min: usize,
    pub(super) max: Option<usize>,
}

impl Sizes {
    pub(super) fn of(task: &v1::Task, node_max: usize) -> Result<Self, InvokeError> {
        let read = |key: &str, lo: usize| -> Result<Option<usize>, InvokeError> {
            match task.metadata.get(key) {
                None => Ok(None),
                Some(v) => match v.parse::<usize>() {
                    Ok(n) if (lo..=node_max).contains(&n) => Ok(Some(n)),
                    _ => Err(InvokeError::Precondition(format!(
                        "task {}'s metadata {key} `{v}` is not a number between {lo} and \
                         {node_max} (spearlet.limits.max_instances_per_task)",
                        task.task_id
                    ))),
                },
            }
        };
        let min = read("spear.min_instances", 0)?.unwrap_or(0);
        let max = read("spear.max_instances", 1)?;
        if max.is_some_and(|m| m < min) {
            return Err(InvokeError::Precondition(format!(
                "task {}'s spear.min_instances ({min}) is over its spear.max_instances",
                task.task_id
            )));
        }
        Ok(Self { min, max })
    }
}

/// Start instances of task `task_id` until it has `want` (within its bounds), before any
/// invocation needs them; how many it has then.
pub async fn warm(agent: &Arc<Agent>, task_id: &str, want: usize) -> Result<usize, InvokeError> {
    let task = agent.functions.tasks.get(task_id).await?;
    if task.status == "unregistered" {
        return Err(InvokeError::Precondition(format!(
            "task {task_id} is unregistered"
        )));
    }
    let Some(executable) = task.executable.clone() else {
        return Err(InvokeError::Precondition(format!(
            "task {task_id} has no executable"
        )));
    };
    let loaded = agent
        .executors
        .get()
        .for_type(&executable.r#type)
        .map_err(InvokeError::Precondition)?
        .clone();
    if !loaded.capabilities.instances {
        return Err(InvokeError::Precondition(format!(
            "the {} executor keeps no long-lived instances",
            loaded.name
        )));
    }
    let sizes = Sizes::of(
        &task,
        agent.config.spearlet.limits.max_instances_per_task as usize,
    )?;
    let key = format!("fn:{task_id}");
    agent.pools.set_floor(&key, sizes.min);
    let init = |starting| start_instance(agent, &loaded, &task, &executable, starting);
    let warmed = agent
        .pools
        .warm(
            &key,
            &executable.r#type,
            init,
            want.max(sizes.min),
            sizes.max,
        )
        .await
        .map_err(|e| InvokeError::Precondition(format!("the instance did not start: {e}")));
    // Started on an executor swapped out meanwhile: they go (and are not counted).
    if agent.retire_replaced().await > 0 {
        return Ok(agent.pools.count(&key));
    }
    warmed
}

/// Start a live instance of `task`: its artifact fetched (the instance Initializing), then its
/// runtime started by `loaded`'s executor (WarmingUp; on a blocking thread: a plugin call).
pub(super) async fn start_instance(
    agent: &Arc<Agent>,
    loaded: &Loaded,
    task: &v1::Task,
    executable: &v1::Executable,
    starting: Starting,
) -> crate::error::Result<Made> {
    let uri = &executable.uri;
    let artifact = if crate::run::fetchable(uri) {
        Some(agent.artifacts.fetch(uri).await?)
    } else {
        None
    };
    starting.warming_up();
    let path = artifact.as_ref().map(|p| p.display().to_string());
    let entry = crate::run::entry_of(executable, path.as_ref());
    // A worker runs in a directory of its own, as an execution's program does.
    let workdir = if executable.r#type == "process" && agent.config.spearlet.limits.private_workdir
    {
        let id = format!("fn-{}", task.task_id);
        let dir = agent.workdirs.create(&id).map_err(|e| {
            Error::Storage(format!("cannot make the worker's working directory: {e}"))
        })?;
        Some(Arc::new(dir))
    } else {
        None
    };
    let limits = &agent.config.spearlet.functions;
    let config: serde_json::Map<String, serde_json::Value> = task
        .config
        .iter()
        .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
        .collect();
    let spec = InstanceSpec {
        instance_id: task.task_id.clone(),
        task: task.task_id.clone(),
        artifact: path,
        entry,
        args: executable.args.clone(),
        env: executable.env.clone().into_iter().collect(),
        working_dir: workdir.as_ref().map(|d| d.path().display().to_string()),
        config: serde_json::Value::Object(config).to_string(),
        memory_limit_mb: task.needs.map(|n| n.memory_mb).unwrap_or(0),
        start_timeout_ms: limits.start_timeout_ms,
        max_payload_bytes: limits.max_payload_bytes,
    };
    let x = loaded.executor.clone();
    let handle = tokio::task::spawn_blocking(move || x.start_instance(&spec))
        .await
        .map_err(|e| Error::Execution(e.to_string()))?
        .map_err(|e| Error::Execution(e.to_string()))?;
    Ok(Made {
        artifact,
        runtime: Some(Runtime {
            executor: loaded.executor.clone(),
            handle,
            workdir,
            pausable: loaded.capabilities.pause,
        }),
    })
}
