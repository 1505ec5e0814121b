//! The storage contract against every backend, loaded as the hosts load it (native libraries and
//! WASM components through the runtime), and the durability of `redb` across `kill -9`: every
//! acknowledged write kept, and every batch all there or not at all (the same crash test runs on
//! `etcd` in etcd_storage.rs).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;

use spear_plugin_api::StorageBackend;
use spear_plugin_api::storage::{BatchLimits, BatchOp};
use spear_plugin_runtime::engine::WasmEngine;
use spear_plugin_runtime::{LimitValues, Limits, load_file};
use spear_tests::guest;

/// Load the native storage plugin `name` and open it with `config`.
pub(crate) fn open(name: &str, config: &str) -> Box<dyn StorageBackend> {
    open_file(&guest("native", &format!("{name}.so")), config)
}

/// Load the storage plugin in `file` (any form) and open it with `config`.
pub(crate) fn open_file(file: &std::path::Path, config: &str) -> Box<dyn StorageBackend> {
    let engine = WasmEngine::new().unwrap();
    let limits = Arc::new(Limits::new(LimitValues::default()));
    let plugin = load_file(file, &engine, &limits).unwrap();
    assert_eq!(
        plugin.info.kind,
        spear_plugin_api::PluginKind::StorageBackend
    );
    let mut store = plugin.storage().unwrap();
    store.open(config).unwrap();
    store
}

fn backends() -> Vec<(
    &'static str,
    Box<dyn StorageBackend>,
    Option<tempfile::TempDir>,
)> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db/state.redb");
    let redb = open(
        "redb",
        &format!(r#"{{"path": {:?}}}"#, path.display().to_string()),
    );
    vec![
        ("memory", open("memory", "{}"), None),
        (
            "memory (component)",
            open_file(&guest("component", "memory.wasm"), "{}"),
            None,
        ),
        ("redb", redb, Some(dir)),
    ]
}

#[test]
fn every_backend_keeps_the_storage_contract() {
    for (name, s, _dir) in backends() {
        keeps_the_contract(name, s.as_ref());
        assert_eq!(s.limits(), BatchLimits::UNLIMITED, "{name}");
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

/// The storage contract, on an empty store `s`: every backend passes the same operations.
pub(crate) fn keeps_the_contract(name: &str, s: &dyn StorageBackend) {
    {
        assert_eq!(s.get(b"a").unwrap(), None, "{name}");
        s.put(b"a", b"1").unwrap();
        s.put(b"a", b"2").unwrap();
        assert_eq!(
            s.get(b"a").unwrap().as_deref(),
            Some(&b"2"[..]),
            "{name}: put replaces"
        );
        assert!(s.delete(b"a").unwrap(), "{name}");
        assert!(
            !s.delete(b"a").unwrap(),
            "{name}: second delete finds nothing"
        );

        for i in 0..25u8 {
            s.put(format!("node/{i:02}").as_bytes(), &[i]).unwrap();
        }
        s.put(b"nodf", b"after the prefix").unwrap();
        s.put(b"nod", b"before the prefix").unwrap();
        // Paging through a prefix: 10, 10, 5, then nothing.
        let mut seen = Vec::new();
        let mut after: Option<Vec<u8>> = None;
        loop {
            let page = s.scan(b"node/", after.as_deref(), 10).unwrap();
            if page.is_empty() {
                break;
            }
            assert!(page.len() <= 10);
            after = Some(page.last().unwrap().0.clone());
            seen.extend(page.into_iter().map(|(_, v)| v[0]));
        }
        assert_eq!(
            seen,
            (0..25).collect::<Vec<u8>>(),
            "{name}: pages in key order, nothing twice"
        );

        s.batch(&[
            BatchOp::Put {
                key: b"x".to_vec(),
                value: b"1".to_vec(),
            },
            BatchOp::Put {
                key: b"y".to_vec(),
                value: b"2".to_vec(),
            },
            BatchOp::Delete {
                key: b"node/00".to_vec(),
            },
        ])
        .unwrap();
        assert_eq!(s.get(b"y").unwrap().as_deref(), Some(&b"2"[..]), "{name}");
        assert_eq!(s.get(b"node/00").unwrap(), None, "{name}");

        assert!(
            !s.compare_and_swap(b"x", Some(b"0"), Some(b"9")).unwrap(),
            "{name}: wrong expectation"
        );
        assert_eq!(s.get(b"x").unwrap().as_deref(), Some(&b"1"[..]));
        assert!(
            s.compare_and_swap(b"x", Some(b"1"), Some(b"9")).unwrap(),
            "{name}"
        );
        assert!(
            !s.compare_and_swap(b"z", Some(b"1"), Some(b"1")).unwrap(),
            "{name}: absent ≠ expected"
        );
        assert!(
            s.compare_and_swap(b"z", None, Some(b"new")).unwrap(),
            "{name}: create if absent"
        );
        assert!(
            !s.compare_and_swap(b"z", None, Some(b"again")).unwrap(),
            "{name}"
        );
        assert!(
            s.compare_and_swap(b"z", Some(b"new"), None).unwrap(),
            "{name}: delete by CAS"
        );
        assert_eq!(s.get(b"z").unwrap(), None);

        // Checks: a batch applies only if every check holds, all of it or nothing.
        assert!(
            s.batch(&[
                check("x", Some("9")),
                check("absent", None),
                put("w", "1"),
                BatchOp::Delete { key: b"x".to_vec() },
            ])
            .unwrap(),
            "{name}: every check holds"
        );
        assert_eq!(s.get(b"w").unwrap().as_deref(), Some(&b"1"[..]), "{name}");
        assert_eq!(s.get(b"x").unwrap(), None, "{name}");
        assert!(
            !s.batch(&[
                check("w", Some("1")),
                check("y", Some("not its value")),
                put("v", "1"),
                BatchOp::Delete { key: b"w".to_vec() },
            ])
            .unwrap(),
            "{name}: one check fails"
        );
        assert_eq!(s.get(b"v").unwrap(), None, "{name}: nothing applied");
        assert_eq!(s.get(b"w").unwrap().as_deref(), Some(&b"1"[..]), "{name}");
        assert!(
            !s.batch(&[check("w", None), put("v", "1")]).unwrap(),
            "{name}: a present key is not absent"
        );
        assert!(
            s.batch(&[put("q", "1"), check("q", None), put("q", "2")])
                .unwrap(),
            "{name}: checks see the state before the batch's writes"
        );
        assert_eq!(
            s.get(b"q").unwrap().as_deref(),
            Some(&b"2"[..]),
            "{name}: the last write of a key wins"
        );
    }
}

#[test]
fn redb_refuses_bad_configuration_and_calls_before_open() {
    let engine = WasmEngine::new().unwrap();
    let limits = Arc::new(Limits::new(LimitValues::default()));
    let plugin = load_file(&guest("native", "redb.so"), &engine, &limits).unwrap();
    let mut store = plugin.storage().unwrap();
    let before = store.get(b"k").unwrap_err().to_string();
    assert!(before.contains("storage not opened"), "{before}");
    let missing = store.open("{}").unwrap_err().to_string();
    assert!(missing.contains("`path` is required"), "{missing}");
    let unknown = store
        .open(r#"{"path": "/tmp/x", "cache": 1}"#)
        .unwrap_err()
        .to_string();
    assert!(unknown.contains("unknown field `cache`"), "{unknown}");
}

#[test]
fn redb_keeps_every_acknowledged_write_across_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        r#"{{"path": {:?}}}"#,
        dir.path().join("state.redb").display().to_string()
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_spear-storage-writer"))
        .arg(guest("native", "redb.so"))
        .arg(&config)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut last = 0;
    for _ in 0..200 {
        let line = lines.next().unwrap().unwrap();
        last = line.strip_prefix("ack ").unwrap().parse::<u64>().unwrap();
    }
    // SIGKILL: no destructor, no flush, no chance to finish the write in flight.
    child.kill().unwrap();
    child.wait().unwrap();
    let store = open("redb", &config);
    for n in 0..=last {
        let value = store.get(format!("key-{n:08}").as_bytes()).unwrap();
        assert_eq!(
            value.as_deref(),
            Some(format!("value-{n}").as_bytes()),
            "acknowledged write {n} lost"
        );
    }
}

/// Puts in one batch of `spear-storage-writer batches` (its `BATCH_KEYS`).
const BATCH_KEYS: usize = 32;

/// Run `spear-storage-writer PLUGIN CONFIG batches` until a moment that changes from run to run
/// after its 100th acknowledged batch, kill it with SIGKILL, and check the store `reopen` opens:
/// every batch is there whole or not at all, the batches there are exactly 0..=`batch-last`, and
/// every acknowledged one is among them.
pub(crate) fn batches_are_whole_across_kill_9(
    name: &str,
    plugin: &std::path::Path,
    config: &str,
    reopen: impl FnOnce() -> Box<dyn StorageBackend>,
) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_spear-storage-writer"))
        .arg(plugin)
        .arg(config)
        .arg("batches")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let jitter = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let mut acked = 0;
    for _ in 0..100 + jitter % 50 {
        let line = lines.next().unwrap().unwrap();
        acked = line.strip_prefix("ack ").unwrap().parse::<u64>().unwrap();
    }
    // Mid-batch, most likely: the writer does nothing but commit them.
    std::thread::sleep(std::time::Duration::from_micros(u64::from(jitter % 3000)));
    child.kill().unwrap();
    child.wait().unwrap();

    let store = reopen();
    let last: u64 = String::from_utf8(store.get(b"batch-last").unwrap().expect("batch-last"))
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        last >= acked,
        "{name}: acknowledged batch {acked} lost (last {last})"
    );
    let mut counts: std::collections::BTreeMap<u64, usize> = Default::default();
    let mut after: Option<Vec<u8>> = None;
    loop {
        let page = store.scan(b"batch/", after.as_deref(), 1000).unwrap();
        let Some((k, _)) = page.last() else { break };
        after = Some(k.clone());
        for (key, value) in &page {
            let key = String::from_utf8(key.clone()).unwrap();
            let n: u64 = key.split('/').nth(1).unwrap().parse().unwrap();
            let v: u64 = String::from_utf8(value.clone())
                .unwrap()
                .trim()
                .parse()
                .unwrap();
            assert_eq!(v, n, "{name}: {key} holds another batch's value");
            *counts.entry(n).or_default() += 1;
        }
    }
    assert_eq!(
        counts.keys().copied().collect::<Vec<_>>(),
        (0..=last).collect::<Vec<_>>(),
        "{name}: the batches there are not exactly 0..={last}"
    );
    for (n, count) in counts {
        assert_eq!(count, BATCH_KEYS, "{name}: batch {n} is there in part");
    }
}

#[test]
fn redb_keeps_every_batch_whole_across_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        r#"{{"path": {:?}}}"#,
        dir.path().join("state.redb").display().to_string()
    );
    batches_are_whole_across_kill_9("redb", &guest("native", "redb.so"), &config, || {
        open("redb", &config)
    });
}

#[test]
fn concurrent_writes_share_group_commits_in_queue_order() {
    use spear_plugin_runtime::group::GroupWriter;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let (_, redb, _dir) = backends().pop().unwrap();
    let backend: Arc<dyn StorageBackend> = Arc::from(redb);
    let commits = Arc::new(AtomicUsize::new(0));
    let counted = commits.clone();
    let writer = GroupWriter::start("test-writer", backend.clone(), move |r, commit| {
        assert!(r.is_ok(), "{r:?}");
        assert!(
            commit.writes >= 1 && commit.ops >= commit.writes,
            "{commit:?}"
        );
        counted.fetch_add(1, Ordering::Relaxed);
    })
    .unwrap();
    let put = |k: &str, v: &str| BatchOp::Put {
        key: k.as_bytes().to_vec(),
        value: v.as_bytes().to_vec(),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    // 64 writers at once (each its own key, and all of them to `last`): queued together, they
    // are committed in a few batches, and the last queued value of `last` wins.
    let receivers: Vec<_> = (0..64)
        .map(|i| {
            writer.enqueue(vec![
                put(&format!("k{i:02}"), "v"),
                put("last", &i.to_string()),
            ])
        })
        .collect();
    for r in receivers {
        runtime.block_on(r).unwrap().unwrap();
    }
    let n = commits.load(Ordering::Relaxed);
    assert!((1..64).contains(&n), "{n} commits for 64 writes");
    assert_eq!(backend.get(b"last").unwrap().as_deref(), Some(&b"63"[..]));
    assert_eq!(backend.scan(b"k", None, 100).unwrap().len(), 64);
    // Each writer learns its own group's outcome: durable once answered.
    assert_eq!(
        runtime.block_on(writer.write(vec![put("k00", "w")])),
        Ok(())
    );
    assert_eq!(backend.get(b"k00").unwrap().as_deref(), Some(&b"w"[..]));
}
