//! Which events are **settled**: their change applied in memory (announced), or their write
//! abandoned. A reader that takes the settled cursor, then reads a record, and then follows the
//! events after that cursor misses no change of the record ([`super::EventLog::settled`]).

use std::collections::BTreeSet;
use std::sync::Mutex;

use tokio::sync::watch;

/// The writes queued and not yet settled, and a signal each time one settles.
#[derive(Debug)]
pub(super) struct Unsettled {
    /// The first cursor of each.
    firsts: Mutex<BTreeSet<u64>>,
    /// The last cursor of the writes settled so far (the highest), set each time one settles.
    changed: watch::Sender<u64>,
}

impl Default for Unsettled {
    fn default() -> Self {
        Self {
            firsts: Mutex::default(),
            changed: watch::Sender::new(0),
        }
    }
}

impl Unsettled {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeSet<u64>> {
        self.firsts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A write whose events start at `first` is queued (call with the log's `next` held).
    pub(super) fn queued(&self, first: u64) {
        self.lock().insert(first);
    }

    /// The write whose events are `first..=last` is settled.
    pub(super) fn settle(&self, first: u64, last: u64) {
        self.lock().remove(&first);
        self.changed.send_modify(|n| *n = (*n).max(last));
    }

    /// The settled cursor, given the next cursor to take (call with the log's `next` held).
    pub(super) fn settled(&self, next: u64) -> u64 {
        self.lock().first().map_or(next - 1, |first| first - 1)
    }

    /// The last cursor of the writes settled so far, signalled each time one settles.
    pub(super) fn watch(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }
}
