//! Live swaps of executors ([`crate::executors::LiveExecutors`]): every second, an executor whose
//! plugin file was replaced is loaded anew; after every swap (that one, or a config reload's), the
//! idle instances of executors no longer in force are stopped, so that new invocations start on
//! the new ones. Instances serving an invocation finish it on their executor and are stopped when
//! they are given back. A swap that changes the executable types served registers the node again,
//! so that SMS places work of a new type here (or none of a type gone).

use std::sync::Arc;
use std::time::Duration;

use super::{Agent, until};

/// How often executor files are compared with the plugin directory's.
const FILE_CHECK: Duration = Duration::from_secs(1);

impl Agent {
    pub(super) async fn executor_swaps(self: Arc<Self>) {
        let mut draining = self.draining.subscribe();
        let mut swaps = self.executors.swaps();
        let mut seen = *swaps.borrow_and_update();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(FILE_CHECK) => {
                    let me = self.clone();
                    let _ = tokio::task::spawn_blocking(move || {
                        let before = me.executors.get();
                        if let Some(set) = before.with_new_files(&me.plugins) {
                            // Not over a swap made meanwhile (a config reload's): the next
                            // round looks again.
                            me.executors.replace_if(&before, set);
                        }
                    })
                    .await;
                }
                changed = swaps.changed() => if changed.is_err() { return },
                _ = until(&mut draining) => return,
            }
            let now = *swaps.borrow_and_update();
            if now != seen {
                seen = now;
                self.retire_replaced().await;
                self.register_new_types().await;
            }
        }
    }

    /// Stop the idle instances whose executor is no longer in force; returns how many.
    pub(crate) async fn retire_replaced(self: &Arc<Self>) -> usize {
        let me = self.clone();
        let stopped = tokio::task::spawn_blocking(move || {
            let set = me.executors.get();
            me.pools.stop_where(|r| !set.holds(&r.executor), false)
        })
        .await
        .unwrap_or(0);
        if stopped > 0 {
            tracing::info!(stopped, "idle instances of replaced executors stopped");
        }
        stopped
    }
}
