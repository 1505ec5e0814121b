//! Pausing idle instances (`spearlet.functions.pause_idle_ms`): a Ready instance unused that long,
//! whose executor can pause it (a worker process stopped with `SIGSTOP`, a worker container
//! frozen), is paused: it keeps its memory and state and uses no CPU. An invocation of its task
//! takes it only when the task has no Ready instance, and resumes it first.
//!
//! Race-free by ownership: the pause round marks one instance Pausing under the lock (no one
//! takes it then), asks the executor outside the lock, and only then, if the instance is still
//! Pausing (not stopped meanwhile), makes it Paused, or Ready again if the executor could not,
//! or stops it if its executor was swapped out meanwhile (a swap leaves a Pausing instance to
//! the round, marked to retire).

use std::time::Duration;

use super::{Instance, Phase, Pools};

impl Pools {
    /// Pause the Ready instances unused for `after` whose executor can pause them, one at a
    /// time (so that the others stay Ready meanwhile; blocking: plugin calls). Returns how many
    /// were paused.
    pub fn pause_idle(&self, after: Duration) -> usize {
        let candidates: Vec<u64> = self
            .lock()
            .instances
            .values()
            .filter(|i| pausable(i, after))
            .map(|i| i.id)
            .collect();
        let mut paused = 0;
        for id in candidates {
            let runtime = {
                let mut s = self.lock();
                // Taken, stopped or used since it was listed: left alone.
                let Some(i) = s.instances.get_mut(&id).filter(|i| pausable(i, after)) else {
                    continue;
                };
                i.state = Phase::Pausing;
                let runtime = i.runtime.clone().expect("pausable: it has a runtime");
                s.dirty.insert(id);
                runtime
            };
            let done = runtime.pause(true);
            let mut s = self.lock();
            // Stopped meanwhile (a drain): it is not ours any more.
            let Some(i) = s
                .instances
                .get_mut(&id)
                .filter(|i| i.state == Phase::Pausing)
            else {
                continue;
            };
            if i.retire {
                // Its executor was swapped out while it was being paused: it goes.
                let leaving = s.leave(id).into_iter().collect();
                drop(s);
                self.shared.stop(leaving);
                continue;
            }
            match done {
                Ok(()) => {
                    i.state = Phase::Paused;
                    s.counters.paused += 1;
                    paused += 1;
                }
                Err(e) => {
                    tracing::warn!(instance = id, task = %i.task, error = %e, "an idle instance could not be paused (it is not tried again)");
                    i.state = Phase::Ready;
                    if let Some(r) = i.runtime.as_mut() {
                        r.pausable = false;
                    }
                }
            }
            s.dirty.insert(id);
            drop(s);
            // An invocation waiting for an instance of its task may take it now.
            self.shared.freed.notify_waiters();
        }
        paused
    }
}

/// Whether `i` is to be paused: Ready, unused for `after`, and its executor can pause it.
fn pausable(i: &Instance, after: Duration) -> bool {
    i.state == Phase::Ready
        && i.last_used.elapsed() >= after
        && i.runtime.as_ref().is_some_and(|r| r.pausable)
}
