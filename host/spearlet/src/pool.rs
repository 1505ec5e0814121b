//! Task instances and their pools (the Spearlet redesign's instance model).
//!
//! An instance is one ready-to-run copy of a task on this node: its artifact fetched and verified,
//! its executor chosen, its figures kept, and, for an instance serving invocations, its live
//! runtime in that executor. It goes through the states of [`Phase`] (see [`phase`]): it is
//! Initializing while its artifact is fetched, WarmingUp while its executor starts it, then
//! Ready and Executing by turns. An idle one may be Paused by its executor and is resumed when
//! taken; one whose executor is swapped out while it serves is CoolingDown and stops when its
//! invocation ends; one being stopped is Terminating until its runtime has stopped. An instance
//! in Error is never chosen again, does not count against its task's limit, and is removed at the
//! next reclamation round whatever the policy says. An instance runs one invocation at a time.
//!
//! Tiers: an invocation is **hot** when it gets a Ready instance used within [`HOT_WINDOW`],
//! **warm** when it gets an older Ready (or a Paused) instance (artifact local, compiled code
//! cached by the executor), and **cold** when a new instance must be initialized (fetch, verify).
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
//! behind the pool, whatever order threads run in. A state another thread may change while a
//! plugin call runs outside the lock (Pausing, Terminating) is owned by the thread that set it:
//! only that thread moves the instance on, and only if it is still in that state.

use std::collections::{BTreeMap, BTreeSet, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use spear_plugin_api::Decision;
use spear_plugin_runtime::PluginHost;

mod acquire;
mod instance;
mod pause;
pub mod phase;
mod reclaim;
mod retire;
mod warm;

pub use instance::{Counters, Instance, Lease, Runtime, Tier};
pub use phase::{Phase, Serving};

/// A Ready instance used this recently serves a hot invocation.
pub const HOT_WINDOW: Duration = Duration::from_secs(60);
/// Invocations remembered per instance for the recent error rate.
const RECENT: usize = 20;

/// Idle time after which the built-in default stops a Ready instance: `idle-time`'s default.
pub const DEFAULT_IDLE: Duration = Duration::from_secs(300);

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
                state: Phase::Initializing,
                invocations: 0,
                errors: 0,
                memory_bytes: 0,
                runtime: None,
                created: now,
                last_used: now,
                recent: VecDeque::new(),
                retire: false,
            },
        );
        id
    }

    fn usable(&self, id: u64, task: &str) -> bool {
        self.instances
            .get(&id)
            .is_some_and(|i| i.task == task && i.state == Phase::Ready)
    }

    /// Take `chosen` if it is a Ready instance of `task`, else any Ready instance of it (a
    /// waiting invocation must never wait on a Ready instance), else its Paused instance used
    /// last (to be resumed), and mark it Executing `serving`.
    fn take(&mut self, task: &str, chosen: Option<u64>, serving: &Serving) -> Option<Lease> {
        let ready = chosen.filter(|id| self.usable(*id, task)).or_else(|| {
            self.instances
                .values()
                .find(|i| i.task == task && i.state == Phase::Ready)
                .map(|i| i.id)
        });
        let (id, resume) = match ready {
            Some(id) => (id, false),
            None => {
                let paused = self
                    .instances
                    .values()
                    .filter(|i| i.task == task && i.state == Phase::Paused)
                    .max_by_key(|i| i.last_used)?;
                (paused.id, true)
            }
        };
        let i = self.instances.get_mut(&id).expect("found above");
        let tier = if !resume && i.last_used.elapsed() < HOT_WINDOW {
            Tier::Hot
        } else {
            Tier::Warm
        };
        i.state = Phase::Executing(serving.clone());
        let lease = Lease {
            id,
            artifact: i.artifact.clone(),
            tier,
            runtime: i.runtime.clone(),
            resume,
        };
        match tier {
            Tier::Hot => self.counters.hot += 1,
            _ => self.counters.warm += 1,
        }
        if resume {
            self.counters.resumed += 1;
        }
        self.dirty.insert(id);
        Some(lease)
    }

    /// Mark instance `id` Terminating and hand out its runtime, for the caller to stop outside
    /// the lock and then [`Shared::forget`]; one without a runtime is removed at once.
    fn leave(&mut self, id: u64) -> Option<(u64, Runtime)> {
        let i = self.instances.get_mut(&id)?;
        self.dirty.insert(id);
        match i.runtime.take() {
            Some(r) => {
                i.state = Phase::Terminating;
                Some((id, r))
            }
            None => {
                self.instances.remove(&id);
                None
            }
        }
    }
}

/// What the blocking threads that talk to plugins share with the pool.
#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    /// Held while the strategy's view is updated and asked: one owner at a time.
    sync: Mutex<()>,
    plugins: Arc<PluginHost>,
    /// Woken when an instance is given back or removed.
    freed: tokio::sync::Notify,
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
    fn choose(&self, request: spear_plugin_api::Request) -> Option<u64> {
        let _owner = self.sync.lock().unwrap_or_else(|p| p.into_inner());
        self.flush();
        match self.plugins.strategy().place(&[request]).pop() {
            Some(Decision::Assign(id)) => Some(id),
            _ => None,
        }
    }

    /// Stop the runtimes of instances made Terminating by [`State::leave`] (blocking: plugin
    /// calls), then forget those instances.
    fn stop(&self, leaving: Vec<(u64, Runtime)>) {
        if leaving.is_empty() {
            return;
        }
        for (_, r) in &leaving {
            r.stop();
        }
        {
            let mut s = self.lock();
            for (id, _) in &leaving {
                if s.instances
                    .get(id)
                    .is_some_and(|i| i.state == Phase::Terminating)
                {
                    s.instances.remove(id);
                    s.dirty.insert(*id);
                }
            }
        }
        // The runtimes (and the working directories they hold) go after their stop.
        drop(leaving);
        self.freed.notify_waiters();
    }
}

/// Stop `leaving` (see [`Shared::stop`]) on a blocking thread, without waiting (here, when no
/// runtime runs this thread).
fn stop_later(shared: &Arc<Shared>, leaving: Vec<(u64, Runtime)>) {
    if leaving.is_empty() {
        return;
    }
    let shared = shared.clone();
    let stop = move || shared.stop(leaving);
    match tokio::runtime::Handle::try_current() {
        Ok(rt) => drop(rt.spawn_blocking(stop)),
        Err(_) => stop(),
    }
}

/// Every task's instances on this node.
#[derive(Debug)]
pub struct Pools {
    shared: Arc<Shared>,
    max_per_task: usize,
    max_instances: usize,
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

/// Handed to an instance's initialisation: it tells the pool when the instance moves on from
/// fetching its artifact to its executor's start.
#[derive(Debug, Clone)]
pub struct Starting {
    shared: Arc<Shared>,
    id: u64,
}

impl Starting {
    /// The instance's artifact is here: its executor starts it now (WarmingUp).
    pub fn warming_up(&self) {
        let mut s = self.shared.lock();
        if let Some(i) = s.instances.get_mut(&self.id)
            && i.state == Phase::Initializing
        {
            i.state = Phase::WarmingUp;
            s.dirty.insert(self.id);
        }
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
                freed: tokio::sync::Notify::new(),
            }),
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

    /// Every instance, for status pages.
    pub fn instances(&self) -> Vec<Instance> {
        self.lock().instances.values().cloned().collect()
    }

    /// Tier and reclamation counts.
    pub fn counters(&self) -> Counters {
        self.lock().counters
    }

    /// Instances currently serving an invocation.
    pub fn executing(&self) -> usize {
        self.lock()
            .instances
            .values()
            .filter(|i| i.state.is_busy())
            .count()
    }
}

#[cfg(test)]
mod lifecycle_tests;
#[cfg(test)]
mod tests;
