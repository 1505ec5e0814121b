//! Instances kept and made ahead of invocations: a task's **floor** (`spear.min_instances`) is
//! the number of its Ready instances reclamation leaves alone, and **warming** starts instances
//! until the task has a number of them, Ready, before any invocation needs them.

use super::{Made, Phase, Pools, Starting, State};

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
        if i.state.stays() && s.floors.contains_key(&i.task) {
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
        if !i.state.stays() {
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

    /// Instances of `task` that stay (not in Error, not leaving).
    pub fn count(&self, task: &str) -> usize {
        self.lock()
            .instances
            .values()
            .filter(|i| i.task == task && i.state.stays())
            .count()
    }

    /// Start instances of `task` (each made by `init`) until it has `want` that stay, or its
    /// limit (`max`, at most `spearlet.limits.max_instances_per_task`); they wait
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
        F: Fn(Starting) -> Fut,
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
                    .filter(|i| i.task == task && i.state.stays())
                    .count();
                let places = s
                    .instances
                    .values()
                    .filter(|i| i.task == task && i.state.holds_place())
                    .count();
                if count >= want || places >= limit {
                    return Ok(count);
                }
                // Only into free room: warming never evicts (another task's instance, or one
                // of this task's, which would start and stop instances for ever).
                let held = s
                    .instances
                    .values()
                    .filter(|i| i.state != Phase::Terminating)
                    .count();
                if held >= self.max_instances {
                    return Ok(count);
                }
                s.reserve(task, executor)
            };
            let starting = Starting {
                shared: self.shared.clone(),
                id,
            };
            match init(starting).await {
                Ok(made) => {
                    let mut s = self.lock();
                    let Some(i) = s.instances.get_mut(&id) else {
                        drop(s);
                        // (Unreachable: only a start removes the instance it reserved.)
                        let stray = made.runtime.map(|r| (id, r));
                        super::stop_later(&self.shared, stray.into_iter().collect());
                        continue;
                    };
                    i.artifact = made.artifact;
                    i.runtime = made.runtime;
                    i.state = Phase::Ready;
                    s.counters.warmed += 1;
                    s.dirty.insert(id);
                    drop(s);
                    self.shared.freed.notify_waiters();
                }
                Err(e) => {
                    let mut s = self.lock();
                    s.instances.remove(&id);
                    s.dirty.insert(id);
                    drop(s);
                    self.shared.freed.notify_waiters();
                    return Err(e);
                }
            }
        }
    }
}
