//! The stats cards (`GET /admin/api/stats`, and each node-stream snapshot): SPEAR's node counts,
//! and SMS's tasks, files and newest event. Counted in place, never by copying records, and at
//! most five times a second for every tab and stream together ([`StatsCache`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::{Extension, State};
use serde::Serialize;

use crate::api::rest::AppState;
use crate::error::Result;
use crate::model::now_ms;

/// How long counts are served before they are made again: below the node stream's 250 ms
/// coalescing, so that the snapshot sent after a change counts it.
const FRESH: Duration = Duration::from_millis(200);

/// The stats cards: SPEAR's node counts, and SMS's tasks and files.
#[derive(Debug, Clone, Serialize)]
pub struct Stats {
    /// Nodes known.
    pub total_count: usize,
    /// Nodes `active` (SPEAR's `online`).
    pub online_count: usize,
    /// The others.
    pub offline_count: usize,
    /// Nodes heard from in the last 60 seconds.
    pub recent_60s_count: usize,
    /// Tasks registered (any status).
    pub task_count: usize,
    /// Files stored.
    pub file_count: usize,
    /// The cursor of SMS's newest event (the page follows the events after it).
    pub event_cursor: u64,
}

/// The last counts and when they were made, shared by the admin's routes.
#[derive(Debug, Default)]
pub struct StatsCache {
    last: tokio::sync::Mutex<Option<(Instant, Stats)>>,
}

impl StatsCache {
    /// The counts, made again when older than [`FRESH`] (one caller counts; the others wait
    /// for its answer).
    pub async fn get(&self, sms: &AppState) -> Result<Stats> {
        let mut last = self.last.lock().await;
        if let Some((at, stats)) = last.as_ref()
            && at.elapsed() < FRESH
        {
            return Ok(stats.clone());
        }
        // Stamped when counting starts: the counts are as old as that, however long the
        // counting takes (stamped at its end, slow counts on a busy machine passed for fresh,
        // and the snapshot sent after a node's registration could show the count before it).
        let made = Instant::now();
        let (total, online, recent) = sms.node_counts(now_ms() - 60_000).await;
        let stats = Stats {
            total_count: total,
            online_count: online,
            offline_count: total - online,
            recent_60s_count: recent,
            task_count: sms.task_count().await,
            file_count: sms.file_count().await?,
            event_cursor: sms.events().last_cursor().await,
        };
        *last = Some((made, stats.clone()));
        Ok(stats)
    }
}

pub(super) async fn stats(
    State(sms): State<AppState>,
    Extension(cache): Extension<Arc<StatsCache>>,
) -> Result<Json<Stats>> {
    cache.get(&sms).await.map(Json)
}
