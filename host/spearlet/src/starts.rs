//! Telling SMS that executions started, batched. A start is held first
//! (`spearlet.start_report_delay_ms`, 3 ms by default), and the starts that come meanwhile (or
//! while a call is in flight) go together in the next call. A start whose execution ends within
//! the hold is not told at all: its result tells SMS it ran (SMS records the start and the end
//! in one write), which saves SMS a write and a call for every short execution. SMS learns of a
//! start that much later, so a `queue_timeout_ms` ending within the hold may fire for an
//! execution that had started. Best effort: a start that is not told only leaves the execution
//! `assigned` in SMS until its result arrives (its queue deadline, if it has one, may then fire).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use spear_proto::v1;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::sms::SmsLink;

/// Starts held while SMS cannot be told; the oldest are dropped past this.
pub const MAX_WAITING: usize = 4096;
/// Most starts one call carries (SMS's batch limit).
const MAX_BATCH: usize = 1024;

/// The start teller.
#[derive(Debug)]
pub struct Starts {
    sms: SmsLink,
    node: String,
    session: Arc<RwLock<String>>,
    /// Executions started and not told yet, oldest first, with when each started.
    waiting: Mutex<VecDeque<(Instant, String)>>,
    /// How long a start is held.
    hold: Duration,
    wake: Notify,
}

impl Starts {
    /// A teller for node `node`; `session` is the SMS session last seen on the assignment stream;
    /// starts are held for `hold`.
    pub fn new(
        sms: SmsLink,
        node: String,
        session: Arc<RwLock<String>>,
        hold: Duration,
    ) -> Arc<Self> {
        Arc::new(Self {
            sms,
            node,
            session,
            hold,
            waiting: Mutex::new(VecDeque::new()),
            wake: Notify::new(),
        })
    }

    /// Execution `id` started: tell SMS once the hold has passed, unless it ends first.
    pub fn started(&self, id: &str) {
        let mut waiting = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
        if waiting.len() >= MAX_WAITING {
            waiting.pop_front();
        }
        waiting.push_back((Instant::now(), id.to_owned()));
        drop(waiting);
        self.wake.notify_one();
    }

    /// Execution `id` ended: its start, if still held, is not told (the result tells it).
    pub fn ended(&self, id: &str) {
        let mut waiting = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
        // Held starts are few (those of the last few ms), and the newest are likeliest.
        if let Some(i) = waiting.iter().rposition(|(_, w)| w == id) {
            waiting.remove(i);
        }
    }

    /// Send starts until the process ends.
    pub async fn run(self: Arc<Self>) {
        loop {
            let oldest = self
                .waiting
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .front()
                .map(|(at, _)| *at);
            let Some(oldest) = oldest else {
                self.wake.notified().await;
                continue;
            };
            tokio::time::sleep_until(oldest + self.hold).await;
            let batch: Vec<String> = {
                let mut waiting = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
                let now = Instant::now();
                let n = waiting
                    .iter()
                    .take(MAX_BATCH)
                    .take_while(|(at, _)| *at + self.hold <= now)
                    .count();
                waiting.drain(..n).map(|(_, id)| id).collect()
            };
            if !batch.is_empty() {
                self.send(batch).await;
            }
        }
    }

    async fn send(&self, running: Vec<String>) {
        let session = self
            .session
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let mut client = self.sms.executions();
        let call = client.report_batch(v1::ReportBatchRequest {
            session: session.clone(),
            node_uuid: self.node.clone(),
            running: running.clone(),
            results: Vec::new(),
        });
        match tokio::time::timeout(Duration::from_secs(5), call).await {
            Ok(Ok(_)) => {}
            Ok(Err(s)) if s.code() == tonic::Code::Unimplemented => {
                // An SMS without batches: one call each.
                for id in running {
                    let r = client.report_state(v1::ReportStateRequest {
                        session: session.clone(),
                        node_uuid: self.node.clone(),
                        execution_id: id,
                        state: "running".into(),
                    });
                    let _ = tokio::time::timeout(Duration::from_secs(5), r).await;
                }
            }
            Ok(Err(s)) => {
                tracing::debug!(error = %s.message(), "running states not reported");
            }
            Err(_) => tracing::debug!("running states not reported in 5 s"),
        }
    }
}
