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
use spear_tests::storage_contract::keeps_the_contract;

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

/// Puts in one batch of `spear-storage-writer batches` (33 operations with its `batch-last`:
/// within etcd's default of 128 a transaction).
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
        .args(["batches", &BATCH_KEYS.to_string()])
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
    // A batch the killed writer sent may still commit on a server (etcd) while it is read: read
    // until `batch-last` is the same before and after the scan.
    let (last, counts) = (0..50)
        .find_map(|_| {
            let before = batch_last(store.as_ref());
            let counts = batches_there(name, store.as_ref());
            if batch_last(store.as_ref()) == before {
                return Some((before, counts));
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
            None
        })
        .unwrap_or_else(|| panic!("{name}: batch-last never held still"));
    assert!(
        last >= acked,
        "{name}: acknowledged batch {acked} lost (last {last})"
    );
    assert_eq!(
        counts.keys().copied().collect::<Vec<_>>(),
        (0..=last).collect::<Vec<_>>(),
        "{name}: the batches there are not exactly 0..={last}"
    );
    for (n, count) in counts {
        assert_eq!(count, BATCH_KEYS, "{name}: batch {n} is there in part");
    }
}

fn batch_last(store: &dyn StorageBackend) -> u64 {
    String::from_utf8(store.get(b"batch-last").unwrap().expect("batch-last"))
        .unwrap()
        .parse()
        .unwrap()
}

/// The keys of each batch found under `batch/`, each checked to hold its batch's value.
fn batches_there(name: &str, store: &dyn StorageBackend) -> std::collections::BTreeMap<u64, usize> {
    let mut counts = std::collections::BTreeMap::new();
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
    counts
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

/// A component storage backend's data lives in its instance: a reload that lowers the limits
/// below what it holds (memory) or needs (the call budget) must not cost it, so the instance keeps
/// the limits it was made with (a restart applies new ones).
#[test]
fn a_component_storage_backend_keeps_its_data_when_a_reload_lowers_the_limits() {
    let engine = WasmEngine::new().unwrap();
    let limits = Arc::new(Limits::new(LimitValues::default()));
    let plugin = load_file(&guest("component", "memory.wasm"), &engine, &limits).unwrap();
    let mut store = plugin.storage().unwrap();
    store.open("{}").unwrap();
    let value = vec![7u8; 1 << 20];
    for i in 0..8 {
        store.put(format!("k{i}").as_bytes(), &value).unwrap();
    }
    limits.set(LimitValues {
        memory_limit_mb: 2,
        call_timeout_ms: 1,
        setup_timeout_ms: 1,
        ..LimitValues::default()
    });
    store.put(b"k8", &value).unwrap();
    for i in 0..9 {
        assert_eq!(
            store.get(format!("k{i}").as_bytes()).unwrap().as_deref(),
            Some(&value[..]),
            "k{i}"
        );
    }
    // A new instance takes the limits in force: 2 MiB cannot hold this (budgets ample, so that
    // it is the memory limit that refuses).
    limits.set(LimitValues {
        memory_limit_mb: 2,
        ..LimitValues::default()
    });
    let mut fresh = plugin.storage().unwrap();
    fresh.open("{}").unwrap();
    let refused = (0..3)
        .try_for_each(|i| fresh.put(format!("k{i}").as_bytes(), &value))
        .unwrap_err()
        .to_string();
    assert!(refused.contains("memory limit of 2 MiB"), "{refused}");
}
