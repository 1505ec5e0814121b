//! Telling SMS that executions started, batched. A start is held first
//! (`spearlet.start_report_delay_ms`, 3 ms by default; not for an execution with a
//! `queue_timeout_ms`, whose deadline the start must meet), and the starts that come meanwhile
//! (or while a call is in flight) go together in the next call. A start whose execution ends
//! within the hold is taken back and goes beside the result, in the same call (SMS records the
//! two in one write), which saves SMS a write and a call for every short execution. So does a
//! start whose call is still on its way (or failed) when its execution ends: the result may reach
//! SMS first (it goes in another call), and SMS must not record a run that never started. Best
//! effort: a start that is not told only leaves the execution `assigned` in SMS until its result
//! arrives (its queue deadline, if it has one, may then fire).

use std::collections::{HashSet, VecDeque};
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
/// Most starts sent and not (yet) taken by SMS that are remembered; past this a start is sent
/// without being remembered (its result may then reach SMS without it).
pub const MAX_TELLING: usize = 4096;

/// Starts not told yet, and starts sent that SMS has not answered as taken.
#[derive(Debug, Default)]
struct Held {
    /// Executions started and not told yet, oldest first, with when each started and its
    /// attempt.
    waiting: VecDeque<(Instant, String, u32)>,
    /// Executions whose start is in a call not answered yet, or in one that failed.
    telling: HashSet<String>,
}

/// The start teller.
#[derive(Debug)]
pub struct Starts {
    sms: SmsLink,
    node: String,
    session: Arc<RwLock<String>>,
    held: Mutex<Held>,
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
            held: Mutex::default(),
            wake: Notify::new(),
        })
    }

    /// Attempt `attempt` of execution `id` started: tell SMS once the hold has passed (at once
    /// when `hold` is false), unless it ends first.
    pub fn started(&self, id: &str, attempt: u32, hold: bool) {
        let at = if hold {
            Instant::now()
        } else {
            // Due now: as if held since the hold began.
            Instant::now()
                .checked_sub(self.hold)
                .unwrap_or_else(Instant::now)
        };
        let mut held = self.held();
        let waiting = &mut held.waiting;
        if waiting.len() >= MAX_WAITING {
            waiting.pop_front();
        }
        // Held starts come in time order: one behind others is due after them, and the sender
        // already sleeps until the first is due. Wake it only when this one may be due sooner.
        let sooner = waiting.is_empty() || !hold;
        waiting.push_back((at, id.to_owned(), attempt));
        drop(held);
        if sooner {
            self.wake.notify_one();
        }
    }

    /// Execution `id` ended: its start, if still held, is taken back, and the answer says so
    /// (the start then goes beside the result); so it does when the start was sent and SMS has
    /// not answered that it took it.
    pub fn ended(&self, id: &str) -> bool {
        let mut held = self.held();
        let telling = held.telling.remove(id);
        // Held starts are few (those of the last few ms), and the newest are likeliest.
        match held.waiting.iter().rposition(|(_, w, _)| w == id) {
            Some(i) => {
                held.waiting.remove(i);
                true
            }
            None => telling,
        }
    }

    fn held(&self) -> std::sync::MutexGuard<'_, Held> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// SMS answered that it took the start of `id`.
    fn taken(&self, id: &str) {
        self.held().telling.remove(id);
    }

    /// Send starts until the process ends.
    pub async fn run(self: Arc<Self>) {
        loop {
            // The earliest due (a start told at once is due on arrival, wherever it stands).
            let next = self.held().waiting.iter().map(|(at, _, _)| *at).min();
            let Some(next) = next else {
                self.wake.notified().await;
                continue;
            };
            tokio::select! {
                _ = tokio::time::sleep_until(next + self.hold) => {}
                // A new start may be due sooner.
                _ = self.wake.notified() => continue,
            }
            let batch: Vec<(String, u32)> = {
                let mut held = self.held();
                let Held { waiting, telling } = &mut *held;
                let now = Instant::now();
                let mut due = Vec::new();
                waiting.retain(|(at, id, attempt)| {
                    let take = due.len() < MAX_BATCH && *at + self.hold <= now;
                    if take {
                        due.push((id.clone(), *attempt));
                        // Until SMS answers, its end may get there first.
                        if telling.len() < MAX_TELLING {
                            telling.insert(id.clone());
                        }
                    }
                    !take
                });
                due
            };
            if !batch.is_empty() {
                self.send(batch).await;
            }
        }
    }

    async fn send(&self, running: Vec<(String, u32)>) {
        let session = self
            .session
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let mut client = self.sms.executions();
        let (ids, attempts): (Vec<String>, Vec<u32>) = running.iter().cloned().unzip();
        let call = client.report_batch(v1::ReportBatchRequest {
            session: session.clone(),
            node_uuid: self.node.clone(),
            running: ids,
            results: Vec::new(),
            running_attempts: attempts,
        });
        match tokio::time::timeout(Duration::from_secs(5), call).await {
            Ok(Ok(answer)) => {
                for (id, outcome) in running.iter().zip(&answer.get_ref().running) {
                    if outcome.code == 0 {
                        self.taken(&id.0);
                    }
                }
            }
            Ok(Err(s)) if s.code() == tonic::Code::Unimplemented => {
                // An SMS without batches: one call each.
                for (id, attempt) in running {
                    let r = client.report_state(v1::ReportStateRequest {
                        session: session.clone(),
                        node_uuid: self.node.clone(),
                        execution_id: id.clone(),
                        state: "running".into(),
                        attempt,
                    });
                    if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(5), r).await {
                        self.taken(&id);
                    }
                }
            }
            Ok(Err(s)) => {
                tracing::debug!(error = %s.message(), "running states not reported");
            }
            Err(_) => tracing::debug!("running states not reported in 5 s"),
        }
    }
}
