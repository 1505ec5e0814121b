//! The event log: append-only, each event at a strictly increasing cursor, durable before it is
//! announced; readers resume from any cursor (history from storage, then live events) back to
//! the horizon that retention compacted it to ([`compact`](EventLog::compact)): asked to resume
//! before it, a reader is told "compacted, resume from N".

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::Stream;
use tokio::sync::broadcast;

use crate::db::Db;
use crate::error::{Result, SmsError};
use crate::model::{Event, now_ms};
use settle::Unsettled;

const PREFIX: &str = "event/";
/// Live events a subscriber keeps ahead of a gap, at most (past it, it reads storage again).
const MAX_AHEAD: usize = 1024;

mod settle;

fn key(cursor: u64) -> String {
    format!("{PREFIX}{cursor:020}")
}

/// The first stored cursor after `after` (none: from the start).
async fn first_after(db: &Db, after: Option<u64>) -> Result<Option<u64>> {
    Ok(db
        .keys(PREFIX, after.map(key), 1)
        .await?
        .first()
        .and_then(|k| k.strip_prefix(PREFIX)?.parse::<u64>().ok()))
}

/// The last stored cursor, `first` being one: a binary search over cursors (whether any is
/// stored after a given one), so that a start reads some sixty keys, not the whole history.
async fn last_stored(db: &Db, first: u64) -> Result<u64> {
    // Stored: `lo`; none after `hi`.
    let (mut lo, mut hi) = (first, u64::MAX - 1);
    while lo < hi {
        let mid = lo + (hi - lo).div_ceil(2);
        match first_after(db, Some(mid - 1)).await? {
            Some(c) => lo = c.min(hi),
            None => hi = mid - 1,
        }
    }
    Ok(lo)
}

/// The log.
#[derive(Clone)]
pub struct EventLog {
    db: Db,
    next: Arc<std::sync::Mutex<u64>>,
    /// The queued writes not yet announced (nor abandoned): their change may not be applied in
    /// memory yet ([`EventLog::settled`]). Locked after `next`.
    unsettled: Arc<Unsettled>,
    /// The oldest cursor kept: every event before it is (being) deleted.
    first: Arc<AtomicU64>,
    live: broadcast::Sender<Event>,
}

impl std::fmt::Debug for EventLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EventLog")
    }
}

impl EventLog {
    /// Open the log, continuing after the last stored cursor.
    pub async fn open(db: Db) -> Result<Self> {
        let first = first_after(&db, None).await?;
        let last = match first {
            Some(first) => last_stored(&db, first).await?,
            None => 0,
        };
        let first = first.unwrap_or(last + 1);
        let (live, _) = broadcast::channel(4096);
        Ok(Self {
            db,
            next: Arc::new(std::sync::Mutex::new(last + 1)),
            unsettled: Arc::default(),
            first: Arc::new(AtomicU64::new(first)),
            live,
        })
    }

    /// The oldest cursor kept (the one after the last when the log is empty).
    pub fn horizon(&self) -> u64 {
        self.first.load(Ordering::Acquire)
    }

    /// Where a reader asking to resume after `after` starts: there, or (0) after the last
    /// compacted event; an error naming where to resume when events after `after` were
    /// compacted.
    pub fn resume_point(&self, after: u64) -> Result<u64> {
        let first = self.horizon();
        if after == 0 {
            return Ok(first.saturating_sub(1));
        }
        if after.saturating_add(1) < first {
            return Err(SmsError::Compacted {
                after,
                resume_from: first - 1,
            });
        }
        Ok(after)
    }

    /// Delete the events older than `cutoff_ms` and all but the newest `keep` (at most `budget`
    /// of them); returns how many cursors were compacted. The horizon moves first, so a reader
    /// that reads during the deletion notices what it may have missed.
    pub async fn compact(
        &self,
        cutoff_ms: Option<i64>,
        keep: Option<u64>,
        budget: u64,
    ) -> Result<u64> {
        let first = self.horizon();
        let next = *self.next.lock().unwrap_or_else(|p| p.into_inner());
        let mut horizon = first;
        if let Some(keep) = keep {
            horizon = horizon.max(next.saturating_sub(keep));
        }
        if let Some(cutoff) = cutoff_ms {
            // Events are in time order: walk from the horizon while they are older.
            'walk: while horizon < next && horizon - first < budget {
                let page = self.read(horizon.saturating_sub(1), 512).await?;
                if page.is_empty() {
                    break;
                }
                for e in &page {
                    if e.at_ms >= cutoff {
                        horizon = horizon.max(e.cursor);
                        break 'walk;
                    }
                    horizon = horizon.max(e.cursor + 1);
                }
            }
        }
        // The newest event stays, whatever its age: its cursor is where the log goes on from
        // after a restart (cursors are never handed out twice).
        let horizon = horizon
            .min(first.saturating_add(budget))
            .min(next.saturating_sub(1));
        if horizon <= first {
            return Ok(0);
        }
        self.first.store(horizon, Ordering::Release);
        let mut cursor = first;
        // One write per chunk, within the backend's batch limits: a failed write leaves every
        // event from `cursor` on in place.
        let chunk = self.db.max_ops().min(2_000);
        while cursor < horizon {
            let end = horizon.min(cursor + chunk);
            let ops = (cursor..end)
                .map(|c| spear_plugin_api::storage::BatchOp::Delete {
                    key: key(c).into_bytes(),
                })
                .collect();
            if let Err(e) = self.db.batch(ops).await {
                // Those from `cursor` on are still there: readers may read them, and the next
                // compaction deletes them.
                self.first.store(cursor, Ordering::Release);
                return Err(e);
            }
            cursor = end;
        }
        Ok(horizon - first)
    }

    /// Events after `after`, at most `limit`, from storage; an error when some of those were
    /// compacted away (the page may miss them).
    async fn read_since(&self, after: u64, limit: u32) -> Result<Vec<Event>> {
        let page = self.read(after, limit).await?;
        // Read after the page: a compaction that began before it is seen.
        let first = self.horizon();
        if after.saturating_add(1) < first {
            return Err(SmsError::Compacted {
                after,
                resume_from: first - 1,
            });
        }
        Ok(page)
    }

    /// Append an event; returns it once stored.
    pub async fn append(
        &self,
        kind: &str,
        subject: &str,
        data: serde_json::Value,
    ) -> Result<Event> {
        self.append_with(Vec::new(), vec![(kind, subject.to_owned(), data)])
            .await
            .map(|mut events| events.remove(0))
    }

    /// Append several events and store them together with `ops`, in one atomic batch (one durable
    /// write for a whole scheduling round); returns once durable.
    pub async fn append_with(
        &self,
        ops: Vec<spear_plugin_api::storage::BatchOp>,
        events: Vec<(&str, String, serde_json::Value)>,
    ) -> Result<Vec<Event>> {
        self.queue(ops, events)?.commit().await
    }

    /// Take cursors and queue the write now, in order with every other write; the returned
    /// [`Queued`] completes (and announces the events) once the write is durable. The lock is
    /// held only while queueing, so concurrent appends share one commit.
    pub fn queue(
        &self,
        mut ops: Vec<spear_plugin_api::storage::BatchOp>,
        events: Vec<(&str, String, serde_json::Value)>,
    ) -> Result<Queued> {
        let mut next = self.next.lock().unwrap_or_else(|p| p.into_inner());
        let at_ms = now_ms();
        let by = crate::auth::audit::actor();
        let events: Vec<Event> = events
            .into_iter()
            .enumerate()
            .map(|(i, (kind, subject, data))| Event {
                cursor: *next + i as u64,
                at_ms,
                kind: kind.into(),
                subject,
                data,
                by: by.clone(),
            })
            .collect();
        for e in &events {
            ops.push(spear_plugin_api::storage::BatchOp::Put {
                key: key(e.cursor).into_bytes(),
                value: serde_json::to_vec(e)
                    .map_err(|x| crate::error::SmsError::Storage(x.to_string()))?,
            });
        }
        let done = self.db.enqueue(ops);
        let first = events
            .first()
            .map(|e| (e.cursor, e.cursor + events.len() as u64 - 1));
        if let Some((first, _)) = first {
            self.unsettled.queued(first);
        }
        *next += events.len() as u64;
        Ok(Queued {
            done,
            events,
            live: self.live.clone(),
            unsettled: self.unsettled.clone(),
            first,
        })
    }

    /// The cursor of the last event (0 when none), queued or stored.
    pub async fn last_cursor(&self) -> u64 {
        *self.next.lock().unwrap_or_else(|p| p.into_inner()) - 1
    }

    /// The cursor up to which every event's change is applied (announced, or its write
    /// abandoned): a reader who takes this cursor, then reads a record, and then follows the
    /// events after the cursor ([`subscribe`](Self::subscribe)) misses no change of it. (The last
    /// cursor may be past it: an event queued, or durable, whose change is not applied yet.)
    pub fn settled(&self) -> u64 {
        let next = self.next.lock().unwrap_or_else(|p| p.into_inner());
        self.unsettled.settled(*next)
    }

    /// Events after `after`, at most `limit`, from storage.
    pub async fn read(&self, after: u64, limit: u32) -> Result<Vec<Event>> {
        self.db.scan(PREFIX, Some(key(after)), limit).await
    }

    /// The events after `after` up to `until` (inclusive) as stored now, then the end: the
    /// history without following.
    pub fn history(
        &self,
        after: u64,
        until: u64,
    ) -> impl Stream<Item = Result<Event>> + Send + use<> {
        let log = self.clone();
        async_stream::try_stream! {
            // A reader from the oldest event kept follows the horizon as it moves.
            let from_oldest = after == 0;
            let mut last = log.resume_point(after)?;
            while last < until {
                let page = match log.read_since(last, 512).await {
                    Err(SmsError::Compacted { resume_from, .. }) if from_oldest => {
                        last = resume_from;
                        continue;
                    }
                    page => page?,
                };
                if page.is_empty() {
                    break;
                }
                for event in page {
                    if event.cursor > until {
                        return;
                    }
                    last = event.cursor;
                    yield event;
                }
            }
        }
    }

    /// Every event after `after`, then live ones, without gaps or repeats; each only once it is
    /// settled (its change applied), so that a reader who reads a record on hearing of it sees
    /// the change.
    ///
    /// Live events may come out of order (writes are announced by their own tasks): one ahead of
    /// the next expected is kept until the gap is filled, live, or from storage once the missing
    /// write settles without an announcement (abandoned after it was stored).
    pub fn subscribe(&self, after: u64) -> impl Stream<Item = Result<Event>> + Send + use<> {
        let log = self.clone();
        async_stream::try_stream! {
            let mut rx = log.live.subscribe();
            let mut settling = log.unsettled.watch();
            // A reader from the oldest event kept follows the horizon as it moves.
            let from_oldest = after == 0;
            let mut last = log.resume_point(after)?;
            // Live events ahead of `last + 1`, by cursor; and the highest cursor known to be
            // taken (heard live, or taken before this began or while it lagged).
            let mut ahead: BTreeMap<u64, Event> = BTreeMap::new();
            let mut seen = log.last_cursor().await;
            loop {
                // The settled events in storage first (and again after a gap or a lag).
                'history: loop {
                    let settled = log.settled();
                    if last >= settled {
                        break;
                    }
                    let page = match log.read_since(last, 512).await {
                        Err(SmsError::Compacted { resume_from, .. }) if from_oldest => {
                            last = resume_from;
                            continue;
                        }
                        page => page?,
                    };
                    if page.is_empty() {
                        break;
                    }
                    for event in page {
                        if event.cursor > settled {
                            break 'history;
                        }
                        last = event.cursor;
                        yield event;
                    }
                }
                ahead.retain(|cursor, _| *cursor > last);
                loop {
                    // The ones kept that now follow on.
                    while let Some(event) = ahead.remove(&(last + 1)) {
                        last = event.cursor;
                        yield event;
                    }
                    tokio::select! {
                        received = rx.recv() => match received {
                            Ok(event) if event.cursor <= last => {}
                            Ok(event) if event.cursor == last + 1 => {
                                last = event.cursor;
                                seen = seen.max(last);
                                yield event;
                            }
                            Ok(event) => {
                                seen = seen.max(event.cursor);
                                ahead.insert(event.cursor, event);
                                // The gap settled already (abandoned before this was announced,
                                // which settles before it sends), or too many kept: storage.
                                if log.settled() > last || ahead.len() > MAX_AHEAD {
                                    ahead.clear();
                                    break;
                                }
                            }
                            Err(broadcast::error::RecvError::Lagged(_)) => {
                                ahead.clear();
                                seen = seen.max(log.last_cursor().await);
                                break;
                            }
                            Err(broadcast::error::RecvError::Closed) => return,
                        },
                        // A write settled: when events past `last` are known, the next one may
                        // have been stored and never announced (or dropped from those kept);
                        // storage has it.
                        changed = settling.changed() => {
                            if changed.is_err() {
                                return;
                            }
                            // The last cursor of the writes settled so far: one abandoned after
                            // it was stored is never heard live.
                            seen = seen.max(*settling.borrow_and_update());
                            if seen > last && log.settled() > last {
                                break;
                            }
                        }
                    }
                }
            }
        }
    }
}

/// A queued append: await [`commit`](Queued::commit) for durability.
pub struct Queued {
    done: tokio::sync::oneshot::Receiver<spear_plugin_runtime::group::WriteResult>,
    events: Vec<Event>,
    live: broadcast::Sender<Event>,
    /// The log's unsettled writes, which hold `first` until this is announced or dropped.
    unsettled: Arc<Unsettled>,
    /// Its first and last cursors (none without events).
    first: Option<(u64, u64)>,
}

impl Drop for Queued {
    /// Abandoned (its write failed, or its caller gave up): settled all the same.
    fn drop(&mut self) {
        if let Some((first, last)) = self.first.take() {
            self.unsettled.settle(first, last);
        }
    }
}

impl Queued {
    /// Wait until the write is durable, then announce the events to live subscribers.
    pub async fn commit(mut self) -> Result<Vec<Event>> {
        self.durable().await?;
        Ok(self.announce())
    }

    /// Wait until the write is durable, without announcing it yet: the caller applies the change
    /// in memory first, so that a subscriber who reads the record on hearing the event sees it.
    pub async fn durable(&mut self) -> Result<()> {
        (&mut self.done)
            .await
            .map_err(|_| crate::error::SmsError::Storage("the storage writer has stopped".into()))?
            .map_err(crate::db::write_error)
    }

    /// Announce the events to live subscribers (after [`durable`](Self::durable)).
    pub fn announce(mut self) -> Vec<Event> {
        // Settled before it is sent: a reader that hears of it finds it settled.
        if let Some((first, last)) = self.first.take() {
            self.unsettled.settle(first, last);
        }
        for e in &self.events {
            let _ = self.live.send(e.clone());
        }
        std::mem::take(&mut self.events)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    async fn log_of(n: usize) -> EventLog {
        let db = Db::new(Arc::new(
            spear_plugin_api::memory_store::MemoryStore::default(),
        ));
        let log = EventLog::open(db).await.unwrap();
        for i in 0..n {
            log.append("test", &i.to_string(), serde_json::Value::Null)
                .await
                .unwrap();
        }
        log
    }

    /// A watcher takes a cursor, reads a record, then follows the events after the cursor. A
    /// write queued (even durable) whose change is not applied in memory yet must come after
    /// that cursor, and come only once applied (announced); else the watcher, having read the
    /// record without the change, never hears of it (the web admin once showed a finished
    /// execution as `assigned` for good).
    #[tokio::test]
    async fn a_change_not_yet_applied_is_after_the_settled_cursor_and_comes_once_announced() {
        let log = log_of(1).await;
        let mut pending = log
            .queue(
                Vec::new(),
                vec![("test", "x".into(), serde_json::Value::Null)],
            )
            .unwrap();
        pending.durable().await.unwrap();
        assert_eq!((log.last_cursor().await, log.settled()), (2, 1));
        let mut events = Box::pin(log.subscribe(log.settled()));
        // Stored, but its change is not applied: not delivered from storage.
        let early =
            tokio::time::timeout(std::time::Duration::from_millis(200), events.next()).await;
        assert!(early.is_err(), "delivered before it was applied: {early:?}");
        let announced = pending.announce();
        assert_eq!(announced[0].cursor, 2);
        let heard = events.next().await.unwrap().unwrap();
        assert_eq!((heard.cursor, heard.subject.as_str()), (2, "x"));
        assert_eq!(log.settled(), 2);

        // A write abandoned after it was stored settles too; a new reader gets it from storage.
        let mut abandoned = log
            .queue(
                Vec::new(),
                vec![("test", "y".into(), serde_json::Value::Null)],
            )
            .unwrap();
        abandoned.durable().await.unwrap();
        assert_eq!(log.settled(), 2);
        drop(abandoned);
        assert_eq!(log.settled(), 3);
        let mut from_start = Box::pin(log.subscribe(2));
        assert_eq!(from_start.next().await.unwrap().unwrap().cursor, 3);
    }

    /// Writes are announced by their own tasks, not always in cursor order; and a stored write
    /// may be abandoned without an announcement. A follower gets every event, in order, without
    /// waiting for a later one.
    #[tokio::test]
    async fn events_announced_out_of_order_or_never_reach_a_follower_in_order() {
        use std::time::Duration;
        let log = log_of(1).await;
        let stored = |subject: &str| {
            let log = log.clone();
            let subject = subject.to_owned();
            async move {
                let mut q = log
                    .queue(Vec::new(), vec![("test", subject, serde_json::Value::Null)])
                    .unwrap();
                q.durable().await.unwrap();
                q
            }
        };
        let mut events = Box::pin(log.subscribe(1));
        let quiet = Duration::from_millis(100);
        assert!(tokio::time::timeout(quiet, events.next()).await.is_err());
        let (a, b) = (stored("a").await, stored("b").await);
        b.announce();
        // 3 is settled, 2 is not: nothing yet.
        assert!(tokio::time::timeout(quiet, events.next()).await.is_err());
        a.announce();
        let mut next = async || events.next().await.unwrap().unwrap().cursor;
        assert_eq!(next().await, 2);
        assert_eq!(next().await, 3);
        // 4 stored and abandoned after 5 was announced: 4 from storage, then 5.
        let (c, d) = (stored("c").await, stored("d").await);
        d.announce();
        assert!(tokio::time::timeout(quiet, events.next()).await.is_err());
        drop(c);
        let mut next = async || events.next().await.unwrap().unwrap().cursor;
        assert_eq!(next().await, 4);
        assert_eq!(next().await, 5);
        // 6 abandoned before 7 is announced: 6, then 7.
        let (e, f) = (stored("e").await, stored("f").await);
        drop(e);
        f.announce();
        let mut next = async || events.next().await.unwrap().unwrap().cursor;
        assert_eq!(next().await, 6);
        assert_eq!(next().await, 7);
        // 8 abandoned, and nothing after it: 8 all the same.
        drop(stored("g").await);
        assert_eq!(events.next().await.unwrap().unwrap().cursor, 8);
    }

    #[tokio::test]
    async fn a_reopened_log_goes_on_after_its_last_event_whatever_the_gaps() {
        let log = log_of(300).await;
        let db = log.db.clone();
        assert_eq!(
            EventLog::open(db.clone())
                .await
                .unwrap()
                .last_cursor()
                .await,
            300
        );
        // Gaps (cursors of failed writes) and a compacted start.
        let gone: Vec<_> = (1..=50)
            .chain(120..=180)
            .chain(299..=299)
            .map(|c| spear_plugin_api::storage::BatchOp::Delete {
                key: key(c).into_bytes(),
            })
            .collect();
        db.batch(gone).await.unwrap();
        let reopened = EventLog::open(db.clone()).await.unwrap();
        assert_eq!(reopened.last_cursor().await, 300);
        assert_eq!(reopened.horizon(), 51);
        let appended = reopened
            .append("test", "x", serde_json::Value::Null)
            .await
            .unwrap();
        assert_eq!(appended.cursor, 301);
        let empty = Db::new(Arc::new(
            spear_plugin_api::memory_store::MemoryStore::default(),
        ));
        let fresh = EventLog::open(empty).await.unwrap();
        assert_eq!((fresh.last_cursor().await, fresh.horizon()), (0, 1));
    }

    #[tokio::test]
    async fn a_reader_overtaken_by_compaction_is_told_where_to_resume() {
        let log = log_of(1_000).await;
        // A reader from cursor 5 reads the first page (512 events), then compaction keeps
        // only the newest 10: the next page is gone.
        let mut behind = Box::pin(log.history(5, 1_000));
        assert_eq!(behind.next().await.unwrap().unwrap().cursor, 6);
        // A reader from the oldest kept, at the same place.
        let mut oldest = Box::pin(log.history(0, 1_000));
        assert_eq!(oldest.next().await.unwrap().unwrap().cursor, 1);
        assert_eq!(log.compact(None, Some(10), 100_000).await.unwrap(), 990);
        let mut last = 6;
        let err = loop {
            match behind.next().await.unwrap() {
                Ok(e) => last = e.cursor,
                Err(e) => break e,
            }
        };
        assert_eq!(last, 517, "the page read before the compaction is whole");
        assert!(
            matches!(
                err,
                SmsError::Compacted {
                    after: 517,
                    resume_from: 990
                }
            ),
            "{err}"
        );
        // The reader from the oldest follows the horizon: after its page, the newest ten.
        let cursors: Vec<u64> = oldest.map(|e| e.unwrap().cursor).collect().await;
        assert_eq!(cursors.len(), 511 + 10);
        assert_eq!(
            cursors[510..],
            (512..=512).chain(991..=1_000).collect::<Vec<_>>()[..]
        );
        // Asking to start before the horizon is refused at once; the newest event always stays.
        assert!(matches!(
            log.resume_point(3),
            Err(SmsError::Compacted {
                resume_from: 990,
                ..
            })
        ));
        assert_eq!(log.compact(Some(i64::MAX), None, 100_000).await.unwrap(), 9);
        assert_eq!(log.horizon(), 1_000, "the newest event stays");
    }
}
