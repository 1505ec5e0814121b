//! Task instances and their pools (the Spearlet redesign's instance model).
//!
//! An instance is one ready-to-run copy of a task on this node: its artifact fetched and verified,
//! its executor chosen, its figures kept. It follows the state machine
//! `Initializing → Ready → Executing → Ready …`, `→ Error` when its executor fails it, and
//! `Terminating → Terminated` when the reclamation policy stops it. An instance in Error is never
//! chosen again, does not count against its task's limit, and is removed at the next reclamation
//! round whatever the policy says. An instance runs one invocation at a time.
//!
//! Tiers: an invocation is **hot** when it gets a Ready instance used within [`HOT_WINDOW`],
//! **warm** when it gets an older Ready instance (artifact local, compiled code cached by the
//! executor), and **cold** when a new instance must be initialized (fetch, verify).
//!
//! The **local strategy** plugin (`[scheduler]` of the Spearlet's config) chooses the instance for
//! an invocation: every instance is a target labelled `task=<key>`, healthy while Ready, and each
//! request requires its task's label, so the host's validation keeps the choice within the task.
//! The **reclamation policy** (`[reclaimer]`) is asked every `reclaimer.interval_ms` which idle
//! instances to stop. Both are hot-reloaded by the plugin runtime.
//!
//! No guest call is made under the pool's state lock, and none on an async worker: the status
//! API and heartbeats, which read the pool, never wait for a plugin. Changes to instances mark
//! them dirty (under the state lock); the strategy's view is brought up to date by one owner at a
//! time (the `sync` lock, taken on a blocking thread before each decision): it drains the dirty
//! set and sends each instance's *current* target, or its removal, so the view is never left
//! behind the pool, whatever order threads run in.

use std::collections::{BTreeMap, BTreeSet, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use spear_plugin_api::{Decision, InstanceState, InstanceStats, NodePressure, Request, Resources};
use spear_plugin_runtime::PluginHost;

mod instance;
mod retire;
mod warm;

use instance::task_label;
pub use instance::{Counters, Instance, Lease, Runtime, Tier};

/// A Ready instance used this recently serves a hot invocation.
pub const HOT_WINDOW: Duration = Duration::from_secs(60);
/// Invocations remembered per instance for the recent error rate.
const RECENT: usize = 20;

/// Take `chosen` if it is a Ready instance of `task`, else any Ready instance of it (a waiting
/// invocation must never wait on a Ready instance), and mark it Executing.
fn take(s: &mut State, task: &str, chosen: Option<u64>) -> Option<Lease> {
    let id = match chosen.filter(|id| s.usable(*id, task)) {
        Some(id) => id,
        None => *s
            .instances
            .iter()
            .find(|(id, _)| s.usable(**id, task))
            .map(|(id, _)| id)?,
    };
    let i = s.instances.get_mut(&id).expect("usable");
    let tier = if i.last_used.elapsed() < HOT_WINDOW {
        Tier::Hot
    } else {
        Tier::Warm
    };
    i.state = InstanceState::Executing;
    let lease = Lease {
        id,
        artifact: i.artifact.clone(),
        tier,
        runtime: i.runtime.clone(),
    };
    match tier {
        Tier::Hot => s.counters.hot += 1,
        _ => s.counters.warm += 1,
    }
    s.dirty.insert(id);
    Some(lease)
}

#[derive(Debug, Default)]
struct State {
    next_id: u64,
    next_request: u64,
    instances: BTreeMap<u64, Instance>,
    counters: Counters,
    /// Instances changed (or removed) since the strategy's view was last brought up to date.
    dirty: BTreeSet<u64>,
    /// Ready instances kept per task whatever the reclamation policy says (`spear.min_instances`).
    floors: BTreeMap<String, usize>,
}

impl State {
    /// A new instance of `task`, Initializing (its start under way); its id.
    fn reserve(&mut self, task: &str, executor: &str) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        let now = Instant::now();
        self.instances.insert(
            id,
            Instance {
                id,
                task: task.to_owned(),
                executor: executor.to_owned(),
                artifact: None,
                state: InstanceState::Initializing,
                invocations: 0,
                errors: 0,
                memory_bytes: 0,
                runtime: None,
                created: now,
                last_used: now,
                recent: VecDeque::new(),
            },
        );
        id
    }

    fn usable(&self, id: u64, task: &str) -> bool {
        self.instances
            .get(&id)
            .is_some_and(|i| i.task == task && i.state == InstanceState::Ready)
    }
}

/// What the blocking threads that talk to plugins share with the pool.
#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    /// Held while the strategy's view is updated and asked: one owner at a time.
    sync: Mutex<()>,
    plugins: Arc<PluginHost>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Bring the strategy's view up to date with the pool (call with `sync` held).
    fn flush(&self) {
        let (upserts, removed) = {
            let mut s = self.lock();
            let dirty = std::mem::take(&mut s.dirty);
            let mut upserts = Vec::new();
            let mut removed = Vec::new();
            for id in dirty {
                match s.instances.get(&id) {
                    Some(i) => upserts.push(i.target()),
                    None => removed.push(id),
                }
            }
            (upserts, removed)
        };
        if !upserts.is_empty() {
            self.plugins.strategy().upsert(upserts);
        }
        if !removed.is_empty() {
            self.plugins.strategy().remove(&removed);
        }
    }

    /// Ask the local strategy for an instance for `request` (blocking: run off the async workers).
    fn choose(&self, request: Request) -> Option<u64> {
        let _owner = self.sync.lock().unwrap_or_else(|p| p.into_inner());
        self.flush();
        match self.plugins.strategy().place(&[request]).pop() {
            Some(Decision::Assign(id)) => Some(id),
            _ => None,
        }
    }
}

/// Every task's instances on this node.
#[derive(Debug)]
pub struct Pools {
    shared: Arc<Shared>,
    freed: tokio::sync::Notify,
    max_per_task: usize,
    max_instances: usize,
}

/// Idle time after which the built-in default stops a Ready instance: `idle-time`'s default.
pub const DEFAULT_IDLE: Duration = Duration::from_secs(300);

/// The rule applied while the config names no reclamation policy: the `idle-time` plugin's rule
/// with its defaults (`idle_ms` 300000, `keep_warm` 0), built in so that it holds without any
/// plugin file: every Ready instance idle for [`DEFAULT_IDLE`] is stopped.
fn default_policy(offered: &[InstanceStats]) -> Vec<u64> {
    offered
        .iter()
        .filter(|i| i.state == InstanceState::Ready && i.idle_ms >= DEFAULT_IDLE.as_millis() as u64)
        .map(|i| i.id)
        .collect()
}

/// Remove the instance that should make room for a new one when the node holds `max` already:
/// one in Error first, else the Ready one idle longest. `None` when every one is busy; else
/// the runtime of the one removed, if it had one, for the caller to stop outside the lock.
fn evict_for_room(s: &mut State, max: usize) -> Option<Option<Runtime>> {
    if s.instances.len() < max {
        return Some(None);
    }
    let victim = s
        .instances
        .values()
        .filter(|i| i.state == InstanceState::Error)
        .map(|i| i.id)
        .next()
        .or_else(|| {
            s.instances
                .values()
                .filter(|i| i.state == InstanceState::Ready)
                .min_by_key(|i| i.last_used)
                .map(|i| i.id)
        })?;
    let gone = s.instances.remove(&victim)?;
    tracing::info!(instance = victim, task = %gone.task, "instance evicted: the node holds spearlet.limits.max_instances");
    s.dirty.insert(victim);
    s.counters.evicted += 1;
    Some(gone.runtime)
}

/// What a new instance's initialisation made: its local artifact and its live runtime (each
/// when it has one).
#[derive(Debug, Default)]
pub struct Made {
    /// The fetched artifact.
    pub artifact: Option<PathBuf>,
    /// The started runtime.
    pub runtime: Option<Runtime>,
}

/// Stop `runtimes` on a blocking thread (plugin calls), without waiting (here, when no runtime
/// runs this thread).
fn stop_later(runtimes: Vec<Runtime>) {
    if runtimes.is_empty() {
        return;
    }
    let stop = move || runtimes.iter().for_each(Runtime::stop);
    match tokio::runtime::Handle::try_current() {
        Ok(rt) => drop(rt.spawn_blocking(stop)),
        Err(_) => stop(),
    }
}

impl Pools {
    /// Empty pools choosing and reclaiming through `plugins`' slots, holding at most
    /// `max_per_task` instances of a task and `max_instances` in all.
    pub fn new(plugins: Arc<PluginHost>, max_per_task: u32, max_instances: u32) -> Self {
        Self {
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    next_id: 1,
                    ..State::default()
                }),
                sync: Mutex::new(()),
                plugins,
            }),
            freed: tokio::sync::Notify::new(),
            max_per_task: max_per_task as usize,
            max_instances: (max_instances as usize).max(1),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.shared.lock()
    }

    /// What tells which artifacts the pool's instances use (for the cache, which keeps them).
    pub fn artifacts_in_use(&self) -> impl Fn() -> HashSet<PathBuf> + Send + Sync + 'static {
        let shared = self.shared.clone();
        move || {
            shared
                .lock()
                .instances
                .values()
                .filter_map(|i| i.artifact.clone())
                .collect()
        }
    }

    /// Take an instance of `task` for one invocation: a Ready one chosen by the local strategy,
    /// else a new one initialized by `init` (which fetches the artifact) while the task is under
    /// its instance limit, else wait for one to be released.
    pub async fn acquire<F, Fut>(
        &self,
        task: &str,
        executor: &str,
        init: F,
    ) -> crate::error::Result<Lease>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = crate::error::Result<Made>>,
    {
        self.acquire_until(task, executor, init, None, None).await
    }

    /// [`acquire`](Self::acquire), waiting for an instance to be released only until `until`
    /// (then [`Error::OverCapacity`](crate::error::Error::OverCapacity)), the task holding at
    /// most `max` instances (at most `spearlet.limits.max_instances_per_task`; `None`: that). An
    /// initialisation under way is never cut short: it is bounded by the executor's start
    /// timeout.
    pub async fn acquire_until<F, Fut>(
        &self,
        task: &str,
        executor: &str,
        init: F,
        until: Option<Instant>,
        max: Option<usize>,
    ) -> crate::error::Result<Lease>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = crate::error::Result<Made>>,
    {
        loop {
            let freed = self.freed.notified();
            if let Some(lease) = self.pick(task).await {
                return Ok(lease);
            }
            let id = {
                let mut s = self.lock();
                // One may have been released while the strategy was asked.
                if let Some(lease) = take(&mut s, task, None) {
                    return Ok(lease);
                }
                // An instance in Error is never used again: it does not hold a place.
                let count = s
                    .instances
                    .values()
                    .filter(|i| i.task == task && i.state != InstanceState::Error)
                    .count();
                // The node's table is bounded whatever the policy: make room, or wait.
                let max_here = max.map_or(self.max_per_task, |m| m.min(self.max_per_task));
                let room = if count < max_here {
                    evict_for_room(&mut s, self.max_instances)
                } else {
                    None
                };
                if let Some(evicted) = room {
                    stop_later(evicted.into_iter().collect());
                    Some(s.reserve(task, executor))
                } else {
                    None
                }
            };
            let Some(id) = id else {
                match until {
                    None => freed.await,
                    Some(t) => {
                        if tokio::time::timeout_at(t.into(), freed).await.is_err() {
                            return Err(crate::error::Error::OverCapacity(format!(
                                "over capacity: no instance of {task} became free in time \
                                 (its limit {}: spearlet.limits.max_instances_per_task {} or its \
                                 spear.max_instances; spearlet.limits.max_instances {})",
                                max.map_or(self.max_per_task, |m| m.min(self.max_per_task)),
                                self.max_per_task,
                                self.max_instances
                            )));
                        }
                    }
                }
                continue;
            };
            match init().await {
                Ok(made) => {
                    let mut s = self.lock();
                    s.counters.cold += 1;
                    let Some(i) = s.instances.get_mut(&id) else {
                        // Only the pool removes instances, and never one initializing.
                        drop(s);
                        stop_later(made.runtime.into_iter().collect());
                        continue;
                    };
                    i.artifact = made.artifact.clone();
                    i.runtime = made.runtime.clone();
                    i.state = InstanceState::Executing;
                    s.dirty.insert(id);
                    drop(s);
                    return Ok(Lease {
                        id,
                        artifact: made.artifact,
                        tier: Tier::Cold,
                        runtime: made.runtime,
                    });
                }
                Err(e) => {
                    self.lock().instances.remove(&id);
                    self.freed.notify_waiters();
                    return Err(e);
                }
            }
        }
    }

    /// Ask the local strategy for a Ready instance of `task` (on a blocking thread) and take it.
    async fn pick(&self, task: &str) -> Option<Lease> {
        let request = {
            let mut s = self.lock();
            if !s
                .instances
                .values()
                .any(|i| i.task == task && i.state == InstanceState::Ready)
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
        take(&mut self.lock(), task, chosen)
    }

    /// Give an instance back after an invocation. `ok` is the invocation's outcome; `broken`
    /// means the executor itself failed (the instance goes to Error and is not chosen again).
    pub fn release(&self, lease: Lease, ok: bool, broken: bool, memory_bytes: u64) {
        let mut s = self.lock();
        let Some(i) = s.instances.get_mut(&lease.id) else {
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
        i.state = if broken {
            InstanceState::Error
        } else {
            InstanceState::Ready
        };
        // A broken instance's runtime is stopped now (what it holds returned); its record
        // stays, in Error, until the next reclamation round.
        let dead = if broken { i.runtime.take() } else { None };
        s.dirty.insert(lease.id);
        drop(s);
        drop(lease);
        stop_later(dead.into_iter().collect());
        self.freed.notify_waiters();
    }

    /// Give back an instance taken but not used (its invocation did not start).
    pub fn unused(&self, lease: Lease) {
        let mut s = self.lock();
        if let Some(i) = s.instances.get_mut(&lease.id) {
            i.state = InstanceState::Ready;
            s.dirty.insert(lease.id);
        }
        drop(s);
        self.freed.notify_waiters();
    }

    /// Ask the reclamation policy which instances to stop, and stop them. Only Ready and Error
    /// instances are offered; returns the ids stopped. Blocking (plugin calls): call it from a
    /// blocking thread.
    pub fn reclaim(&self, pressure: &NodePressure) -> Vec<u64> {
        let now = Instant::now();
        let offered: Vec<InstanceStats> = self
            .lock()
            .instances
            .values()
            .filter(|i| matches!(i.state, InstanceState::Ready | InstanceState::Error))
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
        let mut runtimes = Vec::new();
        {
            let mut s = self.lock();
            warm::keep_floors(&s, &mut chosen);
            for id in chosen {
                // It may have been taken for an invocation meanwhile: then it stays.
                let Some(i) = s
                    .instances
                    .get_mut(&id)
                    .filter(|i| matches!(i.state, InstanceState::Ready | InstanceState::Error))
                else {
                    continue;
                };
                i.state = InstanceState::Terminating;
                tracing::info!(instance = id, task = %i.task, "instance reclaimed");
                if let Some(gone) = s.instances.remove(&id) {
                    runtimes.extend(gone.runtime);
                }
                s.dirty.insert(id);
                s.counters.reclaimed += 1;
                stopped.push(id);
            }
        }
        // Their runtimes are stopped (memory, processes returned) outside the lock.
        for r in &runtimes {
            r.stop();
        }
        if !stopped.is_empty() {
            let owner = self.shared.sync.lock().unwrap_or_else(|p| p.into_inner());
            self.shared.flush();
            drop(owner);
            self.freed.notify_waiters();
        }
        stopped
    }

    /// Every instance, for status pages.
    pub fn instances(&self) -> Vec<Instance> {
        self.lock().instances.values().cloned().collect()
    }

    /// Tier and reclamation counts.
    pub fn counters(&self) -> Counters {
        self.lock().counters
    }

    /// Instances currently executing.
    pub fn executing(&self) -> usize {
        self.lock()
            .instances
            .values()
            .filter(|i| i.state == InstanceState::Executing)
            .count()
    }
}

#[cfg(test)]
mod tests;
