//! Where an instance is in its life: the Spearlet redesign's states, as this node keeps them.
//!
//! ```text
//! Initializing → WarmingUp → Ready ⇄ Executing
//!                              ↓ ↑ (idle past spearlet.functions.pause_idle_ms; taken)
//!                        Pausing → Paused
//! Executing → CoolingDown (its executor swapped out) → Terminating
//! any → Error (its runtime failed: stopped at once, the record removed at the next round)
//! Ready, Paused, Error → Terminating (reclaimed, evicted, retired) → removed
//! ```
//!
//! Plugins (reclamation policies) see the states of `spear:plugin@0.1.x`'s `instance-state`,
//! which has no WarmingUp, Pausing, Paused or CoolingDown: [`Phase::for_plugins`] maps them.

use serde::Serialize;
use spear_plugin_api::InstanceState;

/// What a busy instance serves.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Serving {
    /// The invocation's request id, or the execution's id.
    pub request_id: String,
    /// The function invoked (none for an execution).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub function: String,
}

/// Where an instance is in its life. In JSON, `"state"` names it (kebab-case), beside what the
/// state carries (`request_id` and `function` while it serves, `error` in Error).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum Phase {
    /// Reserved for a start: its artifact being fetched and verified.
    Initializing,
    /// Its executor starting its runtime: a component instantiated and its `init` run, a
    /// worker started and its hello awaited.
    WarmingUp,
    /// Idle, and taken by the next invocation of its task.
    Ready,
    /// Serving one invocation (or execution).
    Executing(Serving),
    /// Being paused by its executor: not taken until that is done.
    Pausing,
    /// Paused by its executor: it keeps its memory and state and uses no CPU. Taken (and
    /// resumed) only when its task has no Ready instance.
    Paused,
    /// Serving its last invocation: it stops when that ends (its executor was swapped out).
    CoolingDown(Serving),
    /// Failed: its runtime is stopped, it is never chosen again, and its record goes at the
    /// next reclamation round.
    Error {
        /// Why.
        error: String,
    },
    /// Its runtime being stopped; the record goes when it has stopped.
    Terminating,
}

impl Phase {
    /// The metric label of every phase, in order of life.
    pub const LABELS: [&'static str; 9] = [
        "initializing",
        "warming-up",
        "ready",
        "executing",
        "pausing",
        "paused",
        "cooling-down",
        "error",
        "terminating",
    ];

    /// Its name (as in JSON and metrics).
    pub fn label(&self) -> &'static str {
        let i = match self {
            Self::Initializing => 0,
            Self::WarmingUp => 1,
            Self::Ready => 2,
            Self::Executing(_) => 3,
            Self::Pausing => 4,
            Self::Paused => 5,
            Self::CoolingDown(_) => 6,
            Self::Error { .. } => 7,
            Self::Terminating => 8,
        };
        Self::LABELS[i]
    }

    /// The state plugins see (`spear:plugin@0.1.x` knows six): WarmingUp is `initializing`,
    /// Pausing and Paused are `ready` (idle), CoolingDown is `executing`.
    pub fn for_plugins(&self) -> InstanceState {
        match self {
            Self::Initializing | Self::WarmingUp => InstanceState::Initializing,
            Self::Ready | Self::Pausing | Self::Paused => InstanceState::Ready,
            Self::Executing(_) | Self::CoolingDown(_) => InstanceState::Executing,
            Self::Error { .. } => InstanceState::Error,
            Self::Terminating => InstanceState::Terminating,
        }
    }

    /// In Error.
    pub fn is_error(&self) -> bool {
        matches!(self, Self::Error { .. })
    }

    /// Idle: Ready or Paused (what reclamation, eviction and retirement may stop at once).
    pub fn is_idle(&self) -> bool {
        matches!(self, Self::Ready | Self::Paused)
    }

    /// Serving an invocation.
    pub fn is_busy(&self) -> bool {
        matches!(self, Self::Executing(_) | Self::CoolingDown(_))
    }

    /// Counted among its task's instances that stay (for `spear.min_instances`, warming): not
    /// failed, not leaving.
    pub fn stays(&self) -> bool {
        !matches!(
            self,
            Self::Error { .. } | Self::CoolingDown(_) | Self::Terminating
        )
    }

    /// Counted against its task's instance limit: it runs, or will (leaving ones that still
    /// serve included).
    pub fn holds_place(&self) -> bool {
        !matches!(self, Self::Error { .. } | Self::Terminating)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_names_the_state_beside_what_it_carries() {
        let busy = Phase::Executing(Serving {
            request_id: "r1".into(),
            function: "add".into(),
        });
        assert_eq!(
            serde_json::to_value(&busy).unwrap(),
            serde_json::json!({"state": "executing", "request_id": "r1", "function": "add"})
        );
        assert_eq!(
            serde_json::to_value(Phase::WarmingUp).unwrap(),
            serde_json::json!({"state": "warming-up"})
        );
        let failed = Phase::Error {
            error: "it trapped".into(),
        };
        assert_eq!(
            serde_json::to_value(&failed).unwrap(),
            serde_json::json!({"state": "error", "error": "it trapped"})
        );
        for p in [
            Phase::CoolingDown(Serving::default()),
            Phase::Paused,
            failed,
        ] {
            assert_eq!(
                serde_json::to_value(&p).unwrap()["state"],
                serde_json::json!(p.label())
            );
        }
    }

    #[test]
    fn plugins_see_the_states_of_their_contract() {
        assert_eq!(Phase::Paused.for_plugins(), InstanceState::Ready);
        assert_eq!(Phase::WarmingUp.for_plugins(), InstanceState::Initializing);
        assert_eq!(
            Phase::CoolingDown(Serving::default()).for_plugins(),
            InstanceState::Executing
        );
    }
}
