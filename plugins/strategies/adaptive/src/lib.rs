//! `adaptive`: learns from outcomes and places by power-of-two choices.
//!
//! For each target it keeps an exponentially weighted moving average (EWMA) of latency and of the
//! error rate, fed by `observe`. A request samples two distinct eligible targets with a seeded
//! xorshift generator and takes the cheaper, where
//! `cost = ewma_latency_us × (1 + active) ÷ weight × (1 + error_penalty × error_rate)`.
//! Targets never observed cost `initial_latency_us`. Ties go to the lower id, so decisions are
//! reproducible for a given seed. What it learned (and the generator) survives hot reloads.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use spear_plugin_api::{
    Decision, Outcome, PluginError, PluginInfo, PluginKind, Request, Strategy, Target, parse_config,
};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Config {
    /// Weight of a new sample in the averages, in (0, 1].
    alpha: f64,
    /// How much an error rate of 1.0 multiplies the cost by, beyond 1.
    error_penalty: f64,
    /// Latency assumed for a target with no samples.
    initial_latency_us: f64,
    /// Seed of the sampling generator (non-zero).
    seed: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            alpha: 0.3,
            error_penalty: 10.0,
            initial_latency_us: 1000.0,
            seed: 0x5EED,
        }
    }
}

/// What is learned about one target.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
struct Learned {
    latency_us: f64,
    error_rate: f64,
    samples: u64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    learned: BTreeMap<u64, Learned>,
    rng: u64,
    /// The seed `rng` grew from: a restore under another seed restarts the generator.
    #[serde(default)]
    seed: u64,
}

/// The adaptive strategy.
#[derive(Debug, Default)]
pub struct Adaptive {
    config: Config,
    targets: BTreeMap<u64, Target>,
    state: State,
}

impl Adaptive {
    fn next_random(&mut self) -> u64 {
        // xorshift64*: small, fast, and identical on every target architecture.
        let mut x = if self.state.rng == 0 {
            self.config.seed.max(1)
        } else {
            self.state.rng
        };
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.state.rng = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn cost(&self, t: &Target) -> f64 {
        let learned = self.state.learned.get(&t.id);
        let latency = learned.map_or(self.config.initial_latency_us, |l| l.latency_us);
        let error_rate = learned.map_or(0.0, |l| l.error_rate);
        latency * (1.0 + f64::from(t.active)) / f64::from(t.weight.max(1))
            * (1.0 + self.config.error_penalty * error_rate)
    }

    fn pick(&mut self, r: &Request) -> Option<u64> {
        let eligible: Vec<u64> = self
            .targets
            .values()
            .filter(|t| r.fits(t))
            .map(|t| t.id)
            .collect();
        match eligible.len() {
            0 => None,
            1 => Some(eligible[0]),
            n => {
                let n64 = n as u64;
                let i = (self.next_random() % n64) as usize;
                let mut j = (self.next_random() % (n64 - 1)) as usize;
                if j >= i {
                    j += 1;
                }
                let (a, b) = (eligible[i], eligible[j]);
                let (ca, cb) = (self.cost(&self.targets[&a]), self.cost(&self.targets[&b]));
                Some(if ca < cb || (ca == cb && a < b) { a } else { b })
            }
        }
    }
}

impl Strategy for Adaptive {
    fn info(&self) -> PluginInfo {
        PluginInfo {
            name: "adaptive".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            kind: PluginKind::SchedulingStrategy,
            description: "EWMA latency and error rate with power-of-two choices".into(),
            config_schema: r#"{"type":"object","additionalProperties":false,"properties":{"alpha":{"type":"number"},"error_penalty":{"type":"number"},"initial_latency_us":{"type":"number"},"seed":{"type":"integer"}}}"#.into(),
        }
    }

    fn configure(&mut self, config: &str) -> Result<(), PluginError> {
        let config: Config = parse_config(config)?;
        if !(config.alpha > 0.0 && config.alpha <= 1.0) {
            return Err(PluginError::new("alpha must be in (0, 1]"));
        }
        if config.error_penalty < 0.0 || config.initial_latency_us <= 0.0 {
            return Err(PluginError::new(
                "error_penalty must be >= 0 and initial_latency_us > 0",
            ));
        }
        self.state.seed = config.seed;
        self.config = config;
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
            self.state.learned.remove(id);
        }
    }

    fn place(&mut self, requests: &[Request]) -> Vec<Decision> {
        requests
            .iter()
            .map(|r| match self.pick(r) {
                Some(id) => {
                    if let Some(t) = self.targets.get_mut(&id) {
                        t.claim(&r.needs);
                    }
                    Decision::Assign(id)
                }
                None => Decision::Reject("no eligible target".into()),
            })
            .collect()
    }

    fn observe(&mut self, outcomes: &[Outcome]) {
        let alpha = self.config.alpha;
        for o in outcomes {
            let error = if o.success { 0.0 } else { 1.0 };
            let latency = o.latency_us as f64;
            self.state
                .learned
                .entry(o.target)
                .and_modify(|l| {
                    l.latency_us += alpha * (latency - l.latency_us);
                    l.error_rate += alpha * (error - l.error_rate);
                    l.samples += 1;
                })
                .or_insert(Learned {
                    latency_us: latency,
                    error_rate: error,
                    samples: 1,
                });
        }
    }

    fn save_state(&self) -> Vec<u8> {
        serde_json::to_vec(&self.state).unwrap_or_default()
    }

    fn restore_state(&mut self, state: &[u8]) -> Result<(), PluginError> {
        let mut state: State = serde_json::from_slice(state).map_err(PluginError::new)?;
        if state.seed != self.config.seed {
            // The operator changed the seed: keep what was learned, restart the generator.
            state.rng = 0;
            state.seed = self.config.seed;
        }
        self.state = state;
        Ok(())
    }
}

#[cfg(all(target_family = "wasm", target_os = "wasi"))]
spear_pdk::export_strategy!(Adaptive);
#[cfg(all(target_family = "wasm", target_os = "unknown"))]
spear_pdk::export_extism_strategy!(Adaptive);
#[cfg(all(not(target_family = "wasm"), feature = "native-plugin"))]
spear_plugin_api::export_native_strategy!(Adaptive);

/// This plugin as a built-in of a host that links this crate (no library file; see
/// `spear_plugin_api::native_module!`).
#[cfg(not(target_family = "wasm"))]
pub fn native_module() -> spear_plugin_api::native::SpearPluginModuleRef {
    spear_plugin_api::native_module!(strategy, Adaptive)
}
