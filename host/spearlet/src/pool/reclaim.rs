//! Reclamation: the policy chooses idle instances to stop, and they are stopped.

use std::time::Instant;

use spear_plugin_api::{InstanceState, InstanceStats, NodePressure};

use super::{DEFAULT_IDLE, Pools, warm};

/// The rule applied while the config names no reclamation policy: the `idle-time` plugin's rule
/// with its defaults (`idle_ms` 300000, `keep_warm` 0), built in so that it holds without any
/// plugin file: every Ready (or Paused) instance idle for [`DEFAULT_IDLE`] is stopped.
fn default_policy(offered: &[InstanceStats]) -> Vec<u64> {
    offered
        .iter()
        .filter(|i| i.state == InstanceState::Ready && i.idle_ms >= DEFAULT_IDLE.as_millis() as u64)
        .map(|i| i.id)
        .collect()
}

impl Pools {
    /// Ask the reclamation policy which instances to stop, and stop them. Only idle (Ready or
    /// Paused, both `ready` to the policy) and Error instances are offered; returns the ids
    /// stopped. Blocking (plugin calls): call it from a blocking thread.
    pub fn reclaim(&self, pressure: &NodePressure) -> Vec<u64> {
        let now = Instant::now();
        let offered: Vec<InstanceStats> = self
            .lock()
            .instances
            .values()
            .filter(|i| i.state.is_idle() || i.state.is_error())
            .map(|i| i.stats(now))
            .collect();
        if offered.is_empty() {
            return Vec::new();
        }
        // No `[reclaimer]` in the config: the built-in default (idle-time's rule and defaults).
        let mut chosen = if self.shared.plugins.config().reclaimer.is_none() {
            default_policy(&offered)
        } else {
            self.shared.plugins.reclaimer().select(&offered, pressure)
        };
        // Instances in Error are never used again: they go whatever the policy says.
        chosen.extend(
            offered
                .iter()
                .filter(|i| i.state == InstanceState::Error && !chosen.contains(&i.id))
                .map(|i| i.id)
                .collect::<Vec<_>>(),
        );
        let mut stopped = Vec::new();
        let leaving = {
            let mut s = self.lock();
            warm::keep_floors(&s, &mut chosen);
            let mut leaving = Vec::new();
            for id in chosen {
                // It may have been taken for an invocation meanwhile: then it stays.
                let Some(i) = s
                    .instances
                    .get(&id)
                    .filter(|i| i.state.is_idle() || i.state.is_error())
                else {
                    continue;
                };
                tracing::info!(instance = id, task = %i.task, "instance reclaimed");
                leaving.extend(s.leave(id));
                s.counters.reclaimed += 1;
                stopped.push(id);
            }
            leaving
        };
        // Their runtimes are stopped (memory, processes returned) outside the lock.
        self.shared.stop(leaving);
        if !stopped.is_empty() {
            let owner = self.shared.sync.lock().unwrap_or_else(|p| p.into_inner());
            self.shared.flush();
            drop(owner);
            self.shared.freed.notify_waiters();
        }
        stopped
    }
}
