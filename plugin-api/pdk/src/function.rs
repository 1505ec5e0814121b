//! Function components: user code that a Spearlet keeps alive as instances serving invocations
//! (`wit/function/function.wit`, world `spear:function/function`).
//!
//! Implement [`Function`] on a type that is `Default`; its value lives as long as the instance, so
//! fields keep state from one invocation to the next. Then export it:
//!
//! ```ignore
//! #[derive(Default)]
//! struct Counter { count: u64 }
//!
//! impl spear_pdk::function::Function for Counter {
//!     fn invoke(&mut self, function: &str, payload: &[u8]) -> Result<Vec<u8>, String> {
//!         self.count += 1;
//!         Ok(self.count.to_string().into_bytes())
//!     }
//! }
//!
//! spear_pdk::export_function!(Counter);
//! ```

/// A function component's behaviour. One value per instance, made with `Default` when the
/// instance is.
pub trait Function: Default + 'static {
    /// Called once before the first invocation with the task's configuration (a JSON object).
    /// An error puts the instance in error.
    fn init(&mut self, config: &str) -> Result<(), String> {
        let _ = config;
        Ok(())
    }

    /// Run `function` on `payload`. An error is the function's failure, answered to the caller;
    /// a panic traps, and the instance is dropped.
    fn invoke(&mut self, function: &str, payload: &[u8]) -> Result<Vec<u8>, String>;
}

/// Hand over `piece` of the current invocation's output now (`spear:function/output.emit`): a
/// streaming caller gets it at once, any other before the result `invoke` returns. `false`: no
/// more are wanted (the caller has gone, or the output reached the host's limit); stop making
/// them. Call it only from [`Function::invoke`].
pub fn emit(piece: &[u8]) -> bool {
    bindings::spear::function::output::emit(piece)
}

/// Bindings of the `function` world (generated from `wit/function/`).
#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../../wit/function",
        world: "function",
        pub_export_macro: true,
        export_macro_name: "__export_function_world",
        default_bindings_module: "spear_pdk::function::bindings",
        runtime_path: "spear_pdk::__rt",
    });
}

/// Export a [`Function`] type as the component's `handler`.
#[macro_export]
macro_rules! export_function {
    ($ty:ty) => {
        thread_local! {
            static __SPEAR_FUNCTION: ::std::cell::RefCell<::core::option::Option<$ty>> =
                const { ::std::cell::RefCell::new(::core::option::Option::None) };
        }

        fn __spear_function<R>(f: impl FnOnce(&mut $ty) -> R) -> R {
            __SPEAR_FUNCTION.with(|cell| {
                let mut slot = cell.borrow_mut();
                f(slot.get_or_insert_with(<$ty as ::core::default::Default>::default))
            })
        }

        struct __SpearFunctionExport;

        impl $crate::function::bindings::exports::spear::function::handler::Guest
            for __SpearFunctionExport
        {
            fn init(
                config: ::std::string::String,
            ) -> ::core::result::Result<(), ::std::string::String> {
                __spear_function(|f| $crate::function::Function::init(f, &config))
            }

            fn invoke(
                function_name: ::std::string::String,
                payload: ::std::vec::Vec<u8>,
            ) -> ::core::result::Result<::std::vec::Vec<u8>, ::std::string::String> {
                __spear_function(|f| {
                    $crate::function::Function::invoke(f, &function_name, &payload)
                })
            }
        }

        $crate::function::bindings::__export_function_world!(__SpearFunctionExport);
    };
}
