//! Unit tests with hand-assembled modules (the integration tests run real Rust guests).

use std::path::PathBuf;

use spear_plugin_api::Executor;
use spear_plugin_api::executor::{ExecSpec, ExitStatus};

use crate::WasmExecutor;

/// A module whose `_start` returns at once.
pub const NOOP: &[u8] = &[
    0, b'a', b's', b'm', 1, 0, 0, 0, // header
    1, 4, 1, 0x60, 0, 0, // type 0: () -> ()
    3, 2, 1, 0, // func 0: type 0
    7, 10, 1, 6, b'_', b's', b't', b'a', b'r', b't', 0, 0, // export "_start"
    10, 4, 1, 2, 0, 0x0b, // body: end
];

/// A module whose `_start` loops forever.
pub const SPIN: &[u8] = &[
    0, b'a', b's', b'm', 1, 0, 0, 0, 1, 4, 1, 0x60, 0, 0, 3, 2, 1, 0, 7, 10, 1, 6, b'_', b's',
    b't', b'a', b'r', b't', 0, 0, // as NOOP
    10, 9, 1, 7, 0, 0x03, 0x40, 0x0c, 0, 0x0b, 0x0b, // body: loop { br 0 }
];

/// A module exporting nothing: not a command.
pub const LIBRARY: &[u8] = &[0, b'a', b's', b'm', 1, 0, 0, 0];

fn file(dir: &tempfile::TempDir, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.path().join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

fn spec(id: &str, artifact: &std::path::Path) -> ExecSpec {
    ExecSpec {
        execution_id: id.into(),
        artifact: Some(artifact.display().to_string()),
        ..ExecSpec::default()
    }
}

#[test]
fn the_same_bytes_are_compiled_once_wherever_they_live() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (file(&dir, "a.wasm", NOOP), file(&dir, "b.wasm", NOOP));
    let x = WasmExecutor::default();
    for (i, path) in [&a, &a, &b, &a].into_iter().enumerate() {
        let h = x.start(&spec(&format!("e{i}"), path)).unwrap();
        let r = x.wait(&h, 10_000).unwrap().expect("finished");
        assert_eq!(r.status, ExitStatus::Exited(0));
    }
    let s = x.cache_stats();
    assert_eq!((s.misses, s.hits, s.entries), (1, 3, 1), "{s:?}");
    // New bytes at a known path are noticed (the fingerprint changed) and compiled.
    let mut changed = NOOP.to_vec();
    changed.extend_from_slice(&[0, 3, 2, b'h', b'i']); // a custom section
    std::fs::write(&a, &changed).unwrap();
    let h = x.start(&spec("changed", &a)).unwrap();
    assert_eq!(
        x.wait(&h, 10_000).unwrap().unwrap().status,
        ExitStatus::Exited(0)
    );
    let s = x.cache_stats();
    assert_eq!((s.misses, s.entries), (2, 2), "{s:?}");
    // Relinking from the cached code still works.
    x.unprepare();
    let h = x.start(&spec("relinked", &b)).unwrap();
    assert_eq!(
        x.wait(&h, 10_000).unwrap().unwrap().status,
        ExitStatus::Exited(0)
    );
    assert_eq!(x.cache_stats().misses, 2);
}

#[test]
fn the_cache_is_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let x = WasmExecutor::with_config(crate::Config {
        cache_entries: 2,
        ..crate::Config::default()
    })
    .unwrap();
    for i in 0..4u8 {
        let mut bytes = NOOP.to_vec();
        bytes.extend_from_slice(&[0, 2, 1, b'a' + i]);
        let p = file(&dir, &format!("m{i}.wasm"), &bytes);
        let h = x.start(&spec(&format!("m{i}"), &p)).unwrap();
        x.wait(&h, 10_000).unwrap().expect("finished");
    }
    let s = x.cache_stats();
    assert_eq!((s.misses, s.entries), (4, 2), "{s:?}");
}

#[test]
fn a_spinning_guest_times_out_and_can_be_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let p = file(&dir, "spin.wasm", SPIN);
    let x = WasmExecutor::default();
    let mut s = spec("t", &p);
    s.timeout_ms = 50;
    let h = x.start(&s).unwrap();
    assert_eq!(
        x.wait(&h, 10_000).unwrap().unwrap().status,
        ExitStatus::TimedOut
    );
    let h = x.start(&spec("s", &p)).unwrap();
    assert!(x.wait(&h, 30).unwrap().is_none());
    x.stop(&h, 5_000).unwrap();
    assert_eq!(
        x.wait(&h, 0).unwrap().unwrap().status,
        ExitStatus::Signaled(15)
    );
}

#[test]
fn the_pool_bounds_live_guests_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let p = file(&dir, "spin.wasm", SPIN);
    let x = WasmExecutor::with_config(crate::Config {
        pool_instances: 2,
        ..crate::Config::default()
    })
    .unwrap();
    x.start(&spec("a", &p)).unwrap();
    x.start(&spec("b", &p)).unwrap();
    let e = x.start(&spec("c", &p)).unwrap_err();
    assert!(e.0.contains("pool is exhausted"), "{e}");
    x.stop("a", 5_000).unwrap();
    x.start(&spec("c", &p)).unwrap();
    x.destroy("b").unwrap();
    x.destroy("c").unwrap();
}

#[test]
fn non_commands_and_garbage_are_configuration_errors() {
    let dir = tempfile::tempdir().unwrap();
    let x = WasmExecutor::default();
    for (name, bytes, reason) in [
        ("lib.wasm", LIBRARY, "_start"),
        (
            "junk.wasm",
            &b"#!/bin/sh\necho hi\n"[..],
            "not a WebAssembly",
        ),
        ("bad.wasm", &NOOP[..20], "compile"),
    ] {
        let p = file(&dir, name, bytes);
        let e = x.start(&spec(name, &p)).unwrap_err().0;
        assert!(e.starts_with("invalid configuration:"), "{e}");
        assert!(e.contains(name) && e.contains(reason), "{e}");
    }
    let e = x.start(&ExecSpec::default()).unwrap_err().0;
    assert!(e.starts_with("invalid configuration: artifact"), "{e}");
    let e = x
        .start(&spec("gone", &dir.path().join("missing.wasm")))
        .unwrap_err()
        .0;
    assert!(
        e.starts_with("invalid configuration:") && e.contains("missing.wasm"),
        "{e}"
    );
}
