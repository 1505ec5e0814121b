//! `max-age`: a custom reclamation policy. It stops instances in the `error` state, then `ready`
//! instances older than `max_age_ms` (oldest first), so that long-lived instances are recycled even
//! when they are never idle long enough for `idle-time`. It never stops an instance that is
//! executing, initializing or already terminating.
//!
//! Build: `cargo build --release --target wasm32-wasip2 -p max-age`; select it in a Spearlet's
//! config with `[reclaimer] policy = "max-age"` and `[reclaimer.config] max_age_ms = 60000`.

use serde::Deserialize;
use spear_plugin_api::{
    InstanceState, InstanceStats, NodePressure, PluginError, PluginInfo, PluginKind, Reclaimer,
};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default = "default_max_age")]
    max_age_ms: u64,
}

fn default_max_age() -> u64 {
    600_000
}

/// The max-age policy.
#[derive(Debug)]
pub struct MaxAge {
    max_age_ms: u64,
}

impl Default for MaxAge {
    fn default() -> Self {
        Self {
            max_age_ms: default_max_age(),
        }
    }
}

impl Reclaimer for MaxAge {
    fn info(&self) -> PluginInfo {
        PluginInfo {
            name: "max-age".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            kind: PluginKind::ReclamationPolicy,
            description: "Stop error instances, then ready ones older than max_age_ms, oldest first"
                .into(),
            config_schema: r#"{"type":"object","properties":{"max_age_ms":{"type":"integer","minimum":1}},"additionalProperties":false}"#.into(),
        }
    }

    fn configure(&mut self, config: &str) -> Result<(), PluginError> {
        let config: Config = match config.trim() {
            "" | "null" => Config {
                max_age_ms: default_max_age(),
            },
            text => serde_json::from_str(text)
                .map_err(|e| PluginError(format!("invalid configuration: {e}")))?,
        };
        if config.max_age_ms == 0 {
            return Err(PluginError("max_age_ms: must be a positive integer".into()));
        }
        self.max_age_ms = config.max_age_ms;
        Ok(())
    }

    fn select(&mut self, instances: &[InstanceStats], _node: &NodePressure) -> Vec<u64> {
        let mut broken: Vec<&InstanceStats> = instances
            .iter()
            .filter(|i| i.state == InstanceState::Error)
            .collect();
        let mut old: Vec<&InstanceStats> = instances
            .iter()
            .filter(|i| i.state == InstanceState::Ready && i.age_ms >= self.max_age_ms)
            .collect();
        broken.sort_by_key(|i| i.id);
        old.sort_by(|a, b| b.age_ms.cmp(&a.age_ms).then(a.id.cmp(&b.id)));
        broken.into_iter().chain(old).map(|i| i.id).collect()
    }
}

#[cfg(all(target_family = "wasm", target_os = "wasi"))]
spear_pdk::export_reclaimer!(MaxAge);

#[cfg(test)]
mod tests {
    use super::*;

    fn instance(id: u64, state: InstanceState, age_ms: u64) -> InstanceStats {
        InstanceStats {
            id,
            task: "t".into(),
            state,
            idle_ms: 0,
            age_ms,
            memory_bytes: 0,
            invocations: 0,
            errors: 0,
            recent_errors: 0,
            recent_invocations: 0,
        }
    }

    #[test]
    fn broken_first_then_the_oldest_ready_never_busy_ones() {
        let mut p = MaxAge::default();
        p.configure(r#"{"max_age_ms": 1000}"#).unwrap();
        let got = p.select(
            &[
                instance(1, InstanceState::Ready, 1500),
                instance(2, InstanceState::Executing, 9000),
                instance(3, InstanceState::Ready, 999),
                instance(4, InstanceState::Error, 10),
                instance(5, InstanceState::Ready, 5000),
                instance(6, InstanceState::Initializing, 9000),
            ],
            &NodePressure::default(),
        );
        assert_eq!(got, vec![4, 5, 1]);
    }

    #[test]
    fn bad_configs_are_refused_and_the_old_one_stays() {
        let mut p = MaxAge::default();
        p.configure(r#"{"max_age_ms": 5}"#).unwrap();
        assert!(p.configure(r#"{"max_age_ms": 0}"#).is_err());
        assert!(p.configure(r#"{"idle_ms": 5}"#).is_err());
        assert_eq!(p.max_age_ms, 5);
    }
}
