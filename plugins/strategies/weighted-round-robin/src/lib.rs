//! `weighted-round-robin`: eligible targets in turn, each as often as its weight says.
//!
//! Smooth weighted round-robin (as nginx's upstreams): for each request every eligible target's
//! running score grows by its weight, the highest score wins (ties: the lower id) and loses the sum
//! of the eligible weights. Over any stretch where the eligible set holds still, a target of weight
//! 3 gets three requests for every one of a target of weight 1, interleaved rather than in runs.
//!
//! A target's weight comes from (config `weight_by`):
//! - `"label"` (the default): the value of its label `label` (default `weight`), a whole number
//!   from 0 to 1,000,000; a target without it, or with a value that is not such a number, weighs
//!   `default_weight` (default 1);
//! - `"cpu"` or `"memory"`: its capacity in that resource (thousandths of a core, MiB), capped at
//!   1,000,000.
//!
//! A target of weight 0 takes nothing. The scores survive hot reloads through `save-state`.

use std::collections::BTreeMap;

use serde::Deserialize;
use spear_plugin_api::{
    Decision, PluginError, PluginInfo, PluginKind, Request, Strategy, Target, parse_config,
};

/// The largest weight a target can have (keeps every score far from overflow).
pub const MAX_WEIGHT: u64 = 1_000_000;

/// Where a target's weight comes from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum WeightBy {
    /// A label of the target.
    #[default]
    Label,
    /// Its CPU capacity.
    Cpu,
    /// Its memory capacity.
    Memory,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Config {
    weight_by: WeightBy,
    label: String,
    default_weight: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            weight_by: WeightBy::Label,
            label: "weight".into(),
            default_weight: 1,
        }
    }
}

/// The weighted round-robin strategy.
#[derive(Debug, Default)]
pub struct WeightedRoundRobin {
    config: Config,
    /// Each target with its weight under the current config.
    targets: BTreeMap<u64, (Target, u64)>,
    /// Running score of each target that has been eligible (absent: 0).
    scores: BTreeMap<u64, i64>,
}

impl WeightedRoundRobin {
    fn weight_of(&self, t: &Target) -> u64 {
        let w = match self.config.weight_by {
            WeightBy::Label => t
                .labels
                .iter()
                .find(|l| l.key == self.config.label)
                .and_then(|l| l.value.trim().parse::<u64>().ok())
                .filter(|w| *w <= MAX_WEIGHT)
                .unwrap_or(self.config.default_weight),
            WeightBy::Cpu => t.capacity.cpu_millis,
            WeightBy::Memory => t.capacity.memory_mb,
        };
        w.min(MAX_WEIGHT)
    }

    fn pick(&mut self, request: &Request) -> Option<u64> {
        let mut total: i64 = 0;
        let mut best: Option<(i64, u64)> = None;
        for (id, (t, w)) in &self.targets {
            if *w == 0 || !request.fits(t) {
                continue;
            }
            let w = *w as i64;
            let score = self.scores.entry(*id).or_insert(0);
            *score += w;
            total += w;
            if best.is_none_or(|(s, _)| *score > s) {
                best = Some((*score, *id));
            }
        }
        let (_, id) = best?;
        if let Some(s) = self.scores.get_mut(&id) {
            *s -= total;
        }
        Some(id)
    }
}

impl Strategy for WeightedRoundRobin {
    fn info(&self) -> PluginInfo {
        PluginInfo {
            name: "weighted-round-robin".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            kind: PluginKind::SchedulingStrategy,
            description: "Eligible targets in turn, in proportion to their weights (smooth weighted round-robin)".into(),
            config_schema: r#"{"type":"object","additionalProperties":false,"properties":{"weight_by":{"enum":["label","cpu","memory"]},"label":{"type":"string"},"default_weight":{"type":"integer","minimum":0,"maximum":1000000}}}"#.into(),
        }
    }

    fn configure(&mut self, config: &str) -> Result<(), PluginError> {
        let config: Config = parse_config(config)?;
        if config.default_weight > MAX_WEIGHT {
            return Err(PluginError::new(format!(
                "default_weight must be at most {MAX_WEIGHT}"
            )));
        }
        if config.weight_by == WeightBy::Label && config.label.is_empty() {
            return Err(PluginError::new("label must not be empty"));
        }
        self.config = config;
        // Weights under the new config.
        let targets = std::mem::take(&mut self.targets);
        self.upsert(targets.into_values().map(|(t, _)| t).collect());
        Ok(())
    }

    fn upsert(&mut self, targets: Vec<Target>) {
        for t in targets {
            let w = self.weight_of(&t);
            self.targets.insert(t.id, (t, w));
        }
    }

    fn remove(&mut self, ids: &[u64]) {
        for id in ids {
            self.targets.remove(id);
            self.scores.remove(id);
        }
    }

    fn place(&mut self, requests: &[Request]) -> Vec<Decision> {
        requests
            .iter()
            .map(|r| match self.pick(r) {
                Some(id) => {
                    if let Some((t, _)) = self.targets.get_mut(&id) {
                        t.claim(&r.needs);
                    }
                    Decision::Assign(id)
                }
                None => Decision::Reject("no eligible target of non-zero weight".into()),
            })
            .collect()
    }

    fn save_state(&self) -> Vec<u8> {
        serde_json::to_vec(&self.scores).unwrap_or_default()
    }

    fn restore_state(&mut self, state: &[u8]) -> Result<(), PluginError> {
        let scores: BTreeMap<u64, i64> = serde_json::from_slice(state).map_err(PluginError::new)?;
        // A score out of the range a run can reach is not ours: refuse it rather than overflow.
        let bound = MAX_WEIGHT * 1_000_000;
        if scores.values().any(|s| s.unsigned_abs() > bound) {
            return Err(PluginError::new("a saved score is out of range"));
        }
        self.scores = scores;
        Ok(())
    }
}

#[cfg(all(target_family = "wasm", target_os = "wasi"))]
spear_pdk::export_strategy!(WeightedRoundRobin);
#[cfg(all(target_family = "wasm", target_os = "unknown"))]
spear_pdk::export_extism_strategy!(WeightedRoundRobin);
#[cfg(all(not(target_family = "wasm"), feature = "native-plugin"))]
spear_plugin_api::export_native_strategy!(WeightedRoundRobin);

/// This plugin as a built-in of a host that links this crate (no library file; see
/// `spear_plugin_api::native_module!`).
#[cfg(not(target_family = "wasm"))]
pub fn native_module() -> spear_plugin_api::native::SpearPluginModuleRef {
    spear_plugin_api::native_module!(strategy, WeightedRoundRobin)
}

#[cfg(test)]
mod tests {
    use spear_plugin_api::{Label, Resources};

    use super::*;

    fn target(id: u64, weight: &str) -> Target {
        Target {
            id,
            name: format!("n{id}"),
            labels: vec![Label::new("weight", weight)],
            capacity: Resources::default(),
            available: Resources::default(),
            active: 0,
            weight: 1,
            healthy: true,
        }
    }

    fn request(id: u64) -> Request {
        Request {
            id,
            task: "t".into(),
            labels: vec![],
            needs: Resources::default(),
            required: vec![],
            preferred: vec![],
        }
    }

    fn picks(s: &mut WeightedRoundRobin, n: u64) -> Vec<u64> {
        let reqs: Vec<Request> = (0..n).map(request).collect();
        s.place(&reqs)
            .into_iter()
            .map(|d| match d {
                Decision::Assign(t) => t,
                Decision::Reject(why) => panic!("rejected: {why}"),
            })
            .collect()
    }

    #[test]
    fn shares_follow_weights_interleaved() {
        let mut s = WeightedRoundRobin::default();
        s.configure("{}").unwrap();
        s.upsert(vec![target(1, "3"), target(2, "1"), target(3, "0")]);
        // nginx's smooth sequence for weights 3:1.
        assert_eq!(picks(&mut s, 8), vec![1, 1, 2, 1, 1, 1, 2, 1]);
    }

    #[test]
    fn a_malformed_label_weighs_the_default() {
        let mut s = WeightedRoundRobin::default();
        s.configure(r#"{"default_weight": 2}"#).unwrap();
        s.upsert(vec![target(1, "lots"), target(2, "1")]);
        let got = picks(&mut s, 300);
        assert_eq!(got.iter().filter(|t| **t == 1).count(), 200);
        assert!(s.configure(r#"{"default_weight": 1000001}"#).is_err());
        assert!(s.configure(r#"{"weight_by": "disk"}"#).is_err());
    }

    #[test]
    fn only_zero_weights_reject() {
        let mut s = WeightedRoundRobin::default();
        s.upsert(vec![target(1, "0")]);
        assert!(matches!(s.place(&[request(1)])[0], Decision::Reject(_)));
    }
}
