//! Reports of many executions of one node in one call. A Spearlet sends what gathered while its
//! previous call was in flight, so under load one call carries many reports and their writes
//! share the storage's group commits, while a lone report still goes at once.

use crate::error::{Result, SmsError};
use crate::executions::Report;
use crate::service::Sms;

/// Most starts, and most results, one batch may carry.
pub const MAX_BATCH_ITEMS: usize = 1024;

/// How each item of a batch went, in the request's order.
#[derive(Debug)]
pub struct BatchOutcome {
    /// One for each start.
    pub running: Vec<Result<()>>,
    /// One for each result.
    pub results: Vec<Result<()>>,
}

impl Sms {
    /// Apply a node's batch: the starts first, then the results, each as its own report (each
    /// owns its execution while it is decided, as a single report does). A stale session or an
    /// oversized batch refuses the whole call; anything else is answered item by item.
    pub async fn report_batch(
        &self,
        session: &str,
        node: &str,
        running: &[String],
        results: Vec<Report>,
    ) -> Result<BatchOutcome> {
        self.check_session(session)?;
        for (field, n) in [("running", running.len()), ("results", results.len())] {
            if n > MAX_BATCH_ITEMS {
                return Err(SmsError::invalid(
                    field,
                    format!("{n} items; a batch carries at most {MAX_BATCH_ITEMS}"),
                ));
            }
        }
        let running = futures::future::join_all(
            running
                .iter()
                .map(|id| self.report_state(session, node, id, "running")),
        )
        .await;
        let results = futures::future::join_all(
            results
                .into_iter()
                .map(|r| async move { self.report_result(r).await.map(|_| ()) }),
        )
        .await;
        Ok(BatchOutcome { running, results })
    }
}
