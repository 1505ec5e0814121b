//! Instances kept and made ahead of invocations: a task's **floor** (`spear.min_instances`) is
//! the number of its Ready instances reclamation leaves alone, and **warming** starts instances
//! until the task has a number of them, Ready, before any invocation needs them.

use spear_plugin_api::InstanceState;

use super::{Made, Pools, State, stop_later};

/// Tasks with a floor, at most (past it, a new floor replaces the floor of a task with no
/// instance left, else it is not kept).
const MAX_FLOORS: usize = 4096;

/// Drop from `chosen` the instances whose removal would leave their task under its floor (the
/// Ready instances idle longest go first, as the policy chose them).
pub(super) fn keep_floors(s: &State, chosen: &mut Vec<u64>) {
    if s.floors.is_empty() {
        return;
    }
    let mut left: std::collections::BTreeMap<&str, usize> = std::collections::BTreeMap::new();
    for i in s.instances.values() {
        if i.state != InstanceState::Error && s.floors.contains_key(&i.task) {
            *left.entry(i.task.as_str()).or_default() += 1;
        }
    }
    chosen.retain(|id| {
        let Some(i) = s.instances.get(id) else {
            return true;
        };
        let Some(floor) = s.floors.get(&i.task) else {
            return true;
        };
        if i.state == InstanceState::Error {
            return true;
        }
        let n = left.get_mut(i.task.as_str()).expect("counted above");
        if *n <= *floor {
            return false;
        }
        *n -= 1;
        true
    });
}

impl Pools {
    /// Keep at least `min` Ready instances of `task` from reclamation (0: none).
    pub fn set_floor(&self, task: &str, min: usize) {
        let mut s = self.lock();
        if min == 0 {
            s.floors.remove(task);
            return;
        }
        if s.floors.len() >= MAX_FLOORS && !s.floors.contains_key(task) {
            let idle = s
                .floors
                .keys()
                .find(|t| !s.instances.values().any(|i| &i.task == *t))
                .cloned();
            match idle {
                Some(t) => {
                    s.floors.remove(&t);
                }
                None => return,
            }
        }
        s.floors.insert(task.to_owned(), min);
    }

    /// Instances of `task` not in Error.
    pub fn count(&self, task: &str) -> usize {
        self.lock()
            .instances
            .values()
            .filter(|i| i.task == task && i.state != InstanceState::Error)
            .count()
    }

    /// Start instances of `task` (each made by `init`) until it has `want` that are not in
    /// Error, or its limit (`max`, at most `spearlet.limits.max_instances_per_task`); they wait
    /// Ready. Returns how many it has then. Stops at the first start that fails.
    pub async fn warm<F, Fut>(
        &self,
        task: &str,
        executor: &str,
        init: F,
        want: usize,
        max: Option<usize>,
    ) -> crate::error::Result<usize>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = crate::error::Result<Made>>,
    {
        let limit = max.map_or(self.max_per_task, |m| m.min(self.max_per_task));
        let want = want.min(limit);
        loop {
            let id = {
                let mut s = self.lock();
                let count = s
                    .instances
                    .values()
                    .filter(|i| i.task == task && i.state != InstanceState::Error)
                    .count();
                if count >= want {
                    return Ok(count);
                }
                // Only into free room: warming never evicts (another task's instance, or one
                // of this task's, which would start and stop instances for ever).
                if s.instances.len() >= self.max_instances {
                    return Ok(count);
                }
                s.reserve(task, executor)
            };
            match init().await {
                Ok(made) => {
                    let mut s = self.lock();
                    let Some(i) = s.instances.get_mut(&id) else {
                        drop(s);
                        stop_later(made.runtime.into_iter().collect());
                        continue;
                    };
                    i.artifact = made.artifact;
                    i.runtime = made.runtime;
                    i.state = InstanceState::Ready;
                    s.counters.warmed += 1;
                    s.dirty.insert(id);
                    drop(s);
                    self.freed.notify_waiters();
                }
                Err(e) => {
                    self.lock().instances.remove(&id);
                    self.freed.notify_waiters();
                    return Err(e);
                }
            }
        }
    }
}
