//! Built-in plugins (issue 12): plugins of crates linked into the host, selectable with no plugin
//! directory, replaced by a file of the same kind and name, and back when that file goes.

use std::time::{Duration, Instant};

use spear_plugin_api::PluginKind;
use spear_plugin_runtime::{Form, PluginHost, PluginState, RuntimeConfig};
use spear_tests::{Sandbox, host_config, requests, targets};

fn builtins() -> Vec<spear_plugin_api::native::SpearPluginModuleRef> {
    vec![
        spear_strategy_round_robin::native_module(),
        spear_strategy_least_connections::native_module(),
    ]
}

fn start(
    sb: &Sandbox,
    with_builtins: bool,
) -> spear_plugin_runtime::Result<std::sync::Arc<PluginHost>> {
    let config = RuntimeConfig::load(&sb.config())?;
    let modules = if with_builtins {
        builtins()
    } else {
        Vec::new()
    };
    PluginHost::with_builtins(config, Some(sb.config()), &modules)
}

#[test]
fn a_host_with_built_ins_runs_without_a_plugin_directory() {
    let sb = Sandbox::new();
    std::fs::remove_dir(sb.plugins()).unwrap();
    sb.write_config(&host_config(
        false,
        "[scheduler]\nstrategy = \"least-connections\"\n",
    ));
    let host = start(&sb, true).unwrap();
    let active = host.strategy().active().unwrap();
    assert_eq!(active.name, "least-connections");
    assert_eq!(active.form, Form::BuiltIn);
    assert_eq!(active.file.to_str(), Some("built-in:least-connections"));
    // It decides (not the fallback).
    host.strategy().upsert(targets(3));
    let decisions = host.strategy().place(&requests(3, 3));
    assert_eq!(decisions.len(), 3);
    assert!(host.strategy().status().last_error.is_none());
    let records = host.plugins();
    let rr = records.iter().find(|r| r.name == "round-robin").unwrap();
    assert_eq!(
        (rr.form, rr.state),
        (Some(Form::BuiltIn), PluginState::Standby)
    );
    assert!(
        host.plugin(PluginKind::SchedulingStrategy, "round-robin")
            .is_some()
    );
    let start_report = &host.history()[0];
    assert!(
        start_report
            .changes
            .iter()
            .any(|c| c.contains("no such plugin directory; the built-in plugins only")),
        "{start_report:?}"
    );

    // Without built-ins, a missing directory is still an error that names it.
    let err = start(&sb, false).unwrap_err().to_string();
    assert!(err.contains("cannot read the plugin directory"), "{err}");
}

#[test]
fn a_file_overrides_a_built_in_and_the_built_in_returns_when_the_file_goes() {
    let sb = Sandbox::new();
    let file = sb.install("component", "round-robin.wasm", "round-robin.wasm");
    sb.write_config(&host_config(
        true,
        "[scheduler]\nstrategy = \"round-robin\"\n",
    ));
    let host = start(&sb, true).unwrap();
    let _watch = host.watch().unwrap().expect("watching");
    let active = host.strategy().active().unwrap();
    assert_eq!(active.form, Form::Component, "the file wins");
    let state_of = |form: Form| {
        host.plugins()
            .into_iter()
            .find(|r| r.name == "round-robin" && r.form == Some(form))
            .map(|r| r.state)
    };
    assert_eq!(state_of(Form::BuiltIn), Some(PluginState::Overridden));
    assert!(
        host.history()[0]
            .changes
            .iter()
            .any(|c| c.contains("overrides the built-in of that name")),
        "{:?}",
        host.history()[0]
    );

    // The file goes: the name falls back to the built-in (at the rescan, or at the next config
    // reload, which the rewrite below makes).
    std::fs::remove_file(file).unwrap();
    sb.write_config(&host_config(
        true,
        "[scheduler]\nstrategy = \"round-robin\"\n# reloaded\n",
    ));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let active = host.strategy().active().unwrap();
        if active.name == "round-robin" && active.form == Form::BuiltIn {
            break;
        }
        assert!(Instant::now() < deadline, "still {active:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(state_of(Form::BuiltIn), Some(PluginState::Active));
}

#[test]
fn a_plugin_directory_that_vanishes_after_loading_keeps_what_was_loaded() {
    let sb = Sandbox::new();
    sb.install("component", "round-robin.wasm", "round-robin.wasm");
    sb.write_config(&host_config(
        false,
        "[scheduler]\nstrategy = \"round-robin\"\n",
    ));
    let host = start(&sb, true).unwrap();
    assert_eq!(host.strategy().active().unwrap().form, Form::Component);
    // A deploy moves the directory away for a moment: the rescan is refused, nothing changes.
    let aside = sb.root.path().join("plugins.old");
    std::fs::rename(sb.plugins(), &aside).unwrap();
    let report = host.rescan(spear_plugin_runtime::Trigger::Directory);
    assert_eq!(
        report.outcome,
        spear_plugin_runtime::ReloadOutcome::Rejected,
        "{report:?}"
    );
    assert_eq!(host.strategy().active().unwrap().form, Form::Component);
    assert!(
        host.plugins()
            .iter()
            .any(|r| r.name == "round-robin" && r.form == Some(Form::Component)),
        "the file's plugin stays registered"
    );
}
