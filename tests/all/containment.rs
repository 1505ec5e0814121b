//! A guest that loops, traps, grows without bound or answers nonsense is contained: the fallback
//! answers every request, the failure is counted, and after `quarantine_after` consecutive failures
//! the plugin is quarantined until a new config or file arrives.

use spear_plugin_api::Decision;
use spear_plugin_runtime::{EventKind, PluginHost, PluginState, Trigger};
use spear_tests::{Sandbox, host_config, requests, targets};

fn hostile_host(form: &str, file: &str, mode: &str) -> (Sandbox, std::sync::Arc<PluginHost>) {
    let sb = Sandbox::new();
    sb.install(form, file, file);
    let mut config = host_config(
        false,
        &format!("[scheduler]\nstrategy = \"hostile\"\n[scheduler.config]\nmode = \"{mode}\"\n"),
    );
    if mode == "grow" {
        // Growing to the limit takes a few milliseconds; on a loaded machine the 50 ms deadline
        // could win the race and hide the memory limit this test is about.
        config = config.replace("call_timeout_ms = 50", "call_timeout_ms = 5000");
    }
    sb.write_config(&config);
    let host = PluginHost::start(&sb.config()).unwrap();
    host.strategy().upsert(targets(5));
    (sb, host)
}

/// Place three batches: each is answered in full by the fallback; then the plugin is quarantined.
fn assert_contained(form: &str, file: &str, mode: &str, reason: &str) {
    let (sb, host) = hostile_host(form, file, mode);
    for batch in 0..3 {
        let decisions = host.strategy().place(&requests(batch * 4, 4));
        assert_eq!(decisions.len(), 4);
        assert!(
            decisions
                .iter()
                .all(|d| matches!(d, Decision::Assign(id) if (1..=5).contains(id))),
            "{form}/{mode}: fallback must answer validly: {decisions:?}"
        );
    }
    let t = host.telemetry();
    assert_eq!(
        t.failures_of("hostile"),
        3,
        "{form}/{mode}: one failure per batch"
    );
    assert_eq!(t.fallback_decisions_of("scheduler"), 12);
    let status = host.strategy().status();
    assert!(status.quarantined, "{form}/{mode}: quarantined after 3");
    let error = status.last_error.unwrap();
    assert!(
        error.contains(reason),
        "{form}/{mode}: «{reason}» not in «{error}»"
    );
    assert_eq!(t.count(EventKind::Quarantined), 1);
    let record = host
        .plugins()
        .into_iter()
        .find(|r| r.name == "hostile")
        .unwrap();
    assert_eq!(record.state, PluginState::Quarantined);

    // Quarantined: the plugin is not called any more.
    host.strategy().place(&requests(100, 4));
    assert_eq!(t.failures_of("hostile"), 3);

    // A new config lifts the quarantine.
    sb.write_config(&host_config(
        false,
        "[scheduler]\nstrategy = \"hostile\"\n[scheduler.config]\nmode = \"ok\"\n",
    ));
    let report = host.reload(Trigger::Api);
    assert!(report.error.is_none(), "{report:?}");
    assert!(!host.strategy().status().quarantined);
    assert_eq!(
        host.strategy().place(&requests(200, 2)),
        vec![Decision::Assign(1), Decision::Assign(1)]
    );
    assert_eq!(
        t.fallback_decisions_of("scheduler"),
        16,
        "the plugin answers again"
    );
}

#[test]
fn component_that_loops_forever_is_stopped_at_its_deadline() {
    assert_contained(
        "component",
        "hostile.wasm",
        "loop",
        "stopped: used its 50 ms CPU budget",
    );
}

#[test]
fn component_that_traps_is_contained() {
    assert_contained("component", "hostile.wasm", "trap", "trapped");
}

#[test]
fn component_that_grows_memory_without_bound_is_contained() {
    assert_contained(
        "component",
        "hostile.wasm",
        "grow",
        "exceeded its memory limit of 64 MiB",
    );
}

#[test]
fn invalid_target_counts_as_a_failure() {
    assert_contained(
        "component",
        "hostile.wasm",
        "invalid-target",
        "unknown target 999999",
    );
}

#[test]
fn wrong_number_of_decisions_counts_as_a_failure() {
    assert_contained(
        "component",
        "hostile.wasm",
        "wrong-count",
        "0 decisions for 4 requests",
    );
}

#[test]
fn extism_module_that_loops_is_stopped_at_its_deadline() {
    assert_contained("extism", "hostile.wasm", "loop", "deadline");
}

#[test]
fn extism_module_that_traps_is_contained() {
    assert_contained("extism", "hostile.wasm", "trap", "trapped");
}

#[test]
fn native_plugin_that_panics_is_contained() {
    assert_contained(
        "native",
        "hostile.so",
        "trap",
        "plugin panicked: hostile strategy trapped on purpose",
    );
}

#[test]
fn native_plugin_that_answers_nonsense_is_contained() {
    assert_contained(
        "native",
        "hostile.so",
        "invalid-target",
        "unknown target 999999",
    );
}

#[test]
fn a_plugin_refusing_its_config_is_not_activated() {
    let sb = Sandbox::new();
    sb.install("component", "adaptive.wasm", "adaptive.wasm");
    sb.write_config(&host_config(
        false,
        "[scheduler]\nstrategy = \"adaptive\"\n[scheduler.config]\nalpha = 7.0\n",
    ));
    let err = PluginHost::start(&sb.config()).unwrap_err().to_string();
    assert!(
        err.contains("plugin `adaptive`: returned an error: alpha must be in (0, 1]"),
        "{err}"
    );
}
