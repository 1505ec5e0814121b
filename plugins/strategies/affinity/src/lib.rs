//! `affinity`: hard and soft node affinity, plus spreading or co-locating the work of one group.
//!
//! - Hard affinity (`required` labels) is part of eligibility ([`Request::fits`]).
//! - Soft affinity: among eligible targets, those carrying more of the `preferred` labels win.
//! - Group rule: work is grouped by the value of the task label named `group_by` (default `app`;
//!   the task name when the label is absent). `mode = "spread"` prefers the target holding the fewest
//!   placements of the group, `mode = "colocate"` the most.
//! - Ties: least active work, then lowest id.
//!
//! Placement counts per group are learned from `place` and released by `observe`; they survive hot
//! reloads through `save-state`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use spear_plugin_api::{
    Decision, Outcome, PluginError, PluginInfo, PluginKind, Request, Strategy, Target, parse_config,
};

/// How work of one group is laid out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// As few of a group per target as possible.
    #[default]
    Spread,
    /// As many of a group per target as possible.
    Colocate,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Config {
    mode: Mode,
    group_by: String,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            mode: Mode::Spread,
            group_by: "app".into(),
        }
    }
}

/// Placements remembered for release by `observe`; beyond this the oldest are forgotten (their
/// outcome never came), so the state stays bounded.
const MAX_OPEN: usize = 65_536;

/// Learned state: per group, per target, placements not yet observed as finished.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Groups {
    counts: BTreeMap<String, BTreeMap<u64, u32>>,
    /// request id → (group, target) for releasing on `observe`.
    open: BTreeMap<u64, (String, u64)>,
}

impl Groups {
    fn release(&mut self, group: &str, target: u64) {
        if let Some(n) = self.counts.get_mut(group).and_then(|c| c.get_mut(&target)) {
            *n = n.saturating_sub(1);
        }
    }

    fn release_oldest(&mut self) {
        if let Some((_, (group, target))) = self.open.pop_first() {
            self.release(&group, target);
        }
    }
}

/// The affinity strategy.
#[derive(Debug, Default)]
pub struct Affinity {
    config: Config,
    targets: BTreeMap<u64, Target>,
    groups: Groups,
}

impl Affinity {
    fn group_of(&self, r: &Request) -> String {
        r.labels
            .iter()
            .find(|l| l.key == self.config.group_by)
            .map_or_else(|| r.task.clone(), |l| l.value.clone())
    }

    fn pick(&self, r: &Request, group: &str) -> Option<u64> {
        let counts = self.groups.counts.get(group);
        self.targets
            .values()
            .filter(|t| r.fits(t))
            .min_by_key(|t| {
                let preferred = r.preferred.iter().filter(|l| t.has_label(l)).count();
                let in_group = counts.and_then(|c| c.get(&t.id)).copied().unwrap_or(0);
                let group_key = match self.config.mode {
                    Mode::Spread => i64::from(in_group),
                    Mode::Colocate => -i64::from(in_group),
                };
                (std::cmp::Reverse(preferred), group_key, t.active, t.id)
            })
            .map(|t| t.id)
    }
}

impl Strategy for Affinity {
    fn info(&self) -> PluginInfo {
        PluginInfo {
            name: "affinity".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            kind: PluginKind::SchedulingStrategy,
            description: "Required and preferred labels; spread or co-locate by task label".into(),
            config_schema: r#"{"type":"object","additionalProperties":false,"properties":{"mode":{"enum":["spread","colocate"]},"group_by":{"type":"string"}}}"#.into(),
        }
    }

    fn configure(&mut self, config: &str) -> Result<(), PluginError> {
        self.config = parse_config(config)?;
        Ok(())
    }

    fn upsert(&mut self, targets: Vec<Target>) {
        for t in targets {
            self.targets.insert(t.id, t);
        }
    }

    fn remove(&mut self, ids: &[u64]) {
        for id in ids {
            self.targets.remove(id);
            for counts in self.groups.counts.values_mut() {
                counts.remove(id);
            }
        }
        self.groups
            .open
            .retain(|_, (_, target)| !ids.contains(target));
    }

    fn place(&mut self, requests: &[Request]) -> Vec<Decision> {
        let mut out = Vec::with_capacity(requests.len());
        for r in requests {
            let group = self.group_of(r);
            match self.pick(r, &group) {
                Some(id) => {
                    if let Some(t) = self.targets.get_mut(&id) {
                        t.claim(&r.needs);
                    }
                    *self
                        .groups
                        .counts
                        .entry(group.clone())
                        .or_default()
                        .entry(id)
                        .or_default() += 1;
                    self.groups.open.insert(r.id, (group, id));
                    if self.groups.open.len() > MAX_OPEN {
                        self.groups.release_oldest();
                    }
                    out.push(Decision::Assign(id));
                }
                None => out.push(Decision::Reject("no eligible target".into())),
            }
        }
        out
    }

    fn observe(&mut self, outcomes: &[Outcome]) {
        for o in outcomes {
            if let Some((group, target)) = self.groups.open.remove(&o.request) {
                self.groups.release(&group, target);
            }
        }
    }

    fn save_state(&self) -> Vec<u8> {
        serde_json::to_vec(&self.groups).unwrap_or_default()
    }

    fn restore_state(&mut self, state: &[u8]) -> Result<(), PluginError> {
        self.groups = serde_json::from_slice(state).map_err(PluginError::new)?;
        Ok(())
    }
}

#[cfg(all(target_family = "wasm", target_os = "wasi"))]
spear_pdk::export_strategy!(Affinity);
#[cfg(all(target_family = "wasm", target_os = "unknown"))]
spear_pdk::export_extism_strategy!(Affinity);
#[cfg(all(not(target_family = "wasm"), feature = "native-plugin"))]
spear_plugin_api::export_native_strategy!(Affinity);

/// This plugin as a built-in of a host that links this crate (no library file; see
/// `spear_plugin_api::native_module!`).
#[cfg(not(target_family = "wasm"))]
pub fn native_module() -> spear_plugin_api::native::SpearPluginModuleRef {
    spear_plugin_api::native_module!(strategy, Affinity)
}
