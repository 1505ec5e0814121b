//! `oldest-wait`: an autoscaler that watches how long work waits, not how much of it there is.
//!
//! - When the oldest waiting execution has waited more than `max_wait_ms`, the pool grows by
//!   `step` nodes (a latency target: a deep queue of quick work that is served in time adds
//!   nothing; one execution stuck for lack of a place does), unless a node is still starting or
//!   one is free (registered, healthy, not draining, nothing placed on it): the waiting work is
//!   about to land there, or it cannot land on a node like it and another would not help.
//! - When nothing waits, one node idle for `scale_down_delay_ms` (the operator's limit) is drained
//!   at a time, the longest idle first: the pool shrinks gently.
//! - The answer stays within the operator's `min..=max`.

use serde::Deserialize;
use spear_plugin_api::{
    Autoscaler, PluginError, PluginInfo, PluginKind, ScaleDecision, ScaleView, parse_config,
};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Config {
    /// The longest wait tolerated before the pool grows, in milliseconds (at least 1).
    max_wait_ms: u64,
    /// Nodes added at a time (at least 1).
    step: u32,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            max_wait_ms: 5_000,
            step: 1,
        }
    }
}

/// The `oldest-wait` autoscaler.
#[derive(Debug, Default)]
pub struct OldestWait {
    config: Config,
}

impl Autoscaler for OldestWait {
    fn info(&self) -> PluginInfo {
        PluginInfo {
            name: "oldest-wait".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            kind: PluginKind::Autoscaler,
            description: "Grow the pool by step nodes when work waits longer than max_wait_ms; \
                          drain one idle node at a time"
                .into(),
            config_schema: r#"{"type":"object","additionalProperties":false,"properties":{"max_wait_ms":{"type":"integer","minimum":1},"step":{"type":"integer","minimum":1}}}"#.into(),
        }
    }

    fn configure(&mut self, config: &str) -> Result<(), PluginError> {
        let config: Config = parse_config(config)?;
        if config.max_wait_ms == 0 {
            return Err(PluginError::new("max_wait_ms: must be at least 1"));
        }
        if config.step == 0 {
            return Err(PluginError::new("step: must be at least 1"));
        }
        self.config = config;
        Ok(())
    }

    fn decide(&mut self, view: &ScaleView) -> Result<ScaleDecision, PluginError> {
        let limits = view.limits;
        let current = u32::try_from(view.pool().count()).unwrap_or(u32::MAX);
        let mut desired = current;
        let mut drain = Vec::new();
        // A node still starting will serve the wait: no more until it has registered. A free
        // node (just registered, or just emptied) is about to take it, or could not, and a node
        // like it could not either.
        let starting = view.pool().any(|n| !n.registered);
        let free = view
            .pool()
            .any(|n| n.registered && n.healthy && !n.draining && n.running == 0);
        if view.queue.depth > 0 && view.queue.oldest_wait_ms > self.config.max_wait_ms {
            if !starting && !free {
                desired = current.saturating_add(self.config.step);
            }
        } else if view.queue.depth == 0 {
            let longest_idle = view
                .pool()
                .filter(|n| {
                    n.registered && n.running == 0 && n.idle_ms >= limits.scale_down_delay_ms
                })
                .max_by(|a, b| a.idle_ms.cmp(&b.idle_ms).then(b.id.cmp(&a.id)));
            if let Some(n) = longest_idle
                && current > limits.min
            {
                desired = current - 1;
                drain.push(n.id.clone());
            }
        }
        Ok(ScaleDecision {
            desired: desired.clamp(limits.min, limits.max.max(limits.min)),
            drain,
        })
    }
}

#[cfg(all(target_family = "wasm", target_os = "wasi"))]
spear_pdk::export_autoscaler!(OldestWait);

#[cfg(test)]
mod tests {
    use spear_plugin_api::{QueueStats, ScaleLimits, ScaleNode};

    use super::*;

    fn node(id: &str, running: u32, idle_ms: u64) -> ScaleNode {
        ScaleNode {
            id: id.into(),
            managed: true,
            registered: true,
            healthy: true,
            draining: false,
            slots: 4,
            running,
            idle_ms,
            cpu_millis: 0,
            memory_mb: 0,
        }
    }

    fn view(depth: u32, oldest_wait_ms: u64, nodes: Vec<ScaleNode>) -> ScaleView {
        ScaleView {
            queue: QueueStats {
                depth,
                oldest_wait_ms,
                ..QueueStats::default()
            },
            nodes,
            limits: ScaleLimits {
                min: 1,
                max: 4,
                scale_down_delay_ms: 1000,
                ..ScaleLimits::default()
            },
            ..ScaleView::default()
        }
    }

    #[test]
    fn it_grows_on_a_long_wait_and_drains_one_idle_node_at_a_time() {
        let mut p = OldestWait::default();
        p.configure(r#"{"max_wait_ms": 100, "step": 2}"#).unwrap();
        let d = p.decide(&view(50, 90, vec![node("a", 4, 0)])).unwrap();
        assert_eq!(d.desired, 1, "a deep queue served in time adds nothing");
        let d = p.decide(&view(1, 150, vec![node("a", 4, 0)])).unwrap();
        assert_eq!(d.desired, 3);
        let mut starting = node("s", 0, 0);
        starting.registered = false;
        let d = p
            .decide(&view(1, 150, vec![node("a", 4, 0), starting]))
            .unwrap();
        assert_eq!(d.desired, 2, "no more while one starts");
        let d = p
            .decide(&view(1, 150, vec![node("a", 4, 0), node("new", 0, 0)]))
            .unwrap();
        assert_eq!(d.desired, 2, "no more while one is free");
        let mut gone = node("new", 0, 0);
        gone.healthy = false;
        let d = p
            .decide(&view(1, 150, vec![node("a", 4, 0), gone]))
            .unwrap();
        assert_eq!(d.desired, 4, "an unhealthy node takes nothing");
        let idle = vec![node("a", 0, 5000), node("b", 0, 9000), node("c", 0, 10)];
        let d = p.decide(&view(0, 0, idle)).unwrap();
        assert_eq!(
            d,
            ScaleDecision {
                desired: 2,
                drain: vec!["b".into()]
            }
        );
        assert!(p.configure(r#"{"max_wait_ms": 0}"#).is_err());
    }
}
