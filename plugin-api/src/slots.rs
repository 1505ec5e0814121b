//! A table of an executor's live instances by handle, for its `start_instance`, `invoke` and
//! `stop_instance`: an instance serves one invocation at a time (taken out of the table while it
//! runs, so that no lock is held across the call), a second invocation of a busy one is refused,
//! a stop of a busy one drops it when its invocation ends, and an instance is dropped (its memory
//! or process released) outside the table's lock. A panic during an invocation frees its handle.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use crate::PluginError;
use crate::executor::InvokeFailure;

enum Slot<T> {
    Idle(Box<T>),
    Busy { stopped: bool },
}

/// Live instances by handle.
pub struct Slots<T> {
    table: Mutex<HashMap<String, Slot<T>>>,
}

impl<T> Default for Slots<T> {
    fn default() -> Self {
        Self {
            table: Mutex::new(HashMap::new()),
        }
    }
}

/// Removes a taken slot if the invocation unwinds, so that a handle never stays busy for ever.
struct Taken<'a, T> {
    slots: &'a Slots<T>,
    handle: &'a str,
    armed: bool,
}

impl<T> Drop for Taken<'_, T> {
    fn drop(&mut self) {
        if self.armed {
            self.slots.lock().remove(self.handle);
        }
    }
}

impl<T> Slots<T> {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Slot<T>>> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Keep `instance` under `handle`, ready.
    pub fn insert(&self, handle: String, instance: T) {
        self.lock().insert(handle, Slot::Idle(Box::new(instance)));
    }

    /// Run `call` on instance `handle`; `lost` tells, after it, whether the instance serves no
    /// more (it is then dropped, as is one stopped meanwhile).
    pub fn invoke<R>(
        &self,
        handle: &str,
        call: impl FnOnce(&mut T) -> R,
        lost: impl FnOnce(&T) -> bool,
    ) -> Result<R, InvokeFailure> {
        let mut instance = {
            let mut table = self.lock();
            let Some(slot) = table.get_mut(handle) else {
                return Err(InvokeFailure::Lost(format!("no instance {handle} here")));
            };
            match std::mem::replace(slot, Slot::Busy { stopped: false }) {
                Slot::Idle(i) => i,
                busy @ Slot::Busy { .. } => {
                    *slot = busy;
                    return Err(InvokeFailure::Refused(format!(
                        "instance {handle} is serving another invocation"
                    )));
                }
            }
        };
        let mut taken = Taken {
            slots: self,
            handle,
            armed: true,
        };
        let answer = call(&mut instance);
        let lost = lost(&instance);
        taken.armed = false;
        let dropped = {
            let mut table = self.lock();
            let stopped = !matches!(table.get(handle), Some(Slot::Busy { stopped: false }));
            if stopped || lost {
                table.remove(handle);
                Some(instance)
            } else {
                table.insert(handle.to_owned(), Slot::Idle(instance));
                None
            }
        };
        drop(dropped);
        Ok(answer)
    }

    /// Drop instance `handle` (at once when idle, after its invocation when busy).
    pub fn stop(&self, handle: &str) -> Result<(), PluginError> {
        let removed = {
            let mut table = self.lock();
            match table.get_mut(handle) {
                None => return Err(PluginError::new(format!("no instance {handle} here"))),
                Some(Slot::Busy { stopped }) => {
                    *stopped = true;
                    None
                }
                Some(Slot::Idle(_)) => table.remove(handle),
            }
        };
        drop(removed);
        Ok(())
    }

    /// Take every idle instance out, for the caller to drop outside the lock, and mark the busy
    /// ones stopped (each is dropped when its invocation ends).
    pub fn take_all(&self) -> Vec<Box<T>> {
        let mut table = self.lock();
        let mut idle = Vec::new();
        for (handle, slot) in std::mem::take(&mut *table) {
            match slot {
                Slot::Idle(i) => idle.push(i),
                Slot::Busy { .. } => {
                    table.insert(handle, Slot::Busy { stopped: true });
                }
            }
        }
        idle
    }

    /// Instances kept (idle or busy).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether none is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_stopped_lost_and_panicking_instances() {
        let s: Slots<u32> = Slots::default();
        s.insert("a".into(), 1);
        assert_eq!(s.invoke("a", |n| *n += 1, |_| false).unwrap(), ());
        // Busy: refused; a stop meanwhile drops it when the call ends.
        let r = s.invoke(
            "a",
            |_| {
                assert!(matches!(
                    s.invoke("a", |_| (), |_| false),
                    Err(InvokeFailure::Refused(_))
                ));
                s.stop("a").unwrap();
            },
            |_| false,
        );
        assert!(r.is_ok());
        assert!(matches!(
            s.invoke("a", |_| (), |_| false),
            Err(InvokeFailure::Lost(_))
        ));
        assert!(s.stop("a").is_err());
        // Lost: dropped.
        s.insert("b".into(), 1);
        s.invoke("b", |_| (), |_| true).unwrap();
        assert!(s.is_empty());
        // A panic frees the handle.
        s.insert("c".into(), 1);
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            s.invoke("c", |_| panic!("boom"), |_| false)
        }));
        assert!(caught.is_err());
        assert!(s.is_empty());
        // take_all: the idle ones out, a busy one dropped when its call ends.
        s.insert("d".into(), 1);
        s.insert("e".into(), 2);
        s.invoke(
            "d",
            |_| assert_eq!(*s.take_all().pop().unwrap(), 2),
            |_| false,
        )
        .unwrap();
        assert!(s.is_empty());
    }
}
