//! Pausing idle instances (`spearlet.functions.pause_idle_ms`): a Ready instance unused that long,
//! whose executor can pause it (a worker process stopped with `SIGSTOP`, a worker container
//! frozen), is paused: it keeps its memory and state and uses no CPU. An invocation of its task
//! takes it only when the task has no Ready instance, and resumes it first.
//!
//! Race-free by ownership: the pause round marks the instance Pausing under the lock (no one
//! takes it then), asks the executor outside the lock, and only then, if the instance is still
//! Pausing (not stopped meanwhile), makes it Paused, or Ready again if the executor could not.

use std::time::Duration;

use super::{Phase, Pools, Runtime};

impl Pools {
    /// Pause the Ready instances unused for `after` whose executor can pause them (blocking:
    /// plugin calls). Returns how many were paused.
    pub fn pause_idle(&self, after: Duration) -> usize {
        let picked: Vec<(u64, Runtime)> = {
            let mut s = self.lock();
            let ids: Vec<u64> = s
                .instances
                .values()
                .filter(|i| i.state == Phase::Ready && i.last_used.elapsed() >= after)
                .filter(|i| i.runtime.as_ref().is_some_and(|r| r.pausable))
                .map(|i| i.id)
                .collect();
            let mut picked = Vec::new();
            for id in ids {
                let Some(i) = s.instances.get_mut(&id) else {
                    continue;
                };
                i.state = Phase::Pausing;
                picked.extend(i.runtime.clone().map(|r| (id, r)));
                s.dirty.insert(id);
            }
            picked
        };
        let mut paused = 0;
        for (id, runtime) in picked {
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
