//! The reload rules of DESIGN §5, through a real plugin directory, a real config file and the
//! `notify` watcher.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use spear_plugin_api::Decision;
use spear_plugin_runtime::{EventKind, PluginHost, PluginState, ReloadOutcome, Trigger};
use spear_tests::{Sandbox, guest, host_config, requests, targets};

/// Wait until `f` holds (the watcher works asynchronously), failing after 10 s.
fn eventually(what: &str, f: impl Fn() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "timed out waiting for: {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn active_name(host: &PluginHost) -> Option<String> {
    host.strategy().active().map(|a| a.name)
}

#[test]
fn a_dropped_file_is_registered_and_selecting_it_makes_it_active_without_restart() {
    let sb = Sandbox::new();
    sb.install("component", "round-robin.wasm", "round-robin.wasm");
    sb.write_config(&host_config(
        true,
        "[scheduler]\nstrategy = \"round-robin\"\n",
    ));
    let host = PluginHost::start(&sb.config()).unwrap();
    let _watch = host.watch().unwrap().expect("watching");
    host.strategy().upsert(targets(3));
    assert_eq!(active_name(&host).as_deref(), Some("round-robin"));

    sb.install("extism", "least-connections.wasm", "lc.wasm");
    eventually("lc registered", || {
        host.plugins()
            .iter()
            .any(|r| r.name == "least-connections" && r.state == PluginState::Standby)
    });
    assert_eq!(
        active_name(&host).as_deref(),
        Some("round-robin"),
        "registered is not selected"
    );

    sb.write_config(&host_config(
        true,
        "[scheduler]\nstrategy = \"least-connections\"\n",
    ));
    eventually("lc active", || {
        active_name(&host).as_deref() == Some("least-connections")
    });
    let d = host.strategy().place(&requests(1, 3));
    assert_eq!(
        d,
        vec![
            Decision::Assign(1),
            Decision::Assign(2),
            Decision::Assign(3)
        ]
    );
    let last = host.history().pop().unwrap();
    assert_eq!(last.outcome, ReloadOutcome::Applied);
    assert_eq!(last.trigger, Trigger::ConfigFile);
    assert_eq!(last.active[0].name, "least-connections");
}

#[test]
fn an_invalid_config_leaves_the_previous_one_in_force() {
    let sb = Sandbox::new();
    sb.install("component", "round-robin.wasm", "rr.wasm");
    sb.install("component", "idle-time.wasm", "idle.wasm");
    sb.write_config(&host_config(
        false,
        "[scheduler]\nstrategy = \"round-robin\"\n",
    ));
    let host = PluginHost::start(&sb.config()).unwrap();
    let cases = [
        ("[plugins\nbroken", "invalid configuration"),
        (
            "[plugins]\ncall_timeout = 5\n",
            "unknown field `call_timeout`",
        ),
        (
            "[plugins]\nquarantine_after = 0\n",
            "plugins.quarantine_after: must be at least 1",
        ),
        (
            "[scheduler]\nstrategy = \"nope\"\n",
            "scheduler.strategy: no scheduling-strategy plugin named `nope`",
        ),
        (
            "[scheduler]\nstrategy = \"idle-time\"\n",
            "no scheduling-strategy plugin named `idle-time`",
        ),
        (
            "[scheduler]\nstrategy = \"round-robin\"\n[scheduler.config]\nbogus = 1\n",
            "unknown field `bogus`",
        ),
    ];
    for (i, (text, reason)) in cases.iter().enumerate() {
        sb.write_config(text);
        let report = host.reload_config(Trigger::Api);
        assert_eq!(report.outcome, ReloadOutcome::Rejected, "{text}");
        let error = report.error.unwrap();
        assert!(error.contains(reason), "«{reason}» not in «{error}»");
        assert!(error.ends_with("the previous configuration stays in force"));
        assert_eq!(
            host.telemetry().count(EventKind::ConfigRejected),
            i as u64 + 1
        );
        assert_eq!(active_name(&host).as_deref(), Some("round-robin"));
        assert_eq!(host.config().limits.quarantine_after, 3);
    }
}

#[test]
fn restart_only_keys_are_named_and_the_rest_applies() {
    let sb = Sandbox::new();
    sb.install("component", "round-robin.wasm", "rr.wasm");
    sb.install("native", "least-connections.so", "lc.so");
    sb.write_config(&host_config(
        false,
        "[scheduler]\nstrategy = \"round-robin\"\n",
    ));
    let host = PluginHost::start(&sb.config()).unwrap();
    sb.write_config(
        "[plugins]\ndir = \"elsewhere\"\nwatch = false\ncall_timeout_ms = 20\n\n[scheduler]\nstrategy = \"least-connections\"\n",
    );
    let report = host.reload_config(Trigger::Signal);
    assert_eq!(report.outcome, ReloadOutcome::RestartRequired);
    // The default cache and scratch directories live in the plugin directory, so they move with
    // it.
    assert_eq!(
        report.restart_keys,
        vec!["plugins.dir", "plugins.cache_dir", "plugins.scratch_dir"]
    );
    assert_eq!(active_name(&host).as_deref(), Some("least-connections"));
    assert_eq!(host.limits().get().call_timeout_ms, 20);
    assert!(
        host.config().dir.ends_with("plugins"),
        "the directory in force is unchanged"
    );
}

#[test]
fn removing_the_active_file_keeps_it_running_until_another_is_selected() {
    let sb = Sandbox::new();
    let rr = sb.install("component", "round-robin.wasm", "rr.wasm");
    sb.install("component", "least-connections.wasm", "lc.wasm");
    sb.write_config(&host_config(
        false,
        "[scheduler]\nstrategy = \"round-robin\"\n",
    ));
    let host = PluginHost::start(&sb.config()).unwrap();
    host.strategy().upsert(targets(2));
    std::fs::remove_file(&rr).unwrap();
    host.rescan(Trigger::Api);
    assert_eq!(active_name(&host).as_deref(), Some("round-robin"));
    let record = host
        .plugins()
        .into_iter()
        .find(|r| r.name == "round-robin")
        .unwrap();
    assert!(record.file_missing);
    assert_eq!(
        host.strategy().place(&requests(1, 2)),
        vec![Decision::Assign(1), Decision::Assign(2)]
    );

    sb.write_config(&host_config(
        false,
        "[scheduler]\nstrategy = \"least-connections\"\n",
    ));
    host.reload_config(Trigger::Api);
    host.rescan(Trigger::Api);
    assert_eq!(active_name(&host).as_deref(), Some("least-connections"));
    assert!(
        host.plugins().iter().all(|r| r.name != "round-robin"),
        "now unregistered"
    );
    assert_eq!(host.telemetry().count(EventKind::Unregistered), 1);
}

#[test]
fn replacing_the_active_file_under_continuous_placement_fails_no_decision_and_keeps_state() {
    let sb = Sandbox::new();
    let path = sb.install("component", "round-robin.wasm", "round-robin.wasm");
    sb.write_config(&host_config(
        true,
        "[scheduler]\nstrategy = \"round-robin\"\n",
    ));
    let host = PluginHost::start(&sb.config()).unwrap();
    let _watch = host.watch().unwrap();
    host.strategy().upsert(targets(10));

    // Placers run continuously on two threads while the file is swapped between forms.
    let stop = Arc::new(AtomicBool::new(false));
    let placed = Arc::new(AtomicU64::new(0));
    let placers: Vec<_> = (0..2)
        .map(|t| {
            let (host, stop, placed) = (host.clone(), stop.clone(), placed.clone());
            std::thread::spawn(move || {
                let mut id = t * 1_000_000;
                while !stop.load(Ordering::Relaxed) {
                    let d = host.strategy().place(&requests(id, 4));
                    assert!(d.iter().all(|d| matches!(d, Decision::Assign(_))), "{d:?}");
                    placed.fetch_add(4, Ordering::Relaxed);
                    id += 4;
                    // Keep targets from filling up: the host refreshes figures as a real one would.
                    if id % 64 == 0 {
                        host.strategy().upsert(targets(10));
                    }
                }
            })
        })
        .collect();
    let forms = [
        ("extism", "round-robin.wasm"),
        ("native", "round-robin.so"),
        ("component", "round-robin.wasm"),
    ];
    for i in 0..6 {
        let (form, file) = forms[i % 3];
        let sha =
            spear_plugin_runtime::plugin::sha256_hex(&std::fs::read(guest(form, file)).unwrap());
        let tmp = sb.plugins().join(".swap.tmp");
        std::fs::copy(guest(form, file), &tmp).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        eventually("swap visible", || {
            host.strategy().active().is_some_and(|a| a.sha256 == sha)
        });
        std::thread::sleep(Duration::from_millis(30));
    }
    stop.store(true, Ordering::Relaxed);
    for p in placers {
        p.join().unwrap();
    }
    assert!(placed.load(Ordering::Relaxed) > 100);
    assert_eq!(
        host.telemetry().fallback_decisions_of("scheduler"),
        0,
        "no decision fell back"
    );
    assert_eq!(host.telemetry().failures_of("round-robin"), 0);
    assert!(host.telemetry().count(EventKind::Activated) >= 7);

    // State carried over: the round-robin cursor continues across one more swap.
    host.strategy().upsert(targets(10));
    let before = host.strategy().place(&requests(5_000_000, 1));
    let Decision::Assign(last) = before[0] else {
        panic!("{before:?}")
    };
    std::fs::copy(guest("extism", "round-robin.wasm"), &path).unwrap();
    let report = host.rescan(Trigger::Api);
    let _ = report;
    let after = host.strategy().place(&requests(5_000_001, 1));
    assert_eq!(
        after,
        vec![Decision::Assign(last % 10 + 1)],
        "the cursor moved on from {last}"
    );
}

#[test]
fn a_forced_reload_rescans_without_a_watcher() {
    let sb = Sandbox::new();
    sb.write_config(&host_config(
        false,
        "[scheduler]\nstrategy = \"round-robin\"\n",
    ));
    let err = PluginHost::start(&sb.config()).unwrap_err().to_string();
    assert!(
        err.contains("no scheduling-strategy plugin named `round-robin`"),
        "{err}"
    );

    sb.write_config(&host_config(false, ""));
    let host = PluginHost::start(&sb.config()).unwrap();
    host.strategy().upsert(targets(2));
    // With nothing selected the built-in round-robin decides.
    assert_eq!(
        host.strategy().place(&requests(1, 2)),
        vec![Decision::Assign(1), Decision::Assign(2)]
    );
    sb.install("native", "least-connections.so", "lc.so");
    sb.write_config(&host_config(
        false,
        "[scheduler]\nstrategy = \"least-connections\"\n",
    ));
    assert!(host.plugins().is_empty(), "no watcher: nothing seen yet");
    let report = host.reload(Trigger::Signal);
    assert_eq!(report.outcome, ReloadOutcome::Applied, "{report:?}");
    assert_eq!(active_name(&host).as_deref(), Some("least-connections"));
}

#[test]
fn a_reclamation_policy_swap_changes_which_instances_are_stopped() {
    use spear_plugin_api::InstanceState::*;
    use spear_tests::{instance, node};
    let sb = Sandbox::new();
    sb.install("component", "idle-time.wasm", "idle.wasm");
    sb.install("component", "memory-pressure.wasm", "mem.wasm");
    sb.write_config(&host_config(
        false,
        "[reclaimer]\npolicy = \"idle-time\"\n[reclaimer.config]\nidle_ms = 1000\n",
    ));
    let host = PluginHost::start(&sb.config()).unwrap();
    let instances = vec![
        instance(1, "a", Ready, 5000, 10),
        instance(2, "a", Ready, 10, 900),
    ];
    let n = node(1000, 950);
    assert_eq!(host.reclaimer().select(&instances, &n), vec![1]);
    sb.write_config(&host_config(
        false,
        "[reclaimer]\npolicy = \"memory-pressure\"\n",
    ));
    host.reload_config(Trigger::Api);
    assert_eq!(host.reclaimer().select(&instances, &n), vec![2]);
}

#[test]
fn renaming_the_active_file_moves_the_plugin_without_a_duplicate_refusal() {
    let sb = Sandbox::new();
    let a = sb.install("component", "round-robin.wasm", "rr-1.wasm");
    sb.write_config(&host_config(
        false,
        "[scheduler]\nstrategy = \"round-robin\"\n",
    ));
    let host = PluginHost::start(&sb.config()).unwrap();
    std::fs::rename(&a, sb.plugins().join("rr-2.wasm")).unwrap();
    let report = host.rescan(Trigger::Api);
    assert_eq!(report.outcome, ReloadOutcome::Applied, "{report:?}");
    assert!(report.error.is_none());
    let active = host.strategy().active().unwrap();
    assert!(active.file.ends_with("rr-2.wasm"), "{active:?}");
    let records = host.plugins();
    assert_eq!(records.len(), 1, "the old path is gone: {records:?}");
    assert_eq!(records[0].state, PluginState::Active);
    assert!(
        records[0].last_error.is_none(),
        "{:?}",
        records[0].last_error
    );
}

#[test]
fn the_active_file_overwritten_by_another_plugin_keeps_the_running_one_and_later_reloads_apply() {
    let sb = Sandbox::new();
    let rr = sb.install("component", "round-robin.wasm", "rr.wasm");
    sb.install("component", "idle-time.wasm", "idle.wasm");
    sb.install("component", "error-rate.wasm", "errors.wasm");
    sb.write_config(&host_config(
        false,
        "[scheduler]\nstrategy = \"round-robin\"\n[reclaimer]\npolicy = \"idle-time\"\n",
    ));
    let host = PluginHost::start(&sb.config()).unwrap();
    std::fs::copy(guest("component", "least-connections.wasm"), &rr).unwrap();
    let report = host.rescan(Trigger::Api);
    assert!(report.error.is_none(), "{report:?}");
    assert_eq!(active_name(&host).as_deref(), Some("round-robin"));
    let records = host.plugins();
    let state_of = |name: &str| records.iter().find(|r| r.name == name).map(|r| r.state);
    assert_eq!(
        state_of("round-robin"),
        Some(PluginState::Active),
        "{records:?}"
    );
    assert_eq!(state_of("least-connections"), Some(PluginState::Standby));

    // An edit of another section still applies; round-robin keeps running meanwhile.
    sb.write_config(&host_config(
        false,
        "[scheduler]\nstrategy = \"round-robin\"\n[reclaimer]\npolicy = \"error-rate\"\n",
    ));
    let report = host.reload_config(Trigger::Api);
    assert_eq!(report.outcome, ReloadOutcome::Applied, "{report:?}");
    assert_eq!(host.reclaimer().active().unwrap().name, "error-rate");
    assert_eq!(active_name(&host).as_deref(), Some("round-robin"));
    sb.write_config(&host_config(
        false,
        "[scheduler]\nstrategy = \"least-connections\"\n[reclaimer]\npolicy = \"error-rate\"\n",
    ));
    host.reload_config(Trigger::Api);
    assert_eq!(active_name(&host).as_deref(), Some("least-connections"));
}

#[test]
fn a_storage_backend_dropped_after_start_is_reported_as_needing_a_restart() {
    let sb = Sandbox::new();
    sb.install("component", "round-robin.wasm", "round-robin.wasm");
    sb.install("native", "memory.so", "memory.so");
    sb.write_config(&host_config(
        false,
        "[scheduler]\nstrategy = \"round-robin\"\n",
    ));
    let host = PluginHost::start(&sb.config()).unwrap();
    // At start, a storage backend is simply loaded: the host opens it next.
    let history = host.history();
    let first = history
        .iter()
        .find(|r| r.trigger == Trigger::Start)
        .unwrap();
    assert_eq!(first.outcome, ReloadOutcome::Applied, "{first:?}");
    assert!(first.restart_keys.is_empty(), "{first:?}");

    // Another one dropped in later (the component form, under its own name) cannot be used by
    // the running host: the reload says so, with the reason, and what it did still applies. A
    // config edit in the same reload does not hide it.
    sb.install("component", "hostile-storage.wasm", "store.wasm");
    sb.write_config(
        &host_config(false, "[scheduler]\nstrategy = \"round-robin\"\n")
            .replace("call_timeout_ms = 50", "call_timeout_ms = 60"),
    );
    let report = host.reload(Trigger::Api);
    assert_eq!(report.outcome, ReloadOutcome::RestartRequired, "{report:?}");
    assert_eq!(host.limits().get().call_timeout_ms, 60, "the edit applied");
    assert!(
        report.changes.iter().any(|c| c.contains("call_timeout_ms")),
        "{report:?}"
    );
    assert_eq!(
        report.restart_keys,
        ["plugins: storage backend hostile-storage"],
        "{report:?}"
    );
    let change = report
        .changes
        .iter()
        .find(|c| c.contains("loaded hostile-storage"))
        .unwrap();
    assert!(change.contains("a restart is needed to use it"), "{change}");
    assert!(change.contains("sms storage migrate"), "{change}");
    assert!(
        host.events()
            .iter()
            .any(|e| e.kind == EventKind::RestartRequired
                && e.message.contains("storage backend hostile-storage")),
        "{:?}",
        host.events()
    );
    // Reported once: the next reload has nothing new to say.
    let again = host.reload(Trigger::Api);
    assert_eq!(again.outcome, ReloadOutcome::Unchanged, "{again:?}");
}

#[test]
fn a_native_storage_backend_loaded_by_a_later_selection_is_reported_as_needing_a_restart() {
    let sb = Sandbox::new();
    sb.install("component", "round-robin.wasm", "round-robin.wasm");
    sb.write_config(&host_config(
        false,
        "[scheduler]\nstrategy = \"round-robin\"\n",
    ));
    let host = PluginHost::start(&sb.config()).unwrap();
    // Native libraries dropped after start are set aside, not loaded...
    sb.install("native", "redb.so", "redb.so");
    sb.install("native", "least-connections.so", "lc.so");
    let scan = host.reload(Trigger::Api);
    assert_eq!(scan.outcome, ReloadOutcome::Applied, "{scan:?}");
    assert!(
        host.plugins()
            .iter()
            .any(|r| r.name == "redb.so" && r.state == PluginState::NotLoaded),
        "{:?}",
        host.plugins()
    );
    // ...until a selection names a plugin none loaded has: then every one set aside loads, the
    // storage backend with them, and the config reload says it needs a restart.
    sb.write_config(&host_config(
        false,
        "[scheduler]\nstrategy = \"least-connections\"\n",
    ));
    let report = host.reload(Trigger::Api);
    assert_eq!(active_name(&host).as_deref(), Some("least-connections"));
    assert_eq!(report.outcome, ReloadOutcome::RestartRequired, "{report:?}");
    assert_eq!(
        report.restart_keys,
        ["plugins: storage backend redb"],
        "{report:?}"
    );
}
