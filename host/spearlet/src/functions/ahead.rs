//! Warm-ups SMS asks for (docs/functions.md, "Instances kept and started ahead"): when a task
//! with `spear.min_instances` is registered, or when this node's assignment stream opens, SMS
//! sends the task's id down the stream; the node starts its instances up to that minimum before
//! any invocation needs them.
//!
//! The stream's reader never waits for a warm-up: it queues the task (at most [`QUEUE`] wait; past
//! that the hint is dropped, and the task's first invocation starts what it needs), and one
//! worker starts them, one task after another, apart from invocations.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

use crate::agent::Agent;

/// Warm-ups waiting, at most.
pub const QUEUE: usize = 256;

/// The queue of warm-ups SMS asked for.
#[derive(Debug)]
pub struct Ahead {
    tx: mpsc::Sender<String>,
    rx: Mutex<Option<mpsc::Receiver<String>>>,
    figures: Figures,
}

/// Warm-ups asked for, done (started, or found with their instances), failed, and dropped (the
/// queue full, or the task id bad): `ahead` in `GET /api/v1/status`.
#[derive(Debug, Default)]
struct Figures {
    asked: AtomicU64,
    done: AtomicU64,
    failed: AtomicU64,
    dropped: AtomicU64,
}

impl Default for Ahead {
    fn default() -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        Self {
            tx,
            rx: Mutex::new(Some(rx)),
            figures: Figures::default(),
        }
    }
}

impl Ahead {
    /// Queue a warm-up of `task_id` (never waiting: a full queue drops it, with a log line).
    pub fn ask(&self, task_id: String) {
        self.figures.asked.fetch_add(1, Ordering::Relaxed);
        if task_id.is_empty() || task_id.len() > 256 {
            self.figures.dropped.fetch_add(1, Ordering::Relaxed);
            tracing::warn!("a warm-up from SMS named no task, or one of over 256 bytes: ignored");
            return;
        }
        if let Err(e) = self.tx.try_send(task_id) {
            self.figures.dropped.fetch_add(1, Ordering::Relaxed);
            let task = match &e {
                mpsc::error::TrySendError::Full(t) | mpsc::error::TrySendError::Closed(t) => t,
            };
            tracing::info!(task = %task, "warm-up not queued ({QUEUE} wait): its first invocation starts its instances");
        }
    }

    /// `{"asked", "done", "failed", "dropped"}`: warm-ups SMS asked for, and how each went.
    pub fn figures(&self) -> serde_json::Value {
        let f = &self.figures;
        serde_json::json!({
            "asked": f.asked.load(Ordering::Relaxed),
            "done": f.done.load(Ordering::Relaxed),
            "failed": f.failed.load(Ordering::Relaxed),
            "dropped": f.dropped.load(Ordering::Relaxed),
        })
    }

    /// The worker's end of the queue (once).
    fn take(&self) -> Option<mpsc::Receiver<String>> {
        self.rx.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

/// Start, one task after another, the instances SMS asked for, until the node drains.
pub async fn run(agent: Arc<Agent>) {
    let Some(mut rx) = agent.functions.ahead.take() else {
        return;
    };
    let mut draining = agent.draining.subscribe();
    loop {
        let task = tokio::select! {
            t = rx.recv() => match t {
                Some(t) => t,
                None => return,
            },
            _ = draining.wait_for(|d| *d) => return,
        };
        let figures = &agent.functions.ahead.figures;
        match super::warm(&agent, &task, 0).await {
            Ok(n) => {
                figures.done.fetch_add(1, Ordering::Relaxed);
                tracing::info!(task = %task, instances = n, "instances started ahead, as SMS asked");
            }
            Err(e) => {
                figures.failed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(task = %task, error = %e, "cannot start instances ahead, as SMS asked");
            }
        }
    }
}
