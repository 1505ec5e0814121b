//! `pack-rust`: the example strategy of `examples/README.md`, written against `spear-plugin-api`
//! and exported as a WASM component by `spear-pdk`.
//!
//! Each request goes to the eligible target with the *most* active work (ties: the lowest id), so
//! work packs onto busy targets and leaves the others free to be drained or scaled down.
//! `max_active` caps how much a target takes.

use std::collections::BTreeMap;

use serde_json::Value;
use spear_plugin_api::{Decision, PluginError, PluginInfo, PluginKind, Request, Strategy, Target};

/// The JSON Schema of the configuration, as `info` reports it.
pub const CONFIG_SCHEMA: &str = r#"{"type":"object","properties":{"max_active":{"type":"integer","minimum":1}},"additionalProperties":false}"#;

/// The packing strategy. `name` is what configs select; the native example reuses the type under
/// another name.
#[derive(Debug)]
pub struct Pack {
    name: &'static str,
    targets: BTreeMap<u64, Target>,
    max_active: Option<u32>,
}

impl Default for Pack {
    fn default() -> Self {
        Self::named("pack-rust")
    }
}

impl Pack {
    /// A packing strategy that calls itself `name`.
    pub fn named(name: &'static str) -> Self {
        Self {
            name,
            targets: BTreeMap::new(),
            max_active: None,
        }
    }
}

/// Read `{"max_active": N}`; the errors name the problem.
fn parse(config: &str) -> Result<Option<u32>, String> {
    let value: Value = match config.trim() {
        "" | "null" => return Ok(None),
        text => serde_json::from_str(text).map_err(|e| format!("config is not JSON: {e}"))?,
    };
    let Value::Object(map) = value else {
        return Err("config must be a JSON object".into());
    };
    let mut max_active = None;
    for (key, value) in map {
        match key.as_str() {
            "max_active" => match value.as_u64().and_then(|n| u32::try_from(n).ok()) {
                Some(n) if n > 0 => max_active = Some(n),
                _ => return Err("max_active: must be a positive integer".into()),
            },
            other => return Err(format!("unknown key `{other}`")),
        }
    }
    Ok(max_active)
}

impl Strategy for Pack {
    fn info(&self) -> PluginInfo {
        PluginInfo {
            name: self.name.into(),
            version: env!("CARGO_PKG_VERSION").into(),
            kind: PluginKind::SchedulingStrategy,
            description: "Packing: the busiest target that fits first, up to max_active".into(),
            config_schema: CONFIG_SCHEMA.into(),
        }
    }

    fn configure(&mut self, config: &str) -> Result<(), PluginError> {
        self.max_active = parse(config).map_err(PluginError)?;
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
        }
    }

    fn place(&mut self, requests: &[Request]) -> Vec<Decision> {
        requests
            .iter()
            .map(|r| {
                let below_cap = |t: &Target| self.max_active.is_none_or(|max| t.active < max);
                // Most active first; among equals the lowest id (the map iterates ids upwards and
                // `max_by_key` keeps the last maximum, so compare on the reversed id too).
                let chosen = self
                    .targets
                    .values()
                    .filter(|t| r.fits(t) && below_cap(t))
                    .max_by_key(|t| (t.active, std::cmp::Reverse(t.id)))
                    .map(|t| t.id);
                match chosen.and_then(|id| self.targets.get_mut(&id)) {
                    Some(t) => {
                        t.claim(&r.needs);
                        Decision::Assign(t.id)
                    }
                    None => Decision::Reject("no target fits".into()),
                }
            })
            .collect()
    }
}

#[cfg(all(target_family = "wasm", target_os = "wasi"))]
spear_pdk::export_strategy!(Pack);

#[cfg(test)]
mod tests {
    use super::*;
    use spear_plugin_api::{Label, Resources};

    fn target(id: u64, active: u32) -> Target {
        Target {
            id,
            name: format!("t{id}"),
            labels: vec![Label::new(
                "zone",
                if id.is_multiple_of(2) { "a" } else { "b" },
            )],
            capacity: Resources {
                cpu_millis: 4000,
                memory_mb: 4096,
                disk_mb: 0,
            },
            available: Resources {
                cpu_millis: 4000,
                memory_mb: 4096,
                disk_mb: 0,
            },
            active,
            weight: 1,
            healthy: true,
        }
    }

    fn request(id: u64) -> Request {
        Request {
            id,
            task: "t".into(),
            labels: vec![],
            needs: Resources {
                cpu_millis: 1500,
                memory_mb: 0,
                disk_mb: 0,
            },
            required: vec![],
            preferred: vec![],
        }
    }

    #[test]
    fn packs_the_busiest_then_spills_at_the_cap_and_the_cpu() {
        let mut p = Pack::default();
        p.configure(r#"{"max_active": 3}"#).unwrap();
        p.upsert(vec![target(1, 0), target(2, 1), target(3, 1)]);
        let got = p.place(&(0..6).map(request).collect::<Vec<_>>());
        use Decision::Assign;
        // 2 is busiest (tie with 3: lowest id) until the cap of 3, then 3 likewise; then 1 takes
        // two, and its last 1000 cpu-millis fit no 1500-millis request.
        assert_eq!(
            got,
            vec![
                Assign(2),
                Assign(2),
                Assign(3),
                Assign(3),
                Assign(1),
                Assign(1)
            ]
        );
        assert_eq!(
            p.place(&[request(7)]),
            vec![Decision::Reject("no target fits".into())]
        );
    }

    #[test]
    fn required_labels_and_health_are_hard_rules() {
        let mut p = Pack::default();
        let mut sick = target(4, 9);
        sick.healthy = false;
        p.upsert(vec![target(1, 0), target(2, 5), sick]);
        let mut r = request(1);
        r.required = vec![Label::new("zone", "b")];
        assert_eq!(p.place(&[r]), vec![Decision::Assign(1)]);
    }

    #[test]
    fn bad_configs_are_refused_by_name_and_the_old_one_stays() {
        let mut p = Pack::default();
        p.configure(r#"{"max_active": 1}"#).unwrap();
        for (bad, why) in [
            ("[1]", "config must be a JSON object"),
            (
                r#"{"max_active": 0}"#,
                "max_active: must be a positive integer",
            ),
            (
                r#"{"max_active": "2"}"#,
                "max_active: must be a positive integer",
            ),
            (r#"{"spread": true}"#, "unknown key `spread`"),
        ] {
            assert_eq!(p.configure(bad).unwrap_err().0, why);
        }
        assert_eq!(p.max_active, Some(1));
    }
}
