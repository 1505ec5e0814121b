//! Builds every guest the tests load, with the real toolchains, into `target/spear-guests`:
//!
//! - WASM components (wasm32-wasip2) of every built-in strategy, reclaimer and autoscaler, of the
//!   `memory` storage backend, of the `http` executor and of the fixtures;
//! - Extism modules (wasm32-unknown-unknown) of every built-in strategy, reclaimer and autoscaler;
//! - native libraries of every built-in plugin and the hostile fixture (`--features native-plugin`);
//! - the hostile fixture built against a mismatched plugin ABI.
//!
//! The outer build's flags are not passed on (they are meant for the host), and the guests get a
//! target directory of their own so that the outer cargo's lock is never contended. Paths are
//! exported to the tests as constants in `$OUT_DIR/guests.rs`.

use std::path::{Path, PathBuf};
use std::process::Command;

const PLUGINS: &[(&str, &str)] = &[
    ("spear-strategy-round-robin", "strategies/round-robin"),
    (
        "spear-strategy-least-connections",
        "strategies/least-connections",
    ),
    ("spear-strategy-affinity", "strategies/affinity"),
    ("spear-strategy-adaptive", "strategies/adaptive"),
    (
        "spear-strategy-weighted-round-robin",
        "strategies/weighted-round-robin",
    ),
    ("spear-strategy-random", "strategies/random"),
    ("spear-reclaimer-idle-time", "reclaimers/idle-time"),
    (
        "spear-reclaimer-memory-pressure",
        "reclaimers/memory-pressure",
    ),
    ("spear-reclaimer-error-rate", "reclaimers/error-rate"),
    ("spear-autoscaler-queue-depth", "autoscalers/queue-depth"),
];

/// Plugins also built as WASM components, but not as Extism modules (storage backends and
/// executors: Extism has no form for them). The `http` executor is a component only.
const ALSO_COMPONENTS: &[&str] = &["spear-storage-memory", "spear-executor-http"];

/// Plugins built as native libraries only (storage backends, executors), besides the native
/// builds of every plugin above.
const NATIVE_ONLY: &[&str] = &[
    "spear-storage-memory",
    "spear-storage-redb",
    "spear-storage-etcd",
    "spear-executor-process",
    "spear-executor-wasm",
    "spear-executor-container",
];

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest.parent().unwrap().to_path_buf();
    for watched in [
        "plugin-api",
        "plugins",
        "wit",
        "tests/fixtures",
        "Cargo.lock",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(watched).display());
    }
    let target_dir = std::env::var_os("SPEAR_GUEST_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target/spear-guests"));
    let out = target_dir.join("artifacts");
    for form in ["component", "extism", "native"] {
        std::fs::create_dir_all(out.join(form)).unwrap();
    }

    let mut packages: Vec<&str> = PLUGINS.iter().map(|(p, _)| *p).collect();
    packages.push("spear-fixture-hostile");

    // Components.
    let mut wasi = packages.clone();
    wasi.extend_from_slice(ALSO_COMPONENTS);
    wasi.push("spear-fixture-not-a-plugin");
    // Besides: a storage backend and an executor that misbehave on demand, and a strategy built
    // against the released spear:plugin@0.1.0 (a frozen copy of its WIT).
    let fixtures = [
        ("spear-fixture-hostile-storage", "hostile-storage"),
        ("spear-fixture-echo-executor", "echo-executor"),
        ("spear-fixture-wit-0-1-0-strategy", "wit-0.1.0-strategy"),
    ];
    wasi.extend(fixtures.iter().map(|(p, _)| *p));
    cargo(&root, &target_dir, Some("wasm32-wasip2"), &wasi, &[]);
    for (p, file) in fixtures {
        copy(
            &target_dir.join(format!("wasm32-wasip2/release/{}.wasm", snake(p))),
            &out.join(format!("component/{file}.wasm")),
        );
    }
    for p in packages.iter().chain(ALSO_COMPONENTS) {
        copy(
            &target_dir.join(format!("wasm32-wasip2/release/{}.wasm", snake(p))),
            &out.join(format!("component/{}.wasm", short(p))),
        );
    }
    copy(
        &target_dir.join("wasm32-wasip2/release/not-a-plugin.wasm"),
        &out.join("component/not-a-plugin.wasm"),
    );
    // The hostile fixture whose `info` abuses WASI (a separate invocation: features unify).
    cargo(
        &root,
        &target_dir,
        Some("wasm32-wasip2"),
        &["spear-fixture-hostile"],
        &["spear-fixture-hostile/info-writes-zeroes".into()],
    );
    copy(
        &target_dir.join("wasm32-wasip2/release/spear_fixture_hostile.wasm"),
        &out.join("component/hostile-info.wasm"),
    );
    // The wasm executor's WASI command fixture, as a component and as a wasip1 core module.
    std::fs::create_dir_all(out.join("wasip1")).unwrap();
    for (target, form) in [("wasm32-wasip2", "component"), ("wasm32-wasip1", "wasip1")] {
        cargo(
            &root,
            &target_dir,
            Some(target),
            &["spear-fixture-wasi-echo"],
            &[],
        );
        copy(
            &target_dir.join(format!("{target}/release/wasi-echo.wasm")),
            &out.join(format!("{form}/wasi-echo.wasm")),
        );
    }

    // The function component of the live-instance tests.
    cargo(
        &root,
        &target_dir,
        Some("wasm32-wasip2"),
        &["spear-fixture-function-counter"],
        &[],
    );
    copy(
        &target_dir.join("wasm32-wasip2/release/spear_fixture_function_counter.wasm"),
        &out.join("component/function-counter.wasm"),
    );

    // Extism modules.
    cargo(
        &root,
        &target_dir,
        Some("wasm32-unknown-unknown"),
        &packages,
        &[],
    );
    for p in &packages {
        copy(
            &target_dir.join(format!("wasm32-unknown-unknown/release/{}.wasm", snake(p))),
            &out.join(format!("extism/{}.wasm", short(p))),
        );
    }

    // Native libraries.
    let mut native = packages.clone();
    native.extend_from_slice(NATIVE_ONLY);
    let features: Vec<String> = native
        .iter()
        .map(|p| format!("{p}/native-plugin"))
        .collect();
    cargo(&root, &target_dir, None, &native, &features);
    for p in &native {
        copy(
            &target_dir.join(format!("release/lib{}.so", snake(p))),
            &out.join(format!("native/{}.so", short(p))),
        );
    }
    // A shared library without a root module: the fixture without its export.
    cargo(&root, &target_dir, None, &["spear-fixture-hostile"], &[]);
    copy(
        &target_dir.join("release/libspear_fixture_hostile.so"),
        &out.join("native/no-root-module.so"),
    );
    // The same fixture against an incompatible ABI (a separate invocation: features unify).
    cargo(
        &root,
        &target_dir,
        None,
        &["spear-fixture-hostile"],
        &[
            "spear-fixture-hostile/native-plugin".into(),
            "spear-plugin-api/abi-mismatch-fixture".into(),
        ],
    );
    copy(
        &target_dir.join("release/libspear_fixture_hostile.so"),
        &out.join("native/abi-mismatch.so"),
    );

    let consts = format!(
        "/// Folder holding `component/`, `extism/` and `native/` guest builds.\npub const GUESTS: &str = {:?};\n",
        out.display().to_string()
    );
    std::fs::write(
        PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("guests.rs"),
        consts,
    )
    .unwrap();
}

fn snake(package: &str) -> String {
    package.replace('-', "_")
}

/// `spear-strategy-least-connections` → `least-connections`; fixtures keep their short names.
fn short(package: &str) -> String {
    package
        .trim_start_matches("spear-strategy-")
        .trim_start_matches("spear-reclaimer-")
        .trim_start_matches("spear-autoscaler-")
        .trim_start_matches("spear-fixture-")
        .trim_start_matches("spear-storage-")
        .trim_start_matches("spear-executor-")
        .to_owned()
}

fn cargo(
    root: &Path,
    target_dir: &Path,
    target: Option<&str>,
    packages: &[&str],
    features: &[String],
) {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(root)
        .arg("build")
        .arg("--release")
        .arg("--target-dir")
        .arg(target_dir);
    if let Some(t) = target {
        cmd.arg("--target").arg(t);
    }
    for p in packages {
        cmd.arg("-p").arg(p);
    }
    if !features.is_empty() {
        cmd.arg("--features").arg(features.join(","));
    }
    for var in [
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "CARGO_BUILD_TARGET",
        "CARGO_TARGET_DIR",
        "RUSTC_WORKSPACE_WRAPPER",
    ] {
        cmd.env_remove(var);
    }
    // Small, quick-to-compile guests: no debug info.
    cmd.env("CARGO_PROFILE_RELEASE_DEBUG", "false")
        .env("CARGO_PROFILE_RELEASE_STRIP", "debuginfo");
    let status = cmd.status().expect("run cargo for the guest plugins");
    assert!(
        status.success(),
        "building guest plugins failed ({}): is the target installed? run `rustup target add {}`",
        packages.join(" "),
        target.unwrap_or("(host)")
    );
}

fn copy(from: &Path, to: &Path) {
    std::fs::copy(from, to)
        .unwrap_or_else(|e| panic!("copy {} → {}: {e}", from.display(), to.display()));
}
