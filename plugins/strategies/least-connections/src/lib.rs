//! `least-connections`: each request goes to the eligible target with the least active work
//! (ties: lowest id).
//!
//! The view is indexed by `(active, id)`, so a placement costs O(log n) when the least-loaded target
//! is eligible, instead of a scan of every target. Placements within a batch count as active work, so
//! a batch spreads out.

use std::collections::{BTreeMap, BTreeSet};

use spear_plugin_api::{
    Decision, PluginError, PluginInfo, PluginKind, Request, Strategy, Target, parse_config,
};

/// The least-connections strategy.
#[derive(Debug, Default)]
pub struct LeastConnections {
    targets: BTreeMap<u64, Target>,
    /// `(active, id)` of every target, the least loaded first.
    by_load: BTreeSet<(u32, u64)>,
}

#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Config {}

impl LeastConnections {
    fn insert(&mut self, target: Target) {
        if let Some(old) = self.targets.get(&target.id) {
            self.by_load.remove(&(old.active, old.id));
        }
        self.by_load.insert((target.active, target.id));
        self.targets.insert(target.id, target);
    }
}

impl Strategy for LeastConnections {
    fn info(&self) -> PluginInfo {
        PluginInfo {
            name: "least-connections".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            kind: PluginKind::SchedulingStrategy,
            description: "The eligible target with the least active work".into(),
            config_schema: r#"{"type":"object","additionalProperties":false}"#.into(),
        }
    }

    fn configure(&mut self, config: &str) -> Result<(), PluginError> {
        parse_config::<Config>(config).map(|_| ())
    }

    fn upsert(&mut self, targets: Vec<Target>) {
        for t in targets {
            self.insert(t);
        }
    }

    fn remove(&mut self, ids: &[u64]) {
        for id in ids {
            if let Some(old) = self.targets.remove(id) {
                self.by_load.remove(&(old.active, old.id));
            }
        }
    }

    fn place(&mut self, requests: &[Request]) -> Vec<Decision> {
        let mut out = Vec::with_capacity(requests.len());
        for r in requests {
            let chosen = self
                .by_load
                .iter()
                .map(|&(_, id)| id)
                .find(|id| self.targets.get(id).is_some_and(|t| r.fits(t)));
            match chosen.and_then(|id| self.targets.get_mut(&id)) {
                Some(t) => {
                    self.by_load.remove(&(t.active, t.id));
                    t.claim(&r.needs);
                    self.by_load.insert((t.active, t.id));
                    out.push(Decision::Assign(t.id));
                }
                None => out.push(Decision::Reject("no eligible target".into())),
            }
        }
        out
    }
}

#[cfg(all(target_family = "wasm", target_os = "wasi"))]
spear_pdk::export_strategy!(LeastConnections);
#[cfg(all(target_family = "wasm", target_os = "unknown"))]
spear_pdk::export_extism_strategy!(LeastConnections);
#[cfg(all(not(target_family = "wasm"), feature = "native-plugin"))]
spear_plugin_api::export_native_strategy!(LeastConnections);

/// This plugin as a built-in of a host that links this crate (no library file; see
/// `spear_plugin_api::native_module!`).
#[cfg(not(target_family = "wasm"))]
pub fn native_module() -> spear_plugin_api::native::SpearPluginModuleRef {
    spear_plugin_api::native_module!(strategy, LeastConnections)
}
