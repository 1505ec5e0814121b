//! Liveness of SMS's background work, for `/healthz` and the restart counter: the scheduler's
//! last completed pass, the storage writer's last result, and the supervisor that restarts a
//! background task that panicked ([`supervise`]).

use std::future::Future;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use prometheus::{IntCounterVec, Opts, Registry};
use serde::Serialize;
use spear_edge::burst::Burst;
use tokio::task::JoinHandle;

use crate::model::now_ms;

/// A scheduler with no completed pass for this long is reported stalled.
pub const SCHEDULER_STALL: Duration = Duration::from_secs(30);

/// The outcome of the last storage write, logged once per burst while failing.
#[derive(Debug)]
pub struct WriteHealth {
    failing: Mutex<Option<String>>,
    burst: Burst,
    failures: AtomicU64,
}

impl Default for WriteHealth {
    fn default() -> Self {
        Self {
            failing: Mutex::new(None),
            burst: Burst::new("a storage write", Duration::from_secs(30)),
            failures: AtomicU64::new(0),
        }
    }
}

impl WriteHealth {
    /// Record a write's outcome.
    pub fn record(&self, result: &Result<(), impl std::fmt::Display>) {
        let mut failing = self.failing.lock().unwrap_or_else(|p| p.into_inner());
        match result {
            Ok(()) => {
                if failing.take().is_some() {
                    self.burst.recovered();
                }
            }
            Err(e) => {
                self.failures.fetch_add(1, Ordering::Relaxed);
                self.burst.failed(e);
                *failing = Some(e.to_string());
            }
        }
    }

    /// The last write's error, while writes fail.
    pub fn failing(&self) -> Option<String> {
        self.failing
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Writes that failed since start.
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }
}

/// The health of SMS's background work.
#[derive(Debug)]
pub struct Health {
    /// When the scheduler last completed a pass (ms since the epoch).
    scheduler_beat_ms: AtomicI64,
    /// Restarts of supervised tasks, by task.
    restarts: IntCounterVec,
    /// The last panic of a supervised task.
    last_panic: Mutex<Option<String>>,
}

/// `/healthz`'s answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct HealthReport {
    /// `ok` or `unhealthy`.
    pub status: &'static str,
    /// `leader`: this SMS serves the API (a lone SMS leads; a standby one answers `follower`,
    /// see [`crate::ha::follower`]).
    pub role: &'static str,
    /// `ok`, or what is wrong with the storage writes.
    pub storage: String,
    /// `ok`, or what is wrong with the scheduler.
    pub scheduler: String,
    /// Restarts of background tasks after a panic, since start.
    pub restarts: u64,
    /// The last such panic.
    pub last_panic: Option<String>,
}

impl Health {
    /// Register the restart counter in `registry`.
    pub fn new(registry: &Registry) -> Arc<Self> {
        let restarts = IntCounterVec::new(
            Opts::new(
                "sms_task_restarts_total",
                "Background tasks of SMS restarted after a panic",
            ),
            &["task"],
        )
        .expect("a valid metric");
        let _ = registry.register(Box::new(restarts.clone()));
        Arc::new(Self {
            scheduler_beat_ms: AtomicI64::new(now_ms()),
            restarts,
            last_panic: Mutex::new(None),
        })
    }

    /// The scheduler completed a pass.
    pub fn scheduler_beat(&self) {
        self.scheduler_beat_ms.store(now_ms(), Ordering::Relaxed);
    }

    /// Everything at once, with `writes` the storage writer's health.
    pub fn report(&self, writes: &WriteHealth) -> HealthReport {
        let storage = match writes.failing() {
            None => "ok".to_owned(),
            Some(e) => format!("failing: {e}"),
        };
        let quiet = now_ms().saturating_sub(self.scheduler_beat_ms.load(Ordering::Relaxed));
        let scheduler = if quiet > SCHEDULER_STALL.as_millis() as i64 {
            format!("stalled: no completed pass for {} s", quiet / 1000)
        } else {
            "ok".to_owned()
        };
        let restarts = ["scheduler", "node-sweeper"]
            .iter()
            .map(|t| self.restarts.with_label_values(&[*t]).get())
            .sum();
        HealthReport {
            status: if storage == "ok" && scheduler == "ok" {
                "ok"
            } else {
                "unhealthy"
            },
            role: "leader",
            storage,
            scheduler,
            restarts,
            last_panic: self
                .last_panic
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        }
    }
}

/// Run the task `make` builds; when it panics, log the panic, count it, and start it again after
/// a second. Returns when the task returns.
pub fn supervise<F, Fut>(name: &'static str, health: Arc<Health>, mut make: F) -> JoinHandle<()>
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    tokio::spawn(async move {
        loop {
            match tokio::spawn(make()).await {
                Ok(()) => return,
                Err(e) if e.is_panic() => {
                    let payload = e.into_panic();
                    let text = payload
                        .downcast_ref::<&str>()
                        .map(|s| (*s).to_owned())
                        .or_else(|| payload.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "a panic without a message".into());
                    tracing::error!("{name} panicked: {text}; restarting it in 1 s");
                    health.restarts.with_label_values(&[name]).inc();
                    *health.last_panic.lock().unwrap_or_else(|p| p.into_inner()) =
                        Some(format!("{name}: {text}"));
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                Err(_) => return,
            }
        }
    })
}

/// Now, as RFC 3339 in UTC (`2026-11-30T05:48:50.759324Z`).
pub fn rfc3339_now() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_panicking_task_is_restarted_counted_and_reported() {
        let registry = Registry::new();
        let health = Health::new(&registry);
        let runs = Arc::new(AtomicU64::new(0));
        let r = runs.clone();
        let task = supervise("scheduler", health.clone(), move || {
            let r = r.clone();
            async move {
                if r.fetch_add(1, Ordering::SeqCst) < 2 {
                    panic!("boom");
                }
            }
        });
        task.await.unwrap();
        assert_eq!(runs.load(Ordering::SeqCst), 3, "ran until it returned");
        let report = health.report(&WriteHealth::default());
        assert_eq!(report.restarts, 2);
        assert_eq!(report.last_panic.as_deref(), Some("scheduler: boom"));
        let text = format!("{:?}", registry.gather());
        assert!(text.contains("sms_task_restarts_total"), "{text}");
    }

    #[test]
    fn storage_is_unhealthy_from_a_failed_write_until_one_succeeds() {
        let w = WriteHealth::default();
        w.record(&Ok::<(), String>(()));
        assert_eq!(w.failing(), None);
        w.record(&Err::<(), _>("disk full"));
        w.record(&Err::<(), _>("disk full"));
        assert_eq!(w.failing().as_deref(), Some("disk full"));
        assert_eq!(w.failures(), 2);
        w.record(&Ok::<(), String>(()));
        assert_eq!(w.failing(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_scheduler_without_a_pass_for_30_s_is_stalled() {
        let health = Health::new(&Registry::new());
        health.scheduler_beat();
        assert_eq!(health.report(&WriteHealth::default()).status, "ok");
        // The beat is wall-clock time: age it directly.
        health
            .scheduler_beat_ms
            .store(now_ms() - 31_000, Ordering::Relaxed);
        let report = health.report(&WriteHealth::default());
        assert_eq!(report.status, "unhealthy");
        assert!(report.scheduler.starts_with("stalled"), "{report:?}");
    }
}
