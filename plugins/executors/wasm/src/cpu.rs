//! The CPU limit of a guest: the CPU time of the worker thread inside the polls of its future,
//! which is when its code (and the host calls it makes) runs. A guest waiting in a sleep or a
//! poll costs nothing, and neither does the time its thread spends descheduled on a busy machine
//! (the thread's own CPU clock is read, not the wall clock); one that computes yields at every
//! epoch tick, so the limit is noticed within a tick of being passed.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

/// The calling thread's CPU time so far (`CLOCK_THREAD_CPUTIME_ID`); zero if the clock cannot
/// be read (then nothing is charged).
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `clock_gettime` only writes the `timespec` it is given, which lives on this stack.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(
        u64::try_from(ts.tv_sec).unwrap_or(0),
        u32::try_from(ts.tv_nsec).unwrap_or(0),
    )
}

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

/// A guest's future, metered: past `limit` of CPU time inside its polls it ends with [`CpuLimit`]
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
        let started = thread_cpu();
        let polled = self.inner.as_mut().poll(cx);
        self.used += thread_cpu().saturating_sub(started);
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
    use std::time::Instant;

    #[test]
    fn a_descheduled_thread_is_not_charged() {
        // Wall time passes, CPU time hardly does: a sleeping thread is like one the machine
        // did not run.
        let before = thread_cpu();
        std::thread::sleep(Duration::from_millis(30));
        assert!(thread_cpu() - before < Duration::from_millis(5));
        let t = Instant::now();
        while t.elapsed() < Duration::from_millis(20) {}
        assert!(
            thread_cpu() - before > Duration::ZERO,
            "computing is charged"
        );
    }

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
