//! `queue-depth`: the seed's `EnsureCapacity`, both ways.
//!
//! - **Up, at once,** when the queue holds more work than the free places can take: enough nodes
//!   for the rest, `tasks_per_node` each (a managed node still starting counts as that many free
//!   places, so a start in progress is not repeated).
//! - **Up, by one,** when the queue is deeper than `scale_up_threshold` per node.
//! - **Down** when the queue is empty: every managed node idle for `scale_down_delay_ms` is
//!   drained, the longest idle first, down to `min`.
//!
//! The answer is always within `min..=max`; SMS spaces actions by `cooldown_ms`.

use serde::Deserialize;
use spear_plugin_api::{
    Autoscaler, PluginError, PluginInfo, PluginKind, ScaleDecision, ScaleNode, ScaleView,
    parse_config,
};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Config {
    /// Executions one new node is expected to run at once (0: the registered nodes' average
    /// slots, at least 1).
    tasks_per_node: u32,
}

/// The queue-depth autoscaler.
#[derive(Debug, Default)]
pub struct QueueDepth {
    config: Config,
}

/// Whether `n` takes work now.
fn serving(n: &ScaleNode) -> bool {
    n.registered && n.healthy && !n.draining
}

impl QueueDepth {
    fn per_node(&self, view: &ScaleView) -> u64 {
        if self.config.tasks_per_node > 0 {
            return u64::from(self.config.tasks_per_node);
        }
        let (slots, count) = view
            .nodes
            .iter()
            .filter(|n| serving(n))
            .fold((0u64, 0u64), |(s, c), n| (s + u64::from(n.slots), c + 1));
        (slots / count.max(1)).max(1)
    }
}

impl Autoscaler for QueueDepth {
    fn info(&self) -> PluginInfo {
        PluginInfo {
            name: "queue-depth".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            kind: PluginKind::Autoscaler,
            description: "Add nodes for the work the free places cannot take; drain nodes idle \
                          for scale_down_delay_ms when the queue is empty"
                .into(),
            config_schema: r#"{"type":"object","additionalProperties":false,"properties":{"tasks_per_node":{"type":"integer","minimum":0}}}"#.into(),
        }
    }

    fn configure(&mut self, config: &str) -> Result<(), PluginError> {
        self.config = parse_config(config)?;
        Ok(())
    }

    fn decide(&mut self, view: &ScaleView) -> Result<ScaleDecision, PluginError> {
        let limits = view.limits;
        let current = u32::try_from(view.pool().count()).unwrap_or(u32::MAX);
        let per_node = self.per_node(view);
        let depth = u64::from(view.queue.depth);
        // Free places now, and those the nodes still starting will bring.
        let free: u64 = view
            .nodes
            .iter()
            .map(|n| {
                if serving(n) {
                    u64::from(n.slots.saturating_sub(n.running))
                } else if n.managed && !n.registered && !n.draining {
                    per_node
                } else {
                    0
                }
            })
            .sum();
        let serving_nodes = view.nodes.iter().filter(|n| serving(n)).count() as u64;
        let mut desired = current;
        let mut drain = Vec::new();
        if depth > free {
            let short = (depth - free).div_ceil(per_node);
            desired = current.saturating_add(u32::try_from(short).unwrap_or(u32::MAX));
        } else if limits.scale_up_threshold > 0
            && depth > serving_nodes.max(1) * u64::from(limits.scale_up_threshold)
        {
            desired = current.saturating_add(1);
        } else if depth == 0 {
            let mut idle: Vec<&ScaleNode> = view
                .pool()
                .filter(|n| {
                    n.registered && n.running == 0 && n.idle_ms >= limits.scale_down_delay_ms
                })
                .collect();
            idle.sort_by(|a, b| b.idle_ms.cmp(&a.idle_ms).then(a.id.cmp(&b.id)));
            let keep = current.saturating_sub(u32::try_from(idle.len()).unwrap_or(u32::MAX));
            desired = keep.max(limits.min);
            let remove = current.saturating_sub(desired) as usize;
            drain = idle.iter().take(remove).map(|n| n.id.clone()).collect();
        }
        let desired = desired.clamp(limits.min, limits.max.max(limits.min));
        if desired >= current {
            drain.clear();
        }
        Ok(ScaleDecision { desired, drain })
    }
}

#[cfg(all(target_family = "wasm", target_os = "wasi"))]
spear_pdk::export_autoscaler!(QueueDepth);
#[cfg(all(target_family = "wasm", target_os = "unknown"))]
spear_pdk::export_extism_autoscaler!(QueueDepth);
#[cfg(all(not(target_family = "wasm"), feature = "native-plugin"))]
spear_plugin_api::export_native_autoscaler!(QueueDepth);

/// This plugin as a built-in of a host that links this crate (no library file; see
/// `spear_plugin_api::native_module!`).
#[cfg(not(target_family = "wasm"))]
pub fn native_module() -> spear_plugin_api::native::SpearPluginModuleRef {
    spear_plugin_api::native_module!(autoscaler, QueueDepth)
}

#[cfg(test)]
mod tests {
    use spear_plugin_api::{QueueStats, ScaleLimits};

    use super::*;

    fn node(id: &str, running: u32, idle_ms: u64) -> ScaleNode {
        ScaleNode {
            id: id.into(),
            managed: true,
            registered: true,
            healthy: true,
            draining: false,
            slots: 1,
            running,
            idle_ms,
            cpu_millis: 1000,
            memory_mb: 1024,
        }
    }

    fn view(depth: u32, nodes: Vec<ScaleNode>) -> ScaleView {
        ScaleView {
            now_ms: 1,
            queue: QueueStats {
                depth,
                ..QueueStats::default()
            },
            nodes,
            limits: ScaleLimits {
                min: 1,
                max: 3,
                scale_up_threshold: 4,
                scale_down_delay_ms: 1000,
                cooldown_ms: 0,
            },
            since_last_action_ms: u64::MAX,
        }
    }

    fn decide(v: &ScaleView) -> ScaleDecision {
        QueueDepth::default().decide(v).expect("decides")
    }

    #[test]
    fn a_backlog_no_place_can_take_grows_the_pool_at_once_up_to_max() {
        let d = decide(&view(5, vec![node("a", 1, 0)]));
        assert_eq!(
            d,
            ScaleDecision {
                desired: 3,
                drain: vec![]
            }
        );
        // Two free places and a node starting take three: nothing more is needed.
        let mut starting = node("c", 0, 0);
        starting.registered = false;
        let v = view(3, vec![node("a", 0, 0), node("b", 0, 0), starting]);
        assert_eq!(decide(&v).desired, 3);
    }

    #[test]
    fn a_deep_queue_adds_one_node_past_the_threshold() {
        let mut nodes = vec![node("a", 0, 0)];
        nodes[0].slots = 16;
        assert_eq!(
            decide(&view(4, nodes.clone())).desired,
            1,
            "4 is not above 1 x 4"
        );
        assert_eq!(decide(&view(5, nodes)).desired, 2);
    }

    #[test]
    fn idle_nodes_are_drained_longest_idle_first_down_to_min() {
        let v = view(
            0,
            vec![node("a", 0, 5000), node("b", 0, 9000), node("c", 0, 500)],
        );
        // c has not been idle long enough: it stays; a and b go, the longest idle first.
        let d = decide(&v);
        assert_eq!(
            d,
            ScaleDecision {
                desired: 1,
                drain: vec!["b".into(), "a".into()]
            }
        );
        // All idle: `min` keeps the one idle the shortest.
        let all = view(
            0,
            vec![node("a", 0, 5000), node("b", 0, 9000), node("c", 0, 1500)],
        );
        assert_eq!(
            decide(&all),
            ScaleDecision {
                desired: 1,
                drain: vec!["b".into(), "a".into()]
            }
        );
        let busy = view(0, vec![node("a", 1, 0), node("b", 1, 0)]);
        assert_eq!(
            decide(&busy),
            ScaleDecision {
                desired: 2,
                drain: vec![]
            }
        );
    }

    #[test]
    fn an_empty_pool_is_brought_to_min() {
        assert_eq!(decide(&view(0, vec![])).desired, 1);
    }
}
