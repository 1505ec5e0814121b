//! The Extism form: every `spear_*` export reads JSON (or raw bytes) from Extism's input and writes
//! JSON to its output; an error is reported through Extism's error channel.
//!
//! | export | input | output |
//! |---|---|---|
//! | `spear_info` | — | `PluginInfo` |
//! | `spear_configure` | the configuration JSON | — |
//! | `spear_upsert` | `[Target]` | — |
//! | `spear_remove` | `[u64]` | — |
//! | `spear_place` | `[Request]` | `[Decision]` |
//! | `spear_observe` | `[Outcome]` | — |
//! | `spear_select` | `{"instances": [InstanceStats], "node": NodePressure}` | `[u64]` |
//! | `spear_decide` | `ScaleView` | `ScaleDecision` |
//! | `spear_save_state` | — | bytes |
//! | `spear_restore_state` | bytes | — |

use spear_plugin_api as api;

#[doc(hidden)]
pub use extism_pdk as __extism_pdk;

pub(crate) fn host_log(level: api::LogLevel, message: &str) {
    use extism_pdk::LogLevel as L;
    let level = match level {
        api::LogLevel::Trace => L::Trace,
        api::LogLevel::Debug => L::Debug,
        api::LogLevel::Info => L::Info,
        api::LogLevel::Warn => L::Warn,
        api::LogLevel::Error => L::Error,
    };
    extism_pdk::log!(level, "{}", message);
}

/// Glue used by the Extism export macros; not part of the public API.
#[doc(hidden)]
pub mod extism_glue {
    use extism_pdk::Memory;

    /// The call's input bytes.
    pub fn input() -> Vec<u8> {
        extism_pdk::input_bytes()
    }

    /// The call's input parsed as JSON.
    pub fn input_json<T: serde::de::DeserializeOwned>() -> Result<T, String> {
        serde_json::from_slice(&input()).map_err(|e| format!("invalid input: {e}"))
    }

    /// Set the call's output bytes; returns the Extism status code.
    pub fn output(bytes: &[u8]) -> i32 {
        match Memory::from_bytes(bytes) {
            Ok(mem) => {
                mem.set_output();
                0
            }
            Err(e) => fail(&format!("cannot allocate output: {e}")),
        }
    }

    /// Set the call's output as JSON; returns the Extism status code.
    pub fn output_json<T: serde::Serialize>(value: &T) -> i32 {
        match serde_json::to_vec(value) {
            Ok(bytes) => output(&bytes),
            Err(e) => fail(&format!("cannot encode output: {e}")),
        }
    }

    /// Report an error; returns the Extism status code.
    pub fn fail(message: &str) -> i32 {
        if let Ok(mem) = Memory::from_bytes(message.as_bytes()) {
            // SAFETY: `mem` is a live Extism allocation holding the message.
            unsafe { extism_pdk::extism::error_set(mem.offset()) };
        }
        1
    }

    /// Turn a `Result<(), String>` into a status code.
    pub fn status(result: Result<(), String>) -> i32 {
        match result {
            Ok(()) => 0,
            Err(e) => fail(&e),
        }
    }
}

#[doc(hidden)]
pub use serde as __serde;

/// Export a [`Strategy`](spear_plugin_api::Strategy) implementing `Default` as an Extism module.
#[macro_export]
macro_rules! export_extism_strategy {
    ($ty:ty) => {
        const _: () = {
            use $crate::api::Strategy as _;
            use $crate::extism_glue as g;

            ::std::thread_local! {
                static STATE: ::core::cell::RefCell<$ty> =
                    ::core::cell::RefCell::new(<$ty as ::core::default::Default>::default());
            }

            #[unsafe(no_mangle)]
            extern "C" fn spear_info() -> i32 {
                STATE.with(|s| g::output_json(&s.borrow().info()))
            }
            #[unsafe(no_mangle)]
            extern "C" fn spear_configure() -> i32 {
                let config = ::std::string::String::from_utf8_lossy(&g::input()).into_owned();
                g::status(STATE.with(|s| s.borrow_mut().configure(&config).map_err(|e| e.0)))
            }
            #[unsafe(no_mangle)]
            extern "C" fn spear_upsert() -> i32 {
                g::status(g::input_json().map(|t| STATE.with(|s| s.borrow_mut().upsert(t))))
            }
            #[unsafe(no_mangle)]
            extern "C" fn spear_remove() -> i32 {
                g::status(
                    g::input_json::<::std::vec::Vec<u64>>()
                        .map(|ids| STATE.with(|s| s.borrow_mut().remove(&ids))),
                )
            }
            #[unsafe(no_mangle)]
            extern "C" fn spear_place() -> i32 {
                match g::input_json::<::std::vec::Vec<$crate::api::Request>>() {
                    Ok(requests) => {
                        g::output_json(&STATE.with(|s| s.borrow_mut().place(&requests)))
                    }
                    Err(e) => g::fail(&e),
                }
            }
            #[unsafe(no_mangle)]
            extern "C" fn spear_observe() -> i32 {
                g::status(
                    g::input_json::<::std::vec::Vec<$crate::api::Outcome>>()
                        .map(|o| STATE.with(|s| s.borrow_mut().observe(&o))),
                )
            }
            #[unsafe(no_mangle)]
            extern "C" fn spear_save_state() -> i32 {
                g::output(&STATE.with(|s| s.borrow().save_state()))
            }
            #[unsafe(no_mangle)]
            extern "C" fn spear_restore_state() -> i32 {
                let state = g::input();
                g::status(STATE.with(|s| s.borrow_mut().restore_state(&state).map_err(|e| e.0)))
            }
        };
    };
}

/// Export a [`Reclaimer`](spear_plugin_api::Reclaimer) implementing `Default` as an Extism module.
#[macro_export]
macro_rules! export_extism_reclaimer {
    ($ty:ty) => {
        const _: () = {
            use $crate::api::Reclaimer as _;
            use $crate::extism_glue as g;

            ::std::thread_local! {
                static STATE: ::core::cell::RefCell<$ty> =
                    ::core::cell::RefCell::new(<$ty as ::core::default::Default>::default());
            }

            #[derive($crate::__serde::Deserialize)]
            #[serde(crate = "spear_pdk::__serde")]
            struct SelectInput {
                instances: ::std::vec::Vec<$crate::api::InstanceStats>,
                node: $crate::api::NodePressure,
            }

            #[unsafe(no_mangle)]
            extern "C" fn spear_info() -> i32 {
                STATE.with(|s| g::output_json(&s.borrow().info()))
            }
            #[unsafe(no_mangle)]
            extern "C" fn spear_configure() -> i32 {
                let config = ::std::string::String::from_utf8_lossy(&g::input()).into_owned();
                g::status(STATE.with(|s| s.borrow_mut().configure(&config).map_err(|e| e.0)))
            }
            #[unsafe(no_mangle)]
            extern "C" fn spear_select() -> i32 {
                match g::input_json::<SelectInput>() {
                    Ok(i) => g::output_json(
                        &STATE.with(|s| s.borrow_mut().select(&i.instances, &i.node)),
                    ),
                    Err(e) => g::fail(&e),
                }
            }
            #[unsafe(no_mangle)]
            extern "C" fn spear_save_state() -> i32 {
                g::output(&STATE.with(|s| s.borrow().save_state()))
            }
            #[unsafe(no_mangle)]
            extern "C" fn spear_restore_state() -> i32 {
                let state = g::input();
                g::status(STATE.with(|s| s.borrow_mut().restore_state(&state).map_err(|e| e.0)))
            }
        };
    };
}

/// Export an [`Autoscaler`](spear_plugin_api::Autoscaler) implementing `Default` as an Extism
/// module.
#[macro_export]
macro_rules! export_extism_autoscaler {
    ($ty:ty) => {
        const _: () = {
            use $crate::api::Autoscaler as _;
            use $crate::extism_glue as g;

            ::std::thread_local! {
                static STATE: ::core::cell::RefCell<$ty> =
                    ::core::cell::RefCell::new(<$ty as ::core::default::Default>::default());
            }

            #[unsafe(no_mangle)]
            extern "C" fn spear_info() -> i32 {
                STATE.with(|s| g::output_json(&s.borrow().info()))
            }
            #[unsafe(no_mangle)]
            extern "C" fn spear_configure() -> i32 {
                let config = ::std::string::String::from_utf8_lossy(&g::input()).into_owned();
                g::status(STATE.with(|s| s.borrow_mut().configure(&config).map_err(|e| e.0)))
            }
            #[unsafe(no_mangle)]
            extern "C" fn spear_decide() -> i32 {
                match g::input_json::<$crate::api::ScaleView>() {
                    Ok(view) => match STATE.with(|s| s.borrow_mut().decide(&view)) {
                        Ok(decision) => g::output_json(&decision),
                        Err(e) => g::fail(&e.0),
                    },
                    Err(e) => g::fail(&e),
                }
            }
            #[unsafe(no_mangle)]
            extern "C" fn spear_save_state() -> i32 {
                g::output(&STATE.with(|s| s.borrow().save_state()))
            }
            #[unsafe(no_mangle)]
            extern "C" fn spear_restore_state() -> i32 {
                let state = g::input();
                g::status(STATE.with(|s| s.borrow_mut().restore_state(&state).map_err(|e| e.0)))
            }
        };
    };
}
