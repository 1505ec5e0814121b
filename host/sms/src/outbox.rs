//! The per-node assignment streams: a node's outbox (a bounded channel its `Assignments` call
//! reads), what reconnecting sends again, and how a stored assignment leaves SMS.
//!
//! An assignment leaves SMS only once the write that placed it is durable: the scheduler stores
//! its round, then sends what it stored ([`Sms::send_stored`]); until then the execution is
//! marked *storing*, and a node that reconnects meanwhile is not sent it by
//! [`Sms::connect_node`] (the round sends it once stored). Both look at the marks and the
//! streams under one lock, so an assignment is sent exactly once, by one or the other.

use std::collections::{BTreeMap, HashMap};

use tokio::sync::mpsc;

use crate::error::Result;
use crate::events::Queued;
use crate::model::{ExecState, Execution};
use crate::service::Sms;

/// Assignments waiting in one node's stream before placement on that node backs off.
pub const OUTBOX_CAPACITY: usize = 1024;

/// One message of a node's stream: an execution to start or stop, an invocation to run
/// ([`crate::invocations`]), or a task to warm ([`crate::warms`]).
#[derive(Debug, Clone)]
#[expect(
    clippy::large_enum_variant,
    reason = "always boxed in the stream's channel: the variants' sizes cost nothing there"
)]
pub enum Outgoing {
    /// An execution to start (or stop).
    Assignment(Assignment),
    /// An invocation of a task's function.
    Invocation(spear_proto::v1::Invocation),
    /// Start a task's instances ahead of its invocations ([`crate::warms`]).
    Warm(spear_proto::v1::Warm),
}

/// An execution sent to a node.
#[derive(Debug, Clone)]
pub struct Assignment {
    /// Position in this SMS session's assignment sequence.
    pub cursor: u64,
    /// The execution to start (or stop).
    pub execution: Execution,
    /// Stop it instead of starting it.
    pub cancel: bool,
}

/// A connected node's stream. Assignments are boxed so that an idle node's channel buffer stays
/// small (tokio allocates its slots in blocks).
pub(crate) struct Outbox {
    pub(crate) tx: mpsc::Sender<Box<Outgoing>>,
}

/// How dispatching to a node went.
pub(crate) enum Dispatch {
    Sent,
    Full,
    NotConnected,
}

/// The open streams and the executions whose assignment is being stored (not yet to be sent).
#[derive(Default)]
pub(crate) struct Outboxes {
    pub(crate) boxes: BTreeMap<String, Outbox>,
    /// Execution id → the attempt being stored (a later round may store another attempt of it,
    /// placed elsewhere, before the earlier one's task looks at it).
    storing: HashMap<String, u32>,
}

/// An assignment the scheduler queued for storage, to send once it is durable.
pub(crate) struct Stored {
    /// The execution as it was before (ready), to restore in memory if the write fails.
    pub(crate) before: Execution,
    /// As assigned.
    pub(crate) assigned: Execution,
    /// Its write and event.
    pub(crate) write: Queued,
}

impl Outboxes {
    /// Queue an assignment (or a cancel) on `node`'s stream.
    fn send(&self, sms: &Sms, node: &str, execution: Execution, cancel: bool) -> Dispatch {
        let Some(outbox) = self.boxes.get(node) else {
            return Dispatch::NotConnected;
        };
        let cursor = sms
            .next_cursor
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        match outbox
            .tx
            .try_send(Box::new(Outgoing::Assignment(Assignment {
                cursor,
                execution,
                cancel,
            }))) {
            Ok(()) => Dispatch::Sent,
            Err(mpsc::error::TrySendError::Full(_)) => Dispatch::Full,
            Err(mpsc::error::TrySendError::Closed(_)) => {
                sms.prune_soon
                    .store(true, std::sync::atomic::Ordering::Relaxed);
                Dispatch::NotConnected
            }
        }
    }
}

impl Sms {
    /// Open node `uuid`'s assignment stream: first the executions already placed on it (a
    /// reconnecting Spearlet gets them again) whose assignment is stored, then new ones.
    pub async fn connect_node(
        self: &std::sync::Arc<Self>,
        uuid: &str,
    ) -> Result<mpsc::Receiver<Box<Outgoing>>> {
        let node = self.node(uuid).await?;
        let rx = {
            // Held while the placed ones are read and the stream is installed: an assignment
            // being stored is then either sent by its round to this stream, or (stored before
            // this reads it) sent here.
            let mut outboxes = self.outboxes.lock().await;
            // Read under the lock too: a task registered meanwhile is either read here, or
            // warmed by its registration once this stream is installed.
            let warms = self.warms_for(&node).await;
            let placed: Vec<Execution> = self
                .executions
                .read()
                .await
                .placed_on(uuid)
                .filter(|e| outboxes.storing.get(&e.execution_id) != Some(&e.attempt))
                .cloned()
                .collect();
            // The stops it owes ([`crate::cancels`]), first.
            let owed = self
                .cancels
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .owed_by(uuid);
            // Room for every one placed there (a node may hold up to its limit, past the usual
            // capacity) and every stop: one left out would never be heard of.
            let held = placed.len() + owed.len();
            let (tx, rx) = mpsc::channel(OUTBOX_CAPACITY.max(held + OUTBOX_CAPACITY / 4));
            let sends = owed
                .into_iter()
                .map(|e| (e, true))
                // One being preempted is told to stop again (and reports its stop).
                .chain(placed.into_iter().map(|e| {
                    let stop = e.preempting_ms > 0;
                    (e, stop)
                }));
            for (exec, cancel) in sends {
                let cursor = self
                    .next_cursor
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let _ = tx.try_send(Box::new(Outgoing::Assignment(Assignment {
                    cursor,
                    execution: exec,
                    cancel,
                })));
            }
            // Then the tasks to warm, in the room left (never more than a share of it).
            crate::warms::send_all(&tx, warms);
            outboxes.boxes.insert(uuid.to_owned(), Outbox { tx });
            rx
        };
        self.sync_target(&node).await;
        self.wake.notify_one();
        Ok(rx)
    }

    /// Forget streams whose Spearlet went away, so their nodes take no more work. Run by the
    /// sweeper (and whenever a dispatch finds a stream closed), not by a task per stream: an idle
    /// node costs no task.
    pub(crate) async fn prune_streams(&self) {
        let closed: Vec<String> = {
            let mut outboxes = self.outboxes.lock().await;
            let closed: Vec<String> = outboxes
                .boxes
                .iter()
                .filter(|(_, o)| o.tx.is_closed())
                .map(|(id, _)| id.clone())
                .collect();
            for id in &closed {
                outboxes.boxes.remove(id);
            }
            closed
        };
        for id in closed {
            if let Ok(node) = self.node(&id).await {
                self.sync_target(&node).await;
            }
        }
    }

    /// Queue an invocation on node `uuid`'s stream (never waiting: a full stream refuses it).
    pub(crate) async fn send_invocation(
        &self,
        uuid: &str,
        invocation: spear_proto::v1::Invocation,
    ) -> Dispatch {
        let outboxes = self.outboxes.lock().await;
        let Some(outbox) = outboxes.boxes.get(uuid) else {
            return Dispatch::NotConnected;
        };
        match outbox
            .tx
            .try_send(Box::new(Outgoing::Invocation(invocation)))
        {
            Ok(()) => Dispatch::Sent,
            Err(mpsc::error::TrySendError::Full(_)) => Dispatch::Full,
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.prune_soon
                    .store(true, std::sync::atomic::Ordering::Relaxed);
                Dispatch::NotConnected
            }
        }
    }

    /// Whether node `uuid` has an open assignment stream.
    pub(crate) async fn connected(&self, uuid: &str) -> bool {
        self.outboxes
            .lock()
            .await
            .boxes
            .get(uuid)
            .is_some_and(|o| !o.tx.is_closed())
    }

    /// Queue a cancel (or an assignment already stored) on a node's stream.
    pub(crate) async fn dispatch(
        &self,
        node: &str,
        execution: Execution,
        cancel: bool,
    ) -> Dispatch {
        self.outboxes
            .lock()
            .await
            .send(self, node, execution, cancel)
    }

    /// Mark the assignment `exec` as being stored: a reconnecting node is not sent it (its
    /// round will).
    pub(crate) async fn storing(&self, exec: &Execution) {
        self.outboxes
            .lock()
            .await
            .storing
            .insert(exec.execution_id.clone(), exec.attempt);
    }

    /// Wait until the round's assignments are durable, then send each that is still as it was
    /// assigned (a cancel or a lost node may have changed it meanwhile: then it is not sent).
    /// One whose write failed is put back in memory as it was before (storage never saw it
    /// assigned), to be placed again in a later round.
    pub(crate) async fn send_stored(&self, round: Vec<Stored>) {
        let mut unsent = Vec::new();
        for mut s in round {
            let id = s.assigned.execution_id.clone();
            let node = s.assigned.node_uuid.clone().unwrap_or_default();
            let durable = s.write.durable().await;
            let _owned = self.exec_locks.lock(&id).await;
            // (A deadline's miss recorded meanwhile changes no state: it is carried over.)
            let (unchanged, missed) =
                self.executions
                    .read()
                    .await
                    .get(&id)
                    .map_or((false, false), |now| {
                        (
                            now.state == ExecState::Assigned
                                && now.updated_at_ms == s.assigned.updated_at_ms
                                && now.node_uuid == s.assigned.node_uuid,
                            now.deadline_missed,
                        )
                    });
            let mut outboxes = self.outboxes.lock().await;
            // Only its own mark: a later round may have marked the execution again.
            if outboxes.storing.get(&id) == Some(&s.assigned.attempt) {
                outboxes.storing.remove(&id);
            }
            if let Err(e) = durable {
                drop(outboxes);
                // (The storage's failures are reported once per burst by its health.)
                tracing::debug!(execution = %id, "storing an assignment failed, not sent: {e}");
                if unchanged {
                    let mut before = s.before;
                    before.deadline_missed |= missed;
                    self.executions.write().await.insert(id, before);
                    drop(_owned);
                    // The strategy counted it on the node: it hears the node's real fill.
                    if let Ok(n) = self.node(&node).await {
                        self.sync_target(&n).await;
                    }
                }
                continue;
            }
            if !unchanged {
                s.write.announce();
                continue;
            }
            match outboxes.send(self, &node, s.assigned, false) {
                // Not connected: sent when the node reconnects (or requeued when it is lost).
                Dispatch::Sent | Dispatch::NotConnected => {}
                Dispatch::Full => {
                    // A stream holding OUTBOX_CAPACITY unread messages: its Spearlet is not
                    // reading. Closing it makes the Spearlet reconnect (and be sent all it
                    // holds); this execution goes back to the queue meanwhile.
                    tracing::warn!(node = %node, "assignment stream full: closed");
                    outboxes.boxes.remove(&node);
                    unsent.push((id, node));
                }
            }
            drop(outboxes);
            drop(_owned);
            s.write.announce();
        }
        for (id, node) in unsent {
            if let Err(e) = self
                .requeue_one(&id, &node, "its assignment stream was full")
                .await
            {
                tracing::warn!(execution = %id, "cannot requeue: {e}");
            }
            if let Ok(n) = self.node(&node).await {
                self.sync_target(&n).await;
            }
        }
    }
}
