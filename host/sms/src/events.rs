//! The event log: append-only, each event at a strictly increasing cursor, durable before it is
//! announced; readers resume from any cursor (history from storage, then live events).

use std::sync::Arc;

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
        let (live, _) = broadcast::channel(4096);
        Ok(Self {
            db,
            next: Arc::new(std::sync::Mutex::new(last + 1)),
            live,
        })
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
            let mut last = after;
            while last < until {
                let page = log.read(last, 512).await?;
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
            let mut last = after;
            loop {
                // History first (and again after falling behind the live channel).
                loop {
                    let page = log.read(last, 512).await?;
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
