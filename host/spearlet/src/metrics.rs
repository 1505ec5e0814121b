//! `GET /metrics` of the Spearlet, in Prometheus' text format: executions running, instances by
//! state, invocations by tier, results SMS has not acknowledged yet, executor failures, whether
//! the assignment stream is open, and the plugin runtime's own metrics.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

use crate::agent::Agent;
use crate::pool::Phase;

/// Executor failures (an executor's own error, not a workload's failure) by executor. Its keys
/// are the executors the configuration loads: bounded.
#[derive(Debug, Default)]
pub struct ExecutorFailures(Mutex<BTreeMap<String, u64>>);

impl ExecutorFailures {
    /// Count one failure of `executor`.
    pub fn count(&self, executor: &str) {
        *self
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(executor.to_owned())
            .or_default() += 1;
    }

    fn snapshot(&self) -> BTreeMap<String, u64> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

fn metric(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// The whole `/metrics` text.
pub async fn render(agent: &Agent) -> String {
    let mut out = String::new();
    metric(
        &mut out,
        "spearlet_running_executions",
        "gauge",
        "Executions running on this node",
    );
    let _ = writeln!(out, "spearlet_running_executions {}", agent.running().len());
    metric(
        &mut out,
        "spearlet_instances",
        "gauge",
        "Task instances on this node, by state",
    );
    let instances = agent.pools.instances();
    for label in Phase::LABELS {
        let n = instances
            .iter()
            .filter(|i| i.state.label() == label)
            .count();
        let _ = writeln!(out, "spearlet_instances{{state=\"{label}\"}} {n}");
    }
    let counters = agent.pools.counters();
    metric(
        &mut out,
        "spearlet_invocations_total",
        "counter",
        "Executions by the tier of the instance that served them (hot, warm, cold: a new one)",
    );
    for (tier, n) in [
        ("hot", counters.hot),
        ("warm", counters.warm),
        ("cold", counters.cold),
    ] {
        let _ = writeln!(out, "spearlet_invocations_total{{tier=\"{tier}\"}} {n}");
    }
    metric(
        &mut out,
        "spearlet_instances_reclaimed_total",
        "counter",
        "Instances stopped by the reclamation policy",
    );
    let _ = writeln!(
        out,
        "spearlet_instances_reclaimed_total {}",
        counters.reclaimed
    );
    metric(
        &mut out,
        "spearlet_instances_evicted_total",
        "counter",
        "Instances removed to keep the node under spearlet.limits.max_instances",
    );
    let _ = writeln!(out, "spearlet_instances_evicted_total {}", counters.evicted);
    metric(
        &mut out,
        "spearlet_instances_paused_total",
        "counter",
        "Idle instances paused (spearlet.functions.pause_idle_ms)",
    );
    let _ = writeln!(out, "spearlet_instances_paused_total {}", counters.paused);
    metric(
        &mut out,
        "spearlet_instances_resumed_total",
        "counter",
        "Paused instances resumed for an invocation",
    );
    let _ = writeln!(out, "spearlet_instances_resumed_total {}", counters.resumed);
    metric(
        &mut out,
        "spearlet_reports_pending",
        "gauge",
        "Results not yet acknowledged by SMS (growing: SMS is unreachable)",
    );
    match agent.reporter.backlog().await {
        Ok(n) => {
            let _ = writeln!(out, "spearlet_reports_pending {n}");
        }
        Err(e) => tracing::warn!(error = %e, "cannot count the pending reports"),
    }
    metric(
        &mut out,
        "spearlet_executor_failures_total",
        "counter",
        "Executions an executor failed (its own error, not the workload's), by executor",
    );
    let failures = agent.executor_failures.snapshot();
    for name in agent.executors.get().all().map(|l| &l.name) {
        let n = failures.get(name).copied().unwrap_or(0);
        let _ = writeln!(
            out,
            "spearlet_executor_failures_total{{executor=\"{name}\"}} {n}"
        );
    }
    metric(
        &mut out,
        "spearlet_sms_connected",
        "gauge",
        "1 while the assignment stream from SMS is open",
    );
    let _ = writeln!(
        out,
        "spearlet_sms_connected {}",
        u8::from(*agent.connected.borrow())
    );
    out.push_str(&agent.plugins.telemetry().render());
    out
}
