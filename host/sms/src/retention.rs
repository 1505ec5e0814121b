//! Retention (`[retention]`): what keeps SMS's memory and storage bounded over months.
//!
//! - A finished execution leaves memory `memory_age_secs` after it finished, or earlier when more
//!   than `memory_count` finished ones are held (the longest finished go first). Its record stays
//!   in storage ([`crate::history`]), where reads by id and listings still find it.
//! - A stored finished execution is deleted `records_age_secs` after it finished (0: kept).
//! - Events older than `events_age_secs`, and all but the newest `events_count`, are deleted
//!   (0: no limit of that kind); a reader that asks to resume before what is left is told
//!   "compacted, resume from N" ([`crate::events`]).
//!
//! Memory is trimmed every second; storage every `sweep_interval_secs`, a bounded amount per
//! sweep (what is left over waits for the next).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use spear_config::Problems;
use tokio::sync::watch;

use crate::error::Result;
use crate::model::{Execution, now_ms};
use crate::service::Sms;

/// `[retention]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RetentionConfig {
    /// Seconds a finished execution stays in memory (0 to 30 days).
    pub memory_age_secs: u64,
    /// Most finished executions held in memory (0 to 10,000,000).
    pub memory_count: u64,
    /// Seconds a finished execution's record is kept in storage (0: for good; else at least
    /// `memory_age_secs`).
    pub records_age_secs: u64,
    /// Seconds an event is kept (0: no limit by age).
    pub events_age_secs: u64,
    /// Most events kept (0: no limit by count).
    pub events_count: u64,
    /// Seconds between sweeps of storage (1 to 86,400).
    pub sweep_interval_secs: u64,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        Self {
            memory_age_secs: 3_600,
            memory_count: 10_000,
            records_age_secs: 7 * 86_400,
            events_age_secs: 7 * 86_400,
            events_count: 1_000_000,
            sweep_interval_secs: 60,
        }
    }
}

const MAX_MEMORY_AGE: u64 = 30 * 86_400;
const MAX_MEMORY_COUNT: u64 = 10_000_000;
/// Ten years: longer is "for good", which 0 says.
const MAX_AGE: u64 = 10 * 365 * 86_400;

impl RetentionConfig {
    /// Add a problem for each key out of range.
    pub fn validate(&self, problems: &mut Problems) {
        if self.memory_age_secs > MAX_MEMORY_AGE {
            problems.invalid(
                "retention.memory_age_secs",
                format!("must be at most {MAX_MEMORY_AGE} (30 days)"),
            );
        }
        if self.memory_count > MAX_MEMORY_COUNT {
            problems.invalid(
                "retention.memory_count",
                format!("must be at most {MAX_MEMORY_COUNT}"),
            );
        }
        if self.records_age_secs != 0 && self.records_age_secs < self.memory_age_secs {
            problems.invalid(
                "retention.records_age_secs",
                format!(
                    "must be 0 (kept for good) or at least retention.memory_age_secs ({})",
                    self.memory_age_secs
                ),
            );
        }
        for (key, v) in [
            ("retention.records_age_secs", self.records_age_secs),
            ("retention.events_age_secs", self.events_age_secs),
        ] {
            if v > MAX_AGE {
                problems.invalid(
                    key,
                    format!("must be at most {MAX_AGE} (ten years; 0: no limit)"),
                );
            }
        }
        if !(1..=86_400).contains(&self.sweep_interval_secs) {
            problems.invalid("retention.sweep_interval_secs", "must be 1 to 86400");
        }
    }
}

/// Finished executions looked at per memory trim.
const MEMORY_BUDGET: usize = 100_000;
/// Stored finished executions deleted per sweep.
const RECORDS_BUDGET: usize = 100_000;
/// Events deleted per sweep.
const EVENTS_BUDGET: u64 = 500_000;

/// Least time between two returns of freed memory to the system.
const RELEASE_EVERY: Duration = Duration::from_secs(10);

/// Give the memory the allocator holds free back to the system (glibc keeps what executions that
/// left memory freed, in its arenas: without this, resident memory creeps up to a plateau well
/// above what is live). Off the async threads: it walks the arenas.
async fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    let _ = tokio::task::spawn_blocking(|| {
        // SAFETY: malloc_trim only returns free memory of glibc's heaps to the system; it
        // takes the arenas' locks itself and has no preconditions.
        unsafe { libc::malloc_trim(0) }
    })
    .await;
}

fn secs_ago(now: i64, secs: u64) -> i64 {
    now.saturating_sub(i64::try_from(secs.saturating_mul(1000)).unwrap_or(i64::MAX))
}

/// Trim memory every second and sweep storage every `sweep_interval_secs` until `stop`.
pub async fn run(sms: Arc<Sms>, mut stop: watch::Receiver<bool>) {
    let config = sms.retention;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let every = Duration::from_secs(config.sweep_interval_secs);
    let mut last_sweep = Instant::now();
    let mut last_release = Instant::now();
    // The first sweep of payload orphans comes with the first storage sweep after a start.
    let mut last_orphans: Option<Instant> = None;
    let sweeping = Arc::new(std::sync::atomic::AtomicBool::new(false));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        if sms.trim_memory(now_ms()).await > 0 && last_release.elapsed() >= RELEASE_EVERY {
            last_release = Instant::now();
            release_free_memory().await;
        }
        // Storage is swept in a task of its own, so that a long sweep does not hold up the
        // trimming of memory; one at a time.
        if last_sweep.elapsed() >= every && !sweeping.swap(true, Ordering::AcqRel) {
            last_sweep = Instant::now();
            let orphans = last_orphans.is_none_or(|t| t.elapsed() >= ORPHANS_EVERY);
            if orphans {
                last_orphans = Some(Instant::now());
            }
            let (sms, sweeping) = (sms.clone(), sweeping.clone());
            tokio::spawn(async move {
                if let Err(e) = sms.sweep_storage(now_ms()).await {
                    tracing::warn!("retention sweep: {e}");
                }
                if orphans {
                    match sms.blobs.sweep_orphans(&sms.db, ORPHAN_GRACE).await {
                        Ok(0) => {}
                        Ok(n) => tracing::info!("deleted {n} payload files no record refers to"),
                        Err(e) => tracing::warn!("sweeping payload orphans: {e}"),
                    }
                }
                sweeping.store(false, Ordering::Release);
            });
        }
    }
}

/// How often the payload directory is walked for files no record refers to.
const ORPHANS_EVERY: Duration = Duration::from_secs(6 * 3600);
/// How old an unreferenced payload file must be to be deleted as an orphan (one being written
/// into a record is younger).
const ORPHAN_GRACE: Duration = Duration::from_secs(3600);

impl Sms {
    /// Let finished executions past the memory retention go from memory; returns how many went.
    pub async fn trim_memory(&self, now: i64) -> usize {
        let r = self.retention;
        let keep = usize::try_from(r.memory_count).unwrap_or(usize::MAX);
        self.executions
            .write()
            .await
            .evict(secs_ago(now, r.memory_age_secs), keep, MEMORY_BUDGET)
    }

    /// Delete stored finished executions and events past their retention (a bounded amount);
    /// returns how many of each were deleted.
    pub async fn sweep_storage(&self, now: i64) -> Result<(usize, u64)> {
        let r = self.retention;
        let records = if r.records_age_secs == 0 {
            0
        } else {
            self.forget_finished(secs_ago(now, r.records_age_secs))
                .await?
        };
        let cutoff = (r.events_age_secs > 0).then(|| secs_ago(now, r.events_age_secs));
        let keep = (r.events_count > 0).then_some(r.events_count);
        let events = self.events.compact(cutoff, keep, EVENTS_BUDGET).await?;
        self.expire_cancels(now).await?;
        Ok((records, events))
    }

    /// Delete the stored finished executions that finished before `cutoff_ms` (none that pending
    /// executions wait on, nor one still in memory).
    async fn forget_finished(&self, cutoff_ms: i64) -> Result<usize> {
        let mut after: Option<String> = None;
        let mut forgotten = 0;
        while forgotten < RECORDS_BUDGET {
            let chunk = crate::history::page(&self.db, after.as_deref(), 512, false).await?;
            let pinned = |e: &Execution, t: &crate::table::ExecTable| {
                t.has_waiters(&e.execution_id) || t.contains_key(&e.execution_id)
            };
            // From the look at what pins a record to the commit of its deletion, a submission
            // that depends on a stored record waits (it would find it, then lose it).
            let forgetting = self.forgetting.lock().await;
            let gone: Vec<&Execution> = {
                let table = self.executions.read().await;
                let mut gone = Vec::new();
                for e in &chunk.executions {
                    // Ids are in submission order, and an execution finishes after it is
                    // submitted: from here on none finished before the cutoff.
                    if e.submitted_at_ms >= cutoff_ms || forgotten + gone.len() == RECORDS_BUDGET {
                        break;
                    }
                    if e.updated_at_ms < cutoff_ms && !pinned(e, &table) {
                        gone.push(e);
                    }
                }
                gone
            };
            let stop = chunk
                .executions
                .iter()
                .any(|e| e.submitted_at_ms >= cutoff_ms)
                || chunk.end.is_none();
            let mut groups = Vec::new();
            let mut blobs = Vec::new();
            for e in &gone {
                let mut ops = crate::history::forget_ops(&e.execution_id);
                // Its payloads lose its references; unreferenced, they go after the batch.
                let (unrefs, dropped) =
                    crate::payloads::blob_ref_ops(&e.execution_id, e.blobs(), Vec::new());
                ops.extend(unrefs);
                groups.push(ops);
                blobs.extend(dropped);
            }
            self.db.write_groups(groups).await?;
            drop(forgetting);
            forgotten += gone.len();
            self.release_blobs(blobs).await;
            if stop {
                break;
            }
            after = chunk.end;
        }
        Ok(forgotten)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_hold_and_each_bad_key_is_named() {
        let mut ok = Problems::new(Default::default());
        RetentionConfig::default().validate(&mut ok);
        assert!(ok.finish().is_ok());
        let bad = RetentionConfig {
            memory_age_secs: 100,
            records_age_secs: 50,
            memory_count: u64::MAX,
            events_age_secs: u64::MAX,
            events_count: 0,
            sweep_interval_secs: 0,
        };
        let mut problems = Problems::new(Default::default());
        bad.validate(&mut problems);
        let text = problems.finish().unwrap_err().to_string();
        for key in [
            "retention.records_age_secs",
            "retention.memory_count",
            "retention.events_age_secs",
            "retention.sweep_interval_secs",
        ] {
            assert!(text.contains(key), "{key} in {text}");
        }
    }
}
