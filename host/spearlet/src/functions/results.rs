//! Asynchronous invocations' results, by request id: running, then ended (kept for
//! `spearlet.functions.result_ttl_secs`). At most `spearlet.functions.max_results` are kept at
//! once: past it, a new asynchronous invocation is refused (expired ones are swept first), never
//! an ended result dropped early. Their outputs hold at most `spearlet.functions.max_result_mb`:
//! an output that would pass it is not kept, and its result says so.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use super::{Answer, InvokeError};

/// Where an asynchronous invocation is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Still running.
    Running,
    /// Ended with this answer or error.
    Ended(Result<Answer, InvokeError>),
}

#[derive(Debug)]
struct Entry {
    /// When it ended (`None`: running).
    ended: Option<Instant>,
    outcome: Outcome,
}

/// The results table.
#[derive(Debug)]
pub struct Results {
    max: usize,
    max_bytes: usize,
    ttl: Duration,
    table: Mutex<Table>,
    changed: Notify,
}

#[derive(Debug, Default)]
struct Table {
    entries: HashMap<String, Entry>,
    /// Bytes of the outputs kept.
    bytes: usize,
}

impl Table {
    /// Drop the ended results older than `ttl`.
    fn sweep(&mut self, ttl: Duration) {
        let mut freed = 0;
        self.entries.retain(|_, e| {
            let keep = e.ended.is_none_or(|at| at.elapsed() < ttl);
            if !keep {
                freed += e.bytes();
            }
            keep
        });
        self.bytes -= freed;
    }
}

impl Entry {
    fn bytes(&self) -> usize {
        match &self.outcome {
            Outcome::Ended(Ok(a)) => a.output.len(),
            _ => 0,
        }
    }
}

impl Results {
    /// Room for `max` results holding `max_bytes` of outputs, each ended one kept for `ttl`.
    pub fn new(max: usize, max_bytes: usize, ttl: Duration) -> Self {
        Self {
            max: max.max(1),
            max_bytes,
            ttl,
            table: Mutex::default(),
            changed: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Note `id` as running; refused when the id is in use or the table is full.
    pub fn start(&self, id: &str) -> Result<(), InvokeError> {
        let mut table = self.lock();
        if table.entries.len() >= self.max || table.entries.contains_key(id) {
            table.sweep(self.ttl);
        }
        if table.entries.contains_key(id) {
            return Err(InvokeError::Invalid(format!(
                "request_id {id} is in use by another invocation"
            )));
        }
        if table.entries.len() >= self.max {
            return Err(InvokeError::OverCapacity(format!(
                "over capacity: {} asynchronous invocations are kept \
                 (spearlet.functions.max_results)",
                self.max
            )));
        }
        table.entries.insert(
            id.to_owned(),
            Entry {
                ended: None,
                outcome: Outcome::Running,
            },
        );
        Ok(())
    }

    /// Record how `id` ended (an output past the byte budget is not kept: the result says so).
    pub fn finish(&self, id: &str, result: Result<Answer, InvokeError>) {
        let mut table = self.lock();
        let len = result.as_ref().map_or(0, |a| a.output.len());
        let result = if table.bytes + len > self.max_bytes {
            table.sweep(self.ttl);
            if table.bytes + len > self.max_bytes {
                Err(InvokeError::OverCapacity(format!(
                    "over capacity: its output of {len} bytes was not kept: the outputs kept \
                     fill spearlet.functions.max_result_mb"
                )))
            } else {
                result
            }
        } else {
            result
        };
        if let Some(e) = table.entries.get_mut(id) {
            e.ended = Some(Instant::now());
            e.outcome = Outcome::Ended(result);
            let bytes = e.bytes();
            table.bytes += bytes;
        }
        drop(table);
        self.changed.notify_waiters();
    }

    /// Where `id` is, waiting up to `wait` for a running one to end; `None` for an id unknown
    /// (never started here, or expired).
    pub async fn get(&self, id: &str, wait: Duration) -> Option<Outcome> {
        let until = Instant::now() + wait;
        loop {
            let changed = self.changed.notified();
            let outcome = {
                let table = self.lock();
                let e = table.entries.get(id)?;
                if e.ended.is_some_and(|at| at.elapsed() >= self.ttl) {
                    return None;
                }
                e.outcome.clone()
            };
            if outcome != Outcome::Running || Instant::now() >= until {
                return Some(outcome);
            }
            let _ = tokio::time::timeout_at(until.into(), changed).await;
        }
    }

    /// Results kept (running and ended).
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// Bytes of outputs kept.
    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }

    /// Whether none is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(id: &str) -> Answer {
        Answer {
            request_id: id.into(),
            output: b"out".to_vec(),
            instance: "t#1".into(),
            tier: crate::pool::Tier::Hot,
            duration: Duration::from_millis(1),
        }
    }

    #[tokio::test]
    async fn results_are_bounded_kept_for_their_ttl_and_waited_for() {
        let r = std::sync::Arc::new(Results::new(2, 1 << 20, Duration::from_millis(200)));
        r.start("a").unwrap();
        assert!(matches!(r.start("a"), Err(InvokeError::Invalid(_))));
        r.start("b").unwrap();
        assert!(matches!(r.start("c"), Err(InvokeError::OverCapacity(_))));
        // A waiter is woken by the end.
        let waiter = {
            let r = r.clone();
            tokio::spawn(async move { r.get("a", Duration::from_secs(5)).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        r.finish("a", Ok(answer("a")));
        assert_eq!(waiter.await.unwrap(), Some(Outcome::Ended(Ok(answer("a")))));
        assert_eq!(
            r.get("b", Duration::from_millis(10)).await,
            Some(Outcome::Running)
        );
        assert_eq!(r.get("nope", Duration::ZERO).await, None);
        // Ended results expire; running ones never do; the room is taken back.
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert_eq!(r.get("a", Duration::ZERO).await, None);
        r.start("c").unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!(r.bytes(), 0, "the expired output's bytes are given back");
    }

    #[tokio::test]
    async fn outputs_past_the_byte_budget_are_not_kept_and_an_expired_id_is_free_again() {
        let r = Results::new(10, 5, Duration::from_millis(100));
        r.start("a").unwrap();
        r.finish("a", Ok(answer("a")));
        assert_eq!(r.bytes(), 3);
        r.start("b").unwrap();
        r.finish("b", Ok(answer("b")));
        match r.get("b", Duration::ZERO).await {
            Some(Outcome::Ended(Err(InvokeError::OverCapacity(m)))) => {
                assert!(m.contains("max_result_mb"), "{m}")
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(r.bytes(), 3);
        tokio::time::sleep(Duration::from_millis(150)).await;
        // Expired, not yet swept: its id may be used again.
        r.start("a").unwrap();
        r.finish("a", Ok(answer("a")));
        assert_eq!(r.bytes(), 3);
    }
}
