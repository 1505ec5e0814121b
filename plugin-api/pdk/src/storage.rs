//! The component form of a storage backend: bindings of the `storage-backend` world and the
//! `export_storage!` macro.

/// Bindings of the `storage-backend` world (generated from `wit/`).
#[doc(hidden)]
pub mod storage_bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "storage-backend",
        pub_export_macro: true,
        export_macro_name: "__export_storage_world",
        default_bindings_module: "spear_pdk::storage_bindings",
        runtime_path: "spear_pdk::__rt",
        with: {
            "spear:plugin/types@0.1.1": crate::strategy_bindings::spear::plugin::types,
            "spear:plugin/host@0.1.1": crate::strategy_bindings::spear::plugin::host,
        },
    });
}

/// Conversions between the storage world's types and the plain ones (used by the export macro).
#[doc(hidden)]
pub mod storage_convert {
    use spear_plugin_api::storage::{BatchLimits, BatchOp, KeyValue};

    use super::storage_bindings::exports::spear::plugin::storage as wit;

    /// WIT batch operation → plain operation.
    pub fn op(op: wit::BatchOp) -> BatchOp {
        match op {
            wit::BatchOp::Put(kv) => BatchOp::Put {
                key: kv.key,
                value: kv.value,
            },
            wit::BatchOp::Delete(key) => BatchOp::Delete { key },
            wit::BatchOp::Check(c) => BatchOp::Check {
                key: c.key,
                value: c.value,
            },
        }
    }

    /// Plain rows → WIT rows.
    pub fn rows(rows: Vec<KeyValue>) -> Vec<wit::KeyValue> {
        rows.into_iter()
            .map(|(key, value)| wit::KeyValue { key, value })
            .collect()
    }

    /// Plain limits → WIT limits.
    pub fn limits(l: BatchLimits) -> wit::BatchLimits {
        wit::BatchLimits {
            max_ops: l.max_ops,
            max_bytes: l.max_bytes,
        }
    }
}

/// Export a [`StorageBackend`](spear_plugin_api::StorageBackend) implementing `Default` as a WASM
/// component of the `storage-backend` world. The store lives in the instance: the host keeps one
/// instance per opened store.
#[macro_export]
macro_rules! export_storage {
    ($ty:ty) => {
        const _: () = {
            use $crate::storage_bindings::exports::spear::plugin::storage as wit_st;
            use $crate::storage_bindings::exports::spear::plugin::storage::Guest;
            use $crate::strategy_bindings::spear::plugin::types as wit;
            use $crate::api::StorageBackend as _;

            ::std::thread_local! {
                static STATE: ::core::cell::RefCell<$ty> =
                    ::core::cell::RefCell::new(<$ty as ::core::default::Default>::default());
            }

            type Bytes = ::std::vec::Vec<u8>;
            type Answer<T> = ::core::result::Result<T, ::std::string::String>;

            struct SpearStorageComponent;

            impl Guest for SpearStorageComponent {
                fn info() -> wit::PluginInfo {
                    STATE.with(|s| $crate::convert::info(s.borrow().info()))
                }
                fn open(config: ::std::string::String) -> Answer<()> {
                    STATE.with(|s| s.borrow_mut().open(&config).map_err(|e| e.0))
                }
                fn get(key: Bytes) -> Answer<::core::option::Option<Bytes>> {
                    STATE.with(|s| s.borrow().get(&key).map_err(|e| e.0))
                }
                fn put(key: Bytes, value: Bytes) -> Answer<()> {
                    STATE.with(|s| s.borrow().put(&key, &value).map_err(|e| e.0))
                }
                fn delete(key: Bytes) -> Answer<bool> {
                    STATE.with(|s| s.borrow().delete(&key).map_err(|e| e.0))
                }
                fn scan(
                    prefix: Bytes,
                    start_after: ::core::option::Option<Bytes>,
                    limit: u32,
                ) -> Answer<::std::vec::Vec<wit_st::KeyValue>> {
                    STATE
                        .with(|s| s.borrow().scan(&prefix, start_after.as_deref(), limit))
                        .map($crate::storage_convert::rows)
                        .map_err(|e| e.0)
                }
                fn batch(ops: ::std::vec::Vec<wit_st::BatchOp>) -> Answer<bool> {
                    let ops: ::std::vec::Vec<_> =
                        ops.into_iter().map($crate::storage_convert::op).collect();
                    STATE.with(|s| s.borrow().batch(&ops).map_err(|e| e.0))
                }
                fn compare_and_swap(
                    key: Bytes,
                    expected: ::core::option::Option<Bytes>,
                    new: ::core::option::Option<Bytes>,
                ) -> Answer<bool> {
                    STATE.with(|s| {
                        s.borrow()
                            .compare_and_swap(&key, expected.as_deref(), new.as_deref())
                            .map_err(|e| e.0)
                    })
                }
                fn limits() -> wit_st::BatchLimits {
                    STATE.with(|s| $crate::storage_convert::limits(s.borrow().limits()))
                }
            }

            $crate::storage_bindings::__export_storage_world!(SpearStorageComponent with_types_in $crate::storage_bindings);
        };
    };
}
