//! The autoscaler contract (`wit/autoscaler.wit`): every interval SMS shows the policy its queue,
//! its nodes and its limits, and the policy answers how many nodes the pool should have and which
//! idle ones to drain. SMS acts on the answer through a provider (a command, or a container
//! engine); a policy only decides.

use serde::{Deserialize, Serialize};

use crate::{PluginError, PluginInfo};

/// The queue as an autoscaler sees it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueStats {
    /// Executions waiting for a node.
    pub depth: u32,
    /// Milliseconds the oldest of them has waited.
    pub oldest_wait_ms: u64,
    /// CPU they ask for together, in thousandths of a core.
    pub cpu_millis: u64,
    /// Memory they ask for together, in MiB.
    pub memory_mb: u64,
}

/// One node as an autoscaler sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScaleNode {
    /// The node's id (what a decision's `drain` names).
    pub id: String,
    /// Whether the autoscaler's provider started it (only those are counted, added or removed).
    pub managed: bool,
    /// Whether it has registered with SMS yet (a managed node just started has not).
    pub registered: bool,
    /// Whether it answers heartbeats.
    pub healthy: bool,
    /// Whether it is draining (takes no new work).
    pub draining: bool,
    /// Executions it runs at once.
    pub slots: u32,
    /// Executions placed on it now.
    pub running: u32,
    /// Milliseconds since it last had work (0 while it has some).
    pub idle_ms: u64,
    /// CPU capacity, in thousandths of a core.
    pub cpu_millis: u64,
    /// Memory capacity, in MiB.
    pub memory_mb: u64,
}

/// The operator's bounds, from `[autoscaler]` in the SMS config. SMS takes no answer outside
/// `min..=max` and spaces its actions by `cooldown_ms`; the others are for the policy to use.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScaleLimits {
    /// Fewest managed nodes.
    pub min: u32,
    /// Most managed nodes.
    pub max: u32,
    /// Waiting executions per node above which the pool should grow.
    pub scale_up_threshold: u32,
    /// Milliseconds a node must be idle before it may be drained.
    pub scale_down_delay_ms: u64,
    /// Milliseconds between two scaling actions.
    pub cooldown_ms: u64,
}

/// Everything an autoscaler is shown at one interval.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScaleView {
    /// Milliseconds since the Unix epoch.
    pub now_ms: u64,
    /// The queue.
    pub queue: QueueStats,
    /// Every node SMS knows and every managed node still starting.
    pub nodes: Vec<ScaleNode>,
    /// The operator's bounds.
    pub limits: ScaleLimits,
    /// Milliseconds since the last scaling action (`u64::MAX` if none yet).
    pub since_last_action_ms: u64,
}

impl ScaleView {
    /// Managed nodes that count towards the pool: started (registered or not), not draining.
    pub fn pool(&self) -> impl Iterator<Item = &ScaleNode> {
        self.nodes.iter().filter(|n| n.managed && !n.draining)
    }
}

/// An autoscaler's answer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScaleDecision {
    /// How many managed nodes the pool should have (SMS clamps nothing: an answer outside
    /// `min..=max` is invalid).
    pub desired: u32,
    /// Managed nodes to drain and then remove, most preferred first. SMS drains as many as the
    /// pool is above `desired`, taking these first and then its longest-idle nodes.
    pub drain: Vec<String>,
}

/// An autoscaling policy: decides the size of SMS's node pool.
pub trait Autoscaler: Send + 'static {
    /// Describe the plugin; must not depend on configuration.
    fn info(&self) -> PluginInfo;

    /// Apply a JSON configuration (`[autoscaler.config]`).
    fn configure(&mut self, config: &str) -> Result<(), PluginError>;

    /// The pool's size from now on, and the nodes to drain.
    fn decide(&mut self, view: &ScaleView) -> Result<ScaleDecision, PluginError>;

    /// State to hand to the next version on a hot reload. The default hands nothing.
    fn save_state(&self) -> Vec<u8> {
        Vec::new()
    }

    /// Take over saved state. The default accepts and ignores it.
    fn restore_state(&mut self, state: &[u8]) -> Result<(), PluginError> {
        let _ = state;
        Ok(())
    }
}
