//! `memory-pressure`: when used memory is above `high_watermark` of the total, stops `ready`
//! instances, largest first (ties: longest idle, then lowest id), until the projected use is at or
//! below `low_watermark`.

use serde::Deserialize;
use spear_plugin_api::{
    InstanceState, InstanceStats, NodePressure, PluginError, PluginInfo, PluginKind, Reclaimer,
    parse_config,
};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Config {
    high_watermark: f64,
    low_watermark: f64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            high_watermark: 0.85,
            low_watermark: 0.75,
        }
    }
}

/// The memory-pressure reclamation policy.
#[derive(Debug, Default)]
pub struct MemoryPressure {
    config: Config,
}

impl Reclaimer for MemoryPressure {
    fn info(&self) -> PluginInfo {
        PluginInfo {
            name: "memory-pressure".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            kind: PluginKind::ReclamationPolicy,
            description: "Above the high watermark, stop the largest ready instances down to the low one"
                .into(),
            config_schema: r#"{"type":"object","additionalProperties":false,"properties":{"high_watermark":{"type":"number"},"low_watermark":{"type":"number"}}}"#.into(),
        }
    }

    fn configure(&mut self, config: &str) -> Result<(), PluginError> {
        let config: Config = parse_config(config)?;
        if !(0.0 < config.low_watermark
            && config.low_watermark <= config.high_watermark
            && config.high_watermark <= 1.0)
        {
            return Err(PluginError::new(
                "watermarks must satisfy 0 < low_watermark <= high_watermark <= 1",
            ));
        }
        self.config = config;
        Ok(())
    }

    fn select(&mut self, instances: &[InstanceStats], node: &NodePressure) -> Vec<u64> {
        let total = node.memory_total_bytes as f64;
        if total <= 0.0 || (node.memory_used_bytes as f64) <= self.config.high_watermark * total {
            return Vec::new();
        }
        let goal = self.config.low_watermark * total;
        let mut ready: Vec<&InstanceStats> = instances
            .iter()
            .filter(|i| i.state == InstanceState::Ready)
            .collect();
        ready.sort_by(|a, b| {
            b.memory_bytes
                .cmp(&a.memory_bytes)
                .then(b.idle_ms.cmp(&a.idle_ms))
                .then(a.id.cmp(&b.id))
        });
        let mut used = node.memory_used_bytes;
        let mut chosen = Vec::new();
        for i in ready {
            if (used as f64) <= goal {
                break;
            }
            used = used.saturating_sub(i.memory_bytes);
            chosen.push(i.id);
        }
        chosen
    }
}

#[cfg(all(target_family = "wasm", target_os = "wasi"))]
spear_pdk::export_reclaimer!(MemoryPressure);
#[cfg(all(target_family = "wasm", target_os = "unknown"))]
spear_pdk::export_extism_reclaimer!(MemoryPressure);
#[cfg(all(not(target_family = "wasm"), feature = "native-plugin"))]
spear_plugin_api::export_native_reclaimer!(MemoryPressure);

/// This plugin as a built-in of a host that links this crate (no library file; see
/// `spear_plugin_api::native_module!`).
#[cfg(not(target_family = "wasm"))]
pub fn native_module() -> spear_plugin_api::native::SpearPluginModuleRef {
    spear_plugin_api::native_module!(reclaimer, MemoryPressure)
}
