//! `[spearlet.functions]`: invocations of tasks' functions on live instances
//! (`spearlet.FunctionService`, docs/functions.md).

use serde::{Deserialize, Serialize};
use spear_config::Problems;

/// `[spearlet.functions]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct FunctionLimits {
    /// The deadline of an invocation that gives none, in ms (1 to `max_timeout_ms`).
    pub default_timeout_ms: u64,
    /// The longest deadline an invocation may ask for, in ms (1 to 3,600,000).
    pub max_timeout_ms: u64,
    /// The largest payload, and output, of an invocation, in bytes (1 to 268,435,456).
    pub max_payload_bytes: u64,
    /// Time an instance has to start and initialise, in ms (1 to 600,000).
    pub start_timeout_ms: u64,
    /// Asynchronous invocations kept (running, or ended and not yet expired) at once; past it an
    /// `InvokeAsync` is refused (1 to 1,000,000).
    pub max_results: usize,
    /// How long an ended asynchronous invocation's result is kept, in seconds (1 to 86,400).
    pub result_ttl_secs: u64,
    /// How long a task's definition fetched from SMS is used before it is fetched again, in ms
    /// (0 to 600,000; 0: every invocation asks SMS).
    pub task_ttl_ms: u64,
    /// Invocations in flight on the node at once (sync, async and from SMS; 1 to 100,000); past
    /// it one waits for a place until its deadline, then is refused as over capacity.
    pub max_concurrent: usize,
    /// Bytes of asynchronous invocations' outputs kept at once, in MiB (1 to 65,536); an output
    /// past it is not kept (its result says so).
    pub max_result_mb: u64,
    /// Invocations a second each task may start (a token bucket; 0: no limit; at most
    /// 1,000,000). A task's metadata key `spear.rate_per_sec` sets its own.
    pub rate_per_sec: f64,
    /// The bucket's size: invocations a task may start at once after a quiet spell (0: the
    /// rate, at least 1; at most 1,000,000).
    pub burst: f64,
    /// Invocations of one function of a task at once (0: no limit; at most 100,000).
    pub max_per_function: usize,
    /// Invocations of one binary (artifact) at once, whatever task runs it (0: no limit; at most
    /// 100,000).
    pub max_per_binary: usize,
    /// The latency each task's adaptive concurrency limit aims at, in ms (0: no adaptive limit;
    /// at most 3,600,000).
    pub adaptive_target_ms: u64,
    /// Idle time after which a Ready instance whose executor can pause it (a worker process or
    /// container) is paused, in ms (0, the default: never; at most 86,400,000). A paused
    /// instance keeps its memory and state and uses no CPU; an invocation resumes it. Off by
    /// default: a paused worker's own timers and background work stop too.
    pub pause_idle_ms: u64,
}

impl Default for FunctionLimits {
    fn default() -> Self {
        Self {
            default_timeout_ms: 30_000,
            max_timeout_ms: 300_000,
            max_payload_bytes: 16 << 20,
            start_timeout_ms: 30_000,
            max_results: 10_000,
            result_ttl_secs: 600,
            task_ttl_ms: 5_000,
            max_concurrent: 1024,
            max_result_mb: 256,
            rate_per_sec: 0.0,
            burst: 0.0,
            max_per_function: 0,
            max_per_binary: 0,
            adaptive_target_ms: 0,
            pause_idle_ms: 0,
        }
    }
}

impl FunctionLimits {
    /// Check the ranges, adding problems to `problems`.
    pub fn validate(&self, problems: &mut Problems) {
        let mut range = |key: &str, value: u64, lo: u64, hi: u64| {
            if !(lo..=hi).contains(&value) {
                problems.invalid(
                    &format!("spearlet.functions.{key}"),
                    format!("{value} is not between {lo} and {hi}"),
                );
            }
        };
        range("max_timeout_ms", self.max_timeout_ms, 1, 3_600_000);
        range(
            "default_timeout_ms",
            self.default_timeout_ms,
            1,
            self.max_timeout_ms.max(1),
        );
        range("max_payload_bytes", self.max_payload_bytes, 1, 256 << 20);
        range("start_timeout_ms", self.start_timeout_ms, 1, 600_000);
        range("max_results", self.max_results as u64, 1, 1_000_000);
        range("result_ttl_secs", self.result_ttl_secs, 1, 86_400);
        range("task_ttl_ms", self.task_ttl_ms, 0, 600_000);
        range("max_concurrent", self.max_concurrent as u64, 1, 100_000);
        range("max_result_mb", self.max_result_mb, 1, 65_536);
        range("max_per_function", self.max_per_function as u64, 0, 100_000);
        range("max_per_binary", self.max_per_binary as u64, 0, 100_000);
        range("adaptive_target_ms", self.adaptive_target_ms, 0, 3_600_000);
        range("pause_idle_ms", self.pause_idle_ms, 0, 86_400_000);
        for (key, value) in [("rate_per_sec", self.rate_per_sec), ("burst", self.burst)] {
            if !value.is_finite() || !(0.0..=1_000_000.0).contains(&value) {
                problems.invalid(
                    &format!("spearlet.functions.{key}"),
                    format!("{value} is not between 0 and 1000000"),
                );
            }
        }
    }
}
