//! Structured events and Prometheus metrics for every load, refusal, swap, failure and quarantine.
//!
//! Each event is logged through `tracing`, kept in a bounded history for the API, and counted.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry, TextEncoder};
use serde::Serialize;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum EventKind {
    /// A file was loaded and registered.
    Loaded,
    /// A file was refused.
    Refused,
    /// A file vanished and its plugin was unregistered.
    Unregistered,
    /// A plugin became active in a role.
    Activated,
    /// A new version of a plugin could not be activated; the running one stays.
    ActivationFailed,
    /// State saved by the old version was not taken over by the new one.
    StateNotCarried,
    /// A configuration was applied.
    ConfigApplied,
    /// A configuration was rejected; the old one stays.
    ConfigRejected,
    /// A configuration changed keys that only a restart applies.
    RestartRequired,
    /// A call failed (trap, deadline, memory, invalid answer); the fallback decided.
    CallFailed,
    /// A plugin was quarantined after consecutive failures.
    Quarantined,
}

impl EventKind {
    fn as_str(self) -> &'static str {
        match self {
            EventKind::Loaded => "loaded",
            EventKind::Refused => "refused",
            EventKind::Unregistered => "unregistered",
            EventKind::Activated => "activated",
            EventKind::ActivationFailed => "activation-failed",
            EventKind::StateNotCarried => "state-not-carried",
            EventKind::ConfigApplied => "config-applied",
            EventKind::ConfigRejected => "config-rejected",
            EventKind::RestartRequired => "restart-required",
            EventKind::CallFailed => "call-failed",
            EventKind::Quarantined => "quarantined",
        }
    }
}

/// One structured event.
#[derive(Debug, Clone, Serialize)]
pub struct PluginEvent {
    /// Sequence number, increasing.
    pub seq: u64,
    /// Milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// What happened.
    pub kind: EventKind,
    /// The plugin concerned, if known.
    pub plugin: Option<String>,
    /// The file concerned, if any.
    pub file: Option<PathBuf>,
    /// sha256 of the file concerned, if known.
    pub sha256: Option<String>,
    /// Details for operators.
    pub message: String,
}

const HISTORY: usize = 1024;

/// Event history and metrics of one plugin host.
pub struct Telemetry {
    seq: AtomicU64,
    history: Mutex<VecDeque<PluginEvent>>,
    registry: Registry,
    events: IntCounterVec,
    pub(crate) calls: IntCounterVec,
    pub(crate) call_seconds: HistogramVec,
    pub(crate) failures: IntCounterVec,
    pub(crate) fallback_decisions: IntCounterVec,
    pub(crate) reloads: IntCounterVec,
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Telemetry")
    }
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Default for Telemetry {
    fn default() -> Self {
        Self::new()
    }
}

impl Telemetry {
    /// Fresh history and metrics in a new Prometheus registry.
    pub fn new() -> Self {
        let registry = Registry::new();
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry
                .register(Box::new(c.clone()))
                .expect("unique metric");
            c
        };
        let events = counter(
            "spear_plugin_events_total",
            "Plugin events by kind",
            &["kind"],
        );
        let calls = counter(
            "spear_plugin_calls_total",
            "Calls into plugins",
            &["plugin", "call"],
        );
        let failures = counter(
            "spear_plugin_failures_total",
            "Failed plugin calls (trap, deadline, memory, error, invalid answer, host)",
            &["plugin", "reason"],
        );
        let fallback_decisions = counter(
            "spear_plugin_fallback_decisions_total",
            "Decisions made by the built-in fallback",
            &["role"],
        );
        let reloads = counter(
            "spear_plugin_reloads_total",
            "Reloads by outcome",
            &["outcome"],
        );
        let call_seconds = HistogramVec::new(
            HistogramOpts::new("spear_plugin_call_seconds", "Latency of plugin calls").buckets(
                vec![
                    1e-6, 5e-6, 2e-5, 1e-4, 5e-4, 1e-3, 5e-3, 1e-2, 5e-2, 0.25, 1.0,
                ],
            ),
            &["plugin", "call"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(call_seconds.clone()))
            .expect("unique metric");
        Self {
            seq: AtomicU64::new(0),
            history: Mutex::new(VecDeque::with_capacity(HISTORY)),
            registry,
            events,
            calls,
            call_seconds,
            failures,
            fallback_decisions,
            reloads,
        }
    }

    /// Record an event: log it, keep it, count it.
    pub fn emit(
        &self,
        kind: EventKind,
        plugin: Option<&str>,
        file: Option<&std::path::Path>,
        sha256: Option<&str>,
        message: impl Into<String>,
    ) {
        let event = PluginEvent {
            seq: self.seq.fetch_add(1, Ordering::Relaxed) + 1,
            at_ms: now_ms(),
            kind,
            plugin: plugin.map(str::to_owned),
            file: file.map(Into::into),
            sha256: sha256.map(str::to_owned),
            message: message.into(),
        };
        let (k, p, f, s, m) = (
            kind.as_str(),
            event.plugin.as_deref().unwrap_or("-"),
            event
                .file
                .as_ref()
                .map(|f| f.display().to_string())
                .unwrap_or_default(),
            event.sha256.as_deref().unwrap_or("-"),
            &event.message,
        );
        match kind {
            EventKind::Refused
            | EventKind::ActivationFailed
            | EventKind::StateNotCarried
            | EventKind::ConfigRejected
            | EventKind::CallFailed
            | EventKind::Quarantined
            | EventKind::RestartRequired => {
                tracing::warn!(event = k, plugin = p, file = %f, sha256 = s, "{m}")
            }
            _ => tracing::info!(event = k, plugin = p, file = %f, sha256 = s, "{m}"),
        }
        self.events.with_label_values(&[k]).inc();
        let mut history = self.history.lock().unwrap_or_else(|p| p.into_inner());
        if history.len() == HISTORY {
            history.pop_front();
        }
        history.push_back(event);
    }

    /// Events kept, oldest first.
    pub fn events(&self) -> Vec<PluginEvent> {
        self.history
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    /// How many events of `kind` were recorded.
    pub fn count(&self, kind: EventKind) -> u64 {
        self.events.with_label_values(&[kind.as_str()]).get()
    }

    /// Failures counted for `plugin`, all reasons.
    pub fn failures_of(&self, plugin: &str) -> u64 {
        ["trap", "deadline", "memory", "error", "invalid", "host"]
            .iter()
            .map(|r| self.failures.with_label_values(&[plugin, r]).get())
            .sum()
    }

    /// Decisions made by the fallback in `role`.
    pub fn fallback_decisions_of(&self, role: &str) -> u64 {
        self.fallback_decisions.with_label_values(&[role]).get()
    }

    /// The Prometheus registry holding these metrics (hosts may add theirs).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Metrics in the Prometheus text format.
    pub fn render(&self) -> String {
        TextEncoder::new()
            .encode_to_string(&self.registry.gather())
            .unwrap_or_default()
    }
}
