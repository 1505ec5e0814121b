//! The scheduler's side of explain: following the view, keeping rounds, and answering.

use crate::error::{Result, SmsError};
use crate::feed::Batch;
use crate::model::NodeStatus;
use crate::service::Sms;

use super::{Explanation, Unusable};

impl Sms {
    fn recorder(&self) -> std::sync::MutexGuard<'_, super::Recorder> {
        self.explain.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Follow the changes the strategy is about to hear, with why each unusable node is
    /// unusable (O(changes)). Only the scheduler calls this, after
    /// [`measure_room`](Self::measure_room).
    pub(crate) async fn explain_follow(&self, batch: &Batch) {
        if !self.recorder().on() || (batch.removes.is_empty() && batch.upserts.is_empty()) {
            return;
        }
        let upserts = {
            let nodes = self.nodes.read().await;
            let cap = self.capacity.lock().unwrap_or_else(|p| p.into_inner());
            batch
                .upserts
                .iter()
                .map(|t| {
                    let why = (!t.healthy).then(|| match nodes.get(&t.name) {
                        Some(n) if n.status != NodeStatus::Active => Unusable::Status(n.status),
                        None => Unusable::Status(NodeStatus::Inactive),
                        Some(n) => match cap.fill(t.id) {
                            Some((placed, false)) => Unusable::Full {
                                placed,
                                limit: self.dispatch.limit(n.slots),
                            },
                            _ => Unusable::NoStream,
                        },
                    });
                    (t, why)
                })
                .collect()
        };
        self.recorder().follow(&batch.removes, upserts);
    }

    /// The version of the node view the strategy decides over now, when rounds are recorded.
    pub(crate) fn explain_snapshot(&self) -> Option<u64> {
        let mut r = self.recorder();
        r.on().then(|| r.snapshot())
    }

    /// Count placements made outside a round (an invocation's node) as the strategy's view does.
    pub(crate) fn explain_claim(
        &self,
        requests: &[spear_plugin_api::Request],
        decisions: &[spear_plugin_api::Decision],
    ) {
        self.recorder().claim(requests, decisions);
    }

    /// Keep a round, whose batch was `requests`.
    pub(crate) fn explain_keep(&self, round: super::Round, requests: &[spear_plugin_api::Request]) {
        self.recorder().keep(round, requests);
    }

    /// Why execution `id` went where it went: the latest kept round that offered it.
    pub async fn explain(&self, id: &str) -> Result<Explanation> {
        // Known at all (404 naming the execution otherwise).
        let request = crate::sched::request(&self.execution(id).await?);
        let (rounds, kept) = {
            let r = self.recorder();
            if !r.on() {
                return Err(SmsError::Conflict(
                    "explain is off: [explain] rounds = 0 keeps no rounds".into(),
                ));
            }
            (r.rounds(), r.capacity())
        };
        // Searched without the recorder (the scheduler needs it every round); then its view,
        // read under it, if the round is still kept.
        let explained = super::record::latest_with(&rounds, request.id).and_then(|round| {
            let nodes = self.recorder().nodes_of(round)?;
            Explanation::of(round, &nodes, id, &request)
        });
        explained.ok_or_else(|| {
            SmsError::not_found(
                "explanation",
                format!(
                    "{id}` (no kept round offered it: SMS keeps the last {kept} rounds, and \
                     one is recorded when the strategy is asked to place a batch"
                ),
            )
        })
    }
}
