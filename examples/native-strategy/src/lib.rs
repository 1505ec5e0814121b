//! `pack-native`: the `pack-rust` strategy, unchanged, exported as a native library.
//!
//! A native plugin runs in the host's process: no per-call deadline, no memory limit, and it can
//! never be unloaded (each replacement stays mapped until the host restarts). It pays off only when
//! the last microsecond of a decision matters; see docs/plugins.md, "The native form".

use pack_rust::Pack;
use spear_plugin_api::{Decision, PluginError, PluginInfo, Request, Strategy, Target};

/// `pack-rust`'s policy under its own name, so that both can sit in one plugin directory.
#[derive(Debug)]
pub struct PackNative(Pack);

impl Default for PackNative {
    fn default() -> Self {
        Self(Pack::named("pack-native"))
    }
}

impl Strategy for PackNative {
    fn info(&self) -> PluginInfo {
        self.0.info()
    }

    fn configure(&mut self, config: &str) -> Result<(), PluginError> {
        self.0.configure(config)
    }

    fn upsert(&mut self, targets: Vec<Target>) {
        self.0.upsert(targets)
    }

    fn remove(&mut self, ids: &[u64]) {
        self.0.remove(ids)
    }

    fn place(&mut self, requests: &[Request]) -> Vec<Decision> {
        self.0.place(requests)
    }
}

spear_plugin_api::export_native_strategy!(PackNative);
