//! Group commit against counting and size-limited in-memory backends.
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
    fn batch(&self, ops: &[BatchOp]) -> Result<bool, PluginError> {
        self.0.lock().unwrap().push(ops.len());
        Ok(true)
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
    let writer = GroupWriter::start_paced("test-writer", backend.clone(), pace, |_, _| ()).unwrap();
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

/// The in-memory store, taking at most three operations a batch and counting its batches.
#[derive(Default)]
struct Small {
    store: spear_plugin_api::memory_store::MemoryStore,
    batches: Mutex<Vec<usize>>,
    /// The error every batch fails with, while set.
    failing: Mutex<Option<String>>,
}

impl StorageBackend for Small {
    fn info(&self) -> PluginInfo {
        self.store.info()
    }
    fn open(&mut self, c: &str) -> Result<(), PluginError> {
        self.store.open(c)
    }
    fn get(&self, k: &[u8]) -> Result<Option<Vec<u8>>, PluginError> {
        self.store.get(k)
    }
    fn put(&self, k: &[u8], v: &[u8]) -> Result<(), PluginError> {
        self.store.put(k, v)
    }
    fn delete(&self, k: &[u8]) -> Result<bool, PluginError> {
        self.store.delete(k)
    }
    fn scan(&self, p: &[u8], a: Option<&[u8]>, l: u32) -> Result<Vec<KeyValue>, PluginError> {
        self.store.scan(p, a, l)
    }
    fn batch(&self, ops: &[BatchOp]) -> Result<bool, PluginError> {
        if ops.len() > 3 {
            return Err(PluginError::new("over the limit"));
        }
        if let Some(e) = self.failing.lock().unwrap().clone() {
            return Err(PluginError(e));
        }
        self.batches.lock().unwrap().push(ops.len());
        self.store.batch(ops)
    }
    fn compare_and_swap(
        &self,
        k: &[u8],
        e: Option<&[u8]>,
        n: Option<&[u8]>,
    ) -> Result<bool, PluginError> {
        self.store.compare_and_swap(k, e, n)
    }
    fn limits(&self) -> BatchLimits {
        BatchLimits {
            max_ops: 3,
            max_bytes: u64::MAX,
        }
    }
}

fn put(k: &str, v: &str) -> BatchOp {
    BatchOp::Put {
        key: k.into(),
        value: v.into(),
    }
}

fn check(k: &str, v: Option<&str>) -> BatchOp {
    BatchOp::Check {
        key: k.into(),
        value: v.map(Into::into),
    }
}

/// Queue `writes` at once (the writer, paced, is still waiting out its last commit, so they
/// share commits) and return each one's outcome.
fn together(writer: &GroupWriter, writes: Vec<Vec<BatchOp>>) -> Vec<WriteResult> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    // Queued now, all of them (write_soon enqueues at once); awaited in order.
    let pending: Vec<_> = writes.into_iter().map(|w| writer.write_soon(w)).collect();
    rt.block_on(async {
        let mut out = Vec::new();
        for p in pending {
            out.push(p.await);
        }
        out
    })
}

fn paced_small() -> (Arc<Small>, GroupWriter) {
    let backend = Arc::new(Small::default());
    let writer = GroupWriter::start_paced(
        "test-writer",
        backend.clone(),
        Duration::from_millis(100),
        |_, _| (),
    )
    .unwrap();
    // A first commit, so that the writes after it wait out the pace together.
    together(&writer, vec![vec![put("warm", "1")]])
        .pop()
        .unwrap()
        .unwrap();
    (backend, writer)
}

#[test]
fn commits_stay_within_the_backends_limits() {
    let (backend, writer) = paced_small();
    let writes = (0..10).map(|i| vec![put(&format!("k{i}"), "v")]).collect();
    for outcome in together(&writer, writes) {
        assert_eq!(outcome, Ok(()));
    }
    let batches = backend.batches.lock().unwrap().clone();
    assert_eq!(batches[1..].iter().sum::<usize>(), 10, "{batches:?}");
    assert!(batches.iter().all(|&n| n <= 3), "{batches:?}");
    assert!(batches.contains(&3), "writes were grouped: {batches:?}");
    for i in 0..10 {
        assert!(
            backend
                .store
                .get(format!("k{i}").as_bytes())
                .unwrap()
                .is_some()
        );
    }
}

#[test]
fn a_failed_check_fails_its_write_alone() {
    let (backend, writer) = paced_small();
    let outcomes = together(
        &writer,
        vec![
            vec![put("a", "1")],
            vec![check("x", Some("expected")), put("b", "1")],
            vec![check("warm", Some("1")), put("c", "1")],
        ],
    );
    assert_eq!(outcomes, [Ok(()), Err(WriteError::Conflict), Ok(())]);
    assert!(backend.store.get(b"a").unwrap().is_some());
    assert!(backend.store.get(b"b").unwrap().is_none(), "nothing of it");
    assert!(backend.store.get(b"c").unwrap().is_some());
}

#[test]
fn a_check_sees_the_writes_queued_before_it() {
    let (backend, writer) = paced_small();
    backend.store.put(b"x", b"1").unwrap();
    // Applied in order, the second write's check sees x = 2 and fails; the third's holds.
    let outcomes = together(
        &writer,
        vec![
            vec![put("x", "2")],
            vec![check("x", Some("1")), put("x", "3")],
            vec![check("x", Some("2")), put("y", "1")],
        ],
    );
    assert_eq!(outcomes, [Ok(()), Err(WriteError::Conflict), Ok(())]);
    assert_eq!(backend.store.get(b"x").unwrap().as_deref(), Some(&b"2"[..]));
    assert!(backend.store.get(b"y").unwrap().is_some());
}

#[test]
fn a_fenced_writer_writes_nothing_once_the_fence_moves() {
    let (backend, writer) = paced_small();
    backend.store.put(b"leader", b"me").unwrap();
    writer.set_fence(Some(Fence {
        key: b"leader".to_vec(),
        value: b"me".to_vec(),
        why: "not the leader".into(),
    }));
    assert_eq!(together(&writer, vec![vec![put("a", "1")]]), [Ok(())]);
    assert!(!*writer.fenced().borrow());
    backend.store.put(b"leader", b"someone else").unwrap();
    let fenced = Err(WriteError::Fenced("not the leader".into()));
    let outcomes = together(
        &writer,
        vec![
            vec![put("b", "1")],
            vec![check("a", Some("1")), put("c", "1")],
        ],
    );
    assert_eq!(outcomes, [fenced.clone(), fenced]);
    assert!(*writer.fenced().borrow(), "the writer says it was fenced");
    assert!(backend.store.get(b"b").unwrap().is_none());
    assert!(backend.store.get(b"c").unwrap().is_none());
}

#[test]
fn a_commit_of_unknown_outcome_is_told_apart_and_raises_unsure() {
    let (backend, writer) = paced_small();
    *backend.failing.lock().unwrap() = Some("disk on fire".into());
    assert_eq!(
        together(&writer, vec![vec![put("a", "1")]]),
        [Err(WriteError::Failed("disk on fire".into()))]
    );
    assert!(!*writer.unsure().borrow(), "a failed write is not unsure");
    let unknown = format!("{OUTCOME_UNKNOWN}no member answered");
    *backend.failing.lock().unwrap() = Some(unknown.clone());
    assert_eq!(
        together(&writer, vec![vec![put("a", "1")], vec![put("b", "1")]]),
        [
            Err(WriteError::Unknown(unknown.clone())),
            Err(WriteError::Unknown(unknown))
        ]
    );
    assert!(*writer.unsure().borrow(), "the writer says it is unsure");
    // The backend answers again: the writer writes nothing more all the same.
    *backend.failing.lock().unwrap() = None;
    let batches = backend.batches.lock().unwrap().len();
    let after = together(&writer, vec![vec![put("c", "1")]]);
    assert!(
        matches!(&after[0], Err(WriteError::Unknown(_))),
        "{after:?}"
    );
    assert_eq!(backend.batches.lock().unwrap().len(), batches);
    assert!(backend.store.get(b"c").unwrap().is_none());
}
