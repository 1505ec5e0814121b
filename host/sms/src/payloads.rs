//! Execution payloads: standard input and a result's outputs over [`INLINE_MAX`] go to the blob
//! store ([`crate::blobs`]) before their record is written, the record's blob references are
//! written with it, and a read by id (or an assignment to a node) reads them back.

use std::collections::BTreeMap;

use spear_plugin_api::storage::BatchOp;

use crate::blobs::{BlobClaim, BlobRef, INLINE_MAX, maybe_blob, ref_op, unref_op};
use crate::error::Result;
use crate::model::{ExecResult, Execution};
use crate::service::Sms;

/// The reference writes for execution `id`'s record going from naming the blobs `before` to
/// naming those `after`, and the blobs it no longer names (to [`Sms::release_blobs`] once
/// durable).
pub fn blob_ref_ops(
    id: &str,
    before: Vec<BlobRef>,
    after: Vec<BlobRef>,
) -> (Vec<BatchOp>, Vec<BlobRef>) {
    // By content: a blob named twice (an output equal to the input) has one reference.
    let by_sha = |v: Vec<BlobRef>| -> BTreeMap<String, BlobRef> {
        v.into_iter().map(|b| (b.sha256.clone(), b)).collect()
    };
    let (was, is) = (by_sha(before), by_sha(after));
    let mut ops = Vec::new();
    let mut dropped = Vec::new();
    for (sha, b) in &is {
        if !was.contains_key(sha) {
            ops.push(ref_op(b, id));
        }
    }
    for (sha, b) in was {
        if !is.contains_key(&sha) {
            ops.push(unref_op(&b, id));
            dropped.push(b);
        }
    }
    (ops, dropped)
}

impl Sms {
    /// Set `exec`'s standard input to `stdin`, inline or as a blob (claimed until the record is
    /// durable).
    pub(crate) async fn stdin_payload(
        &self,
        exec: &mut Execution,
        stdin: Vec<u8>,
    ) -> Result<Option<BlobClaim>> {
        let (inline, claim) = self.noted(maybe_blob(&self.blobs, stdin).await)?;
        exec.stdin = inline;
        exec.stdin_blob = claim.as_ref().map(|c| c.blob.clone());
        Ok(claim)
    }

    /// `result` with its outputs over [`INLINE_MAX`] moved to blobs (claimed until the record
    /// is durable).
    pub(crate) async fn result_payloads(
        &self,
        result: Option<ExecResult>,
    ) -> Result<(Option<ExecResult>, Vec<BlobClaim>)> {
        let Some(mut r) = result else {
            return Ok((None, Vec::new()));
        };
        let mut claims = Vec::new();
        if r.stdout.len() > INLINE_MAX {
            let stdout = std::mem::take(&mut r.stdout).into();
            let (_, claim) = self.noted(maybe_blob(&self.blobs, stdout).await)?;
            r.stdout_blob = claim.as_ref().map(|c| c.blob.clone());
            claims.extend(claim);
        }
        if r.stderr.len() > INLINE_MAX {
            let stderr = std::mem::take(&mut r.stderr).into();
            let (_, claim) = self.noted(maybe_blob(&self.blobs, stderr).await)?;
            r.stderr_blob = claim.as_ref().map(|c| c.blob.clone());
            claims.extend(claim);
        }
        Ok((Some(r), claims))
    }

    /// `stored`, a blob write's outcome, noted in the storage's health (a payload that cannot be
    /// stored is a storage failure like a record that cannot).
    fn noted<T>(&self, stored: Result<T>) -> Result<T> {
        if let Err(e) = &stored {
            self.db.write_health().record(&Err::<(), _>(e));
        }
        stored
    }

    /// Fill in `e`'s standard input, read back from the blob store, and the checkpoint it
    /// restores (one that cannot be read is left out, with a warning: the run starts afresh).
    /// On an error `e` is as it was.
    pub async fn with_stdin(&self, e: &mut Execution) -> Result<()> {
        if let Some(b) = &e.stdin_blob {
            e.stdin = self.blobs.read(b).await?;
        }
        if e.recovery.restores()
            && let Some(b) = &e.checkpoint_blob
        {
            match self.blobs.read(b).await {
                Ok(data) => e.checkpoint_data = data,
                Err(why) => tracing::warn!(
                    execution = %e.execution_id,
                    "its checkpoint cannot be read, it starts afresh: {why}"
                ),
            }
        }
        Ok(())
    }

    /// `e` with every payload read back from the blob store (what a read by id answers).
    pub async fn with_payloads(&self, e: Execution) -> Result<Execution> {
        whole(&self.blobs, e).await
    }

    /// Execution `id` whole: its record with its payloads.
    pub async fn execution_whole(&self, id: &str) -> Result<Execution> {
        let e = self.execution(id).await?;
        self.with_payloads(e).await
    }

    /// `sent`'s standard input could not be read for its node (`why`). If its file is gone, the
    /// attempt fails for good (it would run on the wrong input); otherwise (a passing error) it
    /// goes back to the queue without spending an attempt. Either only if it is still placed
    /// there; a failure to store that is logged (the node never heard of it, and the node's loss
    /// or an SMS restart puts it back in the queue).
    pub(crate) async fn payload_lost(&self, sent: &Execution, why: &str) {
        let id = &sent.execution_id;
        let node = sent.node_uuid.clone().unwrap_or_default();
        let gone = match &sent.stdin_blob {
            Some(b) => !self.blobs.exists(b).await,
            None => false,
        };
        if !gone {
            let why = format!("its standard input could not be read: {why}");
            if let Err(e) = self.requeue_one(id, &node, &why).await {
                tracing::warn!("execution {id}: {e}");
            }
            self.wake.notify_one();
            return;
        }
        let _owned = self.exec_locks.lock(id).await;
        let Ok(mut exec) = self.execution(id).await else {
            return;
        };
        if !exec.state.is_placed()
            || exec.attempt != sent.attempt
            || exec.node_uuid != sent.node_uuid
        {
            return;
        }
        exec.state = crate::model::ExecState::Failed;
        exec.error = Some(format!("its standard input could not be read: {why}"));
        exec.ended_attempt = exec.attempt;
        exec.updated_at_ms = crate::model::now_ms();
        let data = serde_json::json!({"attempt": exec.attempt, "error": exec.error});
        if let Err(e) = self.save(&exec, "execution.failed", data).await {
            tracing::warn!("execution {id}: {e}");
        }
        self.wake.notify_one();
    }

    /// Delete those of `blobs` that nothing refers to any more (a failure is logged: the blob
    /// stays, unreferenced).
    pub(crate) async fn release_blobs(&self, blobs: Vec<BlobRef>) {
        if blobs.is_empty() {
            return;
        }
        if let Err(e) = self.blobs.release(&self.db, blobs).await {
            tracing::warn!("deleting unreferenced payloads: {e}");
        }
    }
}

/// `e` with every payload read back from `blobs` (what a read by id answers).
pub async fn whole(blobs: &crate::blobs::Blobs, mut e: Execution) -> Result<Execution> {
    if let Some(b) = &e.stdin_blob {
        e.stdin = blobs.read(b).await?;
    }
    if let Some(r) = e.result.as_mut() {
        if let Some(b) = &r.stdout_blob {
            r.stdout = String::from_utf8_lossy(&blobs.read(b).await?).into_owned();
        }
        if let Some(b) = &r.stderr_blob {
            r.stderr = String::from_utf8_lossy(&blobs.read(b).await?).into_owned();
        }
    }
    Ok(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blob(c: char) -> BlobRef {
        BlobRef {
            sha256: c.to_string().repeat(64),
            size: 2000,
        }
    }

    #[test]
    fn references_follow_the_blobs_a_record_names() {
        let mut e = crate::table::tests_support::execution();
        e.stdin_blob = Some(blob('a'));
        let (ops, dropped) = blob_ref_ops("e", vec![], e.blobs());
        assert_eq!(ops, vec![ref_op(&blob('a'), "e")]);
        assert!(dropped.is_empty());
        // A result whose output equals the input: one reference, kept.
        let before = e.blobs();
        e.result = Some(ExecResult {
            stdout_blob: Some(blob('a')),
            stderr_blob: Some(blob('b')),
            ..Default::default()
        });
        let (ops, dropped) = blob_ref_ops("e", before, e.blobs());
        assert_eq!(ops, vec![ref_op(&blob('b'), "e")]);
        assert!(dropped.is_empty());
        // A retry's result replaces it: `b` is no longer named.
        let before = e.blobs();
        e.result = Some(ExecResult::default());
        let (ops, dropped) = blob_ref_ops("e", before, e.blobs());
        assert_eq!(ops, vec![unref_op(&blob('b'), "e")]);
        assert_eq!(dropped, vec![blob('b')]);
    }
}
