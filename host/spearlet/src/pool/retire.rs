//! Instances leaving for good outside reclamation: every live one at a drain, and those of an
//! executor that was swapped out (idle ones at once, one serving an invocation when it is given
//! back), so that no new invocation runs on a replaced executor.

use spear_plugin_api::InstanceState;

use super::{Lease, Pools, Runtime, stop_later};

impl Pools {
    /// Stop every live runtime and forget the instances that had one (at a drain; blocking:
    /// plugin calls). One serving an invocation is stopped when the invocation ends. Returns
    /// how many were stopped.
    pub fn stop_all(&self) -> usize {
        self.stop_where(|_| true, true)
    }

    /// Stop the live runtimes `which` picks, of idle (Ready) instances or, with `busy_too`, of
    /// any, and forget their instances (blocking: plugin calls). Returns how many.
    pub fn stop_where(&self, which: impl Fn(&Runtime) -> bool, busy_too: bool) -> usize {
        let runtimes: Vec<Runtime> = {
            let mut s = self.lock();
            let picked: Vec<u64> = s
                .instances
                .values()
                .filter(|i| busy_too || i.state == InstanceState::Ready)
                .filter(|i| i.runtime.as_ref().is_some_and(&which))
                .map(|i| i.id)
                .collect();
            let mut runtimes = Vec::new();
            for id in picked {
                if let Some(gone) = s.instances.remove(&id) {
                    runtimes.extend(gone.runtime);
                }
                s.dirty.insert(id);
            }
            runtimes
        };
        runtimes.iter().for_each(Runtime::stop);
        if !runtimes.is_empty() {
            self.freed.notify_waiters();
        }
        runtimes.len()
    }

    /// Give back an instance that must serve nothing more although it did nothing wrong (its
    /// executor was swapped out): it is forgotten at once, its runtime stopped in the background.
    pub fn retire(&self, lease: Lease) {
        let gone = {
            let mut s = self.lock();
            let gone = s.instances.remove(&lease.id);
            s.dirty.insert(lease.id);
            gone
        };
        drop(lease);
        stop_later(gone.and_then(|i| i.runtime).into_iter().collect());
        self.freed.notify_waiters();
    }
}
