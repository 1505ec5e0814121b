//! Concurrency control of invocations (the redesign's `ConcurrencyControl`), past the node-wide
//! `max_concurrent`:
//!
//! - **rate**: a token bucket per task (`rate_per_sec`, `burst`; a task's metadata key
//!   `spear.rate_per_sec` sets its own rate). An invocation takes a token, or reserves the next
//!   one and waits for it when that comes before its deadline; else it is refused at once, "rate
//!   limited".
//! - **per function** and **per binary**: at most `max_per_function` invocations of one function of
//!   a task, and `max_per_binary` of one artifact (every task running it), at once; one waits for
//!   a place until its deadline.
//! - **adaptive**: with `adaptive_target_ms`, each task's concurrency limit follows its latency
//!   (AIMD): every invocation slower than the target cuts the limit by a tenth, every faster one
//!   adds `1/limit`, between 1 and `spearlet.limits.max_instances_per_task`. One waits for room
//!   under it until its deadline.
//!
//! Over a limit an invocation is never dropped silently: it waits at most its deadline, then gets
//! `RESOURCE_EXHAUSTED` naming the limit. Every table here is bounded ([`MAX_KEYS`]): past it the
//! key idle longest is forgotten (its state starts afresh when it comes back).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

use super::InvokeError;
use crate::config::functions::FunctionLimits;

/// Keys (tasks, functions, binaries) each table holds.
pub const MAX_KEYS: usize = 4096;

/// A token bucket.
#[derive(Debug)]
struct Bucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn new(rate: f64, burst: f64) -> Self {
        Self {
            rate,
            burst,
            tokens: burst,
            at: Instant::now(),
        }
    }

    /// Take a token now, or reserve the next: how long to wait for it (`None`: not before
    /// `limit`, and nothing is taken).
    fn take(&mut self, limit: Duration) -> Option<Duration> {
        let now = Instant::now();
        self.tokens =
            (self.tokens + now.duration_since(self.at).as_secs_f64() * self.rate).min(self.burst);
        self.at = now;
        let wait = if self.tokens >= 1.0 {
            0.0
        } else {
            (1.0 - self.tokens) / self.rate
        };
        // Compared as seconds: a tiny rate's wait may be past what a `Duration` holds (and a
        // wait that is not a number is never within the limit).
        if wait.is_nan() || wait > limit.as_secs_f64() {
            return None;
        }
        self.tokens -= 1.0;
        Some(Duration::from_secs_f64(wait))
    }
}

/// The AIMD limit of one task.
#[derive(Debug)]
struct Adaptive {
    limit: f64,
    in_flight: usize,
}

/// One task's adaptive limiter.
#[derive(Debug)]
struct AdaptiveSlot {
    state: Mutex<Adaptive>,
    freed: Notify,
}

/// A bounded map of keys to values made on first use, the longest unused forgotten first.
#[derive(Debug)]
struct Table<V> {
    entries: Mutex<HashMap<String, (Instant, V)>>,
}

impl<V: Clone> Table<V> {
    fn new() -> Self {
        Self {
            entries: Mutex::default(),
        }
    }

    fn get(&self, key: &str, make: impl FnOnce() -> V) -> V {
        let mut e = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if let Some((at, v)) = e.get_mut(key) {
            *at = now;
            return v.clone();
        }
        if e.len() >= MAX_KEYS
            && let Some(oldest) = e
                .iter()
                .min_by_key(|(_, (at, _))| *at)
                .map(|(k, _)| k.clone())
        {
            e.remove(&oldest);
        }
        let v = make();
        e.insert(key.to_owned(), (now, v.clone()));
        v
    }

    fn values(&self) -> Vec<(String, V)> {
        let e = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        e.iter().map(|(k, (_, v))| (k.clone(), v.clone())).collect()
    }
}

/// A task's adaptive limiter figures, for the status API.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct AdaptiveFigures {
    /// The task.
    pub task: String,
    /// Its concurrency limit now.
    pub limit: f64,
    /// Its invocations in flight.
    pub in_flight: usize,
}

/// The node's limiters.
#[derive(Debug)]
pub struct Limiters {
    config: FunctionLimits,
    max_per_task: usize,
    buckets: Table<Arc<Mutex<Bucket>>>,
    functions: Table<Arc<Semaphore>>,
    binaries: Table<Arc<Semaphore>>,
    adaptive: Table<Arc<AdaptiveSlot>>,
}

/// What an invocation holds while it runs; give it back with [`Admitted::done`].
#[derive(Debug)]
pub struct Admitted {
    _function: Option<OwnedSemaphorePermit>,
    _binary: Option<OwnedSemaphorePermit>,
    adaptive: Option<Arc<AdaptiveSlot>>,
    target: Duration,
    max: f64,
}

impl Admitted {
    /// The invocation ended after `latency`: the adaptive limit learns from it, and the places
    /// are given back.
    pub fn done(mut self, latency: Duration) {
        if let Some(slot) = self.adaptive.take() {
            let mut s = slot.state.lock().unwrap_or_else(|p| p.into_inner());
            s.in_flight = s.in_flight.saturating_sub(1);
            s.limit = if latency > self.target {
                (s.limit * 0.9).max(1.0)
            } else {
                (s.limit + 1.0 / s.limit).min(self.max)
            };
            drop(s);
            slot.freed.notify_waiters();
        }
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        // Not ended through `done` (its task failed): the place is given back, nothing learnt.
        if let Some(slot) = self.adaptive.take() {
            let mut s = slot.state.lock().unwrap_or_else(|p| p.into_inner());
            s.in_flight = s.in_flight.saturating_sub(1);
            drop(s);
            slot.freed.notify_waiters();
        }
    }
}

fn over(limit: &str, what: String) -> InvokeError {
    InvokeError::OverCapacity(format!("over capacity: {what} ({limit})"))
}

impl Limiters {
    /// Limiters from `[spearlet.functions]`, the adaptive limit at most `max_per_task`.
    pub fn new(config: &FunctionLimits, max_per_task: u32) -> Self {
        Self {
            config: config.clone(),
            max_per_task: (max_per_task as usize).max(1),
            buckets: Table::new(),
            functions: Table::new(),
            binaries: Table::new(),
            adaptive: Table::new(),
        }
    }

    /// Admit an invocation of `function` of `task` (its artifact `binary`, its own rate, when
    /// its metadata sets one) before `deadline`, or say which limit refused it.
    pub async fn admit(
        &self,
        task: &str,
        function: &str,
        binary: &str,
        task_rate: Option<f64>,
        deadline: Instant,
    ) -> Result<Admitted, InvokeError> {
        let c = &self.config;
        let rate = task_rate.unwrap_or(c.rate_per_sec);
        if rate > 0.0 {
            let burst = if c.burst > 0.0 {
                c.burst
            } else {
                rate.max(1.0)
            };
            let bucket = self
                .buckets
                .get(task, || Arc::new(Mutex::new(Bucket::new(rate, burst))));
            let wait = {
                let mut b = bucket.lock().unwrap_or_else(|p| p.into_inner());
                if b.rate != rate || b.burst != burst {
                    *b = Bucket::new(rate, burst);
                }
                b.take(deadline.saturating_duration_since(Instant::now()))
            };
            match wait {
                None => {
                    return Err(InvokeError::OverCapacity(format!(
                        "rate limited: task {task} takes {rate} invocations a second \
                         (spearlet.functions.rate_per_sec, or its spear.rate_per_sec); \
                         none is free before the deadline"
                    )));
                }
                Some(w) if !w.is_zero() => tokio::time::sleep(w).await,
                Some(_) => {}
            }
        }
        let function_place = match c.max_per_function {
            0 => None,
            n => {
                let s = self.functions.get(&format!("{task}\u{0}{function}"), || {
                    Arc::new(Semaphore::new(n))
                });
                Some(place(s, deadline).await.ok_or_else(|| {
                    over(
                        "spearlet.functions.max_per_function",
                        format!("{n} invocations of {function} of task {task} are running"),
                    )
                })?)
            }
        };
        let binary_place = match c.max_per_binary {
            0 => None,
            n => {
                let s = self.binaries.get(binary, || Arc::new(Semaphore::new(n)));
                Some(place(s, deadline).await.ok_or_else(|| {
                    over(
                        "spearlet.functions.max_per_binary",
                        format!("{n} invocations of its binary are running"),
                    )
                })?)
            }
        };
        let adaptive = if c.adaptive_target_ms > 0 {
            let max = self.max_per_task as f64;
            let slot = self.adaptive.get(task, || {
                Arc::new(AdaptiveSlot {
                    state: Mutex::new(Adaptive {
                        limit: max,
                        in_flight: 0,
                    }),
                    freed: Notify::new(),
                })
            });
            loop {
                let freed = slot.freed.notified();
                {
                    let mut s = slot.state.lock().unwrap_or_else(|p| p.into_inner());
                    if (s.in_flight as f64) < s.limit.floor().max(1.0) {
                        s.in_flight += 1;
                        break;
                    }
                }
                if tokio::time::timeout_at(deadline.into(), freed)
                    .await
                    .is_err()
                {
                    let limit = slot.state.lock().unwrap_or_else(|p| p.into_inner()).limit;
                    return Err(over(
                        "spearlet.functions.adaptive_target_ms",
                        format!(
                            "task {task}'s adaptive limit of {} invocations at once is full",
                            limit.floor()
                        ),
                    ));
                }
            }
            Some(slot)
        } else {
            None
        };
        Ok(Admitted {
            _function: function_place,
            _binary: binary_place,
            adaptive,
            target: Duration::from_millis(c.adaptive_target_ms),
            max: self.max_per_task as f64,
        })
    }

    /// Every task's adaptive limit now.
    pub fn adaptive(&self) -> Vec<AdaptiveFigures> {
        let mut all: Vec<AdaptiveFigures> = self
            .adaptive
            .values()
            .into_iter()
            .map(|(task, slot)| {
                let s = slot.state.lock().unwrap_or_else(|p| p.into_inner());
                AdaptiveFigures {
                    task,
                    limit: s.limit,
                    in_flight: s.in_flight,
                }
            })
            .collect();
        all.sort_by(|a, b| a.task.cmp(&b.task));
        all
    }
}

/// A place of `s` before `deadline`.
async fn place(s: Arc<Semaphore>, deadline: Instant) -> Option<OwnedSemaphorePermit> {
    tokio::time::timeout_at(deadline.into(), s.acquire_owned())
        .await
        .ok()?
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(f: impl FnOnce(&mut FunctionLimits)) -> Limiters {
        let mut c = FunctionLimits::default();
        f(&mut c);
        Limiters::new(&c, 4)
    }

    #[tokio::test]
    async fn a_bucket_of_ten_a_second_lets_ten_through_and_refuses_the_rest() {
        let l = limits(|c| c.rate_per_sec = 10.0);
        let soon = || Instant::now() + Duration::from_millis(20);
        let mut ok = 0;
        let mut refused = 0;
        for _ in 0..25 {
            match l.admit("t", "f", "b", None, soon()).await {
                Ok(a) => {
                    a.done(Duration::ZERO);
                    ok += 1;
                }
                Err(InvokeError::OverCapacity(m)) => {
                    assert!(m.starts_with("rate limited"), "{m}");
                    refused += 1;
                }
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!((ok, refused), (10, 15));
        // Another task has its own bucket; a task's own rate overrides the node's.
        assert!(l.admit("u", "f", "b", None, soon()).await.is_ok());
        let own = limits(|c| c.rate_per_sec = 10.0);
        for _ in 0..2 {
            assert!(own.admit("t", "f", "b", Some(2.0), soon()).await.is_ok());
        }
        assert!(own.admit("t", "f", "b", Some(2.0), soon()).await.is_err());
        // One with time to wait for the next token gets it.
        let started = Instant::now();
        let far = Instant::now() + Duration::from_secs(2);
        own.admit("t", "f", "b", Some(2.0), far).await.unwrap();
        assert!(
            started.elapsed() >= Duration::from_millis(300),
            "{:?}",
            started.elapsed()
        );
    }

    #[tokio::test]
    async fn a_tiny_rate_refuses_without_a_panic() {
        let l = limits(|c| c.rate_per_sec = 1e-300);
        let soon = Instant::now() + Duration::from_millis(10);
        l.admit("t", "f", "b", None, soon)
            .await
            .unwrap()
            .done(Duration::ZERO);
        let err = l.admit("t", "f", "b", None, soon).await.unwrap_err();
        assert!(err.to_string().starts_with("rate limited"), "{err}");
    }

    #[tokio::test]
    async fn per_function_and_per_binary_places_wait_then_refuse() {
        let l = limits(|c| {
            c.max_per_function = 1;
            c.max_per_binary = 2;
        });
        let soon = || Instant::now() + Duration::from_millis(50);
        let a = l.admit("t", "f", "bin", None, soon()).await.unwrap();
        let err = l.admit("t", "f", "bin", None, soon()).await.unwrap_err();
        assert!(err.to_string().contains("max_per_function"), "{err}");
        let b = l.admit("t", "g", "bin", None, soon()).await.unwrap();
        let err = l.admit("u", "h", "bin", None, soon()).await.unwrap_err();
        assert!(err.to_string().contains("max_per_binary"), "{err}");
        drop(a);
        l.admit("t", "f", "other", None, soon()).await.unwrap();
        b.done(Duration::ZERO);
    }

    #[tokio::test]
    async fn the_adaptive_limit_falls_with_slow_invocations_and_climbs_back() {
        let l = limits(|c| c.adaptive_target_ms = 10);
        let far = || Instant::now() + Duration::from_secs(1);
        for _ in 0..10 {
            let a = l.admit("t", "f", "b", None, far()).await.unwrap();
            a.done(Duration::from_millis(50));
        }
        let low = l.adaptive()[0].limit;
        assert!(low < 2.0, "ten slow ones cut 4 to {low}");
        // At the limit (1), a second one waits, then is refused at its deadline.
        let held = l.admit("t", "f", "b", None, far()).await.unwrap();
        let soon = Instant::now() + Duration::from_millis(30);
        let err = l.admit("t", "f", "b", None, soon).await.unwrap_err();
        assert!(err.to_string().contains("adaptive"), "{err}");
        held.done(Duration::from_millis(1));
        for _ in 0..20 {
            l.admit("t", "f", "b", None, far())
                .await
                .unwrap()
                .done(Duration::from_millis(1));
        }
        let high = l.adaptive()[0].limit;
        assert!(high > low + 1.0, "fast ones raise it: {low} → {high}");
        assert!(high <= 4.0);
    }
}
