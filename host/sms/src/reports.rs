//! Reports of many executions of one node in one call. A Spearlet sends what gathered while its
//! previous call was in flight, so under load one call carries many reports and their writes
//! share the storage's group commits, while a lone report still goes at once.

use std::collections::{HashMap, HashSet};

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
    /// owns its execution while it is decided, as a single report does). A start whose result is
    /// in the same batch is recorded with that result, in one write, and answered as the result
    /// is. `running_attempts[i]` is `running[i]`'s attempt (missing or 0: not said). A stale
    /// session or an oversized batch refuses the whole call; anything else is answered item by
    /// item.
    pub async fn report_batch(
        &self,
        session: &str,
        node: &str,
        running: &[String],
        running_attempts: &[u32],
        results: Vec<Report>,
    ) -> Result<BatchOutcome> {
        self.check_session(session)?;
        if running_attempts.len() > running.len() {
            return Err(SmsError::invalid(
                "running_attempts",
                format!(
                    "{} attempts for {} starts: one for each start at most",
                    running_attempts.len(),
                    running.len()
                ),
            ));
        }
        for (field, n) in [("running", running.len()), ("results", results.len())] {
            if n > MAX_BATCH_ITEMS {
                return Err(SmsError::invalid(
                    field,
                    format!("{n} items; a batch carries at most {MAX_BATCH_ITEMS}"),
                ));
            }
        }
        let ended: HashMap<String, usize> = results
            .iter()
            .enumerate()
            .map(|(i, r)| (r.execution_id.clone(), i))
            .collect();
        let attempt = |i: usize| running_attempts.get(i).copied().unwrap_or(0);
        let alone = futures::future::join_all(
            running
                .iter()
                .enumerate()
                .filter(|(_, id)| !ended.contains_key(id.as_str()))
                .map(|(i, id)| self.report_state(session, node, id, "running", attempt(i))),
        )
        .await;
        let told: HashSet<&str> = running
            .iter()
            .map(String::as_str)
            .filter(|id| ended.contains_key(*id))
            .collect();
        let results: Vec<Result<()>> = futures::future::join_all(results.into_iter().map(|r| {
            let started = told.contains(r.execution_id.as_str());
            async move { self.report_end(r, started).await.map(|_| ()) }
        }))
        .await;
        let mut alone = alone.into_iter();
        let running = running
            .iter()
            .map(|id| match ended.get(id.as_str()) {
                Some(&i) => results[i].clone(),
                None => alone.next().unwrap_or(Ok(())),
            })
            .collect();
        Ok(BatchOutcome { running, results })
    }
}
