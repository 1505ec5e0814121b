//! The plugins linked into `sms`, registered as built-ins (`built-in:<name>` in `spear plugin
//! list`): the scheduling strategies, the storage backends and the autoscaler. SMS starts with no plugin directory;
//! a plugin file of the same kind and name in the directory replaces a built-in.

use std::sync::OnceLock;

use spear_plugin_api::native::SpearPluginModuleRef;

/// Every built-in plugin module (built once per process).
pub fn modules() -> &'static [SpearPluginModuleRef] {
    static MODULES: OnceLock<Vec<SpearPluginModuleRef>> = OnceLock::new();
    MODULES.get_or_init(|| {
        vec![
            spear_strategy_round_robin::native_module(),
            spear_strategy_least_connections::native_module(),
            spear_strategy_affinity::native_module(),
            spear_strategy_adaptive::native_module(),
            spear_strategy_weighted_round_robin::native_module(),
            spear_strategy_random::native_module(),
            spear_storage_redb::native_module(),
            spear_storage_memory::native_module(),
            spear_storage_etcd::native_module(),
            spear_autoscaler_queue_depth::native_module(),
        ]
    })
}
