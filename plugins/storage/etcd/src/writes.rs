//! The writes: each an etcd transaction that also moves the backend's writer key, so that it
//! applies exactly once ([`sequence`](crate::sequence)), the settling of a write whose outcome was
//! left open, and the writer key's life (created at open, swept after a week idle).

use etcd_client::{Compare, GetOptions, Txn, TxnOp, TxnOpResponse, TxnResponse};
use spear_plugin_api::PluginError;
use spear_plugin_api::storage::OUTCOME_UNKNOWN;

use crate::requests::prefix_end;
use crate::sequence::{self, State, holds};
use crate::{Inner, kv};

/// How a write went.
pub(crate) enum Outcome {
    /// Applied: the answer, or `None` when an earlier copy of it applied.
    Applied(Option<TxnResponse>),
    /// A check did not hold.
    NotApplied,
}

/// What the writer's key holds, from a transaction's answer that did not apply (its `else`).
fn writer_value(answer: &TxnResponse) -> Option<Vec<u8>> {
    answer.op_responses().into_iter().find_map(|r| match r {
        TxnOpResponse::Get(g) => Some(g.kvs().first().map(|kv| kv.value().to_vec())),
        _ => None,
    })?
}

impl Inner {
    /// Bytes a transaction carries for the writer's key: its compare, its put and the read of
    /// the `else` branch.
    pub(crate) fn own_bytes(&self) -> u64 {
        3 * self.writer_key.len() as u64 + 2 * sequence::TOKEN_LEN as u64 + 64
    }

    /// Apply `ops` (`bytes` of keys and values) if `compares` hold, exactly once (see
    /// [`sequence`]).
    pub(crate) fn txn(
        &self,
        what: &str,
        compares: Vec<Compare>,
        ops: Vec<TxnOp>,
        bytes: u64,
    ) -> Result<Outcome, PluginError> {
        let bytes = bytes + (self.prefix.len() * (compares.len() + ops.len())) as u64;
        let own = self.own_bytes();
        if bytes + own > self.max_request_bytes {
            return Err(PluginError(format!(
                "etcd {what}: {bytes} bytes are over the limit of {} in one request \
                 (etcd's --max-request-bytes, less {own} for the backend's own; this \
                 backend's `max_request_bytes`)",
                self.max_request_bytes.saturating_sub(own)
            )));
        }
        let most = compares.len().max(ops.len());
        if most >= self.max_txn_ops as usize {
            return Err(PluginError(format!(
                "etcd {what}: {most} operations are over the limit of {} in one transaction \
                 (etcd's --max-txn-ops, less one for the backend's own; this backend's \
                 `max_txn_ops`)",
                self.max_txn_ops - 1
            )));
        }
        let mut state = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        self.settle(&mut state)?;
        // Again only when the writer's key held something unexpected (see `sequence`).
        for _ in 0..3 {
            let (before, after) = state.begin();
            let mut when = compares.clone();
            when.push(holds(&self.writer_key, before.as_deref()));
            let mut then = ops.clone();
            then.push(TxnOp::put(self.writer_key.clone(), after, None));
            let txn = Txn::new()
                .when(when)
                .and_then(then)
                .or_else([TxnOp::get(self.writer_key.clone(), None)]);
            let (answer, maybe_taken) = match self.call_taken(what, |c| {
                let txn = txn.clone();
                async move { kv(&c).txn(txn).await }
            }) {
                Ok(answered) => answered,
                Err(f) if f.maybe_taken => {
                    return Err(PluginError(format!("{OUTCOME_UNKNOWN}{}", f.error)));
                }
                Err(f) => {
                    state.not_taken();
                    return Err(f.error);
                }
            };
            let now = (!answer.succeeded())
                .then(|| writer_value(&answer))
                .flatten();
            if !answer.succeeded() && now == before && maybe_taken {
                return self.settle_refused(what, &mut state);
            }
            if state.answered(answer.succeeded(), now.clone()) {
                return Ok(Outcome::Applied(answer.succeeded().then_some(answer)));
            }
            if now == before {
                return Ok(Outcome::NotApplied);
            }
        }
        Err(PluginError(format!(
            "etcd {what}: the backend's writer key keeps changing (is another process writing \
             with it?)"
        )))
    }

    /// A write whose checks failed, while an earlier copy of it may still be on its way (and apply
    /// once its checks hold): settle it now, so that the answer is final.
    fn settle_refused(&self, what: &str, state: &mut State) -> Result<Outcome, PluginError> {
        let (after, burn) = state.unsure_tokens().expect("the write is under way");
        self.settle(state)
            .map_err(|e| PluginError(format!("{OUTCOME_UNKNOWN}{}", e.0)))?;
        match state {
            State::Known(Some(v)) if *v == after => Ok(Outcome::Applied(None)),
            State::Known(Some(v)) if *v == burn => Ok(Outcome::NotApplied),
            _ => Err(PluginError(format!(
                "{OUTCOME_UNKNOWN}etcd {what}: the backend's writer key changed under it (is \
                 another process writing with it?)"
            ))),
        }
    }

    /// Settle a write whose outcome was left unknown: after this, no copy of it can apply.
    fn settle(&self, state: &mut State) -> Result<(), PluginError> {
        let Some((compare, burn)) = state.settling(&self.writer_key) else {
            return Ok(());
        };
        let txn = Txn::new()
            .when([compare])
            .and_then([burn])
            .or_else([TxnOp::get(self.writer_key.clone(), None)]);
        let answer = self
            .call("settle", |c| {
                let txn = txn.clone();
                async move { kv(&c).txn(txn).await }
            })
            .map_err(|f| {
                PluginError(format!(
                    "{} (settling the write before, whose outcome is unknown)",
                    f.error
                ))
            })?;
        if answer.succeeded() {
            state.burnt();
        } else {
            state.answered(false, writer_value(&answer));
        }
        Ok(())
    }

    /// Create this writer's key, holding a first token (so that no write expects it absent).
    pub(crate) fn create_writer_key(&self) -> Result<(), PluginError> {
        let first = sequence::token();
        let txn = Txn::new()
            .when([holds(&self.writer_key, None)])
            .and_then([TxnOp::put(self.writer_key.clone(), first.clone(), None)])
            .or_else([TxnOp::get(self.writer_key.clone(), None)]);
        let answer = self.call("create the writer key", |c| {
            let txn = txn.clone();
            async move { kv(&c).txn(txn).await }
        })?;
        // Failed only if a copy sent before applied (it then holds `first`), or a key of that
        // name was there (never: its name is a fresh token).
        if !answer.succeeded() && writer_value(&answer).as_deref() != Some(first.as_slice()) {
            return Err(PluginError::new(
                "etcd: this backend's new writer key exists already",
            ));
        }
        *self.writer.lock().unwrap_or_else(|p| p.into_inner()) = State::Known(Some(first));
        Ok(())
    }

    /// Remove the keys of writers idle for [`sequence::IDLE`] (each only if it is unchanged).
    pub(crate) fn sweep_writers(&self) -> Result<(), PluginError> {
        let from = self.key(sequence::WRITERS);
        let options = GetOptions::new()
            .with_range(prefix_end(&from))
            .with_limit(1000);
        let answer = self.call("sweep", |c| {
            let (from, options) = (from.clone(), options.clone());
            async move { kv(&c).get(from, Some(options)).await }
        })?;
        let horizon = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .saturating_sub(sequence::IDLE)
            .as_millis();
        for kv_ in answer.kvs() {
            if sequence::made_ms(kv_.value()).is_some_and(|made| made < horizon) {
                let txn = Txn::new()
                    .when([holds(kv_.key(), Some(kv_.value()))])
                    .and_then([TxnOp::delete(kv_.key(), None)]);
                self.call("sweep", |c| {
                    let txn = txn.clone();
                    async move { kv(&c).txn(txn).await }
                })?;
            }
        }
        Ok(())
    }
}
