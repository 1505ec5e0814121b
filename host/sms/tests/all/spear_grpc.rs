//! SPEAR-Next's gRPC services (`sms.NodeService`, `sms.TaskService`, issue 12) through a real `sms`
//! on 127.0.0.1, with clients generated from SPEAR's field numbers: every call answers as SPEAR's
//! does, and task events stream per node and resume from an event id.

use std::time::Duration;

use spear_proto::sms;
use tokio_stream::StreamExt;
use tonic::Code;

use crate::common::Sandbox;

const NODE: &str = "0b6f1c2e-6d0a-4a55-9d53-2b8f5f3a1c01";

#[tokio::test]
async fn spear_s_node_service_registers_heartbeats_lists_updates_and_deletes() {
    let sb = Sandbox::new("");
    let sms_ = sb.start(&[]);
    let mut nodes = sms::node_service_client::NodeServiceClient::connect(sms_.grpc_url())
        .await
        .unwrap();
    let registered = nodes
        .register_node(sms::RegisterNodeRequest {
            node: Some(sms::Node {
                uuid: NODE.into(),
                ip_address: "10.0.0.7".into(),
                port: 8081,
                status: "online".into(),
                metadata: [("zone".to_owned(), "a".to_owned())].into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        registered,
        sms::RegisterNodeResponse {
            success: true,
            message: "Node registered successfully".into(),
            node_uuid: NODE.into(),
        }
    );
    let hb = nodes
        .heartbeat(sms::HeartbeatRequest {
            uuid: NODE.into(),
            timestamp: 0,
            health_info: [("cpu_usage".to_owned(), "45%".to_owned())].into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(hb.success && hb.message == "Heartbeat received", "{hb:?}");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!((hb.server_timestamp - now).abs() < 60, "{hb:?}");

    let list = nodes
        .list_nodes(sms::ListNodesRequest::default())
        .await
        .unwrap()
        .into_inner();
    let node = &list.nodes[0];
    assert_eq!(
        (
            node.uuid.as_str(),
            node.ip_address.as_str(),
            node.port,
            node.status.as_str()
        ),
        (NODE, "10.0.0.7", 8081, "active")
    );
    assert_eq!(node.metadata["zone"], "a");
    assert!((node.registered_at - now).abs() < 60, "seconds: {node:?}");

    let updated = nodes
        .update_node(sms::UpdateNodeRequest {
            uuid: NODE.into(),
            node: Some(sms::Node {
                uuid: NODE.into(),
                status: "draining".into(),
                metadata: [("zone".to_owned(), "b".to_owned())].into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(updated.success, "{updated:?}");
    let got = nodes
        .get_node(sms::GetNodeRequest { uuid: NODE.into() })
        .await
        .unwrap()
        .into_inner();
    let got = got.node.unwrap();
    assert_eq!(
        (got.status.as_str(), got.metadata["zone"].as_str()),
        ("draining", "b")
    );
    // An address changes by registering again, not by an update: refused, naming the field.
    let moved = nodes
        .update_node(sms::UpdateNodeRequest {
            uuid: NODE.into(),
            node: Some(sms::Node {
                uuid: NODE.into(),
                ip_address: "10.0.0.8".into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(moved.code(), Code::InvalidArgument);
    assert!(moved.message().contains("node.ip_address"), "{moved:?}");
    // SPEAR's node resources.
    let put = nodes
        .update_node_resource(sms::UpdateNodeResourceRequest {
            resource: Some(sms::NodeResource {
                node_uuid: NODE.into(),
                cpu_usage_percent: 45.0,
                total_memory_bytes: 8 << 30,
                load_average_1m: 0.5,
                resource_metadata: [("gpu".to_owned(), "none".to_owned())].into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(put.success, "{put:?}");
    let got = nodes
        .get_node_resource(sms::GetNodeResourceRequest {
            node_uuid: NODE.into(),
        })
        .await
        .unwrap()
        .into_inner();
    let res = got.resource.unwrap();
    assert!(got.found);
    assert_eq!(
        (
            res.cpu_usage_percent,
            res.total_memory_bytes,
            res.resource_metadata["gpu"].as_str()
        ),
        (45.0, 8 << 30, "none")
    );
    assert!((res.updated_at - now).abs() < 60, "{res:?}");
    let all = nodes
        .list_node_resources(sms::ListNodeResourcesRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(all.resources.len(), 1);
    let with = nodes
        .get_node_with_resource(sms::GetNodeWithResourceRequest { uuid: NODE.into() })
        .await
        .unwrap()
        .into_inner();
    assert!(
        with.found && with.node.is_some() && with.resource.is_some(),
        "{with:?}"
    );
    let bad = nodes
        .update_node_resource(sms::UpdateNodeResourceRequest {
            resource: Some(sms::NodeResource {
                node_uuid: NODE.into(),
                cpu_usage_percent: 150.0,
                ..Default::default()
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert!(bad.message().contains("cpu_usage_percent"), "{bad:?}");

    let deleted = nodes
        .delete_node(sms::DeleteNodeRequest { uuid: NODE.into() })
        .await
        .unwrap()
        .into_inner();
    assert!(deleted.success, "{deleted:?}");
    for code in [
        nodes
            .get_node(sms::GetNodeRequest { uuid: NODE.into() })
            .await
            .unwrap_err()
            .code(),
        nodes
            .delete_node(sms::DeleteNodeRequest { uuid: NODE.into() })
            .await
            .unwrap_err()
            .code(),
    ] {
        assert_eq!(code, Code::NotFound);
    }
}

/// The next event of `stream`, within 10 s.
async fn next(stream: &mut tonic::Streaming<sms::TaskEvent>) -> sms::TaskEvent {
    tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("an event within 10 s")
        .expect("the stream goes on")
        .expect("an event, not an error")
}

#[tokio::test]
async fn spear_s_task_service_registers_lists_updates_and_streams_resumable_events() {
    let sb = Sandbox::new("");
    let sms_ = sb.start(&[]);
    let url = sms_.grpc_url();
    let mut tasks = sms::task_service_client::TaskServiceClient::connect(url.clone())
        .await
        .unwrap();
    let mut events = tasks
        .subscribe_task_events(sms::SubscribeTaskEventsRequest {
            node_uuid: NODE.into(),
            last_event_id: 0,
        })
        .await
        .unwrap()
        .into_inner();

    // One task for another node (its events are not this node's), one for this node.
    for (name, node) in [
        ("elsewhere", "9a0c7d55-8a1c-4f9e-a2b1-000000000002"),
        ("here", NODE),
    ] {
        let r = tasks
            .register_task(sms::RegisterTaskRequest {
                name: name.into(),
                node_uuid: node.into(),
                priority: sms::TaskPriority::High.into(),
                executable: Some(sms::TaskExecutable {
                    r#type: sms::ExecutableType::Binary.into(),
                    uri: "https://example.com/tool".into(),
                    ..Default::default()
                }),
                execution_kind: sms::TaskExecutionKind::LongRunning.into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(
            r.success && r.message == "Task registered successfully",
            "{r:?}"
        );
        let task = r.task.unwrap();
        assert_eq!(task.task_id, r.task_id);
        assert_eq!(task.status, i32::from(sms::TaskStatus::Registered));
        assert_eq!(task.priority, i32::from(sms::TaskPriority::High));
        assert_eq!(
            task.execution_kind,
            i32::from(sms::TaskExecutionKind::LongRunning)
        );
        assert_eq!(
            task.executable.unwrap().r#type,
            i32::from(sms::ExecutableType::Process),
            "binary runs on the process executor"
        );
    }
    let list = tasks
        .list_tasks(sms::ListTasksRequest {
            node_uuid: NODE.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((list.tasks.len(), list.total_count), (1, 1), "{list:?}");
    let id = list.tasks[0].task_id.clone();
    let unknown = tasks
        .get_task(sms::GetTaskRequest {
            task_id: "no-such-task".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!unknown.found && unknown.task.is_none());

    let status = tasks
        .update_task_status(sms::UpdateTaskStatusRequest {
            task_id: id.clone(),
            status: sms::TaskStatus::Active.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(status.success, "{status:?}");
    assert_eq!(
        status.task.unwrap().status,
        i32::from(sms::TaskStatus::Active)
    );
    // A versioned update applies when newer; a stale one is refused and changes nothing.
    let versioned = |status: sms::TaskStatus, version: u64| sms::UpdateTaskStatusRequest {
        task_id: id.clone(),
        status: status.into(),
        status_version: version,
        ..Default::default()
    };
    let newer = tasks
        .update_task_status(versioned(sms::TaskStatus::Active, 7))
        .await
        .unwrap()
        .into_inner();
    assert!(newer.success, "{newer:?}");
    let stale = tasks
        .update_task_status(versioned(sms::TaskStatus::Inactive, 6))
        .await
        .unwrap()
        .into_inner();
    assert!(
        !stale.success && stale.message.contains("status_version 6"),
        "{stale:?}"
    );
    let now = tasks
        .get_task(sms::GetTaskRequest {
            task_id: id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(now.task.unwrap().status, i32::from(sms::TaskStatus::Active));
    let result = tasks
        .update_task_result(sms::UpdateTaskResultRequest {
            task_id: id.clone(),
            result_uri: "sms+file://result-1".into(),
            result_status: "completed".into(),
            completed_at: 1_700_000_000,
            result_metadata: [("rows".to_owned(), "12".to_owned())].into(),
        })
        .await
        .unwrap()
        .into_inner();
    let t = result.task.unwrap();
    assert_eq!(
        (
            t.result_uris.clone(),
            t.last_result_uri.as_str(),
            t.last_result_status.as_str(),
            t.last_completed_at
        ),
        (
            vec!["sms+file://result-1".to_owned()],
            "sms+file://result-1",
            "completed",
            1_700_000_000
        )
    );
    let missing = tasks
        .update_task_result(sms::UpdateTaskResultRequest {
            task_id: "no-such-task".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!missing.success && missing.message == "Task not found");
    let gone = tasks
        .unregister_task(sms::UnregisterTaskRequest {
            task_id: id.clone(),
            reason: "replaced".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(gone.success, "{gone:?}");

    // This node's events only, in order: created, updated twice, cancelled.
    let kinds = [
        sms::TaskEventKind::Create,
        sms::TaskEventKind::Update,
        sms::TaskEventKind::Update,
        sms::TaskEventKind::Update,
        sms::TaskEventKind::Cancel,
    ];
    let mut seen = Vec::new();
    for kind in kinds {
        let e = next(&mut events).await;
        assert_eq!(
            (e.kind, e.task_id.as_str(), e.node_uuid.as_str()),
            (i32::from(kind), id.as_str(), NODE)
        );
        assert_eq!(
            e.execution_kind,
            i32::from(sms::TaskExecutionKind::LongRunning)
        );
        seen.push(e.event_id);
    }
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "{seen:?}");

    // Resumed after the third event, a new subscriber gets the last two, replayed.
    let mut resumed = tasks
        .subscribe_task_events(sms::SubscribeTaskEventsRequest {
            node_uuid: NODE.into(),
            last_event_id: seen[2],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(next(&mut resumed).await.event_id, seen[3]);
    assert_eq!(next(&mut resumed).await.event_id, seen[4]);
    let no_node = tasks
        .subscribe_task_events(sms::SubscribeTaskEventsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(no_node.code(), Code::InvalidArgument);
}
