//! The node's execution slots (`limits.max_concurrent`), handed out by priority: an execution
//! waiting for a slot (SMS sends a few ahead of the node's slots) takes the next free one before
//! every waiting execution of lower priority, and in arrival order within a priority. So work
//! SMS preempted a run for takes the place that run frees.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

/// Execution slots shared by the node's runs.
#[derive(Debug)]
pub struct Slots {
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    free: usize,
    /// (higher priority first, then arrival) → the waiter.
    waiting: BTreeMap<(std::cmp::Reverse<u8>, u64), oneshot::Sender<Permit>>,
    next: u64,
}

/// One slot, given back when dropped.
#[derive(Debug)]
pub struct Permit {
    slots: Option<Arc<Slots>>,
}

/// An execution's priority as SMS spells it, as a rank (unknown: normal).
pub fn rank(priority: &str) -> u8 {
    match priority {
        "low" => 0,
        "high" => 2,
        "urgent" => 3,
        _ => 1,
    }
}

impl Slots {
    /// `n` slots.
    pub fn new(n: usize) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State {
                free: n,
                waiting: BTreeMap::new(),
                next: 0,
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Wait for a slot, before every waiter of lower `priority` (a rank, higher first).
    pub async fn acquire(self: &Arc<Self>, priority: u8) -> Permit {
        let rx = {
            let mut st = self.lock();
            if st.free > 0 && st.waiting.is_empty() {
                st.free -= 1;
                return Permit {
                    slots: Some(self.clone()),
                };
            }
            let (tx, rx) = oneshot::channel();
            let key = (std::cmp::Reverse(priority), st.next);
            st.next += 1;
            st.waiting.insert(key, tx);
            rx
        };
        // A dropped sender cannot happen while `self` lives (a waiter is only removed to be
        // given a permit); should it, the waiter waits for nothing more and runs.
        rx.await.unwrap_or(Permit { slots: None })
    }

    /// Slots free now (for tests and figures).
    pub fn available(&self) -> usize {
        self.lock().free
    }

    /// Give a slot back: to the best waiter still waiting, else to the free count.
    fn give_back(self: &Arc<Self>) {
        let mut st = self.lock();
        while let Some((_, tx)) = st.waiting.pop_first() {
            let permit = Permit {
                slots: Some(self.clone()),
            };
            match tx.send(permit) {
                Ok(()) => return,
                // The waiter gave up (its task ended): the permit comes back here through its
                // drop, which would take this lock; forget it and try the next waiter instead.
                Err(mut p) => p.slots = None,
            }
        }
        st.free += 1;
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if let Some(slots) = self.slots.take() {
            slots.give_back();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_freed_slot_goes_to_the_highest_priority_waiter_then_the_earliest() {
        let slots = Slots::new(1);
        let held = slots.acquire(1).await;
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for (name, p) in [("low", 0), ("normal-1", 1), ("urgent", 3), ("normal-2", 1)] {
            let (slots, order) = (slots.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                let _permit = slots.acquire(p).await;
                order.lock().unwrap().push(name);
            }));
            // In arrival order.
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        drop(held);
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(
            *order.lock().unwrap(),
            ["urgent", "normal-1", "normal-2", "low"]
        );
        assert_eq!(slots.available(), 1, "every slot came back");
    }

    #[tokio::test]
    async fn a_waiter_that_gives_up_loses_no_slot() {
        let slots = Slots::new(1);
        let held = slots.acquire(1).await;
        let gave_up = {
            let slots = slots.clone();
            tokio::spawn(async move { slots.acquire(3).await })
        };
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        gave_up.abort();
        let _ = gave_up.await;
        drop(held);
        assert_eq!(slots.available(), 1);
        let again = slots.acquire(0).await;
        assert_eq!(slots.available(), 0);
        drop(again);
        assert_eq!(slots.available(), 1);
    }
}
