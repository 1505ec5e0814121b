//! The component form of an executor: bindings of the `executor` world and the
//! `export_executor!` macro.

/// Bindings of the `executor` world (generated from `wit/`).
#[doc(hidden)]
pub mod executor_bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "executor",
        pub_export_macro: true,
        export_macro_name: "__export_executor_world",
        default_bindings_module: "spear_pdk::executor_bindings",
        runtime_path: "spear_pdk::__rt",
        with: {
            "spear:plugin/types@0.1.1": crate::strategy_bindings::spear::plugin::types,
            "spear:plugin/host@0.1.1": crate::strategy_bindings::spear::plugin::host,
        },
    });
}

/// Conversions between the executor world's types and the plain ones (used by the export macro).
#[doc(hidden)]
pub mod executor_convert {
    use spear_plugin_api::executor::{
        Capabilities, ExecResult, ExecSpec, ExecState, ExecStats, ExitStatus,
    };

    use super::executor_bindings::exports::spear::plugin::runner as wit;

    /// WIT spec → plain spec.
    pub fn spec(s: wit::ExecSpec) -> ExecSpec {
        ExecSpec {
            execution_id: s.execution_id,
            task: s.task,
            artifact: s.artifact,
            entry: s.entry,
            args: s.args,
            env: s.env.into_iter().map(|v| (v.name, v.value)).collect(),
            working_dir: s.working_dir,
            stdin: s.stdin,
            timeout_ms: s.timeout_ms,
            memory_limit_mb: s.memory_limit_mb,
            cpu_millis: s.cpu_millis,
            network: s.network,
            output_cap_bytes: s.output_cap_bytes,
        }
    }

    fn result(r: ExecResult) -> wit::ExecResult {
        wit::ExecResult {
            status: match r.status {
                ExitStatus::Exited(code) => wit::ExitStatus::Exited(code),
                ExitStatus::Signaled(signal) => wit::ExitStatus::Signaled(signal),
                ExitStatus::TimedOut => wit::ExitStatus::TimedOut,
                ExitStatus::Failed(why) => wit::ExitStatus::Failed(why),
            },
            stdout: r.stdout,
            stderr: r.stderr,
            stdout_truncated: r.stdout_truncated,
            stderr_truncated: r.stderr_truncated,
            duration_ms: r.duration_ms,
        }
    }

    /// Plain state → WIT state.
    pub fn state(s: ExecState) -> wit::ExecState {
        match s {
            ExecState::Running => wit::ExecState::Running,
            ExecState::Finished(r) => wit::ExecState::Finished(result(r)),
            ExecState::Unknown => wit::ExecState::Unknown,
        }
    }

    /// Plain stats → WIT stats.
    pub fn stats(s: ExecStats) -> wit::ExecStats {
        wit::ExecStats {
            memory_bytes: s.memory_bytes,
            cpu_micros: s.cpu_micros,
        }
    }

    /// Plain capabilities → WIT capabilities (long-lived instances have no WIT form yet).
    pub fn capabilities(c: Capabilities) -> wit::CapabilitySet {
        wit::CapabilitySet {
            executable_type: c.executable_type,
            signals: c.signals,
            recover: c.recover,
            memory_limit: c.memory_limit,
            cpu_limit: c.cpu_limit,
            network_isolation: c.network_isolation,
        }
    }
}

/// Export an [`Executor`](spear_plugin_api::Executor) implementing `Default` as a WASM component
/// of the `executor` world. Its `inspect` must not block: the host asks it again until the work
/// is finished (`wait` is not called).
#[macro_export]
macro_rules! export_executor {
    ($ty:ty) => {
        const _: () = {
            use $crate::executor_bindings::exports::spear::plugin::runner as wit_ex;
            use $crate::executor_bindings::exports::spear::plugin::runner::Guest;
            use $crate::strategy_bindings::spear::plugin::types as wit;
            use $crate::api::Executor as _;

            ::std::thread_local! {
                static STATE: ::core::cell::RefCell<$ty> =
                    ::core::cell::RefCell::new(<$ty as ::core::default::Default>::default());
            }

            type Answer<T> = ::core::result::Result<T, ::std::string::String>;
            type Text = ::std::string::String;

            struct SpearExecutorComponent;

            impl Guest for SpearExecutorComponent {
                fn info() -> wit::PluginInfo {
                    STATE.with(|s| $crate::convert::info(s.borrow().info()))
                }
                fn capabilities() -> wit_ex::CapabilitySet {
                    STATE.with(|s| $crate::executor_convert::capabilities(s.borrow().capabilities()))
                }
                fn configure(config: Text) -> Answer<()> {
                    STATE.with(|s| s.borrow_mut().configure(&config).map_err(|e| e.0))
                }
                fn start(spec: wit_ex::ExecSpec) -> Answer<Text> {
                    let spec = $crate::executor_convert::spec(spec);
                    STATE.with(|s| s.borrow().start(&spec).map_err(|e| e.0))
                }
                fn inspect(handle: Text) -> Answer<wit_ex::ExecState> {
                    STATE
                        .with(|s| s.borrow().inspect(&handle))
                        .map($crate::executor_convert::state)
                        .map_err(|e| e.0)
                }
                fn signal(handle: Text, signal: i32) -> Answer<()> {
                    STATE.with(|s| s.borrow().signal(&handle, signal).map_err(|e| e.0))
                }
                fn stop(handle: Text, grace_ms: u64) -> Answer<()> {
                    STATE.with(|s| s.borrow().stop(&handle, grace_ms).map_err(|e| e.0))
                }
                fn stats(handle: Text) -> Answer<wit_ex::ExecStats> {
                    STATE
                        .with(|s| s.borrow().stats(&handle))
                        .map($crate::executor_convert::stats)
                        .map_err(|e| e.0)
                }
                fn recover(handle: Text) -> Answer<bool> {
                    STATE.with(|s| s.borrow().recover(&handle).map_err(|e| e.0))
                }
                fn destroy(handle: Text) -> Answer<()> {
                    STATE.with(|s| s.borrow().destroy(&handle).map_err(|e| e.0))
                }
            }

            $crate::executor_bindings::__export_executor_world!(SpearExecutorComponent with_types_in $crate::executor_bindings);
        };
    };
}
