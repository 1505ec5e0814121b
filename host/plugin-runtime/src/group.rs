//! Group commit for a storage-backend plugin: one writer thread takes every write queued meanwhile
//! and applies them as one atomic batch, so concurrent writers share one durable commit (one fsync
//! with redb) instead of queueing for one each. Writes apply in the order they were queued; each
//! writer learns its group's outcome.

use std::sync::Arc;
use std::time::{Duration, Instant};

use spear_plugin_api::StorageBackend;
use spear_plugin_api::storage::BatchOp;
use tokio::sync::{mpsc, oneshot};

/// Writes combined into one commit at most.
const GROUP: usize = 4096;

/// The outcome of a write: the backend's error as text.
pub type WriteResult = Result<(), String>;

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
    /// Start the writer thread `name` for `backend`; `observe` sees each commit's outcome and
    /// what it took (for health reporting and metrics). Each write is committed as soon as the commit before it is done.
    pub fn start(
        name: &str,
        backend: Arc<dyn StorageBackend>,
        observe: impl Fn(&WriteResult, &Commit) + Send + 'static,
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
        observe: impl Fn(&WriteResult, &Commit) + Send + 'static,
    ) -> std::io::Result<Self> {
        let (writes, mut rx) = mpsc::unbounded_channel::<Write>();
        std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || {
                let mut last: Option<Instant> = None;
                while let Some(first) = rx.blocking_recv() {
                    if let Some(wait) = last.and_then(|t| pace.checked_sub(t.elapsed())) {
                        std::thread::sleep(wait);
                    }
                    last = Some(Instant::now());
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
                    let began = Instant::now();
                    let result = backend.batch(&ops).map_err(|e| e.to_string());
                    let commit = Commit {
                        writes: group.len(),
                        ops: ops.len(),
                        took: began.elapsed(),
                    };
                    observe(&result, &commit);
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

#[cfg(test)]
mod tests {
    use super::*;
    use spear_plugin_api::storage::KeyValue;
    use spear_plugin_api::{PluginError, PluginInfo, PluginKind};
    use std::sync::Mutex;

    /// A backend that records the size of each batch it commits.
    #[derive(Default)]
    struct Counting(Mutex<Vec<usize>>);

    impl StorageBackend for Counting {
        fn info(&self) -> PluginInfo {
            PluginInfo {
                name: "counting".into(),
                version: "0.0.0".into(),
                kind: PluginKind::StorageBackend,
                description: String::new(),
                config_schema: "{}".into(),
            }
        }
        fn open(&mut self, _: &str) -> Result<(), PluginError> {
            Ok(())
        }
        fn get(&self, _: &[u8]) -> Result<Option<Vec<u8>>, PluginError> {
            Ok(None)
        }
        fn put(&self, _: &[u8], _: &[u8]) -> Result<(), PluginError> {
            Ok(())
        }
        fn delete(&self, _: &[u8]) -> Result<bool, PluginError> {
            Ok(false)
        }
        fn scan(&self, _: &[u8], _: Option<&[u8]>, _: u32) -> Result<Vec<KeyValue>, PluginError> {
            Ok(vec![])
        }
        fn batch(&self, ops: &[BatchOp]) -> Result<(), PluginError> {
            self.0.lock().unwrap().push(ops.len());
            Ok(())
        }
        fn compare_and_swap(
            &self,
            _: &[u8],
            _: Option<&[u8]>,
            _: Option<&[u8]>,
        ) -> Result<bool, PluginError> {
            Ok(false)
        }
    }

    fn op(i: usize) -> Vec<BatchOp> {
        vec![BatchOp::Delete {
            key: i.to_le_bytes().to_vec(),
        }]
    }

    /// 60 writes, one every millisecond or so, each awaited only at the end; returns the
    /// commits and how long the writes took.
    fn trickle(pace: Duration) -> (Vec<usize>, Duration) {
        let backend = Arc::new(Counting::default());
        let writer =
            GroupWriter::start_paced("test-writer", backend.clone(), pace, |_, _| ()).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let start = Instant::now();
        rt.block_on(async {
            let mut pending = Vec::new();
            for i in 0..60 {
                pending.push(writer.write_soon(op(i)));
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            for p in pending {
                p.await.unwrap();
            }
        });
        let took = start.elapsed();
        let commits = backend.0.lock().unwrap().clone();
        assert_eq!(commits.iter().sum::<usize>(), 60, "every write, once");
        (commits, took)
    }

    #[test]
    fn paced_commits_are_fewer_and_larger_and_a_quiet_write_goes_at_once() {
        let pace = Duration::from_millis(20);
        let (paced, took) = trickle(pace);
        let (eager, _) = trickle(Duration::ZERO);
        // At most one commit per 20 ms (the first at once, the last after the writes).
        let most = (took.as_millis() / pace.as_millis()) as usize + 2;
        assert!(paced.len() <= most, "paced over {took:?}: {paced:?}");
        assert!(
            eager.len() > 2 * paced.len(),
            "eager {eager:?}, paced {paced:?}"
        );
        assert_eq!(
            paced[0], 1,
            "the first write after a quiet spell is not held"
        );

        // After a quiet spell longer than the pace, a write is committed without waiting.
        let backend = Arc::new(Counting::default());
        let pace = Duration::from_millis(300);
        let writer = GroupWriter::start_paced("test-writer", backend, pace, |_, _| ()).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        rt.block_on(async {
            writer.write(op(0)).await.unwrap();
            tokio::time::sleep(pace).await;
            let t = Instant::now();
            writer.write(op(1)).await.unwrap();
            assert!(t.elapsed() < pace / 2, "held {:?}", t.elapsed());
            let t = Instant::now();
            writer.write(op(2)).await.unwrap();
            assert!(
                t.elapsed() >= pace / 2,
                "a write right after a commit waits out the pace"
            );
        });
    }
}
