//! `error-rate`: stops instances in the `error` state, and `ready` instances whose recent error rate
//! exceeds `max_error_rate` over at least `min_invocations` recent invocations; worst first.

use serde::Deserialize;
use spear_plugin_api::{
    InstanceState, InstanceStats, NodePressure, PluginError, PluginInfo, PluginKind, Reclaimer,
    parse_config,
};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Config {
    max_error_rate: f64,
    min_invocations: u32,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            max_error_rate: 0.5,
            min_invocations: 10,
        }
    }
}

/// The error-rate reclamation policy.
#[derive(Debug, Default)]
pub struct ErrorRate {
    config: Config,
}

fn rate(i: &InstanceStats) -> f64 {
    if i.recent_invocations == 0 {
        0.0
    } else {
        f64::from(i.recent_errors) / f64::from(i.recent_invocations)
    }
}

impl Reclaimer for ErrorRate {
    fn info(&self) -> PluginInfo {
        PluginInfo {
            name: "error-rate".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            kind: PluginKind::ReclamationPolicy,
            description: "Stop failed instances and those whose recent error rate is too high".into(),
            config_schema: r#"{"type":"object","additionalProperties":false,"properties":{"max_error_rate":{"type":"number"},"min_invocations":{"type":"integer"}}}"#.into(),
        }
    }

    fn configure(&mut self, config: &str) -> Result<(), PluginError> {
        let config: Config = parse_config(config)?;
        if !(0.0..=1.0).contains(&config.max_error_rate) {
            return Err(PluginError::new("max_error_rate must be in [0, 1]"));
        }
        self.config = config;
        Ok(())
    }

    fn select(&mut self, instances: &[InstanceStats], _node: &NodePressure) -> Vec<u64> {
        let mut bad: Vec<(bool, f64, u64)> = instances
            .iter()
            .filter_map(|i| match i.state {
                InstanceState::Error => Some((true, 1.0, i.id)),
                InstanceState::Ready
                    if i.recent_invocations >= self.config.min_invocations
                        && rate(i) > self.config.max_error_rate =>
                {
                    Some((false, rate(i), i.id))
                }
                _ => None,
            })
            .collect();
        // Failed instances first, then the highest rate, then the lowest id.
        bad.sort_by(|a, b| b.0.cmp(&a.0).then(b.1.total_cmp(&a.1)).then(a.2.cmp(&b.2)));
        bad.into_iter().map(|(_, _, id)| id).collect()
    }
}

#[cfg(all(target_family = "wasm", target_os = "wasi"))]
spear_pdk::export_reclaimer!(ErrorRate);
#[cfg(all(target_family = "wasm", target_os = "unknown"))]
spear_pdk::export_extism_reclaimer!(ErrorRate);
#[cfg(all(not(target_family = "wasm"), feature = "native-plugin"))]
spear_plugin_api::export_native_reclaimer!(ErrorRate);

/// This plugin as a built-in of a host that links this crate (no library file; see
/// `spear_plugin_api::native_module!`).
#[cfg(not(target_family = "wasm"))]
pub fn native_module() -> spear_plugin_api::native::SpearPluginModuleRef {
    spear_plugin_api::native_module!(reclaimer, ErrorRate)
}
