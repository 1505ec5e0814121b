//! Stalls of this process (SIGSTOP, a frozen VM, a swap storm). While the agent stood still, SMS
//! may have declared the node lost and given its queued work to another node. [`StallWatch`]
//! notices a stall by the gap between ticks of its own clock and counts it in an epoch. The
//! assignment stream is reopened after each stall (SMS then sends again what is still placed here,
//! as of that moment); an assignment that came on a stream opened before the latest stall is checked
//! with SMS before it starts: this node, the same attempt, still placed. One that moved is dropped
//! without a report. Without a stall nothing is asked.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use spear_proto::v1;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::agent::Agent;

/// Notices stalls; see the module docs.
#[derive(Debug)]
pub struct StallWatch {
    threshold: Duration,
    last_tick: Mutex<Instant>,
    /// Stalls noticed since start.
    epoch: watch::Sender<u64>,
}

impl StallWatch {
    /// A watch that calls a gap of more than `threshold` between its ticks a stall.
    pub fn new(threshold: Duration) -> Arc<Self> {
        Arc::new(Self {
            threshold,
            last_tick: Mutex::new(Instant::now()),
            epoch: watch::Sender::new(0),
        })
    }

    /// Tick until the task is dropped.
    pub async fn run(self: Arc<Self>) {
        let every = (self.threshold / 4).max(Duration::from_millis(50));
        loop {
            tokio::time::sleep(every).await;
            self.tick(Instant::now());
        }
    }

    fn tick(&self, now: Instant) {
        let gap = {
            let mut last = self.last_tick.lock().unwrap_or_else(|p| p.into_inner());
            let gap = now.saturating_duration_since(*last);
            *last = now;
            gap
        };
        if gap > self.threshold {
            self.epoch.send_modify(|e| *e += 1);
            tracing::warn!(
                stalled_ms = gap.as_millis() as u64,
                "this process stood still; the assignment stream is reopened and queued assignments are checked with SMS before they start"
            );
        }
    }

    /// The stalls noticed so far (noticing one now if the ticker has not run since it ended).
    pub fn epoch(&self) -> u64 {
        let now = Instant::now();
        let late = {
            let last = self.last_tick.lock().unwrap_or_else(|p| p.into_inner());
            now.saturating_duration_since(*last) > self.threshold
        };
        if late {
            self.tick(now);
        }
        *self.epoch.borrow()
    }

    /// Changes of the epoch (for the assignment stream, which reopens after a stall).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.epoch.subscribe()
    }

    /// Whether an assignment from a stream opened at `stream_epoch` must be checked with SMS
    /// before it starts: a stall happened since.
    pub fn must_check(&self, stream_epoch: u64) -> bool {
        self.epoch() > stream_epoch
    }

    /// Stalls noticed since start.
    pub fn stalls(&self) -> u64 {
        *self.epoch.borrow()
    }
}

/// What SMS says of an execution now, retrying until it answers (a node that cannot reach SMS
/// starts nothing it may have lost; it gives up only when the agent drains).
async fn ask(agent: &Agent, id: &str) -> Option<v1::Execution> {
    let mut wait = Duration::from_millis(200);
    loop {
        let mut client = agent.sms.executions();
        let asked = client.get_execution(v1::ExecutionRef {
            execution_id: id.to_owned(),
        });
        match tokio::time::timeout(Duration::from_secs(5), asked).await {
            Ok(Ok(now)) => return Some(now.into_inner()),
            Ok(Err(s)) if s.code() == tonic::Code::NotFound => return None,
            _ if *agent.draining.borrow() => return None,
            _ => {
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Whether SMS still places execution `id` on this node (assigned or running).
pub async fn placed_here(agent: &Agent, id: &str) -> bool {
    ask(agent, id).await.is_some_and(|now| {
        now.node_uuid == agent.node && matches!(now.state.as_str(), "assigned" | "running")
    })
}

/// Whether `exec` (as assigned) is still this node's to run: SMS places it here, at the same
/// attempt.
pub async fn still_ours(agent: &Agent, exec: &v1::Execution) -> bool {
    let Some(now) = ask(agent, &exec.execution_id).await else {
        return false;
    };
    let ours = now.node_uuid == agent.node
        && now.attempt == exec.attempt
        && matches!(now.state.as_str(), "assigned" | "running");
    if !ours {
        tracing::info!(
            execution = %exec.execution_id,
            state = %now.state,
            node = %now.node_uuid,
            attempt = now.attempt,
            "not started: the execution moved while this node stood still"
        );
    }
    ours
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_gap_is_a_stall_and_checks_what_came_before_it() {
        let w = StallWatch::new(Duration::from_secs(1));
        let changes = w.subscribe();
        let opened = w.epoch();
        assert!(!w.must_check(opened));
        tokio::time::advance(Duration::from_millis(500)).await;
        w.tick(Instant::now());
        assert!(!w.must_check(opened));
        // Stood still for 5 s: noticed at the next look, even before the ticker runs.
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(w.must_check(opened));
        assert_eq!(w.stalls(), 1);
        assert!(
            changes.has_changed().unwrap(),
            "the stream is told to reopen"
        );
        // A stream opened after the stall is trusted.
        let reopened = w.epoch();
        assert!(!w.must_check(reopened));
    }
}
