//! The autoscaler's loop: look, ask the policy, act (see the module docs of [`super`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use spear_plugin_api::{QueueStats, ScaleNode, ScaleView};
use tokio::sync::watch;

use super::AutoscalerConfig;
use super::act::{act, settle};
use crate::error::Result;
use crate::model::{NodeStatus, now_ms};
use crate::service::Sms;

/// Where managed nodes are kept in storage.
pub(super) const PREFIX: &str = "autoscale/node/";

/// A node the provider started, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Managed {
    /// Its node UUID (given to it before it started).
    pub uuid: String,
    /// When it was asked to start (ms since the epoch).
    pub started_ms: i64,
    /// Whether it has registered.
    #[serde(default)]
    pub registered: bool,
    /// When SMS set it draining to remove it.
    #[serde(default)]
    pub draining_since_ms: Option<i64>,
    /// When SMS first asked the provider to stop it (stored before asking: a node being
    /// stopped is never taken back into the pool).
    #[serde(default)]
    pub stopping_since_ms: Option<i64>,
}

/// What `GET /api/v1/autoscaler` shows.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Status {
    /// The policy in the slot, if any (as of the request).
    pub policy: Option<String>,
    /// The last valid answer's pool size.
    pub desired: Option<u32>,
    /// The managed nodes.
    pub nodes: Vec<Managed>,
    /// When SMS last started or drained nodes (ms since the epoch).
    pub last_action_ms: Option<i64>,
    /// The last provider failure.
    pub last_error: Option<String>,
}

#[derive(Debug, Default)]
pub(super) struct State {
    /// When this SMS read the managed nodes from storage (`None`: not yet). Starts and idle
    /// times are counted from then at the earliest: nothing could register or be seen busy
    /// while no SMS led.
    pub loaded_ms: Option<i64>,
    pub managed: BTreeMap<String, Managed>,
    /// When each node last had work (ms since the epoch).
    pub busy_at: HashMap<String, i64>,
    /// The nodes the last look found busy.
    pub busy: std::collections::HashSet<String>,
    pub last_action_ms: Option<i64>,
}

/// The autoscaler of one SMS.
#[derive(Debug)]
pub struct Autoscale {
    pub(super) config: AutoscalerConfig,
    pub(super) grpc_addr: std::sync::OnceLock<String>,
    state: tokio::sync::Mutex<State>,
    status: std::sync::Mutex<Status>,
}

/// A node's figures, copied out of the table.
pub(super) struct Seen {
    pub status: NodeStatus,
    pub slots: u32,
    pub running: u32,
    pub placed: u32,
    /// Function invocations SMS waits for from it.
    pub invoking: u32,
    /// The token that drained it or set it inactive, if any.
    pub held_by: Option<String>,
    pub registered_at_ms: i64,
    pub last_heartbeat_ms: i64,
    pub cpu_millis: u64,
    pub memory_mb: u64,
}

impl Seen {
    /// Whether it has nothing to do: nothing placed by SMS, no invocation waited for, nothing
    /// running by its heartbeat.
    pub fn idle(&self) -> bool {
        self.placed == 0 && self.running == 0 && self.invoking == 0
    }

    /// Whether it counts in the pool (SMS's and the policy's view agree on this).
    pub fn in_pool(&self) -> bool {
        !matches!(self.status, NodeStatus::Draining | NodeStatus::Inactive)
    }
}

impl Autoscale {
    /// An autoscaler for `config` (its managed nodes are read at its first look).
    pub fn new(config: AutoscalerConfig) -> Self {
        Self {
            config,
            grpc_addr: std::sync::OnceLock::new(),
            state: tokio::sync::Mutex::new(State::default()),
            status: std::sync::Mutex::new(Status::default()),
        }
    }

    /// The gRPC address the provider's nodes are told (`SPEAR_SMS_GRPC_ADDR`).
    pub fn set_grpc_addr(&self, addr: String) {
        let _ = self.grpc_addr.set(addr);
    }

    /// A snapshot of what the autoscaler knows.
    pub fn status(&self) -> Status {
        self.status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub(super) fn note(&self, change: impl FnOnce(&mut Status)) {
        change(&mut self.status.lock().unwrap_or_else(|p| p.into_inner()));
    }
}

/// The loop: a look every `interval_ms` until `stop`.
pub async fn run(sms: Arc<Sms>, mut stop: watch::Receiver<bool>) {
    let Some(a) = sms.autoscale.clone() else {
        return;
    };
    let mut tick = tokio::time::interval(Duration::from_millis(a.config.interval_ms));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if let Err(e) = look(&sms, &a).await {
                    tracing::warn!("autoscaler: {e}");
                }
            }
            _ = stop.changed() => return,
        }
    }
}

/// One look: load what is managed (once), settle starts and drains, ask the policy, act.
async fn look(sms: &Arc<Sms>, a: &Autoscale) -> Result<()> {
    let mut state = a.state.lock().await;
    if state.loaded_ms.is_none() {
        for m in sms.db.load_all::<Managed>(PREFIX).await? {
            state.managed.insert(m.uuid.clone(), m);
        }
        let now = now_ms();
        state.loaded_ms = Some(now);
        // Taken over (a restart, a new leader): a cooldown before the first action.
        if !state.managed.is_empty() {
            state.last_action_ms = Some(now);
        }
    }
    let now = now_ms();
    let (queue, seen) = observe(sms).await;
    // A node is idle from the first look that finds it idle (its work ended since the one
    // before): idle time is never overstated, so no node is drained before its delay.
    for (uuid, n) in &seen {
        let was_busy = state.busy.contains(uuid);
        if !n.idle() || was_busy {
            state.busy_at.insert(uuid.clone(), now);
        }
    }
    state.busy = seen
        .iter()
        .filter(|(_, n)| !n.idle())
        .map(|(uuid, _)| uuid.clone())
        .collect();
    state.busy_at.retain(|uuid, _| seen.contains_key(uuid));
    settle(sms, a, &mut state, &seen).await?;
    let view = view_of(a, &state, &seen, queue, now);
    publish(sms, a, &state, &view);
    let plugins = sms.plugins.clone();
    let asked = view.clone();
    let decision = tokio::task::spawn_blocking(move || plugins.autoscaler().decide(&asked))
        .await
        .ok()
        .flatten();
    let Some(decision) = decision else {
        return Ok(());
    };
    sms.metrics
        .autoscaler_desired
        .set(i64::from(decision.desired));
    a.note(|s| s.desired = Some(decision.desired));
    let cooldown = i64::try_from(a.config.cooldown_ms).unwrap_or(i64::MAX);
    let cooled = state
        .last_action_ms
        .is_none_or(|t| now.saturating_sub(t) >= cooldown);
    if cooled {
        act(sms, a, &mut state, &view, &seen, decision).await?;
    }
    publish(sms, a, &state, &view);
    Ok(())
}

/// The queue and every node, copied out of the tables.
async fn observe(sms: &Sms) -> (QueueStats, BTreeMap<String, Seen>) {
    let now = now_ms();
    let (mut queue, placed) = {
        let table = sms.executions.read().await;
        let mut queue = QueueStats::default();
        let mut oldest = now;
        // Work in a retry's back-off is not waiting for a node yet.
        for (_, e) in table.ready().filter(|(_, e)| e.not_before_ms <= now) {
            queue.depth = queue.depth.saturating_add(1);
            queue.cpu_millis = queue.cpu_millis.saturating_add(e.needs.cpu_millis);
            queue.memory_mb = queue.memory_mb.saturating_add(e.needs.memory_mb);
            oldest = oldest.min(e.submitted_at_ms);
        }
        queue.oldest_wait_ms = u64::try_from(now.saturating_sub(oldest)).unwrap_or(0);
        (queue, table.placed().clone())
    };
    let invoking = sms.invocations.per_node();
    let nodes = sms.nodes.read().await;
    let default_slots = sms.dispatch.default_slots;
    let mut seen = BTreeMap::new();
    for n in nodes.values() {
        let slots = if n.slots == 0 { default_slots } else { n.slots };
        let placed = placed.get(&n.uuid).copied().unwrap_or(0);
        // Work sent ahead to a node past its slots waits there: it is backlog too.
        queue.depth = queue.depth.saturating_add(placed.saturating_sub(slots));
        seen.insert(
            n.uuid.clone(),
            Seen {
                status: n.status,
                slots,
                running: n.running,
                placed,
                invoking: invoking.get(&n.uuid).copied().unwrap_or(0),
                held_by: n.held_by.clone(),
                registered_at_ms: n.registered_at_ms,
                last_heartbeat_ms: n.last_heartbeat_ms,
                cpu_millis: n.capacity.cpu_millis,
                memory_mb: n.capacity.memory_mb,
            },
        );
    }
    (queue, seen)
}

/// What the policy is shown.
pub(super) fn view_of(
    a: &Autoscale,
    state: &State,
    seen: &BTreeMap<String, Seen>,
    queue: QueueStats,
    now: i64,
) -> ScaleView {
    let mut nodes: Vec<ScaleNode> = seen
        .iter()
        .map(|(uuid, n)| {
            let managed = state.managed.get(uuid);
            let last_busy = state
                .busy_at
                .get(uuid)
                .copied()
                .unwrap_or_else(|| n.registered_at_ms.max(state.loaded_ms.unwrap_or(i64::MIN)));
            ScaleNode {
                id: uuid.clone(),
                managed: managed.is_some(),
                registered: true,
                healthy: n.status != NodeStatus::Unhealthy,
                // Drained or set aside (by SMS or an operator): not part of the pool.
                draining: !n.in_pool() || managed.is_some_and(|m| m.draining_since_ms.is_some()),
                slots: n.slots,
                running: n.running.max(n.placed).saturating_add(n.invoking),
                idle_ms: if !n.idle() {
                    0
                } else {
                    u64::try_from(now.saturating_sub(last_busy)).unwrap_or(0)
                },
                cpu_millis: n.cpu_millis,
                memory_mb: n.memory_mb,
            }
        })
        .collect();
    for m in state.managed.values() {
        if !seen.contains_key(&m.uuid) {
            nodes.push(ScaleNode {
                id: m.uuid.clone(),
                managed: true,
                registered: false,
                healthy: true,
                draining: m.draining_since_ms.is_some(),
                slots: 0,
                running: 0,
                idle_ms: 0,
                cpu_millis: 0,
                memory_mb: 0,
            });
        }
    }
    ScaleView {
        now_ms: u64::try_from(now).unwrap_or(0),
        queue,
        nodes,
        limits: a.config.limits(),
        since_last_action_ms: state.last_action_ms.map_or(u64::MAX, |t| {
            u64::try_from(now.saturating_sub(t)).unwrap_or(0)
        }),
    }
}

/// Show the managed nodes on `/metrics` and in the status.
fn publish(sms: &Sms, a: &Autoscale, state: &State, view: &ScaleView) {
    let count = |f: &dyn Fn(&ScaleNode) -> bool| {
        view.nodes.iter().filter(|n| n.managed && f(n)).count() as i64
    };
    let gauge = &sms.metrics.autoscaler_nodes;
    gauge
        .with_label_values(&["starting"])
        .set(count(&|n| !n.registered && !n.draining));
    gauge
        .with_label_values(&["serving"])
        .set(count(&|n| n.registered && !n.draining));
    gauge
        .with_label_values(&["draining"])
        .set(count(&|n| n.draining));
    let policy = sms.plugins.autoscaler().active().map(|p| p.name);
    a.note(|s| {
        s.policy = policy;
        s.nodes = state.managed.values().cloned().collect();
        s.last_action_ms = state.last_action_ms;
    });
}
