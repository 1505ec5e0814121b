//! Taking an instance for one invocation and giving it back.

use std::time::Instant;

use spear_plugin_api::{Request, Resources};

use super::instance::task_label;
use super::{Lease, Made, Phase, Pools, RECENT, Runtime, Serving, Starting, State, Tier};
use crate::error::Error;

/// Make room for a new instance when the node holds `max` already (instances being stopped
/// not counted): remove one in Error first, else stop the idle one (Ready or Paused) unused
/// longest. `None` when every one is busy; else what to stop outside the lock.
fn evict_for_room(s: &mut State, max: usize) -> Option<Vec<(u64, Runtime)>> {
    let held = s
        .instances
        .values()
        .filter(|i| i.state != Phase::Terminating)
        .count();
    if held < max {
        return Some(Vec::new());
    }
    let victim = s
        .instances
        .values()
        .find(|i| i.state.is_error())
        .map(|i| i.id)
        .or_else(|| {
            s.instances
                .values()
                .filter(|i| i.state.is_idle())
                .min_by_key(|i| i.last_used)
                .map(|i| i.id)
        })?;
    let task = s.instances[&victim].task.clone();
    tracing::info!(instance = victim, %task, "instance evicted: the node holds spearlet.limits.max_instances");
    s.counters.evicted += 1;
    Some(s.leave(victim).into_iter().collect())
}

impl Pools {
    /// Take an instance of `task` for one invocation (`serving`): a Ready one chosen by the
    /// local strategy, else a new one initialized by `init` (which fetches the artifact) while
    /// the task is under its instance limit, else wait for one to be released.
    pub async fn acquire<F, Fut>(
        &self,
        task: &str,
        executor: &str,
        serving: Serving,
        init: F,
    ) -> crate::error::Result<Lease>
    where
        F: Fn(Starting) -> Fut,
        Fut: std::future::Future<Output = crate::error::Result<Made>>,
    {
        self.acquire_until(task, executor, serving, init, None, None)
            .await
    }

    /// [`acquire`](Self::acquire), waiting for an instance to be released only until `until`
    /// (then [`Error::OverCapacity`]), the task holding at most `max` instances (at most
    /// `spearlet.limits.max_instances_per_task`; `None`: that). An initialisation under way is
    /// never cut short: it is bounded by the executor's start timeout.
    pub async fn acquire_until<F, Fut>(
        &self,
        task: &str,
        executor: &str,
        serving: Serving,
        init: F,
        until: Option<Instant>,
        max: Option<usize>,
    ) -> crate::error::Result<Lease>
    where
        F: Fn(Starting) -> Fut,
        Fut: std::future::Future<Output = crate::error::Result<Made>>,
    {
        let max_here = max.map_or(self.max_per_task, |m| m.min(self.max_per_task));
        loop {
            let freed = self.shared.freed.notified();
            if let Some(lease) = self.pick(task, &serving).await {
                return Ok(lease);
            }
            let id = {
                let mut s = self.lock();
                // One may have been released while the strategy was asked (or only a Paused
                // one is there).
                if let Some(lease) = s.take(task, None, &serving) {
                    return Ok(lease);
                }
                // An instance in Error, or being stopped, does not hold a place.
                let count = s
                    .instances
                    .values()
                    .filter(|i| i.task == task && i.state.holds_place())
                    .count();
                // The node's table is bounded whatever the policy: make room, or wait.
                let room = if count < max_here {
                    evict_for_room(&mut s, self.max_instances)
                } else {
                    None
                };
                room.map(|evicted| {
                    super::stop_later(&self.shared, evicted);
                    s.reserve(task, executor)
                })
            };
            let Some(id) = id else {
                match until {
                    None => freed.await,
                    Some(t) => {
                        if tokio::time::timeout_at(t.into(), freed).await.is_err() {
                            return Err(Error::OverCapacity(format!(
                                "over capacity: no instance of {task} became free in time \
                                 (its limit {max_here}: spearlet.limits.max_instances_per_task \
                                 {} or its spear.max_instances; spearlet.limits.max_instances {})",
                                self.max_per_task, self.max_instances
                            )));
                        }
                    }
                }
                continue;
            };
            let starting = Starting {
                shared: self.shared.clone(),
                id,
            };
            match init(starting).await {
                Ok(made) => {
                    let mut s = self.lock();
                    s.counters.cold += 1;
                    let Some(i) = s.instances.get_mut(&id) else {
                        // Only the pool removes instances, and never one initializing.
                        drop(s);
                        // (Unreachable: only a start removes the instance it reserved.)
                        let stray = made.runtime.map(|r| (id, r));
                        super::stop_later(&self.shared, stray.into_iter().collect());
                        continue;
                    };
                    i.artifact = made.artifact.clone();
                    i.runtime = made.runtime.clone();
                    i.state = Phase::Executing(serving);
                    s.dirty.insert(id);
                    drop(s);
                    return Ok(Lease {
                        id,
                        artifact: made.artifact,
                        tier: Tier::Cold,
                        runtime: made.runtime,
                        resume: false,
                    });
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

    /// Ask the local strategy for a Ready instance of `task` (on a blocking thread) and take it.
    async fn pick(&self, task: &str, serving: &Serving) -> Option<Lease> {
        let request = {
            let mut s = self.lock();
            if !s
                .instances
                .values()
                .any(|i| i.task == task && i.state == Phase::Ready)
            {
                return None;
            }
            s.next_request += 1;
            Request {
                id: s.next_request,
                task: task.to_owned(),
                labels: vec![],
                needs: Resources::default(),
                required: vec![task_label(task)],
                preferred: vec![],
            }
        };
        let shared = self.shared.clone();
        let chosen = tokio::task::spawn_blocking(move || shared.choose(request))
            .await
            .ok()
            .flatten();
        self.lock().take(task, chosen, serving)
    }

    /// Give an instance back after an invocation. `ok` is the invocation's outcome; `broken`
    /// (why, when the executor itself failed) puts the instance in Error, never chosen again.
    /// One CoolingDown is stopped.
    pub fn release(&self, lease: Lease, ok: bool, broken: Option<String>, memory_bytes: u64) {
        let mut s = self.lock();
        let Some(i) = s.instances.get_mut(&lease.id).filter(|i| i.state.is_busy()) else {
            // Stopped meanwhile (a drain): nothing to give back.
            return;
        };
        i.invocations += 1;
        if !ok {
            i.errors += 1;
        }
        if i.recent.len() == RECENT {
            i.recent.pop_front();
        }
        i.recent.push_back(ok);
        i.last_used = Instant::now();
        if memory_bytes > 0 {
            i.memory_bytes = memory_bytes;
        }
        let cooling = matches!(i.state, Phase::CoolingDown(_));
        let mut leaving = Vec::new();
        if let Some(error) = broken {
            // A broken instance's runtime is stopped now (what it holds returned); its record
            // stays, in Error, until the next reclamation round.
            i.state = Phase::Error { error };
            // (Stopped, not forgotten: only a Terminating record is removed after a stop.)
            let dead = i.runtime.take();
            leaving.extend(dead.map(|r| (lease.id, r)));
        } else if cooling {
            leaving.extend(s.leave(lease.id));
        } else {
            i.state = Phase::Ready;
        }
        s.dirty.insert(lease.id);
        drop(s);
        drop(lease);
        super::stop_later(&self.shared, leaving);
        self.shared.freed.notify_waiters();
    }

    /// Give back an instance taken but not used (its invocation did not start, nor its resume).
    /// One CoolingDown is stopped; one taken Paused is Paused again.
    pub fn unused(&self, lease: Lease) {
        let mut s = self.lock();
        let mut leaving = Vec::new();
        if let Some(i) = s.instances.get_mut(&lease.id).filter(|i| i.state.is_busy()) {
            if matches!(i.state, Phase::CoolingDown(_)) {
                leaving.extend(s.leave(lease.id));
            } else {
                i.state = if lease.resume {
                    Phase::Paused
                } else {
                    Phase::Ready
                };
                if lease.resume {
                    // Not resumed after all.
                    s.counters.resumed = s.counters.resumed.saturating_sub(1);
                }
                s.dirty.insert(lease.id);
            }
        }
        drop(s);
        super::stop_later(&self.shared, leaving);
        self.shared.freed.notify_waiters();
    }
}
