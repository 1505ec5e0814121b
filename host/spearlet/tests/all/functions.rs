//! `spearlet.FunctionService` on a real Spearlet: tasks registered at a real SMS, invoked on live
//! instances of the `wasm` executor (the Rust function component of
//! `tests/fixtures/function-counter`) and the `process` executor (the Python worker of
//! `examples/worker-python`).

use std::time::Duration;

use serde_json::{Value, json};
use spear_proto::spearlet as pb;
use spear_proto::spearlet::function_service_client::FunctionServiceClient;
use spear_tests::guest;
use tonic::Code;
use tonic::transport::Channel;

use crate::common::{Cluster, Spearlet, counter_task, instances, register};

pub(crate) async fn client(node: &Spearlet) -> FunctionServiceClient<Channel> {
    FunctionServiceClient::connect(format!("http://{}", node.grpc))
        .await
        .unwrap()
        .max_decoding_message_size(32 << 20)
        .max_encoding_message_size(32 << 20)
}

pub(crate) fn call(task: &str, function: &str, payload: &[u8]) -> pb::InvokeRequest {
    pb::InvokeRequest {
        task_id: task.into(),
        function_name: function.into(),
        payload: payload.to_vec().into(),
        ..Default::default()
    }
}

pub(crate) fn python_worker() -> String {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/worker-python/worker.py")
        .canonicalize()
        .unwrap()
        .display()
        .to_string()
}

/// A thousand invocations of a wasm function run on one live instance, whose state counts them;
/// a function error keeps it; a trap loses it and the next invocation gets a new one.
#[tokio::test]
async fn a_thousand_wasm_invocations_keep_one_instance_and_its_state() {
    let c = Cluster::new();
    let sms = c.sms();
    let node = c.spearlet("fn", &sms, "");
    let task = counter_task(&sms).await;
    let mut f = client(&node).await;

    let first = f
        .invoke(call(&task, "count", b""))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (&first.output[..], first.tier.as_str()),
        (&b"1"[..], "cold")
    );
    let mut last = first.clone();
    for _ in 1..1000 {
        last = f
            .invoke(call(&task, "count", b""))
            .await
            .unwrap()
            .into_inner();
    }
    assert_eq!(
        &last.output[..],
        b"1000",
        "the counter lives in the instance"
    );
    assert_eq!(
        (last.tier.as_str(), &last.instance),
        ("hot", &first.instance)
    );
    assert!(!last.request_id.is_empty());
    let live = instances(&node, &task).await;
    assert_eq!(live.len(), 1, "one instance served them all: {live:?}");
    assert_eq!(live[0]["invocations"], 1000);

    // A function error is the function's: the instance stays.
    let err = f.invoke(call(&task, "fail", b"abc")).await.unwrap_err();
    assert_eq!(err.code(), Code::Aborted, "{err:?}");
    assert!(err.message().contains("failed on 3 bytes"), "{err:?}");
    let again = f
        .invoke(call(&task, "count", b""))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(&again.output[..], b"1001");

    // A trap loses that instance only; the next invocation starts another, with a fresh state.
    let err = f.invoke(call(&task, "trap", b"")).await.unwrap_err();
    assert_eq!(err.code(), Code::Internal, "{err:?}");
    assert!(err.message().contains("trapped"), "{err:?}");
    let fresh = f
        .invoke(call(&task, "count", b""))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (&fresh.output[..], fresh.tier.as_str()),
        (&b"1"[..], "cold")
    );
    assert_ne!(fresh.instance, first.instance);

    // A deadline stops a function that never ends, and loses its instance.
    let mut spin = call(&task, "spin", b"");
    spin.timeout_ms = 200;
    let err = f.invoke(spin).await.unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");
}

/// `InvokeStream` delivers the output in pieces of 64 KiB and a `done`; `InvokeAsync` answers at
/// once and `GetResult` waits for the end; bad requests are refused with the field named.
#[tokio::test]
async fn streams_async_results_and_refusals() {
    let c = Cluster::new();
    let sms = c.sms();
    let node = c.spearlet(
        "fn",
        &sms,
        "[spearlet.functions]\nmax_payload_bytes = 1048576\n",
    );
    let task = counter_task(&sms).await;
    let mut f = client(&node).await;

    let payload: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let mut stream = f
        .invoke_stream(call(&task, "echo", &payload))
        .await
        .unwrap()
        .into_inner();
    let (mut got, mut pieces, mut done) = (Vec::new(), 0, None);
    while let Some(chunk) = stream.message().await.unwrap() {
        match chunk.part.unwrap() {
            pb::invoke_chunk::Part::Data(d) => {
                assert!(d.len() <= 64 * 1024);
                pieces += 1;
                got.extend_from_slice(&d);
            }
            pb::invoke_chunk::Part::Done(r) => done = Some(r),
        }
    }
    assert_eq!(got, payload);
    assert_eq!(pieces, 4);
    let done = done.expect("a done message ends the stream");
    assert!(done.output.is_empty() && done.instance.starts_with(&task));
    // A wasm function's emitted pieces come as messages of their own, then its result.
    let mut stream = f
        .invoke_stream(call(&task, "emit", b"3"))
        .await
        .unwrap()
        .into_inner();
    let mut messages = Vec::new();
    while let Some(chunk) = stream.message().await.unwrap() {
        if let pb::invoke_chunk::Part::Data(d) = chunk.part.unwrap() {
            messages.push(String::from_utf8(d.to_vec()).unwrap());
        }
    }
    assert_eq!(messages, ["0;", "1;", "2;", "emitted 3"]);

    // Asynchronous: the caller's request id; running, then the result.
    let mut slow = call(&task, "sleep", b"1");
    slow.request_id = "job-1".into();
    let started = f.invoke_async(slow.clone()).await.unwrap().into_inner();
    assert_eq!(started.request_id, "job-1");
    let reused = f.invoke_async(slow).await.unwrap_err();
    assert_eq!(reused.code(), Code::InvalidArgument, "{reused:?}");
    let now = f
        .get_result(pb::GetResultRequest {
            request_id: "job-1".into(),
            wait_ms: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(now.state(), pb::InvocationState::Running);
    let end = f
        .get_result(pb::GetResultRequest {
            request_id: "job-1".into(),
            wait_ms: 10_000,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(end.state(), pb::InvocationState::Succeeded, "{end:?}");
    assert_eq!(&end.response.unwrap().output[..], b"slept");
    let mut failing = call(&task, "fail", b"");
    failing.request_id = "job-2".into();
    f.invoke_async(failing).await.unwrap();
    let end = f
        .get_result(pb::GetResultRequest {
            request_id: "job-2".into(),
            wait_ms: 10_000,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(end.state(), pb::InvocationState::Failed);
    assert_eq!(end.code, Code::Aborted as i32);
    let unknown = f
        .get_result(pb::GetResultRequest {
            request_id: "never".into(),
            wait_ms: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);

    // Refusals.
    let missing = f
        .invoke(call("no-such-task", "count", b""))
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound, "{missing:?}");
    for (bad, field) in [
        (call(&task, "", b""), "function_name"),
        (
            call(&task, "echo", &vec![0u8; 1_048_577]),
            "max_payload_bytes",
        ),
        (
            pb::InvokeRequest {
                request_id: "spaces are not ids".into(),
                ..call(&task, "echo", b"")
            },
            "request_id",
        ),
        (
            pb::InvokeRequest {
                timeout_ms: 10_000_000,
                ..call(&task, "echo", b"")
            },
            "max_timeout_ms",
        ),
    ] {
        let err = f.invoke(bad).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
        assert!(err.message().contains(field), "{field}: {err:?}");
    }
    // An image the engine does not have is never pulled: the instance does not start.
    spear_tests::podman::podman();
    let container = register(
        &sms,
        json!({"name": "box", "executable": {"type": "container", "uri": "docker.io/library/alpine"}}),
    )
    .await;
    let err = f.invoke(call(&container, "run", b"")).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(
        err.message().contains("is not in the container engine"),
        "{err:?}"
    );
}

/// A Python worker serves invocations from one process; one that dies is replaced; at its task's
/// instance limit, an invocation waits for an instance until its deadline and is then refused
/// as over capacity.
#[tokio::test]
async fn a_python_worker_serves_is_replaced_and_bounded_by_its_instance_limit() {
    let c = Cluster::new();
    let sms = c.sms();
    let config = c
        .spearlet_config("py", "")
        .replace("max_instances_per_task = 4", "max_instances_per_task = 1");
    let node = c.spearlet_from("py", &sms, &config);
    let task = register(
        &sms,
        json!({"name": "py", "executable": {"type": "process", "name": "/usr/bin/python3",
               "args": ["-u", python_worker()]}}),
    )
    .await;
    let mut f = client(&node).await;
    for n in 1..=50 {
        let r = f
            .invoke(call(&task, "count", b""))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.output, n.to_string().as_bytes());
    }
    let up = f
        .invoke(call(&task, "upper", b"shout"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(&up.output[..], b"SHOUT");
    // It runs in a private directory of the node's, which exists while it lives.
    let cwd = f
        .invoke(call(&task, "cwd", b""))
        .await
        .unwrap()
        .into_inner();
    let cwd = String::from_utf8(cwd.output.to_vec()).unwrap();
    assert!(cwd.contains("py-data/work/fn-"), "{cwd}");
    assert!(std::path::Path::new(&cwd).is_dir());

    // The only instance is busy for a second: a call with a shorter deadline is refused.
    let mut slow = call(&task, "sleep", b"1000");
    slow.request_id = "slow".into();
    f.invoke_async(slow).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut hurried = call(&task, "count", b"");
    hurried.timeout_ms = 200;
    let err = f.invoke(hurried).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(err.message().contains("over capacity"), "{err:?}");
    // One with time to wait gets the instance once it is free.
    let patient = f
        .invoke(call(&task, "count", b""))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(&patient.output[..], b"51");

    // A worker that dies mid-invocation: the invocation is told, the next gets a new worker.
    let err = f.invoke(call(&task, "exit", b"")).await.unwrap_err();
    assert_eq!(err.code(), Code::Internal, "{err:?}");
    assert!(err.message().contains("died"), "{err:?}");
    let fresh = f
        .invoke(call(&task, "count", b""))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (&fresh.output[..], fresh.tier.as_str()),
        (&b"1"[..], "cold")
    );
    let other = f
        .invoke(call(&task, "cwd", b""))
        .await
        .unwrap()
        .into_inner();
    assert_ne!(&other.output[..], cwd.as_bytes(), "each worker has its own");
    // The dead worker's directory goes with it (removed off the request's path).
    let until = std::time::Instant::now() + Duration::from_secs(5);
    while std::path::Path::new(&cwd).exists() {
        assert!(std::time::Instant::now() < until, "{cwd} is left");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A task's `spear.min_instances` keeps that many instances (started ahead, left alone by
/// reclamation); `POST /api/v1/functions/{id}/warm` starts more ahead; `spear.max_instances`
/// bounds a task below the node's limit.
#[tokio::test]
async fn minimum_instances_are_kept_and_warming_starts_them_ahead() {
    let c = Cluster::new();
    let sms = c.sms();
    let node = c.spearlet(
        "fn",
        &sms,
        "[reclaimer]\npolicy = \"idle-time\"\ninterval_ms = 100\n\
         [reclaimer.config]\nidle_ms = 300\nkeep_warm = 0\n",
    );
    let bytes = std::fs::read(guest("component", "function-counter.wasm")).unwrap();
    let meta = sms.upload("function-counter.wasm", bytes).await;
    let with = |name: &str, metadata: Value| {
        json!({"name": name, "metadata": metadata,
               "executable": {"type": "wasm", "uri": meta["uri"]}})
    };
    let kept = register(&sms, with("kept", json!({"spear.min_instances": "2"}))).await;
    let mut f = client(&node).await;
    f.invoke(call(&kept, "count", b"")).await.unwrap();
    let until = std::time::Instant::now() + Duration::from_secs(20);
    while instances(&node, &kept).await.len() < 2 {
        assert!(std::time::Instant::now() < until, "not warmed to 2");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Idle past the policy's 300 ms, several rounds: the two stay.
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    assert_eq!(instances(&node, &kept).await.len(), 2);

    // Warmed to 3 ahead of any invocation; the third goes, the floor of 2 stays.
    let r = reqwest::Client::new()
        .post(format!(
            "http://{}/api/v1/functions/{kept}/warm?instances=3",
            node.http
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["instances"], 3);
    let until = std::time::Instant::now() + Duration::from_secs(10);
    while instances(&node, &kept).await.len() > 2 {
        assert!(
            std::time::Instant::now() < until,
            "the third is never reclaimed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(instances(&node, &kept).await.len(), 2);
    let warm = |task: &str, q: &str| {
        reqwest::Client::new()
            .post(format!(
                "http://{}/api/v1/functions/{task}/warm?{q}",
                node.http
            ))
            .send()
    };
    let status = node.get("/api/v1/status").await;
    assert!(
        status["pools"]["warmed"].as_u64().unwrap() >= 2,
        "started ahead: {status}"
    );
    assert_eq!(warm(&kept, "instances=0").await.unwrap().status(), 400);
    assert_eq!(warm(&kept, "instances=x").await.unwrap().status(), 400);
    assert_eq!(
        warm("no-such-task", "instances=1").await.unwrap().status(),
        404
    );

    // At most one instance: a second invocation waits for it, then is refused.
    let one = register(&sms, with("one", json!({"spear.max_instances": "1"}))).await;
    let mut held = call(&one, "sleep", b"1");
    held.request_id = "held".into();
    held.timeout_ms = 5_000;
    f.invoke_async(held).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut hurried = call(&one, "count", b"");
    hurried.timeout_ms = 300;
    let err = f.invoke(hurried).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(err.message().contains("spear.max_instances"), "{err:?}");

    // Bounds that make no sense are refused, naming the key.
    let bad = register(&sms, with("bad", json!({"spear.min_instances": "lots"}))).await;
    let err = f.invoke(call(&bad, "count", b"")).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("spear.min_instances"), "{err:?}");
}
