//! Deadlines: an execution may say by when it must have finished (`deadline`) and how long a run
//! takes (`estimate_ms`).
//!
//! - **At submit** a deadline is read from RFC 3339 text or milliseconds since the Unix epoch. One
//!   that cannot be met — `now + estimate_ms` is past it — is refused, or accepted and flagged
//!   (`deadline_infeasible`), as `[deadlines] infeasible` says.
//! - **In the queue** ([`crate::table`]) an execution with a deadline counts as waiting since its
//!   *latest start* (`deadline − estimate_ms`) less `urgency_window_ms`, not since its submission:
//!   among executions of one priority the earliest latest start goes first (earliest deadline
//!   first, by laxity), one is level with fresh work `urgency_window_ms` before its latest start,
//!   and every [`AGING_MS`](crate::table::AGING_MS) nearer its latest start weighs one more
//!   priority level, as waiting does for any execution.
//! - **A miss** — not finished by its deadline — is recorded once: the execution's
//!   `deadline_missed`, the event `execution.deadline_missed`, and `sms_deadline_misses_total`.
//!   One still queued or running is found by the housekeeping's index when the deadline passes;
//!   one that finishes late is marked in the same write as its end. The execution itself goes on
//!   (a deadline orders work; a `queue_timeout_ms` or `timeout_ms` ends it).

use serde::{Deserialize, Serialize};
use spear_config::Problems;
use utoipa::ToSchema;

use crate::error::{Result, SmsError};

/// The furthest a deadline may be, from its submission (a year).
pub const MAX_AHEAD_MS: i64 = 365 * 86_400_000;

/// The widest urgency window (a day).
const MAX_WINDOW_MS: u64 = 86_400_000;

/// What a submission whose deadline cannot be met gets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Infeasible {
    /// A 400 naming `deadline`.
    #[default]
    Refuse,
    /// Accepted, with `deadline_infeasible` set (and in its `execution.submitted` event).
    Flag,
}

/// `[deadlines]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct DeadlineConfig {
    /// What a deadline that cannot be met gets.
    pub infeasible: Infeasible,
    /// How long before its latest start an execution with a deadline is level with fresh work
    /// (0 to 86,400,000 ms; 0: ordered by latest start alone).
    pub urgency_window_ms: u64,
}

impl Default for DeadlineConfig {
    fn default() -> Self {
        Self {
            infeasible: Infeasible::Refuse,
            urgency_window_ms: 30_000,
        }
    }
}

impl DeadlineConfig {
    /// Add a problem for each key out of range.
    pub fn validate(&self, problems: &mut Problems) {
        if self.urgency_window_ms > MAX_WINDOW_MS {
            problems.invalid(
                "deadlines.urgency_window_ms",
                format!("must be at most {MAX_WINDOW_MS} (a day)"),
            );
        }
    }
}

/// A deadline as a request writes it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum Deadline {
    /// Milliseconds since the Unix epoch.
    Millis(i64),
    /// RFC 3339, e.g. `2026-12-01T12:00:00Z` or `2026-12-01T13:00:00+01:00`.
    Text(String),
}

impl Deadline {
    /// Milliseconds since the Unix epoch.
    pub fn millis(&self) -> Result<i64> {
        match self {
            Self::Millis(ms) if *ms <= 0 => Err(SmsError::invalid(
                "deadline",
                format!("{ms} is not after the Unix epoch"),
            )),
            Self::Millis(ms) => Ok(*ms),
            Self::Text(text) => {
                let at = time::OffsetDateTime::parse(
                    text.trim(),
                    &time::format_description::well_known::Rfc3339,
                )
                .map_err(|e| {
                    SmsError::invalid(
                        "deadline",
                        format!("`{text}` is neither RFC 3339 nor milliseconds since the Unix epoch: {e}"),
                    )
                })?;
                i64::try_from(at.unix_timestamp_nanos() / 1_000_000)
                    .ok()
                    .filter(|ms| *ms > 0)
                    .ok_or_else(|| SmsError::invalid("deadline", "not after the Unix epoch"))
            }
        }
    }
}

/// Check a submission's deadline at `now`; whether it is infeasible (only under
/// [`Infeasible::Flag`]: under `Refuse` that is an error).
pub fn check(
    config: &DeadlineConfig,
    now: i64,
    deadline_ms: i64,
    estimate_ms: u64,
) -> Result<bool> {
    if deadline_ms > now.saturating_add(MAX_AHEAD_MS) {
        return Err(SmsError::invalid(
            "deadline",
            "at most a year ahead".to_owned(),
        ));
    }
    let earliest_end = now.saturating_add(i64::try_from(estimate_ms).unwrap_or(i64::MAX));
    if earliest_end <= deadline_ms {
        return Ok(false);
    }
    match config.infeasible {
        Infeasible::Flag => Ok(true),
        Infeasible::Refuse => Err(SmsError::invalid(
            "deadline",
            if deadline_ms <= now {
                format!("already past ({} ms ago)", now.saturating_sub(deadline_ms))
            } else {
                format!(
                    "cannot be met: it is {} ms away and the run is estimated at {estimate_ms} ms (estimate_ms)",
                    deadline_ms - now
                )
            },
        )),
    }
}

/// When an execution with `deadline_ms` (0: none) counts as waiting since in the queue, given
/// it became placeable at `since` (see the module docs). Never more than the window before
/// `since`: a deadline already past (accepted under `flag`) does not jump the queue further.
pub fn queue_since(since: i64, deadline_ms: i64, estimate_ms: u64, window_ms: u64) -> i64 {
    if deadline_ms <= 0 {
        return since;
    }
    let estimate = i64::try_from(estimate_ms).unwrap_or(i64::MAX);
    let window = i64::try_from(window_ms).unwrap_or(i64::MAX);
    deadline_ms
        .saturating_sub(estimate)
        .saturating_sub(window)
        .max(since.saturating_sub(window))
}

/// How late `exec` finished (ms) when it has just finished past its deadline with no miss
/// recorded yet.
pub fn finished_late(exec: &crate::model::Execution) -> Option<i64> {
    (exec.state.is_terminal()
        && exec.deadline_ms > 0
        && !exec.deadline_missed
        && exec.updated_at_ms > exec.deadline_ms)
        .then(|| exec.updated_at_ms - exec.deadline_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_read_from_text_or_millis() {
        assert_eq!(Deadline::Millis(5).millis().unwrap(), 5);
        let z = Deadline::Text("2026-12-01T12:00:00Z".into())
            .millis()
            .unwrap();
        let plus = Deadline::Text("2026-12-01T13:00:00+01:00".into())
            .millis()
            .unwrap();
        assert_eq!(z, plus);
        assert_eq!(z, 1_796_126_400_000);
        assert!(Deadline::Millis(0).millis().is_err());
        assert!(Deadline::Millis(i64::MIN).millis().is_err());
        assert!(
            Deadline::Text("1969-12-31T00:00:00Z".into())
                .millis()
                .is_err()
        );
        let bad = Deadline::Text("tomorrow".into()).millis().unwrap_err();
        assert!(bad.to_string().contains("deadline"), "{bad}");
    }

    #[test]
    fn infeasible_deadlines_are_refused_or_flagged() {
        let refuse = DeadlineConfig::default();
        let flag = DeadlineConfig {
            infeasible: Infeasible::Flag,
            ..refuse
        };
        assert!(
            !check(&refuse, 1_000, 2_000, 1_000).unwrap(),
            "just in time"
        );
        let e = check(&refuse, 1_000, 2_000, 1_001).unwrap_err();
        assert!(e.to_string().contains("estimate_ms"), "{e}");
        assert!(
            check(&refuse, 1_000, 999, 0)
                .unwrap_err()
                .to_string()
                .contains("past")
        );
        assert!(check(&flag, 1_000, 999, 0).unwrap());
        assert!(check(&flag, 0, MAX_AHEAD_MS + 1, 0).is_err(), "too far");
    }

    #[test]
    fn the_config_is_checked_by_key() {
        let parse = crate::config::SmsConfig::parse;
        let ok = parse("[deadlines]\ninfeasible = \"flag\"\nurgency_window_ms = 0\n").unwrap();
        assert_eq!(ok.deadlines.infeasible, Infeasible::Flag);
        for (text, key) in [
            (
                "[deadlines]\nurgency_window_ms = 86400001\n",
                "deadlines.urgency_window_ms",
            ),
            (
                "[deadlines]\ninfeasible = \"maybe\"\n",
                "deadlines.infeasible",
            ),
            ("[deadlines]\nwindow = 5\n", "deadlines.window"),
        ] {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.contains(key), "{key} in {e}");
        }
    }

    #[test]
    fn the_queue_orders_by_latest_start_less_the_window() {
        assert_eq!(queue_since(100, 0, 50, 30), 100, "no deadline");
        assert_eq!(queue_since(100, 1_000, 200, 300), 500);
        assert_eq!(
            queue_since(100, 1_000, u64::MAX, 300),
            -200,
            "a past latest start: at most the window ahead"
        );
        assert_eq!(
            queue_since(i64::MIN, 1, u64::MAX, u64::MAX),
            i64::MIN,
            "saturates"
        );
    }
}
