//! The CPU limit of a guest: the time spent inside the polls of its future, which is when its
//! code (and the host calls it makes) runs on a worker thread. A guest waiting in a sleep or a
//! poll costs nothing; one that computes yields at every epoch tick, so the limit is noticed
//! within a tick of being passed.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// The error that ends a guest past its CPU limit.
#[derive(Debug)]
pub struct CpuLimit {
    /// The limit.
    pub limit: Duration,
}

impl std::fmt::Display for CpuLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "cpu limit: the guest ran past its {} ms of CPU (the wasm executor's max_cpu_ms)",
            self.limit.as_millis()
        )
    }
}

impl std::error::Error for CpuLimit {}

/// A guest's future, metered: past `limit` of time inside its polls it ends with [`CpuLimit`]
/// (and is dropped, which cancels the guest).
pub struct Metered<F> {
    inner: Pin<Box<F>>,
    used: Duration,
    limit: Option<Duration>,
}

impl<F> Metered<F> {
    /// Meter `inner` against `limit` (None: no limit).
    pub fn new(inner: F, limit: Option<Duration>) -> Self {
        Self {
            inner: Box::pin(inner),
            used: Duration::ZERO,
            limit,
        }
    }
}

impl<F: Future<Output = (wasmtime::Result<i32>, bool)>> Future for Metered<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let started = Instant::now();
        let polled = self.inner.as_mut().poll(cx);
        self.used += started.elapsed();
        if polled.is_pending()
            && let Some(limit) = self.limit
            && self.used > limit
        {
            return Poll::Ready((Err(CpuLimit { limit }.into()), false));
        }
        polled
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn time_spent_waiting_is_free_and_time_spent_computing_is_not() {
        let sleeper = Metered::new(
            async {
                tokio::time::sleep(Duration::from_millis(50)).await;
                (Ok(0), false)
            },
            Some(Duration::from_millis(10)),
        );
        assert_eq!(sleeper.await.0.unwrap(), 0);
        let spinner = Metered::new(
            async {
                loop {
                    let t = Instant::now();
                    while t.elapsed() < Duration::from_millis(2) {}
                    tokio::task::yield_now().await;
                }
            },
            Some(Duration::from_millis(10)),
        );
        let err = spinner.await.0.unwrap_err();
        assert!(err.downcast_ref::<CpuLimit>().is_some(), "{err}");
    }
}
