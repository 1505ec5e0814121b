//! The smoke test of `spear plugin check`: the plugin held in a guarded slot, exactly as a host
//! holds it — the same activation (configure), the same validation of every answer, the same
//! state hand-over at a swap — over a small synthetic cluster. What a host would count as a
//! failure, the check refuses.

use std::sync::Arc;

use spear_plugin_api::{
    Decision, InstanceState, InstanceStats, Label, NodePressure, PluginKind, QueueStats, Request,
    Resources, ScaleLimits, ScaleNode, ScaleView, Target,
};

use crate::error::{CallFailure, Error};
use crate::limits::Limits;
use crate::plugin::LoadedPlugin;
use crate::slot::{AutoscalerSlot, ReclaimerSlot, StrategySlot};
use crate::telemetry::{EventKind, Telemetry};

/// Activate `plugin` with `config` in a slot of its kind, make a few decisions, swap it for itself
/// (state hand-over), and report what happened — or the first failure a host would have counted.
pub fn smoke_test(
    plugin: &LoadedPlugin,
    config: &str,
    limits: Arc<Limits>,
) -> Result<String, String> {
    let telemetry = Arc::new(Telemetry::new());
    let summary = match plugin.info.kind {
        PluginKind::SchedulingStrategy => {
            let slot = StrategySlot::new("check", limits, telemetry.clone());
            slot.activate(plugin, config).map_err(activation)?;
            slot.upsert((1..=3).map(synthetic_target).collect());
            let requests: Vec<Request> = (1..=6).map(synthetic_request).collect();
            let decisions = slot.place(&requests);
            first_failure(&telemetry)?;
            let handover = slot.activate(plugin, config).map_err(|e| e.to_string())?;
            first_failure(&telemetry)?;
            let shown: Vec<String> = decisions
                .iter()
                .map(|d| match d {
                    Decision::Assign(id) => id.to_string(),
                    Decision::Reject(_) => "-".into(),
                })
                .collect();
            format!(
                "placed 6 requests on 3 targets → [{}]; swapped for itself: {handover}",
                shown.join(", ")
            )
        }
        PluginKind::ReclamationPolicy => {
            let slot = ReclaimerSlot::new("check", limits, telemetry.clone());
            slot.activate(plugin, config).map_err(activation)?;
            let instances: Vec<InstanceStats> = (1..=4).map(synthetic_instance).collect();
            let node = NodePressure {
                memory_total_bytes: 1 << 30,
                memory_used_bytes: 1 << 29,
                cpu_load_permille: 300,
                now_ms: 0,
            };
            let chosen = slot.select(&instances, &node);
            first_failure(&telemetry)?;
            let handover = slot.activate(plugin, config).map_err(|e| e.to_string())?;
            first_failure(&telemetry)?;
            format!("selected {chosen:?} of 4 instances; swapped for itself: {handover}")
        }
        PluginKind::Autoscaler => {
            let slot = AutoscalerSlot::new("check", limits, telemetry.clone());
            slot.activate(plugin, config).map_err(activation)?;
            let mut answers = Vec::new();
            for view in synthetic_views() {
                let answer = slot.decide(&view);
                first_failure(&telemetry)?;
                answers.push(answer.map_or("-".into(), |d| {
                    format!("{} (drain {})", d.desired, d.drain.len())
                }));
            }
            let handover = slot.activate(plugin, config).map_err(|e| e.to_string())?;
            first_failure(&telemetry)?;
            format!(
                "sized a pool of 2 (1 to 4 nodes) for a backlog, a busy and an idle cluster → \
                 [{}]; swapped for itself: {handover}",
                answers.join(", ")
            )
        }
        PluginKind::StorageBackend => storage_smoke_test(plugin, config)?,
        PluginKind::Executor => executor_smoke_test(plugin, config)?,
    };
    Ok(summary)
}

/// Configure an executor with `config`, read its capabilities, and ask it about a handle it never
/// gave (it must say `unknown`): nothing is run, as running work has effects outside the check.
fn executor_smoke_test(plugin: &LoadedPlugin, config: &str) -> Result<String, String> {
    use spear_plugin_api::executor::ExecState;
    let mut executor = plugin.executor().map_err(|e| e.to_string())?;
    executor
        .configure(config)
        .map_err(|e| format!("configure refused: {e}"))?;
    let c = executor.capabilities();
    if c.executable_type.is_empty() {
        // A component whose `capabilities` call fails is taken as running nothing (the failure
        // is logged): either way the host would give it no work.
        return Err(
            "its capabilities name no executable type (or the capabilities call failed: see the \
             log)"
                .into(),
        );
    }
    let handle = format!("spear-check-{}", std::process::id());
    match executor.inspect(&handle) {
        Ok(ExecState::Unknown) => {}
        Ok(other) => {
            return Err(format!(
                "asked about a handle it never gave, it answered {other:?}, not unknown"
            ));
        }
        Err(e) => return Err(format!("inspect failed: {e}")),
    }
    let flags: Vec<&str> = [
        ("signals", c.signals),
        ("recover", c.recover),
        ("memory limit", c.memory_limit),
        ("cpu limit", c.cpu_limit),
        ("network isolation", c.network_isolation),
        ("instances", c.instances),
        ("pause", c.pause),
    ]
    .into_iter()
    .filter_map(|(name, on)| on.then_some(name))
    .collect();
    Ok(format!(
        "configured; runs executable type `{}` ({}); an unknown handle is unknown (nothing run)",
        c.executable_type,
        if flags.is_empty() {
            "no optional capabilities".to_owned()
        } else {
            flags.join(", ")
        }
    ))
}

/// Open a storage backend with `config` and run the contract's operations on keys under a
/// prefix of this run's own, `spear-check/<nanoseconds>/` (removed again at the end): put, get,
/// scan, a batch with a check that holds and one that does not, compare-and-swap, delete.
fn storage_smoke_test(plugin: &LoadedPlugin, config: &str) -> Result<String, String> {
    let mut store = plugin.storage().map_err(|e| e.to_string())?;
    store
        .open(config)
        .map_err(|e| format!("open refused: {e}"))?;
    let failed = |what: &str, e: spear_plugin_api::PluginError| format!("{what} failed: {e}");
    let run = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let prefix = format!("spear-check/{run}/").into_bytes();
    let key = |i: u32| [prefix.as_slice(), i.to_string().as_bytes()].concat();
    for i in 0..3 {
        store
            .put(&key(i), format!("value {i}").as_bytes())
            .map_err(|e| failed("put", e))?;
    }
    let read = store.get(&key(1)).map_err(|e| failed("get", e))?;
    if read.as_deref() != Some(&b"value 1"[..]) {
        return Err(format!("get answered {read:?} for what put wrote"));
    }
    let rows = store
        .scan(&prefix, None, 10)
        .map_err(|e| failed("scan", e))?;
    let keys: Vec<Vec<u8>> = rows.into_iter().map(|(k, _)| k).collect();
    if keys != [key(0), key(1), key(2)] {
        return Err(format!(
            "scan answered {} keys, not the 3 written",
            keys.len()
        ));
    }
    let check = |value: &str| spear_plugin_api::storage::BatchOp::Check {
        key: key(0),
        value: Some(value.as_bytes().to_vec()),
    };
    let put = spear_plugin_api::storage::BatchOp::Put {
        key: key(3),
        value: b"batched".to_vec(),
    };
    let refused = store
        .batch(&[check("not its value"), put.clone()])
        .map_err(|e| failed("batch", e))?;
    let applied = store
        .batch(&[check("value 0"), put])
        .map_err(|e| failed("batch", e))?;
    if refused || !applied || store.get(&key(3)).map_err(|e| failed("get", e))?.is_none() {
        return Err("a batch's check was not honoured".into());
    }
    let swapped = store
        .compare_and_swap(&key(3), Some(b"batched"), Some(b"swapped"))
        .map_err(|e| failed("compare-and-swap", e))?;
    if !swapped {
        return Err("compare-and-swap did not swap the value it was given".into());
    }
    for i in 0..4 {
        store.delete(&key(i)).map_err(|e| failed("delete", e))?;
    }
    let left = store
        .scan(&prefix, None, 10)
        .map_err(|e| failed("scan", e))?;
    if !left.is_empty() {
        return Err(format!("{} keys left after delete", left.len()));
    }
    let limits = store.limits();
    Ok(format!(
        "opened; put, got and scanned 3 keys; a batch refused on a failed check and applied on \
         one that held; compare-and-swap; deleted all (limits: {} ops, {} bytes a batch)",
        limits.max_ops, limits.max_bytes
    ))
}

/// Why activation failed, as the host would say it.
fn activation(e: Error) -> String {
    match e {
        Error::Call {
            failure: failure @ CallFailure::Plugin(_),
            ..
        } => format!("configure refused: {failure}"),
        e => e.to_string(),
    }
}

/// The first failure the slot counted, as the host would log it.
fn first_failure(telemetry: &Telemetry) -> Result<(), String> {
    match telemetry
        .events()
        .into_iter()
        .find(|e| e.kind == EventKind::CallFailed)
    {
        Some(e) => Err(e.message),
        None => Ok(()),
    }
}

fn synthetic_target(id: u64) -> Target {
    let r = Resources {
        cpu_millis: 2000,
        memory_mb: 2048,
        disk_mb: 10_000,
    };
    Target {
        id,
        name: format!("node-{id}"),
        labels: vec![Label::new("zone", format!("z{id}"))],
        capacity: r,
        available: r,
        active: 0,
        weight: 1,
        healthy: true,
    }
}

fn synthetic_request(id: u64) -> Request {
    Request {
        id,
        task: "check".into(),
        labels: vec![Label::new("app", "check")],
        needs: Resources {
            cpu_millis: 100,
            memory_mb: 64,
            disk_mb: 0,
        },
        required: vec![],
        preferred: vec![],
    }
}

fn synthetic_instance(id: u64) -> InstanceStats {
    InstanceStats {
        id,
        task: "check".into(),
        state: InstanceState::Ready,
        idle_ms: id * 200_000,
        age_ms: id * 300_000,
        memory_bytes: id << 26,
        invocations: 10,
        errors: 0,
        recent_errors: 0,
        recent_invocations: 10,
    }
}

/// A pool of two managed nodes (one place each) and one other node, under a backlog of 12
/// waiting a minute, busy with nothing waiting, and idle for ten minutes.
fn synthetic_views() -> Vec<ScaleView> {
    let node = |id: &str, managed: bool, running: u32, idle_ms: u64| ScaleNode {
        id: id.into(),
        managed,
        registered: true,
        healthy: true,
        draining: false,
        slots: 1,
        running,
        idle_ms,
        cpu_millis: 2000,
        memory_mb: 2048,
    };
    let view = |depth: u32, oldest_wait_ms: u64, running: u32, idle_ms: u64| ScaleView {
        now_ms: 1_700_000_000_000,
        queue: QueueStats {
            depth,
            oldest_wait_ms,
            cpu_millis: u64::from(depth) * 100,
            memory_mb: u64::from(depth) * 64,
        },
        nodes: vec![
            node("node-1", true, running, idle_ms),
            node("node-2", true, running, idle_ms),
            node("node-3", false, running, idle_ms),
        ],
        limits: ScaleLimits {
            min: 1,
            max: 4,
            scale_up_threshold: 4,
            scale_down_delay_ms: 300_000,
            cooldown_ms: 60_000,
        },
        since_last_action_ms: u64::MAX,
    };
    vec![
        view(12, 60_000, 1, 0),
        view(0, 0, 1, 0),
        view(0, 0, 0, 600_000),
    ]
}
