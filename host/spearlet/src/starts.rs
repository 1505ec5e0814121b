//! Telling SMS that executions started, batched: the starts that come while a call is in flight
//! go together in the next one. Best effort: a start that is not told only leaves the execution
//! `assigned` in SMS until its result arrives (its queue deadline, if it has one, may then fire).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use spear_proto::v1;
use tokio::sync::Notify;

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
    waiting: Mutex<VecDeque<String>>,
    wake: Notify,
}

impl Starts {
    /// A teller for node `node`; `session` is the SMS session last seen on the assignment stream.
    pub fn new(sms: SmsLink, node: String, session: Arc<RwLock<String>>) -> Arc<Self> {
        Arc::new(Self {
            sms,
            node,
            session,
            waiting: Mutex::new(VecDeque::new()),
            wake: Notify::new(),
        })
    }

    /// Execution `id` started: tell SMS with the next call.
    pub fn started(&self, id: &str) {
        let mut waiting = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
        if waiting.len() >= MAX_WAITING {
            waiting.pop_front();
        }
        waiting.push_back(id.to_owned());
        drop(waiting);
        self.wake.notify_one();
    }

    /// Send starts until the process ends.
    pub async fn run(self: Arc<Self>) {
        loop {
            self.wake.notified().await;
            loop {
                let batch: Vec<String> = {
                    let mut waiting = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
                    let n = waiting.len().min(MAX_BATCH);
                    waiting.drain(..n).collect()
                };
                if batch.is_empty() {
                    break;
                }
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
