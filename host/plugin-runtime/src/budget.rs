//! Call budgets: a guest call may use `budget` of CPU time on its thread, and may take at most
//! `budget × wall_factor` of wall-clock time (the ceiling for a guest that blocks, or that the
//! machine starves of CPU).
//!
//! CPU time is what the guest can be held to: on a busy machine a legal guest that computes for
//! 9 ms of a 10 ms budget may take 30 ms of wall-clock time through no fault of its own, and a
//! wall-clock deadline would fail it. The CPU clock of the calling thread
//! (`CLOCK_THREAD_CPUTIME_ID`) counts only the time this thread ran: the guest's code and the host
//! functions it called.
//!
//! The CPU time of the same work is not constant either: on a contended machine it varies (a 9 ms
//! guest measured 8.2 ms at the median and 10.5 ms at the 99.9th percentile over 10,000 calls
//! beside two busy loops, `docs/benchmarks.md`). A call is therefore stopped once it has used its
//! budget plus a quarter of it ([`TOLERANCE_DIVISOR`]; at least 1 ms). The budget is checked at
//! every epoch tick and once more when the call returns, so a call that finished past it (its
//! ticks delayed by a busy machine) fails too.

use std::time::{Duration, Instant};

/// A call may overrun its CPU budget by 1/this of it (at least 1 ms) before it is stopped.
pub(crate) const TOLERANCE_DIVISOR: u64 = 4;

/// CPU time the calling thread has used since it started.
pub(crate) fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_THREAD_CPUTIME_ID is always supported on
    // Linux (and every POSIX system with threads).
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Why a call was stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Overrun {
    /// The guest used its whole CPU budget.
    Cpu,
    /// The wall-clock ceiling passed (the guest blocked, or the machine starved it).
    Wall,
}

/// The budget of one call in progress.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CallBudget {
    /// CPU time after which the call is stopped (budget plus tolerance).
    pub cpu: Duration,
    /// Thread CPU time when the call started.
    cpu_start: Duration,
    /// When the call started.
    started: Instant,
    /// When the wall-clock ceiling passes.
    pub wall_deadline: Instant,
    /// The CPU budget in milliseconds, for messages.
    pub millis: u64,
    /// The wall-clock ceiling in milliseconds, for messages.
    pub wall_millis: u64,
}

impl CallBudget {
    /// A budget of `millis` of CPU time, starting now on this thread, with a wall-clock ceiling of
    /// `millis × wall_factor`.
    pub fn start(millis: u64, wall_factor: u32) -> Self {
        let millis = millis.max(1);
        let wall = millis.saturating_mul(u64::from(wall_factor.max(1)));
        let started = Instant::now();
        Self {
            cpu: Duration::from_millis(millis + (millis / TOLERANCE_DIVISOR).max(1)),
            cpu_start: thread_cpu_time(),
            started,
            wall_deadline: started + Duration::from_millis(wall),
            millis,
            wall_millis: wall,
        }
    }

    /// CPU time used so far (on the calling thread).
    pub fn cpu_used(&self) -> Duration {
        thread_cpu_time().saturating_sub(self.cpu_start)
    }

    /// `Ok(remaining CPU time)` while the call is within its budget and ceiling.
    pub fn check(&self) -> Result<Duration, Overrun> {
        if Instant::now() >= self.wall_deadline {
            return Err(Overrun::Wall);
        }
        let used = self.cpu_used();
        if used >= self.cpu {
            return Err(Overrun::Cpu);
        }
        Ok(self.cpu - used)
    }

    /// Whether the call may have overrun: a call that took less wall-clock time than its CPU stop
    /// point cannot have used that much CPU (saves reading the CPU clock after every fast call).
    pub fn may_have_overrun(&self) -> bool {
        self.started.elapsed() >= self.cpu
    }

    /// The error that stops a call for `overrun`.
    pub fn exceeded(&self, overrun: Overrun) -> BudgetExceeded {
        match overrun {
            Overrun::Cpu => BudgetExceeded::Cpu(self.millis),
            Overrun::Wall => BudgetExceeded::Wall(self.wall_millis),
        }
    }
}

/// The error a guest call is stopped with when it overruns its budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum BudgetExceeded {
    /// The guest computed for its whole CPU budget.
    #[error("used its {0} ms CPU budget")]
    Cpu(u64),
    /// The guest ran past the wall-clock ceiling.
    #[error("ran past its {0} ms wall-clock ceiling")]
    Wall(u64),
    /// The guest blocked in `wasi:io/poll` until the wall-clock ceiling.
    #[error("blocked in wasi:io/poll past its {0} ms wall-clock ceiling")]
    Poll(u64),
    /// The guest blocked in a `wasi:io/streams` call (a blocking read, write, flush or splice)
    /// until the wall-clock ceiling.
    #[error("blocked in a wasi:io/streams call past its {0} ms wall-clock ceiling")]
    Stream(u64),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_counts_work_not_sleep() {
        let start = thread_cpu_time();
        std::thread::sleep(Duration::from_millis(30));
        let slept = thread_cpu_time() - start;
        assert!(slept < Duration::from_millis(15), "sleep cost {slept:?}");
        let begin = Instant::now();
        let mut x = 0u64;
        while begin.elapsed() < Duration::from_millis(30) {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        assert!(thread_cpu_time() - start >= Duration::from_millis(5));
    }

    #[test]
    fn a_budget_runs_out_on_cpu_and_on_wall_time() {
        assert_eq!(CallBudget::start(10, 5).cpu, Duration::from_micros(12_000));
        assert_eq!(CallBudget::start(2, 5).cpu, Duration::from_millis(3));
        let b = CallBudget::start(5, 1000);
        assert!(b.check().is_ok());
        let begin = Instant::now();
        while b.check().is_ok() {
            assert!(
                begin.elapsed() < Duration::from_secs(5),
                "budget never ran out"
            );
        }
        assert_eq!(b.check(), Err(Overrun::Cpu));
        let w = CallBudget::start(5, 2);
        std::thread::sleep(Duration::from_millis(15));
        assert_eq!(w.check(), Err(Overrun::Wall));
    }
}
