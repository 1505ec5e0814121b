//! Every way a plugin file can be wrong is refused with a message naming the file and the reason;
//! the plugin active before stays active.

use std::path::Path;
use std::sync::Arc;

use spear_plugin_api::PluginKind;
use spear_plugin_runtime::engine::WasmEngine;
use spear_plugin_runtime::{
    Form, LimitValues, Limits, PluginHost, PluginState, Trigger, load_file,
};
use spear_tests::{Sandbox, guest, host_config, requests, targets};

fn refusal(path: &Path) -> String {
    let engine = WasmEngine::new().unwrap();
    let limits = Arc::new(Limits::new(LimitValues::default()));
    match load_file(path, &engine, &limits) {
        Ok(p) => panic!("{} loaded as {}", path.display(), p.info.name),
        Err(e) => e.to_string(),
    }
}

fn assert_refused(path: &Path, reason: &str) {
    let message = refusal(path);
    assert!(
        message.starts_with(&path.display().to_string()),
        "message must name the file: {message}"
    );
    assert!(
        message.contains(reason),
        "expected «{reason}» in: {message}"
    );
}

#[test]
fn every_built_in_plugin_loads_in_every_form_with_its_kind() {
    let engine = WasmEngine::new().unwrap();
    let limits = Arc::new(Limits::new(LimitValues::default()));
    let all = [
        ("round-robin", PluginKind::SchedulingStrategy),
        ("least-connections", PluginKind::SchedulingStrategy),
        ("affinity", PluginKind::SchedulingStrategy),
        ("adaptive", PluginKind::SchedulingStrategy),
        ("weighted-round-robin", PluginKind::SchedulingStrategy),
        ("random", PluginKind::SchedulingStrategy),
        ("idle-time", PluginKind::ReclamationPolicy),
        ("memory-pressure", PluginKind::ReclamationPolicy),
        ("error-rate", PluginKind::ReclamationPolicy),
    ];
    for (name, kind) in all {
        for (form, file, expected) in [
            ("component", format!("{name}.wasm"), Form::Component),
            ("extism", format!("{name}.wasm"), Form::Extism),
            ("native", format!("{name}.so"), Form::Native),
        ] {
            let p = load_file(&guest(form, &file), &engine, &limits).unwrap();
            assert_eq!(
                (p.info.name.as_str(), p.info.kind, p.id.form),
                (name, kind, expected)
            );
            assert_eq!(p.id.sha256.len(), 64);
        }
    }
}

#[test]
fn the_memory_storage_backend_loads_as_a_component_and_as_a_native_library() {
    let engine = WasmEngine::new().unwrap();
    let limits = Arc::new(Limits::new(LimitValues::default()));
    for (form, file, expected) in [
        ("component", "memory.wasm", Form::Component),
        ("native", "memory.so", Form::Native),
    ] {
        let p = load_file(&guest(form, file), &engine, &limits).unwrap();
        assert_eq!(
            (p.info.name.as_str(), p.info.kind, p.id.form),
            ("memory", PluginKind::StorageBackend, expected)
        );
        // A storage backend is not a strategy, whatever its form.
        assert!(p.new_strategy().is_err(), "{form}");
    }
}

#[test]
fn a_component_built_against_spear_plugin_0_1_0_still_loads_and_decides() {
    assert_eq!(spear_plugin_api::WIT_PACKAGE, "spear:plugin@0.1.1");
    // The fixture really is of the old version: its import and export names say 0.1.0.
    let bytes = std::fs::read(guest("component", "wit-0.1.0-strategy.wasm")).unwrap();
    let has = |name: &str| bytes.windows(name.len()).any(|w| w == name.as_bytes());
    assert!(has("spear:plugin/strategy@0.1.0") && has("spear:plugin/host@0.1.0"));
    assert!(!has("spear:plugin/strategy@0.1.1") && !has("spear:plugin/host@0.1.1"));
    let engine = WasmEngine::new().unwrap();
    let limits = Arc::new(Limits::new(LimitValues::default()));
    let p = load_file(
        &guest("component", "wit-0.1.0-strategy.wasm"),
        &engine,
        &limits,
    )
    .unwrap();
    assert_eq!(
        (p.info.name.as_str(), p.info.kind, p.id.form),
        ("wit-0-1-0", PluginKind::SchedulingStrategy, Form::Component)
    );
    let mut s = p.new_strategy().unwrap();
    s.configure("{}").unwrap();
    s.upsert(&targets(3)).unwrap();
    let decisions = s.place(&requests(0, 2)).unwrap();
    assert_eq!(
        decisions,
        vec![spear_plugin_api::Decision::Assign(1); 2],
        "the 0.1.0 guest's rule: the lowest healthy id"
    );
}

#[test]
fn hostile_files_are_refused_with_file_and_reason() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, bytes: &[u8]| {
        let p = dir.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    };
    assert_refused(&write("empty.wasm", b""), "empty file");
    assert_refused(
        &write("garbage.wasm", b"this is not a plugin at all"),
        "unknown magic bytes",
    );
    let component = std::fs::read(guest("component", "least-connections.wasm")).unwrap();
    assert_refused(
        &write("truncated.wasm", &component[..component.len() / 2]),
        "invalid WASM component",
    );
    assert_refused(&write("tiny.so", b"\x7fELF"), "too short");
    assert_refused(
        &guest("component", "not-a-plugin.wasm"),
        "a component of no spear:plugin world",
    );
    assert_refused(
        &guest("native", "no-root-module.so"),
        "an ELF file without a SPEAR plugin root module",
    );
    let sub = dir.path().join("dir-plugin.wasm");
    std::fs::create_dir(&sub).unwrap();
    assert_refused(&sub, "is a directory");
    let (a, b) = (
        dir.path().join("loop-a.wasm"),
        dir.path().join("loop-b.wasm"),
    );
    std::os::unix::fs::symlink(&b, &a).unwrap();
    std::os::unix::fs::symlink(&a, &b).unwrap();
    assert_refused(&a, "symbolic link loop");
    let core = write("core.wasm", b"\0asm\x01\x00\x00\x00");
    assert_refused(&core, "without the `spear_info` export");
}

#[test]
fn a_native_plugin_built_against_another_abi_is_refused_naming_both_versions() {
    let path = guest("native", "abi-mismatch.so");
    let message = refusal(&path);
    assert_eq!(
        message,
        format!(
            "{}: refused: built against plugin ABI 4.0.0, this host speaks {}",
            path.display(),
            spear_plugin_api::native::ABI_VERSION
        )
    );
}

#[test]
fn bad_files_dropped_beside_an_active_plugin_leave_it_active() {
    let sb = Sandbox::new();
    sb.install("component", "least-connections.wasm", "lc.wasm");
    sb.write_config(&host_config(
        false,
        "[scheduler]\nstrategy = \"least-connections\"\n",
    ));
    let host = PluginHost::start(&sb.config()).unwrap();
    host.strategy().upsert(targets(4));
    let before = host.strategy().active().unwrap();

    std::fs::write(sb.plugins().join("garbage.wasm"), b"garbage, not a plugin").unwrap();
    std::fs::create_dir(sb.plugins().join("folder.so")).unwrap();
    std::fs::copy(
        guest("component", "not-a-plugin.wasm"),
        sb.plugins().join("cmd.wasm"),
    )
    .unwrap();
    std::fs::copy(
        guest("native", "abi-mismatch.so"),
        sb.plugins().join("old-abi.so"),
    )
    .unwrap();
    // The active file itself replaced by a truncated copy.
    let bytes = std::fs::read(guest("component", "least-connections.wasm")).unwrap();
    std::fs::write(sb.plugins().join("lc.wasm"), &bytes[..1000]).unwrap();
    let report = host.reload(Trigger::Api);
    assert_eq!(
        report.outcome,
        spear_plugin_runtime::ReloadOutcome::Applied,
        "{report:?}"
    );

    assert_eq!(
        host.strategy().active().unwrap(),
        before,
        "the old plugin stays active"
    );
    assert!(
        host.strategy()
            .place(&requests(1, 8))
            .iter()
            .all(|d| matches!(d, spear_plugin_api::Decision::Assign(_)))
    );
    assert_eq!(host.telemetry().fallback_decisions_of("scheduler"), 0);
    let records = host.plugins();
    let by_file = |name: &str| {
        records
            .iter()
            .find(|r| r.file.ends_with(name))
            .unwrap()
            .clone()
    };
    for (file, reason) in [
        ("garbage.wasm", "unknown magic bytes"),
        ("folder.so", "is a directory"),
        ("cmd.wasm", "no spear:plugin world"),
    ] {
        let r = by_file(file);
        assert_eq!(r.state, PluginState::Failed, "{file}");
        assert!(
            r.last_error.as_deref().unwrap().contains(reason),
            "{file}: {:?}",
            r.last_error
        );
    }
    // A native library dropped in while the host runs is not loaded (its code would run) until
    // the config selects a plugin it may hold; at start, the same file is refused for its ABI
    // (`a_native_plugin_built_against_another_abi_is_refused_naming_both_versions` above).
    let old_abi = by_file("old-abi.so");
    assert_eq!(old_abi.state, PluginState::NotLoaded);
    sb.write_config(&host_config(false, "[scheduler]\nstrategy = \"hostile\"\n"));
    let report = host.reload(Trigger::Api);
    let error = report.error.unwrap_or_default();
    assert!(
        error.contains("no scheduling-strategy plugin named `hostile`"),
        "{error}"
    );
    let old_abi = host
        .plugins()
        .into_iter()
        .find(|r| r.file.ends_with("old-abi.so"))
        .unwrap();
    assert_eq!(old_abi.state, PluginState::Failed);
    assert!(old_abi.last_error.unwrap_or_default().contains(&format!(
        "built against plugin ABI 4.0.0, this host speaks {}",
        spear_plugin_api::native::ABI_VERSION
    )));
    assert_eq!(host.strategy().active().unwrap(), before);
    let lc = by_file("lc.wasm");
    assert_eq!(lc.state, PluginState::Active);
    assert!(lc.last_error.unwrap().contains("invalid WASM component"));
}

#[test]
fn two_files_claiming_one_name_the_second_is_refused() {
    let sb = Sandbox::new();
    sb.install("component", "round-robin.wasm", "a-rr.wasm");
    sb.install("native", "round-robin.so", "b-rr.so");
    sb.write_config(&host_config(false, ""));
    let host = PluginHost::start(&sb.config()).unwrap();
    let records = host.plugins();
    let b = records
        .iter()
        .find(|r| r.file.ends_with("b-rr.so"))
        .unwrap();
    assert_eq!(b.state, PluginState::Failed);
    let err = b.last_error.as_deref().unwrap();
    assert!(
        err.contains("plugin scheduling-strategy `round-robin` is already provided by"),
        "{err}"
    );
    assert!(err.contains("a-rr.wasm"), "{err}");
}

#[test]
fn a_sidecar_pin_refuses_any_other_content() {
    let sb = Sandbox::new();
    let lc = sb.install("component", "least-connections.wasm", "lc.wasm");
    let wrong = "0".repeat(64);
    std::fs::write(
        sb.plugins().join("lc.toml"),
        format!("sha256 = \"{wrong}\"\n"),
    )
    .unwrap();
    sb.write_config(&host_config(false, ""));
    let host = PluginHost::start(&sb.config()).unwrap();
    let record = host.plugins().pop().unwrap();
    assert_eq!(record.state, PluginState::Failed);
    let error = record.last_error.unwrap();
    assert!(
        error.starts_with(&format!("{}: refused: content sha256 ", lc.display())),
        "{error}"
    );
    assert!(
        error.contains(&format!("does not match the pin {wrong} in")),
        "{error}"
    );

    // Pinning the right content lets it load: the sidecar's change alone triggers the reload.
    let sha = spear_plugin_runtime::plugin::sha256_hex(&std::fs::read(&lc).unwrap());
    std::fs::write(
        sb.plugins().join("lc.toml"),
        format!("sha256 = \"{sha}\"\n"),
    )
    .unwrap();
    host.rescan(Trigger::Api);
    let record = host.plugins().pop().unwrap();
    assert_eq!(
        (record.state, record.name.as_str()),
        (PluginState::Standby, "least-connections")
    );

    std::fs::write(sb.plugins().join("lc.toml"), "sha = 1\n").unwrap();
    host.rescan(Trigger::Api);
    let error = host.plugins().pop().unwrap().last_error.unwrap();
    assert!(
        error.contains("invalid sidecar") && error.contains("unknown field `sha`"),
        "{error}"
    );
}
