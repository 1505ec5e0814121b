//! Listing executions a page at a time: `GET /api/v1/executions` and `ListExecutions`.
//!
//! Executions are listed in the order of their ids (UUIDv7: the order they were submitted in),
//! oldest or newest first, filtered by state, task, node and submission time. A page holds at
//! most `limit` executions and names where the next one starts (`next_page_token`: the last id
//! it looked at, opaque to clients). Each request looks at no more than [`SCAN_BUDGET`]
//! executions (and reads no more than [`STORE_BUDGET`] from storage), so a filter that matches
//! few of many answers a short (even empty) page with a token to go on from, instead of walking
//! everything in one request.
//!
//! Memory holds every unfinished execution and the recently finished ones; storage holds every
//! finished one ([`crate::history`]). A page merges the two in id order (memory's copy where
//! both have one); a filter on an unfinished state reads memory only.

use std::collections::VecDeque;
use std::ops::Bound;

use crate::error::{Result, SmsError};
use crate::model::{ExecState, Execution};
use crate::service::Sms;
use crate::table::ExecTable;

/// Executions a page holds when the request does not say.
pub const DEFAULT_LIMIT: usize = 500;
/// Most executions a page may hold.
pub const MAX_LIMIT: usize = 1000;
/// Most executions one request looks at.
pub const SCAN_BUDGET: usize = 100_000;
/// Most stored (finished, no longer in memory) executions one request reads.
pub const STORE_BUDGET: usize = 10_000;
/// Stored executions read at a time.
const STORE_CHUNK: u32 = 256;
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
        let since_key = q.since_ms.filter(|t| *t > 0).map(id_floor);
        // Every unfinished execution is in memory; finished ones may be only in storage.
        let memory_only = state.is_some_and(|s| !s.is_terminal());
        let mut out = Walk {
            newest_first: q.newest_first,
            limit,
            executions: Vec::new(),
            // Oldest first with `since`: start where ids of that time start (ids are UUIDv7,
            // their first 48 bits the submission time in ms).
            last: match (token, &since_key) {
                (Some(t), Some(k)) if !q.newest_first => Some(t.max(k.as_str()).to_owned()),
                (None, Some(k)) if !q.newest_first => Some(k.clone()),
                (t, _) => t.map(str::to_owned),
            },
            floor: since_key.clone(),
            looked: 0,
            more: false,
        };
        let mut read = 0;
        let mut stored_from = out.last.clone();
        let mut retries = 0;
        loop {
            let want = STORE_BUDGET.saturating_sub(read).min(STORE_CHUNK as usize) as u32;
            if want == 0 && !memory_only {
                // The budget went on reading again (see below): go on from here next time
                // (everything up to where storage was read from has been looked at).
                if stored_from.is_some() {
                    out.last = stored_from;
                }
                out.more = true;
                break;
            }
            let epoch = self.executions.read().await.eviction_epoch();
            let chunk = if memory_only {
                crate::history::Chunk::default()
            } else {
                crate::history::page(&self.db, stored_from.as_deref(), want, q.newest_first).await?
            };
            read += want as usize;
            let table = self.executions.read().await;
            // One that finished after storage was read and left memory before the table was
            // taken would be in neither: read storage again (a few times at most).
            if table.eviction_epoch() != epoch && retries < 3 {
                retries += 1;
                continue;
            }
            // A full chunk: what is stored beyond its end is unread, so memory is merged only
            // up to there.
            let bound = chunk.end.as_deref();
            if !out.merge(&table, chunk.executions.into(), bound, &keep) {
                break;
            }
            match chunk.end {
                None => break,
                Some(end) if read >= STORE_BUDGET => {
                    // Everything up to the chunk's end was looked at.
                    out.last = Some(end);
                    out.more = true;
                    break;
                }
                Some(end) => stored_from = Some(end),
            }
        }
        Ok(Page {
            next_page_token: out.more.then_some(out.last).flatten(),
            executions: out.executions,
        })
    }
}

/// The start of the ids of executions submitted at `ms` (UUIDv7 text: 48 bits of ms first), below
/// every id of that time or later.
fn id_floor(ms: i64) -> String {
    let ms = u64::try_from(ms).unwrap_or(0) & 0xffff_ffff_ffff;
    format!("{:08x}-{:04x}", ms >> 16, ms & 0xffff)
}

/// A page being filled: the walk over memory and storage in id order.
struct Walk {
    newest_first: bool,
    limit: usize,
    executions: Vec<Execution>,
    /// The last id looked at.
    last: Option<String>,
    /// Newest first: where ids older than `since` begin (the walk ends there).
    floor: Option<String>,
    looked: usize,
    /// The page ended before the walk did.
    more: bool,
}

impl Walk {
    /// Merge the executions in `table` after the last looked at (and not beyond `bound`, when
    /// given) with `stored`, which holds those in storage from the same place on; false once the
    /// page is full or the budget spent.
    fn merge(
        &mut self,
        table: &ExecTable,
        mut stored: VecDeque<Execution>,
        bound: Option<&str>,
        keep: &impl Fn(&Execution) -> bool,
    ) -> bool {
        let after = self.last.clone().map_or(Bound::Unbounded, Bound::Excluded);
        let walk: Box<dyn Iterator<Item = (&String, &Execution)>> = if self.newest_first {
            Box::new(table.range((Bound::Unbounded, after)).rev())
        } else {
            Box::new(table.range((after, Bound::Unbounded)))
        };
        let newest_first = self.newest_first;
        // Whether `a` comes before `b` in the walk's order.
        let before = |a: &str, b: &str| if newest_first { a > b } else { a < b };
        let mut memory = walk
            .take_while(|(id, _)| bound.is_none_or(|b| !before(b, id)))
            .peekable();
        loop {
            let from_memory = match (memory.peek(), stored.front()) {
                (None, None) => return true,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (Some((m, _)), Some(s)) => {
                    if **m == s.execution_id {
                        stored.pop_front();
                        true
                    } else {
                        before(m, &s.execution_id)
                    }
                }
            };
            if self.executions.len() == self.limit || self.looked == SCAN_BUDGET {
                self.more = true;
                return false;
            }
            let next_id = if from_memory {
                memory.peek().map(|(id, _)| id.as_str())
            } else {
                stored.front().map(|e| e.execution_id.as_str())
            };
            // Newest first, past `since`: nothing older can match (ids are in time order).
            if let (Some(floor), Some(id)) = (&self.floor, next_id)
                && self.newest_first
                && id < floor.as_str()
            {
                return false;
            }
            self.looked += 1;
            if from_memory {
                let Some((id, e)) = memory.next() else {
                    return true;
                };
                self.last = Some(id.clone());
                if keep(e) {
                    self.executions.push(e.clone());
                }
            } else {
                let Some(e) = stored.pop_front() else {
                    return true;
                };
                self.last = Some(e.execution_id.clone());
                if keep(&e) {
                    self.executions.push(e);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_id_floor_of_a_time_sorts_between_earlier_and_later_ids() {
        let before = uuid::Uuid::now_v7().to_string();
        std::thread::sleep(std::time::Duration::from_millis(3));
        let at = crate::model::now_ms();
        std::thread::sleep(std::time::Duration::from_millis(3));
        let after = uuid::Uuid::now_v7().to_string();
        let floor = id_floor(at);
        assert!(before < floor && floor < after, "{before} {floor} {after}");
        assert_eq!(id_floor(-5), "00000000-0000");
    }
}
