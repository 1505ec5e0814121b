//! Results on their way to SMS: sent while they are persisted (the write is queued first, so
//! the acknowledged report's removal is stored after it), and retried with backoff until SMS
//! acknowledges them, across SMS outages and Spearlet restarts.
//!
//! A report SMS refuses for good (the execution is no longer placed here: cancelled, finished by
//! a report that got through earlier, or moved to another node after this one was declared lost)
//! is dropped with a warning; everything else is kept and retried.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use spear_proto::v1;
use tokio::sync::Notify;

use crate::error::Result;
use crate::sms::{SmsLink, backoff, transient};
use crate::store::{PendingReport, Store, delete_op};

/// The report queue.
#[derive(Debug)]
pub struct Reporter {
    store: Store,
    sms: SmsLink,
    node: String,
    session: Arc<std::sync::RwLock<String>>,
    wake: Notify,
    idle: Notify,
    retry: Duration,
    /// Reports handed in whose write may not be durable yet (so a scan of the store may miss
    /// them), with that write; at most [`MAX_FRESH`].
    fresh: Mutex<Vec<Item>>,
    /// The keys of reports a scan of the store passes over: those whose write may not be
    /// durable yet (taken from `fresh` or not, they are still waiting; a scan may miss them
    /// until the write is done), and those answered whose forgetting is on its way.
    unstored: Mutex<std::collections::HashSet<String>>,
    /// Results SMS answered lately.
    answered: Mutex<crate::answered::Answered>,
}

/// Stored reports read per turn: a long SMS outage leaves many, and a turn holds only what it
/// reads (a sweep goes through them page by page).
pub const SCAN_PAGE: usize = 256;

/// Reports held in memory while their write is on its way; past this, a report is handed in only
/// once it is durable (the store is the queue).
pub const MAX_FRESH: usize = 1024;

/// A durable write on its way.
type Stored = Pin<Box<dyn Future<Output = Result<()>> + Send>>;

/// One report to send: its key in the store, and its write while that may not be durable yet.
struct Item {
    key: String,
    report: PendingReport,
    stored: Option<Stored>,
}

impl std::fmt::Debug for Item {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.key)
    }
}

impl Reporter {
    /// A reporter for node `node`; `session` is the SMS session last seen on the assignment stream.
    pub fn new(
        store: Store,
        sms: SmsLink,
        node: String,
        session: Arc<std::sync::RwLock<String>>,
        retry: Duration,
    ) -> Arc<Self> {
        Arc::new(Self {
            store,
            sms,
            node,
            session,
            wake: Notify::new(),
            idle: Notify::new(),
            retry,
            fresh: Mutex::new(Vec::new()),
            unstored: Mutex::new(Default::default()),
            answered: Mutex::default(),
        })
    }

    /// Hand in a result: its write (together with forgetting the execution's running record) is
    /// queued, and the sender takes it at once, without waiting for the write to be durable —
    /// unless [`MAX_FRESH`] are in that state already; then this waits for it.
    pub async fn submit(&self, report: PendingReport) -> Result<()> {
        let id = report.execution_id.clone();
        let key = format!("report/{id}");
        let stored = self
            .store
            .batch_soon(vec![report.put_op(&key), delete_op(&format!("exec/{id}"))]);
        {
            let mut fresh = self.fresh.lock().unwrap_or_else(|p| p.into_inner());
            if fresh.len() < MAX_FRESH {
                self.unstored
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(key.clone());
                fresh.push(Item {
                    key,
                    report,
                    stored: Some(Box::pin(stored)),
                });
                drop(fresh);
                self.wake.notify_one();
                return Ok(());
            }
        }
        stored.await?;
        self.wake.notify_one();
        Ok(())
    }

    /// Wake the sender (a new session may let waiting reports through).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Whether SMS answered the result of `id`'s `attempt` lately (then an assignment of that
    /// attempt that comes again is not run again).
    pub fn answered(&self, id: &str, attempt: u32) -> bool {
        self.answered
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(id, attempt)
    }

    fn remember(&self, report: &PendingReport) {
        self.answered
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(&report.execution_id, report.attempt);
    }

    /// Whether a result for `id` is waiting to be acknowledged.
    pub async fn pending(&self, id: &str) -> Result<bool> {
        let key = format!("report/{id}");
        if self
            .unstored
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&key)
        {
            return Ok(true);
        }
        self.store.contains(&key).await
    }

    /// Number of results waiting.
    pub async fn backlog(&self) -> Result<usize> {
        let unstored = self.unstored_keys();
        let stored = self.store.count_except("report/", unstored.clone()).await?;
        Ok(unstored.len() + stored)
    }

    fn unstored_keys(&self) -> std::collections::HashSet<String> {
        self.unstored
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Wait for the writes of `items` to be durable (then the store holds them, until they are
    /// forgotten).
    async fn settle(&self, items: &mut [Item]) {
        for item in items {
            if let Some(stored) = item.stored.take() {
                if let Err(e) = stored.await {
                    tracing::error!(execution = %item.report.execution_id, error = %e, "cannot persist the result");
                }
                self.unstored
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&item.key);
            }
        }
    }

    /// Wait until no result is waiting, or `limit` passes; returns whether the queue emptied.
    pub async fn flush(&self, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let idle = self.idle.notified();
            if self.backlog().await.unwrap_or(1) == 0 {
                return true;
            }
            self.wake.notify_one();
            if tokio::time::timeout_at(deadline, idle).await.is_err() {
                return false;
            }
        }
    }

    /// Send waiting results until the process ends: all that waits goes in batches (one call
    /// each, [`MAX_BATCH`] reports or [`BATCH_BYTES`] of output at most), so results that
    /// finish while a call is in flight go together in the next one. The stored ones are read a
    /// page ([`SCAN_PAGE`]) a turn, in a sweep from the first key to the last.
    pub async fn run(self: Arc<Self>) {
        let mut attempt = 0u32;
        // Where the sweep of the stored reports stands (`None`: at the start).
        let mut after: Option<String> = None;
        'scan: loop {
            // The keys to pass over, then the store, then the fresh ones, in that order: a key
            // leaves `unstored` only once its write (or its forgetting) has landed, so a report
            // the scan finds is either in this set or really waiting in the store; and one
            // handed in after the set was taken is taken from `fresh` below (not sent twice).
            let unstored = self.unstored_keys();
            let stored = self
                .store
                .pending_reports(after.as_deref(), SCAN_PAGE as u32)
                .await;
            let mut pending =
                std::mem::take(&mut *self.fresh.lock().unwrap_or_else(|p| p.into_inner()));
            match stored {
                Ok(stored) => {
                    // A full page: the sweep goes on after it once this turn is sent.
                    after = (stored.len() == SCAN_PAGE)
                        .then(|| stored.last().map(|(k, _)| k.clone()))
                        .flatten();
                    let fresh: std::collections::HashSet<&str> =
                        pending.iter().map(|i| i.key.as_str()).collect();
                    let waiting: Vec<Item> = stored
                        .into_iter()
                        .filter(|(k, _)| !unstored.contains(k) && !fresh.contains(k.as_str()))
                        .map(|(key, report)| Item {
                            key,
                            report,
                            stored: None,
                        })
                        .collect();
                    pending.extend(waiting);
                }
                Err(e) => {
                    after = None;
                    tracing::error!(error = %e, "cannot read pending reports");
                }
            }
            let mut failed = false;
            let mut chunks = batches(pending).into_iter();
            while let Some(chunk) = chunks.next() {
                let step = self.deliver_batch(chunk).await;
                if let Step::Done = step {
                    continue;
                }
                // The rest waits for the next scan, which finds it once its writes are durable.
                for mut rest in chunks.by_ref() {
                    self.settle(&mut rest).await;
                }
                // A new sweep from the start: a report the step changed is found again.
                after = None;
                if let Step::Rescan = step {
                    continue 'scan;
                }
                failed = true;
                break;
            }
            if failed {
                // Back off, unless something new (a session, a result) arrives first.
                tokio::select! {
                    _ = tokio::time::sleep(backoff(self.retry, attempt.min(6))) => {}
                    _ = self.wake.notified() => {}
                }
                attempt += 1;
                continue;
            }
            attempt = 0;
            if after.is_some() {
                continue;
            }
            self.idle.notify_waiters();
            self.wake.notified().await;
        }
    }

    /// Send one batch and settle each report by its answer: forget the acknowledged and the
    /// refused (in one write, which the next batch does not wait for), keep the rest.
    async fn deliver_batch(self: &Arc<Self>, mut chunk: Vec<Item>) -> Step {
        let wired = chunk.iter().map(|i| i.report.to_wire()).collect();
        // Starts taken back when their runs ended go beside their results.
        let running = chunk
            .iter()
            .filter(|i| i.report.start_untold)
            .map(|i| (i.report.execution_id.clone(), i.report.attempt))
            .collect();
        let sent = self.send_batch(running, wired).await;
        let outcomes = match sent {
            Ok(o) if o.len() == chunk.len() => o,
            // An SMS without batches, a batch over its message limit, or a refusal of the whole
            // call: one at a time, as each report's own answer says.
            Ok(_) => return self.deliver_each(self.settled(chunk).await).await,
            Err(s) if s.code() == tonic::Code::Unimplemented || too_large(&s) => {
                return self.deliver_each(self.settled(chunk).await).await;
            }
            Err(s) if transient(&s) || self.session_empty() || stale_session(&s) => {
                tracing::debug!(error = %s.message(), "reports not delivered; retrying");
                // Once their writes are durable, a retry finds them in the store.
                self.settle(&mut chunk).await;
                return Step::Retry;
            }
            Err(_) => return self.deliver_each(self.settled(chunk).await).await,
        };
        let (mut keep, mut forget) = (Vec::new(), Vec::new());
        let mut step = Step::Done;
        for (item, o) in chunk.into_iter().zip(outcomes) {
            let status = tonic::Status::new(tonic::Code::from(o.code), o.message);
            match status.code() {
                tonic::Code::Ok => {
                    self.remember(&item.report);
                    forget.push(item);
                }
                _ if transient(&status) => {
                    step = Step::Retry;
                    keep.push(item);
                }
                _ => {
                    tracing::warn!(execution = %item.report.execution_id, error = %status.message(), "SMS refused the result; dropped");
                    forget.push(item);
                }
            }
        }
        self.settle(&mut keep).await;
        self.forget_soon(forget.into_iter().map(|i| i.key).collect());
        step
    }

    /// Forget answered reports: the delete is queued after their own writes (the store applies
    /// writes in order), and until it is durable the scans pass over them (they are still in the
    /// store), so the next batch goes without waiting for it.
    fn forget_soon(self: &Arc<Self>, keys: Vec<String>) {
        if keys.is_empty() {
            return;
        }
        self.unstored
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(keys.iter().cloned());
        let forgotten = self
            .store
            .batch_soon(keys.iter().map(|k| delete_op(k)).collect());
        let me = self.clone();
        tokio::spawn(async move {
            if let Err(e) = forgotten.await {
                tracing::error!(error = %e, "cannot forget acknowledged reports");
            }
            let mut unstored = me.unstored.lock().unwrap_or_else(|p| p.into_inner());
            for k in &keys {
                unstored.remove(k);
            }
            drop(unstored);
            // A flush waiting for the queue to empty looks again.
            me.wake.notify_one();
        });
    }

    /// `items`, once their writes are durable.
    async fn settled(&self, mut items: Vec<Item>) -> Vec<Item> {
        self.settle(&mut items).await;
        items
    }

    /// Send the reports of `chunk` one at a time (for an SMS without batches, or a report too
    /// large to go with others).
    async fn deliver_each(self: &Arc<Self>, chunk: Vec<Item>) -> Step {
        for Item { key, report, .. } in chunk {
            match self.send(&report).await {
                // Forgotten beside the next report, not before it (a store commit each).
                Ok(()) => {
                    self.remember(&report);
                    self.forget_soon(vec![key]);
                }
                Err(status) if too_large(&status) && shrink(&report).is_some() => {
                    // Over SMS's message limit: keep the head of the output, flagged.
                    let smaller = shrink(&report).expect("checked");
                    tracing::warn!(execution = %report.execution_id, "result too large for SMS; output truncated to {SHRUNK} bytes a stream");
                    if let Err(e) = self.store.put(&key, &smaller).await {
                        tracing::error!(error = %e, "cannot store the shrunk report");
                    }
                    return Step::Rescan;
                }
                Err(status) if transient(&status) || self.session_empty() => {
                    tracing::debug!(execution = %report.execution_id, error = %status.message(), "report not delivered; retrying");
                    return Step::Retry;
                }
                Err(status) if stale_session(&status) => {
                    // SMS restarted: the stream tells the new session when it reconnects.
                    return Step::Retry;
                }
                Err(status) => {
                    tracing::warn!(execution = %report.execution_id, error = %status.message(), "SMS refused the result; dropped");
                    self.forget_soon(vec![key]);
                }
            }
        }
        Step::Done
    }

    fn session_empty(&self) -> bool {
        self.session
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty()
    }

    /// The SMS session to report in; `Unavailable` until the stream has told one.
    fn session(&self) -> std::result::Result<String, tonic::Status> {
        let session = self
            .session
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if session.is_empty() {
            return Err(tonic::Status::unavailable("no SMS session yet"));
        }
        Ok(session)
    }

    /// One call carrying `results`; the answers, in its order.
    async fn send_batch(
        &self,
        running: Vec<(String, u32)>,
        results: Vec<v1::ReportedResult>,
    ) -> std::result::Result<Vec<v1::ReportOutcome>, tonic::Status> {
        let session = self.session()?;
        let (running, running_attempts) = running.into_iter().unzip();
        self.sms
            .executions()
            .report_batch(v1::ReportBatchRequest {
                session,
                node_uuid: self.node.clone(),
                running,
                results,
                running_attempts,
            })
            .await
            .map(|r| r.into_inner().results)
    }

    async fn send(&self, r: &PendingReport) -> std::result::Result<(), tonic::Status> {
        let session = self.session()?;
        if r.start_untold {
            // Best effort, as every start: a refusal (it is no longer assigned) changes nothing.
            let _ = self
                .sms
                .executions()
                .report_state(v1::ReportStateRequest {
                    session: session.clone(),
                    node_uuid: self.node.clone(),
                    execution_id: r.execution_id.clone(),
                    state: "running".into(),
                    attempt: r.attempt,
                })
                .await;
        }
        let w = r.to_wire();
        self.sms
            .executions()
            .report_result(v1::ReportResultRequest {
                session,
                node_uuid: self.node.clone(),
                execution_id: w.execution_id,
                success: w.success,
                result: w.result,
                error: w.error,
                attempt: w.attempt,
                preempted: w.preempted,
                checkpoint: w.checkpoint,
            })
            .await
            .map(|_| ())
    }
}

/// Most reports one batch carries.
pub const MAX_BATCH: usize = 256;
/// Most output (stdout, stderr and checkpoints, all reports together) one batch carries; a larger
/// report goes alone.
pub const BATCH_BYTES: usize = 1024 * 1024;

/// What the sender does next.
enum Step {
    /// Go on with the next batch.
    Done,
    /// Wait and try again (SMS away, or the session not known yet).
    Retry,
    /// Read the pending reports again (one was rewritten).
    Rescan,
}

/// Pending reports cut into batches by count and bytes of output, in order.
fn batches(pending: Vec<Item>) -> Vec<Vec<Item>> {
    let size = |r: &PendingReport| {
        r.result
            .as_ref()
            .map_or(0, |w| w.stdout.len() + w.stderr.len())
            + r.error.len()
            + r.checkpoint.len()
    };
    let mut out: Vec<Vec<Item>> = Vec::new();
    let mut bytes = 0;
    for item in pending {
        let n = size(&item.report);
        match out.last_mut() {
            Some(last) if last.len() < MAX_BATCH && bytes + n <= BATCH_BYTES => {
                bytes += n;
                last.push(item);
            }
            _ => {
                bytes = n;
                out.push(vec![item]);
            }
        }
    }
    out
}

/// Bytes of stdout and of stderr kept when a report is over SMS's message limit.
const SHRUNK: usize = 1024 * 1024;

/// SMS (or the transport) refused the report for its size.
fn too_large(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        tonic::Code::OutOfRange | tonic::Code::ResourceExhausted
    )
}

/// The report with its output cut to [`SHRUNK`] bytes a stream, if that makes it smaller.
fn shrink(r: &PendingReport) -> Option<PendingReport> {
    let w = r.result.as_ref()?;
    if w.stdout.len() <= SHRUNK && w.stderr.len() <= SHRUNK {
        return None;
    }
    let mut smaller = r.clone();
    let s = smaller.result.as_mut().expect("has a result");
    if s.stdout.len() > SHRUNK {
        s.stdout.truncate(SHRUNK);
        s.stdout_truncated = true;
    }
    if s.stderr.len() > SHRUNK {
        s.stderr.truncate(SHRUNK);
        s.stderr_truncated = true;
    }
    Some(smaller)
}

/// SMS answered that the report carried an older session than its own.
fn stale_session(status: &tonic::Status) -> bool {
    status.code() == tonic::Code::FailedPrecondition && status.message().contains("stale session")
}
