//! A repeating failure logged once per burst: the first occurrence at `warn`, then nothing until
//! the burst's window has passed, when the next occurrence is logged with the count suppressed.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// One kind of repeating failure (`accept`, `storage write`, …).
#[derive(Debug)]
pub struct Burst {
    what: &'static str,
    window: Duration,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    logged_at: Option<Instant>,
    suppressed: u64,
}

impl Burst {
    /// Log `what` failures at most once per `window`.
    pub const fn new(what: &'static str, window: Duration) -> Self {
        Self {
            what,
            window,
            state: Mutex::new(State {
                logged_at: None,
                suppressed: 0,
            }),
        }
    }

    /// A failure happened; returns whether it was logged.
    pub fn failed(&self, error: &dyn std::fmt::Display) -> bool {
        let now = Instant::now();
        let suppressed = {
            let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
            if s.logged_at
                .is_some_and(|t| now.duration_since(t) < self.window)
            {
                s.suppressed += 1;
                return false;
            }
            s.logged_at = Some(now);
            std::mem::take(&mut s.suppressed)
        };
        if suppressed == 0 {
            tracing::warn!("{} failed: {error}", self.what);
        } else {
            tracing::warn!(
                "{} failed: {error} ({suppressed} more in the last {} s not logged)",
                self.what,
                self.window.as_secs()
            );
        }
        true
    }

    /// The failure stopped: the next one starts a new burst, logged at once.
    pub fn recovered(&self) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if s.logged_at.take().is_some() {
            tracing::info!("{} works again", self.what);
        }
        s.suppressed = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn one_line_per_window_and_a_new_burst_after_recovery() {
        let b = Burst::new("write", Duration::from_secs(10));
        assert!(b.failed(&"disk full"));
        assert!(!b.failed(&"disk full"));
        assert!(!b.failed(&"disk full"));
        tokio::time::advance(Duration::from_secs(11)).await;
        assert!(b.failed(&"disk full"));
        b.recovered();
        assert!(b.failed(&"disk full"));
    }
}
