//! Invocations of a `container` task on a real Spearlet, against the tests' Podman: a container
//! running a worker (`tests/src/bin/spear-worker-fixture.rs`, in an image made from this
//! machine's binary and libraries) serves them over its attached standard input and output. One
//! container keeps its state across invocations; a worker that dies is replaced by a new
//! container; a Spearlet that stops removes its containers.

use std::path::Path;
use std::time::Duration;

use serde_json::json;
use spear_proto::spearlet as pb;
use spear_proto::spearlet::function_service_client::FunctionServiceClient;
use spear_tests::podman::{engine, podman, program_image};
use tonic::Code;

use crate::common::Cluster;

/// The containers labelled with task `task` (running or not).
fn containers_of(task: &str) -> Vec<serde_json::Value> {
    let (status, list) = engine(
        "GET",
        &format!(
            "/containers/json?all=true&filters=%7B%22label%22%3A%5B%22spear.task%3D{task}%22%5D%7D"
        ),
    );
    assert_eq!(status, 200, "{list}");
    list.as_array().cloned().unwrap_or_default()
}

fn call(task: &str, function: &str) -> pb::InvokeRequest {
    pb::InvokeRequest {
        task_id: task.into(),
        function_name: function.into(),
        timeout_ms: 60_000,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_container_task_is_served_by_one_live_container_and_replaced_when_it_dies() {
    podman();
    let fixture = Path::new(env!("CARGO_BIN_EXE_spearlet")).with_file_name("spear-worker-fixture");
    assert!(
        fixture.is_file(),
        "{} is missing: `cargo test --workspace` builds it",
        fixture.display()
    );
    let image = program_image(&fixture, "spear-worker-fixture");
    let c = Cluster::new();
    let sms = c.sms();
    let mut node = c.spearlet("box", &sms, "");
    let (status, v) = sms
        .post(
            "/api/v1/tasks",
            json!({"name": "box", "executable": {"type": "container", "name": image,
                   "args": ["/worker"]}}),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let task = v["task_id"].as_str().unwrap().to_owned();
    let mut f = FunctionServiceClient::connect(format!("http://{}", node.grpc))
        .await
        .unwrap();
    let mut instance = String::new();
    for n in 1..=100 {
        let r = f.invoke(call(&task, "count")).await.unwrap().into_inner();
        assert_eq!(&r.output[..], n.to_string().as_bytes());
        if n == 1 {
            assert_eq!(r.tier, "cold");
            instance = r.instance;
        } else {
            assert_eq!(r.instance, instance, "one live container");
        }
    }
    let running = containers_of(&task);
    assert_eq!(running.len(), 1, "{running:?}");
    assert_eq!(running[0]["State"], "running", "{running:?}");

    // A worker that dies mid-invocation: the invocation says so, the container goes, and the
    // next invocation gets a new one.
    let died = f.invoke(call(&task, "exit")).await.unwrap_err();
    assert_eq!(died.code(), Code::Internal, "{died:?}");
    assert!(died.message().contains("the worker died"), "{died:?}");
    let r = f.invoke(call(&task, "count")).await.unwrap().into_inner();
    assert_eq!(&r.output[..], b"1", "a new container, its state new");
    assert_ne!(r.instance, instance);
    let mut left = containers_of(&task);
    for _ in 0..100 {
        if left.len() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        left = containers_of(&task);
    }
    assert_eq!(
        left.len(),
        1,
        "the dead worker's container is removed: {left:?}"
    );

    // A Spearlet that stops removes its worker containers.
    assert!(node.terminate().success());
    for _ in 0..300 {
        left = containers_of(&task);
        if left.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(left.is_empty(), "{left:?}");
}
