//! Shadow evaluation: `[scheduler] shadow = "name"` runs a candidate strategy beside the active
//! one, on the same requests and the same view, and records what it would have done — agreement,
//! invalid answers, latency, the spread it would give — without ever applying a decision.
//!
//! The scheduler hands each round to the shadow as a job on a bounded queue and never waits: the
//! shadow decides on a thread of its own, so a slow, looping or crashing shadow cannot hold up,
//! change or fail a placement. Its calls are guarded like any plugin's (deadline per call, memory
//! limit, quarantine after repeated failures: [`spear_plugin_runtime::StrategySlot`], role
//! `shadow`). When the queue is full the round is skipped (counted) and the next job carries the
//! active strategy's whole view, to bring the shadow's back in line.
//!
//! The shadow's view follows the active one's: it is fed the same changes, and after each batch
//! the nodes either strategy placed on are set to what the active strategy's view holds (the
//! placements that really happened), so the shadow's own hypothetical placements never pile up.

mod stats;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use spear_plugin_api::{Decision, Request, Resources, Target};
use spear_plugin_runtime::{PluginHost, StrategySlot};

use crate::feed::Batch;
use stats::Stats;
pub use stats::{Latency, Named, NodeLoad, ShadowReport, Spread};

/// Rounds waiting for the shadow at most.
const QUEUE: usize = 16;

/// One round for the shadow.
pub(crate) struct Job {
    /// The changes the active strategy heard before deciding.
    feed: Batch,
    /// The batch and the active strategy's decisions (none: the round placed nothing).
    placed: Option<(Vec<Request>, Vec<Decision>)>,
    /// The active view's targets the active strategy placed on, after the round.
    active_targets: Vec<Target>,
    /// The active strategy's whole view, when the shadow's must be rebuilt.
    full: Option<Vec<Target>>,
}

/// A round the shadow has room for ([`Shadow::begin`]), to [`send`](Shadow::send) once the active
/// strategy decided.
pub(crate) struct Ticket {
    full: Option<Vec<Target>>,
}

/// The scheduler's handle on the shadow.
pub struct Shadow {
    tx: SyncSender<Job>,
    /// Jobs sent and not yet taken by the shadow's thread.
    queued: Arc<AtomicUsize>,
    /// A job was dropped, or the shadow was just selected: the next one carries the whole view.
    resync: AtomicBool,
    /// Whether a shadow was selected at the last round.
    was_on: AtomicBool,
    stats: Arc<Mutex<Stats>>,
}

impl std::fmt::Debug for Shadow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shadow").finish_non_exhaustive()
    }
}

impl Shadow {
    /// Start the shadow's thread over `plugins`' shadow slot.
    pub fn start(plugins: Arc<PluginHost>, metrics: crate::metrics::SmsMetrics) -> Self {
        let (tx, rx) = sync_channel(QUEUE);
        let stats = Arc::new(Mutex::new(Stats::default()));
        let queued = Arc::new(AtomicUsize::new(0));
        let (worker_stats, worker_queued) = (stats.clone(), queued.clone());
        let spawned = std::thread::Builder::new()
            .name("sms-shadow".into())
            .spawn(move || work(&plugins, &rx, &worker_queued, &worker_stats, &metrics));
        if let Err(e) = spawned {
            tracing::warn!("cannot start the shadow strategy's thread: {e}; no shadow runs");
        }
        Self {
            tx,
            queued,
            resync: AtomicBool::new(true),
            was_on: AtomicBool::new(false),
            stats,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Stats> {
        self.stats.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether a shadow is selected; when one just was, the next job rebuilds its view.
    pub(crate) fn on(&self, plugins: &PluginHost) -> bool {
        let on = plugins.shadow().active().is_some();
        if on && !self.was_on.swap(true, Ordering::Relaxed) {
            self.resync.store(true, Ordering::Relaxed);
        } else if !on {
            self.was_on.store(false, Ordering::Relaxed);
        }
        on
    }

    /// Whether the shadow has room for a round (called on the scheduler's blocking thread before
    /// the active strategy decides; `strategy` is its slot): none when its queue is full (the
    /// round is skipped, and counted, before anything is copied). The view the shadow must be
    /// brought back to, when it must, is taken here: the one the active strategy decides over.
    pub(crate) fn begin(&self, strategy: &StrategySlot) -> Option<Ticket> {
        if self.queued.load(Ordering::Relaxed) >= QUEUE {
            self.resync.store(true, Ordering::Relaxed);
            self.lock().skipped += 1;
            return None;
        }
        let full = self
            .resync
            .swap(false, Ordering::Relaxed)
            .then(|| strategy.view());
        Some(Ticket { full })
    }

    /// Queue a round begun with [`begin`](Self::begin), right after the active strategy decided.
    /// Never waits.
    pub(crate) fn send(
        &self,
        ticket: Ticket,
        strategy: &StrategySlot,
        feed: Batch,
        placed: Option<(Vec<Request>, Vec<Decision>)>,
    ) {
        let mut ids: Vec<u64> = placed
            .iter()
            .flat_map(|(_, d)| d.iter())
            .filter_map(|d| match d {
                Decision::Assign(t) => Some(*t),
                Decision::Reject(_) => None,
            })
            .collect();
        ids.sort_unstable();
        ids.dedup();
        let job = Job {
            feed,
            placed,
            active_targets: strategy.targets(&ids),
            full: ticket.full,
        };
        self.queued.fetch_add(1, Ordering::Relaxed);
        match self.tx.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.queued.fetch_sub(1, Ordering::Relaxed);
                self.resync.store(true, Ordering::Relaxed);
                self.lock().skipped += 1;
            }
            Err(TrySendError::Disconnected(_)) => {
                self.queued.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }

    /// The report (starting the figures over if the shadow or the active strategy changed
    /// since they were counted).
    pub fn report(&self, plugins: &PluginHost) -> ShadowReport {
        let mut s = self.lock();
        s.follow(plugins);
        s.report()
    }
}

/// The shadow's thread: evaluate each round in order until SMS goes.
fn work(
    plugins: &PluginHost,
    rx: &Receiver<Job>,
    queued: &AtomicUsize,
    stats: &Mutex<Stats>,
    metrics: &crate::metrics::SmsMetrics,
) {
    while let Ok(job) = rx.recv() {
        queued.fetch_sub(1, Ordering::Relaxed);
        stats
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .follow(plugins);
        evaluate(plugins.shadow(), job, stats, metrics);
    }
}

fn evaluate(
    slot: &StrategySlot,
    job: Job,
    stats: &Mutex<Stats>,
    metrics: &crate::metrics::SmsMetrics,
) {
    let lock = || stats.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(full) = job.full {
        let keep: std::collections::BTreeSet<u64> = full.iter().map(|t| t.id).collect();
        let gone: Vec<u64> = slot
            .view()
            .iter()
            .map(|t| t.id)
            .filter(|id| !keep.contains(id))
            .collect();
        if !gone.is_empty() {
            slot.remove(&gone);
        }
        lock().rebuilt(&full);
        slot.upsert(full);
    }
    {
        let mut s = lock();
        for id in &job.feed.removes {
            s.forget(*id);
        }
        for t in &job.feed.upserts {
            s.names.insert(t.id, t.name.clone());
        }
    }
    crate::dispatch::feed(slot, job.feed);
    let Some((requests, active)) = job.placed else {
        return;
    };
    let started = Instant::now();
    let (decisions, decider) = slot.place_traced(&requests);
    let took = started.elapsed();
    metrics.shadow_call_seconds.observe(took.as_secs_f64());
    let (agreed, disagreed) = lock().record(
        &requests,
        &active,
        &decisions,
        &decider,
        u64::try_from(took.as_micros()).unwrap_or(u64::MAX),
    );
    let count = |result: &str, n: u64| {
        if n > 0 {
            metrics
                .shadow_decisions
                .with_label_values(&[result])
                .inc_by(n);
        }
    };
    count("agreed", agreed);
    count("disagreed", disagreed);
    if decider.failure.is_some() {
        count("failed", requests.len() as u64);
    }
    // Back in line with the active view: where the active strategy placed, what it holds;
    // where only the shadow placed, its own placements taken back.
    let placed_by_active: std::collections::BTreeSet<u64> =
        job.active_targets.iter().map(|t| t.id).collect();
    let mut undo: std::collections::BTreeMap<u64, (u32, Resources)> = Default::default();
    for (r, d) in requests.iter().zip(&decisions) {
        if let Decision::Assign(t) = d
            && !placed_by_active.contains(t)
        {
            let e = undo.entry(*t).or_default();
            e.0 += 1;
            e.1 = Resources {
                cpu_millis: e.1.cpu_millis.saturating_add(r.needs.cpu_millis),
                memory_mb: e.1.memory_mb.saturating_add(r.needs.memory_mb),
                disk_mb: e.1.disk_mb.saturating_add(r.needs.disk_mb),
            };
        }
    }
    let ids: Vec<u64> = undo.keys().copied().collect();
    let mut back = job.active_targets;
    for mut t in slot.targets(&ids) {
        if let Some((n, freed)) = undo.get(&t.id) {
            t.active = t.active.saturating_sub(*n);
            t.available = Resources {
                cpu_millis: t.available.cpu_millis.saturating_add(freed.cpu_millis),
                memory_mb: t.available.memory_mb.saturating_add(freed.memory_mb),
                disk_mb: t.available.disk_mb.saturating_add(freed.disk_mb),
            };
        }
        back.push(t);
    }
    if !back.is_empty() {
        slot.upsert(back);
    }
}

impl crate::service::Sms {
    /// How the shadow strategy compares with the active one (`GET /api/v1/plugins/shadow`).
    pub fn shadow_report(&self) -> ShadowReport {
        self.shadow.report(&self.plugins)
    }
}
