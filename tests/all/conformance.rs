//! The same scenarios against every form of every built-in plugin: the WASM component, the Extism
//! module, the native library and the plain Rust code linked in-process must decide identically.

use std::sync::Arc;

use spear_plugin_api::{
    Decision, InstanceState, InstanceStats, Label, NodePressure, Outcome, Reclaimer, Request,
    Resources, Strategy, Target,
};
use spear_plugin_runtime::engine::WasmEngine;
use spear_plugin_runtime::instance::{ReclaimerInstance, StrategyInstance};
use spear_plugin_runtime::{LimitValues, Limits, load_file};
use spear_tests::{guest, instance, node, request, target};

const FORMS: &[(&str, &str)] = &[("component", "wasm"), ("extism", "wasm"), ("native", "so")];

fn limits() -> Arc<Limits> {
    Arc::new(Limits::new(LimitValues {
        call_timeout_ms: 1000,
        ..LimitValues::default()
    }))
}

/// One step of a strategy scenario.
enum Step {
    Configure(&'static str),
    Upsert(Vec<Target>),
    Remove(Vec<u64>),
    Place(Vec<Request>),
    Observe(Vec<Outcome>),
    /// Save state, then restore it into the same instance (must not change later decisions).
    RoundTripState,
}

/// Runs scenarios on the in-process baseline.
struct Baseline<S: Strategy>(S);

trait Runner {
    fn run(&mut self, step: &Step) -> Vec<Decision>;
}

impl<S: Strategy> Runner for Baseline<S> {
    fn run(&mut self, step: &Step) -> Vec<Decision> {
        match step {
            Step::Configure(c) => self.0.configure(c).map(|_| vec![]).unwrap(),
            Step::Upsert(t) => {
                self.0.upsert(t.clone());
                vec![]
            }
            Step::Remove(ids) => {
                self.0.remove(ids);
                vec![]
            }
            Step::Place(r) => self.0.place(r),
            Step::Observe(o) => {
                self.0.observe(o);
                vec![]
            }
            Step::RoundTripState => {
                let state = self.0.save_state();
                self.0.restore_state(&state).unwrap();
                vec![]
            }
        }
    }
}

impl Runner for Box<dyn StrategyInstance> {
    fn run(&mut self, step: &Step) -> Vec<Decision> {
        match step {
            Step::Configure(c) => self.configure(c).map(|_| vec![]).unwrap(),
            Step::Upsert(t) => self.upsert(t).map(|_| vec![]).unwrap(),
            Step::Remove(ids) => self.remove(ids).map(|_| vec![]).unwrap(),
            Step::Place(r) => self.place(r).unwrap(),
            Step::Observe(o) => self.observe(o).map(|_| vec![]).unwrap(),
            Step::RoundTripState => {
                let state = self.save_state().unwrap();
                self.restore_state(&state).unwrap();
                vec![]
            }
        }
    }
}

fn labelled(id: u64, zone: &str, gpu: bool) -> Target {
    let mut t = target(id, 2000, 4096);
    t.labels = vec![Label::new("zone", zone)];
    if gpu {
        t.labels.push(Label::new("gpu", "yes"));
    }
    t
}

fn with_needs(mut r: Request, cpu: u64) -> Request {
    r.needs = Resources {
        cpu_millis: cpu,
        memory_mb: 64,
        disk_mb: 0,
    };
    r
}

/// Scenarios every strategy must answer identically in every form.
fn scenarios() -> Vec<(&'static str, Vec<Step>)> {
    let mut unhealthy = labelled(3, "b", false);
    unhealthy.healthy = false;
    let mut busy = labelled(4, "a", false);
    busy.active = 5;
    let mut affinity_requests: Vec<Request> = (1..=12).map(request).collect();
    for (i, r) in affinity_requests.iter_mut().enumerate() {
        if i % 3 == 0 {
            r.required = vec![Label::new("gpu", "yes")];
        }
        if i % 2 == 0 {
            r.preferred = vec![Label::new("zone", "b")];
        }
    }
    let outcomes: Vec<Outcome> = (1..=40)
        .map(|i| Outcome {
            request: i,
            target: i % 6 + 1,
            success: i % 6 != 2,
            latency_us: 200 + (i % 6) * 150,
        })
        .collect();
    vec![
        (
            "spread over equal targets, batches of 8",
            vec![
                Step::Configure("{}"),
                Step::Upsert((1..=10).map(|id| target(id, 4000, 8192)).collect()),
                Step::Place((1..=8).map(request).collect()),
                Step::Place((9..=16).map(request).collect()),
                Step::Place((17..=50).map(request).collect()),
            ],
        ),
        (
            "hard and soft affinity, unhealthy and busy targets",
            vec![
                Step::Configure("{}"),
                Step::Upsert(vec![
                    labelled(1, "a", true),
                    labelled(2, "b", false),
                    unhealthy,
                    busy,
                    labelled(5, "b", true),
                ]),
                Step::Place(affinity_requests),
            ],
        ),
        (
            "resources run out, then targets change",
            vec![
                Step::Configure("{}"),
                Step::Upsert((1..=3).map(|id| target(id, 1000, 8192)).collect()),
                Step::Place((1..=8).map(|i| with_needs(request(i), 400)).collect()),
                Step::Remove(vec![2]),
                Step::Upsert(vec![target(7, 4000, 8192)]),
                Step::RoundTripState,
                Step::Place((9..=14).map(|i| with_needs(request(i), 400)).collect()),
            ],
        ),
        (
            "targets of several weights and sizes",
            vec![
                Step::Configure("{}"),
                Step::Upsert(
                    (1..=5)
                        .map(|id| {
                            let mut t = target(id, 1000 * id, 8192);
                            t.labels = vec![Label::new("weight", (id % 4).to_string())];
                            t
                        })
                        .collect(),
                ),
                Step::Place((1..=30).map(request).collect()),
                Step::RoundTripState,
                Step::Place((31..=45).map(request).collect()),
            ],
        ),
        (
            "learning from outcomes",
            vec![
                Step::Configure("{}"),
                Step::Upsert((1..=6).map(|id| target(id, 8000, 16384)).collect()),
                Step::Place((1..=20).map(request).collect()),
                Step::Observe(outcomes),
                Step::RoundTripState,
                Step::Place((21..=60).map(request).collect()),
            ],
        ),
    ]
}

fn run_all(runner: &mut dyn Runner, steps: &[Step]) -> Vec<Decision> {
    steps.iter().flat_map(|s| runner.run(s)).collect()
}

fn check_strategy<S: Strategy + Default>(name: &str, config: &'static str) {
    let engine = WasmEngine::new().unwrap();
    let limits = limits();
    for (title, mut steps) in scenarios() {
        steps[0] = Step::Configure(config);
        let expected = run_all(&mut Baseline(S::default()), &steps);
        assert!(
            expected.iter().any(|d| matches!(d, Decision::Assign(_))),
            "{name}/{title}: the baseline assigned nothing"
        );
        for (form, ext) in FORMS {
            let plugin = load_file(&guest(form, &format!("{name}.{ext}")), &engine, &limits)
                .unwrap_or_else(|e| panic!("{name} ({form}): {e}"));
            assert_eq!(plugin.info.name, name);
            let mut instance = plugin.new_strategy().unwrap();
            let got = run_all(&mut instance, &steps);
            assert_eq!(
                got, expected,
                "{name} as {form} differs from the baseline in «{title}»"
            );
        }
    }
}

#[test]
fn round_robin_decides_identically_in_every_form() {
    check_strategy::<spear_strategy_round_robin::RoundRobin>("round-robin", "{}");
}

#[test]
fn least_connections_decides_identically_in_every_form() {
    check_strategy::<spear_strategy_least_connections::LeastConnections>("least-connections", "{}");
}

#[test]
fn affinity_decides_identically_in_every_form() {
    check_strategy::<spear_strategy_affinity::Affinity>(
        "affinity",
        r#"{"mode":"spread","group_by":"app"}"#,
    );
    check_strategy::<spear_strategy_affinity::Affinity>("affinity", r#"{"mode":"colocate"}"#);
}

#[test]
fn adaptive_decides_identically_in_every_form() {
    check_strategy::<spear_strategy_adaptive::Adaptive>(
        "adaptive",
        r#"{"seed": 42, "alpha": 0.5}"#,
    );
}

#[test]
fn weighted_round_robin_decides_identically_in_every_form() {
    check_strategy::<spear_strategy_weighted_round_robin::WeightedRoundRobin>(
        "weighted-round-robin",
        r#"{"default_weight": 2}"#,
    );
    check_strategy::<spear_strategy_weighted_round_robin::WeightedRoundRobin>(
        "weighted-round-robin",
        r#"{"weight_by": "cpu"}"#,
    );
}

#[test]
fn random_decides_identically_in_every_form() {
    check_strategy::<spear_strategy_random::Random>("random", r#"{"seed": 42}"#);
    check_strategy::<spear_strategy_random::Random>(
        "random",
        r#"{"seed": 9, "power_of_two": true}"#,
    );
}

fn reclaim_cases() -> Vec<(&'static str, Vec<InstanceStats>, NodePressure)> {
    let mut failing = instance(7, "web", InstanceState::Ready, 10, 50);
    failing.recent_errors = 15;
    failing.recent_invocations = 20;
    let mut flaky = instance(8, "web", InstanceState::Ready, 10, 50);
    flaky.recent_errors = 6;
    flaky.recent_invocations = 10;
    let crowd = vec![
        instance(1, "web", InstanceState::Ready, 600_000, 300),
        instance(2, "web", InstanceState::Ready, 400_000, 500),
        instance(3, "web", InstanceState::Executing, 0, 200),
        instance(4, "batch", InstanceState::Ready, 900_000, 100),
        instance(5, "batch", InstanceState::Error, 5, 80),
        instance(6, "api", InstanceState::Ready, 1000, 900),
        failing,
        flaky,
    ];
    vec![
        ("calm node", crowd.clone(), node(16_384, 4_000)),
        ("memory pressure", crowd.clone(), node(4_096, 3_900)),
        ("nothing to do", vec![], node(4_096, 100)),
    ]
}

fn check_reclaimer<R: Reclaimer + Default>(name: &str, config: &str) {
    let engine = WasmEngine::new().unwrap();
    let limits = limits();
    let mut some_selected = false;
    for (title, instances, node) in reclaim_cases() {
        let mut baseline = R::default();
        baseline.configure(config).unwrap();
        let expected = baseline.select(&instances, &node);
        some_selected |= !expected.is_empty();
        for (form, ext) in FORMS {
            let plugin = load_file(&guest(form, &format!("{name}.{ext}")), &engine, &limits)
                .unwrap_or_else(|e| panic!("{name} ({form}): {e}"));
            let mut r: Box<dyn ReclaimerInstance> = plugin.new_reclaimer().unwrap();
            r.configure(config).unwrap();
            assert_eq!(
                r.select(&instances, &node).unwrap(),
                expected,
                "{name} as {form}: «{title}»"
            );
        }
    }
    assert!(some_selected, "{name}: the scenarios never select anything");
}

#[test]
fn idle_time_selects_identically_in_every_form() {
    check_reclaimer::<spear_reclaimer_idle_time::IdleTime>(
        "idle-time",
        r#"{"idle_ms": 300000, "keep_warm": 1}"#,
    );
}

#[test]
fn memory_pressure_selects_identically_in_every_form() {
    check_reclaimer::<spear_reclaimer_memory_pressure::MemoryPressure>("memory-pressure", "{}");
}

#[test]
fn error_rate_selects_identically_in_every_form() {
    check_reclaimer::<spear_reclaimer_error_rate::ErrorRate>("error-rate", "{}");
}

#[test]
fn built_in_reclaimers_choose_what_their_rules_say() {
    let cases = reclaim_cases();
    let (_, crowd, calm) = &cases[0];
    let (_, _, pressed) = &cases[1];
    let mut idle = spear_reclaimer_idle_time::IdleTime::default();
    idle.configure(r#"{"idle_ms": 300000, "keep_warm": 1}"#)
        .unwrap();
    // web has 3 live (1, 2, 3 executing + 7, 8): idle ≥ 300 s are 1 and 2; batch keeps its one.
    assert_eq!(idle.select(crowd, calm), vec![1, 2]);
    let mut memory = spear_reclaimer_memory_pressure::MemoryPressure::default();
    memory.configure("{}").unwrap();
    assert!(
        memory.select(crowd, calm).is_empty(),
        "no pressure, nothing stopped"
    );
    // 3900 of 4096 MiB used; down to 75 % (3072) needs ≥ 828 MiB: the 900 MiB instance suffices.
    assert_eq!(memory.select(crowd, pressed), vec![6]);
    let mut errors = spear_reclaimer_error_rate::ErrorRate::default();
    errors.configure("{}").unwrap();
    assert_eq!(errors.select(crowd, calm), vec![5, 7, 8]);
}
