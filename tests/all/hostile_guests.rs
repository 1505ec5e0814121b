//! Guests that attack the host through what it lends them — WASI output, polls, sockets, resource
//! tables, Extism's output path, state hand-over — are contained: the host stays up, the plugin
//! fails (and is quarantined) or is refused with a reason that names what it did, and the fallback
//! keeps placing. See `docs/wit.md` ("What a plugin can reach").

use std::time::{Duration, Instant};

use spear_plugin_api::Decision;
use spear_plugin_runtime::{EventKind, PluginHost, PluginState, Trigger};
use spear_tests::extism_wat::{Output, extism_module, info_json};
use spear_tests::{Sandbox, host_config, requests, targets};

/// A host with the hostile component selected in `mode`.
fn hostile(mode: &str) -> (Sandbox, std::sync::Arc<PluginHost>) {
    let sb = Sandbox::new();
    sb.install("component", "hostile.wasm", "hostile.wasm");
    sb.write_config(&host_config(
        false,
        &format!("[scheduler]\nstrategy = \"hostile\"\n[scheduler.config]\nmode = \"{mode}\"\n"),
    ));
    let host = PluginHost::start(&sb.config()).unwrap();
    host.strategy().upsert(targets(5));
    (sb, host)
}

/// Three batches, each answered in full by the fallback; then quarantine with `reason` named.
fn assert_quarantined_for(host: &PluginHost, reason: &str) {
    for batch in 0..3 {
        let decisions = host.strategy().place(&requests(batch * 4, 4));
        assert!(
            decisions
                .iter()
                .all(|d| matches!(d, Decision::Assign(id) if (1..=5).contains(id))),
            "the fallback answers validly: {decisions:?}"
        );
    }
    let t = host.telemetry();
    assert_eq!(t.failures_of("hostile"), 3, "one failure per batch");
    assert_eq!(t.fallback_decisions_of("scheduler"), 12);
    let status = host.strategy().status();
    assert!(status.quarantined, "quarantined after 3 failures");
    let error = status.last_error.unwrap_or_default();
    assert!(error.contains(reason), "«{reason}» not in «{error}»");
}

/// Start a host over the sandbox's one plugin file, which must be refused: its error.
fn refused_at_start(sb: &Sandbox) -> String {
    sb.write_config(&host_config(false, ""));
    let host = PluginHost::start(&sb.config()).unwrap();
    let record = host.plugins().into_iter().next().unwrap();
    assert_eq!(record.state, PluginState::Failed);
    record.last_error.unwrap_or_default()
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

#[test]
fn component_writing_a_terabyte_of_zeroes_is_stopped_without_allocating_it() {
    let (_sb, host) = hostile("write-zeroes");
    assert_quarantined_for(&host, "write-zeroes larger than check-write permitted");
}

#[test]
fn component_whose_info_writes_a_terabyte_is_refused_at_load() {
    let sb = Sandbox::new();
    sb.install("component", "hostile-info.wasm", "hostile.wasm");
    let error = refused_at_start(&sb);
    assert!(
        error.contains("write-zeroes larger than check-write permitted"),
        "{error}"
    );
}

#[test]
fn component_blocking_in_a_poll_is_stopped_at_its_wall_ceiling() {
    // call_timeout_ms = 50 and the default wall_factor of 5: a 250 ms ceiling; the guest sleeps 3 s.
    let (_sb, host) = hostile("poll-block");
    let start = Instant::now();
    host.strategy().place(&requests(0, 1));
    assert!(
        start.elapsed() < Duration::from_millis(2500),
        "the call ended before the guest's 3 s sleep ({:?})",
        start.elapsed()
    );
    assert!(host.strategy().status().last_error.is_some());
    let (_sb, host) = hostile("poll-block");
    assert_quarantined_for(
        &host,
        "blocked in wasi:io/poll past its 250 ms wall-clock ceiling",
    );
}

#[test]
fn component_creating_sockets_is_denied_every_one() {
    let before = open_fds();
    let (_sb, host) = hostile("sockets");
    assert_quarantined_for(&host, "socket creation denied");
    let after = open_fds();
    assert!(
        after < before + 64,
        "no sockets reached the host: {before} → {after} descriptors"
    );
}

#[test]
fn component_hoarding_resources_hits_the_table_limit() {
    let (_sb, host) = hostile("resources");
    assert_quarantined_for(&host, "resource table has no free keys");
}

#[test]
fn a_save_state_failure_at_a_swap_is_reported_and_counted() {
    let (sb, host) = hostile("ok");
    // Same plugin, new config: the old instance's state is carried.
    sb.write_config(&host_config(
        false,
        "[scheduler]\nstrategy = \"hostile\"\n[scheduler.config]\nmode = \"save-state-trap\"\n",
    ));
    let report = host.reload(Trigger::Api);
    assert!(
        report
            .changes
            .iter()
            .any(|c| c.contains("active; state carried (0 bytes)")),
        "{report:?}"
    );
    // Swapping away from the version whose save-state traps: not carried, and counted.
    sb.write_config(&host_config(
        false,
        "[scheduler]\nstrategy = \"hostile\"\n[scheduler.config]\nmode = \"ok\"\n",
    ));
    let report = host.reload(Trigger::Api);
    assert!(
        report.changes.iter().any(|c| c
            .contains("active; state not carried: save-state trapped: error while executing")
            || c.contains("active; state not carried: save-state trapped")),
        "{report:?}"
    );
    let t = host.telemetry();
    assert_eq!(t.failures_of("hostile"), 1, "the save-state failure counts");
    assert_eq!(t.count(EventKind::StateNotCarried), 1);
    // The new version decides.
    assert_eq!(
        host.strategy().place(&requests(0, 1)),
        vec![Decision::Assign(1)]
    );
    assert_eq!(t.fallback_decisions_of("scheduler"), 0);
}

/// A host whose hostile strategy computes `work` iterations per `place`.
fn working(work: u64, call_timeout_ms: u64) -> (Sandbox, std::sync::Arc<PluginHost>) {
    let sb = Sandbox::new();
    sb.install("component", "hostile.wasm", "hostile.wasm");
    let config = host_config(
        false,
        &format!("[scheduler]\nstrategy = \"hostile\"\n[scheduler.config]\nmode = \"work\"\nwork = {work}\n"),
    )
    .replace("call_timeout_ms = 50", &format!("call_timeout_ms = {call_timeout_ms}"));
    sb.write_config(&config);
    let host = PluginHost::start(&sb.config()).unwrap();
    host.strategy().upsert(targets(5));
    (sb, host)
}

#[test]
fn a_guest_within_its_cpu_budget_is_not_failed_when_the_machine_is_busy() {
    // Calibrate on the quiet machine: iterations the guest computes per millisecond.
    let probe = 20_000_000;
    let (_sb, host) = working(probe, 5000);
    host.strategy().place(&requests(0, 1));
    let start = Instant::now();
    host.strategy().place(&requests(1, 1));
    let per_ms = probe / (start.elapsed().as_millis() as u64).max(1);
    // 30 ms of work under a 50 ms budget, while two threads spin on this 2-core machine: the guest
    // gets about two thirds of a core, so many calls take longer than 50 ms of wall-clock time. A
    // wall-clock deadline would fail them; the CPU budget counts only what the guest used.
    let (_sb, host) = working(per_ms * 30, 50);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let hogs: Vec<_> = (0..2)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            })
        })
        .collect();
    let mut slowest = Duration::ZERO;
    for i in 0..40 {
        host.strategy().upsert(targets(5));
        let start = Instant::now();
        host.strategy().place(&requests(i, 1));
        slowest = slowest.max(start.elapsed());
    }
    eprintln!("30 ms of guest work under load: slowest call {slowest:?}");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for h in hogs {
        h.join().unwrap();
    }
    let t = host.telemetry();
    assert_eq!(
        t.failures_of("hostile"),
        0,
        "slowest call {slowest:?}: {:?}",
        host.strategy().status()
    );
    assert_eq!(t.fallback_decisions_of("scheduler"), 0);
}

#[test]
fn a_guest_over_its_cpu_budget_is_stopped() {
    let (_sb, host) = working(100_000_000_000, 50);
    assert_quarantined_for(&host, "used its 50 ms CPU budget");
}

#[test]
fn extism_module_whose_output_wraps_is_contained() {
    let sb = Sandbox::new();
    let info = info_json("hostile", "scheduling-strategy", "wraps its output");
    let bytes = extism_module(&[
        ("spear_info", Output::Text(&info)),
        ("spear_place", Output::Wrapping("[]")),
    ]);
    std::fs::write(sb.plugins().join("wrap.wasm"), bytes).unwrap();
    sb.write_config(&host_config(false, "[scheduler]\nstrategy = \"hostile\"\n"));
    let host = PluginHost::start(&sb.config()).unwrap();
    host.strategy().upsert(targets(5));
    assert_quarantined_for(&host, "overrun the plugin's 2-byte block");
}

#[test]
fn a_half_copied_native_library_is_refused_not_loaded() {
    let sb = Sandbox::new();
    let whole = std::fs::read(spear_tests::guest("native", "hostile.so")).unwrap();
    std::fs::write(sb.plugins().join("hostile.so"), &whole[..whole.len() / 2]).unwrap();
    let error = refused_at_start(&sb);
    assert!(
        error.contains("truncated or corrupt ELF library"),
        "{error}"
    );
}

#[test]
fn a_reload_whose_second_swap_fails_rolls_back_the_first() {
    let sb = Sandbox::new();
    sb.install("component", "hostile.wasm", "hostile.wasm");
    sb.install("component", "idle-time.wasm", "idle-time.wasm");
    sb.install("component", "memory-pressure.wasm", "memory-pressure.wasm");
    let config = |mode: &str, policy: &str| {
        host_config(
            false,
            &format!(
                "[scheduler]\nstrategy = \"hostile\"\n[scheduler.config]\nmode = \"{mode}\"\n\
                 [reclaimer]\npolicy = \"{policy}\"\n"
            ),
        )
    };
    sb.write_config(&config("ok", "idle-time"));
    let host = PluginHost::start(&sb.config()).unwrap();
    host.strategy().upsert(targets(5));

    // One edit swaps both roles; the strategy's swap fails when the host sends it its view.
    sb.write_config(&config("upsert-trap", "memory-pressure"));
    let report = host.reload(Trigger::Api);
    assert_eq!(
        report.outcome,
        spear_plugin_runtime::ReloadOutcome::Rejected,
        "{report:?}"
    );
    assert!(
        report
            .error
            .as_deref()
            .unwrap_or_default()
            .contains("upsert"),
        "{report:?}"
    );
    // Nothing of it applied: the reclaimer swapped first and was rolled back.
    assert_eq!(host.reclaimer().active().unwrap().name, "idle-time");
    assert_eq!(host.strategy().active().unwrap().name, "hostile");
    assert_eq!(host.strategy().status().config, "{\"mode\":\"ok\"}");
    assert!(
        !report.changes.iter().any(|c| c.contains("memory-pressure")),
        "{report:?}"
    );
    assert_eq!(
        host.strategy().place(&requests(0, 1)),
        vec![Decision::Assign(1)]
    );
    assert_eq!(host.telemetry().fallback_decisions_of("scheduler"), 0);
}

/// Whether a native library with this sha256 is mapped into this process (the runtime loads each
/// from a copy named after the first 16 hex digits of its sha256).
fn mapped(sha256: &str) -> bool {
    std::fs::read_to_string("/proc/self/maps")
        .unwrap()
        .contains(&sha256[..16])
}

#[test]
fn a_native_library_dropped_in_after_start_runs_no_code_until_selected() {
    let sb = Sandbox::new();
    sb.install("component", "round-robin.wasm", "rr.wasm");
    sb.write_config(&host_config(
        false,
        "[scheduler]\nstrategy = \"round-robin\"\n",
    ));
    let host = PluginHost::start(&sb.config()).unwrap();
    // A copy of a native strategy with a byte appended: its own sha256, so no other test in this
    // process has loaded the same bytes.
    let mut bytes = std::fs::read(spear_tests::guest("native", "least-connections.so")).unwrap();
    bytes.push(0x5a ^ (std::process::id() as u8));
    bytes.extend_from_slice(
        &std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
            .to_le_bytes(),
    );
    let sha = spear_plugin_runtime::plugin::sha256_hex(&bytes);
    std::fs::write(sb.plugins().join("fast-policy.so"), &bytes).unwrap();

    let report = host.rescan(Trigger::Api);
    assert!(
        report
            .changes
            .iter()
            .any(|c| c.contains("native library not loaded")),
        "{report:?}"
    );
    let record = host
        .plugins()
        .into_iter()
        .find(|r| r.file.ends_with("fast-policy.so"))
        .unwrap();
    assert_eq!(record.state, PluginState::NotLoaded);
    assert!(!mapped(&sha), "an unselected native library was loaded");

    // Selecting the plugin it holds loads it (its name is not the file's: every unloaded library
    // is tried when a selected name is unknown).
    sb.write_config(&host_config(
        false,
        "[scheduler]\nstrategy = \"least-connections\"\n",
    ));
    let report = host.reload(Trigger::Api);
    assert!(report.error.is_none(), "{report:?}");
    assert_eq!(host.strategy().active().unwrap().name, "least-connections");
    assert!(mapped(&sha));
}
