//! Node resources as SPEAR reports them (`PUT /api/v1/nodes/{uuid}/resource`,
//! `sms.NodeService/UpdateNodeResource`): usage figures a node (or an operator) sends, kept on the
//! node's record and shown beside it. SMS's own placement reads `capacity` and `available` from
//! heartbeats; these figures are for people and SPEAR's clients.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;

use crate::checks::{MAX_ENTRIES, check_line};
use crate::error::{Result, SmsError};
use crate::model::now_ms;
use crate::service::Sms;

/// Nodes one `GET /api/v1/resources` may name.
pub const MAX_NODES_ASKED: usize = 1000;

/// A node's resource figures (SPEAR's `NodeResource`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct NodeResource {
    /// The node.
    pub node_uuid: String,
    /// CPU in use, percent (0 to 100).
    pub cpu_usage_percent: f64,
    /// Memory in use, percent (0 to 100).
    pub memory_usage_percent: f64,
    /// Memory in all, bytes.
    pub total_memory_bytes: i64,
    /// Memory in use, bytes.
    pub used_memory_bytes: i64,
    /// Memory free, bytes.
    pub available_memory_bytes: i64,
    /// Disk in use, percent (0 to 100).
    pub disk_usage_percent: f64,
    /// Disk in all, bytes.
    pub total_disk_bytes: i64,
    /// Disk in use, bytes.
    pub used_disk_bytes: i64,
    /// Bytes received per second.
    pub network_rx_bytes_per_sec: i64,
    /// Bytes sent per second.
    pub network_tx_bytes_per_sec: i64,
    /// Load average over 1 minute.
    pub load_average_1m: f64,
    /// Load average over 5 minutes.
    pub load_average_5m: f64,
    /// Load average over 15 minutes.
    pub load_average_15m: f64,
    /// Free-form metadata.
    #[serde(default)]
    pub resource_metadata: BTreeMap<String, String>,
    /// When SMS took the report, seconds since the Unix epoch.
    pub updated_at: i64,
}

/// A report of resource figures: SPEAR's fields, each optional (absent: 0).
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ResourceReport {
    /// CPU in use, percent (0 to 100).
    pub cpu_usage_percent: f64,
    /// Memory in use, percent (0 to 100).
    pub memory_usage_percent: f64,
    /// Memory in all, bytes.
    pub total_memory_bytes: u64,
    /// Memory in use, bytes.
    pub used_memory_bytes: u64,
    /// Memory free, bytes.
    pub available_memory_bytes: u64,
    /// Disk in use, percent (0 to 100).
    pub disk_usage_percent: f64,
    /// Disk in all, bytes.
    pub total_disk_bytes: u64,
    /// Disk in use, bytes.
    pub used_disk_bytes: u64,
    /// Bytes received per second.
    pub network_rx_bytes_per_sec: u64,
    /// Bytes sent per second.
    pub network_tx_bytes_per_sec: u64,
    /// Load average over 1 minute (0 or more).
    pub load_average_1m: f64,
    /// Load average over 5 minutes.
    pub load_average_5m: f64,
    /// Load average over 15 minutes.
    pub load_average_15m: f64,
    /// Free-form metadata (at most 64 entries).
    pub resource_metadata: BTreeMap<String, String>,
}

impl ResourceReport {
    /// The figures for `node`, checked (each field named when out of range).
    pub fn check(self, node: &str) -> Result<NodeResource> {
        let percent = |field: &str, v: f64| {
            if v.is_finite() && (0.0..=100.0).contains(&v) {
                Ok(v)
            } else {
                Err(SmsError::invalid(
                    field,
                    format!("{v} is not a percentage (0 to 100)"),
                ))
            }
        };
        let load = |field: &str, v: f64| {
            if v.is_finite() && v >= 0.0 {
                Ok(v)
            } else {
                Err(SmsError::invalid(
                    field,
                    format!("{v} is not a load average (0 or more)"),
                ))
            }
        };
        let bytes = |field: &str, v: u64| {
            i64::try_from(v).map_err(|_| SmsError::invalid(field, format!("at most {}", i64::MAX)))
        };
        if self.resource_metadata.len() > MAX_ENTRIES {
            return Err(SmsError::invalid(
                "resource_metadata",
                format!("at most {MAX_ENTRIES} entries"),
            ));
        }
        for (k, v) in &self.resource_metadata {
            let at = format!("resource_metadata.{k}");
            check_line(&at, k, 256)?;
            check_line(&at, v, 1024)?;
        }
        Ok(NodeResource {
            node_uuid: node.to_owned(),
            cpu_usage_percent: percent("cpu_usage_percent", self.cpu_usage_percent)?,
            memory_usage_percent: percent("memory_usage_percent", self.memory_usage_percent)?,
            total_memory_bytes: bytes("total_memory_bytes", self.total_memory_bytes)?,
            used_memory_bytes: bytes("used_memory_bytes", self.used_memory_bytes)?,
            available_memory_bytes: bytes("available_memory_bytes", self.available_memory_bytes)?,
            disk_usage_percent: percent("disk_usage_percent", self.disk_usage_percent)?,
            total_disk_bytes: bytes("total_disk_bytes", self.total_disk_bytes)?,
            used_disk_bytes: bytes("used_disk_bytes", self.used_disk_bytes)?,
            network_rx_bytes_per_sec: bytes(
                "network_rx_bytes_per_sec",
                self.network_rx_bytes_per_sec,
            )?,
            network_tx_bytes_per_sec: bytes(
                "network_tx_bytes_per_sec",
                self.network_tx_bytes_per_sec,
            )?,
            load_average_1m: load("load_average_1m", self.load_average_1m)?,
            load_average_5m: load("load_average_5m", self.load_average_5m)?,
            load_average_15m: load("load_average_15m", self.load_average_15m)?,
            resource_metadata: self.resource_metadata,
            updated_at: now_ms() / 1000,
        })
    }
}

impl Sms {
    /// Keep `report` as node `uuid`'s resource figures (the node must be registered).
    pub async fn set_node_resource(
        &self,
        uuid: &str,
        report: ResourceReport,
    ) -> Result<NodeResource> {
        let resource = report.check(uuid)?;
        let _node = self.node_locks.lock(uuid).await;
        let mut node = self
            .nodes
            .read()
            .await
            .get(uuid)
            .cloned()
            .ok_or_else(|| SmsError::not_found("node", uuid))?;
        node.resource = Some(resource.clone());
        self.events
            .append_with(
                vec![crate::db::put_op(format!("node/{uuid}"), &node)?],
                vec![(
                    "node.resource",
                    uuid.to_owned(),
                    json!({"cpu_usage_percent": resource.cpu_usage_percent}),
                )],
            )
            .await?;
        self.nodes.write().await.insert(uuid.into(), node);
        Ok(resource)
    }

    /// Node `uuid`'s resource figures: not found when the node is unknown or has reported none.
    pub async fn node_resource(&self, uuid: &str) -> Result<NodeResource> {
        self.node(uuid)
            .await?
            .resource
            .ok_or_else(|| SmsError::not_found("node resource", uuid))
    }

    /// The resource figures of `uuids` (every node's when empty), of the nodes that reported
    /// some; unknown nodes are left out.
    pub async fn node_resources(&self, uuids: &[String]) -> Result<Vec<NodeResource>> {
        if uuids.len() > MAX_NODES_ASKED {
            return Err(SmsError::invalid(
                "node_uuids",
                format!("at most {MAX_NODES_ASKED} nodes"),
            ));
        }
        let nodes = self.nodes.read().await;
        Ok(if uuids.is_empty() {
            nodes.values().filter_map(|n| n.resource.clone()).collect()
        } else {
            uuids
                .iter()
                .filter_map(|u| nodes.get(u).and_then(|n| n.resource.clone()))
                .collect()
        })
    }
}
