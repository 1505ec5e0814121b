//! What the shadow evaluation has seen: agreement, failures, latency, and the spread each
//! strategy would give.

use std::collections::{BTreeMap, HashMap, VecDeque};

use serde::Serialize;
use spear_plugin_api::{Decision, Request};
use spear_plugin_runtime::{Decider, PluginRef};
use utoipa::ToSchema;

/// Call latencies kept for the percentiles.
const LATENCIES: usize = 1024;

/// The counters, reset when the shadow (its plugin or configuration) or the active strategy
/// changes.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub plugin: Option<PluginRef>,
    config: String,
    active: Option<PluginRef>,
    pub since_ms: i64,
    pub rounds: u64,
    pub requests: u64,
    pub agreed: u64,
    pub disagreed: u64,
    /// Batches the shadow did not decide, by why (`invalid`, `trap`, `deadline`, …).
    pub failed: BTreeMap<&'static str, u64>,
    /// Requests in those batches.
    pub failed_requests: u64,
    /// Requests in batches whose answer the host refused as invalid.
    pub invalid_decisions: u64,
    pub last_failure: Option<String>,
    /// Rounds not evaluated: the shadow fell behind (its queue was full).
    pub skipped: u64,
    latencies_us: VecDeque<u64>,
    /// Placements per target id, by the active strategy and by the shadow.
    active_load: HashMap<u64, u64>,
    shadow_load: HashMap<u64, u64>,
    /// Node uuids by target id (every node the view holds).
    pub names: HashMap<u64, String>,
}

impl Stats {
    /// Start over if the shadow (plugin or configuration) or the active strategy is not the
    /// one counted for.
    pub fn follow(&mut self, plugins: &spear_plugin_runtime::PluginHost) {
        let shadow = plugins.shadow().status();
        let active = plugins.strategy().active();
        if shadow.plugin == self.plugin && shadow.config == self.config && active == self.active {
            return;
        }
        let names = std::mem::take(&mut self.names);
        *self = Self {
            plugin: shadow.plugin,
            config: shadow.config,
            active,
            since_ms: crate::model::now_ms(),
            names,
            ..Self::default()
        };
    }

    /// The view was rebuilt from `full`: the nodes are those.
    pub fn rebuilt(&mut self, full: &[spear_plugin_api::Target]) {
        self.names = full.iter().map(|t| (t.id, t.name.clone())).collect();
        let names = &self.names;
        self.active_load.retain(|id, _| names.contains_key(id));
        self.shadow_load.retain(|id, _| names.contains_key(id));
    }

    /// One evaluated batch: the active strategy's decisions and the shadow's. Returns how many
    /// agreed and how many did not (both 0 when the shadow did not decide).
    pub fn record(
        &mut self,
        requests: &[Request],
        active: &[Decision],
        shadow: &[Decision],
        decider: &Decider,
        took_us: u64,
    ) -> (u64, u64) {
        self.rounds += 1;
        self.requests += requests.len() as u64;
        if self.latencies_us.len() == LATENCIES {
            self.latencies_us.pop_front();
        }
        self.latencies_us.push_back(took_us);
        if let Some(kind) = decider.failure {
            *self.failed.entry(kind).or_default() += 1;
            self.failed_requests += requests.len() as u64;
            if kind == "invalid" {
                self.invalid_decisions += requests.len() as u64;
            }
            self.last_failure = decider.fallback.clone();
            return (0, 0);
        }
        let before = (self.agreed, self.disagreed);
        for (a, s) in active.iter().zip(shadow) {
            let same = match (a, s) {
                (Decision::Assign(x), Decision::Assign(y)) => x == y,
                (Decision::Reject(_), Decision::Reject(_)) => true,
                _ => false,
            };
            if same {
                self.agreed += 1;
            } else {
                self.disagreed += 1;
            }
            if let Decision::Assign(t) = s {
                *self.shadow_load.entry(*t).or_default() += 1;
            }
            if let Decision::Assign(t) = a {
                *self.active_load.entry(*t).or_default() += 1;
            }
        }
        (self.agreed - before.0, self.disagreed - before.1)
    }

    /// A target is gone.
    pub fn forget(&mut self, id: u64) {
        self.names.remove(&id);
        self.active_load.remove(&id);
        self.shadow_load.remove(&id);
    }

    /// The report.
    pub fn report(&self) -> ShadowReport {
        let mut lat: Vec<u64> = self.latencies_us.iter().copied().collect();
        lat.sort_unstable();
        let pct = |p: f64| -> u64 {
            if lat.is_empty() {
                0
            } else {
                lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)]
            }
        };
        let compared = self.agreed + self.disagreed;
        let mut nodes: Vec<NodeLoad> = self
            .names
            .iter()
            .map(|(id, uuid)| NodeLoad {
                node_uuid: uuid.clone(),
                active: self.active_load.get(id).copied().unwrap_or(0),
                shadow: self.shadow_load.get(id).copied().unwrap_or(0),
            })
            .collect();
        nodes.sort_by(|a, b| a.node_uuid.cmp(&b.node_uuid));
        let cv = |pick: fn(&NodeLoad) -> u64| -> f64 {
            let n = nodes.len() as f64;
            if nodes.is_empty() {
                return 0.0;
            }
            let mean = nodes.iter().map(|x| pick(x) as f64).sum::<f64>() / n;
            if mean == 0.0 {
                return 0.0;
            }
            let var = nodes
                .iter()
                .map(|x| (pick(x) as f64 - mean).powi(2))
                .sum::<f64>()
                / n;
            var.sqrt() / mean
        };
        ShadowReport {
            shadow: self.plugin.as_ref().map(Named::of),
            active: self.active.as_ref().map(Named::of),
            since_ms: self.since_ms,
            rounds: self.rounds,
            requests: self.requests,
            compared,
            agreed: self.agreed,
            agreement_rate: if compared == 0 {
                None
            } else {
                Some(self.agreed as f64 / compared as f64)
            },
            failed_batches: self
                .failed
                .iter()
                .map(|(k, v)| ((*k).to_owned(), *v))
                .collect(),
            failed_requests: self.failed_requests,
            invalid_decisions: self.invalid_decisions,
            last_failure: self.last_failure.clone(),
            skipped_rounds: self.skipped,
            latency_us: Latency {
                calls: lat.len() as u64,
                p50: pct(0.5),
                p99: pct(0.99),
                max: lat.last().copied().unwrap_or(0),
            },
            spread: Spread {
                active_cv: cv(|x| x.active),
                shadow_cv: cv(|x| x.shadow),
                nodes,
            },
        }
    }
}

/// A plugin, named.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Named {
    /// Its name.
    pub name: String,
    /// Its version.
    pub version: String,
    /// Its form.
    pub form: String,
}

impl Named {
    fn of(p: &PluginRef) -> Self {
        Self {
            name: p.name.clone(),
            version: p.version.clone(),
            form: p.form.as_str().to_owned(),
        }
    }
}

/// `GET /api/v1/plugins/shadow`: how the shadow strategy compares with the active one since it
/// was selected.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ShadowReport {
    /// The shadow strategy (none: no `scheduler.shadow`).
    pub shadow: Option<Named>,
    /// The strategy deciding.
    pub active: Option<Named>,
    /// Since when these figures count, ms since the Unix epoch.
    pub since_ms: i64,
    /// Batches evaluated.
    pub rounds: u64,
    /// Requests in them.
    pub requests: u64,
    /// Requests the shadow decided itself, compared with the active strategy's decision.
    pub compared: u64,
    /// Of those, the same decision (the same node, or both rejected).
    pub agreed: u64,
    /// `agreed / compared` (none before any comparison).
    pub agreement_rate: Option<f64>,
    /// Batches the shadow did not decide, by why: `invalid` (an answer the host refused),
    /// `trap`, `deadline`, `memory`, `error`, `quarantined`.
    pub failed_batches: BTreeMap<String, u64>,
    /// Requests in those batches.
    pub failed_requests: u64,
    /// Requests in batches the shadow answered invalidly (decisions it would have made that are
    /// invalid).
    pub invalid_decisions: u64,
    /// The last failure's message.
    pub last_failure: Option<String>,
    /// Rounds not evaluated because the shadow fell behind.
    pub skipped_rounds: u64,
    /// The shadow's time per batch, over its last 1,024 calls.
    pub latency_us: Latency,
    /// Placements per node: the active strategy's real ones and the shadow's predicted ones.
    pub spread: Spread,
}

/// Percentiles of call time, in microseconds.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Latency {
    /// Calls counted.
    pub calls: u64,
    /// Median.
    pub p50: u64,
    /// 99th percentile.
    pub p99: u64,
    /// Longest.
    pub max: u64,
}

/// How evenly each strategy spreads work.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Spread {
    /// Coefficient of variation of the active strategy's placements per node (0: perfectly even).
    pub active_cv: f64,
    /// The same for the shadow's.
    pub shadow_cv: f64,
    /// Each node's placements.
    pub nodes: Vec<NodeLoad>,
}

/// One node's placements.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct NodeLoad {
    /// The node.
    pub node_uuid: String,
    /// Placed there by the active strategy.
    pub active: u64,
    /// Placed there by the shadow (had it decided).
    pub shadow: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(id: u64) -> Request {
        Request {
            id,
            task: "t".into(),
            labels: vec![],
            needs: Default::default(),
            required: vec![],
            preferred: vec![],
        }
    }

    #[test]
    fn agreement_failures_and_spread_are_counted() {
        let mut s = Stats::default();
        s.names.insert(1, "a".into());
        s.names.insert(2, "b".into());
        let reqs: Vec<Request> = (0..4).map(request).collect();
        let active = [1, 2, 1, 2].map(Decision::Assign);
        let shadow = [1, 1, 1, 1].map(Decision::Assign);
        s.record(&reqs, &active, &shadow, &Decider::default(), 10);
        let failed = Decider {
            plugin: None,
            fallback: Some("the strategy plugin failed: invalid".into()),
            failure: Some("invalid"),
        };
        s.record(&reqs, &active, &active, &failed, 30);
        let r = s.report();
        assert_eq!((r.compared, r.agreed), (4, 2));
        assert_eq!(r.agreement_rate, Some(0.5));
        assert_eq!(r.failed_batches["invalid"], 1);
        assert_eq!(r.invalid_decisions, 4);
        assert_eq!(r.latency_us.max, 30);
        assert_eq!(
            r.spread.active_cv, 0.0,
            "2 and 2: the failed batch not counted"
        );
        assert!((r.spread.shadow_cv - 1.0).abs() < 1e-9, "4 and 0");
        s.forget(2);
        assert_eq!(s.report().spread.nodes.len(), 1);
    }
}
