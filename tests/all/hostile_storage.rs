//! A storage backend loaded as a WASM component is contained like any guest: a loop, a trap or a
//! memory bomb fails the call with a clear reason (and, being a write, as of unknown outcome), the
//! host goes on, and a wrong answer is refused rather than believed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use spear_plugin_api::StorageBackend;
use spear_plugin_api::storage::OUTCOME_UNKNOWN;
use spear_plugin_runtime::engine::WasmEngine;
use spear_plugin_runtime::{LimitValues, Limits, load_file};
use spear_tests::guest;

/// The hostile component, opened in `mode`. The engine and the loaded plugin are dropped on
/// return, as a host may drop a plugin whose store it keeps open: the instance must keep the
/// engine's epoch ticker alive itself, or a looping call would never be stopped.
fn open(mode: &str) -> Box<dyn StorageBackend> {
    let engine = WasmEngine::new().unwrap();
    let limits = Arc::new(Limits::new(LimitValues {
        memory_limit_mb: 16,
        // Storage calls run under the set-up budget.
        setup_timeout_ms: 200,
        ..LimitValues::default()
    }));
    let plugin = load_file(
        &guest("component", "hostile-storage.wasm"),
        &engine,
        &limits,
    )
    .unwrap();
    let mut store = plugin.storage().unwrap();
    store.open(&format!(r#"{{"mode": "{mode}"}}"#)).unwrap();
    store
}

#[test]
fn a_well_behaved_control_reads_its_writes() {
    let s = open("ok");
    s.put(b"k", b"v").unwrap();
    assert_eq!(s.get(b"k").unwrap().as_deref(), Some(&b"v"[..]));
}

#[test]
fn a_write_that_loops_traps_or_grows_is_stopped_as_of_unknown_outcome() {
    for (mode, reason) in [
        ("loop", "stopped: "),
        ("trap", "hostile storage trapped on purpose"),
        ("grow", "memory limit of 16 MiB"),
    ] {
        // On a thread, so that a call never stopped fails the test instead of hanging it.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let s = open(mode);
            let started = Instant::now();
            let error = s.put(b"k", b"v").unwrap_err().0;
            let took = started.elapsed();
            let read_after = s.get(b"k").unwrap_err().0;
            let write_after = s.put(b"k", b"v").unwrap_err().0;
            tx.send((error, took, read_after, write_after)).unwrap();
        });
        let (error, took, read_after, write_after) = rx
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| panic!("{mode}: the write was never stopped"));
        assert!(took < Duration::from_secs(5), "{mode}: stopped in {took:?}");
        assert!(error.starts_with(OUTCOME_UNKNOWN), "{mode}: {error}");
        assert!(
            error.contains(reason),
            "{mode}: expected «{reason}» in {error}"
        );
        // The instance is gone with what it held; later calls say so instead of answering, and
        // a write refused so did nothing (its outcome is known).
        for after in [read_after, write_after] {
            assert!(after.contains("unusable"), "{mode}: {after}");
            assert!(!after.starts_with(OUTCOME_UNKNOWN), "{mode}: {after}");
        }
    }
}

#[test]
fn a_wrong_scan_is_refused_and_the_instance_stays_usable() {
    let s = open("wrong-scan");
    // Three rows: past a limit of 2; within a limit of 10, the first is outside the prefix.
    for (limit, why) in [
        (2, "3 rows for a limit of 2"),
        (10, "a key outside the prefix"),
    ] {
        let error = s.scan(b"node/", None, limit).unwrap_err().0;
        assert!(
            error.contains("storage plugin `hostile-storage` answered a scan wrongly"),
            "{error}"
        );
        assert!(error.contains(why), "{error}");
    }
    s.put(b"k", b"v").unwrap();
    assert_eq!(s.get(b"k").unwrap().as_deref(), Some(&b"v"[..]));
}

#[test]
fn an_error_of_the_plugins_own_passes_through_as_written() {
    let s = open("error");
    assert_eq!(
        s.get(b"k").unwrap_err().0,
        "hostile storage refuses on purpose"
    );
    s.put(b"k", b"v").unwrap();
}

#[test]
fn a_storage_component_is_not_loaded_as_another_kind() {
    let engine = WasmEngine::new().unwrap();
    let limits = Arc::new(Limits::new(LimitValues::default()));
    let plugin = load_file(
        &guest("component", "hostile-storage.wasm"),
        &engine,
        &limits,
    )
    .unwrap();
    assert_eq!(
        plugin.info.kind,
        spear_plugin_api::PluginKind::StorageBackend
    );
    assert!(plugin.new_strategy().is_err());
    assert!(plugin.new_reclaimer().is_err());
    assert!(plugin.executor().is_err());
    // And a strategy is not a storage backend.
    let strategy = load_file(&guest("component", "round-robin.wasm"), &engine, &limits).unwrap();
    let error = strategy.storage().err().unwrap().to_string();
    assert!(error.contains("storage"), "{error}");
}
