//! Group commit for a storage-backend plugin: one writer thread takes every write queued meanwhile
//! and applies them as one atomic batch, so concurrent writers share one durable commit (one fsync
//! with redb) instead of queueing for one each. Writes apply in the order they were queued; each
//! writer learns its own outcome.
//!
//! A commit stays within the backend's [`BatchLimits`] (etcd refuses larger transactions). A write
//! may carry [`BatchOp::Check`]s: if one does not hold, that write alone fails with
//! [`WriteError::Conflict`] and the others of its group still apply. A writer may be
//! [fenced](GroupWriter::set_fence): every commit then checks the fence too, and once it does not
//! hold every write fails with [`WriteError::Fenced`] (a deposed leader cannot write). A backend
//! that cannot tell whether a commit applied ([`OUTCOME_UNKNOWN`]) fails its writes with
//! [`WriteError::Unknown`] and raises [`GroupWriter::unsure`]: a host that keeps state in memory
//! no longer knows that it matches storage. From then on the writer writes nothing (every write
//! fails the same way): writes decided on that memory must not land after a write that may have
//! applied.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use spear_plugin_api::StorageBackend;
use spear_plugin_api::storage::{BatchLimits, BatchOp, OUTCOME_UNKNOWN};
use tokio::sync::{mpsc, oneshot};

/// Writes combined into one commit at most.
const GROUP: usize = 4096;

/// Why a write did not apply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WriteError {
    /// A check of the write did not hold: nothing of it applied.
    #[error("a check of the write did not hold (a concurrent change)")]
    Conflict,
    /// The writer's fence did not hold: this writer may no longer write.
    #[error("{0}")]
    Fenced(String),
    /// The backend failed (its error): nothing of the write applied.
    #[error("{0}")]
    Failed(String),
    /// The backend cannot tell whether the write applied (its error).
    #[error("{0}")]
    Unknown(String),
}

impl WriteError {
    /// A backend's error: [`Unknown`](Self::Unknown) when it says so, else
    /// [`Failed`](Self::Failed).
    fn of(e: &spear_plugin_api::PluginError) -> Self {
        if e.0.starts_with(OUTCOME_UNKNOWN) {
            WriteError::Unknown(e.0.clone())
        } else {
            WriteError::Failed(e.0.clone())
        }
    }
}

/// The outcome of a write.
pub type WriteResult = Result<(), WriteError>;

type Write = (Vec<BatchOp>, oneshot::Sender<WriteResult>);

/// What one commit took.
#[derive(Debug, Clone, Copy)]
pub struct Commit {
    /// Writes it combined.
    pub writes: usize,
    /// Operations it applied.
    pub ops: usize,
    /// How long the backend took to make it durable.
    pub took: Duration,
}

/// A condition every commit checks: `key` holds `value`. When it does not, writes fail with
/// [`WriteError::Fenced`] carrying `why`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    /// The key.
    pub key: Vec<u8>,
    /// The value it must hold.
    pub value: Vec<u8>,
    /// What a fenced write is told.
    pub why: String,
}

impl Fence {
    fn check(&self) -> BatchOp {
        BatchOp::Check {
            key: self.key.clone(),
            value: Some(self.value.clone()),
        }
    }
}

/// A handle on a backend's writer thread (which ends when every handle is dropped).
#[derive(Clone)]
pub struct GroupWriter {
    writes: mpsc::UnboundedSender<Write>,
    fence: Arc<Mutex<Option<Fence>>>,
    fenced: tokio::sync::watch::Receiver<bool>,
    unsure: tokio::sync::watch::Receiver<bool>,
}

impl std::fmt::Debug for GroupWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GroupWriter")
    }
}

/// The keys `ops` put or delete.
fn written_keys(ops: &[BatchOp]) -> impl Iterator<Item = Vec<u8>> + '_ {
    ops.iter().filter_map(|op| match op {
        BatchOp::Put { key, .. } | BatchOp::Delete { key } => Some(key.clone()),
        BatchOp::Check { .. } => None,
    })
}

/// Whether `ops` checks a key a write of `group` writes (`written`: those keys, gathered the
/// first time a write with checks asks).
fn checks_a_write(
    ops: &[BatchOp],
    group: &[Write],
    written: &mut Option<HashSet<Vec<u8>>>,
) -> bool {
    let mut checked = ops.iter().filter_map(|op| match op {
        BatchOp::Check { key, .. } => Some(key),
        _ => None,
    });
    let Some(first) = checked.next() else {
        return false;
    };
    let keys = written.get_or_insert_with(|| {
        group
            .iter()
            .flat_map(|(ops, _)| written_keys(ops))
            .collect()
    });
    std::iter::once(first)
        .chain(checked)
        .any(|k| keys.contains(k))
}

/// The operations and bytes of `ops`.
fn weigh(ops: &[BatchOp]) -> (u64, u64) {
    (ops.len() as u64, ops.iter().map(BatchOp::size).sum())
}

impl GroupWriter {
    /// Start the writer thread `name` for `backend`; `observe` sees each commit's outcome at the
    /// backend (an error is the backend's; a check that did not hold is not one) and what it took
    /// (for health reporting and metrics). Each write is committed as soon as the commit before
    /// it is done.
    pub fn start(
        name: &str,
        backend: Arc<dyn StorageBackend>,
        observe: impl Fn(&Result<(), String>, &Commit) + Send + 'static,
    ) -> std::io::Result<Self> {
        Self::start_paced(name, backend, Duration::ZERO, observe)
    }

    /// Like [`start`](Self::start), but commits begin at least `pace` apart: a write that comes
    /// sooner after the last commit began waits out the rest, and shares its commit with every
    /// write that comes meanwhile. A write after a quiet spell is committed at once. For a
    /// store whose writers seldom wait for durability, so that under load it pays for fewer,
    /// larger commits (each costs a sync of the disk).
    pub fn start_paced(
        name: &str,
        backend: Arc<dyn StorageBackend>,
        pace: Duration,
        observe: impl Fn(&Result<(), String>, &Commit) + Send + 'static,
    ) -> std::io::Result<Self> {
        let (writes, rx) = mpsc::unbounded_channel::<Write>();
        let fence = Arc::new(Mutex::new(None));
        let (fenced_tx, fenced) = tokio::sync::watch::channel(false);
        let (unsure_tx, unsure) = tokio::sync::watch::channel(false);
        let thread = Thread {
            backend,
            fence: fence.clone(),
            fenced: fenced_tx,
            unsure: unsure_tx,
            rx,
            pace,
        };
        std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || thread.run(observe))?;
        Ok(Self {
            writes,
            fence,
            fenced,
            unsure,
        })
    }

    /// Becomes `true` once the backend could not tell whether a commit applied
    /// ([`WriteError::Unknown`]).
    pub fn unsure(&self) -> tokio::sync::watch::Receiver<bool> {
        self.unsure.clone()
    }

    /// Becomes `true` once a write failed on the fence (this writer may no longer write).
    pub fn fenced(&self) -> tokio::sync::watch::Receiver<bool> {
        self.fenced.clone()
    }

    /// Whether commits are fenced.
    pub fn is_fenced(&self) -> bool {
        self.fence
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }

    /// Fence every later commit with `fence` (`None`: unfenced). Writes queued before and not yet
    /// committed are fenced too.
    pub fn set_fence(&self, fence: Option<Fence>) {
        *self.fence.lock().unwrap_or_else(|p| p.into_inner()) = fence;
    }

    /// Queue a write now (writes apply in queue order); the receiver gets its outcome.
    pub fn enqueue(&self, ops: Vec<BatchOp>) -> oneshot::Receiver<WriteResult> {
        let (done, rx) = oneshot::channel();
        if let Err(e) = self.writes.send((ops, done)) {
            let _ = e.0.1.send(Err(stopped()));
        }
        rx
    }

    /// Whether the writer thread has stopped (every write fails).
    pub fn is_stopped(&self) -> bool {
        self.writes.is_closed()
    }

    /// Apply `ops` atomically and durably, with whatever else is queued meanwhile.
    pub async fn write(&self, ops: Vec<BatchOp>) -> WriteResult {
        self.write_soon(ops).await
    }

    /// Queue `ops` now (in order with every other write); what it returns resolves once they are
    /// durable, so the caller may go on meanwhile.
    pub fn write_soon(
        &self,
        ops: Vec<BatchOp>,
    ) -> impl std::future::Future<Output = WriteResult> + Send + 'static {
        let done = self.enqueue(ops);
        async move { done.await.unwrap_or_else(|_| Err(stopped())) }
    }
}

fn stopped() -> WriteError {
    WriteError::Failed("the storage writer has stopped".into())
}

/// The writer thread's state.
struct Thread {
    backend: Arc<dyn StorageBackend>,
    fence: Arc<Mutex<Option<Fence>>>,
    fenced: tokio::sync::watch::Sender<bool>,
    unsure: tokio::sync::watch::Sender<bool>,
    rx: mpsc::UnboundedReceiver<Write>,
    pace: Duration,
}

impl Thread {
    fn run(mut self, observe: impl Fn(&Result<(), String>, &Commit)) {
        let limits: BatchLimits = self.backend.limits();
        let mut last: Option<Instant> = None;
        // A write taken from the queue that did not fit in the commit before.
        let mut carried: Option<Write> = None;
        loop {
            let Some(first) = carried.take().or_else(|| self.rx.blocking_recv()) else {
                return;
            };
            if let Some(wait) = last.and_then(|t| self.pace.checked_sub(t.elapsed())) {
                std::thread::sleep(wait);
            }
            last = Some(Instant::now());
            let fence = self.fence.lock().unwrap_or_else(|p| p.into_inner()).clone();
            let (mut ops, mut bytes) = fence
                .as_ref()
                .map_or((0, 0), |f| weigh(std::slice::from_ref(&f.check())));
            let (n, b) = weigh(&first.0);
            (ops, bytes) = (ops + n, bytes + b);
            // The keys the group writes, once a write with checks asks (a check is evaluated
            // against the state before the whole commit, so a write that checks a key an earlier
            // write of the group writes waits for the next commit, where it sees that write).
            let mut written: Option<HashSet<Vec<u8>>> = None;
            let mut group = vec![first];
            while group.len() < GROUP {
                let Ok(w) = self.rx.try_recv() else { break };
                let (n, b) = weigh(&w.0);
                if ops + n > u64::from(limits.max_ops)
                    || bytes + b > limits.max_bytes
                    || checks_a_write(&w.0, &group, &mut written)
                {
                    carried = Some(w);
                    break;
                }
                (ops, bytes) = (ops + n, bytes + b);
                if let Some(keys) = &mut written {
                    keys.extend(written_keys(&w.0));
                }
                group.push(w);
            }
            self.commit(group, fence.as_ref(), &observe);
        }
    }

    /// The write error for a backend's error `e` (raising `unsure` when it says so).
    fn error(&self, e: &spear_plugin_api::PluginError) -> WriteError {
        let error = WriteError::of(e);
        if matches!(error, WriteError::Unknown(_)) {
            self.unsure.send_replace(true);
        }
        error
    }

    /// Apply `group` as one batch; if a check failed, find out whose.
    fn commit(
        &self,
        group: Vec<Write>,
        fence: Option<&Fence>,
        observe: &impl Fn(&Result<(), String>, &Commit),
    ) {
        if *self.unsure.borrow() {
            for (_, sender) in group {
                let _ = sender.send(Err(WriteError::Unknown(
                    "an earlier write's outcome is unknown: this writer writes nothing more".into(),
                )));
            }
            return;
        }
        let lens: Vec<usize> = group.iter().map(|(ops, _)| ops.len()).collect();
        let mut ops: Vec<BatchOp> = fence.map(Fence::check).into_iter().collect();
        let senders: Vec<oneshot::Sender<WriteResult>> = group
            .into_iter()
            .map(|(mut w, sender)| {
                ops.append(&mut w);
                sender
            })
            .collect();
        let began = Instant::now();
        let result = self.backend.batch(&ops);
        let commit = Commit {
            writes: senders.len(),
            ops: ops.len(),
            took: began.elapsed(),
        };
        observe(
            &result.as_ref().map(|_| ()).map_err(|e| e.to_string()),
            &commit,
        );
        let outcomes: Vec<WriteResult> = match result {
            Ok(true) => vec![Ok(()); senders.len()],
            Err(e) => vec![Err(self.error(&e)); senders.len()],
            Ok(false) => {
                let skip = usize::from(fence.is_some());
                self.one_by_one(&ops[skip..], &lens, fence)
            }
        };
        for (sender, outcome) in senders.into_iter().zip(outcomes) {
            let _ = sender.send(outcome);
        }
    }

    /// Apply each write of a group whose batch did not hold alone, in order: the fence first
    /// (every write fails if it does not hold), then the write with it.
    fn one_by_one(
        &self,
        ops: &[BatchOp],
        lens: &[usize],
        fence: Option<&Fence>,
    ) -> Vec<WriteResult> {
        let mut out = Vec::with_capacity(lens.len());
        let mut at = 0;
        for &len in lens {
            let write = &ops[at..at + len];
            at += len;
            if let Some(fence) = fence {
                match self.backend.get(&fence.key) {
                    Ok(v) if v.as_deref() == Some(fence.value.as_slice()) => {}
                    Ok(_) => {
                        self.fenced.send_replace(true);
                        out.resize(lens.len(), Err(WriteError::Fenced(fence.why.clone())));
                        return out;
                    }
                    Err(e) => {
                        out.push(Err(WriteError::Failed(e.to_string())));
                        continue;
                    }
                }
            }
            let mut batch: Vec<BatchOp> = fence.map(Fence::check).into_iter().collect();
            batch.extend_from_slice(write);
            out.push(match self.backend.batch(&batch) {
                Ok(true) => Ok(()),
                Ok(false) => match fence {
                    // The fence held a moment ago: whether the write's own check or the fence
                    // failed, a read of the fence tells.
                    Some(fence)
                        if self
                            .backend
                            .get(&fence.key)
                            .is_ok_and(|v| v.as_deref() != Some(fence.value.as_slice())) =>
                    {
                        self.fenced.send_replace(true);
                        out.resize(lens.len(), Err(WriteError::Fenced(fence.why.clone())));
                        return out;
                    }
                    _ => Err(WriteError::Conflict),
                },
                Err(e) => Err(self.error(&e)),
            });
        }
        out
    }
}

#[cfg(test)]
mod tests;
