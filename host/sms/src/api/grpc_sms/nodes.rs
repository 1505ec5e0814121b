//! `sms.NodeService`.

use spear_proto::sms;
use tonic::{Request, Response, Status};

use crate::api::grpc::{Grpc, principal, required};
use crate::auth::as_node;
use crate::error::SmsError;
use crate::model;
use crate::nodes::{Heartbeat, RegisterNode, UpdateNode};
use crate::resources::{NodeResource, ResourceReport};

use super::secs;

fn wire_node(n: model::Node) -> sms::Node {
    sms::Node {
        uuid: n.uuid,
        ip_address: n.ip_address,
        port: i32::from(n.port),
        status: n.status.as_str().into(),
        last_heartbeat: secs(n.last_heartbeat_ms),
        registered_at: secs(n.registered_at_ms),
        metadata: n.metadata.into_iter().collect(),
    }
}

#[tonic::async_trait]
impl sms::node_service_server::NodeService for Grpc {
    async fn register_node(
        &self,
        r: Request<sms::RegisterNodeRequest>,
    ) -> Result<Response<sms::RegisterNodeResponse>, Status> {
        let who = principal(&r);
        let node = r
            .into_inner()
            .node
            .ok_or_else(|| SmsError::invalid("node", "is required"))?;
        let mut req = RegisterNode {
            uuid: Some(node.uuid).filter(|u| !u.is_empty()),
            ip_address: node.ip_address,
            port: i64::from(node.port),
            metadata: node.metadata.into_iter().collect(),
            ..RegisterNode::default()
        };
        self.0.node_registers(who.as_ref(), &mut req.uuid).await?;
        let node = self.0.register_node(req).await?;
        Ok(Response::new(sms::RegisterNodeResponse {
            success: true,
            message: "Node registered successfully".into(),
            node_uuid: node.uuid,
        }))
    }

    async fn update_node(
        &self,
        r: Request<sms::UpdateNodeRequest>,
    ) -> Result<Response<sms::UpdateNodeResponse>, Status> {
        let who = principal(&r);
        let r = r.into_inner();
        // SPEAR takes the node's own uuid; the request's when that is empty.
        let uuid = r
            .node
            .as_ref()
            .map(|n| n.uuid.clone())
            .filter(|u| !u.is_empty())
            .unwrap_or(r.uuid);
        as_node(who.as_ref(), &uuid)?;
        let node = r
            .node
            .ok_or_else(|| SmsError::invalid("node", "is required"))?;
        required("node.uuid", &uuid)?;
        let current = self.0.node(&uuid).await?;
        if !node.ip_address.is_empty() && node.ip_address != current.ip_address {
            return Err(SmsError::invalid(
                "node.ip_address",
                "a node's address changes when it registers again, not by an update",
            )
            .into());
        }
        if node.port != 0 && node.port != i32::from(current.port) {
            return Err(SmsError::invalid(
                "node.port",
                "a node's port changes when it registers again, not by an update",
            )
            .into());
        }
        let req = UpdateNode {
            status: Some(node.status).filter(|s| !s.is_empty()),
            metadata: Some(node.metadata.into_iter().collect())
                .filter(|m: &std::collections::BTreeMap<_, _>| !m.is_empty()),
            labels: None,
        };
        crate::auth::node_may_set(who.as_ref(), req.status.as_deref())?;
        let by = crate::auth::operator(who.as_ref());
        self.0.update_node(&uuid, req, by).await?;
        Ok(Response::new(sms::UpdateNodeResponse {
            success: true,
            message: "Node updated successfully".into(),
        }))
    }

    async fn delete_node(
        &self,
        r: Request<sms::DeleteNodeRequest>,
    ) -> Result<Response<sms::DeleteNodeResponse>, Status> {
        let who = principal(&r);
        let r = r.into_inner();
        as_node(who.as_ref(), &r.uuid)?;
        required("uuid", &r.uuid)?;
        self.0.node_may_delete(who.as_ref(), &r.uuid).await?;
        self.0
            .delete_node(&r.uuid, "deleted through the API")
            .await?;
        Ok(Response::new(sms::DeleteNodeResponse {
            success: true,
            message: "Node deleted successfully".into(),
        }))
    }

    async fn heartbeat(
        &self,
        r: Request<sms::HeartbeatRequest>,
    ) -> Result<Response<sms::HeartbeatResponse>, Status> {
        let who = principal(&r);
        let r = r.into_inner();
        as_node(who.as_ref(), &r.uuid)?;
        required("uuid", &r.uuid)?;
        let hb = Heartbeat {
            health_info: r.health_info.into_iter().collect(),
            ..Heartbeat::default()
        };
        let node = self.0.heartbeat(&r.uuid, hb).await?;
        Ok(Response::new(sms::HeartbeatResponse {
            success: true,
            message: "Heartbeat received".into(),
            server_timestamp: secs(node.last_heartbeat_ms),
        }))
    }

    async fn list_nodes(
        &self,
        r: Request<sms::ListNodesRequest>,
    ) -> Result<Response<sms::ListNodesResponse>, Status> {
        let r = r.into_inner();
        let status = Some(r.status_filter.as_str()).filter(|s| !s.is_empty());
        let nodes = self.0.nodes(status).await?;
        Ok(Response::new(sms::ListNodesResponse {
            nodes: nodes.into_iter().map(wire_node).collect(),
        }))
    }

    async fn get_node(
        &self,
        r: Request<sms::GetNodeRequest>,
    ) -> Result<Response<sms::GetNodeResponse>, Status> {
        let r = r.into_inner();
        required("uuid", &r.uuid)?;
        // SPEAR answers NOT_FOUND for an unknown node (never `found: false`).
        let node = self.0.node(&r.uuid).await?;
        Ok(Response::new(sms::GetNodeResponse {
            found: true,
            node: Some(wire_node(node)),
        }))
    }

    async fn update_node_resource(
        &self,
        r: Request<sms::UpdateNodeResourceRequest>,
    ) -> Result<Response<sms::UpdateNodeResourceResponse>, Status> {
        let who = principal(&r);
        let res = r.into_inner().resource.unwrap_or_default();
        as_node(who.as_ref(), &res.node_uuid)?;
        required("resource.node_uuid", &res.node_uuid)?;
        let uuid = res.node_uuid.clone();
        let report = report_of(res)?;
        self.0.set_node_resource(&uuid, report).await?;
        Ok(Response::new(sms::UpdateNodeResourceResponse {
            success: true,
            message: "Resource updated successfully".into(),
        }))
    }

    async fn get_node_resource(
        &self,
        r: Request<sms::GetNodeResourceRequest>,
    ) -> Result<Response<sms::GetNodeResourceResponse>, Status> {
        let r = r.into_inner();
        required("node_uuid", &r.node_uuid)?;
        Ok(Response::new(
            match self.0.node_resource(&r.node_uuid).await {
                Ok(res) => sms::GetNodeResourceResponse {
                    found: true,
                    resource: Some(wire_resource(res)),
                },
                Err(SmsError::NotFound { .. }) => sms::GetNodeResourceResponse::default(),
                Err(e) => return Err(e.into()),
            },
        ))
    }

    async fn list_node_resources(
        &self,
        r: Request<sms::ListNodeResourcesRequest>,
    ) -> Result<Response<sms::ListNodeResourcesResponse>, Status> {
        let asked = r.into_inner().node_uuids;
        let resources = self.0.node_resources(&asked).await?;
        Ok(Response::new(sms::ListNodeResourcesResponse {
            resources: resources.into_iter().map(wire_resource).collect(),
        }))
    }

    async fn get_node_with_resource(
        &self,
        r: Request<sms::GetNodeWithResourceRequest>,
    ) -> Result<Response<sms::GetNodeWithResourceResponse>, Status> {
        let r = r.into_inner();
        required("uuid", &r.uuid)?;
        Ok(Response::new(match self.0.node(&r.uuid).await {
            Ok(node) => sms::GetNodeWithResourceResponse {
                found: true,
                resource: node.resource.clone().map(wire_resource),
                node: Some(wire_node(node)),
            },
            Err(SmsError::NotFound { .. }) => sms::GetNodeWithResourceResponse::default(),
            Err(e) => return Err(e.into()),
        }))
    }
}

/// SPEAR's figures as a report (negative byte counts are refused, naming the field).
fn report_of(r: sms::NodeResource) -> Result<ResourceReport, SmsError> {
    let bytes = |field: &str, v: i64| {
        u64::try_from(v).map_err(|_| SmsError::invalid(field, format!("{v} is negative")))
    };
    Ok(ResourceReport {
        cpu_usage_percent: r.cpu_usage_percent,
        memory_usage_percent: r.memory_usage_percent,
        total_memory_bytes: bytes("total_memory_bytes", r.total_memory_bytes)?,
        used_memory_bytes: bytes("used_memory_bytes", r.used_memory_bytes)?,
        available_memory_bytes: bytes("available_memory_bytes", r.available_memory_bytes)?,
        disk_usage_percent: r.disk_usage_percent,
        total_disk_bytes: bytes("total_disk_bytes", r.total_disk_bytes)?,
        used_disk_bytes: bytes("used_disk_bytes", r.used_disk_bytes)?,
        network_rx_bytes_per_sec: bytes("network_rx_bytes_per_sec", r.network_rx_bytes_per_sec)?,
        network_tx_bytes_per_sec: bytes("network_tx_bytes_per_sec", r.network_tx_bytes_per_sec)?,
        load_average_1m: r.load_average_1m,
        load_average_5m: r.load_average_5m,
        load_average_15m: r.load_average_15m,
        resource_metadata: r.resource_metadata.into_iter().collect(),
    })
}

fn wire_resource(r: NodeResource) -> sms::NodeResource {
    sms::NodeResource {
        node_uuid: r.node_uuid,
        cpu_usage_percent: r.cpu_usage_percent,
        memory_usage_percent: r.memory_usage_percent,
        total_memory_bytes: r.total_memory_bytes,
        used_memory_bytes: r.used_memory_bytes,
        available_memory_bytes: r.available_memory_bytes,
        disk_usage_percent: r.disk_usage_percent,
        total_disk_bytes: r.total_disk_bytes,
        used_disk_bytes: r.used_disk_bytes,
        network_rx_bytes_per_sec: r.network_rx_bytes_per_sec,
        network_tx_bytes_per_sec: r.network_tx_bytes_per_sec,
        load_average_1m: r.load_average_1m,
        load_average_5m: r.load_average_5m,
        load_average_15m: r.load_average_15m,
        updated_at: r.updated_at,
        resource_metadata: r.resource_metadata.into_iter().collect(),
    }
}
