//! The component form: bindings generated from `wit/`, conversions to the plain types, and the
//! `export_strategy!` / `export_reclaimer!` / `export_autoscaler!` macros.

use spear_plugin_api as api;

/// Bindings of the `scheduling-strategy` world (generated from `wit/`).
#[doc(hidden)]
pub mod strategy_bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "scheduling-strategy",
        pub_export_macro: true,
        export_macro_name: "__export_strategy_world",
        default_bindings_module: "spear_pdk::strategy_bindings",
        runtime_path: "spear_pdk::__rt",
    });
}

/// Bindings of the `reclamation-policy` world (generated from `wit/`).
#[doc(hidden)]
pub mod reclaimer_bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "reclamation-policy",
        pub_export_macro: true,
        export_macro_name: "__export_reclaimer_world",
        default_bindings_module: "spear_pdk::reclaimer_bindings",
        runtime_path: "spear_pdk::__rt",
        with: {
            "spear:plugin/types@0.1.1": crate::strategy_bindings::spear::plugin::types,
            "spear:plugin/host@0.1.1": crate::strategy_bindings::spear::plugin::host,
        },
    });
}

/// Bindings of the `autoscaling-policy` world (generated from `wit/`).
#[doc(hidden)]
pub mod autoscaler_bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "autoscaling-policy",
        pub_export_macro: true,
        export_macro_name: "__export_autoscaler_world",
        default_bindings_module: "spear_pdk::autoscaler_bindings",
        runtime_path: "spear_pdk::__rt",
        with: {
            "spear:plugin/types@0.1.1": crate::strategy_bindings::spear::plugin::types,
            "spear:plugin/host@0.1.1": crate::strategy_bindings::spear::plugin::host,
        },
    });
}

#[doc(hidden)]
pub use wit_bindgen::rt as __rt;

use strategy_bindings::spear::plugin::{host, types as wit};

pub(crate) fn host_log(level: api::LogLevel, message: &str) {
    let level = match level {
        api::LogLevel::Trace => host::LogLevel::Trace,
        api::LogLevel::Debug => host::LogLevel::Debug,
        api::LogLevel::Info => host::LogLevel::Info,
        api::LogLevel::Warn => host::LogLevel::Warn,
        api::LogLevel::Error => host::LogLevel::Error,
    };
    host::log(level, message);
}

/// Milliseconds since the Unix epoch, from the host.
pub fn now_ms() -> u64 {
    host::now_ms()
}

/// Conversions between generated WIT types and plain types (used by the export macros).
#[doc(hidden)]
pub mod convert {
    use super::{api, wit};

    fn labels(l: Vec<wit::Label>) -> Vec<api::Label> {
        l.into_iter()
            .map(|l| api::Label {
                key: l.key,
                value: l.value,
            })
            .collect()
    }

    fn resources(r: wit::Resources) -> api::Resources {
        api::Resources {
            cpu_millis: r.cpu_millis,
            memory_mb: r.memory_mb,
            disk_mb: r.disk_mb,
        }
    }

    /// WIT target → plain target.
    pub fn target(t: wit::Target) -> api::Target {
        api::Target {
            id: t.id,
            name: t.name,
            labels: labels(t.labels),
            capacity: resources(t.capacity),
            available: resources(t.available),
            active: t.active,
            weight: t.weight,
            healthy: t.healthy,
        }
    }

    /// WIT request → plain request.
    pub fn request(r: wit::Request) -> api::Request {
        api::Request {
            id: r.id,
            task: r.task,
            labels: labels(r.labels),
            needs: resources(r.needs),
            required: labels(r.required),
            preferred: labels(r.preferred),
        }
    }

    /// Plain decision → WIT decision.
    pub fn decision(d: api::Decision) -> wit::Decision {
        match d {
            api::Decision::Assign(id) => wit::Decision::Assign(id),
            api::Decision::Reject(why) => wit::Decision::Reject(why),
        }
    }

    /// WIT outcome → plain outcome.
    pub fn outcome(o: wit::Outcome) -> api::Outcome {
        api::Outcome {
            request: o.request,
            target: o.target,
            success: o.success,
            latency_us: o.latency_us,
        }
    }

    /// Plain info → WIT info (executor and storage kinds have no WIT form and read as strategies).
    pub fn info(i: api::PluginInfo) -> wit::PluginInfo {
        wit::PluginInfo {
            name: i.name,
            version: i.version,
            kind: match i.kind {
                api::PluginKind::ReclamationPolicy => wit::PluginKind::ReclamationPolicy,
                _ => wit::PluginKind::SchedulingStrategy,
            },
            description: i.description,
            config_schema: i.config_schema,
        }
    }

    /// WIT instance stats → plain stats.
    pub fn instance(s: wit::InstanceStats) -> api::InstanceStats {
        api::InstanceStats {
            id: s.id,
            task: s.task,
            state: match s.state {
                wit::InstanceState::Initializing => api::InstanceState::Initializing,
                wit::InstanceState::Ready => api::InstanceState::Ready,
                wit::InstanceState::Executing => api::InstanceState::Executing,
                wit::InstanceState::Error => api::InstanceState::Error,
                wit::InstanceState::Terminating => api::InstanceState::Terminating,
                wit::InstanceState::Terminated => api::InstanceState::Terminated,
            },
            idle_ms: s.idle_ms,
            age_ms: s.age_ms,
            memory_bytes: s.memory_bytes,
            invocations: s.invocations,
            errors: s.errors,
            recent_errors: s.recent_errors,
            recent_invocations: s.recent_invocations,
        }
    }

    /// WIT scale view → plain.
    pub fn scale_view(
        v: crate::autoscaler_bindings::exports::spear::plugin::autoscaler::ScaleView,
    ) -> api::ScaleView {
        api::ScaleView {
            now_ms: v.now_ms,
            queue: api::QueueStats {
                depth: v.queue.depth,
                oldest_wait_ms: v.queue.oldest_wait_ms,
                cpu_millis: v.queue.cpu_millis,
                memory_mb: v.queue.memory_mb,
            },
            nodes: v
                .nodes
                .into_iter()
                .map(|n| api::ScaleNode {
                    id: n.id,
                    managed: n.managed,
                    registered: n.registered,
                    healthy: n.healthy,
                    draining: n.draining,
                    slots: n.slots,
                    running: n.running,
                    idle_ms: n.idle_ms,
                    cpu_millis: n.cpu_millis,
                    memory_mb: n.memory_mb,
                })
                .collect(),
            limits: api::ScaleLimits {
                min: v.limits.min,
                max: v.limits.max,
                scale_up_threshold: v.limits.scale_up_threshold,
                scale_down_delay_ms: v.limits.scale_down_delay_ms,
                cooldown_ms: v.limits.cooldown_ms,
            },
            since_last_action_ms: v.since_last_action_ms,
        }
    }

    /// Plain scale decision → WIT.
    pub fn scale_decision(
        d: api::ScaleDecision,
    ) -> crate::autoscaler_bindings::exports::spear::plugin::autoscaler::ScaleDecision {
        crate::autoscaler_bindings::exports::spear::plugin::autoscaler::ScaleDecision {
            desired: d.desired,
            drain: d.drain,
        }
    }

    /// WIT node pressure → plain.
    pub fn node(n: wit::NodePressure) -> api::NodePressure {
        api::NodePressure {
            memory_total_bytes: n.memory_total_bytes,
            memory_used_bytes: n.memory_used_bytes,
            cpu_load_permille: n.cpu_load_permille,
            now_ms: n.now_ms,
        }
    }
}

/// Export a [`Strategy`](spear_plugin_api::Strategy) implementing `Default` as a WASM component of
/// the `scheduling-strategy` world.
#[macro_export]
macro_rules! export_strategy {
    ($ty:ty) => {
        const _: () = {
            use $crate::strategy_bindings::exports::spear::plugin::strategy::Guest;
            use $crate::strategy_bindings::spear::plugin::types as wit;
            use $crate::api::Strategy as _;

            ::std::thread_local! {
                static STATE: ::core::cell::RefCell<$ty> =
                    ::core::cell::RefCell::new(<$ty as ::core::default::Default>::default());
            }

            struct SpearStrategyComponent;

            impl Guest for SpearStrategyComponent {
                fn info() -> wit::PluginInfo {
                    STATE.with(|s| $crate::convert::info(s.borrow().info()))
                }
                fn configure(config: ::std::string::String) -> ::core::result::Result<(), ::std::string::String> {
                    STATE.with(|s| s.borrow_mut().configure(&config).map_err(|e| e.0))
                }
                fn upsert(targets: ::std::vec::Vec<wit::Target>) {
                    let targets = targets.into_iter().map($crate::convert::target).collect();
                    STATE.with(|s| s.borrow_mut().upsert(targets))
                }
                fn remove(ids: ::std::vec::Vec<u64>) {
                    STATE.with(|s| s.borrow_mut().remove(&ids))
                }
                fn place(requests: ::std::vec::Vec<wit::Request>) -> ::std::vec::Vec<wit::Decision> {
                    let requests: ::std::vec::Vec<_> =
                        requests.into_iter().map($crate::convert::request).collect();
                    STATE.with(|s| s.borrow_mut().place(&requests))
                        .into_iter()
                        .map($crate::convert::decision)
                        .collect()
                }
                fn observe(outcomes: ::std::vec::Vec<wit::Outcome>) {
                    let outcomes: ::std::vec::Vec<_> =
                        outcomes.into_iter().map($crate::convert::outcome).collect();
                    STATE.with(|s| s.borrow_mut().observe(&outcomes))
                }
                fn save_state() -> ::std::vec::Vec<u8> {
                    STATE.with(|s| s.borrow().save_state())
                }
                fn restore_state(state: ::std::vec::Vec<u8>) -> ::core::result::Result<(), ::std::string::String> {
                    STATE.with(|s| s.borrow_mut().restore_state(&state).map_err(|e| e.0))
                }
            }

            $crate::strategy_bindings::__export_strategy_world!(SpearStrategyComponent with_types_in $crate::strategy_bindings);
        };
    };
}

/// Export a [`Reclaimer`](spear_plugin_api::Reclaimer) implementing `Default` as a WASM component of
/// the `reclamation-policy` world.
#[macro_export]
macro_rules! export_reclaimer {
    ($ty:ty) => {
        const _: () = {
            use $crate::reclaimer_bindings::exports::spear::plugin::reclaimer::Guest;
            use $crate::strategy_bindings::spear::plugin::types as wit;
            use $crate::api::Reclaimer as _;

            ::std::thread_local! {
                static STATE: ::core::cell::RefCell<$ty> =
                    ::core::cell::RefCell::new(<$ty as ::core::default::Default>::default());
            }

            struct SpearReclaimerComponent;

            impl Guest for SpearReclaimerComponent {
                fn info() -> wit::PluginInfo {
                    STATE.with(|s| $crate::convert::info(s.borrow().info()))
                }
                fn configure(config: ::std::string::String) -> ::core::result::Result<(), ::std::string::String> {
                    STATE.with(|s| s.borrow_mut().configure(&config).map_err(|e| e.0))
                }
                fn select(
                    instances: ::std::vec::Vec<wit::InstanceStats>,
                    node: wit::NodePressure,
                ) -> ::std::vec::Vec<u64> {
                    let instances: ::std::vec::Vec<_> =
                        instances.into_iter().map($crate::convert::instance).collect();
                    let node = $crate::convert::node(node);
                    STATE.with(|s| s.borrow_mut().select(&instances, &node))
                }
                fn save_state() -> ::std::vec::Vec<u8> {
                    STATE.with(|s| s.borrow().save_state())
                }
                fn restore_state(state: ::std::vec::Vec<u8>) -> ::core::result::Result<(), ::std::string::String> {
                    STATE.with(|s| s.borrow_mut().restore_state(&state).map_err(|e| e.0))
                }
            }

            $crate::reclaimer_bindings::__export_reclaimer_world!(SpearReclaimerComponent with_types_in $crate::reclaimer_bindings);
        };
    };
}

/// Export an [`Autoscaler`](spear_plugin_api::Autoscaler) implementing `Default` as a WASM
/// component of the `autoscaling-policy` world.
#[macro_export]
macro_rules! export_autoscaler {
    ($ty:ty) => {
        const _: () = {
            use $crate::autoscaler_bindings::exports::spear::plugin::autoscaler as wit_as;
            use $crate::autoscaler_bindings::exports::spear::plugin::autoscaler::Guest;
            use $crate::strategy_bindings::spear::plugin::types as wit;
            use $crate::api::Autoscaler as _;

            ::std::thread_local! {
                static STATE: ::core::cell::RefCell<$ty> =
                    ::core::cell::RefCell::new(<$ty as ::core::default::Default>::default());
            }

            struct SpearAutoscalerComponent;

            impl Guest for SpearAutoscalerComponent {
                fn info() -> wit::PluginInfo {
                    STATE.with(|s| $crate::convert::info(s.borrow().info()))
                }
                fn configure(config: ::std::string::String) -> ::core::result::Result<(), ::std::string::String> {
                    STATE.with(|s| s.borrow_mut().configure(&config).map_err(|e| e.0))
                }
                fn decide(
                    view: wit_as::ScaleView,
                ) -> ::core::result::Result<wit_as::ScaleDecision, ::std::string::String> {
                    let view = $crate::convert::scale_view(view);
                    STATE
                        .with(|s| s.borrow_mut().decide(&view))
                        .map($crate::convert::scale_decision)
                        .map_err(|e| e.0)
                }
                fn save_state() -> ::std::vec::Vec<u8> {
                    STATE.with(|s| s.borrow().save_state())
                }
                fn restore_state(state: ::std::vec::Vec<u8>) -> ::core::result::Result<(), ::std::string::String> {
                    STATE.with(|s| s.borrow_mut().restore_state(&state).map_err(|e| e.0))
                }
            }

            $crate::autoscaler_bindings::__export_autoscaler_world!(SpearAutoscalerComponent with_types_in $crate::autoscaler_bindings);
        };
    };
}
