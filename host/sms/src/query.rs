//! Listing executions a page at a time: `GET /api/v1/executions` and `ListExecutions`.
//!
//! Executions are listed in the order of their ids (UUIDv7: the order they were submitted in),
//! oldest or newest first, filtered by state, task, node and submission time. A page holds at
//! most `limit` executions and names where the next one starts (`next_page_token`: the last id
//! it looked at, opaque to clients). Each request looks at no more than [`SCAN_BUDGET`]
//! executions, so a filter that matches few of many answers a short (even empty) page with a
//! token to go on from, instead of walking everything in one request.

use std::ops::Bound;

use crate::error::{Result, SmsError};
use crate::model::{ExecState, Execution};
use crate::service::Sms;

/// Executions a page holds when the request does not say.
pub const DEFAULT_LIMIT: usize = 500;
/// Most executions a page may hold.
pub const MAX_LIMIT: usize = 1000;
/// Most executions one request looks at.
pub const SCAN_BUDGET: usize = 100_000;
/// Longest page token (an execution id, or what a client made of one).
const MAX_TOKEN: usize = 128;

/// What to list.
#[derive(Debug, Clone, Default)]
pub struct ExecQuery {
    /// Only in this state (`succeeded`, …).
    pub state: Option<String>,
    /// Only this task's.
    pub task_id: Option<String>,
    /// Only those placed on this node.
    pub node_uuid: Option<String>,
    /// Only those submitted at or after this time (ms since the epoch).
    pub since_ms: Option<i64>,
    /// At most this many (None: [`DEFAULT_LIMIT`]; 1 to [`MAX_LIMIT`]).
    pub limit: Option<usize>,
    /// Go on after this page token.
    pub page_token: Option<String>,
    /// Newest first.
    pub newest_first: bool,
}

/// One page of executions.
#[derive(Debug, Clone)]
pub struct Page {
    /// The executions, in the order asked for.
    pub executions: Vec<Execution>,
    /// Where the next page starts; None when there is no more.
    pub next_page_token: Option<String>,
}

impl ExecQuery {
    fn limit(&self) -> Result<usize> {
        match self.limit {
            None => Ok(DEFAULT_LIMIT),
            Some(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
            Some(n) => Err(SmsError::invalid(
                "limit",
                format!("must be 1 to {MAX_LIMIT}, not {n}"),
            )),
        }
    }
}

impl Sms {
    /// One page of the executions `q` asks for.
    pub async fn executions(&self, q: &ExecQuery) -> Result<Page> {
        let limit = q.limit()?;
        // (An empty state is no state: refused, as the schema says; gRPC callers leave it
        // unset instead.)
        let state = match q.state.as_deref() {
            None => None,
            Some(s) => Some(ExecState::parse(s).ok_or_else(|| {
                SmsError::invalid("state", format!("`{s}` is not an execution state"))
            })?),
        };
        let token = q.page_token.as_deref().filter(|t| !t.is_empty());
        if token.is_some_and(|t| t.len() > MAX_TOKEN) {
            return Err(SmsError::invalid(
                "page_token",
                format!("longer than {MAX_TOKEN} bytes: not a token this SMS gave"),
            ));
        }
        let task = q.task_id.as_deref().filter(|t| !t.is_empty());
        let node = q.node_uuid.as_deref().filter(|n| !n.is_empty());
        let keep = |e: &Execution| {
            state.is_none_or(|s| e.state == s)
                && task.is_none_or(|t| e.task_id.as_deref() == Some(t))
                && node.is_none_or(|n| e.node_uuid.as_deref() == Some(n))
                && q.since_ms.is_none_or(|t| e.submitted_at_ms >= t)
        };
        let table = self.executions.read().await;
        let after = token.map_or(Bound::Unbounded, |t| Bound::Excluded(t.to_owned()));
        let walk: Box<dyn Iterator<Item = (&String, &Execution)>> = if q.newest_first {
            Box::new(table.range((Bound::Unbounded, after)).rev())
        } else {
            Box::new(table.range((after, Bound::Unbounded)))
        };
        let mut executions = Vec::new();
        let mut last = None;
        let mut more = false;
        for (looked, (id, e)) in walk.enumerate() {
            if executions.len() == limit || looked == SCAN_BUDGET {
                more = true;
                break;
            }
            last = Some(id);
            if keep(e) {
                executions.push(e.clone());
            }
        }
        Ok(Page {
            executions,
            next_page_token: more.then(|| last.cloned()).flatten(),
        })
    }
}
