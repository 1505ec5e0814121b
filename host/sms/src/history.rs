//! Execution records in storage, split by whether they finished, so that SMS starts by reading
//! only the unfinished ones and keeps in memory only those and the recently finished
//! ([`crate::retention`]):
//!
//! | key | value |
//! |---|---|
//! | `exec/<id>` | an unfinished execution (pending, ready, assigned, running) |
//! | `done/<id>` | a finished execution (succeeded, failed, cancelled, timed out) |
//! | `done-rev/<id, each hex digit inverted>` | nothing: the finished ids in reverse order, to page newest first (backends scan forward only) |
//!
//! Ids are UUIDv7, so key order is submission order. An execution's write that finishes it moves
//! it from `exec/` to `done/` in the same atomic batch; a finished execution never changes again.

use spear_plugin_api::storage::BatchOp;

use crate::db::{Db, put_op};
use crate::error::Result;
use crate::model::Execution;

/// Where unfinished executions are stored.
pub const LIVE: &str = "exec/";
/// Where finished executions are stored.
pub const DONE: &str = "done/";
/// The finished executions' ids, newest first.
const DONE_REV: &str = "done-rev/";

/// `id` with each hex digit `d` replaced by `f - d`: ascending order of the result is descending
/// order of ids of one shape (UUIDs).
fn invert(id: &str) -> String {
    id.chars()
        .map(|c| match c.to_digit(16) {
            Some(d) => char::from_digit(15 - d, 16).unwrap_or(c),
            None => c,
        })
        .collect()
}

/// The writes that store `exec` where its state says, in one batch with whatever else.
pub fn exec_ops(exec: &Execution) -> Result<Vec<BatchOp>> {
    let id = &exec.execution_id;
    if exec.state.is_terminal() {
        Ok(vec![
            put_op(format!("{DONE}{id}"), exec)?,
            BatchOp::Put {
                key: format!("{DONE_REV}{}", invert(id)).into_bytes(),
                value: Vec::new(),
            },
            BatchOp::Delete {
                key: format!("{LIVE}{id}").into_bytes(),
            },
        ])
    } else {
        Ok(vec![put_op(format!("{LIVE}{id}"), exec)?])
    }
}

/// The writes that delete finished execution `id` from storage.
pub fn forget_ops(id: &str) -> Vec<BatchOp> {
    vec![
        BatchOp::Delete {
            key: format!("{DONE}{id}").into_bytes(),
        },
        BatchOp::Delete {
            key: format!("{DONE_REV}{}", invert(id)).into_bytes(),
        },
    ]
}

/// Finished execution `id` as stored.
pub async fn finished(db: &Db, id: &str) -> Result<Option<Execution>> {
    db.get(format!("{DONE}{id}")).await
}

/// Execution `id` as stored, finished or not.
pub async fn stored(db: &Db, id: &str) -> Result<Option<Execution>> {
    match db.get(format!("{LIVE}{id}")).await? {
        Some(e) => Ok(Some(e)),
        None => finished(db, id).await,
    }
}

/// A run of stored finished executions, and where the scan stopped.
#[derive(Debug, Default)]
pub struct Chunk {
    /// The executions, in the order asked for.
    pub executions: Vec<Execution>,
    /// The last id the scan reached when it stopped at its limit (more may follow); `None`
    /// when it reached the end.
    pub end: Option<String>,
}

/// Up to `limit` stored finished executions after id `after` (exclusive; none: from the start)
/// in id order, newest first when `newest_first`.
pub async fn page(db: &Db, after: Option<&str>, limit: u32, newest_first: bool) -> Result<Chunk> {
    let full = |n: usize| n as u64 >= u64::from(limit);
    if !newest_first {
        let executions: Vec<Execution> = db
            .scan(DONE, after.map(|a| format!("{DONE}{a}")), limit)
            .await?;
        let end = full(executions.len())
            .then(|| executions.last().map(|e| e.execution_id.clone()))
            .flatten();
        return Ok(Chunk { executions, end });
    }
    let keys = db
        .keys(
            DONE_REV,
            after.map(|a| format!("{DONE_REV}{}", invert(a))),
            limit,
        )
        .await?;
    let ids: Vec<String> = keys
        .iter()
        .map(|k| invert(k.strip_prefix(DONE_REV).unwrap_or(k)))
        .collect();
    let end = full(ids.len()).then(|| ids.last().cloned()).flatten();
    // (One deleted by retention since its key was read is skipped.)
    let executions = db
        .get_many(ids.iter().map(|id| format!("{DONE}{id}")).collect())
        .await?;
    Ok(Chunk { executions, end })
}

/// The first strategy request id (`seq`) after those of the unfinished executions in `live` and
/// of the newest stored finished ones (ids and seqs are handed out together, in the same order
/// but for submissions racing each other: the newest 1,024 cover those).
pub async fn next_seq(db: &Db, live: &crate::table::ExecTable) -> Result<u64> {
    let newest = page(db, None, 1024, true).await?;
    Ok(live
        .values()
        .chain(&newest.executions)
        .map(|e| e.seq)
        .max()
        .unwrap_or(0)
        + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inverted_ids_sort_in_reverse() {
        let mut ids: Vec<String> = (0..50).map(|_| uuid::Uuid::now_v7().to_string()).collect();
        ids.push("00000000-0000-7000-8000-000000000000".into());
        ids.push("ffffffff-ffff-7fff-bfff-ffffffffffff".into());
        ids.sort();
        let mut inverted: Vec<String> = ids.iter().map(|i| invert(i)).collect();
        inverted.sort();
        let back: Vec<String> = inverted.iter().map(|i| invert(i)).collect();
        let mut reversed = ids.clone();
        reversed.reverse();
        assert_eq!(back, reversed);
        assert_eq!(invert(&invert(&ids[3])), ids[3]);
    }
}
