//! The gRPC services through a real `sms` process on 127.0.0.1.

use crate::common;

use common::Sandbox;
use spear_proto::v1;
use tokio_stream::StreamExt;
use tonic::Code;

#[tokio::test]
async fn every_node_and_task_method_works_and_bad_input_gets_invalid_argument_or_not_found() {
    let sb = Sandbox::new("");
    let sms = sb.start(&[]);
    let mut nodes = v1::node_service_client::NodeServiceClient::connect(sms.grpc_url())
        .await
        .unwrap();
    let node = nodes
        .register_node(v1::RegisterNodeRequest {
            ip_address: "10.1.2.3".into(),
            port: 7000,
            executors: vec!["wasm".into()],
            capacity: Some(v1::Resources {
                cpu_millis: 4000,
                memory_mb: 8192,
                disk_mb: 0,
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(node.status, "active");
    let hb = nodes
        .heartbeat(v1::HeartbeatRequest {
            uuid: node.uuid.clone(),
            running: 2,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(hb.status, "active");
    let got = nodes
        .get_node(v1::NodeRef {
            uuid: node.uuid.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.running, 2);
    let updated = nodes
        .update_node(v1::UpdateNodeRequest {
            uuid: node.uuid.clone(),
            status: "draining".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(updated.status, "draining");
    let listed = nodes
        .list_nodes(v1::ListNodesRequest {
            status: "draining".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.nodes.len(), 1);

    let bad = nodes
        .register_node(v1::RegisterNodeRequest {
            ip_address: "nope".into(),
            port: 1,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert!(
        bad.message().starts_with("ip_address:"),
        "{}",
        bad.message()
    );
    let bad = nodes
        .register_node(v1::RegisterNodeRequest {
            ip_address: "10.0.0.1".into(),
            port: 0,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(bad.message().starts_with("port:"), "{}", bad.message());
    let missing = nodes
        .get_node(v1::NodeRef { uuid: "x".into() })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    let empty = nodes
        .delete_node(v1::NodeRef {
            uuid: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(empty.code(), Code::InvalidArgument);
    let bad = nodes
        .list_nodes(v1::ListNodesRequest {
            status: "sleepy".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);

    let mut tasks = v1::task_service_client::TaskServiceClient::connect(sms.grpc_url())
        .await
        .unwrap();
    let task = tasks
        .register_task(v1::RegisterTaskRequest {
            name: "hello".into(),
            executable: Some(v1::Executable {
                r#type: "process".into(),
                name: "/bin/echo".into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(task.priority, "normal");
    let got = tasks
        .get_task(v1::TaskRef {
            task_id: task.task_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.name, "hello");
    assert_eq!(
        tasks
            .list_tasks(v1::ListTasksRequest::default())
            .await
            .unwrap()
            .into_inner()
            .tasks
            .len(),
        1
    );
    let bad = tasks
        .register_task(v1::RegisterTaskRequest {
            name: "x".into(),
            executable: Some(v1::Executable {
                r#type: "Jar!".into(),
                name: "x".into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert!(
        bad.message().starts_with("executable.type:"),
        "{}",
        bad.message()
    );
    // A delete unregisters (SPEAR's meaning); a second removes.
    let task_ref = v1::TaskRef {
        task_id: task.task_id.clone(),
    };
    tasks.delete_task(task_ref.clone()).await.unwrap();
    let unregistered = tasks
        .get_task(v1::TaskRef {
            task_id: task.task_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(unregistered.status, "unregistered");
    tasks.delete_task(task_ref).await.unwrap();
    assert_eq!(
        tasks
            .get_task(v1::TaskRef {
                task_id: task.task_id.clone()
            })
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );
    nodes
        .delete_node(v1::NodeRef { uuid: node.uuid })
        .await
        .unwrap();
}

#[tokio::test]
async fn files_plugins_events_health_and_reflection() {
    let sb = Sandbox::new("");
    let sms = sb.start(&[]);
    let mut files = v1::file_service_client::FileServiceClient::connect(sms.grpc_url())
        .await
        .unwrap();
    let meta = files
        .upload(v1::UploadRequest {
            name: "a.bin".into(),
            content: vec![1, 2, 3],
        })
        .await
        .unwrap()
        .into_inner();
    let down = files
        .download(v1::FileRef {
            file_id: meta.file_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(down.content, vec![1, 2, 3]);
    assert_eq!(
        files
            .list_files(v1::ListFilesRequest {})
            .await
            .unwrap()
            .into_inner()
            .files
            .len(),
        1
    );
    let too_big = files
        .upload(v1::UploadRequest {
            name: "big".into(),
            content: vec![0; 1024 * 1024 + 1],
        })
        .await
        .unwrap_err();
    assert_eq!(too_big.code(), Code::ResourceExhausted);
    assert_eq!(
        files
            .get_file(v1::FileRef {
                file_id: "zz".into()
            })
            .await
            .unwrap_err()
            .code(),
        Code::InvalidArgument
    );

    let mut plugins = v1::plugin_service_client::PluginServiceClient::connect(sms.grpc_url())
        .await
        .unwrap();
    let list = plugins
        .list_plugins(v1::ListPluginsRequest {})
        .await
        .unwrap()
        .into_inner();
    let redb = list.plugins.iter().find(|p| p.name == "redb").unwrap();
    assert_eq!(
        (redb.kind.as_str(), redb.form.as_str(), redb.sha256.len()),
        ("storage-backend", "native", 64)
    );
    let report = plugins
        .reload(v1::ReloadRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(
        ["applied", "unchanged"].contains(&report.outcome.as_str()),
        "{report:?}"
    );
    assert!(
        !plugins
            .history(v1::HistoryRequest {})
            .await
            .unwrap()
            .into_inner()
            .reports
            .is_empty()
    );

    // Events resume from a cursor: after 0 the first is the upload.
    let mut events = v1::event_service_client::EventServiceClient::connect(sms.grpc_url())
        .await
        .unwrap();
    let mut stream = events
        .subscribe(v1::SubscribeRequest { after: 0 })
        .await
        .unwrap()
        .into_inner();
    let first = stream.next().await.unwrap().unwrap();
    assert_eq!((first.cursor, first.kind.as_str()), (1, "file.uploaded"));
    files
        .delete_file(v1::FileRef {
            file_id: meta.file_id,
        })
        .await
        .unwrap();
    let live = tokio::time::timeout(std::time::Duration::from_secs(10), stream.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!((live.cursor, live.kind.as_str()), (2, "file.deleted"));
    let beyond = events
        .subscribe(v1::SubscribeRequest { after: 99 })
        .await
        .unwrap_err();
    assert_eq!(beyond.code(), Code::InvalidArgument);

    let channel = tonic::transport::Channel::from_shared(sms.grpc_url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    let status = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "spear.v1.NodeService".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        status.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );

    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let mut reflection = ServerReflectionClient::new(channel);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut replies = reflection
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let Some(MessageResponse::ListServicesResponse(services)) =
        replies.next().await.unwrap().unwrap().message_response
    else {
        panic!("no service list")
    };
    let names: Vec<String> = services.service.into_iter().map(|s| s.name).collect();
    for s in [
        "spear.v1.NodeService",
        "spear.v1.TaskService",
        "spear.v1.FileService",
        "spear.v1.PluginService",
        "spear.v1.EventService",
    ] {
        assert!(names.iter().any(|n| n == s), "{s} not in {names:?}");
    }
}

#[tokio::test]
async fn execution_methods_and_stale_sessions() {
    let sb = Sandbox::new("");
    let sms = sb.start(&[]);
    let mut execs = v1::execution_service_client::ExecutionServiceClient::connect(sms.grpc_url())
        .await
        .unwrap();
    let e = execs
        .submit(v1::SubmitRequest {
            executable: Some(v1::Executable {
                r#type: "wasm".into(),
                uri: "file:///x.wasm".into(),
                ..Default::default()
            }),
            priority: "high".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((e.state.as_str(), e.priority.as_str()), ("ready", "high"));
    let got = execs
        .get_execution(v1::ExecutionRef {
            execution_id: e.execution_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.execution_id, e.execution_id);
    let list = execs
        .list_executions(v1::ListExecutionsRequest {
            state: "ready".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list.executions.len(), 1);
    let bad = execs
        .submit(v1::SubmitRequest::default())
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert!(bad.message().starts_with("task_id:"), "{}", bad.message());
    assert_eq!(
        execs
            .get_execution(v1::ExecutionRef {
                execution_id: "x".into()
            })
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );
    assert_eq!(
        execs
            .assignments(v1::AssignmentsRequest {
                node_uuid: "ghost".into(),
                after: 0
            })
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );
    let stale = execs
        .report_result(v1::ReportResultRequest {
            session: "an-old-session".into(),
            node_uuid: "n".into(),
            execution_id: e.execution_id.clone(),
            success: true,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(stale.code(), Code::FailedPrecondition);
    assert!(
        stale.message().contains("stale session"),
        "{}",
        stale.message()
    );
    let cancelled = execs
        .cancel(v1::ExecutionRef {
            execution_id: e.execution_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(cancelled.state, "cancelled");
    assert_eq!(
        execs
            .cancel(v1::ExecutionRef {
                execution_id: e.execution_id
            })
            .await
            .unwrap_err()
            .code(),
        Code::FailedPrecondition
    );
}
