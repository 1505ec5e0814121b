//! The event log: append-only, each event at a strictly increasing cursor, durable before it is
//! announced; readers resume from any cursor (history from storage, then live events) back to
//! the horizon that retention compacted it to ([`compact`](EventLog::compact)): asked to resume
//! before it, a reader is told "compacted, resume from N".

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::Stream;
use tokio::sync::broadcast;

use crate::db::Db;
use crate::error::Result;
use crate::model::{Event, now_ms};

const PREFIX: &str = "event/";

fn key(cursor: u64) -> String {
    format!("{PREFIX}{cursor:020}")
}

/// The log.
#[derive(Clone)]
pub struct EventLog {
    db: Db,
    next: Arc<std::sync::Mutex<u64>>,
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
        let last = db
            .last_key(PREFIX)
            .await?
            .and_then(|k| k[PREFIX.len()..].parse::<u64>().ok())
            .unwrap_or(0);
        let first = db
            .keys(PREFIX, None, 1)
            .await?
            .first()
            .and_then(|k| k.strip_prefix(PREFIX)?.parse::<u64>().ok())
            .unwrap_or(last + 1);
        let (live, _) = broadcast::channel(4096);
        Ok(Self {
            db,
            next: Arc::new(std::sync::Mutex::new(last + 1)),
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
            return Err(crate::error::SmsError::Compacted {
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
        let horizon = horizon.min(first.saturating_add(budget)).min(next);
        if horizon <= first {
            return Ok(0);
        }
        self.first.store(horizon, Ordering::Release);
        let mut cursor = first;
        while cursor < horizon {
            let end = horizon.min(cursor + 2_000);
            let ops = (cursor..end)
                .map(|c| spear_plugin_api::storage::BatchOp::Delete {
                    key: key(c).into_bytes(),
                })
                .collect();
            self.db.batch(ops).await?;
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
            return Err(crate::error::SmsError::Compacted {
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
        *next += events.len() as u64;
        Ok(Queued {
            done,
            events,
            live: self.live.clone(),
        })
    }

    /// The cursor of the last event (0 when none).
    pub async fn last_cursor(&self) -> u64 {
        *self.next.lock().unwrap_or_else(|p| p.into_inner()) - 1
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
            let mut last = log.resume_point(after)?;
            while last < until {
                let page = log.read_since(last, 512).await?;
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

    /// Every event after `after`, then live ones, without gaps or repeats.
    pub fn subscribe(&self, after: u64) -> impl Stream<Item = Result<Event>> + Send + use<> {
        let log = self.clone();
        async_stream::try_stream! {
            let mut rx = log.live.subscribe();
            let mut last = log.resume_point(after)?;
            loop {
                // History first (and again after falling behind the live channel).
                loop {
                    let page = log.read_since(last, 512).await?;
                    if page.is_empty() {
                        break;
                    }
                    for event in page {
                        last = event.cursor;
                        yield event;
                    }
                }
                loop {
                    match rx.recv().await {
                        Ok(event) if event.cursor <= last => continue,
                        Ok(event) if event.cursor == last + 1 => {
                            last = event.cursor;
                            yield event;
                        }
                        // A gap (events stored before we subscribed) or lag: re-read storage.
                        Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => break,
                        Err(broadcast::error::RecvError::Closed) => return,
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
            .map_err(crate::error::SmsError::Storage)
    }

    /// Announce the events to live subscribers (after [`durable`](Self::durable)).
    pub fn announce(self) -> Vec<Event> {
        for e in &self.events {
            let _ = self.live.send(e.clone());
        }
        self.events
    }
}
