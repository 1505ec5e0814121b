//! The node registry: registration, heartbeats, updates, removal, and the health sweep. Every
//! change is stored, logged as an event, and sent to the scheduling strategy's view.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::Deserialize;
use serde_json::json;
use spear_plugin_api::{Label, Target};
use utoipa::ToSchema;

use crate::checks::check_labels;
use crate::error::{Result, SmsError};
use crate::model::{Node, NodeStatus, Resources, now_ms};
use crate::service::Sms;

/// Most executable types one node may register.
pub const MAX_NODE_EXECUTORS: usize = 64;

/// Label every node carries with its own uuid (hard affinity to one node).
pub const NODE_LABEL: &str = "spear.io/node";
/// Label prefix naming the executors a node runs (`spear.io/executor.wasm = "true"`).
pub const EXECUTOR_LABEL: &str = "spear.io/executor.";

/// `POST /api/v1/nodes`.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterNode {
    /// Optional: SMS assigns one when absent.
    #[serde(default)]
    pub uuid: Option<String>,
    /// Address of the Spearlet.
    pub ip_address: String,
    /// Port of the Spearlet.
    #[schema(minimum = 1, maximum = 65535)]
    pub port: i64,
    /// Free-form metadata.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// Scheduling labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Total resources.
    #[serde(default)]
    pub capacity: Resources,
    /// Executable types it runs.
    #[serde(default)]
    pub executors: Vec<String>,
    /// Executions it runs at once (default `dispatch.default_slots`).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 65536)]
    pub slots: Option<u32>,
}

/// `POST /api/v1/nodes/{uuid}/heartbeat`.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Heartbeat {
    /// Health figures (free-form, e.g. `cpu_usage`).
    #[serde(default)]
    pub health_info: BTreeMap<String, String>,
    /// Resources free now (when absent, the capacity minus nothing is assumed).
    #[serde(default)]
    pub available: Option<Resources>,
    /// Executions running now.
    #[serde(default)]
    pub running: Option<u32>,
}

/// `PUT /api/v1/nodes/{uuid}`.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateNode {
    /// New status (`active`, `draining`, `inactive`).
    #[serde(default)]
    pub status: Option<String>,
    /// Replaces the metadata when given.
    #[serde(default)]
    pub metadata: Option<BTreeMap<String, String>>,
    /// Replaces the labels when given.
    #[serde(default)]
    pub labels: Option<BTreeMap<String, String>>,
}

fn check_uuid(field: &str, value: &str) -> Result<()> {
    uuid::Uuid::parse_str(value)
        .map(|_| ())
        .map_err(|e| SmsError::invalid(field, format!("not a UUID: {e}")))
}

/// The strategy's view of a node. Only an active node with an open assignment stream can take work.
pub fn to_target(id: u64, node: &Node, connected: bool) -> Target {
    let mut labels: Vec<Label> = node
        .labels
        .iter()
        .map(|(k, v)| Label::new(k.clone(), v.clone()))
        .collect();
    labels.push(Label::new(NODE_LABEL, node.uuid.clone()));
    for e in &node.executors {
        labels.push(Label::new(format!("{EXECUTOR_LABEL}{e}"), "true"));
    }
    Target {
        id,
        name: node.uuid.clone(),
        labels,
        capacity: node.capacity.into(),
        available: node.available.into(),
        active: node.running,
        weight: 1,
        healthy: node.status == NodeStatus::Active && connected,
    }
}

impl Sms {
    /// Register a node (or re-register one with the same uuid).
    pub async fn register_node(&self, req: RegisterNode) -> Result<Node> {
        req.ip_address.parse::<IpAddr>().map_err(|_| {
            SmsError::invalid(
                "ip_address",
                format!("`{}` is not an IP address", req.ip_address),
            )
        })?;
        let port = u16::try_from(req.port)
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| {
                SmsError::invalid("port", format!("{} is not a port (1 to 65535)", req.port))
            })?;
        if let Some(u) = &req.uuid {
            check_uuid("uuid", u)?;
        }
        check_labels("labels", &req.labels)?;
        check_labels("metadata", &req.metadata)?;
        if req.executors.len() > MAX_NODE_EXECUTORS {
            return Err(SmsError::invalid(
                "executors",
                format!(
                    "at most {MAX_NODE_EXECUTORS} executable types, not {}",
                    req.executors.len()
                ),
            ));
        }
        for (i, e) in req.executors.iter().enumerate() {
            crate::checks::check_executable_type(&format!("executors[{i}]"), e)?;
        }
        let slots = match req.slots {
            None => self.dispatch.default_slots,
            Some(n) if (1..=crate::dispatch::MAX_SLOTS).contains(&n) => n,
            Some(n) => {
                return Err(SmsError::invalid(
                    "slots",
                    format!("must be 1 to {}, not {n}", crate::dispatch::MAX_SLOTS),
                ));
            }
        };
        let now = now_ms();
        let uuid = req.uuid.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let _node = self.node_locks.lock(&uuid).await;
        // An operator's drain outlives the node's own registrations.
        let (held, resource) = match self.nodes.read().await.get(&uuid) {
            // A registration again keeps the figures it last reported.
            Some(n) => (
                n.held_by.clone().map(|by| (n.status, by)),
                n.resource.clone(),
            ),
            None => (None, None),
        };
        let node = Node {
            uuid,
            ip_address: req.ip_address,
            port,
            status: held.as_ref().map_or(NodeStatus::Active, |(s, _)| *s),
            metadata: req.metadata,
            labels: req.labels,
            capacity: req.capacity,
            available: req.capacity,
            executors: req.executors,
            running: 0,
            slots,
            health_info: BTreeMap::new(),
            registered_at_ms: now,
            last_heartbeat_ms: now,
            resource,
            held_by: held.map(|(_, by)| by),
        };
        // The record and its event in one batch.
        self.events
            .append_with(
                vec![crate::db::put_op(format!("node/{}", node.uuid), &node)?],
                vec![(
                    "node.registered",
                    node.uuid.clone(),
                    json!({"ip_address": node.ip_address, "port": node.port}),
                )],
            )
            .await?;
        self.nodes
            .write()
            .await
            .insert(node.uuid.clone(), node.clone());
        self.sync_target(&node).await;
        Ok(node)
    }

    /// Record a heartbeat. Heartbeats update memory only (they are frequent); the node record is
    /// stored again when its status changes.
    pub async fn heartbeat(&self, uuid: &str, hb: Heartbeat) -> Result<Node> {
        check_labels("health_info", &hb.health_info)?;
        let (node, revived) = {
            let mut nodes = self.nodes.write().await;
            nodes
                .update(uuid, |node| {
                    node.last_heartbeat_ms = now_ms();
                    node.health_info = hb.health_info;
                    if let Some(a) = hb.available {
                        node.available = a;
                    }
                    if let Some(r) = hb.running {
                        node.running = r;
                    }
                    let revived = node.status == NodeStatus::Unhealthy;
                    if revived {
                        node.status = NodeStatus::Active;
                    }
                    (node.clone(), revived)
                })
                .ok_or_else(|| SmsError::not_found("node", uuid))?
        };
        if revived {
            let _node = self.node_locks.lock(uuid).await;
            // Read again as the record's owner: an update or a delete may have come since the
            // heartbeat's copy (a stale copy must not be stored over it, nor a deleted node
            // stored again).
            let current = self.nodes.read().await.get(uuid).cloned();
            if let Some(current) = current {
                self.events
                    .append_with(
                        vec![crate::db::put_op(format!("node/{uuid}"), &current)?],
                        vec![("node.healthy", uuid.to_owned(), json!({}))],
                    )
                    .await?;
            }
        }
        self.sync_target(&node).await;
        self.wake.notify_one();
        Ok(node)
    }

    /// Change a node's status, metadata or labels.
    /// `operator`: the name of the (non-node) token making the change, with auth on; a drain or
    /// an inactive status it sets holds the node (see [`Node::held_by`]).
    pub async fn update_node(
        &self,
        uuid: &str,
        req: UpdateNode,
        operator: Option<&str>,
    ) -> Result<Node> {
        let status = match req.status.as_deref() {
            None => None,
            Some(s) => Some(NodeStatus::parse(s).ok_or_else(|| {
                SmsError::invalid(
                    "status",
                    format!("`{s}` is not one of active, unhealthy, draining, inactive"),
                )
            })?),
        };
        if let Some(l) = &req.labels {
            check_labels("labels", l)?;
        }
        if let Some(m) = &req.metadata {
            check_labels("metadata", m)?;
        }
        let _node = self.node_locks.lock(uuid).await;
        let mut node = self
            .nodes
            .read()
            .await
            .get(uuid)
            .cloned()
            .ok_or_else(|| SmsError::not_found("node", uuid))?;
        if let Some(s) = status {
            node.status = s;
            node.held_by = match s {
                NodeStatus::Draining | NodeStatus::Inactive => {
                    operator.map(str::to_owned).or(node.held_by)
                }
                _ => None,
            };
        }
        if let Some(m) = req.metadata {
            node.metadata = m;
        }
        if let Some(l) = req.labels {
            node.labels = l;
        }
        self.events
            .append_with(
                vec![crate::db::put_op(format!("node/{uuid}"), &node)?],
                vec![(
                    "node.updated",
                    uuid.to_owned(),
                    json!({"status": node.status.as_str()}),
                )],
            )
            .await?;
        self.nodes.write().await.insert(uuid.into(), node.clone());
        self.sync_target(&node).await;
        Ok(node)
    }

    /// Remove a node.
    pub async fn delete_node(&self, uuid: &str, reason: &str) -> Result<()> {
        let _node = self.node_locks.lock(uuid).await;
        if !self.nodes.read().await.contains_key(uuid) {
            return Err(SmsError::not_found("node", uuid));
        }
        self.events
            .append_with(
                vec![spear_plugin_api::storage::BatchOp::Delete {
                    key: format!("node/{uuid}").into_bytes(),
                }],
                vec![("node.removed", uuid.to_owned(), json!({"reason": reason}))],
            )
            .await?;
        self.nodes.write().await.remove(uuid);
        if let Some(id) = self.target_ids.lock().await.remove(uuid) {
            self.target_names.lock().await.remove(&id);
            self.feed
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(id);
        }
        self.node_lost(uuid, "removed");
        Ok(())
    }

    /// One node.
    pub async fn node(&self, uuid: &str) -> Result<Node> {
        self.nodes
            .read()
            .await
            .get(uuid)
            .cloned()
            .ok_or_else(|| SmsError::not_found("node", uuid))
    }

    /// Whether node `uuid` is registered and active (takes work).
    pub async fn node_active(&self, uuid: &str) -> bool {
        self.nodes
            .read()
            .await
            .get(uuid)
            .is_some_and(|n| n.status == NodeStatus::Active)
    }

    /// Nodes, optionally of one status.
    pub async fn nodes(&self, status: Option<&str>) -> Result<Vec<Node>> {
        let status = match status {
            None => None,
            Some(s) => Some(NodeStatus::parse(s).ok_or_else(|| {
                SmsError::invalid(
                    "status",
                    format!("`{s}` is not one of active, unhealthy, draining, inactive"),
                )
            })?),
        };
        Ok(self
            .nodes
            .read()
            .await
            .values()
            .filter(|n| status.is_none_or(|s| n.status == s))
            .cloned()
            .collect())
    }

    /// How many nodes are known, how many are active, and how many were heard from since
    /// `since_ms` (counted in place, nothing cloned).
    pub async fn node_counts(&self, since_ms: i64) -> (usize, usize, usize) {
        let nodes = self.nodes.read().await;
        nodes.values().fold((0, 0, 0), |(all, active, recent), n| {
            (
                all + 1,
                active + usize::from(n.status == NodeStatus::Active),
                recent + usize::from(n.last_heartbeat_ms >= since_ms),
            )
        })
    }

    /// Send the node's current figures to the strategy's view.
    pub(crate) async fn sync_target(&self, node: &Node) {
        let id = {
            let mut ids = self.target_ids.lock().await;
            match ids.get(&node.uuid) {
                Some(id) => *id,
                None => {
                    let id = self
                        .next_target
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    ids.insert(node.uuid.clone(), id);
                    self.target_names.lock().await.insert(id, node.uuid.clone());
                    id
                }
            }
        };
        let connected = self.connected(&node.uuid).await;
        // Coalesced: the scheduler sends every changed node in one `upsert` before it places
        // (heartbeats are frequent; strategy calls are not free).
        self.feed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .upsert(to_target(id, node, connected));
    }

    /// Mark silent nodes unhealthy, and remove those unhealthy for longer than the cleanup
    /// interval. Returns how many changed.
    pub async fn sweep_nodes(&self) -> Result<usize> {
        self.prune_streams().await;
        let now = now_ms();
        let timeout = self.heartbeat_timeout_ms;
        let cleanup = self.cleanup_interval_ms;
        let (stale, dead): (Vec<String>, Vec<String>) = {
            let nodes = self.nodes.read().await;
            let stale = nodes
                .values()
                .filter(|n| n.status == NodeStatus::Active && now - n.last_heartbeat_ms > timeout)
                .map(|n| n.uuid.clone())
                .collect();
            let dead = nodes
                .values()
                .filter(|n| {
                    n.status == NodeStatus::Unhealthy
                        && now - n.last_heartbeat_ms > timeout + cleanup
                })
                .map(|n| n.uuid.clone())
                .collect();
            (stale, dead)
        };
        let changed = stale.len() + dead.len();
        let mut failed = None;
        for uuid in stale {
            let _guard = self.node_locks.lock(&uuid).await;
            // Read again: a heartbeat may have come since the list was made.
            let Some(mut node) = self.nodes.read().await.get(&uuid).cloned() else {
                continue;
            };
            if !(node.status == NodeStatus::Active && now - node.last_heartbeat_ms > timeout) {
                continue;
            }
            node.status = NodeStatus::Unhealthy;
            // The record and its event in one batch; one that cannot be stored leaves the node
            // active, to be swept again (the others go on).
            let stored = self
                .events
                .append_with(
                    vec![crate::db::put_op(format!("node/{uuid}"), &node)?],
                    vec![(
                        "node.unhealthy",
                        uuid.clone(),
                        json!({"last_heartbeat_ms": node.last_heartbeat_ms}),
                    )],
                )
                .await;
            if let Err(e) = stored {
                failed = failed.or(Some(e));
                continue;
            }
            // In memory only if no heartbeat came while it was stored (a heartbeat takes no
            // lock but the table's); one that did finds the node active, as it is, and the
            // stored record is corrected by storing it again.
            let current = self.nodes.write().await.update(&uuid, |n| {
                if n.last_heartbeat_ms == node.last_heartbeat_ms {
                    n.status = NodeStatus::Unhealthy;
                    None
                } else {
                    Some(n.clone())
                }
            });
            match current {
                Some(None) => {
                    drop(_guard);
                    self.sync_target(&node).await;
                    self.node_lost(&uuid, "missed its heartbeats");
                }
                // Still under the node's lock: no other change of the node's record came
                // between the heartbeat's copy and this write.
                Some(Some(alive)) => {
                    let healthy = self
                        .events
                        .append_with(
                            vec![crate::db::put_op(format!("node/{uuid}"), &alive)?],
                            vec![("node.healthy", uuid.clone(), json!({}))],
                        )
                        .await;
                    if let Err(e) = healthy {
                        failed = failed.or(Some(e));
                    }
                }
                None => {}
            }
        }
        for uuid in dead {
            if let Err(e) = self
                .delete_node(&uuid, "no heartbeat within the cleanup interval")
                .await
            {
                failed = failed.or(Some(e));
            }
        }
        failed.map_or(Ok(changed), Err)
    }
}
