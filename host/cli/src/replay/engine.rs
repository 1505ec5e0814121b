//! The simulation behind `spear sim`: one strategy over one trace, from event to event.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap, HashSet};

use spear_plugin_api::{Decision, Label, Outcome, Request, Resources, Target};
use spear_plugin_runtime::instance::StrategyInstance;

use super::preempt::{Budget, CANDIDATES, LOOK_MS, Mode, PreemptArgs, RESTART_MS, SCAN, SETTLE_MS};
use super::{SimResult, pct};
use crate::error::{CliError, Result};
use crate::trace::{Trace, TraceExecution};

/// Waiting this long raises a queued execution by one priority level (SMS's).
const AGING_MS: i64 = 10_000;
/// SMS's default `[deadlines] urgency_window_ms`.
const URGENCY_WINDOW_MS: i64 = 30_000;
/// Requests per strategy call (SMS's default batch).
const BATCH: usize = 256;
/// Consecutive failed calls after which a strategy's replay is abandoned.
const MAX_FAILURES: u32 = 3;
/// The executor label SMS gives a node per executable type.
const EXECUTOR_LABEL: &str = "spear.io/executor.";

/// A place in the queue: higher first, then the earlier in the trace.
type QueueKey = (Reverse<i64>, usize);

/// What happens at a time; at one time, ends come first, then stops, then the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    /// A run ends (its execution is done).
    End,
    /// A victim's grace is over: it leaves its node.
    Stop,
    /// A preempted execution may be placed again: a round, and a look.
    Ready,
    /// Only a look (a settle, the look's throttle or the budget ends).
    Look,
}

/// (time, kind, node, execution, run): an event for a run that is over by then is ignored.
/// (Ends at one time go by node, then execution, as they always have: results stay put.)
type Event = Reverse<(u64, Kind, usize, usize, u32)>;

/// Preemptions an execution may make without being placed (the strategy keeps putting it
/// elsewhere, or nowhere): then it preempts no more, or a replay could preempt forever. (SMS
/// goes on, within its budget.)
const MAX_FRUITLESS: u32 = 3;

/// A node of the simulated cluster.
struct Node {
    target: Target,
    slots: u32,
    running: u32,
    busy_ms: u64,
    /// Its runs that may be preempted: (priority, latest started first, execution).
    victims: BTreeSet<(i64, Reverse<u64>, usize)>,
}

/// A run in progress.
#[derive(Clone, Copy)]
struct Run {
    node: usize,
    started: u64,
    ends: u64,
    preempting: bool,
}

fn priority_level(p: &str) -> i64 {
    match p {
        "low" => 0,
        "high" => 2,
        "urgent" => 3,
        _ => 1,
    }
}

/// SMS's queue order: priority × aging less the time it waits "since" (its submission or its
/// restart, or for one with a deadline, its deadline less the urgency window).
fn queue_key(e: &TraceExecution, i: usize, since: u64) -> QueueKey {
    let since = i64::try_from(since).unwrap_or(i64::MAX);
    let since = match e.deadline_ms {
        Some(d) => i64::try_from(d)
            .unwrap_or(i64::MAX)
            .saturating_sub(URGENCY_WINDOW_MS)
            .max(since.saturating_sub(URGENCY_WINDOW_MS)),
        None => since,
    };
    (
        Reverse(
            priority_level(&e.priority)
                .saturating_mul(AGING_MS)
                .saturating_sub(since),
        ),
        i,
    )
}

fn request(i: usize, e: &TraceExecution) -> Request {
    let mut required: Vec<Label> = e
        .required_labels
        .iter()
        .map(|(k, v)| Label::new(k.clone(), v.clone()))
        .collect();
    required.push(Label::new(format!("{EXECUTOR_LABEL}{}", e.kind), "true"));
    Request {
        id: i as u64,
        task: e.id.clone(),
        labels: vec![],
        needs: Resources {
            cpu_millis: e.needs.cpu_millis,
            memory_mb: e.needs.memory_mb,
            disk_mb: e.needs.disk_mb,
        },
        required,
        preferred: vec![],
    }
}

fn nodes_of(trace: &Trace) -> Vec<Node> {
    trace
        .nodes
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let mut labels: Vec<Label> = n
                .labels
                .iter()
                .map(|(k, v)| Label::new(k.clone(), v.clone()))
                .collect();
            for e in &n.executors {
                labels.push(Label::new(format!("{EXECUTOR_LABEL}{e}"), "true"));
            }
            let capacity = Resources {
                cpu_millis: n.cpu_millis,
                memory_mb: n.memory_mb,
                disk_mb: u64::MAX / 2,
            };
            Node {
                target: Target {
                    id: i as u64 + 1,
                    name: n.name.clone(),
                    labels,
                    capacity,
                    available: capacity,
                    active: 0,
                    weight: 1,
                    healthy: true,
                },
                slots: n.slots.max(1),
                running: 0,
                busy_ms: 0,
                victims: BTreeSet::new(),
            }
        })
        .collect()
}

/// One replay: the cluster, the queue, the runs and the counts.
pub(super) struct Sim<'a> {
    execs: &'a [TraceExecution],
    requests: Vec<Request>,
    preemption: PreemptArgs,
    label: &'a str,
    nodes: Vec<Node>,
    events: BinaryHeap<Event>,
    wakes: BTreeSet<u64>,
    queue: BTreeSet<QueueKey>,
    /// Where each execution stands in the queue, while it is there.
    keys: Vec<Option<QueueKey>>,
    /// When each was queued last (its submission or its stop).
    queued_at: Vec<u64>,
    /// When each is placeable from (its submission, or 500 ms after its stop).
    since: Vec<u64>,
    /// Preemptions each made since it was last placed.
    fruitless: Vec<u32>,
    /// Each one's run, while it runs.
    runs: Vec<Option<Run>>,
    /// Each one's runs so far (an event of another is stale).
    run_no: Vec<u32>,
    /// Work each has kept from stopped runs (a checkpoint), ms.
    kept_ms: Vec<u64>,
    started_once: Vec<bool>,
    /// Waiting execution → the victim stopping for it.
    waits_on: HashMap<usize, usize>,
    budget: Budget,
    last_look: Option<u64>,
    changed: BTreeSet<usize>,
    outcomes: Vec<Outcome>,
    waits: Vec<u64>,
    completed: u64,
    misses: u64,
    invalid: u64,
    over_room: u64,
    failed: u64,
    consecutive: u32,
    preemptions: u64,
    lost_ms: u64,
    last_end: u64,
}

impl<'a> Sim<'a> {
    /// A replay of `trace`, not started.
    pub(super) fn new(trace: &'a Trace, preemption: PreemptArgs, label: &'a str) -> Self {
        let execs = &trace.executions[..];
        let n = execs.len();
        Self {
            execs,
            requests: execs
                .iter()
                .enumerate()
                .map(|(i, e)| request(i, e))
                .collect(),
            preemption,
            label,
            nodes: nodes_of(trace),
            events: BinaryHeap::new(),
            wakes: BTreeSet::new(),
            queue: BTreeSet::new(),
            keys: vec![None; n],
            queued_at: vec![0; n],
            since: vec![0; n],
            fruitless: vec![0; n],
            runs: vec![None; n],
            run_no: vec![0; n],
            kept_ms: vec![0; n],
            started_once: vec![false; n],
            waits_on: HashMap::new(),
            budget: Budget::default(),
            last_look: None,
            changed: BTreeSet::new(),
            outcomes: Vec::new(),
            waits: Vec::with_capacity(n),
            completed: 0,
            misses: 0,
            invalid: 0,
            over_room: 0,
            failed: 0,
            consecutive: 0,
            preemptions: 0,
            lost_ms: 0,
            last_end: 0,
        }
    }

    fn fail(&self, what: &str, e: &dyn std::fmt::Display) -> CliError {
        CliError::Usage(format!("{}: {what}: {e}", self.label))
    }

    /// Run it through `strategy` to the end.
    pub(super) fn run(mut self, strategy: &mut dyn StrategyInstance) -> Result<SimResult> {
        let all: Vec<Target> = self.nodes.iter().map(|n| n.target.clone()).collect();
        strategy.upsert(&all).map_err(|e| self.fail("upsert", &e))?;
        self.preemption.validate()?;
        let mut next = 0usize;
        loop {
            let arrival = self.execs.get(next).map(|e| e.submit_ms);
            let event = self.events.peek().map(|Reverse((t, ..))| *t);
            // Anything a round could act on: an arrival, an end, a stop, a restart delay over.
            let mut news = false;
            let now = match (arrival, event) {
                (Some(a), Some(e)) => a.min(e),
                (Some(t), None) | (None, Some(t)) => t,
                (None, None) => break,
            };
            while let Some(Reverse((t, kind, _, i, run))) = self.events.peek().copied() {
                if t > now {
                    break;
                }
                self.events.pop();
                match kind {
                    Kind::End if self.run_no[i] == run => news |= self.end(i, t),
                    Kind::Stop if self.run_no[i] == run => news |= self.stop(i, t),
                    Kind::Ready => news = true,
                    Kind::Look => {
                        self.wakes.remove(&t);
                    }
                    _ => {}
                }
            }
            while self.execs.get(next).is_some_and(|e| e.submit_ms <= now) {
                let at = self.execs[next].submit_ms;
                self.enqueue(next, at, at);
                next += 1;
                news = true;
            }
            if news {
                self.rounds(strategy, now)?;
            }
            if self.preemption.mode == Mode::Cluster {
                self.look(now);
            }
        }
        Ok(self.result())
    }

    /// Queue `i`, queued at `at` and placeable from `since`.
    fn enqueue(&mut self, i: usize, at: u64, since: u64) {
        let key = queue_key(&self.execs[i], i, since);
        self.queued_at[i] = at;
        self.since[i] = since;
        self.keys[i] = Some(key);
        self.queue.insert(key);
    }

    /// A look at `at`.
    fn wake(&mut self, at: u64) {
        if self.wakes.insert(at) {
            self.events.push(Reverse((at, Kind::Look, 0, 0, 0)));
        }
    }

    /// Free `i`'s place on its node; its run is over.
    fn leave(&mut self, i: usize, now: u64) -> Option<Run> {
        let run = self.runs[i].take()?;
        let node = &mut self.nodes[run.node];
        node.running -= 1;
        let needs = self.requests[i].needs;
        let a = &mut node.target.available;
        a.cpu_millis += needs.cpu_millis;
        a.memory_mb += needs.memory_mb;
        node.target.active = node.running;
        node.victims.remove(&(
            priority_level(&self.execs[i].priority),
            Reverse(run.started),
            i,
        ));
        // Busy until now, not until the end it was placed for.
        node.busy_ms = node.busy_ms.saturating_sub(run.ends.saturating_sub(now));
        self.changed.insert(run.node);
        Some(run)
    }

    /// `i`'s run ends; whether it was still running.
    fn end(&mut self, i: usize, now: u64) -> bool {
        let Some(run) = self.leave(i, now) else {
            return false;
        };
        self.completed += 1;
        self.last_end = self.last_end.max(now);
        if self.execs[i].deadline_ms.is_some_and(|d| now > d) {
            self.misses += 1;
        }
        self.outcomes.push(Outcome {
            request: i as u64,
            target: self.nodes[run.node].target.id,
            success: true,
            latency_us: now.saturating_sub(run.started).saturating_mul(1000),
        });
        true
    }

    /// A victim's grace is over: back to the queue, its attempt not spent, with the work it
    /// kept when it checkpoints; whether it was still running.
    fn stop(&mut self, i: usize, now: u64) -> bool {
        let Some(run) = self.leave(i, now) else {
            return false;
        };
        let ran = now.saturating_sub(run.started);
        if self.execs[i].checkpoint {
            self.kept_ms[i] = self.kept_ms[i].saturating_add(ran);
        } else {
            self.lost_ms = self.lost_ms.saturating_add(ran);
        }
        self.run_no[i] += 1;
        let from = now.saturating_add(RESTART_MS);
        self.enqueue(i, now, from);
        self.events.push(Reverse((from, Kind::Ready, 0, i, 0)));
        true
    }

    fn place(&mut self, i: usize, n: usize, now: u64) {
        if let Some(key) = self.keys[i].take() {
            self.queue.remove(&key);
        }
        let e = &self.execs[i];
        let left = e.duration_ms.saturating_sub(self.kept_ms[i]);
        let ends = now.saturating_add(left);
        self.run_no[i] += 1;
        self.fruitless[i] = 0;
        let node = &mut self.nodes[n];
        node.running += 1;
        node.target.active = node.running;
        node.target.available = node
            .target
            .available
            .saturating_sub(&self.requests[i].needs);
        node.busy_ms = node.busy_ms.saturating_add(left);
        node.victims
            .insert((priority_level(&e.priority), Reverse(now), i));
        self.changed.insert(n);
        if !std::mem::replace(&mut self.started_once[i], true) {
            self.waits.push(now.saturating_sub(e.submit_ms));
        }
        self.runs[i] = Some(Run {
            node: n,
            started: now,
            ends,
            preempting: false,
        });
        self.events
            .push(Reverse((ends, Kind::End, n, i, self.run_no[i])));
    }

    /// Scheduling rounds at `now`, while they place something.
    fn rounds(&mut self, strategy: &mut dyn StrategyInstance, now: u64) -> Result<()> {
        loop {
            if !self.changed.is_empty() {
                let view: Vec<Target> = self
                    .changed
                    .iter()
                    .map(|n| {
                        let node = &self.nodes[*n];
                        let mut t = node.target.clone();
                        t.healthy = node.running < node.slots;
                        t
                    })
                    .collect();
                self.changed.clear();
                strategy
                    .upsert(&view)
                    .map_err(|e| self.fail("upsert", &e))?;
            }
            if !self.outcomes.is_empty() {
                strategy
                    .observe(&self.outcomes)
                    .map_err(|e| self.fail("observe", &e))?;
                self.outcomes.clear();
            }
            let free: u64 = self
                .nodes
                .iter()
                .map(|n| u64::from(n.slots - n.running))
                .sum();
            if self.queue.is_empty() || free == 0 {
                return Ok(());
            }
            let batch: Vec<usize> = self
                .queue
                .iter()
                .map(|(_, i)| *i)
                .filter(|i| self.since[*i] <= now)
                .take(BATCH.min(usize::try_from(free).unwrap_or(usize::MAX)))
                .collect();
            if batch.is_empty() {
                return Ok(());
            }
            let requests: Vec<Request> = batch.iter().map(|i| self.requests[*i].clone()).collect();
            let decisions = match strategy.place(&requests) {
                Ok(d) if d.len() == requests.len() => {
                    self.consecutive = 0;
                    d
                }
                Ok(d) => {
                    let why = format!("{} decisions for {} requests", d.len(), requests.len());
                    return Err(self.fail("place", &why));
                }
                Err(e) => {
                    self.failed += 1;
                    self.consecutive += 1;
                    if self.consecutive >= MAX_FAILURES {
                        let why = format!("{e} ({MAX_FAILURES} calls in a row failed)");
                        return Err(self.fail("place", &why));
                    }
                    return Ok(());
                }
            };
            let mut placed = 0;
            for (i, d) in batch.into_iter().zip(&decisions) {
                let Decision::Assign(t) = d else { continue };
                let Some(n) = usize::try_from(*t)
                    .ok()
                    .and_then(|t| t.checked_sub(1))
                    .filter(|n| *n < self.nodes.len())
                else {
                    self.invalid += 1;
                    continue;
                };
                let r = &self.requests[i];
                let node = &self.nodes[n];
                let fits = node.target.available.covers(&r.needs)
                    && r.required.iter().all(|l| node.target.has_label(l));
                self.changed.insert(n);
                if !fits {
                    self.invalid += 1;
                } else if node.running >= node.slots {
                    self.over_room += 1;
                } else {
                    self.place(i, n, now);
                    placed += 1;
                }
            }
            if placed == 0 {
                return Ok(());
            }
        }
    }

    /// Whether node `n` could ever hold `i` (its labels and executor, and its capacity).
    fn could_hold(&self, n: usize, i: usize) -> bool {
        let t = &self.nodes[n].target;
        let r = &self.requests[i];
        t.capacity.covers(&r.needs) && r.required.iter().all(|l| t.has_label(l))
    }

    /// Preempt for the most urgent work that waits (see [`super::preempt`]).
    fn look(&mut self, now: u64) {
        if self.queue.is_empty() {
            return;
        }
        if let Some(last) = self.last_look
            && now < last.saturating_add(LOOK_MS)
        {
            self.wake(last.saturating_add(LOOK_MS));
            return;
        }
        self.last_look = Some(now);
        let cfg = self.preemption;
        let gap = i64::from(cfg.min_priority_gap);
        // A waiting execution may preempt again once its victim has stopped.
        let runs = &self.runs;
        self.waits_on
            .retain(|_, v| runs[*v].is_some_and(|r| r.preempting));
        let mut settle = None;
        let mut wanting: Vec<usize> = Vec::new();
        for (_, i) in self.queue.iter().take(SCAN) {
            let i = *i;
            if self.since[i] > now
                || priority_level(&self.execs[i].priority) < gap
                || self.waits_on.contains_key(&i)
                || self.fruitless[i] >= MAX_FRUITLESS
            {
                continue;
            }
            // As SMS: settled 250 ms after it was queued, once placeable.
            let settled = self.queued_at[i].saturating_add(SETTLE_MS);
            if settled > now {
                settle = Some(settle.map_or(settled, |s: u64| s.min(settled)));
                continue;
            }
            wanting.push(i);
            if wanting.len() >= CANDIDATES {
                break;
            }
        }
        if let Some(at) = settle {
            self.wake(at);
        }
        wanting.sort_by_key(|i| Reverse(priority_level(&self.execs[*i].priority)));
        let mut taken = HashSet::new();
        for want in wanting {
            let level = priority_level(&self.execs[want].priority);
            let mut fit = Vec::new();
            let mut free = false;
            for n in 0..self.nodes.len() {
                if !self.could_hold(n, want) {
                    continue;
                }
                if self.nodes[n].running < self.nodes[n].slots {
                    free = true;
                    break;
                }
                fit.push(n);
            }
            if free {
                continue;
            }
            let best = fit
                .into_iter()
                .filter_map(|n| {
                    self.nodes[n]
                        .victims
                        .iter()
                        .find(|(_, _, v)| !taken.contains(v))
                        .filter(|(p, _, _)| p.saturating_add(gap) <= level)
                        .copied()
                })
                .min();
            let Some((_, _, victim)) = best else {
                continue;
            };
            if !self.budget.try_spend(now, cfg.budget_per_minute) {
                self.wake(self.budget.next_free().max(now + 1));
                return;
            }
            taken.insert(victim);
            self.preempt(want, victim, now);
        }
    }

    fn preempt(&mut self, want: usize, victim: usize, now: u64) {
        let Some(run) = self.runs[victim].as_mut() else {
            return;
        };
        run.preempting = true;
        let (n, started) = (run.node, run.started);
        let level = priority_level(&self.execs[victim].priority);
        self.nodes[n]
            .victims
            .remove(&(level, Reverse(started), victim));
        self.waits_on.insert(want, victim);
        self.fruitless[want] += 1;
        self.preemptions += 1;
        let stop = now.saturating_add(self.preemption.grace_ms);
        self.events
            .push(Reverse((stop, Kind::Stop, n, victim, self.run_no[victim])));
    }

    fn result(mut self) -> SimResult {
        let first = self.execs.first().map_or(0, |e| e.submit_ms);
        let makespan = self.last_end.saturating_sub(first).max(1);
        let utilisation: BTreeMap<String, f64> = self
            .nodes
            .iter()
            .map(|n| {
                (
                    n.target.name.clone(),
                    n.busy_ms as f64 / (n.slots as f64 * makespan as f64),
                )
            })
            .collect();
        let busy: Vec<f64> = self.nodes.iter().map(|n| n.busy_ms as f64).collect();
        let mean = busy.iter().sum::<f64>() / busy.len().max(1) as f64;
        let cv = if mean > 0.0 {
            (busy.iter().map(|b| (b - mean).powi(2)).sum::<f64>() / busy.len() as f64).sqrt() / mean
        } else {
            0.0
        };
        SimResult {
            strategy: self.label.to_owned(),
            plugin: String::new(),
            completed: self.completed,
            unplaced: self.queue.len() as u64,
            wait_p50_ms: pct(&mut self.waits, 0.5),
            wait_p99_ms: pct(&mut self.waits, 0.99),
            makespan_ms: makespan,
            utilisation_mean: utilisation.values().sum::<f64>() / utilisation.len().max(1) as f64,
            utilisation,
            balance_cv: cv,
            deadline_misses: self.misses,
            invalid_decisions: self.invalid,
            over_room: self.over_room,
            failed_calls: self.failed,
            preemptions: self.preemptions,
            preempted_work_lost_ms: self.lost_ms,
            replay_ms: 0,
        }
    }
}
