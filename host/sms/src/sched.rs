//! The scheduler: one serial decision-maker (as in Spider's design). Each round it
//!
//! 1. puts work from lost nodes back in the queue ([`crate::requeue`]), times out overdue
//!    attempts, and releases executions whose dependencies succeeded, failing those whose
//!    dependencies cannot ([`crate::timers`]);
//! 2. takes the ready queue in its order, by priority with aging (every
//!    [`AGING_MS`](crate::table::AGING_MS) waited counts as one priority level), oldest first
//!    within a level; the table keeps that order as executions change, so a round reads only the
//!    batch it takes;
//! 3. counts each node's free places (its slots plus the prefetch, minus what is placed there:
//!    [`crate::dispatch`]) and takes no bigger a batch than they add up to;
//! 4. asks the active strategy plugin to place the batch over its incremental view of the nodes —
//!    the plugin host validates every decision (healthy, connected, resources, hard affinity,
//!    executor capability) and falls back to round-robin on any failure;
//! 5. dispatches each assignment within its node's free places to the node's bounded stream (a
//!    full node, stream or closed stream leaves the execution queued: back-pressure), and stores
//!    the round in one atomic batch.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::json;
use spear_plugin_api::{Decision, Label, Request};
use tokio::sync::watch;

use crate::error::{Result, SmsError};
use crate::model::{ExecState, Execution, now_ms};
use crate::nodes::EXECUTOR_LABEL;
use crate::service::Sms;

/// How often timeouts and dependencies are checked, at most.
const MAINTENANCE_MS: i64 = 20;

/// Scheduling settings.
#[derive(Debug, Clone, Copy)]
pub struct SchedSettings {
    /// Requests per strategy call.
    pub batch: usize,
    /// Extra time past `timeout_ms` before an attempt is declared timed out.
    pub timeout_grace_ms: i64,
    /// Longest sleep between rounds when nothing wakes the scheduler.
    pub idle_tick: Duration,
}

impl Default for SchedSettings {
    fn default() -> Self {
        Self {
            batch: 256,
            timeout_grace_ms: 2_000,
            idle_tick: Duration::from_millis(50),
        }
    }
}

/// Run rounds until `stop` turns true.
pub async fn run(sms: Arc<Sms>, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = sms.wake.notified() => {}
            _ = tokio::time::sleep(sms.sched.idle_tick) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        // Keep placing while full batches are placed; then wait for news.
        loop {
            match sms.schedule_round().await {
                Ok(placed) if placed >= sms.sched.batch => continue,
                Ok(_) => break,
                Err(e) => {
                    tracing::warn!("scheduling round: {e}");
                    break;
                }
            }
        }
        sms.health.scheduler_beat();
    }
}

fn storage(e: impl std::fmt::Display) -> SmsError {
    SmsError::Storage(e.to_string())
}

/// The strategy's request for execution `e` (made of fields fixed at its submission).
pub(crate) fn request(e: &Execution) -> Request {
    let labels = |m: &std::collections::BTreeMap<String, String>| -> Vec<Label> {
        m.iter()
            .map(|(k, v)| Label::new(k.clone(), v.clone()))
            .collect()
    };
    let mut required = labels(&e.required_labels);
    required.push(Label::new(
        format!("{EXECUTOR_LABEL}{}", e.executable.kind),
        "true",
    ));
    Request {
        id: e.seq,
        task: e
            .task_id
            .clone()
            .unwrap_or_else(|| e.executable.name.clone()),
        labels: labels(&e.labels),
        needs: e.needs.into(),
        required,
        preferred: labels(&e.preferred_labels),
    }
}

impl Sms {
    /// One scheduling round; returns how many executions were assigned.
    pub async fn schedule_round(self: &Arc<Self>) -> Result<usize> {
        // A lost node's work that could not be requeued is tried again next round; placement
        // goes on meanwhile.
        if let Err(e) = self.requeue_lost().await {
            tracing::debug!("requeueing work of lost nodes: {e}");
        }
        if self.prune_soon.swap(false, Ordering::Relaxed) {
            self.prune_streams().await;
        }
        let now = now_ms();
        // Timeouts and dependencies are time-based: look at most every MAINTENANCE_MS.
        if now - self.last_maintenance_ms.load(Ordering::Relaxed) >= MAINTENANCE_MS {
            self.last_maintenance_ms.store(now, Ordering::Relaxed);
            self.expire_and_release().await?;
            self.refresh_unschedulable().await;
        }
        let (free, feed) = self.measure_room().await;
        self.explain_follow(&feed).await;
        if free == 0 {
            // Every node is full: nothing to place until a slot frees (an end wakes the round),
            // unless lower-priority work makes room ([`crate::preempt`]).
            self.feed_strategy(feed).await;
            self.preempt_pass(now).await;
            return Ok(0);
        }
        // The batch, in queue order; those waiting out a retry backoff are passed over.
        let ready: Vec<Execution> = {
            let execs = self.executions.read().await;
            execs
                .ready()
                .filter(|(_, e)| e.not_before_ms <= now)
                .take(self.sched.batch.min(free))
                .map(|(_, e)| e.clone())
                .collect()
        };
        if ready.is_empty() {
            self.feed_strategy(feed).await;
            self.preempt_pass(now).await;
            return Ok(0);
        }
        let requests: Vec<Request> = ready.iter().map(request).collect();
        let plugins = self.plugins.clone();
        // The view the strategy decides over (to explain the round later), when recorded.
        let seen = self.explain_snapshot();
        // A shadow strategy, when one is selected, gets the round too (never waited for).
        let shadow = self.shadow.on(&plugins).then(|| self.shadow.clone());
        // What changed since the last round, then the batch: one trip to a blocking thread.
        let (decisions, decider, requests) = tokio::task::spawn_blocking(move || {
            let strategy = plugins.strategy();
            let ticket = shadow.as_ref().and_then(|s| s.begin(strategy));
            let copy = ticket.as_ref().map(|_| feed.clone());
            crate::dispatch::feed(strategy, feed);
            let (decisions, decider) = strategy.place_traced(&requests);
            if let (Some(shadow), Some(ticket), Some(copy)) = (shadow, ticket, copy) {
                let placed = Some((requests.clone(), decisions.clone()));
                shadow.send(ticket, strategy, copy, placed);
            }
            (decisions, decider, requests)
        })
        .await
        .map_err(storage)?;
        let mut room = self.room_for(&decisions);

        // The node of each decision (only those named: O(batch), not O(nodes)).
        let nodes: Vec<Option<(u64, String)>> = {
            let names = self.target_names.lock().await;
            decisions
                .iter()
                .map(|d| match d {
                    Decision::Assign(t) => names.get(t).map(|n| (*t, n.clone())),
                    Decision::Reject(_) => None,
                })
                .collect()
        };
        let mut round = Vec::new();
        // What became of each decision, and each execution's wait (for explain).
        let mut dispatched = Vec::with_capacity(ready.len());
        let mut waited_ms = Vec::with_capacity(if seen.is_some() { ready.len() } else { 0 });
        for (picked, node) in ready.into_iter().zip(nodes) {
            if seen.is_some() {
                let placeable = picked.submitted_at_ms.max(picked.not_before_ms);
                waited_ms.push((now - placeable).max(0));
            }
            let Some((target, node)) = node else {
                dispatched.push(crate::explain::Dispatch::Rejected);
                continue;
            };
            // Recovering by migration: not back to the node its last attempt left. (The
            // strategy counted its own choice: `decisions` keeps it, for explain's view.)
            let (target, node, from) = match self.migrate_away(&picked, &node, &mut room).await {
                crate::recovery::Away::Stays => (target, node, None),
                crate::recovery::Away::To(to, uuid) => (to, uuid, Some(node)),
                crate::recovery::Away::Wait => {
                    let why = crate::recovery::NO_PLACE;
                    dispatched.push(crate::explain::Dispatch::Left(why));
                    continue;
                }
            };
            let id = picked.execution_id.clone();
            let _owned = self.exec_locks.lock(&id).await;
            // Look again as its owner: a cancel or a late report may have changed it since the
            // batch was picked, and every such change takes it out of `ready` (only this
            // scheduler brings one back); then it is left for the next round.
            let unchanged = self.executions.read().await.get(&id).is_some_and(|now| {
                now.state == ExecState::Ready && now.updated_at_ms == picked.updated_at_ms
            });
            // A node without a stream takes nothing (back-pressure: the execution stays
            // queued); the strategy may put more on a node in one batch than it has room for.
            let left = if !unchanged {
                Some("the execution changed before it could be assigned (cancelled, or reported)")
            } else if !self.connected(&node).await {
                Some("the node's assignment stream closed")
            } else if !room.take(target) {
                Some(
                    "the node had no place left (the strategy put more there than it has room for)",
                )
            } else {
                None
            };
            if let Some(why) = left {
                dispatched.push(crate::explain::Dispatch::Left(why));
                continue;
            }
            dispatched.push(match &from {
                Some(_) => crate::explain::Dispatch::Migrated { to: target },
                None => crate::explain::Dispatch::Assigned,
            });
            let mut exec = picked.clone();
            exec.state = ExecState::Assigned;
            exec.node_uuid = Some(node.clone());
            exec.attempt += 1;
            exec.assigned_at_ms = now_ms();
            exec.updated_at_ms = exec.assigned_at_ms;
            exec.error = None;
            exec.orphaned_on = None;
            exec.preempting_ms = 0;
            exec.preempt_grace_ms = 0;
            // Queued while the execution is owned, so every later write of it is stored after
            // this one; the storage commits the round's writes together, and the assignment
            // leaves SMS only once they are durable ([`crate::outbox`]). (A write that cannot
            // even be queued ends the round: what it placed so far is still sent.)
            let write = match crate::history::exec_ops(&exec).and_then(|ops| {
                self.events.queue(
                    ops,
                    vec![(
                        "execution.assigned",
                        id.clone(),
                        match &from {
                            Some(left) => json!({"node_uuid": node, "attempt": exec.attempt,
                                "migrated_from": left}),
                            None => json!({"node_uuid": node, "attempt": exec.attempt}),
                        },
                    )],
                )
            }) {
                Ok(w) => w,
                Err(e) => {
                    self.send_later(round);
                    return Err(e);
                }
            };
            let placeable = picked.submitted_at_ms.max(picked.not_before_ms);
            self.metrics
                .placement_seconds
                .observe((exec.assigned_at_ms - placeable).max(0) as f64 / 1000.0);
            self.storing(&exec).await;
            self.executions.write().await.insert(id, exec.clone());
            round.push(crate::outbox::Stored {
                before: picked,
                assigned: exec,
                write,
            });
        }
        let n = round.len();
        if n > 0 {
            self.metrics.round_placements.observe(n as f64);
        }
        if let Some(view) = seen {
            self.explain_keep(
                crate::explain::Round {
                    no: 0,
                    at_ms: now,
                    decider,
                    seqs: requests.iter().map(|r| r.id).collect(),
                    waited_ms,
                    decisions,
                    dispatch: dispatched,
                    view,
                },
                &requests,
            );
        }
        self.send_later(round);
        self.preempt_pass(now).await;
        Ok(n)
    }

    /// Send `round` once its writes are durable, in a task of its own: the next round need not
    /// wait for this one's commit (its executions are already assigned in memory: they take
    /// room, and no round picks them again).
    fn send_later(self: &Arc<Self>, round: Vec<crate::outbox::Stored>) {
        if !round.is_empty() {
            let sms = self.clone();
            tokio::spawn(async move { sms.send_stored(round).await });
        }
    }
}
