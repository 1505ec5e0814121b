//! Instances leaving for good outside reclamation: every live one at a drain, and those of an
//! executor that was swapped out (idle ones at once, one serving an invocation CoolingDown until
//! it is given back), so that no new invocation runs on a replaced executor.

use super::{Lease, Phase, Pools, Runtime};

impl Pools {
    /// Stop every live runtime and forget the instances that had one (at the end of a drain;
    /// blocking: plugin calls), busy ones included. Returns how many were stopped.
    pub fn stop_all(&self) -> usize {
        self.stop_where(|_| true, true)
    }

    /// Stop the live runtimes `which` picks, of idle (Ready, Paused) instances or, with
    /// `busy_too`, of any, and forget their instances (blocking: plugin calls); without
    /// `busy_too`, the busy ones it picks go CoolingDown (stopped when given back) and one
    /// being paused is stopped by its pause round. Returns how many were stopped now.
    pub fn stop_where(&self, which: impl Fn(&Runtime) -> bool, busy_too: bool) -> usize {
        let leaving = {
            let mut s = self.lock();
            let picked: Vec<(u64, bool)> = s
                .instances
                .values()
                .filter(|i| i.state != Phase::Terminating)
                .filter(|i| i.runtime.as_ref().is_some_and(&which))
                .map(|i| (i.id, i.state.is_idle()))
                .collect();
            let mut leaving = Vec::new();
            for (id, idle) in picked {
                if idle || busy_too {
                    leaving.extend(s.leave(id));
                    continue;
                }
                let Some(i) = s.instances.get_mut(&id) else {
                    continue;
                };
                match &i.state {
                    Phase::Executing(serving) => {
                        i.state = Phase::CoolingDown(serving.clone());
                        s.dirty.insert(id);
                    }
                    // Its pause round owns it now, and stops it when done.
                    Phase::Pausing => i.retire = true,
                    _ => {}
                }
            }
            leaving
        };
        let stopped = leaving.len();
        self.shared.stop(leaving);
        stopped
    }

    /// Give back an instance that must serve nothing more although it did nothing wrong (its
    /// executor was swapped out): it is stopped in the background, and forgotten then.
    pub fn retire(&self, lease: Lease) {
        let leaving = {
            let mut s = self.lock();
            match s.instances.get(&lease.id) {
                Some(i) if i.state.is_busy() => s.leave(lease.id).into_iter().collect(),
                _ => Vec::new(),
            }
        };
        drop(lease);
        super::stop_later(&self.shared, leaving);
        self.shared.freed.notify_waiters();
    }
}
