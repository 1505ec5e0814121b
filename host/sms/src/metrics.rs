//! SMS's histograms on `/metrics` (registered in the plugin runtime's registry, beside the plugin
//! metrics): storage commits, and the scheduler's rounds and placements.

use prometheus::{
    Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

/// The histograms.
#[derive(Debug, Clone)]
pub struct SmsMetrics {
    /// `sms_storage_commit_seconds`: how long each storage commit took to be durable.
    pub commit_seconds: Histogram,
    /// `sms_storage_commit_writes`: writes combined into each commit (group commit).
    pub commit_writes: Histogram,
    /// `sms_placement_seconds`: from an execution's submission (or the end of a retry's
    /// back-off) to its assignment, waits for dependencies included.
    pub placement_seconds: Histogram,
    /// `sms_round_placements`: executions placed by each scheduling round that placed any.
    pub round_placements: Histogram,
    /// `sms_leader`: 1 while this SMS leads (always, without `[ha]`: a lone SMS leads).
    pub leader: IntGauge,
    /// `sms_leader_term`: the election term this SMS leads in (the revision of its election
    /// key on etcd; 0 without an election).
    pub leader_term: IntGauge,
    /// `sms_deadline_misses_total`: executions not finished by their deadline
    /// ([`crate::deadlines`]).
    pub deadline_misses: IntCounter,
    /// `sms_shadow_decisions_total{result}`: the shadow strategy's decisions, `agreed` or
    /// `disagreed` with the active one's, or `failed` (it did not decide: [`crate::shadow`]).
    pub shadow_decisions: IntCounterVec,
    /// `sms_shadow_call_seconds`: how long each of the shadow strategy's batches took.
    pub shadow_call_seconds: Histogram,
    /// `sms_preemptions_total{result}`: running executions preempted (`preempted`), and
    /// preemptions left undone because the minute's budget was spent (`over_budget`)
    /// ([`crate::preempt`]).
    pub preemptions: IntCounterVec,
    /// `sms_autoscaler_nodes{state}`: the autoscaler's managed nodes, `starting`, `serving` or
    /// `draining` ([`crate::autoscale`]).
    pub autoscaler_nodes: IntGaugeVec,
    /// `sms_autoscaler_desired`: the pool size of the autoscaling policy's last valid answer.
    pub autoscaler_desired: IntGauge,
    /// `sms_autoscaler_actions_total{action,result}`: the provider's runs, `start` or `stop`,
    /// `ok` or `failed`.
    pub autoscaler_actions: IntCounterVec,
}

fn histogram(name: &str, help: &str, buckets: Vec<f64>) -> Histogram {
    Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))
        .expect("a valid histogram")
}

impl Default for SmsMetrics {
    fn default() -> Self {
        let powers = |from: f64, n: usize| (0..n).map(|i| from * 2f64.powi(i as i32)).collect();
        Self {
            commit_seconds: histogram(
                "sms_storage_commit_seconds",
                "Time for a storage commit to be durable",
                powers(0.000_25, 14),
            ),
            commit_writes: histogram(
                "sms_storage_commit_writes",
                "Writes combined into one storage commit",
                powers(1.0, 13),
            ),
            placement_seconds: histogram(
                "sms_placement_seconds",
                "From submission (or a retry's back-off end) to assignment",
                powers(0.001, 17),
            ),
            round_placements: histogram(
                "sms_round_placements",
                "Executions placed by a scheduling round that placed any",
                powers(1.0, 10),
            ),
            leader: IntGauge::new("sms_leader", "1 while this SMS leads").expect("a valid gauge"),
            leader_term: IntGauge::new(
                "sms_leader_term",
                "The election term this SMS leads in (0 without an election)",
            )
            .expect("a valid gauge"),
            deadline_misses: IntCounter::new(
                "sms_deadline_misses_total",
                "Executions not finished by their deadline",
            )
            .expect("a valid counter"),
            preemptions: IntCounterVec::new(
                Opts::new(
                    "sms_preemptions_total",
                    "Running executions preempted for higher-priority work, and preemptions left \
                     undone for the budget",
                ),
                &["result"],
            )
            .expect("a valid counter"),
            autoscaler_nodes: IntGaugeVec::new(
                Opts::new(
                    "sms_autoscaler_nodes",
                    "The autoscaler's managed nodes: starting, serving or draining",
                ),
                &["state"],
            )
            .expect("a valid gauge"),
            autoscaler_desired: IntGauge::new(
                "sms_autoscaler_desired",
                "The pool size of the autoscaling policy's last valid answer",
            )
            .expect("a valid gauge"),
            autoscaler_actions: IntCounterVec::new(
                Opts::new(
                    "sms_autoscaler_actions_total",
                    "The autoscaler provider's runs (start, stop) and their result (ok, failed)",
                ),
                &["action", "result"],
            )
            .expect("a valid counter"),
            shadow_decisions: IntCounterVec::new(
                Opts::new(
                    "sms_shadow_decisions_total",
                    "The shadow strategy's decisions: agreed, disagreed with the active one's, or failed",
                ),
                &["result"],
            )
            .expect("a valid counter"),
            shadow_call_seconds: histogram(
                "sms_shadow_call_seconds",
                "Time of each batch the shadow strategy decided",
                powers(0.000_01, 18),
            ),
        }
    }
}

impl SmsMetrics {
    /// Register every histogram in `registry` (one already there is left as it is).
    pub fn register(&self, registry: &Registry) {
        for h in [
            &self.commit_seconds,
            &self.commit_writes,
            &self.placement_seconds,
            &self.round_placements,
            &self.shadow_call_seconds,
        ] {
            let _ = registry.register(Box::new(h.clone()));
        }
        for g in [&self.leader, &self.leader_term] {
            let _ = registry.register(Box::new(g.clone()));
        }
        let _ = registry.register(Box::new(self.deadline_misses.clone()));
        let _ = registry.register(Box::new(self.shadow_decisions.clone()));
        let _ = registry.register(Box::new(self.preemptions.clone()));
        let _ = registry.register(Box::new(self.autoscaler_nodes.clone()));
        let _ = registry.register(Box::new(self.autoscaler_desired.clone()));
        let _ = registry.register(Box::new(self.autoscaler_actions.clone()));
    }
}
