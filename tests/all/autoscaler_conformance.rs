//! The autoscaler kind in every form: the built-in `queue-depth` as a WASM component, an Extism
//! module, a native library and plain Rust code answers the same views identically, declares
//! itself an autoscaler, carries its state over a save and restore, and is guarded by the
//! autoscaler slot (an answer outside the limits counts as a failure; nothing changes).

use std::sync::Arc;

use spear_plugin_api::{
    Autoscaler, PluginKind, QueueStats, ScaleDecision, ScaleLimits, ScaleNode, ScaleView,
};
use spear_plugin_runtime::engine::WasmEngine;
use spear_plugin_runtime::instance::AutoscalerInstance;
use spear_plugin_runtime::{AutoscalerSlot, LimitValues, Limits, Telemetry, load_file};
use spear_tests::guest;

const FORMS: &[(&str, &str)] = &[("component", "wasm"), ("extism", "wasm"), ("native", "so")];

fn limits() -> Arc<Limits> {
    Arc::new(Limits::new(LimitValues {
        call_timeout_ms: 1000,
        ..LimitValues::default()
    }))
}

fn node(id: &str, managed: bool, running: u32, idle_ms: u64) -> ScaleNode {
    ScaleNode {
        id: id.into(),
        managed,
        registered: true,
        healthy: true,
        draining: false,
        slots: 2,
        running,
        idle_ms,
        cpu_millis: 2000,
        memory_mb: 4096,
    }
}

fn view(depth: u32, nodes: Vec<ScaleNode>) -> ScaleView {
    ScaleView {
        now_ms: 1_700_000_000_000,
        queue: QueueStats {
            depth,
            oldest_wait_ms: 1200,
            cpu_millis: u64::from(depth) * 500,
            memory_mb: u64::from(depth) * 128,
        },
        nodes,
        limits: ScaleLimits {
            min: 1,
            max: 5,
            scale_up_threshold: 3,
            scale_down_delay_ms: 10_000,
            cooldown_ms: 0,
        },
        since_last_action_ms: u64::MAX,
    }
}

fn cases() -> Vec<(&'static str, ScaleView)> {
    let mut starting = node("s", true, 0, 0);
    starting.registered = false;
    let big = |id: &str, managed| ScaleNode {
        slots: 8,
        ..node(id, managed, 0, 0)
    };
    vec![
        ("empty pool", view(0, vec![])),
        (
            "backlog beyond every place",
            view(9, vec![node("a", true, 2, 0)]),
        ),
        (
            "a start in progress counts",
            view(2, vec![node("a", true, 2, 0), starting]),
        ),
        (
            "more waiting than places: a node per two",
            view(12, vec![node("a", true, 0, 0), node("u", false, 0, 0)]),
        ),
        (
            "places for all, but deeper than the threshold",
            view(12, vec![big("a", true), big("u", false)]),
        ),
        (
            "idle nodes drained, longest first",
            view(
                0,
                vec![
                    node("a", true, 0, 60_000),
                    node("b", true, 0, 20_000),
                    node("c", true, 1, 0),
                    node("u", false, 0, 90_000),
                ],
            ),
        ),
    ]
}

#[test]
fn queue_depth_decides_identically_in_every_form() {
    let engine = WasmEngine::new().unwrap();
    let limits = limits();
    let config = r#"{"tasks_per_node": 2}"#;
    let mut answers = Vec::new();
    for (title, v) in cases() {
        let mut baseline = spear_autoscaler_queue_depth::QueueDepth::default();
        baseline.configure(config).unwrap();
        let expected = baseline.decide(&v).unwrap();
        answers.push(expected.clone());
        for (form, ext) in FORMS {
            let plugin = load_file(
                &guest(form, &format!("queue-depth.{ext}")),
                &engine,
                &limits,
            )
            .unwrap_or_else(|e| panic!("queue-depth ({form}): {e}"));
            assert_eq!(plugin.info.kind, PluginKind::Autoscaler, "{form}");
            assert_eq!(plugin.id.kind, PluginKind::Autoscaler, "{form}");
            let mut a: Box<dyn AutoscalerInstance> = plugin.new_autoscaler().unwrap();
            a.configure(config).unwrap();
            let state = a.save_state().unwrap();
            a.restore_state(&state).unwrap();
            assert_eq!(a.decide(&v).unwrap(), expected, "{form}: «{title}»");
        }
    }
    // The cases see the policy grow, hold and shrink the pool.
    let desired: Vec<u32> = answers.iter().map(|d| d.desired).collect();
    assert_eq!(desired, vec![1, 5, 2, 5, 2, 1], "{answers:?}");
    assert_eq!(
        answers[5],
        ScaleDecision {
            desired: 1,
            drain: vec!["a".into(), "b".into()],
        }
    );
}

#[test]
fn a_configuration_it_does_not_know_is_refused_in_every_form() {
    let engine = WasmEngine::new().unwrap();
    let limits = limits();
    for (form, ext) in FORMS {
        let plugin = load_file(
            &guest(form, &format!("queue-depth.{ext}")),
            &engine,
            &limits,
        )
        .unwrap();
        let mut a = plugin.new_autoscaler().unwrap();
        let refused = a.configure(r#"{"tasks_per_nod": 2}"#).unwrap_err();
        assert!(
            refused.to_string().contains("tasks_per_nod"),
            "{form}: {refused}"
        );
    }
}

#[test]
fn the_slot_counts_an_answer_outside_the_limits_as_a_failure_and_changes_nothing() {
    let engine = WasmEngine::new().unwrap();
    let limits = limits();
    let plugin = load_file(&guest("component", "queue-depth.wasm"), &engine, &limits).unwrap();
    let slot = AutoscalerSlot::new("autoscaler", limits.clone(), Arc::new(Telemetry::new()));
    assert_eq!(slot.decide(&view(0, vec![])), None, "no policy: no answer");
    slot.activate(&plugin, "{}").unwrap();
    let good = slot.decide(&view(9, vec![node("a", true, 2, 0)])).unwrap();
    assert_eq!(good.desired, 5);
    // Limits no answer can meet (SMS refuses such a config; the slot does not trust it).
    let mut v = view(0, vec![node("a", true, 0, 60_000)]);
    v.limits.min = 3;
    v.limits.max = 1;
    assert_eq!(slot.decide(&v), None, "desired 3 is outside 3..=1");
    let status = slot.status();
    assert_eq!(status.consecutive_failures, 1, "{status:?}");
    assert!(
        status
            .last_error
            .as_deref()
            .unwrap()
            .contains("outside min"),
        "{status:?}"
    );
}
