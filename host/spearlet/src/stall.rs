//! Stalls of this process (SIGSTOP, a frozen VM, a swap storm). While the agent stood still, SMS
//! may have declared the node lost and given its queued work to another node. [`StallWatch`]
//! notices a stall by the gap between ticks of its own clock. From then until a heartbeat sent
//! after the stall has reached SMS, and for every assignment received before that, the agent asks
//! SMS whether the execution is still its own (this node, the same attempt, still placed) before
//! starting it; one that moved is dropped without a report. Without a stall nothing is asked.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use spear_proto::v1;
use tokio::time::Instant;

use crate::agent::Agent;

#[derive(Debug)]
struct State {
    last_tick: Instant,
    /// When the last stall was noticed, while no heartbeat sent after it has been delivered.
    unresolved_since: Option<Instant>,
    /// Assignments received before this instant (the delivery of the first heartbeat after the
    /// last stall) are checked with SMS before they start.
    check_before: Option<Instant>,
    stalls: u64,
}

/// Notices stalls; see the module docs.
#[derive(Debug)]
pub struct StallWatch {
    threshold: Duration,
    state: Mutex<State>,
}

impl StallWatch {
    /// A watch that calls a gap of more than `threshold` between its ticks a stall.
    pub fn new(threshold: Duration) -> Arc<Self> {
        Arc::new(Self {
            threshold,
            state: Mutex::new(State {
                last_tick: Instant::now(),
                unresolved_since: None,
                check_before: None,
                stalls: 0,
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
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
        let mut s = self.lock();
        let gap = now.saturating_duration_since(s.last_tick);
        s.last_tick = now;
        if gap > self.threshold {
            s.unresolved_since = Some(now);
            s.stalls += 1;
            tracing::warn!(
                stalled_ms = gap.as_millis() as u64,
                "this process stood still; queued assignments are checked with SMS before they start"
            );
        }
    }

    /// A heartbeat sent at `sent_at` was delivered: stalls noticed before it are resolved.
    pub fn heartbeat_delivered(&self, sent_at: Instant) {
        let mut s = self.lock();
        if s.unresolved_since.is_some_and(|t| sent_at >= t) {
            s.unresolved_since = None;
            s.check_before = Some(Instant::now());
        }
    }

    /// Whether an assignment received at `received_at` must be checked with SMS before it starts.
    pub fn must_check(&self, received_at: Instant) -> bool {
        let now = Instant::now();
        // A stall not noticed yet (the ticker has not run since): the gap says so.
        self.tick_if_late(now);
        let s = self.lock();
        s.unresolved_since.is_some() || s.check_before.is_some_and(|t| received_at < t)
    }

    fn tick_if_late(&self, now: Instant) {
        let late = now.saturating_duration_since(self.lock().last_tick) > self.threshold;
        if late {
            self.tick(now);
        }
    }

    /// Stalls noticed since start.
    pub fn stalls(&self) -> u64 {
        self.lock().stalls
    }
}

/// Ask SMS whether `exec` (as assigned) is still this node's to run. Retries briefly; `false`
/// when SMS cannot say (a reconnecting stream sends it again if it still is).
pub async fn still_ours(agent: &Agent, exec: &v1::Execution) -> bool {
    for attempt in 0..5u32 {
        let mut client = agent.sms.executions();
        let asked = client.get_execution(v1::ExecutionRef {
            execution_id: exec.execution_id.clone(),
        });
        match tokio::time::timeout(Duration::from_secs(5), asked).await {
            Ok(Ok(now)) => {
                let now = now.into_inner();
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
                return ours;
            }
            Ok(Err(s)) if s.code() == tonic::Code::NotFound => return false,
            _ => tokio::time::sleep(Duration::from_millis(200) * (attempt + 1)).await,
        }
    }
    tracing::warn!(execution = %exec.execution_id, "not started: SMS could not confirm it after a stall");
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_gap_is_a_stall_until_a_later_heartbeat_is_delivered() {
        let w = StallWatch::new(Duration::from_secs(1));
        let before = Instant::now();
        assert!(!w.must_check(before));
        tokio::time::advance(Duration::from_millis(500)).await;
        w.tick(Instant::now());
        assert!(!w.must_check(Instant::now()));
        // Stood still for 5 s.
        tokio::time::advance(Duration::from_secs(5)).await;
        let received = Instant::now();
        assert!(w.must_check(received));
        assert_eq!(w.stalls(), 1);
        // A heartbeat sent before the stall resolves nothing; one sent after does.
        w.heartbeat_delivered(before);
        assert!(w.must_check(received));
        tokio::time::advance(Duration::from_millis(10)).await;
        w.heartbeat_delivered(Instant::now());
        assert!(
            w.must_check(received),
            "received before the heartbeat: checked"
        );
        tokio::time::advance(Duration::from_millis(10)).await;
        assert!(!w.must_check(Instant::now()), "received after it: trusted");
    }
}
