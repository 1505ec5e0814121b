//! `round-robin`: hands requests to eligible targets in turn, in target-id order.
//!
//! A target is eligible when [`Request::fits`] holds. The cursor (the last id assigned) survives hot
//! reloads through `save-state`.

use std::collections::BTreeMap;

use spear_plugin_api::{
    Decision, PluginError, PluginInfo, PluginKind, Request, Strategy, Target, parse_config,
};

/// The round-robin strategy.
#[derive(Debug, Default)]
pub struct RoundRobin {
    targets: BTreeMap<u64, Target>,
    /// Id of the target that received the last assignment.
    cursor: Option<u64>,
}

#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Config {}

impl RoundRobin {
    fn pick(&self, request: &Request) -> Option<u64> {
        let start = self.cursor.map_or(0, |c| c.saturating_add(1));
        let after = self.targets.range(start..);
        let before = self.targets.range(..start);
        after
            .chain(before)
            .find(|(_, t)| request.fits(t))
            .map(|(id, _)| *id)
    }
}

impl Strategy for RoundRobin {
    fn info(&self) -> PluginInfo {
        PluginInfo {
            name: "round-robin".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            kind: PluginKind::SchedulingStrategy,
            description: "Eligible targets in turn, in id order".into(),
            config_schema: r#"{"type":"object","additionalProperties":false}"#.into(),
        }
    }

    fn configure(&mut self, config: &str) -> Result<(), PluginError> {
        parse_config::<Config>(config).map(|_| ())
    }

    fn upsert(&mut self, targets: Vec<Target>) {
        for t in targets {
            self.targets.insert(t.id, t);
        }
    }

    fn remove(&mut self, ids: &[u64]) {
        for id in ids {
            self.targets.remove(id);
        }
    }

    fn place(&mut self, requests: &[Request]) -> Vec<Decision> {
        requests
            .iter()
            .map(|r| match self.pick(r) {
                Some(id) => {
                    self.cursor = Some(id);
                    if let Some(t) = self.targets.get_mut(&id) {
                        t.claim(&r.needs);
                    }
                    Decision::Assign(id)
                }
                None => Decision::Reject("no eligible target".into()),
            })
            .collect()
    }

    fn save_state(&self) -> Vec<u8> {
        serde_json::to_vec(&self.cursor).unwrap_or_default()
    }

    fn restore_state(&mut self, state: &[u8]) -> Result<(), PluginError> {
        self.cursor = serde_json::from_slice(state).map_err(PluginError::new)?;
        Ok(())
    }
}

#[cfg(all(target_family = "wasm", target_os = "wasi"))]
spear_pdk::export_strategy!(RoundRobin);
#[cfg(all(target_family = "wasm", target_os = "unknown"))]
spear_pdk::export_extism_strategy!(RoundRobin);
#[cfg(all(not(target_family = "wasm"), feature = "native-plugin"))]
spear_plugin_api::export_native_strategy!(RoundRobin);

/// This plugin as a built-in of a host that links this crate (no library file; see
/// `spear_plugin_api::native_module!`).
#[cfg(not(target_family = "wasm"))]
pub fn native_module() -> spear_plugin_api::native::SpearPluginModuleRef {
    spear_plugin_api::native_module!(strategy, RoundRobin)
}
