//! Explain: why an execution went where it went.
//!
//! The scheduler records each round that asked the strategy to place a batch: the batch (its
//! requests in queue order, with each execution's wait), who decided (the plugin and version, or
//! the fallback and why), each decision and what became of it (assigned, rejected, or left queued
//! and why), and the nodes as the strategy saw them. The node view is a mirror of the strategy's,
//! kept from the same changes the strategy is fed ([`crate::feed`]) plus the round's own claims,
//! so a round costs O(changes) to follow and a snapshot of shared pointers to keep.
//!
//! Only the last `[explain] rounds` rounds are kept (memory is bounded); an execution is
//! explained by the latest kept round that offered it. The reasons a node was filtered out
//! (`GET /api/v1/executions/{id}/explain`, `spear explain`) are worked out when asked, from the
//! round's version of the view, so recording does no per-node work (an explanation does:
//! O(kept executions) to find the round, O(nodes) to read its view).

mod answer;
mod hooks;
mod record;
mod view;

pub use answer::{Explanation, NodeVerdict};
pub(crate) use record::{Dispatch, Round, Unusable};
pub use record::{ExplainConfig, Recorder};
