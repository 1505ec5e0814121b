//! `idle-time`: stops `ready` instances idle for at least `idle_ms`, longest idle first, keeping
//! `keep_warm` instances of each task.

use std::collections::BTreeMap;

use serde::Deserialize;
use spear_plugin_api::{
    InstanceState, InstanceStats, NodePressure, PluginError, PluginInfo, PluginKind, Reclaimer,
    parse_config,
};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Config {
    idle_ms: u64,
    keep_warm: u32,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            idle_ms: 300_000,
            keep_warm: 0,
        }
    }
}

/// The idle-time reclamation policy.
#[derive(Debug, Default)]
pub struct IdleTime {
    config: Config,
}

impl Reclaimer for IdleTime {
    fn info(&self) -> PluginInfo {
        PluginInfo {
            name: "idle-time".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            kind: PluginKind::ReclamationPolicy,
            description: "Stop ready instances idle longer than idle_ms, keeping keep_warm per task"
                .into(),
            config_schema: r#"{"type":"object","additionalProperties":false,"properties":{"idle_ms":{"type":"integer"},"keep_warm":{"type":"integer"}}}"#.into(),
        }
    }

    fn configure(&mut self, config: &str) -> Result<(), PluginError> {
        self.config = parse_config(config)?;
        Ok(())
    }

    fn select(&mut self, instances: &[InstanceStats], _node: &NodePressure) -> Vec<u64> {
        let mut live_per_task: BTreeMap<&str, u32> = BTreeMap::new();
        for i in instances {
            if matches!(
                i.state,
                InstanceState::Ready | InstanceState::Executing | InstanceState::Initializing
            ) {
                *live_per_task.entry(&i.task).or_default() += 1;
            }
        }
        let mut idle: Vec<&InstanceStats> = instances
            .iter()
            .filter(|i| i.state == InstanceState::Ready && i.idle_ms >= self.config.idle_ms)
            .collect();
        idle.sort_by(|a, b| b.idle_ms.cmp(&a.idle_ms).then(a.id.cmp(&b.id)));
        let mut chosen = Vec::new();
        for i in idle {
            let live = live_per_task.entry(&i.task).or_default();
            if *live > self.config.keep_warm {
                *live -= 1;
                chosen.push(i.id);
            }
        }
        chosen
    }
}

#[cfg(all(target_family = "wasm", target_os = "wasi"))]
spear_pdk::export_reclaimer!(IdleTime);
#[cfg(all(target_family = "wasm", target_os = "unknown"))]
spear_pdk::export_extism_reclaimer!(IdleTime);
#[cfg(all(not(target_family = "wasm"), feature = "native-plugin"))]
spear_plugin_api::export_native_reclaimer!(IdleTime);

/// This plugin as a built-in of a host that links this crate (no library file; see
/// `spear_plugin_api::native_module!`).
#[cfg(not(target_family = "wasm"))]
pub fn native_module() -> spear_plugin_api::native::SpearPluginModuleRef {
    spear_plugin_api::native_module!(reclaimer, IdleTime)
}
