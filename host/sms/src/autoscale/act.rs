//! What the autoscaler does: starts settled (registered or timed out), drains finished (stopped
//! through the provider, then removed), and the pool grown or shrunk to the policy's answer.
//!
//! A managed record is forgotten only once its node is stopped: a stop that fails is tried
//! again at the next look. Every change of intent is stored before it is acted on (the records
//! of nodes to start before the start; `draining_since_ms` before the drain).

use std::collections::BTreeMap;

use serde_json::json;
use spear_plugin_api::{ScaleDecision, ScaleNode, ScaleView};

use super::engine;
use super::exec::{self, Action};
use super::run::{Autoscale, Managed, PREFIX, Seen, State};
use crate::error::{Result, SmsError};
use crate::model::{NodeStatus, now_ms};
use crate::nodes::UpdateNode;
use crate::service::Sms;

/// Whether managed node `m` counts in the pool: not drained by SMS, and not drained or set
/// aside by an operator.
fn in_pool(m: &Managed, seen: &BTreeMap<String, Seen>) -> bool {
    m.draining_since_ms.is_none() && seen.get(&m.uuid).is_none_or(Seen::in_pool)
}

/// The pool's size (what the policy's `ScaleView::pool` counts too).
pub(super) fn pool_size(state: &State, seen: &BTreeMap<String, Seen>) -> u32 {
    let n = state.managed.values().filter(|m| in_pool(m, seen)).count();
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// The pool's size once `uuid` is stopped (`SPEAR_DESIRED` of a stop).
fn size_without(state: &State, seen: &BTreeMap<String, Seen>, uuid: &str) -> u32 {
    let counted = state.managed.get(uuid).is_some_and(|m| in_pool(m, seen));
    pool_size(state, seen).saturating_sub(u32::from(counted))
}

/// Count an action's outcome, and log and record a provider failure.
fn outcome(sms: &Sms, a: &Autoscale, action: Action, result: &std::result::Result<(), String>) {
    let label = if result.is_ok() { "ok" } else { "failed" };
    sms.metrics
        .autoscaler_actions
        .with_label_values(&[action.as_str(), label])
        .inc();
    if let Err(e) = result {
        tracing::warn!("autoscaler: the provider's {} failed: {e}", action.as_str());
        a.note(|s| s.last_error = Some(e.clone()));
    }
}

/// Ask the provider to `action` the nodes `uuids`; whether it did.
async fn provide(sms: &Sms, a: &Autoscale, action: Action, uuids: &[String], desired: u32) -> bool {
    let addr = a.grpc_addr.get().cloned().unwrap_or_default();
    let p = &a.config.provider;
    let result = match p.kind.as_str() {
        "exec" => exec::run(p, action, uuids, desired, &addr).await,
        _ => {
            let limit = std::time::Duration::from_millis(p.timeout_ms);
            let call = async {
                match action {
                    Action::Start => engine::start(p, uuids, &addr).await,
                    Action::Stop => engine::stop(p, uuids).await,
                }
            };
            tokio::time::timeout(limit, call).await.unwrap_or_else(|_| {
                Err(format!(
                    "the container engine took more than {} ms (autoscaler.provider.timeout_ms)",
                    p.timeout_ms
                ))
            })
        }
    };
    outcome(sms, a, action, &result);
    if let Err(e) = &result {
        let _ = sms
            .events
            .append(
                "autoscaler.provider_failed",
                &uuids.join(","),
                json!({"action": action.as_str(), "error": e}),
            )
            .await;
    }
    result.is_ok()
}

/// Stop `uuid` through the provider; whether it is stopped.
async fn stop(
    sms: &Sms,
    a: &Autoscale,
    state: &State,
    seen: &BTreeMap<String, Seen>,
    uuid: &str,
) -> bool {
    let desired = size_without(state, seen, uuid);
    provide(sms, a, Action::Stop, &[uuid.to_owned()], desired).await
}

/// Settle every managed node: note registrations and an operator's re-activation; remove
/// drained nodes once idle, and draining nodes that went silent (their work requeued); stop
/// and forget nodes that vanished and starts that never registered.
pub(super) async fn settle(
    sms: &Sms,
    a: &Autoscale,
    state: &mut State,
    seen: &BTreeMap<String, Seen>,
) -> Result<()> {
    let now = now_ms();
    let since_load = state.loaded_ms.unwrap_or(now);
    let start_timeout = i64::try_from(a.config.start_timeout_ms).unwrap_or(i64::MAX);
    let managed: Vec<Managed> = state.managed.values().cloned().collect();
    for mut m in managed {
        let Some(n) = seen.get(&m.uuid) else {
            // Registered once and gone now (lost, then removed), or never registered in time:
            // make sure it is stopped, then forget it.
            let timed_out = now.saturating_sub(m.started_ms.max(since_load)) >= start_timeout;
            if !(m.registered || timed_out) || !stop(sms, a, state, seen, &m.uuid).await {
                continue;
            }
            if m.registered {
                forget(sms, state, &m.uuid, "lost").await?;
            } else {
                state.managed.remove(&m.uuid);
                sms.events
                    .append_with(
                        vec![crate::db::delete_op(format!("{PREFIX}{}", m.uuid))],
                        vec![(
                            "autoscaler.start_failed",
                            m.uuid.clone(),
                            json!({"after_ms": now.saturating_sub(m.started_ms)}),
                        )],
                    )
                    .await?;
            }
            continue;
        };
        if !m.registered {
            m.registered = true;
            store(sms, state, m.clone()).await?;
        }
        if m.draining_since_ms.is_none() {
            continue;
        }
        if n.status == NodeStatus::Active {
            // An operator set it active again: it serves, and counts, once more.
            m.draining_since_ms = None;
            m.stopping_since_ms = None;
            store(sms, state, m).await?;
            continue;
        }
        if now.saturating_sub(n.last_heartbeat_ms) > sms.heartbeat_timeout_ms {
            // Silent while draining: lost. Removing it requeues what it held; the next look
            // stops and forgets it.
            if let Err(e) = sms.delete_node(&m.uuid, "lost while draining").await {
                tracing::warn!("autoscaler: cannot remove silent node {}: {e}", m.uuid);
            }
            continue;
        }
        // Idle by the look's figures, and still nothing placed on it or invoked there now.
        let placed = sms
            .executions
            .read()
            .await
            .placed()
            .get(&m.uuid)
            .copied()
            .unwrap_or(0);
        let invoking = sms.invocations.on_node(&m.uuid);
        if !n.idle() || placed > 0 || invoking > 0 {
            continue;
        }
        if m.stopping_since_ms.is_none() {
            m.stopping_since_ms = Some(now);
            store(sms, state, m.clone()).await?;
        }
        if !stop(sms, a, state, seen, &m.uuid).await {
            continue;
        }
        match sms.delete_node(&m.uuid, "scaled down").await {
            // (A Spearlet stopped by SIGTERM may have deregistered itself already.)
            Ok(()) | Err(SmsError::NotFound { .. }) => {
                forget(sms, state, &m.uuid, "drained").await?;
            }
            Err(e) => tracing::warn!("autoscaler: cannot remove {}: {e}", m.uuid),
        }
    }
    Ok(())
}

async fn store(sms: &Sms, state: &mut State, m: Managed) -> Result<()> {
    sms.db
        .batch(vec![crate::db::put_op(format!("{PREFIX}{}", m.uuid), &m)?])
        .await?;
    state.managed.insert(m.uuid.clone(), m);
    Ok(())
}

async fn forget(sms: &Sms, state: &mut State, uuid: &str, reason: &str) -> Result<()> {
    let now = now_ms();
    let started = state.managed.get(uuid).map_or(now, |m| m.started_ms);
    sms.events
        .append_with(
            vec![crate::db::delete_op(format!("{PREFIX}{uuid}"))],
            vec![(
                "autoscaler.removed",
                uuid.to_owned(),
                json!({"reason": reason, "age_ms": now.saturating_sub(started)}),
            )],
        )
        .await?;
    state.managed.remove(uuid);
    Ok(())
}

/// The name the autoscaler's drains hold a node under ([`crate::model::Node::held_by`]).
const HOLDER: &str = "autoscaler";

fn set_status(status: &str) -> UpdateNode {
    UpdateNode {
        status: Some(status.into()),
        ..UpdateNode::default()
    }
}

/// Grow or shrink the pool to `decision.desired`.
pub(super) async fn act(
    sms: &Sms,
    a: &Autoscale,
    state: &mut State,
    view: &ScaleView,
    seen: &BTreeMap<String, Seen>,
    decision: ScaleDecision,
) -> Result<()> {
    let current = pool_size(state, seen);
    if decision.desired > current {
        grow(sms, a, state, seen, current, decision.desired).await
    } else if decision.desired < current {
        shrink(sms, state, view, seen, current, decision).await
    } else {
        Ok(())
    }
}

async fn grow(
    sms: &Sms,
    a: &Autoscale,
    state: &mut State,
    seen: &BTreeMap<String, Seen>,
    current: u32,
    desired: u32,
) -> Result<()> {
    let mut need = desired - current;
    // Nodes SMS is draining come back first: quicker than a start, and never past `max`.
    let mut back = Vec::new();
    // Only those SMS drained and still holds (an operator's drain or `inactive` is theirs).
    let draining: Vec<Managed> = state
        .managed
        .values()
        .filter(|m| {
            m.draining_since_ms.is_some()
                && m.stopping_since_ms.is_none()
                && seen.get(&m.uuid).is_some_and(|n| {
                    n.status == NodeStatus::Draining && n.held_by.as_deref() == Some(HOLDER)
                })
        })
        .cloned()
        .collect();
    for mut m in draining {
        if need == 0 {
            break;
        }
        if let Err(e) = sms.update_node(&m.uuid, set_status("active"), None).await {
            tracing::warn!("autoscaler: cannot take {} back: {e}", m.uuid);
            continue;
        }
        m.draining_since_ms = None;
        back.push(m.uuid.clone());
        store(sms, state, m).await?;
        need -= 1;
    }
    let now = now_ms();
    let uuids: Vec<String> = (0..need)
        .map(|_| uuid::Uuid::new_v4().to_string())
        .collect();
    let mut ops = Vec::new();
    let mut records = Vec::new();
    for uuid in &uuids {
        let m = Managed {
            uuid: uuid.clone(),
            started_ms: now,
            registered: false,
            draining_since_ms: None,
            stopping_since_ms: None,
        };
        ops.push(crate::db::put_op(format!("{PREFIX}{uuid}"), &m)?);
        records.push(m);
    }
    // Recorded before the provider is asked: a node that starts is never unknown.
    sms.events
        .append_with(
            ops,
            vec![(
                "autoscaler.scaled",
                "pool".to_owned(),
                json!({"from": current, "to": desired, "started": uuids, "taken_back": back}),
            )],
        )
        .await?;
    for m in records {
        state.managed.insert(m.uuid.clone(), m);
    }
    if !uuids.is_empty() {
        provide(sms, a, Action::Start, &uuids, desired).await;
    }
    state.last_action_ms = Some(now_ms());
    Ok(())
}

async fn shrink(
    sms: &Sms,
    state: &mut State,
    view: &ScaleView,
    seen: &BTreeMap<String, Seen>,
    current: u32,
    decision: ScaleDecision,
) -> Result<()> {
    let want = (current - decision.desired) as usize;
    // Only nodes SMS may drain: its own, serving now.
    let drainable = |uuid: &str| {
        state
            .managed
            .get(uuid)
            .is_some_and(|m| m.draining_since_ms.is_none())
            && seen
                .get(uuid)
                .is_some_and(|n| n.status == NodeStatus::Active)
    };
    let mut chosen: Vec<String> = decision
        .drain
        .iter()
        .filter(|uuid| drainable(uuid))
        .take(want)
        .cloned()
        .collect();
    let mut longest_idle: Vec<&ScaleNode> = view
        .nodes
        .iter()
        .filter(|n| {
            drainable(&n.id) && seen.get(&n.id).is_some_and(Seen::idle) && !chosen.contains(&n.id)
        })
        .collect();
    longest_idle.sort_by(|x, y| y.idle_ms.cmp(&x.idle_ms).then(x.id.cmp(&y.id)));
    for n in longest_idle {
        if chosen.len() >= want {
            break;
        }
        chosen.push(n.id.clone());
    }
    if chosen.is_empty() {
        return Ok(());
    }
    let mut draining = Vec::new();
    for uuid in &chosen {
        let Some(mut m) = state.managed.get(uuid).cloned() else {
            continue;
        };
        // The intent first: a crash before the drain leaves a record a look corrects (the node
        // is still active: it serves again), never a drained node SMS does not know it drains.
        m.draining_since_ms = Some(now_ms());
        store(sms, state, m.clone()).await?;
        if let Err(e) = sms
            .update_node(uuid, set_status("draining"), Some(HOLDER))
            .await
        {
            tracing::warn!("autoscaler: cannot drain {uuid}: {e}");
            m.draining_since_ms = None;
            store(sms, state, m).await?;
            continue;
        }
        draining.push(uuid.clone());
    }
    sms.events
        .append(
            "autoscaler.scaled",
            "pool",
            json!({"from": current, "to": decision.desired, "draining": draining}),
        )
        .await?;
    state.last_action_ms = Some(now_ms());
    Ok(())
}
