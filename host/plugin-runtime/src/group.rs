//! Group commit for a storage-backend plugin: one writer thread takes every write queued meanwhile
//! and applies them as one atomic batch, so concurrent writers share one durable commit (one fsync
//! with redb) instead of queueing for one each. Writes apply in the order they were queued; each
//! writer learns its group's outcome.

use std::sync::Arc;

use spear_plugin_api::StorageBackend;
use spear_plugin_api::storage::BatchOp;
use tokio::sync::{mpsc, oneshot};

/// Writes combined into one commit at most.
const GROUP: usize = 4096;

/// The outcome of a write: the backend's error as text.
pub type WriteResult = Result<(), String>;

type Write = (Vec<BatchOp>, oneshot::Sender<WriteResult>);

/// A handle on a backend's writer thread (which ends when every handle is dropped).
#[derive(Clone)]
pub struct GroupWriter {
    writes: mpsc::UnboundedSender<Write>,
}

impl std::fmt::Debug for GroupWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GroupWriter")
    }
}

impl GroupWriter {
    /// Start the writer thread `name` for `backend`; `observe` sees each commit's outcome (for
    /// health reporting).
    pub fn start(
        name: &str,
        backend: Arc<dyn StorageBackend>,
        observe: impl Fn(&WriteResult) + Send + 'static,
    ) -> std::io::Result<Self> {
        let (writes, mut rx) = mpsc::unbounded_channel::<Write>();
        std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || {
                while let Some(first) = rx.blocking_recv() {
                    let mut group = vec![first];
                    while group.len() < GROUP {
                        match rx.try_recv() {
                            Ok(w) => group.push(w),
                            Err(_) => break,
                        }
                    }
                    let ops: Vec<BatchOp> = group
                        .iter_mut()
                        .flat_map(|(ops, _)| std::mem::take(ops))
                        .collect();
                    let result = backend.batch(&ops).map_err(|e| e.to_string());
                    observe(&result);
                    for (_, done) in group {
                        let _ = done.send(result.clone());
                    }
                }
            })?;
        Ok(Self { writes })
    }

    /// Queue a write now (writes apply in queue order); the receiver gets its group's outcome.
    pub fn enqueue(&self, ops: Vec<BatchOp>) -> oneshot::Receiver<WriteResult> {
        let (done, rx) = oneshot::channel();
        if let Err(e) = self.writes.send((ops, done)) {
            let _ = e.0.1.send(Err("the storage writer has stopped".into()));
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
        async move {
            done.await
                .unwrap_or_else(|_| Err("the storage writer has stopped".into()))
        }
    }
}
